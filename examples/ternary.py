"""Ternary weights (seed scenario 7): an MLP whose weights are {-1, 0, +1} times a per-layer scale.

Each layer quantizes its weights the way the seed's ``ternary_quantization`` does::

    scale = torch.max(torch.abs(w))
    w_n = w / (scale + 1e-10)
    q = torch.sign(w_n) * (torch.abs(w_n) > 0.5).float()
    F.linear(x, q * scale, self.bias)

Without sll_fx the weights get a gradient only through ``scale`` (the largest weight of
each layer); the rest never moves.  ``sll_fx.linearize_module`` rewrites the ``sign`` and
the ``>`` of each layer (4 nodes), with eps set per kind by an ``SLLConfig``: the ``>``
band (in units of ``w_n``, around 0.5) is what lets a weight switch between 0 and +-1;
the ``sign`` band around 0 sits where the ``>`` mask is 0 anyway, so it gets a small eps.

    python examples/ternary.py           # under 10 seconds on 2 cores
    python examples/ternary.py --fast    # a few seconds (the tests use this)
"""

from __future__ import annotations

import argparse

import torch
from torch import nn
from torch.nn import functional as F

import sll_fx
from _common import accuracy, train_minibatches, window


class TernaryLinear(nn.Module):
    def __init__(self, d_in: int, d_out: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(d_out, d_in).uniform_(-1, 1) / d_in ** 0.5)
        self.bias = nn.Parameter(torch.zeros(d_out))

    def forward(self, x):
        scale = torch.max(torch.abs(self.weight))
        w_n = self.weight / (scale + 1e-10)
        q = torch.sign(w_n) * (torch.abs(w_n) > 0.5).float()
        return F.linear(x, q * scale, self.bias)


class TernaryMLP(nn.Module):
    def __init__(self, d_in: int = 16, d_hidden: int = 128, n_classes: int = 4):
        super().__init__()
        self.fc1 = TernaryLinear(d_in, d_hidden)
        self.fc2 = TernaryLinear(d_hidden, n_classes)

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(x)))


def make_data(n: int, d_in: int = 16, n_classes: int = 4, seed: int = 0):
    """Inputs ~ N(0, 1); labels from a fixed random (float) teacher MLP."""
    g = torch.Generator().manual_seed(1234)
    w1, w2 = torch.randn(d_in, 32, generator=g), torch.randn(32, n_classes, generator=g)
    x = torch.randn(n, d_in, generator=torch.Generator().manual_seed(seed))
    return x, (torch.relu(x @ w1) @ w2).argmax(-1)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--eps", type=float, default=0.1, help="band half-width of the '>' mask, in units of w_n")
    p.add_argument("--sign-eps", type=float, default=0.05, help="band half-width of the sign")
    p.add_argument("--fast", action="store_true", help="few steps, small data (for the tests)")
    args = p.parse_args(argv)
    if args.fast:
        args.steps = 150
    n_train = 1024 if args.fast else 8192

    torch.manual_seed(0)
    x, y = make_data(n_train)
    x_test, y_test = make_data(2048, seed=1)
    model = TernaryMLP()
    state0 = {k: v.clone() for k, v in model.state_dict().items()}

    print("== linearize ==")
    config = sll_fx.SLLConfig(eps=args.eps, kind_eps={"sign": args.sign_eps})
    gm = sll_fx.linearize_module(model, config)
    print(f"\n== train {args.steps} steps ({config}) ==")
    losses = train_minibatches(gm, x, y, args.steps)
    first, last, k = window(losses)
    print(f"loss: first {k} steps {first:.3f} -> last {k} steps {last:.3f}")

    baseline = TernaryMLP()
    baseline.load_state_dict(state0)
    base_losses = train_minibatches(baseline, x, y, args.steps)
    base_acc = accuracy(baseline, x_test, y_test)
    moved = (baseline.fc1.weight - state0["fc1.weight"]).ne(0).sum().item()
    print(f"without sll_fx: loss {window(base_losses)[0]:.3f} -> {window(base_losses)[1]:.3f}, "
          f"test accuracy {base_acc:.3f}; {moved} of {baseline.fc1.weight.numel()} fc1 weights ever moved")

    print("\n== export hard ==")
    hard = sll_fx.export_hard(gm)
    same = torch.equal(hard(x_test), model(x_test))
    print(f"\nhard model == original model, bit for bit: {same}")
    acc, acc_lin = accuracy(hard, x_test, y_test), accuracy(gm, x_test, y_test)
    print(f"test accuracy of the exported ternary model: {acc:.3f} (the linearized model it was trained as: "
          f"{acc_lin:.3f}; without sll_fx: {base_acc:.3f}; chance about 0.25)")
    return {"losses": losses, "bit_identical": same, "accuracy": acc, "baseline_accuracy": base_acc,
            "rewrite": gm.sll_report, "strip": hard.sll_report}


if __name__ == "__main__":
    main()

"""Magnitude pruning with a learnable threshold (seed scenario 4).

Each layer keeps the weights whose magnitude exceeds its own threshold, as a pruned model
computes it at deployment::

    mask = (torch.abs(self.weight) > self.threshold).float()
    F.linear(x, self.weight * mask, self.bias)

The model also returns the fraction of weights it keeps, and the loss is the task error
plus a price on that fraction.  The hard ``>`` gives the thresholds no gradient, so
without sll_fx they never move and the price has no effect.  ``sll_fx.linearize_module``
rewrites each ``>`` into ``sll.compare(gt)`` (eps in weight units): weights within eps of
their threshold get a gradient through the mask, and so does the threshold.  The data
come from a sparse teacher (each hidden unit reads 3 of 32 inputs).

    python examples/pruning.py           # under 10 seconds on 2 cores
    python examples/pruning.py --fast    # a few seconds (the tests use this)
"""

from __future__ import annotations

import argparse

import torch
from torch import nn
from torch.nn import functional as F

import sll_fx
from _common import train_minibatches, window


class PrunedLinear(nn.Module):
    def __init__(self, d_in: int, d_out: int, threshold: float = 0.02):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(d_out, d_in).uniform_(-1, 1) / d_in ** 0.5)
        self.bias = nn.Parameter(torch.zeros(d_out))
        self.threshold = nn.Parameter(torch.tensor(threshold))

    def forward(self, x):
        mask = (torch.abs(self.weight) > self.threshold).float()
        return F.linear(x, self.weight * mask, self.bias), mask.sum()


class PrunedMLP(nn.Module):
    def __init__(self, d_in: int = 32, d_hidden: int = 64):
        super().__init__()
        self.fc1 = PrunedLinear(d_in, d_hidden)
        self.fc2 = PrunedLinear(d_hidden, 1)
        self.n_weights = d_in * d_hidden + d_hidden

    def forward(self, x):
        h, kept1 = self.fc1(x)
        y, kept2 = self.fc2(torch.relu(h))
        return y.squeeze(-1), (kept1 + kept2) / self.n_weights


def make_data(n: int, d_in: int = 32, d_hidden: int = 16, seed: int = 0):
    """y = relu(x W1) w2 with W1 sparse: each of the teacher's hidden units reads 3 inputs."""
    g = torch.Generator().manual_seed(1234)
    w1 = torch.zeros(d_in, d_hidden)
    for j in range(d_hidden):
        w1[torch.randperm(d_in, generator=g)[:3], j] = torch.randn(3, generator=g)
    w2 = torch.randn(d_hidden, generator=g)
    x = torch.randn(n, d_in, generator=torch.Generator().manual_seed(seed))
    return x, torch.relu(x @ w1) @ w2


def train(model, x, y, steps: int, price: float) -> list[float]:
    def loss(m, xb, yb):   # the fit plus a price on the weights kept
        pred, kept = m(xb)
        return F.mse_loss(pred, yb) + price * kept
    return train_minibatches(model, x, y, steps, loss=loss)


def evaluate(model, x, y) -> tuple[float, float]:
    with torch.no_grad():
        pred, kept = model(x)
    return F.mse_loss(pred, y).item(), kept.item()


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--eps", type=float, default=0.05, help="band half-width, in weight units")
    p.add_argument("--price", type=float, default=1.0, help="loss per unit of kept-weight fraction")
    p.add_argument("--fast", action="store_true", help="few steps, small data (for the tests)")
    args = p.parse_args(argv)
    if args.fast:
        args.steps = 150
    n_train = 1024 if args.fast else 8192

    torch.manual_seed(0)
    x, y = make_data(n_train)
    x_test, y_test = make_data(2048, seed=1)
    model = PrunedMLP()
    state0 = {k: v.clone() for k, v in model.state_dict().items()}

    print("== linearize ==")
    gm = sll_fx.linearize_module(model, eps=args.eps)
    print(f"\n== train {args.steps} steps (eps={args.eps}, price {args.price} per unit kept fraction) ==")
    losses = train(gm, x, y, args.steps, args.price)
    first, last, k = window(losses)
    print(f"loss (mse + price * kept): first {k} steps {first:.3f} -> last {k} steps {last:.3f}")
    print(f"thresholds: fc1 {model.fc1.threshold.item():.3f}, fc2 {model.fc2.threshold.item():.3f} "
          f"(both started at {state0['fc1.threshold'].item():.3f})")

    baseline = PrunedMLP()
    baseline.load_state_dict(state0)
    base_losses = train(baseline, x, y, args.steps, args.price)
    base_mse, base_kept = evaluate(baseline, x_test, y_test)
    print(f"without sll_fx: loss {window(base_losses)[0]:.3f} -> {window(base_losses)[1]:.3f}; thresholds stay at "
          f"{baseline.fc1.threshold.item():.3f}/{baseline.fc2.threshold.item():.3f} (no gradient), "
          f"test mse {base_mse:.3f} keeping {base_kept:.1%} of the weights "
          f"(test loss {base_mse + args.price * base_kept:.3f})")

    print("\n== export hard ==")
    hard = sll_fx.export_hard(gm)
    (y_h, kept_h), (y_m, kept_m) = hard(x_test), model(x_test)
    same = torch.equal(y_h, y_m) and torch.equal(kept_h, kept_m)
    print(f"\nhard model == original model, bit for bit: {same}")
    mse, kept = evaluate(hard, x_test, y_test)
    print(f"exported pruned model: test mse {mse:.3f} keeping {kept:.1%} of the weights "
          f"(test loss {mse + args.price * kept:.3f}; "
          f"the teacher uses {3 * 16 + 16} of {model.n_weights}, {64 / model.n_weights:.1%}; "
          f"predicting the mean gives mse {y_test.var().item():.3f})")
    return {"losses": losses, "bit_identical": same, "mse": mse, "kept": kept, "baseline_mse": base_mse,
            "baseline_kept": base_kept, "rewrite": gm.sll_report, "strip": hard.sll_report}


if __name__ == "__main__":
    main()

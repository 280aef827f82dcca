"""Quantization-aware training (seed scenario 1): an MLP whose activations go through a hard quantizer.

The quantizer is the seed's, written as one writes it for deployment::

    scale = (levels - 1) / (x.max() - x.min() + 1e-10)
    torch.round((x - x.min()) * scale) / scale + x.min()

Trained as is, ``torch.round`` passes no gradient, so ``fc1`` and ``fc2`` learn only through
the ``x.min()``/``x.max()`` of each batch.  ``sll_fx.linearize_module`` rewrites both rounds
(the method is called twice, so the graph has two) into ``sll.round``; eps is in units of
the quantization step (``(x - x.min()) * scale``), at most 0.5.

    python examples/qat.py           # under 10 seconds on 2 cores
    python examples/qat.py --fast    # a few seconds (the tests use this)
"""

from __future__ import annotations

import argparse

import torch
from torch import nn

import sll_fx
from _common import accuracy, train_minibatches, window


class QuantNet(nn.Module):
    def __init__(self, d_in: int = 10, n_classes: int = 10, levels: int | None = 16):
        super().__init__()
        self.levels = levels
        self.fc1 = nn.Linear(d_in, 64)
        self.fc2 = nn.Linear(64, 32)
        self.fc3 = nn.Linear(32, n_classes)

    def quantize(self, x):
        if self.levels is None:  # the float reference
            return x
        scale = (self.levels - 1) / (x.max() - x.min() + 1e-10)
        return torch.round((x - x.min()) * scale) / scale + x.min()

    def forward(self, x):
        x = self.quantize(torch.relu(self.fc1(x)))
        x = self.quantize(torch.relu(self.fc2(x)))
        return self.fc3(x)


def make_data(n: int, d_in: int = 10, n_classes: int = 10, seed: int = 0):
    """Inputs ~ N(0, 1); labels from a fixed random teacher MLP."""
    g = torch.Generator().manual_seed(1234)
    w1, w2 = torch.randn(d_in, 32, generator=g), torch.randn(32, n_classes, generator=g)
    x = torch.randn(n, d_in, generator=torch.Generator().manual_seed(seed))
    return x, (torch.tanh(x @ w1) @ w2).argmax(-1)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--eps", type=float, default=0.3, help="band half-width, in quantization steps (<= 0.5)")
    p.add_argument("--levels", type=int, default=16, help="quantization levels (16: 4 bits)")
    p.add_argument("--fast", action="store_true", help="few steps, small data (for the tests)")
    args = p.parse_args(argv)
    if args.fast:
        args.steps = 120
    n_train = 1024 if args.fast else 8192

    torch.manual_seed(0)
    x, y = make_data(n_train)
    x_test, y_test = make_data(2048, seed=1)
    model = QuantNet(levels=args.levels)
    state0 = {k: v.clone() for k, v in model.state_dict().items()}

    print("== linearize ==")
    gm = sll_fx.linearize_module(model, eps=args.eps)
    print(f"\n== train {args.steps} steps (eps={args.eps}, {args.levels} levels) ==")
    losses = train_minibatches(gm, x, y, args.steps)
    first, last, k = window(losses)
    print(f"loss: first {k} steps {first:.3f} -> last {k} steps {last:.3f}")

    baseline = QuantNet(levels=args.levels)
    baseline.load_state_dict(state0)
    base_losses = train_minibatches(baseline, x, y, args.steps)
    b_first, b_last, _ = window(base_losses)
    base_acc = accuracy(baseline, x_test, y_test)
    print(f"without sll_fx (hard round, same init and batches): loss {b_first:.3f} -> {b_last:.3f}, "
          f"test accuracy {base_acc:.3f}")

    ref = QuantNet(levels=None)
    ref.load_state_dict(state0)
    train_minibatches(ref, x, y, args.steps)
    ref_acc = accuracy(ref, x_test, y_test)
    print(f"float reference (no quantizer, same init and batches): test accuracy {ref_acc:.3f}")

    print("\n== export hard ==")
    hard = sll_fx.export_hard(gm)
    same = torch.equal(hard(x_test), model(x_test))
    acc = accuracy(hard, x_test, y_test)
    print(f"\nhard model == original model, bit for bit: {same}")
    print(f"test accuracy of the exported {args.levels}-level model: {acc:.3f} "
          f"(float: {ref_acc:.3f}, "
          f"without sll_fx: {base_acc:.3f})")
    return {"losses": losses, "bit_identical": same, "accuracy": acc, "baseline_accuracy": base_acc, "float_accuracy": ref_acc,
            "baseline_losses": base_losses, "rewrite": gm.sll_report, "strip": hard.sll_report}


if __name__ == "__main__":
    main()

"""Annealing eps with ``sll_fx.set_eps``: wide bands early, narrow bands late.

A wide band (large eps) gives many elements a gradient, but the linearized model the
optimizer sees is then far from the hard model that gets deployed: it learns to rely on
values inside the bands that the hard ops never produce.  A narrow band keeps the two
close but gives few elements a gradient.  ``sll_fx.set_eps(gm, eps)`` changes eps in place,
without retracing and without touching the parameters or the optimizer, so a schedule is
one call in the training loop::

    gm = sll_fx.linearize_module(model, eps=0.45)
    for step in range(steps):
        if step % 10 == 0:
            sll_fx.set_eps(gm, 0.45 * (0.02 / 0.45) ** (step / steps))   # geometric decay
        ...

(``set_eps(gm, eps, where="round")`` would change only the rounds; ``where`` also takes a
group such as ``"compare"``, a submodule name, a node name, a module type or a predicate.)

The model is a fully quantized MLP: ternary weights (the seed's sign * (|w_n| > 0.5)
quantizer, in both layers: `TernaryLinear` of ternary.py) and 2-bit activations (round(clamp(h, 0, 3))), 5 discrete nodes.
The script trains it three times from the same initialisation: eps fixed wide, eps fixed
narrow, and eps annealed from wide to narrow, and compares the exported hard models.

    python examples/anneal_eps.py           # under 10 seconds on 2 cores
    python examples/anneal_eps.py --fast    # a few seconds (the tests use this)
"""

from __future__ import annotations

import argparse

import torch
from torch import nn

import sll_fx
from _common import accuracy, train_minibatches, window
from ternary import TernaryLinear, make_data   # the ternary example's layer and data


class QuantizedMLP(nn.Module):
    def __init__(self, d_in: int = 16, d_hidden: int = 128, n_classes: int = 4):
        super().__init__()
        self.fc1 = TernaryLinear(d_in, d_hidden)
        self.fc2 = TernaryLinear(d_hidden, n_classes)

    def forward(self, x):
        h = torch.round(torch.clamp(self.fc1(x), 0, 3))   # 2-bit activations: 0, 1, 2, 3
        return self.fc2(h)


def train(gm, x, y, steps: int, schedule=None, every: int = 10) -> list[float]:
    """The shared classifier loop; ``schedule(fraction_done) -> eps`` is applied with set_eps every ``every`` steps."""
    def anneal(step):
        if schedule is not None and step % every == 0:
            sll_fx.set_eps(gm, schedule(step / steps))
    return train_minibatches(gm, x, y, steps, before_step=anneal)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--eps-start", type=float, default=0.45, help="eps at the start (round allows at most 0.5)")
    p.add_argument("--eps-end", type=float, default=0.02)
    p.add_argument("--fast", action="store_true", help="few steps, small data (for the tests)")
    args = p.parse_args(argv)
    if args.fast:
        args.steps = 150
    n_train = 1024 if args.fast else 8192
    e0, e1 = args.eps_start, args.eps_end

    torch.manual_seed(0)
    x, y = make_data(n_train)
    x_test, y_test = make_data(2048, seed=1)
    model = QuantizedMLP()
    state0 = {k: v.clone() for k, v in model.state_dict().items()}

    print("== linearize ==")
    gm = sll_fx.linearize_module(model, eps=e0)
    print(f"\n== train {args.steps} steps, eps annealed {e0} -> {e1} (geometric, set_eps every 10 steps) ==")
    losses = train(gm, x, y, args.steps, schedule=lambda f: e0 * (e1 / e0) ** f)
    sll_fx.set_eps(gm, e1)
    first, last, k = window(losses)
    print(f"loss: first {k} steps {first:.3f} -> last {k} steps {last:.3f}")
    print("the report follows set_eps (eps column):")
    print(gm.sll_report)

    print("\n== export hard ==")
    hard = sll_fx.export_hard(gm)
    same = torch.equal(hard(x_test), model(x_test))
    print(f"\nhard model == original model, bit for bit: {same}")

    rows = [("annealed", f"{e0} -> {e1}", last, accuracy(gm, x_test, y_test), accuracy(hard, x_test, y_test))]
    for eps in (e0, 0.1):
        other = QuantizedMLP()
        other.load_state_dict(state0)
        other_gm = sll_fx.linearize_module(other, eps=eps, verbose=False)
        other_losses = train(other_gm, x, y, args.steps)
        rows.append(("fixed", f"{eps}", window(other_losses)[1], accuracy(other_gm, x_test, y_test),
                     accuracy(other, x_test, y_test)))
    print("\nsame initialisation and batches; test accuracy of the linearized model (what training saw) "
          "and of the exported hard model:")
    print(f"{'run':<10} {'eps':<12} {'last loss':>9} {'linearized':>10} {'hard':>6} {'gap':>6}")
    for name, sched, loss, lin, hrd in rows:
        print(f"{name:<10} {sched:<12} {loss:9.3f} {lin:10.3f} {hrd:6.3f} {lin - hrd:6.3f}")
    return {"losses": losses, "bit_identical": same, "accuracy": rows[0][4],
            "fixed_accuracy": {r[1]: r[4] for r in rows[1:]}, "rewrite": gm.sll_report, "strip": hard.sll_report}


if __name__ == "__main__":
    main()

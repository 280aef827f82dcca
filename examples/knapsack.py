"""0/1 knapsack by gradient descent (seed scenario 2): hard item selection from learnable logits.

Each of a batch of random knapsack instances gets one learnable logit per item, and the
model computes what a deployed selection computes::

    selected = (torch.sigmoid(self.logits) > 0.5).float()
    value - penalty * max(0, weight - capacity)

The hard ``>`` has zero gradient everywhere, so without sll_fx the loss does not even
require grad.  ``sll_fx.linearize_module`` rewrites it into ``sll.compare(gt)`` (eps in
probability units), here with ``mode="hard"``: the forward stays the exact 0/1 selection
(so the loss is the true objective) and items whose probability is within eps of 0.5 get
the surrogate's gradient.  In the default ``mode="linear"`` those items are fractionally
selected, training converges to the fractional (LP) relaxation, and rounding it at 0.5
overfills some knapsacks: the script prints that run too.  The exported hard selection
is compared with the exact dynamic-programming optimum of every instance.

    python examples/knapsack.py           # under 5 seconds on 2 cores
    python examples/knapsack.py --fast    # a few seconds (the tests use this)
"""

from __future__ import annotations

import argparse

import torch
from torch import nn

import sll_fx
from _common import window


class Knapsack(nn.Module):
    def __init__(self, values, weights, capacity, penalty: float = 100.0):
        super().__init__()
        self.register_buffer("values", values)        # [instances, items]
        self.register_buffer("weights", weights)      # [instances, items]
        self.register_buffer("capacity", capacity)    # [instances]
        self.penalty = penalty
        self.logits = nn.Parameter(torch.zeros_like(values))

    def forward(self):
        selected = (torch.sigmoid(self.logits) > 0.5).float()
        total_weight = (selected * self.weights).sum(-1)
        total_value = (selected * self.values).sum(-1)
        penalty = torch.max(torch.tensor(0.0), total_weight - self.capacity) * self.penalty
        return total_value - penalty, selected


def make_instances(n_instances: int, n_items: int, seed: int = 0):
    """Integer values and weights in 1..20, capacity half the total weight."""
    g = torch.Generator().manual_seed(seed)
    values = torch.randint(1, 21, (n_instances, n_items), generator=g).float()
    weights = torch.randint(1, 21, (n_instances, n_items), generator=g).float()
    return values, weights, (weights.sum(-1) / 2).floor()


def optimum(values, weights, capacity) -> torch.Tensor:
    """Exact 0/1 knapsack optimum of each instance (dynamic programming over integer capacity)."""
    best = []
    for v, w, c in zip(values.tolist(), weights.tolist(), capacity.tolist()):
        table = torch.zeros(int(c) + 1)
        for vi, wi in zip(v, w):
            wi = int(wi)
            if wi <= c:
                table[wi:] = torch.maximum(table[wi:], table[:-wi].clone() + vi)
        best.append(table[-1].item())
    return torch.tensor(best)


def greedy(values, weights, capacity) -> torch.Tensor:
    """The classic heuristic, for reference: take items by value/weight while they fit."""
    selected = torch.zeros_like(values)
    for b, order in enumerate((values / weights).argsort(-1, descending=True).tolist()):
        room = capacity[b].item()
        for i in order:
            if weights[b, i] <= room:
                selected[b, i], room = 1.0, room - weights[b, i].item()
    return selected


def score(selected, values, weights, capacity, best) -> dict:
    """Value reached / optimum (0 for an overfilled knapsack), feasibility, mean excess weight."""
    over = ((selected * weights).sum(-1) - capacity).clamp(min=0)
    ratio = torch.where(over == 0, (selected * values).sum(-1) / best, torch.zeros_like(best))
    return {"ratio": ratio.mean().item(), "worst": ratio.min().item(),
            "feasible": (over == 0).float().mean().item(), "excess": over.mean().item()}


def solve(model, steps: int, lr: float) -> list[float]:
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    losses = []
    for _ in range(steps):
        objective, _ = model()
        loss = -objective.mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--eps", type=float, default=0.2, help="band half-width, in probability units")
    p.add_argument("--mode", default="hard", choices=["hard", "linear"])
    p.add_argument("--lr", type=float, default=0.02)
    p.add_argument("--instances", type=int, default=64)
    p.add_argument("--items", type=int, default=40)
    p.add_argument("--fast", action="store_true", help="few steps, small data (for the tests)")
    args = p.parse_args(argv)
    if args.fast:
        args.steps, args.instances = 150, 16

    torch.manual_seed(0)
    values, weights, capacity = make_instances(args.instances, args.items)
    model = Knapsack(values, weights, capacity)

    print("== linearize ==")
    gm = sll_fx.linearize_module(model, eps=args.eps, mode=args.mode)
    print(f"\n== solve {args.instances} instances of {args.items} items, {args.steps} steps "
          f"(eps={args.eps}, mode={args.mode}) ==")
    losses = solve(gm, args.steps, args.lr)
    first, last, k = window(losses)
    print(f"loss (-objective): first {k} steps {first:.1f} -> last {k} steps {last:.1f}")

    objective, _ = Knapsack(values, weights, capacity)()
    print(f"without sll_fx: loss {-objective.mean().item() + 0.0:.1f} at every step; the hard '>' cuts the graph "
          f"(loss.requires_grad = {objective.requires_grad}), so loss.backward() raises and the logits never move")

    print("\n== export hard ==")
    hard = sll_fx.export_hard(gm)
    (obj_h, sel_h), (obj_m, sel_m) = hard(), model()
    same = torch.equal(obj_h, obj_m) and torch.equal(sel_h, sel_m)
    print(f"\nhard model == original model, bit for bit: {same}")

    best = optimum(values, weights, capacity)
    result = score(sel_h, values, weights, capacity, best)
    print(f"exported hard selections: {result['feasible']:.0%} of instances within capacity (mean excess "
          f"weight {result['excess']:.2f}); value / DP optimum: mean {result['ratio']:.3f}, "
          f"worst {result['worst']:.3f} (an overfilled knapsack counts as 0)")
    other = "linear" if args.mode == "hard" else "hard"
    model2 = Knapsack(values, weights, capacity)
    solve(sll_fx.linearize_module(model2, eps=args.eps, mode=other, verbose=False), args.steps, args.lr)
    r2 = score(model2()[1], values, weights, capacity, best)
    print(f"same run with mode={other!r}: {r2['feasible']:.0%} within capacity, value / optimum {r2['ratio']:.3f}")
    r3 = score(greedy(values, weights, capacity), values, weights, capacity, best)
    print(f"for reference, the greedy value/weight heuristic: value / optimum {r3['ratio']:.3f}")
    return {"losses": losses, "bit_identical": same, "value_ratio": result["ratio"],
            "feasible": result["feasible"], "mean_excess": result["excess"], "other_mode": r2,
            "rewrite": gm.sll_report, "strip": hard.sll_report}


if __name__ == "__main__":
    main()

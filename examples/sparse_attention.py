"""Sparse top-k attention (seed scenario 8): each query keeps only its k highest-scoring keys.

The attention layer builds the top-k mask exactly as the seed does::

    top_vals, top_idx = torch.topk(scores, self.k, dim=-1)
    mask = torch.zeros_like(scores)
    mask.scatter_(-1, top_idx, 1.0)

and averages the values of the kept keys with softmax weights renormalised over them.
The mask is a hard selection: without sll_fx the query/key projections learn only
through the softmax weights *within* the current top-k, never from which keys are kept.
``sll_fx.linearize_module`` rewrites the topk/scatter_ pair into ``sll.topk_mask`` (eps in
score units): a key whose score is within eps of the cut between the k-th and (k+1)-th
score is fractionally kept while training, and the gradient tells the projections which
side of the cut it belongs on.  The task is generated: each token must output the mean
value of the k tokens a hidden teacher's bilinear score ranks highest for it.

    python examples/sparse_attention.py           # under 10 seconds on 2 cores
    python examples/sparse_attention.py --fast    # a few seconds (the tests use this)
"""

from __future__ import annotations

import argparse

import torch
from torch import nn
from torch.nn import functional as F

import sll_fx
from _common import train_minibatches, window


class TopKAttention(nn.Module):
    def __init__(self, d: int = 16, k: int = 4):
        super().__init__()
        self.k = k
        self.q = nn.Linear(d, d, bias=False)
        self.kproj = nn.Linear(d, d, bias=False)
        self.v = nn.Linear(d, d, bias=False)

    def forward(self, x):
        scores = self.q(x) @ self.kproj(x).transpose(-1, -2) / x.shape[-1] ** 0.5
        top_vals, top_idx = torch.topk(scores, self.k, dim=-1)
        mask = torch.zeros_like(scores)
        mask.scatter_(-1, top_idx, 1.0)
        weights = torch.softmax(scores, dim=-1) * mask
        weights = weights / (weights.sum(dim=-1, keepdim=True) + 1e-10)
        return weights @ self.v(x)


def make_data(n: int, length: int = 24, d: int = 16, k: int = 4, seed: int = 0):
    """Token sequences [n, length, d] and targets: per token, the mean of (x B) over the k tokens
    with the highest teacher score x_i A x_j."""
    g = torch.Generator().manual_seed(1234)
    a, b = torch.randn(d, d, generator=g) / d ** 0.5, torch.randn(d, d, generator=g) / d ** 0.5
    x = torch.randn(n, length, d, generator=torch.Generator().manual_seed(seed))
    top = torch.topk(x @ a @ x.transpose(-1, -2), k, dim=-1).indices
    mask = torch.zeros(n, length, length).scatter(-1, top, 1.0)
    return x, mask @ (x @ b) / k


def train(model, x, y, steps: int) -> list[float]:
    return train_minibatches(model, x, y, steps, loss=lambda m, xb, yb: F.mse_loss(m(xb), yb), batch=64, lr=1e-2)


def test_loss(model, x, y) -> float:
    with torch.no_grad():
        return F.mse_loss(model(x), y).item()


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--eps", type=float, default=0.05, help="band half-width, in score units")
    p.add_argument("--fast", action="store_true", help="few steps, small data (for the tests)")
    args = p.parse_args(argv)
    if args.fast:
        args.steps = 100
    x, y = make_data(512 if args.fast else 4096)
    x_test, y_test = make_data(1024, seed=1)

    torch.manual_seed(0)
    model = TopKAttention()
    state0 = {k: v.clone() for k, v in model.state_dict().items()}

    print("== linearize ==")
    gm = sll_fx.linearize_module(model, eps=args.eps)
    print(f"\n== train {args.steps} steps (eps={args.eps}) ==")
    losses = train(gm, x, y, args.steps)
    first, last, k = window(losses)
    print(f"loss (mse): first {k} steps {first:.4f} -> last {k} steps {last:.4f}")

    baseline = TopKAttention()
    baseline.load_state_dict(state0)
    base_losses = train(baseline, x, y, args.steps)
    base = test_loss(baseline, x_test, y_test)
    print(f"without sll_fx (hard mask, same init and batches): loss {window(base_losses)[0]:.4f} -> "
          f"{window(base_losses)[1]:.4f}, test mse {base:.4f}")

    print("\n== export hard ==")
    hard = sll_fx.export_hard(gm)
    same = torch.equal(hard(x_test), model(x_test))
    print(f"\nhard model == original model, bit for bit: {same}")
    mse = test_loss(hard, x_test, y_test)
    print(f"test mse of the exported hard top-{model.k} model: {mse:.4f} (without sll_fx: {base:.4f}; "
          f"predicting 0: {y_test.pow(2).mean().item():.4f})")
    return {"losses": losses, "bit_identical": same, "mse": mse, "baseline_mse": base,
            "rewrite": gm.sll_report, "strip": hard.sll_report}


if __name__ == "__main__":
    main()

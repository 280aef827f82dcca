"""sll_fx quickstart: linearize a model with hard decisions, train it, export it hard.

The model below is written the way one writes a deployed model: a sign, a 5-level
round quantizer (steps of 0.5 on [-1, 1]) and a learnable threshold gate, all hard.  Trained as is, nothing
before those ops learns (their gradient is zero almost everywhere).
``sll_fx.linearize_module`` rewrites them to SLL ops; ``sll_fx.export_hard``
gives back the exact hard model for deployment.

    python examples/quickstart.py            # about ten seconds on 2 cores
    python examples/quickstart.py --steps 60 # a fast run (tests/test_examples_and_benchmarks.py)
"""

from __future__ import annotations

import argparse

import torch
from torch import nn

import sll_fx


class DiscreteNet(nn.Module):
    def __init__(self, d_in: int = 16, d_hidden: int = 32, n_classes: int = 4):
        super().__init__()
        self.enc = nn.Linear(d_in, d_hidden)
        self.gate_t = nn.Parameter(torch.zeros(d_hidden))   # learnable threshold of the gate
        self.mix = nn.Linear(d_hidden, d_hidden)
        self.head = nn.Linear(2 * d_hidden, n_classes)

    def forward(self, x):
        h = self.enc(x)
        s = torch.sign(h)                                    # binary features
        q = torch.round(self.mix(s).clamp(-1, 1) * 2) / 2    # 5-level quantizer: {-1, -0.5, 0, 0.5, 1}
        gate = (h > self.gate_t).float()                     # hard gate with a learnable threshold
        return self.head(torch.cat([q, gate], dim=-1))        # every path from x passes a jump


def make_data(n: int, d_in: int = 16, n_classes: int = 4, seed: int = 0):
    """Labels from a random teacher: the class whose prototype has the most same-sign coordinates."""
    prototypes = torch.randn(n_classes, d_in, generator=torch.Generator().manual_seed(1234))
    x = torch.randn(n, d_in, generator=torch.Generator().manual_seed(seed))
    y = (torch.sign(x) @ torch.sign(prototypes).T).argmax(-1)
    return x, y


def train(model: nn.Module, x, y, steps: int, lr: float = 1e-2) -> list[float]:
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    losses = []
    for step in range(steps):
        idx = torch.randint(0, len(x), (128,), generator=torch.Generator().manual_seed(step))
        loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def accuracy(model: nn.Module, x, y) -> float:
    with torch.no_grad():
        return (model(x).argmax(-1) == y).float().mean().item()


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--eps", type=float, default=0.25)
    args = p.parse_args(argv)

    torch.manual_seed(0)
    x, y = make_data(4096)
    x_test, y_test = make_data(2048, seed=1)
    model = DiscreteNet()
    enc_before = model.enc.weight.detach().clone()
    state0 = {k: v.clone() for k, v in model.state_dict().items()}

    print("== linearize ==")
    gm = sll_fx.linearize_module(model, eps=args.eps)       # prints the rewrite report
    print(f"\n== train {args.steps} steps (eps={args.eps}) ==")
    losses = train(gm, x, y, args.steps)
    k = max(1, len(losses) // 10)
    print(f"loss: first {k} steps {sum(losses[:k]) / k:.3f} -> last {k} steps {sum(losses[-k:]) / k:.3f}")
    print(f"encoder weights moved by {(model.enc.weight - enc_before).norm():.3f} (shared with the original model)")

    baseline = DiscreteNet()
    baseline.load_state_dict(state0)
    base_losses = train(baseline, x, y, args.steps)
    print(f"for comparison, the same model trained without sll_fx: loss {sum(base_losses[-k:]) / k:.3f}, "
          f"test accuracy {accuracy(baseline, x_test, y_test):.3f} (only the head learns)")

    print("\n== export hard ==")
    hard = sll_fx.export_hard(gm)                              # prints the strip report
    same = torch.equal(hard(x_test), model(x_test))
    acc = accuracy(hard, x_test, y_test)
    print(f"\nhard model == original model, bit for bit: {same}")
    print(f"test accuracy of the exported hard model: {acc:.3f} (chance: 0.25)")
    return {"losses": losses, "bit_identical": same, "accuracy": acc, "rewrite": gm.sll_report,
            "strip": hard.sll_report}


if __name__ == "__main__":
    main()

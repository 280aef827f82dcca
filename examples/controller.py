"""A discrete controller (seed scenario 3): an on/off thermostat policy trained through a simulator.

The policy is a small MLP whose output is a hard on/off action, as a deployed controller
computes it::

    action = (torch.sigmoid(self.policy(state)) > 0.5).float()

A tiny simulated room (heater power, heat leaking to the outside) runs the policy for a
number of steps from random starts, targets and outside temperatures; the loss is the
mean squared distance to the target along the trajectory.  Without sll_fx the action
carries no gradient: the loss does not depend on the policy's weights at all.
``sll_fx.linearize_module`` rewrites the ``>`` into ``sll.compare(gt)`` (eps in
probability units); the gradient then flows back through the simulated steps into the
policy.  This script uses ``mode="hard"``: the simulated heater is exactly on or off while
training, as when deployed.  In the default ``mode="linear"`` a policy whose probability
sits inside the band heats fractionally; it learns to rely on that (a smooth proportional
controller), and the exported on/off policy then tracks worse: the script prints that run too.

    python examples/controller.py           # under 10 seconds on 2 cores
    python examples/controller.py --fast    # a few seconds (the tests use this)
"""

from __future__ import annotations

import argparse

import torch
from torch import nn

import sll_fx
from _common import window

HEAT_PER_STEP = 1.0   # degrees gained per step with the heater on
LEAK = 0.05           # fraction of the gap to the outside temperature lost per step


class Thermostat(nn.Module):
    """state = (temperature - target, outside - target) / 10  ->  heater on (1.0) or off (0.0)."""

    def __init__(self, hidden: int = 16):
        super().__init__()
        self.policy = nn.Sequential(nn.Linear(2, hidden), nn.Tanh(), nn.Linear(hidden, 1))

    def forward(self, state):
        action = (torch.sigmoid(self.policy(state)) > 0.5).float()
        return action.squeeze(-1)


def simulate(controller, temp, target, outside, steps: int) -> torch.Tensor:
    """Roll the room forward under ``controller``; returns the temperatures, [steps, batch]."""
    temps = []
    for _ in range(steps):
        heat = controller(torch.stack([(temp - target) / 10, (outside - target) / 10], -1))
        temp = temp + HEAT_PER_STEP * heat - LEAK * (temp - outside)
        temps.append(temp)
    return torch.stack(temps)


def make_episodes(n: int, seed: int = 0):
    """Start temperatures 10..28, targets 18..24, outside temperatures 0..15 (degrees C)."""
    g = torch.Generator().manual_seed(seed)
    u = torch.rand(3, n, generator=g)
    return 10 + 18 * u[0], 18 + 6 * u[1], 15 * u[2]


def tracking_loss(temps, target) -> torch.Tensor:
    return ((temps - target) ** 2).mean()


def settled_error(controller, episodes, steps: int) -> float:
    """Mean |temperature - target| over the second half of each episode."""
    temp, target, outside = episodes
    with torch.no_grad():
        temps = simulate(controller, temp, target, outside, steps)
    return (temps[steps // 2:] - target).abs().mean().item()


def train(controller, episodes, iters: int, horizon: int, batch: int = 128, lr: float = 1e-2) -> list[float]:
    temp, target, outside = episodes
    opt = torch.optim.Adam(controller.parameters(), lr=lr)
    losses = []
    for it in range(iters):
        idx = torch.randint(0, len(temp), (batch,), generator=torch.Generator().manual_seed(it))
        loss = tracking_loss(simulate(controller, temp[idx], target[idx], outside[idx], horizon), target[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--iters", type=int, default=300)
    p.add_argument("--horizon", type=int, default=40, help="simulated steps per episode")
    p.add_argument("--eps", type=float, default=0.2, help="band half-width, in probability units")
    p.add_argument("--mode", default="hard", choices=["hard", "linear"])
    p.add_argument("--fast", action="store_true", help="few steps, small data (for the tests)")
    args = p.parse_args(argv)
    if args.fast:
        args.iters, args.horizon = 40, 25

    torch.manual_seed(0)
    episodes = make_episodes(2048)
    test = make_episodes(512, seed=1)
    model = Thermostat()
    untrained = settled_error(model, test, args.horizon)

    print("== linearize ==")
    state0 = {k: v.clone() for k, v in model.state_dict().items()}
    gm = sll_fx.linearize_module(model, eps=args.eps, mode=args.mode)
    print(f"\n== train {args.iters} iterations of {args.horizon}-step episodes (eps={args.eps}, mode={args.mode}) ==")
    losses = train(gm, episodes, args.iters, args.horizon)
    first, last, k = window(losses)
    print(f"loss (mean squared error to target): first {k} iterations {first:.2f} -> last {k} {last:.2f}")

    temp, target, outside = test
    loss = tracking_loss(simulate(Thermostat(), temp, target, outside, args.horizon), target)
    print(f"without sll_fx: loss.requires_grad = {loss.requires_grad}; the hard '>' cuts the graph, "
          "loss.backward() raises and the policy never changes")

    print("\n== export hard ==")
    hard = sll_fx.export_hard(gm)
    states = torch.randn(4096, 2)
    same = torch.equal(hard(states), model(states)) and torch.equal(
        simulate(hard, temp, target, outside, args.horizon), simulate(model, temp, target, outside, args.horizon))
    print(f"\nhard model == original model, bit for bit: {same} (actions, and whole simulated trajectories)")

    err = settled_error(hard, test, args.horizon)
    rule = settled_error(lambda s: (s[:, 0] < 0).float(), test, args.horizon)  # heat while below the target
    other = "linear" if args.mode == "hard" else "hard"
    model2 = Thermostat()
    model2.load_state_dict(state0)
    gm2 = sll_fx.linearize_module(model2, eps=args.eps, mode=other, verbose=False)
    train(gm2, episodes, args.iters, args.horizon)
    err2, err2_soft = settled_error(model2, test, args.horizon), settled_error(gm2, test, args.horizon)
    print(f"mean |temperature - target| over the second half of the test episodes: exported policy {err:.2f} C "
          f"(untrained {untrained:.2f} C; hand-written 'heat while below target' rule {rule:.2f} C)")
    print(f"same run with mode={other!r}: exported on/off policy {err2:.2f} C "
          f"(its fractional-heat surrogate while training: {err2_soft:.2f} C)")
    return {"losses": losses, "bit_identical": same, "settled_error": err, "untrained_error": untrained,
            "rule_error": rule, "other_mode_error": err2, "rewrite": gm.sll_report, "strip": hard.sll_report}


if __name__ == "__main__":
    main()

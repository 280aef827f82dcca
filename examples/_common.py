"""Helpers the example scripts share: a minibatch training loop, accuracy, and the loss window
they print.  Not an example itself (``python examples/<name>.py`` finds it next to the script)."""

from __future__ import annotations

from typing import Callable

import torch
from torch.nn import functional as F


def cross_entropy(model, xb, yb):
    return F.cross_entropy(model(xb), yb)


def train_minibatches(model, x, y, steps: int, loss: Callable = cross_entropy, batch: int = 128, lr: float = 3e-3,
                      before_step: Callable[[int], object] | None = None) -> list[float]:
    """Adam on ``loss(model, x_batch, y_batch)`` over random minibatches (batch ``step`` drawn with
    seed ``step``); ``before_step(step)`` runs first in each step (e.g. an eps schedule). Returns the losses."""
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    losses = []
    for step in range(steps):
        if before_step is not None:
            before_step(step)
        idx = torch.randint(0, len(x), (batch,), generator=torch.Generator().manual_seed(step))
        value = loss(model, x[idx], y[idx])
        opt.zero_grad()
        value.backward()
        opt.step()
        losses.append(value.item())
    return losses


def accuracy(model, x, y) -> float:
    with torch.no_grad():
        return (model(x).argmax(-1) == y).float().mean().item()


def window(losses: list[float]) -> tuple[float, float, int]:
    """(mean of the first tenth, mean of the last tenth, the tenth's length) of ``losses``."""
    k = max(1, len(losses) // 10)
    return sum(losses[:k]) / k, sum(losses[-k:]) / k, k

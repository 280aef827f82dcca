"""The tie check on two spellings it missed (a74): an op that is its input on a range, written in place into a fresh
copy of that input (``c = h.clone(); c.clamp_(-2, 1); floor(c - h)``: 0 on [-2, 1]), and a grid's mean over a count
the graph does not fix (``round(round(h).mean(-1))``: k + 1/2 for an even count).  Each was rewritten on its ties,
outputs off the model by a jump at inputs far from any band (the count does not shrink with eps); left hard now, with
controls that stay rewritten and carry a gradient."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import sll_fx

from _helpers import assert_bitwise


class _Model(nn.Module):
    """``fn(h)`` with ``h = x * w``, a learned ``w`` of 3 (a gradient reaches ``h``)."""

    def __init__(self, fn):
        super().__init__()
        self.fn = fn
        self.w = nn.Parameter(torch.tensor(3.0))

    def forward(self, x):
        return self.fn(x * self.w).float()


def _off(model, x, **kwargs) -> tuple:
    """``(gm, [outputs of gm off the model's at eps 1e-3, at eps 1e-4])``."""
    offs, gm = [], None
    for eps in (1e-3, 1e-4):
        gm = sll_fx.linearize_module(model, eps=eps, verbose=False, **kwargs)
        with torch.no_grad():
            offs.append(int((gm(x) != model(x)).sum()))
    return gm, offs


def _check(model, x, ties: bool, **kwargs) -> None:
    """Left hard and equal to the model where ``ties``, else rewritten with a gradient reaching ``w``; ``export_hard``
    the model bit for bit either way."""
    gm, offs = _off(model, x, **kwargs)
    entry = gm.sll_report.entries[-1]
    assert entry.rewritten != ties, str(gm.sll_report)
    if ties:
        assert offs == [0, 0], offs
    else:
        gm(x).sum().backward()
        assert gm.w.grad is not None and gm.w.grad != 0
    assert_bitwise(sll_fx.export_hard(gm, verbose=False)(x), model(x))


def _clamped_copy(h, low=-2, high=1):
    c = h.clone()
    c.clamp_(low, high)
    return c


def _relu_copy(h):
    c = h.clone()
    torch.relu_(c)
    return c


def _h_written_after_the_copy(h):
    c = _clamped_copy(h)
    h.add_(0.5)
    return torch.floor(c - h)


def _h_written_through_a_view(h):
    c = _clamped_copy(h)
    h.view(-1).add_(0.5)
    return torch.floor(c - h)


def _copy_written_twice(h):
    c = _clamped_copy(h)
    c.mul_(2)
    return torch.floor(c - h)


_X = torch.randn(16384, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("fn, ties", [
    (lambda h: (_clamped_copy(h) - h.clone() > 0), True),
    (lambda h: torch.floor(_clamped_copy(h) - h), True),
    (lambda h: torch.ceil(h - h.clone().clamp_(-2, 1)), True),
    (lambda h: torch.floor(_relu_copy(h) - h), True),
    (lambda h: torch.floor(_clamped_copy(h) * 3.7 + h), False),
    (lambda h: torch.floor(_clamped_copy(h * 2) - h), False),
    (_h_written_after_the_copy, False),
    (_h_written_through_a_view, False),
    (_copy_written_twice, False)],
    ids=["compared", "floor", "ceil_chained", "relu_", "not_a_difference", "copy_of_another", "h_written_after",
         "h_written_through_a_view", "copy_written_twice"])
def test_a_value_less_an_op_written_into_its_fresh_copy_ties(fn, ties):
    """``c = h.clone(); c.clamp_(-2, 1)`` holds ``clamp(h, -2, 1)``: ``c - h`` is 0 on [-2, 1], as the out-of-place
    spelling, which the check read only in a graph that writes nothing in place.  Rewritten before, outputs off the
    model of 16384 at eps 1e-3 / 1e-4: ``c - h.clone() > 0`` 6161 / 6157, ``floor(c - h)`` 6177 / 6158 (a74).  A copy
    of another value, a copy written again, and ``h`` written (itself or through a view) between the two reads are
    no ties: rewritten, with a gradient."""
    _check(_Model(fn), _X, ties)


def _mean_rounded(h):
    return torch.round(torch.round(h).mean(-1))


def _minimum_with_mean_rounded(h):
    q = torch.round(h)
    return torch.round(torch.minimum(q, q.mean(-1, keepdim=True)))


def _mean_compared(h):
    return torch.round(h).mean(-1) > 0.5


@pytest.mark.parametrize("fn", [_mean_rounded, _minimum_with_mean_rounded, _mean_compared],
                         ids=["round", "minimum", "compared"])
@pytest.mark.parametrize("n", [2, 3, 4, 128])
@pytest.mark.parametrize("example", [False, True], ids=["traced", "example_inputs"])
def test_a_mean_of_a_grid_over_a_count_the_graph_does_not_fix_ties(fn, n, example):
    """The mean of ``n`` whole numbers is on the grid 1/n: k + 1/2, round's jump (and a threshold 0.5), for an even
    ``n``.  A traced graph runs at any shape (``example_inputs`` too: they give dtypes and ranks, not the count), so
    the mean was read on its input's grid, missing the halves: rewritten before, outputs off the model of (128, n)
    at eps 1e-3 and 1e-4 alike: round 64 / 39 / 1 for n = 2 / 4 / 128, minimum 64 / 78 / 66, compared > 0 (a74).
    Now any count's mean: left hard (for an odd ``n`` too, which the graph cannot tell)."""
    x = torch.randn(128, n, generator=torch.Generator().manual_seed(0))
    kwargs = {"example_inputs": (x,)} if example else {}
    _check(_Model(fn), x, True, **kwargs)


@pytest.mark.parametrize("fn", [_mean_rounded, _minimum_with_mean_rounded, _mean_compared],
                         ids=["round", "minimum", "compared"])
@pytest.mark.parametrize("n, ties", [(2, True), (3, False), (4, True)])
def test_a_mean_of_a_grid_over_an_exported_count_ties_only_where_it_meets_the_jump(fn, n, ties):
    """An exported program fixes the count: the mean of ``n`` whole numbers is on the grid 1/n, which holds round's
    halves (and 0.5) for an even ``n`` only; an odd count stays rewritten."""
    x = torch.randn(128, n, generator=torch.Generator().manual_seed(0))
    model = _Model(fn)
    program = torch.export.export(model, (x,))
    gm = sll_fx.linearize_module(program, eps=1e-3, verbose=False)
    entry = gm.sll_report.entries[-1]
    assert entry.rewritten != ties, str(gm.sll_report)
    with torch.no_grad():
        assert_bitwise(sll_fx.export_hard(gm, verbose=False)(x), model(x))
        if ties:
            assert_bitwise(gm(x), model(x))


def test_a_continuous_mean_stays_rewritten():
    """Control: the mean of values on no grid is no tie (``round(h.mean(-1))``)."""
    x = torch.randn(16384, 4, generator=torch.Generator().manual_seed(0))  # (some in the bands: a gradient)
    _check(_Model(lambda h: torch.round(h.mean(-1))), x, False)

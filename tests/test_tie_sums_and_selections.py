"""The tie check on five spellings it missed (probes of the twenty-third session): a value plus a selection whose
branch is the value negated (``floor(x + where(x > 0, -x, 0))``: 0 from 0 up), a value plus its own negation
(``floor(h + (-h))``: 0 everywhere), a value less a selection among selections of it (``x - where(x > 1, where(x > 0,
x, 0), 1)``: 0 from 1 up), two ops of one value that are each the value on ranges that meet (``clamp(x, -1, 1) -
maximum(x, 0.5 * x)``: 0 on [0, 1]) and a sum of a constant over a row (``ceil(clamp(x, min=2).sum(-1) * 0.5)``: the
row's count where every element is 2).  Each was rewritten on its ties, outputs off the model by a jump on whole ranges
of inputs at every eps; left hard now (no output off the model), with controls off the ties that stay rewritten.
Also a sum on a grid on a part four ops and more under a jump (``floor(((v * 2 + 1) * 0.5) - 0.5)``), a one-to-one
op of a sum on a grid (``round(sigmoid(round(x) + round(2 * x)) * 3)``), a clip of a clip (``abs(clamp(x, -2, 2)) -
clamp(x, -2, 1)``), a value compared with its clip (``relu(x) > x``), an average pooling of a grid on a part, also a
module's (``round(avg_pool1d(maximum(round(x), x), 2))``), a value plus its absolute value (``abs(x) + x``), a run
of arithmetic with numbers in a graph that writes in place elsewhere, two clips of one value whose numbers are
taken on ranges that never meet (left rewritten), and comparisons of two values equal on every input.
Probes of the twenty-eighth session: powers (``round(relu(x) ** 2 + 0.5)``, ``round(round(x) ** 2 / 2)``, ``2.0 **
round(x)``), a clamp with a tensor bound (``floor(clamp(x, min=round(x)))``) and two shifts of one value (``trunc((x +
0.5) - (x + 1.5))``)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import sll_fx

from _helpers import assert_bitwise


class _Model(nn.Module):
    """``fn(self, x)`` with a learned scalar ``p`` and a module ``sigmoid``."""

    def __init__(self, fn, p: float = 0.5):
        super().__init__()
        self.fn = fn
        self.p = nn.Parameter(torch.tensor(p))
        self.sigmoid = nn.Sigmoid()

    def forward(self, x):
        return self.fn(self, x).float()


def _check(fn, ties: bool, p: float = 0.5) -> None:
    """The last discrete op of ``_Model(fn)``: left hard where ``ties`` (no output off the model at eps 1e-4), else
    rewritten; the model's bits after ``export_hard`` either way."""
    model, x = _Model(fn, p), torch.linspace(-3, 3, 6000).reshape(1000, 6)
    gm = sll_fx.linearize_module(model, eps=1e-4, verbose=False)
    entry = gm.sll_report.entries[-1]
    assert entry.rewritten != ties, str(gm.sll_report)
    with torch.no_grad():
        if ties:
            assert int((gm(x) != model(x)).sum()) == 0
        assert_bitwise(sll_fx.export_hard(gm, verbose=False)(x), model(x))


@pytest.mark.parametrize("fn, ties", [
    (lambda m, x: torch.floor(x + torch.where(x > 0, -x, 0.0)), True),
    (lambda m, x: torch.floor(torch.where(x > 0, -x, 0.0) + x), True),
    (lambda m, x: torch.floor(x + (-x).masked_fill(x < 0, 0.0).masked_fill(x > 2, 1.0)), True),
    (lambda m, x: torch.floor(x + torch.where(x > 0, -F.relu(x), 0.0)), True),
    (lambda m, x: torch.where(x > 0, -x, 0.0) + x > 0, True),
    (lambda m, x: torch.floor(x * 2 + (-(x * 2))), True),
    (lambda m, x: torch.floor(x * m.p + (-(x * m.p))), True),
    (lambda m, x: torch.floor(-torch.tanh(x) + torch.tanh(x)), True),
    (lambda m, x: torch.floor(x + (-torch.clamp(x, -1.0, 1.0))), True),
    (lambda m, x: torch.floor(x + torch.where(x > 0, x, 0.0)), False),
    (lambda m, x: torch.floor(x + torch.where(x > 0, -2 * x, 0.0)), False),
    (lambda m, x: torch.floor(x + torch.where(x > 0, -x, 0.0) + 0.5), False),
    (lambda m, x: torch.floor(x * 2 + (-x)), False)],
    ids=["negated_branch", "branch_first", "through_puts", "negated_clip", "comparison", "negated_term",
         "with_a_learned_scalar", "negation_first", "negated_clamp", "branch_not_negated", "another_value",
         "off_the_jumps", "not_cancelled"])
def test_a_value_plus_its_negation_is_0(fn, ties):
    """``x + where(x > 0, -x, 0)`` is 0 on x > 0 (3001 of 6000 outputs off the model through ``floor``, 3000 compared
    at 0; ``h + (-h)`` 6000): a sum was read as a difference only through a negated term, for a shift or a zero
    point, never as a value less itself, and a selection's branches only in a difference.  A negated term, and a
    selection whose branch (or what a put keeps, through puts) is the other term negated, read as a value less it
    now; a branch that is not the negation, values off the jumps and a sum that does not cancel stay rewritten."""
    _check(fn, ties)


@pytest.mark.parametrize("fn, ties", [
    (lambda m, x: torch.floor(x - torch.where(x > 1, torch.where(x > 0, x, 0.0), 1.0)), True),
    (lambda m, x: torch.floor(torch.where(x < 1, 1.0, torch.where(x > 0, F.relu(x), 0.0)) - x), True),
    (lambda m, x: torch.floor(x - torch.where(x > 1, torch.where(x > 0, 2 * x, 0.0), 1.0)), False)],
    ids=["nested_where", "nested_clip", "nested_other_value"])
def test_a_value_less_a_selection_among_selections_of_it_is_0(fn, ties):
    """``x - where(x > 1, where(x > 0, x, 0), 1)`` is 0 from 1 up (2001 of 6000 outputs off the model through
    ``floor``): a selection's branches were read one level deep.  The branches of a selection among selections count
    now (four levels); another value stays rewritten."""
    _check(fn, ties)


@pytest.mark.parametrize("fn, ties", [
    (lambda m, x: torch.floor(torch.clamp(x, -1, 1) - torch.maximum(x, 0.5 * x)), True),
    (lambda m, x: torch.floor(F.relu(x) - torch.abs(x)), True),
    (lambda m, x: torch.floor(torch.clamp(x, 0.5, 2.0) - F.leaky_relu(x, 0.1)), True),
    (lambda m, x: torch.clamp(x, -1, 1) - torch.maximum(x, 0.5 * x) < 0, True),
    (lambda m, x: torch.floor(F.relu(x) - torch.clamp(x, max=0.0)), False),
    (lambda m, x: torch.floor(torch.clamp(x, min=1.0) - torch.clamp(x, max=-1.5)), False),
    (lambda m, x: torch.floor(torch.clamp(x, -1, 1) - torch.maximum(x.flip(-1), 0.5 * x)), False)],
    ids=["clamp_less_maximum", "relu_less_abs", "clamp_less_leaky_relu", "comparison", "ranges_meet_at_a_point",
         "ranges_apart", "another_value"])
def test_two_ops_each_a_value_on_ranges_that_meet_cancel_there(fn, ties):
    """``clamp(x, -1, 1) - maximum(x, 0.5 * x)`` is 0 on [0, 1] (1002 of 6000 outputs off the model through ``floor``,
    1001 compared at 0): a difference was read 0 where one term is the other on a range, not where both are one same
    value.  Two such ops of one value tie where their ranges (where known: a clamp's bounds, relu's, a leaky relu's
    and abs's 0 up; a bound that is a tensor, any) meet on more than a point; ranges that meet at a point or not at
    all, and another value, stay rewritten."""
    _check(fn, ties)


@pytest.mark.parametrize("fn, ties", [
    (lambda m, x: torch.ceil(torch.clamp(x, min=2).sum(-1) * 0.5), True),
    (lambda m, x: torch.ceil(torch.clamp(x, min=2).sum(-1, keepdim=True)), True),
    (lambda m, x: torch.floor(F.relu(x).sum(-1)), True),
    (lambda m, x: torch.clamp(x, min=2).sum(-1) > 12.0, True),
    (lambda m, x: F.relu(x).sum(-1) > 0, True),
    (lambda m, x: (torch.round(x / 0.3) * 0.3 * x).sum(-1) > 0, True),
    (lambda m, x: torch.ceil(torch.clamp(x, min=2).sum(-1) * 0.5 + 0.25), False),
    (lambda m, x: torch.clamp(x, min=2).sum(-1) > 13.0, False),
    (lambda m, x: torch.ceil(torch.tanh(x).sum(-1)), False)],
    ids=["ceil_of_a_half_sum", "keepdim", "relu_at_0", "comparison", "comparison_at_0", "quantized_product_at_0",
         "off_the_jumps", "off_the_threshold", "continuous"])
def test_a_sum_of_a_constant_on_ranges_takes_its_multiples_where_its_row_does(fn, ties):
    """``clamp(x, min=2).sum(-1)`` is 2 n where every element of a row is 2 (``ceil`` of half of it: 833 of 1000
    outputs off the model; ``floor(relu(x).sum(-1))`` 500, compared at 12 833, ``relu(x).sum(-1) > 0`` 500, a
    quantized product ``round(x / 0.3) * 0.3 * x`` summed and compared at 0 50, where a row is in (-0.15, 0.15)): a sum
    was read only on a grid, where a mean was read at its input's constants.  It takes its input's constants times the
    count now, any multiple where the graph does not fix the count (a traced graph: read loosely, more ties, never
    fewer); values off the multiples and a continuous input stay rewritten (``test_passes``'s quantized sum that stays
    rewritten has a quantized factor that is never 0)."""
    _check(fn, ties)


def test_a_sum_of_clamps_whose_bound_is_off_the_grid_ties_at_its_multiples():
    """``trunc(x).clamp(-0.5, 2).sum(-1)`` is -0.5 where one element of a row is at most -1 and the others in (-1, 1)
    (a known miss the README listed: 157 of 1000 rows of ``randn`` off the model compared at -0.5): left hard now, and
    compared between the multiples (-0.75), rewritten."""
    x = torch.randn(1000, 6, generator=torch.Generator().manual_seed(0))
    for t, ties in ((-0.5, True), (-0.75, False)):
        model = _Model(lambda m, x: torch.trunc(x).clamp(-0.5, 2).sum(-1) < t)
        gm = sll_fx.linearize_module(model, eps=1e-4, verbose=False)
        assert gm.sll_report.entries[-1].rewritten != ties, str(gm.sll_report)
        with torch.no_grad():
            assert int((gm(x) != model(x)).sum()) == 0


def _on_the_even_numbers(x):
    """``round(x) + where(x > 0, round(x), x)``: ``2 round(x)`` on x > 0, on no grid of its own."""
    m = torch.round(x)
    return m + torch.where(x > 0, m, x)


@pytest.mark.parametrize("fn, ties", [
    (lambda m, x: torch.floor(((_on_the_even_numbers(x) * 2 + 1) * 0.5) - 0.5), True),
    (lambda m, x: torch.floor((((_on_the_even_numbers(x) * 2 + 1) * 0.5) - 0.5) * 3), True),
    (lambda m, x: torch.round(((_on_the_even_numbers(x) * 2 + 1) * 0.5) - 1), True),
    (lambda m, x: torch.floor(-(((_on_the_even_numbers(x) * 2 + 1) * 0.5) - 0.5)), True),
    (lambda m, x: torch.floor(torch.abs(((_on_the_even_numbers(x) * 2 + 1) * 0.5) - 0.5)), True),
    (lambda m, x: torch.floor((((torch.maximum(torch.round(x), x) + torch.round(2 * x)) * 2 + 1) * 0.5) - 0.5),
     True),
    (lambda m, x: torch.floor(((_on_the_even_numbers(x) * 2 + 1) * 0.5) - 0.25), False),
    (lambda m, x: torch.floor((((_on_the_even_numbers(x) * 2 + 1) * 0.5) - 0.5) * 3 + 0.5), False)],
    ids=["four_ops", "five_ops", "round", "negated", "absolute", "maximum_plus_grid", "off_the_jumps",
         "five_ops_off_the_jumps"])
def test_a_sum_on_a_grid_on_a_part_ties_under_a_chain_of_arithmetic(fn, ties):
    """``floor(((v * 2 + 1) * 0.5) - 0.5)`` of ``v = round(x) + where(x > 0, round(x), x)`` (``2 round(x)`` on x > 0,
    a sum of two tensors with no grid of its own) is whole on x > 0: 3001 of 6000 outputs off the model (8101 of
    16384 on ``randn(128, 128)``, at eps 1e-3 and 1e-4 alike).  Each op of a chain of arithmetic with numbers read the
    sum below it anew, one depth lower, so a sum four ops under the jump was read at none (``_SUMS_IN_PART``); the
    chain reads it as its top does now, as deep as the walk goes; values off the jumps stay rewritten."""
    _check(fn, ties)


@pytest.mark.parametrize("fn, ties", [
    (lambda m, x: torch.round(torch.sigmoid(torch.round(x) + torch.round(x * 2)) * 3), True),
    (lambda m, x: torch.floor(torch.sigmoid(torch.round(x) + torch.round(x * 2)) * 2), True),
    (lambda m, x: torch.ceil(torch.tanh((torch.round(x) - torch.round(x * 2)) * 0.5)), True),
    (lambda m, x: torch.round(m.sigmoid(torch.round(x) + torch.round(x * 2)) * 3), True),
    (lambda m, x: torch.round(torch.sigmoid(_on_the_even_numbers(x)) * 3), True),
    (lambda m, x: torch.round(torch.sigmoid((_on_the_even_numbers(x) - 1) * 0.5 + 0.5) * 3), True),
    (lambda m, x: torch.round(torch.sigmoid(torch.maximum(torch.round(x), x) + torch.round(x * 2)) * 3), True),
    (lambda m, x: torch.round(torch.sigmoid(torch.round(x) + torch.round(x * 2)) * 2), False),
    (lambda m, x: torch.round(torch.sigmoid(_on_the_even_numbers(x)) * 2), False)],
    ids=["sum_of_grids", "floor", "tanh_of_a_difference", "module", "sum_on_a_part", "under_a_chain",
         "maximum_plus_grid", "off_the_jumps", "on_a_part_off_the_jumps"])
def test_a_one_to_one_op_of_a_sum_on_a_grid_takes_its_images(fn, ties):
    """``round(sigmoid(round(x) + round(2 x)) * 3)`` is ``round(1.5)`` where the sum is 0, on (-0.25, 0.25): 3262 of
    16384 outputs off the model on ``randn(128, 128)`` at eps 1e-3 and 1e-4 alike (``floor(sigmoid(q1 + q2) * 2)``
    3284, ``ceil(tanh((q1 - q2) * 0.5))`` 5902, on x > 0 of ``sigmoid(round(x) + where(x > 0, round(x), x))`` 3090):
    the images of a one-to-one op were read on every grid but a sum's, its own or on a part.  A sum's grid counts now
    (it is read once per node), and a sum's grids on a part near the top of a walk, as arithmetic reads them; values
    off the jumps stay rewritten."""
    _check(fn, ties)


@pytest.mark.parametrize("fn, ties", [
    (lambda m, x: torch.abs(torch.clamp(x, -2, 2)) - torch.clamp(x, -2, 1) > 0, True),
    (lambda m, x: torch.floor(torch.abs(torch.clamp(x, -2, 2)) - torch.clamp(x, -2, 1)), True),
    (lambda m, x: torch.round(torch.abs(torch.clamp(x, -2, 2)) - torch.clamp(x, -2, 1) + 0.5), True),
    (lambda m, x: torch.floor(x - torch.abs(torch.clamp(x, -2, 2))), True),
    (lambda m, x: torch.floor(F.relu(torch.clamp(x, -2, 2)) - torch.clamp(x, -1, 3)), True),
    (lambda m, x: torch.clamp(torch.clamp(x, -2, 2), -3, 1) - x > 0, True),
    (lambda m, x: torch.floor(x - F.relu(torch.clamp(torch.clamp(x, -2, 2), -3, 1))), True),
    (lambda m, x: torch.clamp(torch.clamp(x, -2, -1), 0, 1) - x > 0, False),
    (lambda m, x: torch.floor(torch.abs(torch.clamp(x, -2, 2)) - torch.clamp(x, 2.0, 3) + 0.5), False),
    (lambda m, x: torch.floor(torch.abs(torch.clamp(x, -2, 2)) - torch.clamp(x.flip(-1), -2.25, 1.25)), False)],
    ids=["comparison", "floor", "round", "less_its_nested_clip", "relu_of_a_clamp", "clamp_of_a_clamp",
         "three_deep", "ranges_apart", "ranges_meet_at_a_point", "another_value"])
def test_a_clip_of_a_clip_is_its_value_where_the_ranges_meet(fn, ties):
    """``abs(clamp(x, -2, 2)) - clamp(x, -2, 1)`` is 0 on [0, 1]: 5521 of 16384 outputs off the model compared at 0 on
    ``randn(128, 128)``, at eps 1e-3 and 1e-4 alike (floor of it 6315, ``x - abs(clamp(x, -2, 2))`` 7689, ``clamp(
    clamp(x, -2, 2), -3, 1) - x`` 13422): an op that is its input on a range was read one level deep.  An op of such
    an op is its input's input where the two ranges meet (three deep); ranges that meet at a point or not at all, and
    another value, stay rewritten (with bounds whose sums are off the jumps: ``clamp(x.flip(-1), -2, 1)`` ties,
    4 where ``abs(...)`` is 2 and the other value is -2, a whole range of inputs, 5485 outputs off the model on
    ``randn(128, 128)`` and ``randn * 3`` when it was rewritten)."""
    _check(fn, ties)


def _written_clip_above(m, x):
    """``c > x`` of a copy of ``x`` clamped in place: equal on [-2, 1]."""
    c = x.clone()
    c.clamp_(-2.0, 1.0)
    return c > x


@pytest.mark.parametrize("fn, ties", [
    (lambda m, x: F.relu(x) > x, True),
    (lambda m, x: torch.clamp(x, -2, 1) >= x, True),
    (lambda m, x: x < torch.abs(x), True),
    (lambda m, x: torch.clamp(x, -1, 1) > torch.maximum(x, 0.5 * x), True),
    (lambda m, x: torch.abs(torch.clamp(x, -2, 2)) > torch.clamp(x, -2, 1), True),
    (lambda m, x: x <= torch.where(x > 1, x, 0.0), True),
    (_written_clip_above, True),
    (lambda m, x: F.relu(x) > x.flip(-1), False),
    (lambda m, x: torch.clamp(x, 2, 3) > torch.clamp(x, -2, 1), False),
    (lambda m, x: F.relu(x) > 2 * x, False)],
    ids=["relu", "clamp", "abs", "two_clips", "nested_clip", "selection", "written_clip", "another_value",
         "ranges_apart", "not_its_clip"])
def test_a_value_compared_with_its_clip_ties_where_it_is_its_clip(fn, ties):
    """``relu(x) > x`` is ``relu(x) - x > 0`` read as a comparison of two tensors: equal from 0 up, 8102 of 16384
    outputs off the model on ``randn(128, 128)`` at eps 1e-3 and 1e-4 alike (``clamp(x, -2, 1) >= x`` 13422, ``x <
    abs(x)`` 8109, ``clamp(x, -1, 1) > maximum(x, 0.5 x)`` 5523, a nested clip 5521): a comparison with a computed
    threshold read the threshold's grid and the constants it takes, not a value less its clip as a difference is.  It
    reads it now (the ops a difference reads: a clip, two clips of one value, nested, a selection's branch, a clip
    written in place into a copy); another value, ranges apart and a value that is not the clip's stay rewritten."""
    _check(fn, ties)


class _Pooled(nn.Module):
    """``fn(self, x)`` with the modules ``pool`` (``nn.AvgPool1d(2)``) and ``pool2`` (``nn.AvgPool2d(2)``)."""

    def __init__(self, fn):
        super().__init__()
        self.fn = fn
        self.pool = nn.AvgPool1d(2)
        self.pool2 = nn.AvgPool2d(2)

    def forward(self, x):
        return self.fn(self, x).float()


def _on_a_part(x):
    """``maximum(round(x), x)``: whole numbers where round(x) is the larger, with a channel dim."""
    return torch.maximum(torch.round(x), x).unsqueeze(1)


@pytest.mark.parametrize("fn, ties", [
    (lambda m, x: torch.round(F.avg_pool1d(_on_a_part(x), 2)), True),
    (lambda m, x: F.avg_pool1d(_on_a_part(x), 2) > 0.5, True),
    (lambda m, x: torch.round(F.avg_pool2d(_on_a_part(x).reshape(1, 1, 1000, 6), 2)), True),
    (lambda m, x: torch.round(m.pool(_on_a_part(x))), True),
    (lambda m, x: m.pool(_on_a_part(x)) > 0.5, True),
    (lambda m, x: torch.round(m.pool2(_on_a_part(x).reshape(1, 1, 1000, 6))), True),
    (lambda m, x: m.pool(F.relu(x).unsqueeze(1)) > 0, True),
    (lambda m, x: m.pool(F.hardtanh(x, 0.0, 2.0).unsqueeze(1)) >= 2, True),
    (lambda m, x: torch.round(F.avg_pool1d(_on_a_part(x), 3)), False),
    (lambda m, x: m.pool(_on_a_part(x)) > 0.25, False),
    (lambda m, x: m.pool(torch.tanh(x).unsqueeze(1)) > 0, False)],
    ids=["round", "comparison", "avg_pool2d", "module", "module_comparison", "module_2d", "module_of_relu",
         "module_of_hardtanh", "thirds", "off_the_threshold", "continuous"])
def test_an_average_pooling_of_a_grid_on_a_part_is_on_its_averaged_grid(fn, ties):
    """``round(avg_pool1d(maximum(round(x), x), 2))`` is k + 1/2 where a window's two elements are whole and of odd
    sum: 1001 of 8192 outputs off the model on ``randn(128, 128)`` at eps 1e-3 and 1e-4 alike (compared at 0.5 532,
    ``avg_pool2d`` 64); ``nn.AvgPool1d(2)`` of it the same, and of ``relu(x)`` compared at 0, 2090 (a module's pooling
    read neither the constants nor the grids its input takes): a mean read the grids its input takes on a part, an
    average pooling only its input's own grid.  An average pooling, also a module's, reads both now; windows of three
    (thirds, never on round's halves), a threshold off the grid and a continuous input stay rewritten."""
    model, x = _Pooled(fn), torch.linspace(-3, 3, 6000).reshape(1000, 6)
    gm = sll_fx.linearize_module(model, eps=1e-4, verbose=False)
    assert gm.sll_report.entries[-1].rewritten != ties, str(gm.sll_report)
    with torch.no_grad():
        if ties:
            assert int((gm(x) != model(x)).sum()) == 0
        assert_bitwise(sll_fx.export_hard(gm, verbose=False)(x), model(x))


@pytest.mark.parametrize("fn, ties", [
    (lambda m, x: torch.floor(torch.abs(x) + x), True),
    (lambda m, x: torch.abs(x) + x > 0, True),
    (lambda m, x: torch.floor(x + torch.abs(torch.clamp(x, -2, 2))), True),
    (lambda m, x: torch.floor(torch.abs(x) + 2 * x), False),
    (lambda m, x: torch.floor(x + torch.abs(torch.clamp(x, 0, 2))), False),
    (lambda m, x: torch.floor(x + torch.abs(x.flip(-1))), False)],
    ids=["floor", "comparison", "of_a_clip", "not_its_negation", "clip_above_0", "another_value"])
def test_a_value_plus_its_absolute_value_is_0_where_it_is_negative(fn, ties):
    """``abs(x) + x`` is 0 on x <= 0 (8284 of 16384 outputs off the model through ``floor`` on ``randn(128, 128)``, at
    eps 1e-3 and 1e-4 alike): ``abs`` was read as its input on [0, inf) only, not as its input negated below 0.  A sum
    of a value and ``abs`` of it (or of an op that is it on a range reaching below 0) ties now; a clip that is never
    negative and another value stay rewritten."""
    _check(fn, ties)


@pytest.mark.parametrize("fn, ties", [
    (lambda m, x: torch.floor(torch.clamp(torch.abs(x), max=2) + torch.clamp(x, -2, 1)), True),
    (lambda m, x: torch.floor(torch.clamp(x, -2, 1) + torch.clamp(torch.abs(x), max=2)), True),
    (lambda m, x: torch.clamp(torch.abs(x), max=2) + x > 0, True),
    (lambda m, x: torch.floor(torch.clamp(torch.abs(x), max=2.5) + torch.clamp(x, 0, 1)), False),
    (lambda m, x: torch.floor(torch.clamp(torch.abs(x), 2.5, 3) + torch.clamp(x, -2.25, 1.25)), False),
    (lambda m, x: torch.floor(torch.clamp(torch.abs(x), max=2) + torch.clamp(x.flip(-1), -2.5, 1.5)), False)],
    ids=["floor", "clip_first", "comparison", "clip_above_0", "abs_range_apart", "another_value"])
def test_an_absolute_value_inside_a_clip_is_a_value_negated(fn, ties):
    """``clamp(abs(x), max=2) + clamp(x, -2, 1)`` is 0 on [-2, 0] (4000 of 6000 outputs off the model through
    ``floor`` at eps 1e-4, 4004 at 1e-3): ``abs`` was read as the other term negated only as a term itself, not inside
    a clip.  An ``abs`` an op is on a range of it (:meth:`_clips`), beside a term that is the value on a range meeting
    the one where ``abs`` is it negated, ties now; a clip never below 0, ranges apart and another value stay
    rewritten, with bounds whose sums are off the jumps (``clamp(abs(x), max=2) + clamp(x, 0, 1)`` is 2 on x <= -2,
    ``clamp(abs(x), 2.5, 3) + clamp(x, -2, 1)`` 1 on x <= -3, ``clamp(abs(x), max=2) + clamp(x.flip(-1), -2, 1)`` 0
    where the one is 2 and the other -2: 9166, 5335 and 5492 outputs off the model on ``randn(128, 128)`` and ``randn
    * 3`` when they were rewritten, a number of each term added up)."""
    _check(fn, ties)


@pytest.mark.parametrize("fn, ties", [
    (lambda m, x: torch.round((F.relu(torch.clamp(x, -2, 1)) - torch.clamp(x, -2, 1)) * 0.25), True),
    (lambda m, x: torch.round((torch.clamp(x, -2, 1) - F.relu(torch.clamp(x, -2, 1))) * 0.25), True),
    (lambda m, x: F.relu(torch.clamp(x, -2, 1)) - torch.clamp(x, -2, 1) > 2.0, True),
    (lambda m, x: torch.round((F.relu(torch.clamp(x, -2, 1)) - torch.clamp(x, -2, 1)) * 0.25 + 0.125), False),
    (lambda m, x: torch.round((F.relu(torch.clamp(x, -2, 1)) - torch.clamp(x, -3, 1)) * 0.25), False)],
    ids=["round", "terms_swapped", "comparison", "off_the_jumps", "another_call"])
def test_two_functions_of_one_call_written_twice_take_its_values_on_ranges(fn, ties):
    """``relu(c) - c`` of ``c = clamp(x, -2, 1)`` written twice is 2 on x <= -2 (1001 of 6000 outputs off the model
    through ``round(... * 0.25)`` at eps 1e-4, 1004 at 1e-3): two functions of one value were read on that value's
    values on ranges only where both terms read one node (here the input, which takes none).  Where the node test
    finds nothing, the same call of the same values (``_same_value``) counts as that value now; values off the jumps
    and another call stay rewritten."""
    _check(fn, ties)


@pytest.mark.parametrize("fn, ties", [
    (lambda m, x: torch.ceil((x * 3) * 5 - x * 15), True),
    (lambda m, x: torch.ceil(x * 15 - (x * 3) * 5), True),
    (lambda m, x: torch.floor((x * 3) * 5 + (x * 5) * -3), True),
    (lambda m, x: (x * 3) * 5 - x * 15 > 0, True),
    (lambda m, x: torch.ceil((x * 3) * 5 - x * 14), False),
    (lambda m, x: torch.ceil((x * 3) * 5 - x.flip(-1) * 15), False)],
    ids=["ceil", "swapped", "sum_of_products", "comparison", "not_cancelled", "another_value"])
def test_products_of_products_that_cancel_are_0_where_float32_rounds_them_alike(fn, ties):
    """``(x * 3) * 5 - x * 15`` is 0 where float32 rounds both alike (on most inputs: 6000 of 6000 outputs off the model
    through ``ceil`` at eps 1e-3 and 1e-4, 65536 in all on ``randn(128, 128)`` and ``randn * 3``): ``_opposite`` read
    one product with a number in each term only.  Two products read through products of products
    (:func:`_factors_of`) with opposite coefficients tie now (a tie on part of the range; elsewhere the sum is a few
    ulps); coefficients that do not cancel and another value stay rewritten."""
    _check(fn, ties)


@pytest.mark.parametrize("fn, ties", [
    (lambda m, x: torch.floor(torch.abs(torch.clamp(x, -2, 0)) - torch.clamp(x, -2, 1)), True),
    (lambda m, x: torch.floor(torch.clamp(x, 1, 2) + torch.clamp(x.flip(-1), 1, 2)), True),
    (lambda m, x: torch.floor(F.relu(x) + torch.clamp(x, min=1)), True),
    (lambda m, x: torch.clamp(x, 1, 2) + torch.clamp(x.flip(-1), 1, 2) > 2, True),
    (lambda m, x: torch.floor(torch.abs(torch.clamp(x, -2, 0)) - torch.clamp(x, -2, 1) + 0.5), False),
    (lambda m, x: torch.floor(torch.clamp(x, 1, 2) + x), False)],
    ids=["two_functions_of_one_value", "two_values", "relu_and_a_clamp", "comparison", "off_the_jumps",
         "no_number_in_a_term"])
def test_a_sum_of_two_terms_each_a_number_on_ranges_takes_their_sum(fn, ties):
    """``abs(clamp(x, -2, 0)) - clamp(x, -2, 1)`` is 4 on x <= -2 and -1 from 1 up (13215 of 32768 outputs off the
    model through ``floor`` on ``randn(128, 128)`` and ``randn * 3`` at eps 1e-3, 13194 at 1e-4), ``clamp(a, 1, 2) +
    clamp(b, 1, 2)`` 2 where both are 1 (25148, 25124): a sum of two tensors was read at the numbers its terms take
    on ranges only where both are 0, or one term on a grid.  A number of each term, added up, counts now, as though
    the two ranges met (more ties, never fewer: ``2 - 1`` is read too, where the ranges are apart); values off the
    jumps and a term with no number stay rewritten."""
    _check(fn, ties)


@pytest.mark.parametrize("fn, ties", [
    (lambda m, x: torch.ceil((x * -1) * 1 + x), True),
    (lambda m, x: torch.ceil(x + (x * 2) * -0.5), True),
    (lambda m, x: torch.ceil((x * 0.1) * 3 - x * 0.3), True),
    (lambda m, x: (x * 0.1) * 3 - x * 0.3 > 0, True),
    (lambda m, x: torch.ceil((x * -1) * 1 + x * 0.5), False),
    (lambda m, x: torch.ceil((x * 0.1) * 3 - x * 0.31), False),
    (lambda m, x: torch.ceil((x * -1) * 1 + x.flip(-1)), False)],
    ids=["beside_a_plain_term", "plain_term_first", "inexact_coefficients", "comparison", "not_cancelled",
         "coefficients_apart", "another_value"])
def test_a_product_of_a_product_cancels_a_plain_term_or_one_within_ulps(fn, ties):
    """``(x * -1) * 1 + x`` is 0 on every input, ``(x * 0.1) * 3 - x * 0.3`` where float32 rounds both alike (32768
    of 32768 outputs off the model through ``ceil`` on ``randn(128, 128)`` and ``randn * 3`` at eps 1e-3 and 1e-4,
    each): ``_opposite`` read products of products only beside another product, and their coefficients equal
    exactly (0.1 * 3 is 0.30000000000000004).  A product through products beside a plain term, and coefficients equal
    to a few ulps, cancel now (and are not inert); coefficients that do not cancel and another value stay
    rewritten."""
    _check(fn, ties)


def _doubled(s, n: int):
    """``s`` under ``n`` ops with numbers, ``* 2.0`` and ``- 1.0`` in turn (whole numbers stay whole)."""
    for i in range(n):
        s = s * 2.0 if i % 2 == 0 else s - 1.0
    return s


@pytest.mark.parametrize("fn, ties", [
    (lambda m, x: torch.floor(_doubled(F.relu(x) + F.relu(x.flip(-1)), 7)), True),
    (lambda m, x: torch.floor(_doubled(torch.clamp(x, 1, 2) + torch.clamp(x.flip(-1), 1, 2), 9)), True),
    (lambda m, x: torch.floor(_doubled(F.relu(x) - x, 8)), True),
    (lambda m, x: torch.floor(_doubled((lambda r: r * 0.5 + torch.where(x > 0, r, x) * 0.5)(torch.round(x)), 7)),
     True),
    (lambda m, x: _doubled(F.relu(x) + F.relu(x.flip(-1)), 7) > -14.0, True),
    (lambda m, x: F.one_hot(torch.argmax(_doubled(F.relu(x - 1.0) + F.relu(x.flip(-1) - 1.0), 7), -1), 6), True),
    (lambda m, x: torch.floor(_doubled(F.relu(x) + F.relu(x.flip(-1)), 7) + 0.5), False),
    (lambda m, x: torch.floor(_doubled(x + x.flip(-1), 9)), False),
    (lambda m, x: F.one_hot(torch.argmax(_doubled(x * 2.0 + x.flip(-1), 7), -1), 6), False)],
    ids=["relus_seven_ops_down", "clamps_nine_ops_down", "less_its_clip_eight_ops_down", "grid_on_a_part",
         "comparison", "one_hot", "off_the_jumps", "no_tie_below", "one_hot_of_a_varying_row"])
def test_a_run_of_arithmetic_with_numbers_is_one_step_of_the_walk(fn, ties):
    """``floor`` of ``relu(a) + relu(b)`` under seven ops with numbers (``* 2.0``, ``- 1.0``) sits on a jump where both
    are 0 (8512 of 32768 outputs off the model on ``randn(128, 128)`` and ``randn * 3`` at eps 1e-4; compared at -14
    8508; two clamps nine ops down 25124, ``relu(x) - x`` eight down 16231, a grid on a part five down and more 16235):
    each op of arithmetic with a number spent one of the walk's 8 steps, leaving the sum's terms unread.  A run of
    such ops (16 at most) is one step now, for the values on ranges, the ties at a threshold and the flat rule
    (``one_hot(argmax(...))`` of relus seven ops down: 16388 of 32768 outputs off on ``randn * 0.3`` and ``randn *
    0.5``), in a graph that writes nothing in place; values off the jumps, and a sum with no tie, stay rewritten."""
    _check(fn, ties)


def _beside_a_write(x, v):
    """``v``, in a graph that writes in place elsewhere (``c = x.clone(); c.relu_()``, read by nothing)."""
    c = x.clone()
    c.relu_()
    return v


@pytest.mark.parametrize("fn, ties", [
    (lambda m, x: _beside_a_write(x, torch.ceil(_doubled(F.relu(x) + F.relu(-x - 1.0), 9))), True),
    (lambda m, x: _beside_a_write(x, torch.floor(_doubled(F.relu(x) + F.relu(x.flip(-1)), 7))), True),
    (lambda m, x: _beside_a_write(x, _doubled(F.relu(x) + F.relu(x.flip(-1)), 9) > -30.0), True),
    (lambda m, x: _beside_a_write(x, F.one_hot(torch.argmax(_doubled(F.relu(x - 1.0) + F.relu(x.flip(-1) - 1.0), 9),
                                                            -1), 6)), True),
    (lambda m, x: _beside_a_write(x, torch.floor(_doubled(F.relu(x) + F.relu(x.flip(-1)), 7) + 0.5)), False),
    (lambda m, x: _beside_a_write(x, torch.floor(_doubled(x + x.flip(-1), 9))), False)],
    ids=["ceil_nine_ops_down", "floor_seven_ops_down", "comparison", "one_hot", "off_the_jumps", "no_tie_below"])
def test_a_run_of_arithmetic_no_write_reaches_is_one_step_beside_a_write(fn, ties):
    """``ceil`` of ``relu(x) + relu(-x - 1)`` (0 on [-1, 0]) under nine ops with numbers, in a graph that writes in
    place elsewhere (``c = x.clone(); c.relu_()``, read by nothing: 7770 / 7731 of 32768 outputs off the model on
    ``randn(128, 128)`` and ``randn * 3`` at eps 1e-3 / 1e-4; compared, 7730 / 7730; ``one_hot(argmax(...))`` of rows
    of two, 2250 / 2250): a run of arithmetic with numbers was one step of the walk only in a graph that writes
    nothing in place, and nine ops used up its depth of 8.  It is one step now wherever no write reaches the run
    (``Ties._untouched``); values off the jumps, and a sum with no tie, stay rewritten."""
    _check(fn, ties)


def _clips(x):
    """``abs(clamp(x, -2, 0)) - clamp(x, -2, 1)``: 4 on x <= -2, -1 from 1 up, ``-2 x`` and ``-x`` between."""
    return torch.abs(torch.clamp(x, -2.0, 0.0)) - torch.clamp(x, -2.0, 1.0)


def _clips_written_between(x):
    """``_clips`` with ``x`` (a copy of the input) moved by 5 in place between the two clips: 1 on [-4, -2]."""
    q = x.clone()
    a = torch.abs(torch.clamp(q, -2.0, 0.0))
    q.add_(5.0)
    return a - torch.clamp(q, -2.0, 1.0)


@pytest.mark.parametrize("fn, ties", [
    (lambda m, x: _clips(x) > 4.0, True),
    (lambda m, x: _clips(x) >= -1.0, True),
    (lambda m, x: torch.floor(_clips(x)), True),
    (lambda m, x: torch.maximum(x, torch.tensor(1.0)) + torch.minimum(x, torch.tensor(-1.0)) > 0, True),
    (lambda m, x: _clips_written_between(x) > 1.0, True),
    (lambda m, x: torch.abs(torch.clamp(x, -2.0, 0.0)) - torch.clamp(x, m.p * 3.0, 1.0) > 1.0, True),
    (lambda m, x: _clips(x) > 2.0, False),
    (lambda m, x: _clips(x) > 1.0, False)],
    ids=["at_4", "at_minus_1", "floor", "ranges_that_meet", "written_between", "learned_bound", "at_2", "at_1"])
def test_numbers_two_clips_of_one_value_take_on_ranges_that_never_meet_are_not_added_up(fn, ties):
    """``abs(clamp(x, -2, 0)) - clamp(x, -2, 1) > 2`` was left hard (no tie: 0 taken from 0 up, -2 to -2 down, never
    together; so ``> 1``, 2 and 1), a lost gradient: a number of each term was added up as though the two ranges met.
    Where both terms are elementwise functions of clips of one value no write reaches, each number taken at one
    bound only (``q <= lo``, ``q >= hi`` with ``hi >= lo``), the pair is not read (``_apart``); the ties that are
    there (4, -1), clips of ranges that meet (``maximum(x, 1) + minimum(x, -1)``: 0 on [-1, 1]), a value written
    between the two clips (1 on [-4, -2]) and a bound that is no number (``clamp(x, 3 * p, 1)``: 1 everywhere, ``p``
    0.5) stay hard."""
    _check(fn, ties)


def _scaled_clone(x, k: float, moved: bool = False):
    """``(c, x)`` of ``c = x.clone(); c.mul_(k)`` (``x`` a copy of the input; ``moved``: ``x`` times 1.5 in place after
    the write)."""
    x = x.clone()
    c = x.clone()
    c.mul_(k)
    if moved:
        x.mul_(1.5)
    return c, x


@pytest.mark.parametrize("fn, ties", [
    (lambda m, x: x > x.clone(), True),
    (lambda m, x: torch.tanh(x) > torch.tanh(x), True),
    (lambda m, x: x * 2.0 > 2 * x, True),
    (lambda m, x: x + 1.0 >= x + 1.0, True),
    (lambda m, x: -x < x * -1.0, True),
    (lambda m, x: (lambda c, y: c > 2 * y)(*_scaled_clone(x, 2.0)), True),
    (lambda m, x: x * 2.0 > 3 * x, False),
    (lambda m, x: torch.tanh(x) > torch.tanh(x * 1.5), False),
    (lambda m, x: (lambda c, y: c > 2 * y)(*_scaled_clone(x, 2.0, True)), False)],
    ids=["copy", "same_call_twice", "same_multiple", "same_shift", "negations", "written_multiple", "other_multiple",
         "other_call", "written_between"])
def test_a_comparison_of_two_values_equal_everywhere_ties(fn, ties):
    """``x > x.clone()`` compares two equal values on every input (32768 of 32768 outputs off the model on ``randn(128,
    128)`` and ``randn * 3`` at eps 1e-3 and 1e-4; so did ``tanh(x) > tanh(x)``, ``x * 2.0 > 2 * x``, ``x + 1.0 >= x +
    1.0``, ``-x < x * -1.0`` and ``c > 2 * x`` of ``c = x.clone(); c.mul_(2.0)``): a comparison of two nodes read
    their difference's ties through clips only (``relu(h) > h``).  Two values whose difference the sums read as 0
    (``Ties._equal``: one value, a copy, the same call twice, the same multiple of one value, also written in place)
    tie now; other multiples, other calls and a value written between the reads stay rewritten."""


@pytest.mark.parametrize("fn, ties", [
    (lambda m, x: torch.round(F.relu(x) ** 2 + 0.5), True),
    (lambda m, x: torch.round(torch.square(F.relu(x)) + 0.5), True),
    (lambda m, x: torch.ceil(torch.pow(F.relu(x), 3)), True),
    (lambda m, x: torch.round(torch.round(x) ** 2 / 2), True),
    (lambda m, x: torch.round(torch.round(x).pow(2) * 0.5), True),
    (lambda m, x: torch.round(torch.sign(x) ** 2 * 0.5), True),
    (lambda m, x: torch.round(2.0 ** torch.round(x) * 0.5), True),
    (lambda m, x: (2.0 ** torch.round(x) > 1.0).float(), True),
    (lambda m, x: torch.round(torch.exp2(torch.round(x)) * 0.5), True),
    (lambda m, x: torch.round(F.relu(x) ** 2 + 0.25), False),
    (lambda m, x: torch.round(torch.round(x) ** 2 * 0.25 + 0.125), False),
    (lambda m, x: torch.round(x ** 2), False),
    (lambda m, x: torch.round(2.0 ** torch.round(x) * 0.3 + 0.01), False),
    (lambda m, x: torch.round(2.0 ** x), False)],
    ids=["relu_squared", "square", "cubed", "grid_squared", "pow_method", "sign_squared", "two_to_a_grid",
         "two_to_a_grid_compared", "exp2", "off_the_jumps", "grid_squared_off_the_jumps", "continuous",
         "two_to_a_grid_off_the_jumps", "two_to_a_continuous_value"])
def test_a_power_takes_its_input_s_numbers_and_grid_raised(fn, ties):
    """Probes of the twenty-eighth session (a108), spellings the fuzzer does not write: ``round(relu(x) ** 2 + 0.5)``
    is 0.5 on x <= 0 (16387 of 32768 outputs off the model on ``randn(128, 128)`` and ``randn * 3`` at eps 1e-5;
    ``ceil(relu(x) ** 3)`` 16547) and ``round(round(x) ** 2 / 2)`` k^2 / 2, a half-integer at every odd k (16335):
    ``pow`` and ``square`` were read neither as a map of the numbers their input takes on ranges nor as a grid.  A
    power by a whole number (1 to 8) of a grid is on the grid of its products now (``_product``), and any power by a
    number maps its input's numbers (as a one-to-one op's are); a number raised to a grid takes the grid's images
    (``round(2.0 ** round(x) * 0.5)``: 8468 off; also compared at 1.0, 2**0; ``exp2`` is one-to-one).  Values off the
    jumps, and continuous inputs, stay rewritten."""
    _check(fn, ties)


@pytest.mark.parametrize("fn, ties", [
    (lambda m, x: torch.floor(torch.clamp(x, min=torch.round(x))), True),
    (lambda m, x: torch.ceil(torch.clamp(x, max=torch.round(x))), True),
    (lambda m, x: torch.floor(torch.clamp(x, torch.round(x), torch.round(x) + 1.0)), True),
    (lambda m, x: torch.floor(x.clip(min=torch.round(x))), True),
    (lambda m, x: torch.floor(torch.clamp_min(x, torch.round(x))), True),
    (lambda m, x: torch.clamp(x, min=torch.round(x)) > 1.0, True),
    (lambda m, x: F.one_hot(torch.argmax(torch.clamp(x * 0.1, min=torch.round(x * 0.1)), -1), 6), True),
    (lambda m, x: torch.floor(torch.clamp(x, min=torch.round(x) + 0.5)), False),
    (lambda m, x: torch.floor(torch.clamp(x, min=x * 0.5)), False),
    (lambda m, x: torch.clamp(x, min=torch.round(x)) > 1.5, False),
    (lambda m, x: F.one_hot(torch.argmax(torch.clamp(x, min=x * 0.5), -1), 6), False)],
    ids=["min", "max", "both", "clip_method", "clamp_min", "compared", "one_hot", "bound_off_the_jumps",
         "continuous_bound", "compared_off_the_bound", "one_hot_of_a_varying_row"])
def test_a_clamp_takes_its_tensor_bound_where_it_cuts(fn, ties):
    """Probes of the twenty-eighth session (a108): ``floor(clamp(x, min=round(x)))`` is ``round(x)``, whole, wherever
    ``x < round(x)`` (16228 of 32768 outputs off the model on ``randn(128, 128)`` and ``randn * 3`` at eps 1e-3, 1e-4
    and 1e-5; ``clamp(x, min=round(x)) > 1`` 3476; ``one_hot(argmax(...))`` of it 690): a clamp's bound that is a
    tensor was read as a constant node only (a threshold at that node), not as the values it takes, where ``maximum(x,
    round(x))`` read both operands.  A tensor bound (not a learned scalar: the documented policy) is read as a
    ``maximum``/``minimum`` operand is now, on jumps, at a threshold and in a row; a bound off the jumps and a
    continuous one stay rewritten."""
    _check(fn, ties)


@pytest.mark.parametrize("fn, ties", [
    (lambda m, x: torch.trunc((x + 0.5) - (x + 1.5)), True),
    (lambda m, x: torch.round((x + 0.25) - (x - 0.25)), True),
    (lambda m, x: torch.round((x.clone() + 0.25) - (x - 0.25)), True),
    (lambda m, x: (x + 2.0) - (x - 1.0) > 3.0, True),
    (lambda m, x: F.one_hot(torch.argmax((x + 2.0) - (x - 1.0), -1), 6), True),
    (lambda m, x: torch.trunc(torch.where(x > 0.3, x * 2.0, x + 0.5) - (x + 1.5)), True),
    (lambda m, x: torch.round((x + 0.25) - (x - 0.5)), False),
    (lambda m, x: torch.trunc((x + 0.5) - (x * 2.0 + 1.5)), False)],
    ids=["trunc", "round", "a_copy", "compared", "one_hot", "a_branch", "off_the_jumps", "two_values"])
def test_two_shifts_of_one_value_differ_by_the_difference_of_the_shifts(fn, ties):
    """Probes of the twenty-eighth session (a108): ``(x + 0.5) - (x + 1.5)`` is -1 wherever both sums are exact, on
    ranges (``trunc`` of it, ``round((x + 0.25) - (x - 0.25))``, ``> 3`` and ``one_hot(argmax(...))`` of ``(x + 2) - (x
    - 1)``: 32768 of 32768 outputs off the model on ``randn(128, 128)`` and ``randn * 3`` at eps 1e-3, 1e-4 and 1e-5; a
    ``where`` with such a branch 19018): a shift less itself was read where one term is the other shifted only.  Two
    shifts of one value (``Ties._shifted``) are read at the difference now, as a shift less itself is; a difference
    off the jumps, and shifts of two values, stay rewritten."""
    _check(fn, ties)

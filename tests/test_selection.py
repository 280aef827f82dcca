"""Tests of the selection rules: ``where``/``masked_fill`` on a comparison, ``one_hot(argmax)``, top-k masks.

The issue: ``torch.where(c, a, b)`` / ``x.masked_fill(c, v)`` with ``c`` a float comparison become
the blend ``a s + b (1 - s)`` (``s`` the comparison's surrogate), with gradients to ``x``, the
threshold, ``a`` and ``b``; products with a cast mask are the cast rule's; ``one_hot(argmax(x, dim), n)``
(and argmin) becomes the margin surrogate of SLL_MATH.md; ``zeros_like(x).scatter(dim, topk(x, k, dim)
.indices, 1.0)`` (and ``scatter_``, the seed's sparse attention) becomes the top-k surrogate around
``tau = (x_(k) + x_(k+1)) / 2``; index uses of argmax/topk that are none of these stay hard, with a reason.

Every spelling is checked for: the sll op it becomes, its report entry, its values against the
formulas of ``../shared/SLL_MATH.md`` (exactly the hard result outside the band), its gradients,
``mode="hard"`` (forward bit-identical, gradient nonzero) and the ``export_hard`` round trip
(bit-identical, with ties, +-inf, -inf masks and NaN in the unselected branch).
"""

from __future__ import annotations

import operator
import os
from dataclasses import dataclass
from typing import Callable

import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import fx, nn

import sll_fx
from sll_fx.annealing import node_eps
from sll_fx.diagnostics import is_soft_mask
from sll_fx.report import RewriteReport, StripReport
from _helpers import assert_bitwise, is_op, sll_nodes

THIS_FILE = os.path.basename(__file__)
INF, NAN = float("inf"), float("nan")
EPS = 0.1


# ----------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------

def nodes_of(gm, packet) -> list[fx.Node]:
    return [n for n in sll_nodes(gm) if is_op(n.target, packet)]


def _line_of(fn) -> str:
    return f"{THIS_FILE}:{fn.__code__.co_firstlineno}"


def no_hard_left(gm, targets=(), methods=()) -> None:
    for n in gm.graph.nodes:
        assert not (n.op == "call_function" and any(n.target is t for t in targets)), gm.code
        assert not (n.op == "call_method" and n.target in methods), gm.code


class Spell(nn.Module):
    """Applies ``fn(self, x)``; owns a threshold ``t``, branch parameters ``a``/``b`` and a buffer ``v``."""

    def __init__(self, fn: Callable):
        super().__init__()
        self.fn = fn
        self.t = nn.Parameter(torch.tensor(0.3))
        self.a = nn.Parameter(torch.tensor(2.0))
        self.b = nn.Parameter(torch.tensor(-1.0))
        self.register_buffer("v", torch.tensor(0.25))

    def forward(self, x):
        return self.fn(self, x)


class Outer(nn.Module):
    """Holds the spelling as submodule ``body``: report entries name a module path."""

    def __init__(self, fn: Callable):
        super().__init__()
        self.body = Spell(fn)

    def forward(self, x):
        return self.body(x)


def _grads(params) -> list:
    return [None if p.grad is None else p.grad.detach().clone() for p in params]


def _zero(params) -> None:
    for p in params:
        p.grad = None


# ========================================================================================
# 1. where / masked_fill on a comparison
# ========================================================================================

@dataclass
class Sel:
    id: str
    fn: Callable
    op: str                     # report spelling of the selection
    cmp: str                    # sll.compare's cmp
    cmp_op: str                 # report spelling of the comparison
    select_op: str              # sll.select's op: "where" / "masked_fill"
    direction: int              # s rises (+1) or falls (-1) with x across the threshold
    thr: Callable               # m -> threshold (a tensor or a float)
    a: Callable                 # (m, x) -> the branch taken where s = 1
    b: Callable                 # (m, x) -> the branch taken where s = 0
    finite: bool = True         # both branches finite (the blend carries a slope to the threshold)

    @property
    def kind(self) -> str:
        return self.select_op


SELECTIONS = [
    Sel("where_fn", lambda m, x: torch.where(x > m.t, x * 2, x - 1), "torch.where", "gt", "x > t", "where",
        +1, lambda m: m.t, lambda m, x: x * 2, lambda m, x: x - 1),
    Sel("where_method", lambda m, x: (x * 2).where(x > m.t, x - 1), "Tensor.where", "gt", "x > t", "where",
        +1, lambda m: m.t, lambda m, x: x * 2, lambda m, x: x - 1),
    Sel("where_scalar_branches", lambda m, x: torch.where(x > 0.3, 1.0, 0.0), "torch.where", "gt", "x > t",
        "where", +1, lambda m: 0.3, lambda m, x: 1.0, lambda m, x: 0.0),
    Sel("where_scalar_self", lambda m, x: torch.where(x <= m.t, 0.0, x), "torch.where", "le", "x <= t",
        "where", -1, lambda m: m.t, lambda m, x: 0.0, lambda m, x: x),
    Sel("where_scalar_other", lambda m, x: torch.where(x >= m.t, x, 0.5), "torch.where", "ge", "x >= t",
        "where", +1, lambda m: m.t, lambda m, x: x, lambda m, x: 0.5),
    Sel("where_param_branches", lambda m, x: torch.where(x > m.t, m.a * x, m.b), "torch.where", "gt", "x > t",
        "where", +1, lambda m: m.t, lambda m, x: m.a * x, lambda m, x: m.b),
    Sel("where_threshold_left", lambda m, x: torch.where(m.t < x, x, -x), "torch.where", "lt", "x < t",
        "where", +1, lambda m: m.t, lambda m, x: x, lambda m, x: -x),
    Sel("where_torch_lt_method", lambda m, x: torch.where(x.lt(m.t), m.b, x * m.a), "torch.where", "lt",
        "Tensor.lt", "where", -1, lambda m: m.t, lambda m, x: m.b, lambda m, x: x * m.a),
    Sel("masked_fill_scalar", lambda m, x: x.masked_fill(x < 0.3, 0.0), "Tensor.masked_fill", "lt", "x < t",
        "masked_fill", -1, lambda m: 0.3, lambda m, x: 0.0, lambda m, x: x),
    Sel("masked_fill_tensor_value", lambda m, x: x.masked_fill(x > m.t, m.a), "Tensor.masked_fill", "gt",
        "x > t", "masked_fill", +1, lambda m: m.t, lambda m, x: m.a, lambda m, x: x),
    Sel("masked_fill_buffer_value", lambda m, x: (x * 3).masked_fill(torch.ge(x, m.t), m.v), "Tensor.masked_fill",
        "ge", "torch.ge", "masked_fill", +1, lambda m: m.t, lambda m, x: m.v, lambda m, x: x * 3),
    Sel("masked_fill_fn", lambda m, x: torch.masked_fill(x, x < m.t, 0.5), "torch.masked_fill", "lt", "x < t",
        "masked_fill", -1, lambda m: m.t, lambda m, x: 0.5, lambda m, x: x),
]
SEL_IDS = [s.id for s in SELECTIONS]
FINITE_SELECTIONS = [s for s in SELECTIONS if s.finite]


def _as_float(v) -> float:
    return float(v.detach()) if isinstance(v, torch.Tensor) else float(v)


def select_reference(sp: Sel, m: Spell, x: torch.Tensor, eps: float) -> torch.Tensor:
    """SLL_MATH.md: ``a s + b (1 - s)``, ``s = clamp(+-(x - t) / (2 eps) + 1/2, 0, 1)`` (finite branches)."""
    s = (sp.direction * (x - sp.thr(m)) / (2 * eps) + 0.5).clamp(0.0, 1.0)
    return sp.a(m, x) * s + sp.b(m, x) * (1 - s)


def _x_grid(t: float, eps: float) -> torch.Tensor:
    """Points inside the band (not on its edges), outside it, and far away."""
    inside = t + eps * torch.tensor([-0.93, -0.71, -0.5, -0.27, -0.05, 0.0, 0.13, 0.42, 0.66, 0.9])
    outside = t + eps * torch.tensor([-3.0, -1.6, -1.2, 1.15, 1.7, 4.0])
    far = torch.tensor([-5.0, -1.0, 2.0, 7.5])
    return torch.cat([inside, outside, far])


def _selection_inputs(t: float) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    special = torch.tensor([t, 0.3, 0.25, -0.0, 0.0, 1e-8, -1e-8, 0.5, -0.5, 1.0, 3.4e38, -3.4e38, 1e-45,
                            t + EPS / 2, t - EPS / 2, t + EPS, t - EPS, INF, -INF, NAN])
    return [special, torch.randn(300, generator=g), torch.randn(7, 5, generator=g) * 0.4 + t,
            torch.randn(64, generator=g) * 100]


@pytest.mark.parametrize("sp", SELECTIONS, ids=SEL_IDS)
def test_selection_is_rewritten_into_compare_and_select(sp: Sel):
    model = Outer(sp.fn)
    gm = sll_fx.linearize_module(model, eps=EPS, verbose=False)
    nodes = sll_nodes(gm)
    assert len(nodes) == 2, gm.code
    (cmp_node,) = nodes_of(gm, torch.ops.sll.compare)
    (sel_node,) = nodes_of(gm, torch.ops.sll.select)
    assert cmp_node.args[2] == sp.cmp
    assert node_eps(gm, cmp_node) == EPS and cmp_node.kwargs["mode"] == "linear"
    assert sel_node.args[0] is cmp_node, gm.code          # the blend's mask is the surrogate comparison
    assert sel_node.kwargs["op"] == sp.select_op
    assert list(cmp_node.users) == [sel_node]
    # no hard selection or boolean comparison survives
    no_hard_left(gm, (torch.where, torch.masked_fill, operator.gt, operator.ge, operator.lt, operator.le,
                      torch.gt, torch.ge, torch.lt, torch.le),
                 ("where", "masked_fill", "gt", "ge", "lt", "le"))

    report = gm.sll_report
    assert isinstance(report, RewriteReport)
    assert report.counts == {"found": 2, "rewritten": 2, "hard": 0}, str(report)
    by_op = {e.op: e for e in report.entries}
    assert set(by_op) == {sp.op, sp.cmp_op}
    sel_entry, cmp_entry = by_op[sp.op], by_op[sp.cmp_op]
    assert sel_entry.replacement == f"sll.select({sp.select_op})"
    assert cmp_entry.replacement == f"sll.compare({sp.cmp})"
    for e in (sel_entry, cmp_entry):
        assert e.rewritten and e.reason == "" and e.eps == EPS
        assert e.module == "body"
        assert e.source == _line_of(sp.fn)
    assert f"sll.select({sp.select_op})" in str(report)


@pytest.mark.parametrize("sp", SELECTIONS, ids=SEL_IDS)
def test_selection_values_blend_inside_hard_outside(sp: Sel):
    model = Outer(sp.fn)
    m = model.body
    gm = sll_fx.linearize_module(model, eps=EPS, verbose=False)
    t = _as_float(sp.thr(m))
    x = _x_grid(t, EPS)
    with torch.no_grad():
        y, hard = gm(x), model(x)
    assert y.dtype == hard.dtype and y.shape == hard.shape
    d = (x - t).abs()
    outside = d > EPS * 1.01
    # outside the band: exactly the hard selection, bit for bit
    assert_bitwise(y[outside], hard[outside], sp.id)
    inside = ~outside
    if sp.finite:
        with torch.no_grad():
            ref = select_reference(sp, m, x, EPS)
        torch.testing.assert_close(y, ref.to(y.dtype), rtol=1e-5, atol=1e-5)
        # at the threshold itself: the midpoint of the two branches
        at = torch.tensor([t])
        with torch.no_grad():
            mid = 0.5 * (torch.as_tensor(sp.a(m, at)) + torch.as_tensor(sp.b(m, at)))
            torch.testing.assert_close(gm(at), mid.expand(1).to(y.dtype), rtol=1e-6, atol=1e-6)
    else:  # a -inf fill: any share of it is -inf; the exact end keeps x
        s = (sp.direction * (x - t) / (2 * EPS) + 0.5).clamp(0, 1)
        assert torch.equal(torch.isneginf(y[inside]), (s[inside] > 0))
        assert torch.equal(y[inside & (s == 0)], x[inside & (s == 0)])
    # NaN in gives NaN out
    assert torch.isnan(gm(torch.tensor([NAN, t + 1.0])))[0]


@pytest.mark.parametrize("sp", FINITE_SELECTIONS, ids=[s.id for s in FINITE_SELECTIONS])
def test_selection_gradients_reach_x_threshold_and_branches(sp: Sel):
    model = Outer(sp.fn)
    m = model.body
    params = [m.t, m.a, m.b]
    gm = sll_fx.linearize_module(model, eps=EPS, verbose=False)
    t = _as_float(sp.thr(m))
    x0 = _x_grid(t, EPS)
    w = torch.linspace(0.5, 2.0, x0.numel())

    x = x0.clone().requires_grad_(True)
    (gm(x) * w).sum().backward()
    got_x, got = x.grad.clone(), _grads(params)
    _zero(params)

    xr = x0.clone().requires_grad_(True)
    (select_reference(sp, m, xr, EPS) * w).sum().backward()
    torch.testing.assert_close(got_x, xr.grad, rtol=1e-4, atol=1e-4)
    for p, g_got in zip(params, got):
        if p.grad is None or not p.grad.abs().sum():
            assert g_got is None or not g_got.abs().sum(), (sp.id, p)
        else:
            assert g_got is not None, f"{sp.id}: no gradient reached a parameter"
            torch.testing.assert_close(g_got, p.grad, rtol=1e-4, atol=1e-4)
    _zero(params)

    # the slope through the mask: d out / d x at the threshold carries (a - b) / (2 eps)
    if isinstance(sp.thr(m), torch.Tensor):
        xt = torch.tensor([t + 0.01])
        gm(xt).sum().backward()
        with torch.no_grad():
            diff = float(torch.as_tensor(sp.a(m, xt)) - torch.as_tensor(sp.b(m, xt)))
        assert float(m.t.grad) == pytest.approx(-sp.direction * diff / (2 * EPS), rel=1e-4)
        _zero(params)


def test_where_gradient_values_by_hand():
    """torch.where(x > t, a * x, b) at x = t + eps/2: s = 3/4, every partial derivative written out."""
    model = Outer(lambda m, x: torch.where(x > m.t, m.a * x, m.b))
    m = model.body
    gm = sll_fx.linearize_module(model, eps=0.1, verbose=False)
    x = torch.tensor([0.35], requires_grad=True)   # t = 0.3, eps = 0.1: s = (0.05 / 0.2) + 0.5 = 0.75
    y = gm(x)
    torch.testing.assert_close(y, torch.tensor([2.0 * 0.35 * 0.75 + (-1.0) * 0.25]))
    y.sum().backward()
    k = 1 / (2 * 0.1)
    a_minus_b = 2.0 * 0.35 - (-1.0)
    torch.testing.assert_close(x.grad, torch.tensor([2.0 * 0.75 + a_minus_b * k]))
    torch.testing.assert_close(m.t.grad, torch.tensor(-a_minus_b * k))
    torch.testing.assert_close(m.a.grad, torch.tensor(0.35 * 0.75))
    torch.testing.assert_close(m.b.grad, torch.tensor(0.25))


@pytest.mark.parametrize("fill", [float("-inf"), float("inf"), -3.0e38])
def test_masked_fill_with_an_infinite_fill_stays_hard(fill):
    """A blend with -inf is -inf across the band: linear mode masked the entries inside the band that the hard model
    keeps, gave the threshold no gradient and fully masked rows NaN gradients; hard mode only scaled the kept
    entries' gradient down.  Left hard now, with the reason (a finite fill is linearized)."""
    class Body(nn.Module):
        def __init__(self):
            super().__init__()
            self.t = nn.Parameter(torch.tensor(0.3))

        def forward(self, x):
            return x.masked_fill(x <= self.t, fill)

    model = Body()
    gm = sll_fx.linearize_module(model, eps=EPS, verbose=False)
    assert not gm.sll_report.rewritten
    entry = next(e for e in gm.sll_report.hard if e.op == "Tensor.masked_fill")
    assert f"a branch of {fill!r}" in entry.reason and "a fill within float16's range, e.g. -1e4" in entry.reason
    x = torch.tensor([[0.1, 0.25, 0.33, 0.37, 0.45, 1.0]])
    assert torch.equal(gm(x), model(x))
    finite = sll_fx.linearize_module(Outer(lambda m, x: x.masked_fill(x <= m.t, -1e4)), eps=EPS, verbose=False)
    assert [e.replacement for e in finite.sll_report.rewritten] == ["sll.compare(le)", "sll.select(masked_fill)"]


@pytest.mark.parametrize("sp", SELECTIONS, ids=SEL_IDS)
def test_selection_hard_mode_exact_with_gradient(sp: Sel):
    model = Outer(sp.fn)
    m = model.body
    gm = sll_fx.linearize_module(model, eps=0.2, mode="hard", verbose=False)
    compares = nodes_of(gm, torch.ops.sll.compare)  # the mask's, and its linear copy weighing the branches
    assert {n.kwargs.get("mode") for n in compares if not is_soft_mask(n)} == {"hard"}
    assert {n.kwargs.get("mode") for n in compares if is_soft_mask(n)} == {"linear"}
    with torch.no_grad():
        for i, x in enumerate(_selection_inputs(0.3)):
            assert_bitwise(gm(x), model(x), f"{sp.id} hard mode input {i}")
    t = _as_float(sp.thr(m))
    x = (t + torch.linspace(-0.5, 0.5, 41)).requires_grad_(True)
    gm(x).sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    if sp.finite and isinstance(sp.thr(m), torch.Tensor):
        assert m.t.grad is not None and float(m.t.grad) != 0.0, f"{sp.id}: no gradient to the threshold"


@pytest.mark.parametrize("sp", SELECTIONS, ids=SEL_IDS)
def test_selection_export_hard_round_trip(sp: Sel):
    model = Outer(sp.fn)
    gm = sll_fx.linearize_module(model, eps=EPS, verbose=False)
    code = gm.code
    hard = sll_fx.export_hard(gm, verbose=False)
    assert not sll_nodes(hard)
    rep = hard.sll_report
    assert isinstance(rep, StripReport) and rep.remaining == 0
    assert sorted(e.sll_op for e in rep.entries) == ["sll.compare", "sll.select"]
    with torch.no_grad():
        for i, x in enumerate(_selection_inputs(0.3)):
            assert_bitwise(hard(x), model(x), f"{sp.id} input {i}")
            assert_bitwise(hard(x.double()), model(x.double()), f"{sp.id} float64 input {i}")
    assert gm.code == code and len(sll_nodes(gm)) == 2


def test_nan_in_the_unselected_branch():
    """where(x > 0.5, log(x), 0): log is NaN for x < 0, where nothing selects it: no NaN leaks out."""
    model = Outer(lambda m, x: torch.where(x > 0.5, torch.log(x), 0.0) + torch.where(x < -0.5, 0.0, x.sqrt()))
    x = torch.tensor([-3.0, -1.0, -0.2, 0.1, 0.45, 0.5, 0.55, 0.9, 2.0, INF, -INF, NAN])
    for mode in ("linear", "hard"):
        gm = sll_fx.linearize_module(model, eps=0.1, mode=mode, verbose=False)
        assert len(nodes_of(gm, torch.ops.sll.select)) == 2
        with torch.no_grad():
            y, ref = gm(x), model(x)
        far = (x - 0.5).abs().gt(0.11) & (x + 0.5).abs().gt(0.11)
        assert_bitwise(y[far], ref[far], mode)
        if mode == "hard":
            assert_bitwise(y, ref, mode)
    hard = sll_fx.export_hard(sll_fx.linearize_module(model, eps=0.1, verbose=False), verbose=False)
    assert_bitwise(hard(x), model(x))

    # gradients: no NaN from the unselected log branch (log's backward there is 0 / x, finite);
    # (a sqrt branch would give 0 * NaN in its own backward, as torch.where itself does)
    model = Outer(lambda m, x: torch.where(x > 0.5, torch.log(x), m.a * x))
    for mode in ("linear", "hard"):
        gm = sll_fx.linearize_module(model, eps=0.1, mode=mode, verbose=False)
        xr = torch.tensor([-3.0, -1.0, 0.2, 0.45, 0.55, 0.9, 2.0], requires_grad=True)
        gm(xr).sum().backward()
        assert torch.isfinite(xr.grad).all(), (mode, xr.grad)
        xh = xr.detach().clone().requires_grad_(True)
        model(xh).sum().backward()
        far = (xr.detach() - 0.5).abs() > 0.1
        torch.testing.assert_close(xr.grad[far], xh.grad[far])   # outside the band: the hard op's gradient


def test_where_on_a_non_comparison_is_untouched():
    model = Outer(lambda m, x: torch.where(torch.isnan(x), 0.0, x) + x.masked_fill(x.isinf(), 1.0))
    gm = sll_fx.linearize_module(model, eps=EPS, verbose=False)
    assert not sll_nodes(gm)
    assert gm.sll_report.entries == []
    x = torch.tensor([NAN, 1.0, INF, -INF, 0.3])
    assert_bitwise(gm(x), model(x))


def test_where_comparison_also_used_as_bool_keeps_that_use_hard():
    def fn(m, x):
        c = x > m.t
        return torch.where(c, x, -x) + x[c].sum()

    model = Outer(fn)
    gm = sll_fx.linearize_module(model, eps=EPS, verbose=False)
    (entry,) = [e for e in gm.sll_report.entries if e.op == "x > t"]
    assert entry.replacement == "sll.compare(gt)"
    assert "bool" in entry.reason and "getitem" in entry.reason
    assert len(nodes_of(gm, torch.ops.sll.select)) == 1
    x = torch.tensor([0.0, 0.3, 0.31, 0.29, 1.0, -INF, INF])
    hard = sll_fx.export_hard(gm, verbose=False)
    assert_bitwise(hard(x), model(x))
    assert_bitwise(sll_fx.linearize_module(model, eps=EPS, mode="hard", verbose=False)(x), model(x))


# ========================================================================================
# 2. products with a mask: the cast rule
# ========================================================================================

@dataclass
class Prod:
    id: str
    fn: Callable
    ref: Callable      # (m, x, s) -> the surrogate's value, s = clamp((x - t) / (2 eps) + 1/2, 0, 1)


PRODUCTS = [
    Prod("x_times_float_mask", lambda m, x: x * (x > m.t).float(), lambda m, x, s: x * s),
    Prod("float_mask_times_weight", lambda m, x: (x > m.t).float() * m.a, lambda m, x, s: s * m.a),
    Prod("x_times_mask_to_dtype", lambda m, x: (x > m.t).to(x.dtype) * x * m.a, lambda m, x, s: s * x * m.a),
    Prod("x_times_bool_mask", lambda m, x: x * (x > m.t), lambda m, x, s: x * s),
    Prod("bool_mask_times_x", lambda m, x: (x > m.t) * x, lambda m, x, s: s * x),
    # README "What is rewritten": "(x > t) * w (an implicit cast)", w not an operand of the comparison
    Prod("bool_mask_times_weight", lambda m, x: (x > m.t) * m.a, lambda m, x, s: s * m.a),
]


@pytest.mark.parametrize("pr", PRODUCTS, ids=[p.id for p in PRODUCTS])
def test_mask_products_are_the_cast_rule(pr: Prod):
    model = Outer(pr.fn)
    m = model.body
    gm = sll_fx.linearize_module(model, eps=EPS, verbose=False)
    (entry,) = gm.sll_report.entries   # reported, not silently left as it was
    assert entry.op == "x > t" and entry.replacement == "sll.compare(gt)", str(gm.sll_report)
    assert entry.eps == EPS and entry.module == "body" and entry.source == _line_of(pr.fn)
    (node,) = sll_nodes(gm)
    assert is_op(node.target, torch.ops.sll.compare) and node.args[2] == "gt"

    x = _x_grid(0.3, EPS)
    # forward: the surrogate mask times the other factor; hard outside the band
    with torch.no_grad():
        y, ref_hard = gm(x), model(x)
        s = ((x - m.t) / (2 * EPS) + 0.5).clamp(0, 1)
        torch.testing.assert_close(y, pr.ref(m, x, s).to(y.dtype), rtol=1e-5, atol=1e-5)
    outside = (x - 0.3).abs() > EPS * 1.01
    assert_bitwise(y[outside], ref_hard[outside])

    # gradients to x, the threshold and the weight, against autograd of the formula
    params = [m.t, m.a]
    xg = x.clone().requires_grad_(True)
    gm(xg).sum().backward()
    got_x, got = xg.grad.clone(), _grads(params)
    _zero(params)
    xr = x.clone().requires_grad_(True)
    pr.ref(m, xr, ((xr - m.t) / (2 * EPS) + 0.5).clamp(0, 1)).sum().backward()
    torch.testing.assert_close(got_x, xr.grad, rtol=1e-4, atol=1e-4)
    for p, g in zip(params, got):
        if p.grad is not None and p.grad.abs().sum():
            torch.testing.assert_close(g, p.grad, rtol=1e-4, atol=1e-4)
    assert got[0] is not None and float(got[0]) != 0.0   # the threshold learns
    _zero(params)

    # export_hard and mode="hard": bit-identical to the model, special values included
    xs = [_selection_inputs(0.3)[0], torch.randn(50, generator=torch.Generator().manual_seed(5))]
    hard = sll_fx.export_hard(gm, verbose=False)
    hard_mode = sll_fx.linearize_module(model, eps=EPS, mode="hard", verbose=False)
    with torch.no_grad():
        for xi in xs:
            assert_bitwise(hard(xi), model(xi), pr.id)
            assert_bitwise(hard_mode(xi), model(xi), pr.id)


# ========================================================================================
# 3. one_hot(argmax(x, dim), n): the margin surrogate
# ========================================================================================

@dataclass
class Arg:
    id: str
    fn: Callable
    dim: int
    n: int
    largest: bool
    cast: bool          # followed by a float cast (the result is float in the model too)
    shape: tuple = (6, 5)


ARGMAXES = [
    Arg("onehot_argmax_method_last", lambda m, x: F.one_hot(x.argmax(-1), 5), -1, 5, True, False),
    Arg("onehot_argmax_float", lambda m, x: F.one_hot(x.argmax(-1), 5).float(), -1, 5, True, True),
    Arg("onehot_torch_argmax_dim1", lambda m, x: F.one_hot(torch.argmax(x, dim=1), 5).float(), 1, 5, True, True),
    Arg("onehot_argmax_dim0", lambda m, x: F.one_hot(x.argmax(dim=0), 6).to(x.dtype), 0, 6, True, True),
    Arg("onehot_argmax_kw_num_classes", lambda m, x: torch.nn.functional.one_hot(x.argmax(-1), num_classes=5)
        .type_as(x), -1, 5, True, True),
    Arg("onehot_argmin", lambda m, x: F.one_hot(x.argmin(-1), 5).float(), -1, 5, False, True),
    Arg("onehot_torch_argmin_dim0", lambda m, x: F.one_hot(torch.argmin(x, 0), 6), 0, 6, False, False),
    Arg("onehot_num_classes_wider", lambda m, x: F.one_hot(x.argmax(-1), 8).float(), -1, 8, True, True),
    Arg("onehot_argmax_3d_dim1", lambda m, x: F.one_hot(x.argmax(1), 4).float(), 1, 4, True, True, (2, 4, 3)),
]
ARG_IDS = [a.id for a in ARGMAXES]


def argmax_reference(x: torch.Tensor, dim: int, n: int, eps: float, largest: bool) -> torch.Tensor:
    """``y_i = clamp(m_i / (2 eps) + 1/2, 0, 1)``, ``m_i = z_i - max_{j != i} z_j`` (z = -x for argmin), float64."""
    z = (x if largest else -x).double().movedim(dim, -1)
    size = z.shape[-1]
    margins = []
    for i in range(size):
        others = torch.cat([z[..., :i], z[..., i + 1:]], dim=-1)
        margins.append(z[..., i] - others.max(-1).values)
    y = (torch.stack(margins, -1) / (2 * eps) + 0.5).clamp(0.0, 1.0)
    return F.pad(y, (0, n - size))


def _argmax_inputs(shape) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    out = [torch.randn(*shape, generator=g), torch.randn(*shape, generator=g) * 100]
    grid = torch.tensor([0.0, -0.0, 1.0, -1.0, 0.5, INF, -INF, NAN])
    out.append(grid[torch.randint(0, len(grid), shape, generator=g)])                      # ties, +-inf, NaN
    out.append(torch.randint(0, 3, shape, generator=g).float())                           # many ties
    out.append(torch.full(shape, -INF))                                                    # every entry masked
    out.append(torch.zeros(shape))
    return out


@pytest.mark.parametrize("sp", ARGMAXES, ids=ARG_IDS)
def test_onehot_argmax_is_rewritten(sp: Arg):
    model = Outer(sp.fn)
    gm = sll_fx.linearize_module(model, eps=EPS, verbose=False)
    (node,) = sll_nodes(gm)
    assert is_op(node.target, torch.ops.sll.argmax_onehot), gm.code
    assert node.args[1:] == (sp.dim, sp.n)
    assert node_eps(gm, node) == EPS and node.kwargs["mode"] == "linear"
    assert node.kwargs.get("largest", True) is sp.largest
    no_hard_left(gm, (torch.argmax, torch.argmin, F.one_hot), ("argmax", "argmin"))
    (entry,) = gm.sll_report.entries   # one entry: the argmax feeding it is part of the pattern
    assert entry.replacement == "sll.argmax_onehot"
    assert "one_hot" in entry.op
    assert entry.eps == EPS and entry.reason == "" and entry.module == "body"
    assert entry.source == _line_of(sp.fn)


@pytest.mark.parametrize("sp", ARGMAXES, ids=ARG_IDS)
def test_onehot_argmax_values(sp: Arg):
    model = Outer(sp.fn)
    gm = sll_fx.linearize_module(model, eps=EPS, verbose=False)
    g = torch.Generator().manual_seed(11)
    x = torch.randn(*sp.shape, generator=g) * 0.15   # margins of the order of eps: many in the band
    with torch.no_grad():
        y, hard = gm(x), model(x)
    assert y.is_floating_point()
    assert y.shape == hard.shape
    ref = argmax_reference(x, sp.dim, sp.n, EPS, sp.largest)
    torch.testing.assert_close(y.double(), ref, rtol=1e-5, atol=1e-5)
    # where no margin is within eps, the surrogate is exactly the hard one-hot
    margins = argmax_reference(x, sp.dim, sp.n, 1.0, sp.largest)[..., :x.shape[sp.dim]] * 2 - 1   # = m_i
    clear = (margins.abs() > EPS * 1.01).all(-1)
    assert clear.any() and (~clear).any()
    assert_bitwise(y[clear], hard[clear].to(y.dtype))
    if sp.cast:
        assert y.dtype == hard.dtype
    # a tie of the two largest: both at the midpoint 1/2
    xt = torch.zeros(*sp.shape)
    with torch.no_grad():
        yt = gm(xt)
    if xt.shape[sp.dim] > 1:
        assert torch.all(yt[..., :xt.shape[sp.dim]] == 0.5)
    assert torch.all(yt[..., xt.shape[sp.dim]:] == 0)   # the padding (num_classes > size)


def test_onehot_argmax_jacobian_is_plus_minus_half_over_eps():
    """+1/(2 eps) on x_i and -1/(2 eps) on the runner-up, for the max and the runner-up both in the band."""
    eps = 0.1
    model = Outer(lambda m, x: F.one_hot(x.argmax(-1), 5).float())
    gm = sll_fx.linearize_module(model, eps=eps, verbose=False)
    x = torch.tensor([0.0, 1.0, 0.97, 0.2, -1.0])
    jac = torch.autograd.functional.jacobian(gm, x)
    k = 1 / (2 * eps)
    expected = torch.zeros(5, 5)
    expected[1, 1], expected[1, 2] = k, -k       # y_1 = clamp((x_1 - x_2)/(2eps) + 1/2)
    expected[2, 2], expected[2, 1] = k, -k       # y_2 = clamp((x_2 - x_1)/(2eps) + 1/2)
    torch.testing.assert_close(jac, expected)
    torch.testing.assert_close(gm(x), torch.tensor([0.0, 0.65, 0.35, 0.0, 0.0]))

    # argmin: z = -x, the signs flip
    model = Outer(lambda m, x: F.one_hot(x.argmin(-1), 5).float())
    gm = sll_fx.linearize_module(model, eps=eps, verbose=False)
    jac = torch.autograd.functional.jacobian(gm, -x)
    torch.testing.assert_close(jac, -expected)

    # dim=0 of a matrix, classes on the last dim: the same numbers, transposed in
    model = Outer(lambda m, x: F.one_hot(x.argmax(0), 5).float())
    gm = sll_fx.linearize_module(model, eps=eps, verbose=False)
    jac = torch.autograd.functional.jacobian(gm, x.reshape(5, 1))   # (1, 5) out, (5, 1) in
    torch.testing.assert_close(jac.reshape(5, 5), expected)


@pytest.mark.parametrize("sp", ARGMAXES, ids=ARG_IDS)
def test_onehot_argmax_gradients_against_reference(sp: Arg):
    model = Outer(sp.fn)
    gm = sll_fx.linearize_module(model, eps=EPS, verbose=False)
    g = torch.Generator().manual_seed(4)
    x0 = torch.randn(*sp.shape, generator=g) * 0.15
    w = torch.randn(*gm(x0).shape, generator=g)
    x = x0.clone().requires_grad_(True)
    (gm(x) * w).sum().backward()
    xr = x0.clone().double().requires_grad_(True)
    (argmax_reference(xr, sp.dim, sp.n, EPS, sp.largest) * w.double()).sum().backward()
    torch.testing.assert_close(x.grad.double(), xr.grad, rtol=1e-4, atol=1e-4)
    assert x.grad.abs().sum() > 0


@pytest.mark.parametrize("sp", ARGMAXES, ids=ARG_IDS)
def test_onehot_argmax_hard_mode(sp: Arg):
    model = Outer(sp.fn)
    gm = sll_fx.linearize_module(model, eps=0.3, mode="hard", verbose=False)
    (node,) = sll_nodes(gm)
    assert node.kwargs["mode"] == "hard"
    with torch.no_grad():
        for i, x in enumerate(_argmax_inputs(sp.shape)):
            y, ref = gm(x), model(x)
            if sp.cast:
                assert_bitwise(y, ref, f"{sp.id} input {i}")
            else:
                # the hard op's one_hot is int64, which cannot carry a gradient: the surrogate keeps
                # x's floating dtype and the hard op's values
                assert y.dtype == x.dtype
                assert_bitwise(y, ref.to(y.dtype), f"{sp.id} input {i}")
    x = (torch.randn(*sp.shape, generator=torch.Generator().manual_seed(8)) * 0.3).requires_grad_(True)
    (gm(x) * torch.arange(gm(x).numel()).reshape(gm(x).shape)).sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


@pytest.mark.parametrize("sp", ARGMAXES, ids=ARG_IDS)
def test_onehot_argmax_export_hard_round_trip(sp: Arg):
    model = Outer(sp.fn)
    gm = sll_fx.linearize_module(model, eps=EPS, verbose=False)
    hard = sll_fx.export_hard(gm, verbose=False)
    assert not sll_nodes(hard)
    (entry,) = hard.sll_report.entries
    assert entry.sll_op == "sll.argmax_onehot" and hard.sll_report.remaining == 0
    with torch.no_grad():
        for i, x in enumerate(_argmax_inputs(sp.shape)):
            assert_bitwise(hard(x), model(x), f"{sp.id} input {i}")
            assert_bitwise(hard(x.double()), model(x.double()), f"{sp.id} float64 input {i}")


def test_onehot_argmax_infinite_entries_give_the_hard_result():
    """SLL_MATH.md: +-inf gives what the hard op gives (a unique +inf wins, -inf entries lose)."""
    model = Outer(lambda m, x: F.one_hot(x.argmax(-1), 4).float())
    gm = sll_fx.linearize_module(model, eps=EPS, verbose=False)
    x = torch.tensor([[INF, 0.0, 1.0, 2.0], [-INF, 0.0, 1.0, 2.0], [-INF, -INF, 3.0, -INF],
                      [1.0, -INF, -INF, 0.0], [-1e30, 1e30, 0.0, 5.0]])
    assert_bitwise(gm(x), model(x))
    assert torch.isnan(gm(torch.tensor([[NAN, 0.0, 1.0, 2.0]]))).any()   # NaN in, NaN out


def test_onehot_argmax_ties_at_infinity_and_nan_elsewhere_give_the_hard_result():
    """A fully -inf-masked row (padding), a tie at +inf, a NaN in the row: the margin is NaN for a number
    (inf - inf, x - NaN); SLL_MATH.md says +-inf gives what the hard op gives, and NaN in gives NaN out.
    (These used to give 0.5 to every tied infinity, and to every number in a row with a NaN.)"""
    model = Outer(lambda m, x: F.one_hot(x.argmax(-1), 3).float())
    gm = sll_fx.linearize_module(model, eps=EPS, verbose=False)
    x = torch.tensor([[-INF, -INF, -INF], [INF, INF, 0.0], [0.2, 0.1, 0.0], [-INF, -INF, 5.0]])
    assert_bitwise(gm(x), model(x))
    xn = torch.tensor([[NAN, 1.0, 2.0], [1.0, NAN, 2.0], [1.0, 2.0, NAN]])
    y = gm(xn)
    assert torch.equal(torch.isnan(y), torch.isnan(xn))  # the NaN element, nothing else
    assert torch.equal(y.nan_to_num(7.0), model(xn).masked_fill(torch.isnan(xn), 7.0))  # the rest: hard
    # argmin: a NaN is the hard op's choice as well
    gmin = sll_fx.linearize_module(Outer(lambda m, x: F.one_hot(x.argmin(-1), 3).float()), eps=EPS, verbose=False)
    assert gmin(xn).nan_to_num(7.0).tolist() == [[7.0, 0.0, 0.0], [0.0, 7.0, 0.0], [0.0, 0.0, 7.0]]
    assert_bitwise(sll_fx.export_hard(gm, verbose=False)(x), model(x))


@pytest.mark.parametrize("mode", ["hard", "linear"])
@pytest.mark.parametrize("largest", [True, False])
def test_onehot_argmax_row_with_two_nans_gets_a_zero_gradient(mode, largest):
    """A row with two NaNs gave NaN gradients to every element of the row, in hard mode too, where the forward is the
    hard one-hot ([[nan, 0, nan, nan]] for [0.1, nan, 0.5, nan]): the runner-up was NaN, and amax's backward divides by
    the count of elements equal to it, 0 (audit).  Now 0 there; the values and the other rows' gradients as before."""
    arg = "argmax" if largest else "argmin"
    model = Outer(lambda m, x: F.one_hot(getattr(x, arg)(-1), 4).float())
    gm = sll_fx.linearize_module(model, eps=EPS, mode=mode, verbose=False)
    x = torch.tensor([[0.1, NAN, 0.5, NAN], [NAN, NAN, NAN, 0.2], [0.1, 0.92, 0.5, 0.88], [NAN, 0.3, -INF, NAN]],
                     requires_grad=True)
    y = gm(x)
    with torch.no_grad():
        hard = model(x)
    if mode == "hard":
        assert_bitwise(y.detach(), hard)
    else:  # NaN in, NaN out; the numbers of the rows with a NaN the hard one-hot (row 2 is in the band)
        rows = [0, 1, 3]
        assert torch.equal(torch.isnan(y), torch.isnan(x))
        assert torch.equal(y[rows].nan_to_num(7.0), hard[rows].masked_fill(torch.isnan(x[rows]), 7.0))
    (y * torch.arange(16.0).view(4, 4)).sum().backward()
    k = 1 / (2 * EPS)  # row 2, argmax: 0.92 and 0.88 within eps of each other, slopes on both; argmin: none
    expected = torch.zeros(4, 4)
    if largest:
        expected[2] = torch.tensor([0.0, (9 - 11) * k, 0.0, (11 - 9) * k])
    torch.testing.assert_close(x.grad, expected)


@pytest.mark.parametrize("tie", [(1.0, 1.0, 0.0), (0.0, -0.0, -1.0), (-0.0, 0.0, -1.0)], ids=str)
@pytest.mark.parametrize("mode", ["linear", "hard"])
@pytest.mark.parametrize("largest", [True, False])
def test_onehot_argmax_tie_gradient_is_symmetric(mode, largest, tie):
    """Two tied maxima: each margin is 0 (value 1/2) and moves with its own value and the other's, so the
    Jacobian is +-1/(2 eps) in both rows (the second tied element used to get a zero row, and with +-0,
    whose order topk and argmax may see differently, both rows were zero)."""
    x = torch.tensor(tie, dtype=torch.float64) * (1 if largest else -1)
    fn = lambda t: torch.ops.sll.argmax_onehot(t, -1, 3, eps=EPS, mode=mode, largest=largest)
    jac = torch.autograd.functional.jacobian(fn, x)
    s = 0.5 / EPS * (1 if largest else -1)
    assert jac.tolist() == [[s, -s, 0.0], [-s, s, 0.0], [0.0, 0.0, 0.0]]
    if mode == "linear":
        assert fn(x).tolist() == [0.5, 0.5, 0.0]


# ========================================================================================
# 4. top-k masks
# ========================================================================================

def sparse_attention(attention_scores, top_k=2):
    """The seed package's sparse attention (scenario 8), verbatim but for top_k's default."""
    top_vals, top_idx = torch.topk(attention_scores, top_k, dim=-1)
    mask = torch.zeros_like(attention_scores)
    mask.scatter_(-1, top_idx, 1.0)
    sparse_scores = attention_scores * mask
    return sparse_scores / (sparse_scores.sum(dim=-1, keepdim=True) + 1e-10)


def _topk_tuple(m, x):
    _, idx = torch.topk(x, 2, dim=-1)
    return torch.zeros_like(x).scatter(-1, idx, 1.0)


def _topk_inplace(m, x):
    mask = torch.zeros_like(x)
    mask.scatter_(1, x.topk(3, 1).indices, 1.0)
    return mask * 2


@dataclass
class Top:
    id: str
    fn: Callable
    op: str
    k: int
    dim: int
    largest: bool = True
    shape: tuple = (6, 5)


TOPKS = [
    Top("scatter_indices_attr", lambda m, x: torch.zeros_like(x).scatter(-1, torch.topk(x, 2, -1).indices, 1.0),
        "Tensor.scatter", 2, -1),
    Top("scatter_tuple_unpack", _topk_tuple, "Tensor.scatter", 2, -1),
    Top("scatter_method_topk_dim1", lambda m, x: torch.zeros_like(x).scatter(1, x.topk(1, 1).indices, 1.0),
        "Tensor.scatter", 1, 1),
    Top("scatter_dim0", lambda m, x: torch.zeros_like(x).scatter(0, torch.topk(x, 3, 0)[1], 1.0),
        "Tensor.scatter", 3, 0),
    Top("scatter_smallest", lambda m, x: torch.zeros_like(x).scatter(-1, torch.topk(x, 2, -1, largest=False)
        .indices, 1.0), "Tensor.scatter", 2, -1, False),
    Top("torch_scatter_fn", lambda m, x: torch.scatter(torch.zeros_like(x), -1, torch.topk(x, 4, -1).indices, 1),
        "torch.scatter", 4, -1),
    Top("scatter_keywords", lambda m, x: torch.zeros_like(x).scatter(dim=-1, index=torch.topk(x, 2, dim=-1)
        .indices, value=1.0), "Tensor.scatter", 2, -1),
    Top("scatter_inplace", _topk_inplace, "Tensor.scatter_", 3, 1),
    Top("seed_sparse_attention", lambda m, x: sparse_attention(x), "Tensor.scatter_", 2, -1),
    Top("scatter_3d_dim1", lambda m, x: torch.zeros_like(x).scatter(1, x.topk(2, 1).indices, 1.0),
        "Tensor.scatter", 2, 1, True, (2, 5, 3)),
]
TOP_IDS = [t.id for t in TOPKS]


def topk_reference(x, k, dim, eps, largest=True) -> torch.Tensor:
    """``clamp((z - tau) / (2 eps) + 1/2, 0, 1)``, ``tau = (z_(k) + z_(k+1)) / 2`` (z = -x for the smallest)."""
    z = x if largest else -x
    v = z.sort(dim, descending=True).values
    tau = (v.narrow(dim, k - 1, 1) + v.narrow(dim, k, 1)) / 2
    return ((z - tau) / (2 * eps) + 0.5).clamp(0.0, 1.0)


def topk_model_reference(sp: Top, x, eps):
    """The spelling's output with the hard mask replaced by the reference surrogate."""
    mask = topk_reference(x, sp.k, sp.dim, eps, sp.largest)
    if sp.id == "seed_sparse_attention":
        s = x * mask
        return s / (s.sum(dim=-1, keepdim=True) + 1e-10)
    if sp.id == "scatter_inplace":
        return mask * 2
    return mask


def _topk_inputs(shape) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(5)
    out = [torch.randn(*shape, generator=g), torch.randn(*shape, generator=g) * 1e3]
    grid = torch.tensor([0.0, -0.0, 1.0, -1.0, 0.5, INF, -INF, NAN])
    out.append(grid[torch.randint(0, len(grid), shape, generator=g)])
    out.append(torch.randint(0, 2, shape, generator=g).float())                  # ties at the k-th place
    out.append(torch.where(torch.rand(*shape, generator=g) < 0.5, -INF, torch.randn(*shape, generator=g)))
    out.append(torch.full(shape, -INF))
    return out


@pytest.mark.parametrize("sp", TOPKS, ids=TOP_IDS)
def test_topk_mask_is_rewritten(sp: Top):
    model = Outer(sp.fn)
    gm = sll_fx.linearize_module(model, eps=EPS, verbose=False)
    (node,) = sll_nodes(gm)
    assert is_op(node.target, torch.ops.sll.topk_mask), gm.code
    assert node.args[1:] == (sp.k, sp.dim)
    assert node_eps(gm, node) == EPS and node.kwargs["mode"] == "linear"
    assert node.kwargs.get("largest", True) is sp.largest
    no_hard_left(gm, (torch.scatter, torch.zeros_like), ("scatter", "scatter_"))
    (entry,) = gm.sll_report.entries
    assert entry.op == sp.op
    assert entry.replacement == "sll.topk_mask"
    assert entry.eps == EPS and entry.reason == "" and entry.module == "body"
    assert entry.source.startswith(THIS_FILE + ":")


@pytest.mark.parametrize("sp", TOPKS, ids=TOP_IDS)
def test_topk_mask_values(sp: Top):
    model = Outer(sp.fn)
    gm = sll_fx.linearize_module(model, eps=EPS, verbose=False)
    x = torch.randn(*sp.shape, generator=torch.Generator().manual_seed(12)) * 0.5
    with torch.no_grad():
        y, hard = gm(x), model(x)
        ref = topk_model_reference(sp, x, EPS)
    assert y.dtype == hard.dtype and y.shape == hard.shape
    torch.testing.assert_close(y, ref, rtol=1e-5, atol=1e-5)
    # outside the band (every |x_i - tau| > eps along a slice): the hard mask exactly
    z = x if sp.largest else -x
    v = z.sort(sp.dim, descending=True).values
    tau = (v.narrow(sp.dim, sp.k - 1, 1) + v.narrow(sp.dim, sp.k, 1)) / 2
    clear = (z - tau).abs() > EPS * 1.01
    if sp.id == "seed_sparse_attention":   # the normalisation mixes a row: the whole row must be clear
        clear = clear.all(sp.dim, keepdim=True).expand_as(x)
    assert clear.any() and (~clear).any()
    assert_bitwise(y[clear], hard[clear])


def test_topk_mask_jacobian_goes_through_tau():
    """y_i = clamp((x_i - tau)/(2eps) + 1/2): d y_i / d x_j = (delta_ij - [j is x_(k)]/2 - [j is x_(k+1)]/2) / (2 eps)."""
    eps = 0.1
    model = Outer(lambda m, x: torch.zeros_like(x).scatter(-1, torch.topk(x, 2, -1).indices, 1.0))
    gm = sll_fx.linearize_module(model, eps=eps, verbose=False)
    x = torch.tensor([0.1, 0.2, 0.0, 0.3, -1.0])   # x_(2) = 0.2 (index 1), x_(3) = 0.1 (index 0), tau = 0.15
    torch.testing.assert_close(gm(x), torch.tensor([0.25, 0.75, 0.0, 1.0, 0.0]))
    jac = torch.autograd.functional.jacobian(gm, x)
    k = 1 / (2 * eps)
    expected = torch.zeros(5, 5)
    for i in (0, 1):   # the two elements inside the band
        expected[i, i] += k
        expected[i, 1] -= k / 2
        expected[i, 0] -= k / 2
    torch.testing.assert_close(jac, expected)
    # the smallest k: z = -x, signs flipped
    model = Outer(lambda m, x: torch.zeros_like(x).scatter(-1, torch.topk(x, 2, -1, largest=False).indices, 1.0))
    gm = sll_fx.linearize_module(model, eps=eps, verbose=False)
    torch.testing.assert_close(torch.autograd.functional.jacobian(gm, -x), -expected)


@pytest.mark.parametrize("sp", TOPKS, ids=TOP_IDS)
def test_topk_mask_gradients_against_reference(sp: Top):
    model = Outer(sp.fn)
    gm = sll_fx.linearize_module(model, eps=EPS, verbose=False)
    g = torch.Generator().manual_seed(6)
    x0 = torch.randn(*sp.shape, generator=g) * 0.2 + 1.0   # positive scores (the seed normalises by their sum)
    w = torch.randn(*sp.shape, generator=g)
    x = x0.clone().requires_grad_(True)
    (gm(x) * w).sum().backward()
    xr = x0.clone().double().requires_grad_(True)
    (topk_model_reference(sp, xr, EPS) * w.double()).sum().backward()
    torch.testing.assert_close(x.grad.double(), xr.grad, rtol=1e-4, atol=1e-4)
    assert x.grad.abs().sum() > 0


@pytest.mark.parametrize("sp", TOPKS, ids=TOP_IDS)
def test_topk_mask_hard_mode(sp: Top):
    model = Outer(sp.fn)
    gm = sll_fx.linearize_module(model, eps=0.3, mode="hard", verbose=False)
    (node,) = sll_nodes(gm)
    assert node.kwargs["mode"] == "hard"
    with torch.no_grad():
        for i, x in enumerate(_topk_inputs(sp.shape)):
            assert_bitwise(gm(x), model(x), f"{sp.id} input {i}")
    x = (torch.randn(*sp.shape, generator=torch.Generator().manual_seed(9)) * 0.3 + 1).requires_grad_(True)
    (gm(x) * torch.randn(*sp.shape, generator=torch.Generator().manual_seed(10))).sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


@pytest.mark.parametrize("sp", TOPKS, ids=TOP_IDS)
def test_topk_mask_export_hard_round_trip(sp: Top):
    model = Outer(sp.fn)
    gm = sll_fx.linearize_module(model, eps=EPS, verbose=False)
    hard = sll_fx.export_hard(gm, verbose=False)
    assert not sll_nodes(hard)
    (entry,) = hard.sll_report.entries
    assert entry.sll_op == "sll.topk_mask" and hard.sll_report.remaining == 0
    with torch.no_grad():
        for i, x in enumerate(_topk_inputs(sp.shape)):
            assert_bitwise(hard(x), model(x), f"{sp.id} input {i}")
            assert_bitwise(hard(x.double()), model(x.double()), f"{sp.id} float64 input {i}")


def test_seed_sparse_attention_trains_its_scores():
    """The seed's scenario 8: the scores before the top-k mask get a gradient through the mask's boundary."""
    class Attn(nn.Module):
        def __init__(self):
            super().__init__()
            self.q = nn.Linear(4, 6)

        def forward(self, x):
            return sparse_attention(self.q(x).exp(), top_k=3)

    torch.manual_seed(0)
    model = Attn()
    gm = sll_fx.linearize_module(model, eps=0.5, verbose=False)
    assert [e.replacement for e in gm.sll_report.entries] == ["sll.topk_mask"]
    x = torch.randn(16, 4)
    gm(x)[:, 0].sum().backward()
    assert model.q.weight.grad is not None and model.q.weight.grad.abs().sum() > 0
    hard = sll_fx.export_hard(gm, verbose=False)
    assert_bitwise(hard(x), model(x))


@pytest.mark.parametrize("row,k", [
    ([INF, INF, 0.0, 0.0], 2),           # the k-th largest is +inf
    ([INF, 1.0, 0.0, -1.0], 1),
    ([3.0, 2.0, -INF, -INF], 2),         # the (k+1)-th largest is -inf (a -inf-masked row)
    ([5.0, -INF, -INF, -INF], 1),
    ([INF, 0.0, 2.0, 1.0], 2),           # +inf above a finite boundary
    ([-INF, 0.0, 2.0, 1.0], 2),          # -inf below a finite boundary
    ([5.0, -INF, -INF, -INF], 2),        # a tie at -inf on the boundary (k beyond the valid entries)
    ([5.0, 4.0, -INF, -INF, -INF], 3),
    ([INF, INF, INF, 0.0], 2),           # a tie at +inf on the boundary
    ([1.0, 2.0, INF, -INF], 4),          # k = size: all ones (0 * inf used to make NaN)
    ([INF, 1.0, 0.0, 2.0], 0),
], ids=["kth_is_inf", "k1_inf", "next_is_neg_inf", "k1_rest_neg_inf", "inf_above", "neg_inf_below",
        "neg_inf_tie", "neg_inf_tie_k3", "inf_tie", "k_is_size", "k_is_0"])
def test_topk_mask_infinite_values_give_the_hard_mask(row, k):
    """SLL_MATH.md: +-inf gives what the hard op gives; these rows have no element within eps of tau."""
    model = Outer(lambda m, x: torch.zeros_like(x).scatter(-1, torch.topk(x, k, -1).indices, 1.0))
    gm = sll_fx.linearize_module(model, eps=EPS, verbose=False)
    x = torch.tensor([row])
    assert_bitwise(gm(x), model(x), f"{row}, k={k}")


@pytest.mark.parametrize("k", [1, 2])
def test_topk_mask_smallest_ranks_nan_as_the_hard_op_does(k):
    """topk(largest=False) ranks a NaN above every number: the k smallest are numbers (ranking on -x made
    the NaN the smallest and moved the boundary); the NaN element itself stays NaN."""
    x = torch.tensor([[NAN, 1.0, 0.0, 2.0]])
    hard = torch.zeros_like(x).scatter(-1, torch.topk(x, k, -1, largest=False).indices, 1.0)
    y = torch.ops.sll.topk_mask(x, k, -1, eps=EPS, largest=False)
    assert torch.isnan(y[0, 0]) and y[0, 1:].tolist() == hard[0, 1:].tolist()


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), n=st.integers(2, 6), rows=st.integers(1, 4))
def test_random_argmax_topk_round_trip(data, n, rows):
    """Random values from a small grid (ties everywhere, +-inf, NaN): export_hard and mode="hard" are exact."""
    k = data.draw(st.integers(1, n - 1))
    vals = data.draw(st.lists(st.sampled_from([0.0, -0.0, 1.0, -1.0, 0.5, 2.0, INF, -INF, NAN]),
                              min_size=n * rows, max_size=n * rows))
    x = torch.tensor(vals, dtype=torch.float32).reshape(rows, n)

    def fn(m, x):
        return (torch.zeros_like(x).scatter(-1, torch.topk(x, k, -1).indices, 1.0) * 3
                + F.one_hot(x.argmax(-1), n).float() + F.one_hot(x.argmin(0), rows).float().sum(0).mean())

    model = Outer(fn)
    gm = sll_fx.linearize_module(model, eps=0.05, verbose=False)
    assert gm.sll_report.counts == {"found": 3, "rewritten": 3, "hard": 0}
    hard = sll_fx.export_hard(gm, verbose=False)
    hard_mode = sll_fx.linearize_module(model, eps=0.05, mode="hard", verbose=False)
    with torch.no_grad():
        ref = model(x)
        assert_bitwise(hard(x), ref)
        assert_bitwise(hard_mode(x), ref)


# ========================================================================================
# 5. index uses that stay hard, with the reason
# ========================================================================================

@dataclass
class Left:
    id: str
    fn: Callable
    entries: list      # (op, fragment of the reason), in any order


def _topk_gather(m, x):
    _, idx = x.topk(2, -1)
    return x.gather(-1, idx)


LEFT_HARD = [
    Left("argmax_as_index", lambda m, x: x[torch.arange(x.shape[0]), x.argmax(-1)],
         [("Tensor.argmax", "getitem")]),
    Left("torch_argmax_as_index", lambda m, x: x[torch.arange(6), torch.argmax(x, dim=1)],
         [("torch.argmax", "getitem")]),
    Left("argmax_gather", lambda m, x: x.gather(-1, x.argmax(-1, keepdim=True)), [("Tensor.argmax", "gather")]),
    Left("argmin_gather", lambda m, x: torch.gather(x, 1, torch.argmin(x, 1, keepdim=True)),
         [("torch.argmin", "gather")]),
    Left("topk_indices_gather", lambda m, x: x.gather(-1, torch.topk(x, 2, -1).indices), [("torch.topk", "gather")]),
    Left("topk_tuple_gather", _topk_gather, [("Tensor.topk", "gather")]),
    Left("one_hot_without_num_classes", lambda m, x: F.one_hot(x.argmax(-1)).float(),
         [("Tensor.argmax", "one_hot"), ("torch.one_hot", "num_classes")]),
    Left("one_hot_argmax_keepdim", lambda m, x: F.one_hot(x.argmax(-1, keepdim=True), 5).float(),
         [("Tensor.argmax", "one_hot"), ("torch.one_hot", "keepdim")]),
    Left("scatter_value_two", lambda m, x: torch.zeros_like(x).scatter(-1, torch.topk(x, 2, -1).indices, 2.0),
         [("torch.topk", "scatter"), ("Tensor.scatter", "not 1")]),
    Left("scatter_onto_ones", lambda m, x: torch.ones_like(x).scatter(-1, torch.topk(x, 2, -1).indices, 1.0),
         [("torch.topk", "scatter"), ("Tensor.scatter", "zeros_like")]),
    Left("where_on_integer_comparison", lambda m, x: torch.where(x.long() > 0, x, -x),
         [("x > t", "integer"), ("torch.where", "stays hard")]),
]


@pytest.mark.parametrize("case", LEFT_HARD, ids=[c.id for c in LEFT_HARD])
def test_index_uses_left_hard_with_reason(case: Left):
    model = Outer(case.fn)
    gm = sll_fx.linearize_module(model, eps=EPS, verbose=False)
    report = gm.sll_report
    assert not sll_nodes(gm), gm.code
    assert report.counts["rewritten"] == 0 and report.counts["hard"] == len(case.entries), str(report)
    for op, fragment in case.entries:
        (entry,) = [e for e in report.entries if e.op == op]
        assert entry.replacement is None and entry.eps is None
        assert fragment in entry.reason, entry.reason
        assert "left hard" in entry.reason or "stays hard" in entry.reason, entry.reason
        assert entry.module == "body"
        first = case.fn.__code__.co_firstlineno
        assert entry.source in {f"{THIS_FILE}:{first + i}" for i in range(3)}, entry.source
    assert "(hard)" in str(report)
    g = torch.Generator().manual_seed(2)
    xs = [torch.randn(6, 5, generator=g), torch.tensor([[0.0, 1.0, 1.0, -INF, INF]] * 6),
          torch.randint(0, 2, (6, 5), generator=g).float()]
    hard = sll_fx.export_hard(gm, verbose=False)
    assert hard.sll_report.entries == []
    with torch.no_grad():
        for x in xs:
            assert_bitwise(gm(x), model(x), case.id)
            assert_bitwise(hard(x), model(x), case.id)


def _argmax_shared(m, x):
    idx = x.argmax(-1)
    return F.one_hot(idx, 5).float() * x[torch.arange(6), idx].unsqueeze(-1)


def _topk_shared(m, x):
    idx = torch.topk(x, 2, -1).indices
    return torch.zeros_like(x).scatter(-1, idx, 1.0) * x.gather(-1, idx).sum(-1, keepdim=True)


@pytest.mark.parametrize("fn,op,use", [(_argmax_shared, "Tensor.argmax", "getitem"),
                                       (_topk_shared, "torch.topk", "gather")],
                         ids=["argmax_index_also_used_as_index", "topk_indices_also_gathered"])
def test_shared_index_other_use_is_reported(fn, op, use):
    """The one_hot / scatter use is rewritten; the same indices' other use stays hard and must be reported."""
    model = Outer(fn)
    gm = sll_fx.linearize_module(model, eps=EPS, verbose=False)
    assert len(sll_nodes(gm)) == 1
    x = torch.randn(6, 5, generator=torch.Generator().manual_seed(1))
    assert_bitwise(sll_fx.export_hard(gm, verbose=False)(x), model(x))
    hard_entries = [e for e in gm.sll_report.entries if not e.rewritten]
    assert any(e.op == op and use in e.reason for e in hard_entries), str(gm.sll_report)


# ========================================================================================
# 6. opcheck of the three new ops
# ========================================================================================

def _x():
    return (torch.randn(3, 5, generator=torch.Generator().manual_seed(2)) * 0.3).requires_grad_(True)


def _s():
    return torch.rand(3, 5, generator=torch.Generator().manual_seed(3)).requires_grad_(True)


OPCHECK_CASES = [
    ("select.where", torch.ops.sll.select.default, lambda: (_s(), _x(), _x() * 2), {"op": "where"}),
    ("select.masked_fill", torch.ops.sll.select.default, lambda: (_s(), torch.tensor(0.5), _x()),
     {"op": "masked_fill"}),
    ("select.ScalarSelf", torch.ops.sll.select.ScalarSelf, lambda: (_s(), 0.5, _x()), {"op": "masked_fill"}),
    ("select.ScalarOther", torch.ops.sll.select.ScalarOther, lambda: (_s(), _x(), -1.0), {"op": "where"}),
    ("select.Scalar", torch.ops.sll.select.Scalar, lambda: (_s(), 1.0, 0.0), {}),
    ("argmax_onehot.last", torch.ops.sll.argmax_onehot.default, lambda: (_x(), -1, 5), {"eps": 0.3}),
    ("argmax_onehot.dim0_wider", torch.ops.sll.argmax_onehot.default, lambda: (_x(), 0, 4), {"eps": 0.3}),
    ("argmin_onehot", torch.ops.sll.argmax_onehot.default, lambda: (_x(), 1, 5), {"eps": 0.3, "largest": False}),
    ("topk_mask.last", torch.ops.sll.topk_mask.default, lambda: (_x(), 2, -1), {"eps": 0.3}),
    ("topk_mask.dim0_smallest", torch.ops.sll.topk_mask.default, lambda: (_x(), 1, 0),
     {"eps": 0.3, "largest": False}),
    # the Tensor-eps overloads (what linearize_module's graphs call, eps from a buffer)
    ("argmax_onehot.T", torch.ops.sll.argmax_onehot.eps_tensor, lambda: (_x(), -1, 5),
     {"eps": torch.tensor(0.3, dtype=torch.float64)}),
    ("topk_mask.T", torch.ops.sll.topk_mask.eps_tensor, lambda: (_x(), 2, -1),
     {"eps": torch.tensor(0.3, dtype=torch.float64), "largest": False}),
]


OPCHECK_RUNS = [(name, op, args, {**kw, "mode": mode} if "eps" in kw else kw)
                for name, op, args, kw in OPCHECK_CASES for mode in (("linear", "hard") if "eps" in kw else (None,))]


@pytest.mark.parametrize("name,op,args,kwargs", OPCHECK_RUNS,
                         ids=[f"{c[0]}-{c[3].get('mode', 'nomode')}" for c in OPCHECK_RUNS])
def test_opcheck_new_ops(name, op, args, kwargs):
    torch.library.opcheck(op, args(), kwargs)


def test_every_overload_of_the_new_ops_is_opchecked():
    covered = {str(c[1]) for c in OPCHECK_CASES}
    for name in ("select", "argmax_onehot", "topk_mask"):
        packet = getattr(torch.ops.sll, name)
        for overload in packet.overloads():
            assert str(getattr(packet, overload)) in covered, (name, overload)


# --- findings from the examples: compared masks, scalar products, dead topk -------------------

class _ComparedMask(nn.Module):
    def forward(self, s):
        top_vals, top_idx = torch.topk(s, 2, dim=-1)
        mask = torch.zeros_like(s)
        mask.scatter_(-1, top_idx, 1.0)
        return s.masked_fill(mask == 0, float("-inf")).softmax(-1)


def test_topk_mask_compared_with_eq_is_reported():
    gm = sll_fx.linearize_module(_ComparedMask(), eps=0.5, verbose=False)
    (entry,) = gm.sll_report.entries
    assert entry.replacement is None  # mask == 0 is a bool use only: the mask stays hard, the forward the model's
    assert "x == t (eq)" in entry.reason and "left hard" in entry.reason
    assert len([n for n in gm.graph.nodes if n.target is torch.topk]) == 1
    hard = sll_fx.export_hard(gm, verbose=False)
    x = torch.randn(5, 4, generator=torch.Generator().manual_seed(0))
    assert torch.equal(hard(x), _ComparedMask()(x))
    assert len([n for n in hard.graph.nodes if n.target is torch.topk]) == 1


class _ScalarProduct(nn.Module):
    def forward(self, x):
        return (x > 0.25) * 1.0 + 2.0 * (x < -0.25)


def test_comparison_times_python_float_is_an_implicit_cast():
    gm = sll_fx.linearize_module(_ScalarProduct(), eps=0.1, verbose=False)
    assert gm.sll_report.counts == {"found": 2, "rewritten": 2, "hard": 0}
    x = torch.tensor([0.3, 0.25, 0.2, -0.3, -0.25, 0.0], dtype=torch.float64, requires_grad=True)
    out = gm(x)
    assert out.dtype == _ScalarProduct()(x).dtype == torch.get_default_dtype()
    out.sum().backward()
    assert x.grad[1] == pytest.approx(5.0) and x.grad[4] == pytest.approx(-10.0) and x.grad[5] == 0
    hard = sll_fx.export_hard(gm, verbose=False)
    with torch.no_grad():
        assert torch.equal(hard(x), _ScalarProduct()(x))


def test_where_with_an_integer_result_is_left_hard():
    """torch.where(x > 0, 1, 0) is int64: a blend cannot be held (it was truncated: neither the hard value
    nor the surrogate). The pass leaves it hard and says why; the explicit op refuses a fractional mask."""
    model = Outer(lambda m, x: torch.where(x > 0, 1, 0))
    gm = sll_fx.linearize_module(model, eps=0.5, verbose=False)
    x = torch.tensor([-0.4, -0.1, 0.2, 0.45, 1.0])
    assert torch.equal(gm(x), model(x)) and gm(x).dtype == torch.int64
    assert not gm.sll_report.rewritten
    assert any("integer result" in e.reason for e in gm.sll_report.entries)
    # floating branches: the blend a s + b (1 - s)
    fmodel = Outer(lambda m, x: torch.where(x > 0, 1.0, 0.0))
    assert torch.allclose(sll_fx.linearize_module(fmodel, eps=0.5, verbose=False)(x), (x + 0.5).clamp(0, 1))
    s = torch.tensor([0.0, 0.3, 1.0])  # an integer result is the hard where (the side of 1/2: see test_ops)
    assert torch.ops.sll.select(s, torch.tensor([5, 5, 5]), torch.tensor([1, 1, 1])).tolist() == [1, 1, 5]
    assert torch.ops.sll.select(s.round(), torch.tensor([5, 5, 5]), 1).tolist() == [1, 1, 5]  # a hard mask: fine


def test_scatter_with_reduce_is_not_a_topk_mask():
    """scatter(..., 1.0, reduce="multiply") into zeros stays zeros: not the mask pattern (it was rewritten,
    and export_hard then gave a mask)."""
    model = Outer(lambda m, x: torch.zeros_like(x).scatter(-1, torch.topk(x, 2, -1).indices, 1.0, reduce="multiply"))
    gm = sll_fx.linearize_module(model, eps=EPS, verbose=False)
    x = torch.tensor([[0.3, 0.9, 0.5, 0.1]])
    assert not gm.sll_report.rewritten
    assert any("reduce='multiply'" in e.reason for e in gm.sll_report.entries)
    assert_bitwise(gm(x), model(x))
    assert_bitwise(sll_fx.export_hard(gm, verbose=False)(x), model(x))


class _MixedDims(nn.Module):
    """A top-k mask whose topk and scatter spell their dim differently (-1 and 1 are one dim of a 2-D x)."""

    def __init__(self, tdim: int, sdim: int):
        super().__init__()
        self.tdim, self.sdim = tdim, sdim

    def forward(self, x):
        idx = x.topk(2, dim=self.tdim).indices
        mask = torch.zeros_like(x)
        mask.scatter_(self.sdim, idx, 1.0)
        return mask * 2


@pytest.mark.parametrize("tdim,sdim", [(-1, 1), (1, -1)])
def test_topk_mask_with_dims_spelled_differently_is_rewritten_where_the_rank_is_fixed(tdim, sdim):
    """x.topk(k, dim=-1) with zeros.scatter_(1, idx, 1.0) on a 2-D x was left hard ('k and dim must be literal and
    the same for topk and scatter'), also in a torch.export graph, whose rank is fixed (audit)."""
    model = _MixedDims(tdim, sdim)
    x = torch.randn(4, 5, generator=torch.Generator().manual_seed(12)) * 0.5
    gm = sll_fx.linearize_module(torch.export.export(model, (x,)), eps=EPS, verbose=False)
    (entry,) = gm.sll_report.entries
    assert entry.replacement == "sll.topk_mask" and entry.reason == "", str(gm.sll_report)
    (node,) = sll_nodes(gm)
    assert node.args[1:] == (2, tdim)
    with torch.no_grad():
        y, hard = gm(x), model(x)
    torch.testing.assert_close(y, topk_reference(x, 2, -1, EPS) * 2, rtol=1e-5, atol=1e-5)
    v = x.sort(-1, descending=True).values
    clear = (x - (v[:, 1:2] + v[:, 2:3]) / 2).abs() > EPS * 1.01  # outside the band: the model's mask exactly
    assert clear.any() and (~clear).any()
    assert_bitwise(y[clear], hard[clear])
    xg = x.clone().requires_grad_(True)
    (gm(xg) * torch.arange(20.0).view(4, 5)).sum().backward()  # (weighted: a mask's sum is k, whatever x)
    assert xg.grad.abs().sum() > 0
    stripped = sll_fx.export_hard(gm, verbose=False)
    with torch.no_grad():
        for i, xi in enumerate(_topk_inputs((4, 5))):
            assert_bitwise(stripped(xi), model(xi), f"input {i}")


@pytest.mark.parametrize("tdim,sdim,export,reason", [
    (-1, 1, False, "topk's dim=-1 and scatter's dim=1 are the same dim only where x has 2 dims, which this graph "
                   "does not fix (a traced graph runs at any rank): write the same dim in both (dim=-1 in the scatter)"),
    (0, 1, True, "topk's dim=0 and scatter's dim=1 are different dims of x (2-D): not a top-k mask"),
    (0, -1, True, "topk's dim=0 and scatter's dim=-1 are different dims of x (2-D): not a top-k mask"),
    (-2, -1, False, "topk's dim=-2 and scatter's dim=-1 are different dims: not a top-k mask"),
], ids=["traced_rank_unknown", "exported_0_1", "exported_0_minus1", "both_negative"])
def test_topk_mask_with_dims_that_may_differ_stays_hard_and_says_why(tdim, sdim, export, reason):
    """Where the graph does not fix x's rank (a symbolic trace runs at any rank: dim=-1 and dim=1 are one dim for a
    2-D x only), or the dims differ at that rank, the mask stays hard, the values the model's."""
    model = _MixedDims(tdim, sdim)
    x = torch.randn(4, 5, generator=torch.Generator().manual_seed(12))
    gm = sll_fx.linearize_module(torch.export.export(model, (x,)) if export else model, eps=EPS, verbose=False)
    assert not gm.sll_report.rewritten and not sll_nodes(gm)
    (entry,) = [e for e in gm.sll_report.entries if e.op == "Tensor.scatter_"]
    assert entry.reason == f"top-k mask left hard: {reason}"
    with torch.no_grad():
        assert_bitwise(gm(x), model(x))
        assert_bitwise(sll_fx.export_hard(gm, verbose=False)(x), model(x))


class _Perturbed(nn.Module):
    """I-MLE / gumbel top-k: topk ranks logits + noise, the mask is built on zeros_like(logits)."""

    def __init__(self, zeros_of_scores: bool):
        super().__init__()
        self.zeros_of_scores = zeros_of_scores

    def forward(self, logits, noise):
        p = logits + noise
        idx = torch.topk(p, 2, dim=-1).indices
        return torch.zeros_like(p if self.zeros_of_scores else logits).scatter(-1, idx, 1.0)


def test_topk_mask_on_zeros_of_another_tensor_names_the_spelling_that_is_rewritten():
    """The reason said "the scattered tensor is not zeros_like(x) of the same x" and named no fix (a21)."""
    gm = sll_fx.linearize_module(_Perturbed(False), eps=EPS, verbose=False)
    (entry,) = [e for e in gm.sll_report.entries if e.op == "Tensor.scatter"]
    assert entry.reason == ("top-k mask left hard: the scattered tensor is not zeros_like(x) of the x topk ranks (write "
                            "torch.zeros_like(x).scatter(dim, torch.topk(x, k, dim).indices, 1.0) with topk's own input "
                            "x, the perturbed scores where topk ranks logits + noise, to linearize)")
    fixed = sll_fx.linearize_module(_Perturbed(True), eps=EPS, verbose=False)
    assert [e.replacement for e in fixed.sll_report.rewritten] == ["sll.topk_mask"]


def test_onehot_argmax_with_too_few_classes_raises_as_one_hot_does():
    """num_classes smaller than the dim: one_hot raises when an index reaches it; the linearized op used to
    keep the first classes silently. An index below it is fine, as for one_hot."""
    x = torch.tensor([[0.1, 0.3, 0.9, 0.2]])
    with pytest.raises(RuntimeError, match="Class values must be smaller than num_classes"):
        F.one_hot(x.argmax(-1), 2)
    for mode in ("linear", "hard"):
        with pytest.raises(RuntimeError, match="Class values must be smaller than num_classes"):
            torch.ops.sll.argmax_onehot(x, -1, 2, eps=EPS, mode=mode)
    ok = torch.tensor([[0.1, 0.9, 0.3, 0.2]])
    assert torch.ops.sll.argmax_onehot(ok, -1, 2, eps=EPS).tolist() == F.one_hot(ok.argmax(-1), 2).tolist()


def test_onehot_argmax_with_too_few_classes_raises_in_compiled_code(fresh_dynamo):
    """Compiled code cannot read values in Python: an assert kernel checks the index instead (it kept the first
    classes silently).  The error is one_hot's RuntimeError, also with fullgraph=True (it was dynamo's Unsupported,
    "Attempt to trace generator", from fx's error handler around the call: SLLGraphModule skips it when
    compiling)."""

    class Gate(nn.Module):
        def forward(self, x):
            return F.one_hot(x.argmax(-1), 2).float() * x[..., :2]

    gm = sll_fx.linearize_module(Gate(), eps=EPS, verbose=False)
    ok = torch.tensor([[0.1, 0.9, 0.3, 0.2]], requires_grad=True)
    bad = torch.tensor([[0.1, 0.3, 0.9, 0.2]], requires_grad=True)
    for fullgraph in (False, True):
        torch._dynamo.reset()  # (else the second compile runs the first one's cached code)
        compiled = torch.compile(gm, fullgraph=fullgraph)
        assert_bitwise(compiled(ok), gm(ok))
        with pytest.raises(RuntimeError, match="Class values must be smaller than num_classes=2") as caught:
            compiled(bad)
        assert type(caught.value) is RuntimeError, type(caught.value)


# --- a selection whose result may be an integer (its dtype unknown before run time) -----------------------------

class _UnknownDtypeSelections(nn.Module):
    """Branches of a kind the graph does not tell (forward inputs): integers at run time, in every comparison."""

    def __init__(self, cmp):
        super().__init__()
        self.cmp = cmp

    def forward(self, x, ids):
        c = self.cmp(x, 0.5)
        return torch.where(c, ids, ids * 10), ids.masked_fill(c, -1)


_TIE_X = torch.tensor([0.2, 0.5, 0.9, 0.45, 0.55, 0.5 + 1e-7, 0.5 - 1e-7, float("nan"), float("inf")])


@pytest.mark.parametrize("cmp", [operator.gt, operator.ge, operator.lt, operator.le], ids=["gt", "ge", "lt", "le"])
@pytest.mark.parametrize("mode", ["linear", "hard"])
def test_an_integer_selection_of_unknown_dtype_is_exact_on_the_threshold(cmp, mode, fresh_dynamo):
    """On the threshold the surrogate is 1/2 for > and >= alike; within rounding of it too.  A selection whose
    result the pass cannot know to be floating gets its comparison's hard value (``hard=``): the integer result
    is the hard op's exactly, on the threshold and next to it, eager and compiled.  (Eager raised an SLLError
    there; compiled code took ``b``, wrong for >= and <=.)"""
    model = _UnknownDtypeSelections(cmp)
    gm = sll_fx.linearize_module(model, eps=0.1, mode=mode, verbose=False)
    selects = [n for n in gm.graph.nodes if is_op(n.target, torch.ops.sll.select)]
    assert len(selects) == 2 and all(n.kwargs.get("hard") is not None for n in selects)
    ids = torch.arange(len(_TIE_X))
    want = model(_TIE_X, ids)
    for run in (gm, torch.compile(gm, fullgraph=True)):
        got = run(_TIE_X, ids)
        assert all(g.dtype == torch.int64 and torch.equal(g, w) for g, w in zip(got, want)), (got, want)
    hard = sll_fx.export_hard(gm)
    assert not [n for n in hard.graph.nodes if n.op == "call_function" and n.target is sll_fx.ops.hard_mask]
    assert all(torch.equal(g, w) for g, w in zip(hard(_TIE_X, ids), want))


def test_a_floating_selection_gets_no_hard_input():
    """Branches known to be floating (a float literal, a float parameter): nothing for an integer to need."""

    class Float(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.ones(3))

        def forward(self, x):
            return torch.where(x > 0, self.w, 0.0) + self.w.masked_fill(x < -1, 2.0) * x

    gm = sll_fx.linearize_module(Float(), eps=0.1, verbose=False)
    selects = [n for n in gm.graph.nodes if is_op(n.target, torch.ops.sll.select)]
    assert len(selects) == 2 and all(n.kwargs.get("hard") is None for n in selects)
    assert not [n for n in gm.graph.nodes if n.op == "call_function" and n.target is sll_fx.ops.hard_mask]


def test_a_float_selection_of_unknown_dtype_still_blends():
    """The hard input is read only for an integer result: a float one at run time is the blend, with its slope."""
    gm = sll_fx.linearize_module(_UnknownDtypeSelections(operator.gt), eps=0.1, verbose=False)
    x = torch.tensor([0.45, 0.5, 0.55], requires_grad=True)
    ids = torch.tensor([1.0, 2.0, 3.0])
    where, _ = gm(x, ids)
    s = (x.detach() - 0.5) / 0.2 + 0.5
    torch.testing.assert_close(where, ids * s + ids * 10 * (1 - s))
    where.sum().backward()
    torch.testing.assert_close(x.grad, (ids - ids * 10) / 0.2)


class _KthThreshold(nn.Module):
    def __init__(self, spelling):
        super().__init__()
        self.spelling = spelling

    def forward(self, g):
        if self.spelling == "kth":
            return g * (g >= g.topk(2, dim=-1).values[..., -1:])
        if self.spelling == "max":
            return g * (g >= g.max(-1, keepdim=True).values)
        if self.spelling == "times one":  # (the same values another way: it was rewritten, the top element 1/2)
            return g * ((g * 1) >= (g + 0).amax(-1, keepdim=True)).float()
        return g * (g.amax() <= g).float()


@pytest.mark.parametrize("spelling", ["kth", "max", "amax reversed", "times one"])
def test_a_comparison_with_an_element_of_its_own_input_stays_hard_with_the_fix(spelling):
    """g >= g.topk(k).values[..., -1:]: the k-th element sits on the boundary at every eps, so the linearized
    forward weighed it 1/2 forever ([0, .3096, .1349, 0] for [0, .3096, .2698, 0] at eps 1e-5)."""
    torch.manual_seed(0)
    g = torch.softmax(torch.randn(4, 4), -1)
    model = _KthThreshold(spelling)
    gm = sll_fx.linearize_module(model, eps=1e-5, verbose=False)
    assert not gm.sll_report.rewritten
    (entry,) = gm.sll_report.hard
    assert "its threshold is an element of its input" in entry.reason and ".scatter(-1, x.topk(k" in entry.reason
    assert torch.equal(gm(g), model(g))


def test_a_comparison_reaching_a_where_through_a_view_says_to_compare_after_the_view():
    """The reason said "cast it with .float() to linearize", which makes torch.where raise (a float condition)."""
    model = Outer(lambda m, x: torch.where((x.sum(-1) > m.t).unsqueeze(-1), x, 0.0))
    gm = sll_fx.linearize_module(model, eps=EPS, verbose=False)
    (entry,) = [e for e in gm.sll_report.hard if e.op != "torch.where"]
    assert "compare after the view to linearize: x.unsqueeze(1) > t" in entry.reason


class _TensorFills(nn.Module):
    def __init__(self, spelling):
        super().__init__()
        self.spelling = spelling
        self.t = nn.Parameter(torch.tensor(0.3))
        self.register_buffer("neg", torch.tensor(float("-inf")))

    def forward(self, x):
        m = x < self.t
        if self.spelling == "new_tensor":
            return x.masked_fill(m, x.new_tensor(float("-inf")))
        if self.spelling == "full_like":
            return torch.where(m, torch.full_like(x, float("-inf")), x)
        return torch.where(m, self.neg, x)


@pytest.mark.parametrize("spelling", ["new_tensor", "full_like", "buffer"])
def test_an_infinite_fill_given_as_a_tensor_stays_hard(spelling):
    """Before: only a Python float fill was seen; these were rewritten and masked the kept in-band entries."""
    model = _TensorFills(spelling)
    gm = sll_fx.linearize_module(model, eps=EPS, verbose=False)
    assert not gm.sll_report.rewritten
    assert any("a branch of -inf" in (e.reason or "") for e in gm.sll_report.hard)
    x = torch.tensor([[0.1, 0.25, 0.33, 0.37, 0.45, 1.0]])
    assert torch.equal(gm(x), model(x))


class _WrappedFills(nn.Module):
    """An infinite (or finite) fill read through calls that keep its value: a cast, a detach, a broadcast, a view."""

    def __init__(self, spelling, fill=float("-inf")):
        super().__init__()
        self.spelling = spelling
        self.t = nn.Parameter(torch.tensor(0.3))
        self.register_buffer("neg", torch.tensor(fill))
        self.p = nn.Parameter(torch.tensor(fill))
        self.fill = fill

    def forward(self, x):
        m = x < self.t
        fill = {"to": lambda: self.neg.to(x.dtype), "detach": lambda: self.neg.detach(),
                "param.detach": lambda: self.p.detach(), "expand_as": lambda: self.neg.expand_as(x),
                "float.view.clone": lambda: self.neg.float().view(1, 1).clone(),
                "full": lambda: torch.full((), self.fill, device=x.device),
                "full.expand": lambda: torch.full((1,), self.fill, dtype=x.dtype).expand(x.shape[0], -1),
                "neg.neg": lambda: -(-self.neg), "ones_like * fill": lambda: torch.ones_like(x) * self.fill,
                "repeat": lambda: self.neg.view(1, 1).repeat(1, x.shape[-1])}
        return torch.where(m, fill[self.spelling](), x)


_WRAPPED = ["to", "detach", "param.detach", "expand_as", "float.view.clone", "full", "full.expand", "neg.neg",
            "ones_like * fill", "repeat"]


@pytest.mark.parametrize("spelling", _WRAPPED)
def test_an_infinite_fill_read_through_a_cast_detach_or_view_stays_hard(spelling):
    """Before: only the fill itself was recognised (a buffer, new_tensor, full_like, new_full); through
    ``self.neg.to(x.dtype)``, ``.detach()``, ``.expand_as(x)`` or as ``torch.full((), -inf, device=...)`` the where was
    rewritten: -inf across the band where the model keeps x, NaN gradients after a softmax."""
    model = _WrappedFills(spelling)
    gm = sll_fx.linearize_module(model, eps=EPS, verbose=False)
    assert not gm.sll_report.rewritten
    assert any("a branch of -inf" in (e.reason or "") for e in gm.sll_report.hard)
    x = torch.tensor([[0.1, 0.25, 0.33, 0.37, 0.45, 1.0]])
    assert torch.equal(gm(x), model(x))
    finite = sll_fx.linearize_module(_WrappedFills(spelling, -1e4), eps=EPS, verbose=False)
    assert [e.replacement for e in finite.sll_report.rewritten] == ["sll.compare(lt)", "sll.select(where)"]


class _BigFills(nn.Module):
    """Fills beyond float16's range: -1e9 (the usual stand-in for -inf), -1e5 read through ``.half()``."""

    def __init__(self, spelling):
        super().__init__()
        self.spelling = spelling
        self.t = nn.Parameter(torch.tensor(0.3))
        self.register_buffer("big", torch.tensor(-1e5))

    def forward(self, x):
        m = x < self.t
        if self.spelling == "-1e9":
            return torch.where(m, -1e9, x)
        if self.spelling == "half":
            return torch.where(m, self.big.half(), x)
        return x.masked_fill(m, self.big.to(x.dtype))


@pytest.mark.parametrize("spelling", ["-1e9", "half", "to"])
def test_a_fill_beyond_float16s_range_stays_hard(spelling):
    """Before: -1e9 and a -1e5 buffer read through .half() or .to(x.dtype) were linearized; on float16 inputs they are
    -inf, and gm gave -inf/NaN in 20 of 64 outputs where the model is finite (NaN input gradients after a softmax)."""
    model = _BigFills(spelling)
    gm = sll_fx.linearize_module(model, eps=EPS, verbose=False)
    assert not gm.sll_report.rewritten
    assert any("beyond float16's largest value" in (e.reason or "") for e in gm.sll_report.hard)
    for dtype in (torch.float16, torch.float32):
        x = torch.tensor([[0.1, 0.25, 0.33, 0.37, 0.45, 1.0]], dtype=dtype)
        assert torch.equal(gm(x), model(x))


@pytest.mark.parametrize("spelling", ["new_full", "new_tensor"])
def test_an_infinite_fill_in_an_exported_program_stays_hard(spelling):
    """Before: aten.new_full (its fill at position 2) and torch.tensor's lift_fresh_copy + detach_ were not read:
    rewritten (the audit's repro: 12 of 64 outputs -inf where the model is finite)."""
    class Fill(nn.Module):
        def forward(self, x):
            m = x < 0.3
            if spelling == "new_full":
                return torch.where(m, x.new_full(x.shape, float("-inf")), x)
            return x.masked_fill(m, x.new_tensor(float("-inf")))

    x = torch.tensor([[0.1, 0.25, 0.33, 0.37, 0.45, 1.0]])
    gm = sll_fx.linearize_module(torch.export.export(Fill(), (x,)), eps=EPS, verbose=False)
    assert not gm.sll_report.rewritten
    assert torch.equal(gm(x), Fill()(x))


class _OwnStatistic(nn.Module):
    def __init__(self, spelling):
        super().__init__()
        self.spelling = spelling

    def forward(self, g):
        if self.spelling == "detach":
            return g * (g >= g.detach().max(-1, keepdim=True).values)
        if self.spelling == "softmax twice":
            return (g.softmax(-1) >= g.softmax(-1).amax(-1, keepdim=True)).float() * g
        return (g.unsqueeze(1) >= g.amax(-1, keepdim=True).unsqueeze(1)).float()


@pytest.mark.parametrize("spelling", ["detach", "softmax twice", "views"])
def test_a_comparison_with_its_own_statistic_spelled_otherwise_stays_hard(spelling):
    """Before: the reduction read another node than the comparison (g.detach(), a second g.softmax(-1), a view), so
    the top entry was weighed 1/2 at every eps."""
    g = torch.tensor([[0.1, 0.6, 0.2, 0.1]])
    model = _OwnStatistic(spelling)
    gm = sll_fx.linearize_module(model, eps=1e-4, verbose=False)
    assert not gm.sll_report.rewritten
    assert torch.equal(gm(g).float(), model(g).float())
    assert sll_fx.linearize_module(Outer(lambda m, x: (x > x.max() * 0.5).float() * x), eps=EPS,
                                   verbose=False).sll_report.rewritten  # (not an element: still rewritten)


@pytest.mark.parametrize("fn", [
    lambda m, x: (F.dropout(x, 0.5, True) > F.dropout(x, 0.5, True).amax(-1, keepdim=True)).float() * x,
    lambda m, x: (x.t() > x.amax(-1, keepdim=True)).float() * x.t(),
], ids=["two dropout draws", "a transpose"])
def test_not_an_order_statistic_of_its_own_input_stays_rewritten(fn):
    """Two random draws are two values, and a transpose moves the elements away from their thresholds."""
    gm = sll_fx.linearize_module(Outer(fn), eps=EPS, verbose=False)
    assert [e.replacement for e in gm.sll_report.rewritten] == ["sll.compare(gt)"]


@pytest.mark.parametrize("select, flat", [
    (lambda h: torch.where(h > 0.3, h, h * 0.1), False),
    (lambda h: torch.where(h < 0.0, h, h * 2.0), False),
    (lambda h: torch.where(h < 0.0, h, 0.0), True),       # (a constant branch: its elements tie, the one-hot stays
    (lambda h: h.masked_fill(h < 0.3, 0.25), True),       # hard, see below)
], ids=["where", "where_scaled", "where_const", "masked_fill"])
@pytest.mark.parametrize("pick", ["argmax", "argmin"])
def test_one_hot_of_a_rewritten_selection(select, flat, pick):
    """``one_hot(argmax(where(...)))`` raised "node 'argmax_onehot' reads 'where', which is not in the graph before
    it": the one-hot was built on the selection erased when it was rewritten (a45)."""
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.inp = nn.Linear(8, 8)

        def forward(self, x):
            g = select(self.inp(x))
            return g + F.one_hot(getattr(g, pick)(-1), 8).float()

    torch.manual_seed(0)
    model, x = Net(), torch.randn(256, 8)
    gm = sll_fx.linearize_module(model, eps=1e-2, verbose=False)
    entries = gm.sll_report.entries
    if flat:
        assert not entries[-1].rewritten and "tie for the argmax" in entries[-1].reason, str(gm.sll_report)
    else:
        assert all(e.rewritten for e in entries) and entries[-1].replacement == "sll.argmax_onehot", str(gm.sll_report)
    assert_bitwise(sll_fx.export_hard(gm, verbose=False)(x), model(x))
    x.requires_grad_()
    gm(x).sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_a_selection_read_by_a_top_k_mask_is_rewritten():
    """A top-k mask only orders the selection's values, as argmax does: the selection was left hard ("read as an
    integer or a mask further on, by torch.topk"), its comparison too, and no gradient reached them (a45)."""
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.inp = nn.Linear(8, 8)

        def forward(self, x):
            g = torch.where(self.inp(x) > 0.3, self.inp(x), 0.1 * self.inp(x))
            return g * torch.zeros_like(g).scatter(-1, torch.topk(g, 3, -1).indices, 1.0)

    torch.manual_seed(0)
    model, x = Net(), torch.randn(256, 8)
    gm = sll_fx.linearize_module(model, eps=1e-2, verbose=False)
    assert all(e.rewritten for e in gm.sll_report.entries), str(gm.sll_report)
    assert_bitwise(sll_fx.export_hard(gm, verbose=False)(x), model(x))


@pytest.mark.parametrize("pattern", [
    lambda v: F.one_hot(v.argmax(-1), 6).float(),
    lambda v: torch.zeros_like(v).scatter(-1, v.topk(2, -1).indices, 1.0),
], ids=["one_hot_argmax", "topk_mask"])
@pytest.mark.parametrize("flat", [
    lambda h: F.relu(h),                          # (relu's 0 in many elements)
    lambda h: h.masked_fill(h < -0.5, 0.7),       # (a fill)
    lambda h: torch.round(h),                     # (whole numbers)
    lambda h: F.relu(h) * 2 + 1,                  # (through arithmetic, one-to-one ops, softmax, a cat, a write,
    lambda h: torch.sigmoid(F.relu(h)),           # a division, a product with a per-column factor: a47)
    lambda h: torch.softmax(F.relu(h), -1),
    lambda h: torch.cat([F.relu(h[:, :3]), h[:, 3:]], -1),
    lambda h: (c := h * 1.0, c.relu_())[0],
    lambda h: torch.round(h) / (h.abs() + 1),
    lambda h: torch.clamp(h, 0, 1) * torch.arange(1.0, 7.0),
], ids=["relu", "masked_fill", "round", "relu_affine", "sigmoid_relu", "softmax_relu", "cat", "relu_in_place",
        "round_divided", "clamp_scaled"])
def test_a_one_hot_or_top_k_mask_of_values_equal_on_ranges_stays_hard(pattern, flat):
    """Elements equal to one another on whole ranges of inputs tie for the argmax or the k-th place: a margin of 0,
    where the surrogate is 1/2 at every eps (3000 and 2499 of 6000 outputs, rows summing to 3.0; a46)."""
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.tensor(1.0))

        def forward(self, x):
            return pattern(flat(x * self.w))

    model, x = Net(), torch.linspace(-3, 3, 6000).reshape(1000, 6)
    gm = sll_fx.linearize_module(model, eps=1e-3, verbose=False)
    entry = [e for e in gm.sll_report.entries if e.node in ("one_hot", "scatter")][-1]
    assert not entry.rewritten and "tie for the" in entry.reason, str(gm.sll_report)
    assert int((gm(x) == 0.5).sum()) == 0


def _fill_a_column(h):
    c = h * 1.0
    c[:, 0].fill_(1.0)
    return c


def _fill_two_columns(h):
    c = h * 1.0
    c[:, :2].fill_(1.0)
    return c


def _fill_a_last_column(h):
    c = h * 1.0
    c[..., 0].fill_(1.0)
    return c


def _fill_two_columns_apart(h):
    c = h * 1.0
    c[..., 0].fill_(1.0)
    c[..., 3].fill_(1.0)
    return c


def _fill_a_column_of_the_transpose(h):
    c = h * 1.0
    c.t()[:, 0].fill_(1.0)  # (all of row 0)
    return c


class _OneHotOf(nn.Module):
    def __init__(self, fill, dim=-1):
        super().__init__()
        self.fill, self.dim = fill, dim
        self.w = nn.Parameter(torch.tensor(1.0))

    def forward(self, x):
        return F.one_hot(self.fill(x * self.w).argmax(self.dim), 6).float()


@pytest.mark.parametrize("fill, dim, example, ties", [
    (_fill_a_last_column, -1, False, False), (_fill_a_column, 1, False, False), (_fill_a_column, -1, True, False),
    (lambda h: h.index_fill(-1, torch.tensor([0]), 1.0), -1, False, False),
    (lambda h: h.index_fill(1, torch.tensor([0]), 1.0), -1, True, False),
    (_fill_two_columns, -1, False, True), (lambda h: h.index_fill(-1, torch.tensor([0, 2]), 1.0), -1, False, True),
    (_fill_two_columns_apart, -1, False, True),
    (lambda h: h.index_fill(-1, torch.tensor([0]), 1.0).index_fill(-1, torch.tensor([1]), 1.0), -1, False, True),
    (_fill_a_column_of_the_transpose, -1, False, True)],
    ids=["last_column", "column_1_argmax_1", "column_1_example_inputs", "index_fill_one", "index_fill_dim_1_example",
         "two_columns", "index_fill_two", "two_fills_apart", "two_index_fills", "through_the_transpose"])
def test_a_constant_in_one_element_per_row_does_not_tie_a_one_hot(fill, dim, example, ties):
    """A fill of one column puts the value in one element per row, which cannot tie the argmax: the one-hot was
    left hard for it (60 of 2400 fuzzed models lost their gradient, a48).  Two such fills of the same value do tie
    (1000 of 1000 rows), and a column of a transpose is a row (a49)."""
    x = torch.linspace(-3, 3, 6000).reshape(1000, 6)
    model = _OneHotOf(fill, dim)
    gm = sll_fx.linearize_module(model, eps=1e-3, verbose=False, example_inputs=(x,) if example else None)
    entry = [e for e in gm.sll_report.entries if e.node == "one_hot"][-1]
    assert entry.rewritten != ties, str(gm.sll_report)
    if ties:
        assert int((gm(x) == 0.5).sum()) == 0
        assert_bitwise(gm(x), model(x))


@pytest.mark.parametrize("shape, dim", [((1000, 6), 0), ((100, 10, 6), -1)], ids=["argmax_0", "3d"])
def test_a_column_fill_ties_an_argmax_along_another_dim(shape, dim):
    """``h[:, 0].fill_(5)`` fills a whole row of an argmax along dim 0, and whole last-dim rows of a 3-D ``h``: the
    one-hot was rewritten as if it put 5 in one element per row, 1000 (600) outputs at 1/2 (a49).  A traced graph
    runs at any rank, so ``h[:, 0]`` and ``argmax(-1)`` may be different dims: left hard, and the reason says how to
    write it."""
    def fill(h):
        c = h * 1.0
        c[:, 0].fill_(5.0)
        return c

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.tensor(1.0))

        def forward(self, x):
            return F.one_hot(fill(x * self.w).argmax(dim), shape[dim]).float()

    model, x = Net(), torch.linspace(-3, 3, 6000).reshape(shape)
    gm = sll_fx.linearize_module(model, eps=1e-3, verbose=False)
    entry = [e for e in gm.sll_report.entries if e.node == "one_hot"][-1]
    assert not entry.rewritten, str(gm.sll_report)
    assert ("h[..., 0]" in entry.reason) == (dim == -1), entry.reason
    assert int((gm(x) == 0.5).sum()) == 0
    assert_bitwise(gm(x), model(x))

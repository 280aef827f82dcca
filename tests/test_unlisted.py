"""Discrete spellings the rule table has no sll op for: found, reported, left hard.

1. ``rules.UNLISTED``: ``torch.div(h, s, rounding_mode='floor'|'trunc')`` (also ``Tensor.div``/``divide``),
   ``torch.floor_divide``, ``h // s``, ``torch.remainder``/``h % s``, ``torch.fmod``, ``torch.frac``,
   ``torch.signbit``, ``torch.copysign``, ``torch.bucketize``, ``torch.searchsorted``,
   ``F.threshold``/``nn.Threshold``, ``F.hardshrink``/``nn.Hardshrink``, and the selections spelled without
   argmax/topk, the indices of ``torch.max``/``torch.min`` (``h.max(-1)[1]``, ``.indices``), of ``torch.sort`` and
   ``torch.argsort`` where they are read: one report entry each,
   "no SLL rule for <spelling>: left hard (<why>); <the spelling that is linearized>", nothing rewritten,
   and the model's values unchanged (``gm`` and ``export_hard(gm)``, bitwise).  Only where a gradient
   is lost: an operand it jumps in is known to be floating (integer arithmetic is no jump) and a gradient
   reaches it (not from buffers alone, not after ``.detach()``), and its value reaches the output not only
   through ``.detach()``.  The fix each reason names is linearized and computes the same values (``FIXES``).
2. In-place *function* spellings of rule ops (``torch.round_(x)``) on what may be shared (a module's output)
   are reported as the method spellings are: "in-place torch.round_: left hard (use the out-of-place spelling
   ...)"; on a fresh temporary (``torch.round_(h * 3)``, SpikingJelly's quantizers) they are rewritten out of
   place (a72, tests/test_inplace_fresh.py).
"""

from __future__ import annotations

import operator

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import sll_fx
from sll_fx.passes import _spellings as spellings
from sll_fx import rules
from sll_fx.config import SLLConfig

from _helpers import k_bit_quantize_forward  # (SpikingJelly's)

pytestmark = pytest.mark.filterwarnings("ignore:.*LeafSpec.*:FutureWarning")

EPS = 0.1
BOUNDS = torch.linspace(-1.0, 1.0, 5)


class Net(nn.Module):
    """``f(h, b)`` of ``h = Linear(x)`` (floating, with a gradient); ``b`` is a buffer (the boundaries)."""

    def __init__(self, f, extra: nn.Module | None = None):
        super().__init__()
        torch.manual_seed(0)
        self.lin = nn.Linear(8, 8)
        self.f = f
        self.register_buffer("b", BOUNDS.clone())
        if extra is not None:
            self.extra = extra

    def forward(self, x):
        h = self.lin(x)
        return self.f(self, h)


def _x():
    torch.manual_seed(1)
    return torch.randn(16, 8) * 2


def _why(kind: str) -> rules.Unlisted:
    return next(u for u in rules.UNLISTED if u.kind == kind)


# (id, f(module, h), op column, spelling in the reason, UNLISTED kind)
CASES = [
    ("div_floor", lambda m, h: torch.div(h, 0.5, rounding_mode="floor"), "torch.div",
     "torch.div(rounding_mode='floor')", "div_floor"),
    ("div_trunc", lambda m, h: torch.div(h, 0.5, rounding_mode="trunc"), "torch.div",
     "torch.div(rounding_mode='trunc')", "div_trunc"),
    ("method_div_floor", lambda m, h: h.div(0.5, rounding_mode="floor"), "Tensor.div",
     "Tensor.div(rounding_mode='floor')", "div_floor"),
    ("method_divide_trunc", lambda m, h: h.divide(0.5, rounding_mode="trunc"), "Tensor.divide",
     "Tensor.divide(rounding_mode='trunc')", "div_trunc"),
    ("divide_floor", lambda m, h: torch.divide(h, m.b[1].abs() + 0.25, rounding_mode="floor"), "torch.divide",
     "torch.divide(rounding_mode='floor')", "div_floor"),
    ("floor_divide", lambda m, h: torch.floor_divide(h, 0.5), "torch.floor_divide", "torch.floor_divide",
     "floor_divide"),
    ("method_floor_divide", lambda m, h: h.floor_divide(0.5), "Tensor.floor_divide", "Tensor.floor_divide",
     "floor_divide"),
    ("floordiv_operator", lambda m, h: h // 0.5, "x // y", "x // y", "floor_divide"),
    ("rfloordiv_operator", lambda m, h: 2.0 // h, "x // y", "x // y", "floor_divide"),
    ("remainder", lambda m, h: torch.remainder(h, 0.3), "torch.remainder", "torch.remainder", "remainder"),
    ("mod_operator", lambda m, h: h % 0.3, "x % y", "x % y", "remainder"),
    ("fmod", lambda m, h: torch.fmod(h, 0.3), "torch.fmod", "torch.fmod", "fmod"),
    ("method_fmod", lambda m, h: h.fmod(0.3), "Tensor.fmod", "Tensor.fmod", "fmod"),
    ("frac", lambda m, h: torch.frac(h), "torch.frac", "torch.frac", "frac"),
    ("method_frac", lambda m, h: h.frac(), "Tensor.frac", "Tensor.frac", "frac"),
    ("signbit", lambda m, h: torch.signbit(h).float(), "torch.signbit", "torch.signbit", "signbit"),
    ("copysign", lambda m, h: torch.copysign(torch.ones_like(h), h), "torch.copysign", "torch.copysign",
     "copysign"),
    ("bucketize", lambda m, h: torch.bucketize(h, m.b).float(), "torch.bucketize", "torch.bucketize", "bucketize"),
    ("searchsorted", lambda m, h: torch.searchsorted(m.b, h).float(), "torch.searchsorted", "torch.searchsorted",
     "searchsorted"),
    ("F.threshold", lambda m, h: F.threshold(h, 0.1, 2.0), "F.threshold", "F.threshold", "threshold"),
    ("F.hardshrink", lambda m, h: F.hardshrink(h, 0.3), "torch.hardshrink", "torch.hardshrink", "hardshrink"),
    ("method_hardshrink", lambda m, h: h.hardshrink(0.3), "Tensor.hardshrink", "Tensor.hardshrink", "hardshrink"),
    ("nn.Threshold", lambda m, h: m.extra(h), "nn.Threshold", "nn.Threshold", "threshold"),
    ("nn.Hardshrink", lambda m, h: m.extra(h), "nn.Hardshrink", "nn.Hardshrink", "hardshrink"),
    ("inplace_remainder", lambda m, h: (h * 1.0).remainder_(0.3), "Tensor.remainder_", "Tensor.remainder_",
     "remainder"),
    ("inplace_frac", lambda m, h: torch.frac_(h * 1.0), "torch.frac_", "torch.frac_", "frac"),
]
EXTRA = {"nn.Threshold": nn.Threshold(0.1, 2.0), "nn.Hardshrink": nn.Hardshrink(0.3)}


def _only_entry(gm):
    report = gm.sll_report
    assert report.counts == {"found": 1, "rewritten": 0, "hard": 1}, str(report)
    assert not report.rewritten
    return report.entries[0]


@pytest.mark.parametrize("name,f,op,spelling,kind", CASES, ids=[c[0] for c in CASES])
def test_reported_left_hard_with_the_fix(name, f, op, spelling, kind):
    model = Net(f, EXTRA.get(name))
    gm = sll_fx.linearize_module(model, eps=EPS, verbose=False)
    e = _only_entry(gm)
    u = _why(kind)
    assert e.op == op
    assert e.replacement is None and e.eps is None and e.mode is None
    assert e.reason == f"no SLL rule for {spelling}: left hard ({u.why}); {u.fix}"
    assert e.reason.startswith(f"no SLL rule for {spelling}: left hard (")
    assert u.fix.endswith("to have it linearized") or "to have it linearized (" in u.fix
    assert e.source.startswith("test_unlisted.py:")
    text = str(gm.sll_report)
    assert "1 discrete node(s) found, 0 rewritten" in text and "1 left hard" in text and spelling in text
    # nothing is rewritten: the model's values, bitwise, linearized and stripped
    x = _x()
    with torch.no_grad():
        want = model(x)
        assert torch.equal(gm(x), want)
        assert torch.equal(sll_fx.export_hard(gm, verbose=False)(x), want)
    assert not any(n.op == "call_function" and sll_fx.ops.is_sll_target(n.target) for n in gm.graph.nodes)


def test_div_reasons_name_the_rounding_mode_and_its_fix():
    floor, trunc = _why("div_floor"), _why("div_trunc")
    gm = sll_fx.linearize_module(Net(lambda m, h: torch.div(h, 0.5, rounding_mode="floor")), eps=EPS, verbose=False)
    assert _only_entry(gm).reason == ("no SLL rule for torch.div(rounding_mode='floor'): left hard (a step function: "
                                      "its gradient is zero almost everywhere); write torch.floor(h / s) to have it "
                                      "linearized")
    assert "torch.floor(h / s)" in floor.fix and "torch.trunc(h / s)" in trunc.fix
    gm = sll_fx.linearize_module(Net(lambda m, h: torch.bucketize(h, m.b)), eps=EPS, verbose=False)
    assert _only_entry(gm).reason.startswith("no SLL rule for torch.bucketize: left hard (")


@pytest.mark.parametrize("f", [
    lambda m, h: torch.div(h, 0.5),
    lambda m, h: torch.div(h, 0.5, rounding_mode=None),
    lambda m, h: h.div(0.5),
    lambda m, h: h / 0.5,
    lambda m, h: torch.copysign(h, torch.ones_like(h)),   # no jump in `input`: |h| (the sign comes from ones)
    lambda m, h: F.hardtanh(h) + torch.clamp(h, -1, 1),   # continuous
], ids=["div", "div_none", "method_div", "truediv", "copysign_of_input", "continuous"])
def test_no_entry_without_a_jump(f):
    gm = sll_fx.linearize_module(Net(f), eps=EPS, verbose=False)
    assert gm.sll_report.counts == {"found": 0, "rewritten": 0, "hard": 0}


# --- integer inputs: no jump, no entry --------------------------------------------------------

class Plain(nn.Module):
    def __init__(self, f):
        super().__init__()
        self.f = f
        self.register_buffer("b", torch.arange(0, 12, 3))

    def forward(self, x):
        return self.f(self, x)


INT_CASES = {
    "floordiv": lambda m, x: x // 2,
    "div_floor": lambda m, x: torch.div(x, 3, rounding_mode="floor"),
    "div_trunc": lambda m, x: x.div(3, rounding_mode="trunc"),
    "floor_divide": lambda m, x: torch.floor_divide(x, 4),
    "remainder": lambda m, x: torch.remainder(x, 3) + x % 5,
    "fmod": lambda m, x: torch.fmod(x, 3),
    "bucketize": lambda m, x: torch.bucketize(x, m.b),
    "searchsorted": lambda m, x: torch.searchsorted(m.b, x),
    "signbit": lambda m, x: torch.signbit(x).long(),
}


@pytest.mark.parametrize("name", list(INT_CASES))
def test_integer_inputs_give_no_entry(name):
    model = Plain(INT_CASES[name])
    xi = torch.arange(-6, 10)
    gm = sll_fx.linearize_module(model, eps=EPS, verbose=False, example_inputs=(xi,))
    assert gm.sll_report.counts == {"found": 0, "rewritten": 0, "hard": 0}, str(gm.sll_report)
    assert torch.equal(sll_fx.export_hard(gm, verbose=False)(xi), model(xi))
    # the same model on floating inputs: one entry per discrete call
    xf = xi.float() / 3
    gm = sll_fx.linearize_module(model, eps=EPS, verbose=False, example_inputs=(xf,))
    found = gm.sll_report.counts["found"]
    assert found == (2 if name == "remainder" else 1), str(gm.sll_report)
    assert gm.sll_report.counts == {"found": found, "rewritten": 0, "hard": found}
    assert all(e.reason.startswith("no SLL rule for ") for e in gm.sll_report.entries)
    assert torch.equal(sll_fx.export_hard(gm, verbose=False)(xf), model(xf))


def test_unknown_dtype_gives_no_entry():
    """Without example_inputs the input's dtype is not known: the planner does not guess."""
    gm = sll_fx.linearize_module(Plain(lambda m, x: x // 2), eps=EPS, verbose=False)
    assert gm.sll_report.counts["found"] == 0


def test_integer_division_of_an_integer_result():
    """``argmax // 4`` (a row of a flattened index) on a floating model: integer, no entry."""
    model = Net(lambda m, h: (h.argmax(-1) // 4).float() + h)
    gm = sll_fx.linearize_module(model, eps=EPS, verbose=False)
    assert all(not e.reason.startswith("no SLL rule") for e in gm.sll_report.entries), str(gm.sll_report)


def test_shape_arithmetic_gives_no_entry():
    """``x.size(-1) // 2``, ``h.shape[0] % 2``: integers (sizes), with or without example inputs."""
    model = Net(lambda m, h: h[:, : h.size(-1) // 2].sum(-1) * (h.shape[0] % 2 + 1))
    x = _x()
    for kw in ({}, {"example_inputs": (x,)}):
        gm = sll_fx.linearize_module(model, eps=EPS, verbose=False, **kw)
        assert gm.sll_report.counts["found"] == 0, str(gm.sll_report)
        assert torch.equal(sll_fx.export_hard(gm, verbose=False)(x), model(x))


# --- only where a gradient is lost -------------------------------------------------------------

def test_no_gradient_gives_no_entry():
    """From buffers alone, after .detach(), or under torch.no_grad(): nothing to lose, no entry."""
    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(8, 8)
            self.register_buffer("step", torch.tensor(7.0))

        def forward(self, x):
            h = self.lin(x)
            phase = torch.remainder(self.step, 4.0)                  # a buffer: no gradient reaches it
            q = torch.div(h.detach(), 0.5, rounding_mode="floor")    # after .detach()
            with torch.no_grad():
                r = h // 0.25
            return h * phase + q + r

    model = M()
    gm = sll_fx.linearize_module(model, eps=EPS, verbose=False)
    assert gm.sll_report.counts["found"] == 0, str(gm.sll_report)
    x = _x()
    assert torch.equal(sll_fx.export_hard(gm, verbose=False)(x), model(x))


def test_straight_through_estimator_gives_no_entry():
    """``h + (floor_div(h) * s - h).detach()``: its value reaches the output only through .detach()."""
    model = Net(lambda m, h: h + (torch.div(h, 0.5, rounding_mode="floor") * 0.5 - h).detach())
    gm = sll_fx.linearize_module(model, eps=EPS, verbose=False)
    assert gm.sll_report.counts["found"] == 0, str(gm.sll_report)


def test_skipped_submodule_gives_no_entry():
    class Q(nn.Module):
        def forward(self, h):
            return h // 0.5

    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin, self.q = nn.Linear(8, 8), Q()

        def forward(self, x):
            h = self.lin(x)
            return self.q(h) + h % 0.3

    gm = sll_fx.linearize_module(M(), SLLConfig(eps=EPS, skip=("q",)), verbose=False)
    assert [e.op for e in gm.sll_report.entries] == ["x % y"], str(gm.sll_report)


def test_counts_next_to_rewritten_nodes():
    """An unlisted op among rule ops: counted as found and hard, the rule ops still rewritten."""
    model = Net(lambda m, h: torch.round(h) + torch.div(h, 0.5, rounding_mode="floor") + (h > 0).float()
                + torch.bucketize(h, m.b))
    gm = sll_fx.linearize_module(model, eps=EPS, verbose=False)
    report = gm.sll_report
    assert report.counts == {"found": 4, "rewritten": 2, "hard": 2}, str(report)
    assert [e.op for e in report.hard] == ["torch.div", "torch.bucketize"]
    assert [e.replacement for e in report.rewritten] == ["sll.round", "sll.compare(gt)"]
    x = _x()
    assert torch.equal(sll_fx.export_hard(gm, verbose=False)(x), model(x))


def test_exported_program():
    """An ExportedProgram's aten spellings are found too (dtype from the graph's fake values)."""
    model = Net(lambda m, h: torch.div(h, 0.5, rounding_mode="floor") + h % 0.3 + torch.bucketize(h, m.b)
                + F.threshold(h, 0.1, 2.0) + torch.round_(h * 2))  # (a72: on a fresh temporary, rewritten)
    x = _x()
    ep = torch.export.export(model, (x,))
    gm = sll_fx.linearize_module(ep, eps=EPS, verbose=False)
    report = gm.sll_report
    assert [e.op for e in report.entries] == ["aten.div.Tensor_mode", "aten.remainder.Scalar", "aten.bucketize.Tensor",
                                              "aten.threshold.default", "aten.round_.default"], str(report)
    assert report.counts == {"found": 5, "rewritten": 1, "hard": 4}
    assert report.entries[0].reason.startswith("no SLL rule for aten.div.Tensor_mode(rounding_mode='floor')")
    assert report.entries[-1].reason.startswith("in-place aten.round_.default on 'mul', a fresh temporary")
    assert torch.equal(sll_fx.export_hard(gm, verbose=False)(x), ep.module()(x))


# --- the fixes the reasons give are linearized ---------------------------------------------------

FIXES = {  # kind: (the original, the fix as the reason writes it) on h and the boundaries b
    "div_floor": (lambda h, b: torch.div(h, 0.5, rounding_mode="floor"), lambda h, b: torch.floor(h / 0.5)),
    "div_trunc": (lambda h, b: torch.div(h, 0.5, rounding_mode="trunc"), lambda h, b: torch.trunc(h / 0.5)),
    "floor_divide": (lambda h, b: h // 0.5, lambda h, b: torch.floor(h / 0.5)),
    "remainder": (lambda h, b: h % 0.5, lambda h, b: h - 0.5 * torch.floor(h / 0.5)),
    "fmod": (lambda h, b: torch.fmod(h, 0.5), lambda h, b: h - 0.5 * torch.trunc(h / 0.5)),
    "frac": (lambda h, b: torch.frac(h), lambda h, b: h - torch.trunc(h)),
    "signbit": (lambda h, b: torch.signbit(h).float(), lambda h, b: (h < 0).float()),
    "copysign": (lambda h, b: torch.copysign(h * 0 + 1.5, h), lambda h, b: (h * 0 + 1.5).abs() * torch.sign(h)),
    "bucketize": (lambda h, b: torch.bucketize(h, b).float(), lambda h, b: (h.unsqueeze(-1) > b).float().sum(-1)),
    "searchsorted": (lambda h, b: torch.searchsorted(b, h).float(),
                     lambda h, b: (h.unsqueeze(-1) > b).float().sum(-1)),
    "threshold": (lambda h, b: F.threshold(h, 0.1, 2.0), lambda h, b: torch.where(h > 0.1, h, 2.0)),
    "hardshrink": (lambda h, b: F.hardshrink(h, 0.3), lambda h, b: torch.where(h.abs() > 0.3, h, 0.0)),
    "max_indices": (lambda h, b: F.one_hot(h.max(-1)[1], 8).float() * h,
                    lambda h, b: F.one_hot(h.argmax(-1), 8).float() * h),
    "min_indices": (lambda h, b: F.one_hot(torch.min(h, dim=-1).indices, 8).float() * h,
                    lambda h, b: F.one_hot(h.argmin(-1), 8).float() * h),
    "sort_indices": (lambda h, b: torch.zeros_like(h).scatter(-1, h.sort(-1, descending=True).indices[..., :3], 1.0) * h,
                     lambda h, b: torch.zeros_like(h).scatter(-1, torch.topk(h, 3, -1).indices, 1.0) * h),
    "argsort": (lambda h, b: torch.zeros_like(h).scatter(-1, torch.argsort(h, -1, descending=True)[..., :3], 1.0) * h,
                lambda h, b: torch.zeros_like(h).scatter(-1, torch.topk(h, 3, -1).indices, 1.0) * h),
}


def test_every_unlisted_kind_has_a_fix_case():
    assert set(FIXES) == {u.kind for u in rules.UNLISTED}


@pytest.mark.parametrize("kind", list(FIXES))
def test_the_fix_is_linearized_and_computes_the_same(kind):
    original, fix = FIXES[kind]
    model = Net(lambda m, h: fix(h, m.b))
    gm = sll_fx.linearize_module(model, eps=EPS, verbose=False)
    report = gm.sll_report
    assert report.rewritten and not report.hard, str(report)
    x = _x()
    with torch.no_grad():
        h = model.lin(x)
        # the same values (up to rounding in h - s * floor(h / s))
        torch.testing.assert_close(fix(h, model.b), original(h, model.b), rtol=0, atol=1e-6)
        assert torch.equal(sll_fx.export_hard(gm, verbose=False)(x), model(x))
    gm(x).sum().backward()  # a gradient crosses the fix (the original gives none: zero or no path)
    assert model.lin.weight.grad is not None and model.lin.weight.grad.abs().sum() > 0


# --- in-place function spellings (f5) ------------------------------------------------------------


INPLACE_FUNCTIONS = ["round_", "floor_", "ceil_", "trunc_", "fix_"]


def test_inplace_function_spellings_are_the_rules():
    names = {f.__name__ for r in rules.RULES for f in r.inplace_functions}
    assert names == set(INPLACE_FUNCTIONS)
    assert all(not hasattr(torch, n) for n in ("sign_", "heaviside_", "masked_fill_", "gt_"))  # methods only


@pytest.mark.parametrize("name", INPLACE_FUNCTIONS)
def test_inplace_function_spelling_is_reported(name):
    """On a module's output (a72: on a fresh temporary, fn(h * 3), it is rewritten out of place: test_inplace_fresh)."""
    fn = getattr(torch, name)
    model = Net(lambda m, h: fn(h) + h)
    gm = sll_fx.linearize_module(model, eps=EPS, verbose=False)
    e = _only_entry(gm)
    assert e.op == f"torch.{name}"
    assert e.reason == f"in-place torch.{name}: left hard (use the out-of-place spelling to linearize)"
    x = _x()
    with torch.no_grad():
        assert torch.equal(gm(x), model(x))
        assert torch.equal(sll_fx.export_hard(gm, verbose=False)(x), model(x))


def test_spikingjelly_quantizer_is_reported():
    """a72: its round_ writes a fresh temporary (x * c): rewritten out of place (before: left hard, "use the
    out-of-place spelling to linearize")."""
    model = Net(lambda m, h: k_bit_quantize_forward(torch.sigmoid(h), 2))
    gm = sll_fx.linearize_module(model, eps=EPS, verbose=False)
    (e,) = gm.sll_report.entries
    assert (e.node, e.op, e.replacement) == ("round_", "torch.round_", "sll.round")
    assert e.reason.startswith("in-place torch.round_ on 'mul', a fresh temporary nothing else refers to: rewritten "
                               "out of place")
    x = _x()
    with torch.no_grad():
        assert torch.equal(sll_fx.export_hard(gm, verbose=False)(x), model(x))


def test_method_spelling_reason_unchanged():
    gm = sll_fx.linearize_module(Net(lambda m, h: h.round_()), eps=EPS, verbose=False)  # (a module's output; a72: on
    # a fresh temporary, (h * 3).round_(), it is rewritten out of place)
    assert _only_entry(gm).reason == "in-place Tensor.round_: left hard (use the out-of-place spelling to linearize)"


# --- the lookup is one dict lookup per node ------------------------------------------------------

def test_every_spelling_is_in_the_lookup_tables():
    for u in rules.UNLISTED:
        for f in u.functions:
            assert spellings._FUNCTION_BITS[id(f)] & spellings._UNLISTED, (u.kind, f)
            assert u in rules.UNLISTED_FUNCTIONS[id(f)]
        for m in u.methods:
            assert spellings._METHOD_BITS[m] & spellings._UNLISTED, (u.kind, m)
        for t in u.modules:
            assert u in rules.UNLISTED_MODULES[t]
    for r in rules.RULES:
        for f in r.inplace_functions:
            assert spellings._FUNCTION_BITS[id(f)] & spellings._FIND
    # the spellings of the rules and of the table do not overlap (a rule's spelling is the rule's)
    rule_ids = {id(f) for r in rules.RULES for f in r.functions}
    assert not rule_ids & set(rules.UNLISTED_FUNCTIONS)
    assert not {m for r in rules.RULES for m in r.methods} & set(rules.UNLISTED_METHODS)
    assert operator.floordiv in rules.UNLISTED[2].functions


# --- selections spelled without argmax/topk (s50): reported with the spelling that is linearized -----------

SELECTION_CASES = [  # (id, f(module, h), op column, spelling in the reason, UNLISTED kind)
    ("max_indices", lambda m, h: F.one_hot(torch.max(h, -1).indices, 8).float(), "torch.max",
     "torch.max(...).indices", "max_indices"),
    ("method_max_getitem", lambda m, h: F.one_hot(h.max(-1)[1], 8).float(), "Tensor.max", "Tensor.max(...).indices",
     "max_indices"),
    ("max_dim_keyword", lambda m, h: F.one_hot(torch.max(h, dim=1)[1], 8).float() * 2.0, "torch.max",
     "torch.max(...).indices", "max_indices"),
    ("min_indices", lambda m, h: F.one_hot(h.min(-1).indices, 8).float(), "Tensor.min", "Tensor.min(...).indices",
     "min_indices"),
    ("argsort_slice", lambda m, h: torch.zeros_like(h).scatter(-1, torch.argsort(h, dim=-1, descending=True)[..., :2],
                                                               1.0), "torch.argsort", "torch.argsort", "argsort"),
    ("sort_indices_slice", lambda m, h: torch.zeros_like(h).scatter(-1, torch.sort(h, dim=-1, descending=True)
                                                                    .indices[..., :2], 1.0),
     "torch.sort", "torch.sort(...).indices", "sort_indices"),
    ("method_sort_getitem", lambda m, h: torch.zeros_like(h).scatter(-1, h.sort(-1)[1][..., :2], 1.0), "Tensor.sort",
     "Tensor.sort(...).indices", "sort_indices"),
]


@pytest.mark.parametrize("name,f,op,spelling,kind", SELECTION_CASES, ids=[c[0] for c in SELECTION_CASES])
def test_selection_spellings_are_reported_with_the_fix(name, f, op, spelling, kind):
    """one_hot of torch.max(h, dim).indices / h.max(dim)[1], scatter of argsort(h)[..., :k] / sort(h).indices[..., :k]:
    the gradient to h is lost as with argmax/topk; the report says so and names the spelling that is linearized."""
    model = Net(f)
    gm = sll_fx.linearize_module(model, eps=EPS, verbose=False)
    e = _only_entry(gm)
    u = _why(kind)
    assert e.op == op and e.replacement is None
    assert e.reason == f"no SLL rule for {spelling}: left hard ({u.why}); {u.fix}"
    assert ("F.one_hot(h.argm" if kind in ("max_indices", "min_indices") else "torch.topk(h, k, dim)") in u.fix
    x = _x()
    with torch.no_grad():
        assert torch.equal(gm(x), model(x))
        assert torch.equal(sll_fx.export_hard(gm, verbose=False)(x), model(x))


@pytest.mark.parametrize("f", [
    lambda m, h: torch.max(h, -1).values * 2.0,            # the values: they carry the gradient
    lambda m, h: h.max(-1)[0] + h.min(dim=0).values.sum(),
    lambda m, h: torch.sort(h, -1).values[..., :2],
    lambda m, h: torch.max(h, h * 2.0)[1],                 # elementwise maximum: a tensor, [1] is its row
    lambda m, h: h.max() + torch.min(h),                   # full reductions
    lambda m, h: torch.max(m.b.view(1, 5).expand(8, 5), -1)[1].float().sum() + h,  # no gradient reaches it
], ids=["max_values", "getitem_0_values", "sort_values", "elementwise_max", "full_reduction", "no_gradient"])
def test_selection_spellings_without_indices_give_no_entry(f):
    gm = sll_fx.linearize_module(Net(f), eps=EPS, verbose=False)
    assert gm.sll_report.counts == {"found": 0, "rewritten": 0, "hard": 0}, str(gm.sll_report)


def test_selection_spellings_in_an_exported_program():
    """aten.max.dim / aten.sort.default / aten.argsort: found at the aten level too."""
    model = Net(lambda m, h: F.one_hot(h.max(-1)[1], 8).float() + torch.zeros_like(h).scatter(
        -1, torch.argsort(h, -1)[..., :2], 1.0) + torch.zeros_like(h).scatter(-1, h.sort(-1).indices[..., :2], 1.0))
    x = _x()
    ep = torch.export.export(model, (x,))
    gm = sll_fx.linearize_module(ep, eps=EPS, verbose=False)
    report = gm.sll_report
    assert sorted(e.reason.split(":")[0] for e in report.hard) == sorted(
        [f"no SLL rule for {s}" for s in ("aten.max.dim(...).indices", "aten.argsort.default",
                                          "aten.sort.default(...).indices")]), str(report)
    assert report.counts["rewritten"] == 0
    with torch.no_grad():
        assert torch.equal(sll_fx.export_hard(gm, verbose=False)(x), model(x))

"""In-place discrete ops on a fresh temporary (a72): ``torch.round_(x / step)``, ``x = x * c; torch.round_(x)``.

The tensor such an op writes is made in the graph by an op that allocates it and nothing else refers to it: the
out-of-place spelling computes the same values, so the op is rewritten like it (``_Planner._plan_in_place``), and its
uses and those of the tensor after it read the sll op's result.  Before a72 every in-place spelling stayed hard
("use the out-of-place spelling to linearize"), and every layer before it got a zero gradient (SpikingJelly's own
quantizers).  What may share the tensor (an input, an attribute, a module's output, a view, an alias, a tensor viewed
or written before) keeps the old behaviour and reason.
"""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import sll_fx
from _helpers import assert_bitwise, k_bit_quantize_forward, step_quantize_forward  # (SpikingJelly's)

EPS = 1e-3
OLD = "left hard (use the out-of-place spelling to linearize)"


class _Scaled(nn.Module):
    """``body(self, h)`` of ``h = x * w`` (``w`` a learned scale of ones: the model's ``h`` is its input ``x``)."""

    def __init__(self, body):
        super().__init__()
        self.w = nn.Parameter(torch.ones(6))
        self.register_buffer("b", torch.tensor([0.4, 1.6, -2.5, 3.3, 0.2, -0.7]))
        self.body = body

    def forward(self, x):
        return self.body(self, x * self.w)


def _x():
    """Inputs 0.0037 off every jump of the quantizers below (step 1/4 and 1/3, whole and half numbers)."""
    return (torch.arange(-300, 300).repeat(2) / 100 + 0.0037).reshape(200, 6)


def _off_jumps(x, scale, jump_at):
    """The least distance of ``x * scale`` to a jump (``jump_at``: 0.5 for round, 0.0 for floor/ceil/trunc/sign)."""
    v = x * scale - jump_at
    return float((v - torch.round(v)).abs().min())


def _sjq(s, h):
    return step_quantize_forward(h, 0.25) + k_bit_quantize_forward(h * (4 / 3), 2) * h  # (its jumps: those of 4 h)


def test_spikingjelly_quantizers_are_rewritten_out_of_place():
    """Before: both torch.round_ left hard ("use the out-of-place spelling"), w's gradient 0."""
    x = _x()
    assert _off_jumps(x, 4, 0.5) > 4 * EPS
    model = _Scaled(_sjq)
    gm = sll_fx.linearize_module(model, eps=EPS, verbose=False)
    report = gm.sll_report
    assert [(e.op, e.replacement) for e in report.entries] == [("torch.round_", "sll.round")] * 2, str(report)
    assert all("rewritten out of place" in e.reason for e in report.entries)
    with torch.no_grad():
        assert torch.equal(gm(x), model(x))
    gm(x).pow(2).mean().backward()
    assert gm.w.grad is not None and gm.w.grad.abs().sum() > 0  # (the model's: 0 through the rounds)
    hard = sll_fx.export_hard(gm, verbose=False)
    assert [n.target for n in hard.graph.nodes if n.op == "call_function" and n.target in (torch.round, torch.round_)] \
        == [torch.round, torch.round]
    with torch.no_grad():
        assert_bitwise(hard(x), model(x))
    ep = torch.export.export(gm, (x,))
    with torch.no_grad():
        assert torch.equal(ep.module()(x), gm(x))


def _round_method(s, h):
    t = h * 4
    t.round_()
    return t * h


def _round_twin(s, h):
    return torch.round(h * 4) * h


def _floor_method(s, h):
    t = h * 2
    t.floor_()
    return t * h + t


def _floor_twin(s, h):
    t = torch.floor(h * 2)
    return t * h + t


def _ceil_function(s, h):
    return torch.ceil_(h * 2) * h


def _ceil_twin(s, h):
    return torch.ceil(h * 2) * h


def _trunc_function(s, h):
    t = h - 0.5
    torch.trunc_(t)
    return t.view(-1).view_as(h) * h  # (a view of it taken after the write: redirected too)


def _trunc_twin(s, h):
    return torch.trunc(h - 0.5).view(-1).view_as(h) * h


def _sign_method(s, h):
    return (h - 0.3).sign_() * h


def _sign_twin(s, h):
    return torch.sign(h - 0.3) * h


def _sign_of_round(s, h):  # r, written by a sign_ rewritten out of place: round is rewritten too
    r = torch.round(h * 2)
    r.sign_()
    return r * h


def _sign_of_round_twin(s, h):
    return torch.sign(torch.round(h * 2)) * h


def _heaviside_method(s, h):
    t = h * 2
    t.heaviside_(s.b)
    return t * h


def _heaviside_twin(s, h):
    return torch.heaviside(h * 2, s.b) * h


def _written_after(s, h):  # a write after it writes the sll op's result (which gets its own copy)
    t = h * 4
    t.round_()
    t.mul_(0.5)
    return t * h


def _written_after_twin(s, h):
    r = torch.round(h * 4)
    r.mul_(0.5)
    return r * h


REWRITTEN = {"written after": (_written_after, _written_after_twin), "round_": (_round_method, _round_twin), "floor_": (_floor_method, _floor_twin),
             "torch.ceil_": (_ceil_function, _ceil_twin), "torch.trunc_": (_trunc_function, _trunc_twin),
             "sign_": (_sign_method, _sign_twin), "sign_ of round": (_sign_of_round, _sign_of_round_twin),
             "heaviside_": (_heaviside_method, _heaviside_twin)}


@pytest.mark.parametrize("mode", ["linear", "hard"])
@pytest.mark.parametrize("case", list(REWRITTEN))
def test_an_in_place_op_on_a_fresh_temporary_is_its_out_of_place_twin(case, mode):
    """The linearized model computes what the linearized twin computes, bit for bit, values and gradients, on every
    input (the bands' too); export_hard is the model.  Before: left hard, w's gradient 0 (sign_ of round: both hard,
    the round "overwritten by the in-place Tensor.sign_")."""
    body, twin = REWRITTEN[case]
    model, ref = _Scaled(body), _Scaled(twin)
    gm = sll_fx.linearize_module(model, eps=0.1, mode=mode, verbose=False)
    tm = sll_fx.linearize_module(ref, eps=0.1, mode=mode, verbose=False)
    assert [e.replacement for e in gm.sll_report.entries] == [e.replacement for e in tm.sll_report.entries]
    assert gm.sll_report.rewritten and not gm.sll_report.hard, str(gm.sll_report)
    x = _x() * 0.7  # (some inside the bands)
    y, yt = gm(x), tm(x)
    assert_bitwise(y, yt)
    y.sum().backward()
    yt.sum().backward()
    assert_bitwise(gm.w.grad, tm.w.grad)
    assert gm.w.grad.abs().sum() > 0
    with torch.no_grad():
        assert_bitwise(sll_fx.export_hard(gm, verbose=False)(x), model(x))


class _OnInput(nn.Module):
    def forward(self, x):
        x.round_()
        return x * 2


class _OnBuffer(_Scaled):
    def __init__(self):
        super().__init__(None)

    def forward(self, x):
        self.b.round_()
        return x * self.w * self.b


class _OnParameter(_Scaled):
    def __init__(self):
        super().__init__(None)

    def forward(self, x):
        torch.round_(self.w)
        return x * self.w


def _on_a_view(s, h):
    t = h * 2
    t.view(-1).round_()
    return t * h


def _viewed_before(s, h):
    t = h * 2
    v = t.view(-1)
    t.round_()
    return v.view_as(h) * 2


def _written_before(s, h):
    t = h * 2
    t.add_(0.5)
    t.round_()
    return t * h


def _dropout_alias(s, h):  # F.dropout in eval mode returns h itself: t is h, read after the write
    t = F.dropout(h, 0.5, training=False)
    t.round_()
    return t + h


def _module_output(s, h):
    t = s.lin(h)
    t.floor_()
    return t * h


CONTROLS = {"a view of a temporary": _on_a_view, "a temporary viewed before": _viewed_before,
            "a temporary written before": _written_before, "an alias (dropout in eval mode)": _dropout_alias,
            "a module's output": _module_output}


def _control(case):
    model = _Scaled(CONTROLS[case])
    model.lin = nn.Linear(6, 6)
    return model


@pytest.mark.parametrize("make", [_OnInput, _OnBuffer, _OnParameter, *(lambda c=c: _control(c) for c in CONTROLS)],
                         ids=["the model's input", "a buffer", "a parameter", *CONTROLS])
def test_an_in_place_op_on_what_may_be_shared_stays_hard_with_the_old_reason(make):
    """Unchanged: the old reason, the graph as it is (the model's values)."""
    model = make()
    gm = sll_fx.linearize_module(model, eps=EPS, verbose=False)
    (entry,) = gm.sll_report.entries
    assert entry.replacement is None and entry.reason.endswith(OLD) and entry.reason.startswith("in-place "), \
        str(gm.sll_report)
    x = _x()
    with torch.no_grad():
        assert torch.equal(gm(x.clone()), model(x.clone()))
        assert torch.equal(sll_fx.export_hard(gm, verbose=False)(x.clone()), model(x.clone()))


def _integer_use_after(s, h):
    t = h * 3
    t.round_()
    return t * h + t.long()


def _sign_of_round_read_as_integer(s, h):
    r = torch.round(h * 2)
    r.sign_()
    return r * h + r.long()


@pytest.mark.parametrize("body, why", [
    (_integer_use_after, "which an op rewritten out of place writes no more"),
    (_sign_of_round_read_as_integer, "which an op rewritten out of place writes no more")])
def test_an_in_place_op_whose_result_is_read_as_an_integer_stays_hard(body, why):
    """An integer use after the write needs the hard values, which the op does not write once rewritten: left hard,
    and so is a round it writes (overwritten by the in-place sign_ left hard)."""
    model = _Scaled(body)
    gm = sll_fx.linearize_module(model, eps=0.1, verbose=False)
    assert not gm.sll_report.rewritten, str(gm.sll_report)
    assert why in gm.sll_report.entries[-1].reason
    x = _x() * 0.7
    with torch.no_grad():
        assert torch.equal(gm(x), model(x))


def _heaviside_of_rounded(s, h):
    t = h * 3
    o = t.clone()  # (a copy taken before the write: not rounded)
    t.round_()
    return torch.heaviside(t - 1.0, s.b) * h + torch.floor(o) * h + t * h


def _heaviside_of_rounded_twin(s, h):
    t = h * 3
    o = t.clone()
    r = torch.round(t)
    return torch.heaviside(r - 1.0, s.b) * h + torch.floor(o) * h + r * h


def test_the_tie_check_reads_the_rewritten_write_as_a_grid():
    """heaviside(t - 1) of the rounded temporary sits on its jump (whole numbers less 1): rewritten in hard mode with
    the grid reason, as in the twin; floor of a copy taken before the write holds no grid (rewritten as usual); the
    round_ is rewritten.  Before: the round_ left hard."""
    gm = sll_fx.linearize_module(_Scaled(_heaviside_of_rounded), eps=EPS, verbose=False)
    tm = sll_fx.linearize_module(_Scaled(_heaviside_of_rounded_twin), eps=EPS, verbose=False)
    entries = [(e.replacement, e.mode) for e in gm.sll_report.entries]
    assert entries == [(e.replacement, e.mode) for e in tm.sll_report.entries] == \
        [("sll.round", "linear"), ("sll.heaviside", "hard"), ("sll.floor", "linear")], str(gm.sll_report)
    assert "its input holds whole numbers" in gm.sll_report.entries[1].reason, str(gm.sll_report)
    x = _x()
    with torch.no_grad():
        assert torch.equal(gm(x), tm(x))


def _floor_of_rounded(s, h):
    t = h * 3
    t.round_()
    return torch.floor(t) * h + t * h


def test_an_in_place_op_whose_result_a_tie_keeps_hard_stays_hard():
    """floor of the rounded temporary ties (whole numbers): left hard, so the round_ it reads would have to keep its
    hard values for it, which its rewrite out of place writes no more (the twin keeps its hard round for the floor)."""
    model = _Scaled(_floor_of_rounded)
    gm = sll_fx.linearize_module(model, eps=EPS, verbose=False)
    assert not gm.sll_report.rewritten, str(gm.sll_report)
    assert "writes no more" in gm.sll_report.entries[0].reason
    assert "its input holds whole numbers" in gm.sll_report.entries[1].reason
    x = _x()
    with torch.no_grad():
        assert torch.equal(gm(x), model(x))


def test_an_exported_programs_in_place_round_on_a_clone():
    """aten.round_.default of an aten.clone, in an exported program: rewritten; export_hard is the program."""
    class Odd(nn.Module):
        def forward(self, x):
            y = x * 3
            y.round_()
            return y * x

    x = _x()
    ep = torch.export.export(Odd(), (x,))
    gm = sll_fx.linearize_module(ep, eps=EPS, verbose=False)
    assert [(e.op, e.replacement) for e in gm.sll_report.entries] == [("aten.round_.default", "sll.round")], \
        str(gm.sll_report)
    assert torch.equal(gm(x), Odd()(x))
    assert_bitwise(sll_fx.export_hard(gm, verbose=False)(x), Odd()(x))

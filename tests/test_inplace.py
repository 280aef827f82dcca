"""In-place writes next to rewritten ops (``passes/_aliases.py``; the top-k pattern's own zeros, ``_plan.py``).

Each model writes in place where the hard ops make it legal: on a discrete op's result (``q.add_(1)``,
``nn.ReLU(inplace=True)``), through one of two casts of a comparison (``a = c.float(); a.mul_(2)``), or on a
discrete op's input after the op ran (``d = round(h); h.mul_(0.5)``).  Its twin spells the same writes out of
place.  The linearized model must compute what the linearized twin computes, values and gradients, in every
mode (before the fix: wrong values through aliased casts, or autograd's "modified by an inplace operation"),
and ``export_hard`` must be the original graph again, bit for bit, without the copies.
"""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import sll_fx

EPS = 0.1


class _Lin(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.lin = nn.Linear(5, 5)


def _pair(body_inplace, body_twin, **modules):
    """Two models of ``_Lin`` whose forwards are ``body(self, h)`` with ``h = self.lin(x)``."""
    def make(body):
        class M(_Lin):
            def __init__(self):
                super().__init__()
                for name, factory in modules.items():
                    setattr(self, name, factory())

            def forward(self, x):
                return body(self, self.lin(x))
        return M
    return make(body_inplace), make(body_twin)


def _cast_twice(s, h):
    c = h > 0
    a, b = c.float(), c.float()
    a.mul_(2)
    return a + b + h


def _cast_twice_twin(s, h):
    c = h > 0
    a, b = c.float(), c.float()
    return a * 2 + b + h


def _cast_and_product(s, h):  # an implicit cast (h * c) read after an explicit one was written
    c = h > 0
    a = c.float()
    a.mul_(5)
    return h * c + a


def _cast_and_product_twin(s, h):
    c = h > 0
    return h * c + c.float() * 5


def _sign_add(s, h):
    q = torch.sign(h)
    q.add_(1)
    return q * h


def _sign_add_twin(s, h):
    return (torch.sign(h) + 1) * h


def _gate_mul(s, h):
    g = (h > 0.3).float()
    g.mul_(2)
    return g * h


def _gate_mul_twin(s, h):
    return (h > 0.3).float() * 2 * h


def _round_input_written(s, h):
    d = torch.round(h)
    h.mul_(0.5)
    return d + h


def _round_input_written_twin(s, h):
    d = torch.round(h)
    return d + h * 0.5


def _relu_on_sign(s, h):
    return s.act(torch.sign(h)) * 2 + h


def _relu_on_sign_twin(s, h):
    return torch.relu(torch.sign(h)) * 2 + h


def _relu_after_gate(s, h):  # nn.ReLU(inplace=True) writes the comparison's input after it ran
    gate = (h > 0.3).float()
    return s.act(h) * gate


def _relu_after_gate_twin(s, h):
    gate = (h > 0.3).float()
    return torch.relu(h) * gate


def _functional_relu_after_round(s, h):
    d = torch.round(h)
    return F.relu(h, inplace=True) + d


def _functional_relu_after_round_twin(s, h):
    d = torch.round(h)
    return F.relu(h) + d


def _where_branch_written(s, h):
    w = torch.where(h > 0, h, -h)
    h.mul_(2)
    return w + h


def _where_branch_written_twin(s, h):
    w = torch.where(h > 0, h, -h)
    return w + h * 2


def _one_hot_input_written(s, h):
    o = F.one_hot(h.argmax(-1), 5).float()
    h.mul_(2)
    return o * h


def _one_hot_input_written_twin(s, h):
    o = F.one_hot(h.argmax(-1), 5).float()
    return o * (h * 2)


# A rewritten comparison (one-hot, top-k mask, where of numbers) has a gradient that the model's has not, so the op
# reading it saves its other operand, written in place afterwards (before the fix: gm's backward failed with
# "modified by an inplace operation", the model's ran)
def _gate_then_relu_module(s, h):
    g = h * (h > 0.2).float()
    return g + s.act(h)


def _gate_then_relu_twin(s, h):
    return h * (h > 0.2).float() + torch.relu(h)


def _bool_gate_then_relu_(s, h):
    g = h * (h > 0.2)  # (the product's implicit cast)
    h.relu_()
    return g + h


def _bool_gate_then_relu_twin(s, h):
    return h * (h > 0.2) + torch.relu(h)


def _gate_then_mul_(s, h):
    v = h * (h < 0.5).float()
    h.mul_(1.5)
    return v + h


def _gate_then_mul_twin(s, h):
    return h * (h < 0.5).float() + h * 1.5


def _gate_then_add_(s, h):
    v = (h > 0.1).float() * h
    h.add_(1.0)
    return v * h


def _gate_then_add_twin(s, h):
    return (h > 0.1).float() * h * (h + 1.0)


def _gate_then_sub_(s, h):
    v = torch.mul(h, (h >= -0.2).float())
    h.sub_(0.5)
    return v + h


def _gate_then_sub_twin(s, h):
    return torch.mul(h, (h >= -0.2).float()) + (h - 0.5)


def _gate_then_clamp_(s, h):
    v = h.mul((h > 0).float())
    h.clamp_(-0.5, 0.5)
    return v + h


def _gate_then_clamp_twin(s, h):
    return h.mul((h > 0).float()) + h.clamp(-0.5, 0.5)


def _gate_then_index_write(s, h):
    v = h * (h > 0).float()
    h.__setitem__((slice(None), 0), 0.0)  # h[:, 0] = 0.0 (as a statement, fx cannot trace it: kept opaque)
    return v + h


def _gate_then_index_write_twin(s, h):
    return h * (h > 0).float() + torch.cat([torch.zeros_like(h[:, :1]), h[:, 1:]], 1)


class _Halve(nn.Module):  # traced through: its write is a node of the graph
    def forward(self, a):
        a.mul_(0.5)
        return a


def _gate_then_child_writes(s, h):
    v = h * (h > 0).float()
    s.halve(h)
    return v + h


def _gate_then_child_writes_twin(s, h):
    return h * (h > 0).float() + h * 0.5


def _gate_then_opaque_child_writes(s, h):  # (_OpaqueWriter, below: kept opaque, doubles its input)
    v = h * (h > 0).float()
    s.w(h)
    return v + h


def _gate_then_opaque_child_writes_twin(s, h):
    return h * (h > 0).float() + h * 2


def _one_hot_product_then_mul_(s, h):
    v = F.one_hot(h.argmax(-1), 5).float() * h
    h.mul_(2)
    return v + h


def _one_hot_product_then_mul_twin(s, h):
    return F.one_hot(h.argmax(-1), 5).float() * h + h * 2


def _top_k_product_then_add_(s, h):
    v = torch.zeros_like(h).scatter(-1, h.topk(2, -1).indices, 1.0) * h
    h.add_(1.0)
    return v + h


def _top_k_product_then_add_twin(s, h):
    return torch.zeros_like(h).scatter(-1, h.topk(2, -1).indices, 1.0) * h + (h + 1.0)


def _where_of_numbers_product_then_mul_(s, h):
    v = torch.where(h > 0, 1.0, 0.0) * h
    h.mul_(2)
    return v + h


def _where_of_numbers_product_then_mul_twin(s, h):
    return torch.where(h > 0, 1.0, 0.0) * h + h * 2


def _gate_result_written(s, h):  # the gate's sigmoid now saves its result, written afterwards
    e = torch.sigmoid((h > 0).float())
    e.mul_(2)
    return e * h


def _gate_result_written_twin(s, h):
    return torch.sigmoid((h > 0).float()) * 2 * h


CASES = {
    "two casts, one written": (_cast_twice, _cast_twice_twin, {}),
    "cast written, product": (_cast_and_product, _cast_and_product_twin, {}),
    "sign result written": (_sign_add, _sign_add_twin, {}),
    "gate written": (_gate_mul, _gate_mul_twin, {}),
    "round input written": (_round_input_written, _round_input_written_twin, {}),
    "ReLU(inplace) on sign": (_relu_on_sign, _relu_on_sign_twin, {"act": lambda: nn.ReLU(inplace=True)}),
    "ReLU(inplace) after gate": (_relu_after_gate, _relu_after_gate_twin, {"act": lambda: nn.ReLU(inplace=True)}),
    "F.relu(inplace) after round": (_functional_relu_after_round, _functional_relu_after_round_twin, {}),
    "where branch written": (_where_branch_written, _where_branch_written_twin, {}),
    "one_hot input written": (_one_hot_input_written, _one_hot_input_written_twin, {}),
    "gate product, then ReLU(inplace)": (_gate_then_relu_module, _gate_then_relu_twin,
                                         {"act": lambda: nn.ReLU(inplace=True)}),
    "bool gate product, then relu_": (_bool_gate_then_relu_, _bool_gate_then_relu_twin, {}),
    "gate product, then mul_": (_gate_then_mul_, _gate_then_mul_twin, {}),
    "gate product, then add_": (_gate_then_add_, _gate_then_add_twin, {}),
    "gate product, then sub_": (_gate_then_sub_, _gate_then_sub_twin, {}),
    "gate product, then clamp_": (_gate_then_clamp_, _gate_then_clamp_twin, {}),
    "gate product, then h[:, 0] = 0": (_gate_then_index_write, _gate_then_index_write_twin, {}),
    "gate product, then a child writes": (_gate_then_child_writes, _gate_then_child_writes_twin, {"halve": _Halve}),
    "gate product, then an opaque child writes": (_gate_then_opaque_child_writes,
                                                  _gate_then_opaque_child_writes_twin, {"w": lambda: _OpaqueWriter()}),
    "one_hot product, then mul_": (_one_hot_product_then_mul_, _one_hot_product_then_mul_twin, {}),
    "top-k product, then add_": (_top_k_product_then_add_, _top_k_product_then_add_twin, {}),
    "where(1, 0) product, then mul_": (_where_of_numbers_product_then_mul_, _where_of_numbers_product_then_mul_twin,
                                       {}),
    "gate's sigmoid written": (_gate_result_written, _gate_result_written_twin, {}),
}
#: the cases whose selection (where, one_hot, top-k) supports only method='sll'
SELECTIONS = ("where", "one_hot", "top-k")
SETTINGS = {"linear": {"mode": "linear"}, "hard": {"mode": "hard"}, "ste": {"method": "ste"},
            "sigmoid": {"method": "sigmoid"}}


def _inputs():
    torch.manual_seed(1)
    x = torch.randn(6, 5) * 2
    x[0] = torch.tensor([0.02, -0.03, 0.31, 0.45, 0.51])  # some near the boundaries: inside the bands
    return x


def _run(gm, x):
    gm.zero_grad()
    y = gm(x)
    y.sum().backward()
    return y.detach(), [p.grad.clone() for p in gm.parameters()]


@pytest.mark.parametrize("setting", list(SETTINGS))
@pytest.mark.parametrize("case", list(CASES))
def test_matches_the_out_of_place_twin(case, setting):
    inplace, twin, modules = CASES[case]
    model, twin_model = _pair(inplace, twin, **modules)
    kw = SETTINGS[setting]
    if any(word in case for word in SELECTIONS):
        if setting in ("ste", "sigmoid"):
            pytest.skip("selections support only method='sll'")
    x = _inputs()
    gm = sll_fx.linearize_module(model(), eps=EPS, verbose=False, **kw)
    ref = sll_fx.linearize_module(twin_model(), eps=EPS, verbose=False, **kw)
    assert gm.sll_report.counts.get("rewritten", 0) == ref.sll_report.counts.get("rewritten", 0) > 0
    (y, grads), (y_ref, grads_ref) = _run(gm, x), _run(ref, x)
    assert torch.equal(y, y_ref)
    for g, g_ref in zip(grads, grads_ref):
        torch.testing.assert_close(g, g_ref, rtol=1e-6, atol=1e-6)
    with torch.no_grad():
        assert torch.equal(gm(x), y_ref)
    assert any(g.abs().sum() > 0 for g in grads)


@pytest.mark.parametrize("case", list(CASES))
def test_export_hard_is_the_original_graph(case):
    inplace, _, modules = CASES[case]
    model = _pair(inplace, inplace, **modules)[0]()
    x = _inputs()
    gm = sll_fx.linearize_module(model, eps=EPS, verbose=False)
    assert "clone" in gm.code  # (each case writes where a copy is needed)
    hard = sll_fx.export_hard(gm, verbose=False)
    assert "clone" not in hard.code
    with torch.no_grad():
        assert torch.equal(hard(x), model(x))
    assert not [n for n in hard.graph.nodes if n.target == "clone"]


#: the cases whose copies are for an op reading a value that only the rewrite gives a gradient
SAVES = [case for case in CASES if " product, then " in case or case == "gate's sigmoid written"]


@pytest.mark.parametrize("case", SAVES)
def test_copies_for_the_saves_leave_the_report_as_it_is(case):
    """The copies come after planning: the report decides and says what the out-of-place twin's does (an opaque
    child aside: the twin has none)."""
    inplace, twin, modules = CASES[case]
    model, twin_model = _pair(inplace, twin, **modules)
    for mode in ("linear", "hard"):
        gm = sll_fx.linearize_module(model(), eps=EPS, mode=mode, verbose=False)
        ref = sll_fx.linearize_module(twin_model(), eps=EPS, mode=mode, verbose=False)
        entries = [(e.op, e.replacement, e.reason, e.eps, e.mode) for e in gm.sll_report.entries]
        assert entries == [(e.op, e.replacement, e.reason, e.eps, e.mode) for e in ref.sll_report.entries]
        assert [o.path for o in gm.sll_report.opaque] == (["w"] if "opaque" in case else [])


def test_no_copy_without_an_in_place_write():
    model = _pair(_cast_twice_twin, _cast_twice_twin)[0]()
    assert "clone" not in sll_fx.linearize_module(model, eps=EPS, verbose=False).code


class _FillBefore(nn.Module):  # background 0.25, then the top 2 set to 1
    def forward(self, h):
        m = torch.zeros_like(h)
        m.add_(0.25)
        m.scatter_(-1, torch.topk(h, 2, -1).indices, 1.0)
        return m


class _ViewBefore(nn.Module):  # a view taken before the scatter_ sees it filled
    def forward(self, h):
        m = torch.zeros_like(h)
        v = m.view(-1)
        m.scatter_(-1, torch.topk(h, 2, -1).indices, 1.0)
        return v


class _TwoScatters(nn.Module):  # top 2 and bottom 1 into one mask
    def forward(self, h):
        m = torch.zeros_like(h)
        m.scatter_(-1, torch.topk(h, 2, -1).indices, 1.0)
        m.scatter_(-1, torch.topk(h, 1, -1, largest=False).indices, 1.0)
        return m


class _WrittenAfter(nn.Module):  # a write after the scatter_ reads the mask: rewritten
    def forward(self, h):
        m = torch.zeros_like(h)
        m.scatter_(-1, torch.topk(h, 2, -1).indices, 1.0)
        m.mul_(3)
        return m * h


@pytest.mark.parametrize("cls, why", [(_FillBefore, "written before it"), (_ViewBefore, "a view of the zeros"),
                                      (_TwoScatters, "filled by another scatter")])
def test_top_k_mask_into_shared_zeros_stays_hard(cls, why):
    """Before: rewritten all the same; gm and export_hard gave [1, 0, 1, 0, 0] where the model gives
    [1, .25, 1, .25, .25] (FillBefore), zeros (ViewBefore), [1, 0, 1, 0, 0] for [1, 0, 1, 1, 0] (TwoScatters)."""
    h = torch.tensor([[4.0, 1.0, 3.0, -2.0, 0.0]])  # gaps >= 1: outside every band
    model = cls()
    gm = sll_fx.linearize_module(model, eps=EPS, verbose=False)
    assert not gm.sll_report.rewritten
    assert any(why in (e.reason or "") for e in gm.sll_report.hard)
    hard = sll_fx.export_hard(gm, verbose=False)
    assert torch.equal(gm(h), model(h)) and torch.equal(hard(h), model(h))


def test_top_k_mask_written_after_is_rewritten():
    h = torch.tensor([[4.0, 1.0, 3.0, -2.0, 0.0]], requires_grad=True)
    model = _WrittenAfter()
    gm = sll_fx.linearize_module(model, eps=EPS, verbose=False)
    assert [e.replacement for e in gm.sll_report.rewritten] == ["sll.topk_mask"]
    assert torch.equal(gm(h), model(h))
    gm(h).sum().backward()  # (the mask written in place: its own copy)


class _SignInPlaceOnRound(nn.Module):
    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.ones(3))

    def forward(self, x):
        r = torch.round(x * self.w)
        r.sign_()
        return r * x + r.long()  # (a72: the integer use keeps the sign_ hard; without it both are rewritten)


def test_round_overwritten_by_an_in_place_discrete_op_stays_hard():
    """The README: an op read by an in-place discrete spelling left hard stays hard.  Before: round was rewritten and
    at x = 0.45 gm gave 0.45 (sign_ of the surrogate 0.25) where the model gives 0."""
    x = torch.tensor([0.45, 0.55, 2.0])
    model = _SignInPlaceOnRound()
    gm = sll_fx.linearize_module(model, eps=EPS, verbose=False)
    assert not gm.sll_report.rewritten
    entry = next(e for e in gm.sll_report.hard if e.node == "round_1")
    assert "overwritten by the in-place Tensor.sign_" in entry.reason
    assert torch.equal(gm(x), model(x))


class _SignThroughView(nn.Module):
    def forward(self, h):
        r = torch.round(h)
        r.view(-1).sign_()
        return r * h


def test_an_in_place_discrete_op_through_a_view_of_the_result_keeps_it_hard():
    """Before: the view counted as an integer use with a copy of the chain on the hard result, the write landed on
    the copy, and gm and export_hard gave [4.4, 9.3, 0, 35.4] where the model gives [2.2, 3.1, 0, 5.9]."""
    h = torch.tensor([[2.2, -3.1, 0.2, 5.9]])
    model = _SignThroughView()
    for mode in ("linear", "hard"):
        gm = sll_fx.linearize_module(model, eps=0.01, mode=mode, verbose=False)
        assert not gm.sll_report.rewritten
        assert torch.equal(gm(h), model(h))
        assert torch.equal(sll_fx.export_hard(gm, verbose=False)(h), model(h))


class _WrittenBetweenTopk(_Lin):
    def forward(self, x):
        h = self.lin(x)
        idx = h.topk(1, -1).indices
        h.mul_(-1)
        return torch.zeros_like(h).scatter(-1, idx, 1.0) * h


class _WrittenBetweenArgmax(_Lin):
    def forward(self, x):
        h = self.lin(x)
        i = h.argmax(-1)
        h.mul_(-1)
        return F.one_hot(i, 5).float() * h


@pytest.mark.parametrize("cls", [_WrittenBetweenTopk, _WrittenBetweenArgmax])
def test_a_selection_whose_input_is_written_between_its_index_and_its_mask_stays_hard(cls):
    """Before: the sll op, placed at the scatter/one_hot, read the written input and picked another element."""
    x = _inputs()
    model = cls()
    for mode in ("linear", "hard"):
        gm = sll_fx.linearize_module(model, eps=EPS, mode=mode, verbose=False)
        assert not gm.sll_report.rewritten
        assert any("is written in place by Tensor.mul_" in (e.reason or "") for e in gm.sll_report.hard)
        with torch.no_grad():
            assert torch.equal(gm(x), model(x))
            assert torch.equal(sll_fx.export_hard(gm, verbose=False)(x), model(x))


class _OpaqueWriter(nn.Module):  # kept opaque (a data-dependent branch); doubles its input in place
    def forward(self, a):
        if a.sum() > -1e9:
            a.mul_(2)
        return a


class _CastsIntoAnOpaqueWriter(_Lin):
    def __init__(self):
        super().__init__()
        self.w = _OpaqueWriter()

    def forward(self, x):
        h = self.lin(x)
        c = h > 0
        a, b = c.float(), c.float()
        self.w(a)  # writes a only
        return a + b + h


def test_a_module_kept_opaque_may_write_what_it_is_given():
    """Before: the two casts were one tensor, so the opaque module's write reached b too (4 where the model gives 3)."""
    x = _inputs()
    model = _CastsIntoAnOpaqueWriter()
    for mode in ("linear", "hard"):
        gm = sll_fx.linearize_module(model, eps=1e-3, mode=mode, verbose=False)
        assert [o.path for o in gm.sll_report.opaque] == ["w"]
        with torch.no_grad():
            assert torch.equal(gm(x[1:]), model(x[1:]))


class _AddOne(nn.Module):
    def forward(self, a):
        a.add_(1)
        return a


class _CastsIntoASkippedContainer(_Lin):
    def __init__(self):
        super().__init__()
        self.w = nn.Sequential(_AddOne())

    def forward(self, x):
        h = self.lin(x)
        c = h > 0
        a, b = c.float(), c.float()
        self.w(a)
        return a + b + h


def test_a_container_holding_a_users_module_may_write_what_it_is_given():
    """A skipped nn.Sequential(AddOne()) is a torch class; before, only the class of the module called was looked at
    (gm 4 where the model gives 3)."""
    x = _inputs()
    model = _CastsIntoASkippedContainer()
    gm = sll_fx.linearize_module(model, sll_fx.SLLConfig(eps=1e-3, skip=("w",)), verbose=False)
    with torch.no_grad():
        assert torch.equal(gm(x[1:]), model(x[1:]))

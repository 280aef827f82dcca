"""How a discrete node's result is used decides whether rewriting it can help.

1. Bool and integer uses.  A rewritten result (a top-k or one-hot mask, a comparison cast to float,
   round/sign, ...) is fractional inside the band in linear mode.  Float arithmetic on it is what the
   surrogate is for; a use as a bool or an integer (``.bool()``, ``~``, logical ops, ``==``, ``.long()``,
   ``x[mask]``, ``masked_select``, ``nonzero``, an op left hard, ...) passes no gradient and would only
   see the fractional values.  When every use is such, the node is left hard with the reason; when
   some uses are float arithmetic, the node is rewritten for them and the other uses keep reading the
   hard result (the report says so).  Either way those uses see the model's own values, bitwise.
2. ``.detach()``.  A node whose value reaches the output only through ``.detach()`` (``torch.detach``,
   ``detach_``, ``x.data``) is a hand-written straight-through estimator already: a surrogate there
   adds no gradient and in linear mode only changes the forward.  It is left hard with the reason; a
   node that also reaches the output along a differentiable path is rewritten as before.

eps = 0.3 throughout; the inputs put values inside the band, so a rewrite would change the forward.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import sll_fx
from _helpers import Fn, assert_bitwise

pytestmark = pytest.mark.filterwarnings("ignore:.*LeafSpec.*:FutureWarning")  # torch's own, deep-copying a pytree spec

EPS = 0.3
NEG_INF = float("-inf")

ONLY = ("{what} used only by {uses}, which passes no gradient (not float arithmetic: a bool or integer use, or "
        "an op left hard) and in linear mode would see fractional values inside the band: left hard")
ALSO = ("also used by {uses}, which passes no gradient (not float arithmetic: a bool or integer use, or an op left "
        "hard): that use reads the hard {what}")
DETACHED = "only used through .detach(): no gradient to give (a straight-through estimator already), left hard"


def linearize(model, **kw):
    return sll_fx.linearize_module(model, EPS, verbose=False, **kw)


def entries(gm) -> list[tuple]:
    return [(e.node, e.replacement, e.reason) for e in gm.sll_report.entries]


def as_tuple(out) -> tuple:
    return out if isinstance(out, tuple) else (out,)


def check_hard_forward(model, gm, x) -> None:
    """The linearized model and its export_hard are the model itself, bitwise."""
    assert_bitwise(as_tuple(gm(x)), as_tuple(model(x)), "linearized")
    assert_bitwise(as_tuple(sll_fx.export_hard(gm, verbose=False)(x)), as_tuple(model(x)), "export_hard")


def scores(shape=(4, 6), seed=0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def topk_mask(s, k=3):
    return torch.zeros_like(s).scatter(-1, torch.topk(s, k, dim=-1).indices, 1.0)


# --- 1. the audit's models ---------------------------------------------------------------------

class TopKAttn(nn.Module):
    def __init__(self):
        super().__init__()
        self.q = nn.Linear(8, 8)

    def forward(self, x):
        s = self.q(x) @ x.transpose(-2, -1)
        mask = torch.zeros_like(s).scatter(-1, torch.topk(s, 3, dim=-1).indices, 1.0)
        return torch.softmax(s.masked_fill(~mask.bool(), NEG_INF), -1)


class PickRow(nn.Module):
    def __init__(self):
        super().__init__()
        self.score = nn.Linear(8, 1)

    def forward(self, x):                          # x: [B, N, 8]
        sel = F.one_hot(self.score(x).squeeze(-1).argmax(-1), 10)
        return x[sel.bool()]                        # [B, 8]


def test_topk_attention_mask_used_as_bool_is_left_hard():
    torch.manual_seed(0)
    model = TopKAttn()
    x = torch.randn(4, 10, 8, generator=torch.Generator().manual_seed(1))
    gm = linearize(model)
    assert entries(gm) == [("scatter", None, ONLY.format(what="0/1 result", uses="Tensor.bool (bool_1)"))]
    assert gm.sll_report.counts == {"found": 1, "rewritten": 0, "hard": 1}
    assert (gm(x) > 0).sum(-1).float().mean().item() == 3.0   # 3 keys per row, as the model keeps
    check_hard_forward(model, gm, x)


def test_one_hot_used_to_index_is_left_hard():
    torch.manual_seed(0)
    model = PickRow()
    x = torch.randn(4, 10, 8, generator=torch.Generator().manual_seed(1))
    gm = linearize(model)
    assert entries(gm) == [("one_hot", None, ONLY.format(what="0/1 result", uses="Tensor.bool (bool_1)"))]
    assert gm(x).shape == (4, 8)
    check_hard_forward(model, gm, x)


# --- 1. every bool / integer spelling, on a top-k mask ------------------------------------------

BOOL_USES = {
    "invert": (lambda s, m: s.masked_fill(~m.bool(), NEG_INF), "Tensor.bool (bool_1)"),
    "logical_not": (lambda s, m: s.masked_fill(torch.logical_not(m), NEG_INF), "torch.logical_not (logical_not)"),
    "logical_and": (lambda s, m: torch.logical_and(m, m.flip(-1)), "torch.logical_and (logical_and)"),
    "logical_or": (lambda s, m: torch.logical_or(m, m.flip(-1)), "torch.logical_or (logical_or)"),
    "logical_xor": (lambda s, m: torch.logical_xor(m, m.flip(-1)), "torch.logical_xor (logical_xor)"),
    "long": (lambda s, m: s * m.long(), "Tensor.long (long)"),
    "int": (lambda s, m: m.int(), "Tensor.int (int_1)"),
    "to_int64": (lambda s, m: m.to(torch.int64), "Tensor.to (to)"),
    "to_bool": (lambda s, m: m.to(dtype=torch.bool), "Tensor.to (to)"),
    "type_long": (lambda s, m: m.type(torch.long), "Tensor.type (type_1)"),
    "index": (lambda s, m: s[m.bool()], "Tensor.bool (bool_1)"),
    "masked_select": (lambda s, m: torch.masked_select(s, m.bool()), "Tensor.bool (bool_1)"),
    "nonzero": (lambda s, m: m.nonzero(), "Tensor.nonzero (nonzero)"),
    "eq": (lambda s, m: s.masked_fill(m == 0, NEG_INF), "x == t (eq)"),
    "ne": (lambda s, m: m != 0, "x != t (ne)"),
    "where_condition": (lambda s, m: torch.where(m.bool(), s, NEG_INF), "Tensor.bool (bool_1)"),
    "through_a_view": (lambda s, m: s.unsqueeze(0)[m.unsqueeze(0).bool()], "Tensor.bool (bool_1)"),
    "argmax": (lambda s, m: m.argmax(-1), None),       # its own (bare) argmax entry too
}


@pytest.mark.parametrize("name", list(BOOL_USES))
def test_topk_mask_with_only_bool_or_integer_uses_is_left_hard(name):
    use, described = BOOL_USES[name]
    model = Fn(lambda s: use(s, topk_mask(s)))
    x = scores()
    gm = linearize(model)
    entry = gm.sll_report.entries[0]
    assert entry.node == "scatter" and entry.replacement is None
    if described is not None:
        assert entries(gm) == [("scatter", None, ONLY.format(what="0/1 result", uses=described))]
    else:
        assert entry.reason == ONLY.format(what="0/1 result", uses="Tensor.argmax (argmax)")
    check_hard_forward(model, gm, x)


def test_the_same_uses_of_a_rewritten_mask_would_change_the_forward():
    """What the hard verdict protects: sll.topk_mask's in-band values are fractional here."""
    s = scores()
    soft = torch.ops.sll.topk_mask(s, 3, -1, eps=EPS, mode="linear", largest=True)
    hard = topk_mask(s)
    assert not torch.equal(soft.bool(), hard.bool()) and not torch.equal(soft.long(), hard.long())


def test_topk_mask_compared_by_a_linearized_comparison_stays_rewritten():
    """``mask < 0.5`` feeding a selection is itself linearized: the surrogates compose, the gradient passes."""
    model = Fn(lambda s: s.masked_fill(topk_mask(s) < 0.5, -10.0))
    gm = linearize(model)
    assert [(e.node, e.replacement) for e in gm.sll_report.entries] == [
        ("scatter", "sll.topk_mask"), ("lt", "sll.compare(lt)"), ("masked_fill", "sll.select(masked_fill)")]


def test_mask_used_as_an_index_through_a_hard_comparison_is_left_hard():
    model = Fn(lambda s: s[topk_mask(s) > 0.5])
    x = scores()
    gm = linearize(model)
    assert entries(gm) == [
        ("scatter", None, ONLY.format(what="0/1 result", uses="x > t (gt)")),
        ("gt", None, "boolean result used by operator.getitem (getitem): left hard (cast it with .float() to "
                     "linearize)")]
    check_hard_forward(model, gm, x)


# --- 1. float and bool uses together: rewritten; the bool uses read the hard result -------------

C = torch.linspace(-1.0, 2.0, 6)   # a constant the float use multiplies: its gradient comes from the surrogate only


def _check_mixed(model, x, name, reason, extra_rewrites=()):
    """(float use, bool use): the float use is linearized (a gradient the hard model does not have),
    the bool use is the model's, bitwise; export_hard gives back the model."""
    gm = linearize(model)
    assert entries(gm) == [(name, reason[0], reason[1]), *extra_rewrites]
    xg = x.clone().requires_grad_(True)
    soft, kept = gm(xg)
    hard_soft, hard_kept = model(x)
    assert_bitwise(kept, hard_kept, "bool use")
    assert not torch.equal(soft, hard_soft)             # in-band values: the surrogate is in the float use
    soft.sum().backward()
    assert xg.grad is not None and xg.grad.abs().sum() > 0
    xh = x.clone().requires_grad_(True)
    out = model(xh)[0]
    if out.requires_grad:
        out.sum().backward()
    assert xh.grad is None or xh.grad.abs().sum() == 0  # the hard model: no gradient through the mask
    assert_bitwise(sll_fx.export_hard(gm, verbose=False)(x), model(x), "export_hard")
    return gm


def test_topk_mask_with_float_and_bool_uses():
    def fn(s):
        m = topk_mask(s)
        return (m * C).sum(-1), s.masked_fill(~m.bool(), NEG_INF)

    _check_mixed(Fn(fn), scores(), "scatter",
                 ("sll.topk_mask", ALSO.format(uses="Tensor.bool (bool_1)", what="0/1 result")))


def test_in_place_topk_mask_with_float_and_bool_uses():
    def fn(s):
        top_vals, top_idx = torch.topk(s, 3, dim=-1)
        mask = torch.zeros_like(s)
        mask.scatter_(-1, top_idx, 1.0)
        return (mask * C).sum(-1), s.masked_fill(mask == 0, NEG_INF)

    _check_mixed(Fn(fn), scores(), "scatter_",
                 ("sll.topk_mask", ALSO.format(uses="x == t (eq)", what="0/1 result")))


def test_in_place_topk_mask_with_only_bool_uses_is_left_hard():
    def fn(s):
        top_vals, top_idx = torch.topk(s, 3, dim=-1)
        mask = torch.zeros_like(s)
        mask.scatter_(-1, top_idx, 1.0)
        return s.masked_fill(~mask.bool(), NEG_INF)

    model = Fn(fn)
    gm = linearize(model)
    assert entries(gm) == [("scatter_", None, ONLY.format(what="0/1 result", uses="Tensor.bool (bool_1)"))]
    check_hard_forward(model, gm, scores())


def test_one_hot_with_float_and_bool_uses():
    x = torch.tensor([[0.1, 0.2, -1.0, 0.0, 0.05, 0.3],     # top two within 2 eps: in the band
                      [2.0, -1.0, 0.0, 0.5, 0.1, -0.2],
                      [0.4, 0.45, 0.3, 0.0, -0.3, 0.2],
                      [-0.5, 0.0, 0.1, 0.05, -2.0, 1.0]])

    def fn(x):
        o = F.one_hot(x.argmax(-1), 6)
        return (o * C).sum(-1), x[o.bool()]

    _check_mixed(Fn(fn), x, "one_hot",
                 ("sll.argmax_onehot", ALSO.format(uses="Tensor.bool (bool_1)", what="0/1 result")))


X = torch.tensor([-1.0, -0.2, -0.1, 0.0, 0.1, 0.2, 0.45, 1.0])


def test_comparison_cast_used_only_as_bool_or_integer_is_left_hard():
    for fn, uses in [(lambda x: x[(x > 0).float().bool()], "Tensor.bool (bool_1)"),
                     (lambda x: torch.tensor([1.0, 2.0])[(x > 0).float().long()], "Tensor.long (long)"),
                     (lambda x: ~(x > 0).to(x.dtype).bool(), "Tensor.bool (bool_1)")]:
        model = Fn(fn)
        gm = linearize(model)
        assert entries(gm) == [("gt", None, ONLY.format(what="0/1 result", uses=uses))]
        check_hard_forward(model, gm, X)


def test_comparison_cast_with_float_and_bool_uses():
    def fn(x):
        m = (x > 0).float()
        return m * C.repeat(2)[:8], x[m.bool()]

    gm = _check_mixed(Fn(fn), X, "gt", ("sll.compare(gt)", "also used as bool by Tensor.bool (bool_1): that use "
                                                               "stays hard"))
    assert [n.target for n in gm.graph.nodes if n.op == "call_method"].count("float") == 2  # hard and soft casts


def test_a_mask_read_as_a_mask_after_arithmetic_with_numbers_reads_the_hard_result():
    """(1 - m).bool(), (sign(x) + 1).long(): arithmetic with numbers keeps a mask a mask, so its bool or integer
    use is followed (it would see 1 - (a fraction) inside the band); the float use keeps the rewrite."""
    def inverted(x):
        m = (x > 0).float()
        return m * C.repeat(2)[:8], (1 - m).bool()

    def shifted(x):
        s = torch.sign(x)
        return s * C.repeat(2)[:8], (s * 0.5 + 0.5).mul(2).long()

    _check_mixed(Fn(inverted), X, "gt", ("sll.compare(gt)", "also used as bool by Tensor.bool (bool_1): that "
                                                                "use stays hard"))
    _check_mixed(Fn(shifted), X, "sign", ("sll.sign", ALSO.format(uses="Tensor.long (long)", what="result")))


def test_a_value_read_both_ways_after_arithmetic_gets_a_hard_copy_for_its_bool_use():
    """inv = 1 - m used as a float and as a bool: the float use of inv reads the surrogate, the bool use a copy of
    ``1 - m`` on the hard 0/1 cast (the model's value); the reason says so."""
    def fn(x):
        m = (x > 0).float()
        inv = 1 - m
        return x * m + x * inv, inv.bool()

    model = Fn(fn)
    gm = linearize(model)
    assert entries(gm) == [("gt", "sll.compare(gt)", (
        "also used as bool by Tensor.bool (bool_1): that use stays hard, through a copy of operator.sub (sub) on the "
        "hard 0/1 cast"))]
    assert_bitwise(gm(X)[1], model(X)[1], "bool use")
    assert_bitwise(sll_fx.export_hard(gm, verbose=False)(X)[0], model(X)[0], "export_hard")


def test_a_mask_only_read_as_a_mask_after_arithmetic_is_left_hard():
    model = Fn(lambda x: x[(1.0 - (x > 0).float()).view(-1).bool()])
    gm = linearize(model)
    assert entries(gm) == [("gt", None, ONLY.format(what="0/1 result", uses="Tensor.bool (bool_1)"))]
    check_hard_forward(model, gm, X)


def test_arithmetic_with_numbers_read_as_values_keeps_the_rewrite():
    """0.1 * sign(x) used as a value, its argmax included (an order, not a mask): rewritten, no reason."""
    gm = linearize(Fn(lambda x: (0.1 * torch.sign(x) + 1.0, (0.1 * torch.sign(x)).argmax(-1))))
    assert [(e.replacement, e.reason) for e in gm.sll_report.entries if e.op == "torch.sign"] == \
        [("sll.sign", ""), ("sll.sign", "")]


def test_round_used_as_integer_is_left_hard():
    model = Fn(lambda x: x.round().long())
    gm = linearize(model)
    assert entries(gm) == [("round_1", None, ONLY.format(what="result", uses="Tensor.long (long)"))]
    check_hard_forward(model, gm, X + 0.5)


def test_round_with_float_and_integer_uses():
    def fn(x):
        q = torch.round(x)
        return q * C.repeat(2)[:8], q.long()

    gm = _check_mixed(Fn(fn), X + 0.5, "round_1",
                      ("sll.round", ALSO.format(uses="Tensor.long (long)", what="result")))
    assert [n.target for n in gm.graph.nodes if n.op == "call_function"].count(torch.round) == 1  # kept for .long()


def test_a_use_by_an_op_left_hard_is_not_a_float_use():
    """sign(round(x)).long(): sign is left hard, so round's only use passes no gradient either."""
    model = Fn(lambda x: torch.sign(torch.round(x)).long())
    gm = linearize(model)
    assert entries(gm) == [("round_1", None, ONLY.format(what="result", uses="torch.sign (sign)")),
                           ("sign", None, ONLY.format(what="result", uses="Tensor.long (long)"))]
    check_hard_forward(model, gm, X + 0.5)


def test_one_view_used_both_ways_is_copied_for_its_bool_use():
    """A view used both as a float and as a bool: the float uses read the surrogate through the view, the bool use a
    copy of the view on the hard mask (the model's value)."""
    def fn(s):
        m = topk_mask(s).unsqueeze(0)
        return (m * C).sum(-1), s.unsqueeze(0).masked_fill(~m.bool(), NEG_INF)

    model = Fn(fn)
    gm = linearize(model)
    assert entries(gm) == [("scatter", "sll.topk_mask", (
        "also used by Tensor.bool (bool_1), which passes no gradient (not float arithmetic: a bool or integer use, or "
        "an op left hard): that use reads the hard 0/1 result, through a copy of Tensor.unsqueeze (unsqueeze) (the "
        "float uses read the originals, on the surrogate)"))]
    assert_bitwise(gm(scores())[1], model(scores())[1], "bool use")
    assert_bitwise(sll_fx.export_hard(gm, verbose=False)(scores())[0], model(scores())[0], "export_hard")


WRITTEN = ("also used by {uses}, which passes no gradient (not float arithmetic: a bool or integer use, or an op "
           "left hard); the {what} is written in place (by {writer}), so that use cannot keep the hard one: in "
           "linear mode it sees fractional values inside the band")


def test_a_result_written_in_place_is_rewritten_whole_and_reported():
    """q.clamp_() writes into q: a hard copy for q.long() would miss the write, so there is none."""
    def fn(x):
        q = torch.round(x)
        q.clamp_(-1, 1)
        return q * 2.0, q.long()

    model = Fn(fn)
    gm = linearize(model)
    assert entries(gm) == [("round_1", "sll.round", WRITTEN.format(uses="Tensor.long (long)", what="result",
                                                                      writer="Tensor.clamp_ (clamp_)"))]
    assert_bitwise(sll_fx.export_hard(gm, verbose=False)(X + 0.5), model(X + 0.5))

    def cast(x):
        m = (x > 0).float()
        m.mul_(2.0)
        return x * m, x[m.bool()]

    model = Fn(cast)
    gm = linearize(model)
    assert entries(gm) == [("gt", "sll.compare(gt)", WRITTEN.format(uses="Tensor.bool (bool_1)", what="0/1 result",
                                                                       writer="Tensor.mul_ (mul_)"))]
    assert_bitwise(sll_fx.export_hard(gm, verbose=False)(X), model(X))


@pytest.mark.parametrize("fn", [
    lambda x: (torch.round(x) > 0.5).float(),  # a linearized comparison of it (> 0, a whole threshold, stays hard)
    lambda x: torch.sign(torch.round(x)) * x,                       # a linearized op of it
    lambda x: torch.cat([torch.round(x), x]).reshape(2, -1).t().contiguous() * 2.0,
    lambda x: torch.round(x).to(x.dtype).unsqueeze(0).expand(3, -1) @ torch.ones(8),
    lambda x: torch.round(x),                                       # returned
    lambda x: torch.where(x > 5, torch.round(x), x),               # a branch (the comparison stays hard)
], ids=["compared", "sign", "views", "cast-matmul", "output", "branch"])
def test_float_uses_keep_the_rewrite(fn):
    gm = linearize(Fn(fn))
    (entry,) = [e for e in gm.sll_report.entries if e.node.startswith("round")]
    assert entry.replacement == "sll.round" and entry.reason == ""
    xg = (X + 0.5).requires_grad_(True)
    gm(xg).sum().backward()
    assert xg.grad.abs().sum() > 0


def test_exported_program_mask_used_as_bool():
    model = Fn(lambda s: torch.softmax(s.masked_fill(~topk_mask(s).bool(), NEG_INF), -1))
    x = scores()
    gm = linearize(torch.export.export(model, (x,)))
    (entry,) = gm.sll_report.entries
    assert entry.replacement is None and entry.reason == ONLY.format(what="0/1 result", uses="aten.to.dtype (to)")
    assert_bitwise(gm(x), model(x))


# --- 2. straight-through estimators written with .detach() ----------------------------------------

def _ste_detach_(x):
    d = x.round() - x
    d.detach_()
    return d + x


STES = {
    "detach_plus_x": (lambda x: (x.round() - x).detach() + x, "round_1"),
    "x_plus_detach": (lambda x: x + (x.round() - x).detach(), "round_1"),
    "sign": (lambda x: (torch.sign(x) - x).detach() + x, "sign"),
    "two_lines": (lambda x: (lambda y: x + (y - x).detach())(torch.round(x)), "round_1"),
    "torch_detach": (lambda x: torch.detach(torch.round(x) - x) + x, "round_1"),
    "data": (lambda x: (x.round() - x).data + x, "round_1"),
    "detach_": (_ste_detach_, "round_1"),
    "scaled": (lambda x: (torch.round(x * 4) - x * 4).detach() + x * 4, "round_1"),
    "floor_ceil": (lambda x: (torch.floor(x) - x).detach() + (torch.ceil(x) - x).detach() + x, None),
    "comparison": (lambda x: ((x > 0).float() - torch.sigmoid(x)).detach() + torch.sigmoid(x), "gt"),
    "one_hot": (lambda x: (F.one_hot(x.view(2, 4).argmax(-1), 4).float() - x.view(2, 4).softmax(-1)).detach()
                + x.view(2, 4).softmax(-1), "one_hot"),
    "topk": (lambda x: (topk_mask(x.view(2, 4), 2) - x.view(2, 4)).detach() + x.view(2, 4), "scatter"),
}


@pytest.mark.parametrize("name", list(STES))
def test_straight_through_estimator_with_detach_is_left_hard(name):
    fn, node = STES[name]
    model = Fn(fn)
    gm = linearize(model)
    if node is None:
        assert entries(gm) == [("floor", None, DETACHED), ("ceil", None, DETACHED)]
    else:
        assert entries(gm) == [(node, None, DETACHED)]
    x = torch.linspace(-1.3, 1.3, 8)
    check_hard_forward(model, gm, x)
    xa, xb = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    model(xa).sum().backward()
    gm(xb).sum().backward()
    assert_bitwise(xb.grad, xa.grad, "gradient")


def test_detach_and_a_differentiable_path_keep_the_rewrite():
    model = Fn(lambda x: (lambda y: (y - x).detach() + x + 0.1 * y)(x.round()))
    gm = linearize(model)
    assert entries(gm) == [("round_1", "sll.round", "")]
    x = torch.linspace(-1.3, 1.3, 8)
    xa, xb = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    model(xa).sum().backward()
    gm(xb).sum().backward()
    assert not torch.equal(xa.grad, xb.grad)           # the 0.1 * y path gets the surrogate's gradient
    assert_bitwise(sll_fx.export_hard(gm, verbose=False)(x), model(x))


def test_lsq_quantizer_is_left_hard():
    """LSQ (Esser et al.): a gradient-scaled step and a detach STE round; already trainable."""

    class LSQ(nn.Module):
        def __init__(self, bits=3):
            super().__init__()
            self.s = nn.Parameter(torch.tensor(0.2))
            self.qn, self.qp = -2 ** (bits - 1), 2 ** (bits - 1) - 1

        def forward(self, x):
            g = 1.0 / (x.numel() * self.qp) ** 0.5
            s = (self.s - self.s * g).detach() + self.s * g
            v = torch.clamp(x / s, self.qn, self.qp)
            return ((v.round() - v).detach() + v) * s

    model = LSQ()
    gm = linearize(model)
    assert entries(gm) == [("round_1", None, DETACHED)]
    x = torch.randn(64, generator=torch.Generator().manual_seed(0))
    check_hard_forward(model, gm, x)
    model(x).sum().backward()
    ref = model.s.grad.clone()
    model.s.grad = None
    gm(x).sum().backward()
    assert_bitwise(model.s.grad, ref)


def test_exported_program_straight_through_estimator():
    model = Fn(lambda x: x + (torch.round(x) - x).detach())
    x = torch.linspace(-1.3, 1.3, 8)
    gm = linearize(torch.export.export(model, (x,)))
    assert entries(gm) == [("round_1", None, DETACHED)]
    assert_bitwise(gm(x), model(x))


def test_unreached_node_is_not_called_detached():
    """A node the output does not reach at all is not a detach-only one (nothing changes for it)."""
    model = Fn(lambda x: (torch.round(x) * 2, x.detach())[1] + torch.sign(x))
    gm = linearize(model)
    assert ("sign", "sll.sign", "") in entries(gm)
    assert all(e.reason != DETACHED for e in gm.sll_report.entries)


class _FloatReads(nn.Module):
    """A rounded value read as data by ops that are not elementwise arithmetic (all float uses)."""

    def __init__(self, how):
        super().__init__()
        self.how = how
        self.w = nn.Parameter(torch.linspace(-1.0, 1.0, 12).reshape(4, 3))

    def forward(self, x):
        r = torch.round(x * 3)
        if self.how == "topk_values":
            return torch.topk(r, 2, -1).values
        if self.how == "masked_select":
            return torch.masked_select(r, x > 0)
        if self.how == "scatter_src":
            return torch.zeros(2, 6).scatter(1, torch.tensor([[0, 1, 2], [3, 4, 5]]), r)
        if self.how == "embedding":
            return torch.nn.functional.embedding(torch.tensor([0, 2]), torch.round(self.w * 3)) + x.sum()
        return torch.stft(r.flatten(), 4, return_complex=True).abs()


@pytest.mark.parametrize("how", ["topk_values", "masked_select", "scatter_src", "embedding", "stft"])
def test_ops_reading_the_value_as_data_keep_it_rewritten(how):
    """topk(...).values, the data of masked_select / scatter / embedding, stft: float uses, so the rounded
    value is rewritten and carries a gradient (a whitelist of float ops had left these hard)."""
    model = _FloatReads(how)
    gm = sll_fx.linearize_module(model, eps=0.25, verbose=False)
    assert [e.replacement for e in gm.sll_report.entries if e.op == "torch.round"] == ["sll.round"] * (
        2 if how == "embedding" else 1)
    x = torch.tensor([[0.15, 0.5, -0.2], [0.17, -0.5, 0.4]], requires_grad=True)
    out = gm(x)
    (out.abs().sum() if out.is_complex() else out.sum()).backward()
    grads = [g for g in (x.grad, model.w.grad) if g is not None]
    assert sum(float(g.abs().sum()) for g in grads) > 0
    assert torch.equal(sll_fx.export_hard(gm, verbose=False)(x), model(x))


class _TopkBothWays(nn.Module):
    def forward(self, s):
        mask = torch.zeros_like(s).scatter(-1, torch.topk(s, 2, -1).indices, 1.0)
        return (s * mask).sum(-1), s.masked_fill(~mask.bool(), -1.0)


class _UnusedConstant(nn.Module):
    def forward(self, x):
        out = torch.zeros(3)
        out[torch.tensor([0, 2])] = 1.0   # traces a tensor constant twice, one of them unused
        return torch.round(x * 3) + out


@pytest.mark.parametrize("model", [_TopkBothWays(), _UnusedConstant()], ids=["topk_both_ways", "unused_constant"])
def test_an_unpickled_copy_keeps_its_nodes_report_links(model):
    """The retrace of the pickled code may order or drop nodes differently (an attribute read where first
    used, an unused constant): each node still gets its metadata back, so calibrate and set_eps by report
    name work on the copy as on the original (they found no node)."""
    import pickle
    x = torch.tensor([[0.1, 0.5, 0.45, 0.9, 0.2, 0.3]]) if isinstance(model, _TopkBothWays) else \
        torch.tensor([0.1, 0.17, 0.5])
    gm = sll_fx.linearize_module(model, eps=0.1, verbose=False)
    pk = pickle.loads(pickle.dumps(gm))
    assert list(sll_fx.calibrate(pk, x).values()) == list(sll_fx.calibrate(gm, x).values())
    assert len(sll_fx.calibrate(gm, x)) == 1
    name = gm.sll_report.rewritten[0].node
    assert sll_fx.set_eps(pk, 0.05, where=name) and sll_fx.set_eps(gm, 0.05, where=name)
    for a, b in zip(pk(x) if isinstance(pk(x), tuple) else (pk(x),), gm(x) if isinstance(gm(x), tuple) else (gm(x),)):
        assert_bitwise(a, b)


class SwitchRouter(torch.nn.Module):
    """Top-1 routing with an expert capacity: the uncast one_hot is counted with integers."""

    def __init__(self, experts=2, capacity=300):
        super().__init__()
        self.gate = torch.nn.Linear(8, experts)
        self.experts, self.capacity = experts, capacity

    def forward(self, x):
        probs = self.gate(x).softmax(-1)
        mask = torch.nn.functional.one_hot(probs.argmax(-1), self.experts)
        priority = torch.cumsum(mask, dim=0)
        mask = mask * (priority <= self.capacity)
        return mask, (probs * mask).sum(-1)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_an_integer_one_hot_counted_with_integers_reads_the_hard_result(dtype):
    torch.manual_seed(0)
    model = SwitchRouter().to(dtype)
    x = torch.randn(1000, 8).to(dtype)
    gm = sll_fx.linearize_module(model, eps=1e-2, mode="hard", verbose=False)
    (entry,) = [e for e in gm.sll_report.entries if e.node == "one_hot"]
    # the count reads the hard int64 one-hot; the masked product is float arithmetic's (a float surrogate)
    assert entry.replacement == "sll.argmax_onehot" and "also used by x <= t (le)" in entry.reason
    for got, want in zip(gm(x), model(x)):
        assert torch.equal(got, want.to(got.dtype))  # (bf16 counts past 256 would be off)


def test_an_integer_one_hot_is_rewritten_for_its_float_uses_only():
    class Mixed(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.gate, self.expert = torch.nn.Linear(4, 4), torch.nn.Linear(4, 4)

        def forward(self, x):
            onehot = torch.nn.functional.one_hot(self.gate(x).argmax(-1), 4)
            return onehot * self.expert(x), onehot.cumsum(0) <= 1, onehot.sum(0) / x.shape[0]

    gm = sll_fx.linearize_module(Mixed(), eps=0.1, verbose=False)
    (entry,) = [e for e in gm.sll_report.entries if e.node == "one_hot"]
    assert entry.replacement == "sll.argmax_onehot" and "x <= t (le)" in entry.reason
    assert "sum" not in entry.reason  # a fraction of the batch: float arithmetic, it gets the gradient
    weighted, first, share = gm(torch.randn(6, 4))
    assert weighted.dtype == torch.float32 and first.dtype == torch.bool and share.requires_grad

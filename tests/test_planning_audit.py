"""Audit mends of the linearize pass's planning (passes/_plan.py and the modules it reads, sll_fx/dtypes.py,
sll_fx/grad_regions.py).

1. An integer use reached through arithmetic that carries the values on (``round(h).clamp(0, 3).long()``,
   ``.abs().int()``, ``.sum(-1).long()``, a blend then ``.long()``) reads the hard result: the truncation of
   a surrogate inside the band was a silent wrong answer.
2. What carries no gradient on (``rand_like(h)``, argmax indices, an integer or bool result) gives none to
   the discrete ops reading it: they stay hard with the no-gradient reason.
3. Factories with a known dtype (``ones_like(x, dtype=torch.long)``, ``torch.full(s, 3)``, ``x.new_zeros``):
   their kind is known without ``example_inputs``.
4. ``.to(idx.dtype)`` / ``.type_as(idx)`` / ``.to(idx)`` of another tensor whose dtype the graph does not tell
   is not a device move; with ``example_inputs``, ``idx.dtype`` has idx's kind.
5. A ``torch.no_grad()`` block of an ExportedProgram (``wrap_with_set_grad_enabled(False, ...)``) is left hard,
   as in the eager model.
6. Report reasons: topk's k from a forward input, ``h == h.max(dim, keepdim=True).values``, a one_hot whose
   num_classes is computed.
"""

from __future__ import annotations

import copy
import io

import pytest
import torch
import torch.nn.functional as F
from torch import fx, nn

import sll_fx
from _helpers import NO_GRADIENT, Fn, assert_bitwise
from sll_fx import dtypes

pytestmark = pytest.mark.filterwarnings("ignore:.*LeafSpec.*:FutureWarning")



class Lin(nn.Module):
    """``fn(self, sigmoid(fc(x)))``: a float input a gradient reaches."""

    def __init__(self, fn, n=4):
        super().__init__()
        self.fc = nn.Linear(n, n)
        self.fn = fn

    def forward(self, x):
        return self.fn(self, torch.sigmoid(self.fc(x)))


def linearize(model, eps=0.2, **kw):
    return sll_fx.linearize_module(model, eps, verbose=False, **kw)


def report(gm) -> dict:
    return {e.node: (e.replacement, e.reason) for e in gm.sll_report.entries}


torch.manual_seed(0)
X = torch.randn(512, 4, generator=torch.Generator().manual_seed(0))


# ----------------------------------------------------------------------------------------
# 1. integer uses through arithmetic that carries the values on
# ----------------------------------------------------------------------------------------

INT_THROUGH = {
    "round_clamp_byte": (lambda m, h: torch.round(h * 255).clamp(0, 255).byte(), "Tensor.byte"),
    "floor_clamp_long": (lambda m, h: torch.floor(h * 4).clamp(0, 3).long(), "Tensor.long"),
    "cast_sum_long": (lambda m, h: (h > 0.5).float().sum(-1).long(), "Tensor.long"),
    "round_abs_int": (lambda m, h: torch.round(h * 3).abs().int(), "Tensor.int"),
    "torch_clamp_max_long": (lambda m, h: torch.clamp(torch.round(h * 3), max=2).long(), "Tensor.long"),
    "one_hot_of_clamp": (lambda m, h: F.one_hot(torch.round(h * 3).clamp(0, 3).long(), 4), "Tensor.long"),
    "index_after_maximum": (lambda m, h: torch.arange(8.0)[torch.maximum(torch.round(h * 3), h.new_zeros(())).long()],
                            "Tensor.long"),
}


@pytest.mark.parametrize("case", INT_THROUGH)
def test_an_integer_use_after_clamp_abs_or_sum_reads_the_hard_result(case):
    fn, use = INT_THROUGH[case]
    model = Lin(fn)
    gm = linearize(model)
    assert_bitwise(gm(X), model(X))
    assert not gm.sll_report.rewritten, str(gm.sll_report)
    (entry,) = gm.sll_report.entries
    assert f"used only by {use}" in entry.reason and entry.reason.endswith("left hard"), entry.reason


def test_an_embedding_index_after_clamp_keeps_the_hard_round():
    class Codebook(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc, self.emb = nn.Linear(4, 4), nn.Embedding(4, 2)

        def forward(self, x):
            return self.emb(torch.round(torch.sigmoid(self.fc(x)) * 3).clamp(0, 3).long())

    model = Codebook()
    gm = linearize(model)
    assert_bitwise(gm(X), model(X))
    assert report(gm)["round_1"][0] is None


@pytest.mark.parametrize("spelling", [lambda r: r.clamp(0, 3).long(), lambda r: torch.clamp(r, 0, 3).long(),
                                      lambda r: r.clamp(max=3).long(), lambda r: r.abs().long()],
                         ids=["clamp", "torch_clamp", "clamp_max", "abs"])
def test_a_float_use_and_an_integer_use_after_clamp(spelling):
    """The float use gets the surrogate; the integer one, after clamp/abs, the hard rounded value."""
    class M(nn.Module):
        def forward(self, x):
            r = torch.round(x.abs() * 2)
            return r * x, spelling(r)

    x = torch.tensor([[0.74, 0.1, 0.3, 1.2]])  # 1.48 and 0.6 lie in round's bands (eps 0.2)
    model = M()
    gm = linearize(model)
    (entry,) = gm.sll_report.entries
    assert entry.replacement == "sll.round" and entry.reason.startswith("also used by Tensor.long"), entry.reason
    assert_bitwise(gm(x)[1], model(x)[1])
    assert not torch.equal(gm(x)[0], model(x)[0])  # (the float use is linearized)


def test_an_epsilon_greedy_blend_cast_to_actions_stays_hard():
    """(1 - u) * best + u * random, then .long(): the comparison's 0/1 result reaches only an integer use."""
    class Policy(nn.Module):
        def __init__(self):
            super().__init__()
            self.q = nn.Linear(4, 6)

        def forward(self, state, epsilon=0.1):
            best = torch.argmax(self.q(state), dim=-1)
            random_action = torch.randint(0, 6, best.shape)
            use_random = (torch.rand_like(best.float()) < epsilon).float()
            return ((1 - use_random) * best.float() + use_random * random_action.float()).long()

    model = Policy()
    gm = sll_fx.linearize_module(model, eps=1e-2, verbose=False)
    assert not gm.sll_report.rewritten
    assert "used only by Tensor.long" in report(gm)["lt"][1]
    state = torch.randn(4096, 4)
    torch.manual_seed(1)
    got = gm(state)
    torch.manual_seed(1)
    assert torch.equal(got, model(state))


def test_float_uses_after_clamp_are_still_linearized():
    model = Lin(lambda m, h: torch.round(h * 3).clamp(0, 3) * h + (h > 0.5).float().sum(-1, keepdim=True))
    gm = linearize(model)
    assert {e.node: e.replacement for e in gm.sll_report.entries} == {"round_1": "sll.round",
                                                                      "gt": "sll.compare(gt)"}
    assert all(not e.reason for e in gm.sll_report.entries)


# ----------------------------------------------------------------------------------------
# 2. what carries no gradient on
# ----------------------------------------------------------------------------------------

NO_GRADIENT_CASES = {
    "rand_like": (lambda m, h: h * (torch.rand_like(h) > 0.3).float(), "gt"),
    "randn_like_sign": (lambda m, h: h + torch.sign(torch.randn_like(h)), "sign"),
    "argmax_float": (lambda m, h: h + (h.argmax(-1).float() > 1.5).float().unsqueeze(-1), "gt"),
    "argsort_round": (lambda m, h: h + torch.round(h.argsort(-1).float() / 3), "round_1"),
    "topk_indices": (lambda m, h: h + torch.sign(h.topk(2, -1).indices.float() - 1).sum(-1, keepdim=True), "sign"),
    "bool_count": (lambda m, h: h + torch.round((h > 0.5).sum(-1, keepdim=True).float() / 3), "round_1"),
    "ones_like": (lambda m, h: h * (torch.ones_like(h) > 0.5).float(), "gt"),
    "new_full": (lambda m, h: h * torch.sign(h.new_full((4,), 0.5) - 0.25), "sign"),
    "shape": (lambda m, h: h * torch.sign(torch.zeros(h.shape) - 0.5), "sign"),
}


@pytest.mark.parametrize("case", NO_GRADIENT_CASES)
def test_inputs_that_carry_no_gradient_leave_the_op_hard(case):
    fn, node = NO_GRADIENT_CASES[case]
    model = Lin(fn)
    gm = linearize(model)
    assert report(gm)[node] == (None, NO_GRADIENT), str(gm.sll_report)
    torch.manual_seed(3)
    got = gm(X)
    torch.manual_seed(3)
    assert_bitwise(got, model(X))


GRADED_CASES = {
    "one_hot_argmax": lambda m, h: F.one_hot(h.argmax(-1), 4).float() * h,
    "topk_mask": lambda m, h: torch.zeros_like(h).scatter(-1, torch.topk(h, 2, -1).indices, 1.0) * h,
    "where_on_comparison": lambda m, h: torch.where(h > 0.5, 1.0, 0.0),
    "moved_comparison": lambda m, h: (h > 0.5).to(h.device).float() * 2,
    "sign_of_cast_comparison": lambda m, h: torch.sign((h > 0.5).float() - 0.25) * h,
    "zeros_like_plus_h": lambda m, h: torch.round(torch.zeros_like(h) + h * 3),
    "zeros_like_written_through_a_view": lambda m, h: (  # (taken for "no gradient reaches its input", a43)
        v := torch.zeros_like(h), v.view(-1).add_(h.reshape(-1)), (v >= 1.0).float() * 2)[-1],
    "zeros_like_written_through_an_index": lambda m, h: (
        v := torch.zeros_like(h), v[:, 0].add_(h[:, 0]), (v >= 1.0).float() * 2)[-1],
    "zeros_like_written_by_chained_in_place_calls": lambda m, h: (  # (the EMA / SpikingJelly charge, a57)
        v := torch.zeros_like(h), v.mul_(0.5).add_(h), (v >= 0.5).float() * 2)[-1],
}


@pytest.mark.parametrize("case", GRADED_CASES)
def test_patterns_and_comparisons_still_carry_their_gradient(case):
    gm = linearize(Lin(GRADED_CASES[case]))
    assert gm.sll_report.rewritten and not gm.sll_report.hard, str(gm.sll_report)


def test_an_integer_input_carries_no_gradient():
    """An integer input compared with a float buffer: nothing a gradient can reach (known from example_inputs)."""
    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.register_buffer("t", torch.tensor(1.98))

        def forward(self, x):
            return (x > self.t).float()

    x = torch.tensor([1, 2, 3])
    gm = linearize(M(), 0.1, example_inputs=(x,))
    assert report(gm)["gt"] == (None, NO_GRADIENT)
    assert_bitwise(gm(x), M()(x))


# ----------------------------------------------------------------------------------------
# 3. factories with a known dtype
# ----------------------------------------------------------------------------------------

FACTORIES = {  # (each reads x, or fx would run it at trace time and keep a constant)
    "ones_like_long": (lambda x: torch.ones_like(x, dtype=torch.long), dtypes.INT),
    "zeros_like": (lambda x: torch.zeros_like(x), dtypes.FLOAT),
    "full_like_of_long": (lambda x: torch.full_like(x.long(), 3), dtypes.INT),
    "full_int": (lambda x: torch.full(x.shape, 3), dtypes.INT),
    "full_float": (lambda x: torch.full(x.shape, 0.5), dtypes.FLOAT),
    "full_bool": (lambda x: torch.full(x.shape, True), dtypes.BOOL),
    "arange": (lambda x: torch.arange(x.shape[0]), dtypes.INT),
    "arange_size": (lambda x: torch.arange(1, x.size(0) + 1), dtypes.INT),
    "arange_float": (lambda x: torch.arange(0, x.shape[0], 0.25), dtypes.FLOAT),
    "arange_dtype": (lambda x: torch.arange(x.shape[0], dtype=torch.float64), dtypes.FLOAT),
    "new_zeros": (lambda x: x.long().new_zeros(3), dtypes.INT),
    "new_full_dtype": (lambda x: x.new_full((3,), 1, dtype=torch.bool), dtypes.BOOL),
    "tensor_ints": (lambda x: torch.tensor([[1, 2], [3, 4]], device=x.device), dtypes.INT),
    "tensor_floats": (lambda x: torch.tensor([1, 2.5], device=x.device), dtypes.FLOAT),
    "zeros": (lambda x: torch.zeros(x.shape), dtypes.FLOAT),
    "randint": (lambda x: torch.randint(0, 3, x.shape), dtypes.INT),
    "zeros_dtype_of": (lambda x: torch.zeros(3, dtype=x.long().dtype), dtypes.INT),
}


def _assert_kind_inferred(fn, kind) -> None:
    """``fn(self.w * x)``'s inferred kind is ``kind``, and the kind of what torch makes."""

    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.ones(3))

        def forward(self, x):
            return fn(self.w * x)

    gm = fx.symbolic_trace(M())
    out = next(n for n in gm.graph.nodes if n.op == "output").args[0]
    assert out.op in ("call_function", "call_method")
    assert dtypes.infer_kinds(gm)[out] == kind
    assert dtypes.dtype_kind(gm(torch.ones(3)).dtype) == kind  # (what torch makes)


@pytest.mark.parametrize("case", FACTORIES)
def test_a_factory_has_the_kind_of_its_dtype(case):
    _assert_kind_inferred(*FACTORIES[case])


#: arithmetic whose kind is the promotion of its arguments' (sll_fx/dtypes.py: _promote, a float settles it, tuples
#: and strings are no operands, keyword arguments count)
PROMOTIONS = {
    "int_plus_int": (lambda x: x.long() + 1, dtypes.INT),
    "int_plus_float": (lambda x: x.long() + 1.5, dtypes.FLOAT),
    "int_times_bool": (lambda x: x.long() * (x > 0), dtypes.INT),
    "bool_plus_bool": (lambda x: (x > 0) + (x < 1), dtypes.BOOL),
    "float_first": (lambda x: torch.add(x, x.long()), dtypes.FLOAT),
    "int_keyword_float": (lambda x: torch.add(x.long(), other=2.5), dtypes.FLOAT),
    "int_keyword_int": (lambda x: torch.add(x.long(), 2, alpha=3), dtypes.INT),
    "sum_dims_tuple": (lambda x: x.long().sum((0,)), dtypes.INT),
    "clamp_ints": (lambda x: x.long().clamp(0, 3), dtypes.INT),
    # a dtype= argument is the result's dtype; div with a rounding mode keeps integers integers (true division
    # does not): both were taken as float, so a where on such a branch got no exact integer path (audit)
    "sum_dtype_long": (lambda x: x.detach().sum(-1, dtype=torch.long), dtypes.INT),
    "cumsum_dtype_float": (lambda x: x.long().cumsum(0, dtype=torch.float64), dtypes.FLOAT),
    "div_floor_ints": (lambda x: torch.div(x.long(), 2, rounding_mode="floor"), dtypes.INT),
    "div_method_trunc_ints": (lambda x: x.long().div(2, rounding_mode="trunc"), dtypes.INT),
    "div_floor_floats": (lambda x: x.div(2, rounding_mode="floor"), dtypes.FLOAT),
    "div_true_ints": (lambda x: x.long().div(2), dtypes.FLOAT),
}


@pytest.mark.parametrize("case", PROMOTIONS)
def test_arithmetic_has_the_kind_of_its_promotion(case):
    _assert_kind_inferred(*PROMOTIONS[case])


SELECT_INT = {
    "where_div_floor": lambda x: torch.where(x > 0, x.long().div(2, rounding_mode="floor"), 0),
    "where_sum_dtype_long": lambda x: torch.where(x > 0, x.detach().unsqueeze(-1).sum(-1, dtype=torch.long), 1),
    "long_masked_fill": lambda x: x.long().masked_fill(x > 0, 5),
    "ones_like_long_masked_fill": lambda x: torch.ones_like(x, dtype=torch.long).masked_fill(x > 0, 3),
    "where_ones_like_long": lambda x: torch.where(x > 0, torch.ones_like(x, dtype=torch.long), 0),
    "where_full_int": lambda x: torch.where(x > 0, torch.full_like(x, 2, dtype=torch.int32), 0),
    "where_new_ones": lambda x: torch.where(x > 0, x.long().new_ones(x.shape), 0),
}


@pytest.mark.parametrize("case", SELECT_INT)
def test_an_integer_selection_of_a_known_dtype_is_left_hard(case):
    model = Lin(lambda m, h: SELECT_INT[case](h - 0.5))
    gm = linearize(model, 0.3)
    assert not gm.sll_report.rewritten
    assert any("integer result" in e.reason for e in gm.sll_report.entries), str(gm.sll_report)
    assert_bitwise(gm(X), model(X))


# ----------------------------------------------------------------------------------------
# 4. casts to another tensor's dtype
# ----------------------------------------------------------------------------------------

TO_OTHER = {
    "to_dtype": lambda r, idx: r.to(idx.dtype),
    "type_as": lambda r, idx: r.type_as(idx),
    "to_tensor": lambda r, idx: r.to(idx),
}


class Shift(nn.Module):
    def __init__(self, cast):
        super().__init__()
        self.l = nn.Linear(1, 1)
        self.cast = cast
        with torch.no_grad():
            self.l.weight.fill_(1.0)
            self.l.bias.zero_()

    def forward(self, h, idx):
        return self.cast(torch.round(self.l(h)), idx) + idx


@pytest.mark.parametrize("with_inputs", [False, True], ids=["graph", "example_inputs"])
@pytest.mark.parametrize("spelling", TO_OTHER)
def test_a_cast_to_an_integer_tensors_dtype_is_not_a_move(spelling, with_inputs):
    h, idx = torch.tensor([[2.46], [2.52], [2.9]]), torch.tensor([[10], [10], [10]])
    model = Shift(TO_OTHER[spelling])
    gm = linearize(model, 0.05, example_inputs=(h, idx) if with_inputs else None)
    assert not gm.sll_report.rewritten
    assert_bitwise(gm(h, idx), model(h, idx))


def test_a_cast_to_its_own_inputs_dtype_is_still_a_float_use():
    gm = linearize(Lin(lambda m, h: torch.round(h * 4).to(h.dtype) * h))
    assert [e.replacement for e in gm.sll_report.entries] == ["sll.round"]


def test_example_inputs_give_a_dtype_read_its_tensors_kind():
    class M(nn.Module):
        def forward(self, x, idx):
            return x.to(idx.dtype)

    gm = fx.symbolic_trace(M())
    getattr_node = next(n for n in gm.graph.nodes if n.op == "call_function" and n.target is getattr)
    kinds = dtypes.infer_kinds(gm, (torch.ones(2), torch.ones(2, dtype=torch.long)))
    assert kinds[getattr_node] == dtypes.INT


INT_COMPARE = {
    "to_dtype": lambda m, x: (x > m.t).to(x.dtype),
    "type_as": lambda m, x: (x > m.t).type_as(x),
    "product": lambda m, x: x * (x > m.t),
}


@pytest.mark.parametrize("case", INT_COMPARE)
def test_an_integer_input_compared_then_cast_back_with_example_inputs(case):
    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.t = nn.Parameter(torch.tensor([1.98]))

        def forward(self, x):
            return INT_COMPARE[case](self, x)

    x = torch.tensor([1, 2, 3])
    model = M()
    gm = linearize(model, 0.1, example_inputs=(x,))
    assert not gm.sll_report.rewritten
    assert_bitwise(gm(x), model(x))


# ----------------------------------------------------------------------------------------
# 5. an exported no-grad block
# ----------------------------------------------------------------------------------------

class ScaleNoGrad(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 4)

    def forward(self, x):
        h = self.lin(x)
        with torch.no_grad():
            s = torch.round(h * 4) / 4
        return h * s + torch.sign(h)


def test_an_exported_no_grad_block_is_left_hard_as_in_the_model():
    torch.manual_seed(0)
    model, x = ScaleNoGrad(), torch.randn(64, 4)
    from_model = linearize(model)
    from_program = linearize(torch.export.export(model, (x,)))
    assert {e.node: e.replacement for e in from_program.sll_report.entries} == {"sign": "sll.sign", "round_1": None}
    assert {e.node: e.replacement for e in from_model.sll_report.entries} == {"sign": "sll.sign", "round_1": None}
    assert [e.reason for e in from_program.sll_report.entries if e.node == "round_1"] == [NO_GRADIENT]
    assert_bitwise(from_program(x), from_model(x))
    assert list(sll_fx.eps_state(from_program)) == ["sign"]


class OpOnNoGradInput(nn.Module):
    """A discrete op reading the no_grad block's input itself: in the exported body, a placeholder."""

    def __init__(self, op: str):
        super().__init__()
        self.w = nn.Parameter(torch.ones(()))
        self.op = op

    def forward(self, x):
        h = x * self.w
        with torch.no_grad():
            g = {"sign": torch.sign, "round": torch.round, "gt": lambda v: (v > 0.3).float()}[self.op](h)
        return h * g


@pytest.mark.parametrize("op", ["sign", "round", "gt"])
@pytest.mark.parametrize("program", [False, True], ids=["exported_program", "its_module"])
def test_an_op_on_an_exported_no_grad_blocks_input_is_left_hard(op, program):
    """The body's placeholder required no grad in its fake value, as the op's result: the op was rewritten from an
    ExportedProgram (sign at 0.005 gave 0.0025 and a gradient 0.5 instead of 1; an observer's zero point computed
    from buffers became 127.4996 in the model's buffer) where the model's trace leaves it hard (a37)."""
    model, x = OpOnNoGradInput(op), torch.tensor([-0.02, -0.005, 0.0, 0.005, 0.02, 0.295, 0.305, 0.495, 1.505])
    ep = torch.export.export(model, (x,))
    gm = linearize(ep.module() if program else ep)
    assert [(e.rewritten, e.reason) for e in gm.sll_report.entries] == [(False, NO_GRADIENT)]
    xs, xm = x.clone().requires_grad_(), x.clone().requires_grad_()
    out, ref = gm(xs), model(xm)
    out.sum().backward(), ref.sum().backward()
    assert_bitwise(out, ref)
    assert_bitwise(xs.grad, xm.grad)


class CondBranches(nn.Module):
    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.tensor(1.0))

    def forward(self, x):
        h = x * self.w
        return h * torch.cond(h.sum() > 0, lambda t: torch.sign(t - 0.1), lambda t: torch.round(t), (h,))


@pytest.mark.parametrize("program", [False, True], ids=["exported_program", "its_module"])
def test_the_branches_of_an_exported_cond_are_left_hard_and_say_why(program):
    """torch.cond traces its branches with fake tensors when it runs: an sll op there read its real eps buffer and
    every call failed (an AssertionError of FakeTensorMode naming no node, op or fix) (a38)."""
    model, x = CondBranches(), torch.tensor([-0.5, 0.095, 0.1, 0.105, 0.2, 0.295, 0.305, 0.7])
    ep = torch.export.export(model, (x,))
    gm = linearize(ep.module() if program else ep)
    inside = [e for e in gm.sll_report.entries if e.op in ("aten.sign.default", "aten.round.default")]
    assert len(inside) == 2 and all(not e.rewritten and "inside cond's nested graph" in e.reason and "torch.where"
                                    in e.reason for e in inside), str(gm.sll_report)
    for v in (x, -x):
        assert_bitwise(gm(v), model(v))


# ----------------------------------------------------------------------------------------
# 6. report reasons
# ----------------------------------------------------------------------------------------

def test_topk_with_k_from_a_forward_input_names_the_input_and_the_fix():
    class SA(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(8, 8)

        def forward(self, x, top_k=3):
            a = self.fc(x)
            _, top_idx = torch.topk(a, top_k, dim=-1)
            mask = torch.zeros_like(a)
            mask.scatter_(-1, top_idx, 1.0)
            return a * mask

    gm = linearize(SA(), 0.1)
    reasons = report(gm)
    assert reasons["scatter_"] == (None, "top-k mask left hard: k comes from the input 'top_k', known only at run "
                                         "time: fix it when linearizing, linearize_module(model, "
                                         "concrete_args={'top_k': 3})")
    assert reasons["topk"] == (None, "index used by Tensor.scatter_ (scatter_): that top-k mask is left hard (its "
                                     "entry says why), and so is this index")
    fixed = sll_fx.linearize_module(SA(), 0.1, verbose=False, concrete_args={"top_k": 3})
    assert [e.replacement for e in fixed.sll_report.entries] == ["sll.topk_mask"]


@pytest.mark.parametrize("spelling, fix", [
    (lambda h: h == h.max(dim=-1, keepdim=True).values, "write F.one_hot(x.argmax(-1), n) (n: x's size along dim -1)"),
    (lambda h: h.amax(-1, keepdim=True) == h, "write F.one_hot(x.argmax(-1), n) (n: x's size along dim -1)"),
    (lambda h: h == torch.min(h, 0, keepdim=True)[0],
     "write F.one_hot(x.argmin(0), n).movedim(-1, 0) (n: x's size along dim 0)"),
], ids=["max_values", "amax", "min_getitem"])
def test_equality_with_the_max_is_reported_as_a_one_hot_argmax(spelling, fix):
    gm = linearize(Lin(lambda m, h: spelling(h).float() * h))
    (entry,) = gm.sll_report.entries
    assert entry.replacement is None and "is one_hot(arg" in entry.reason and fix in entry.reason, entry.reason
    plain = linearize(Lin(lambda m, h: (h == 0.5).float() * h))
    assert "has no jump" in plain.sll_report.entries[0].reason


def test_one_hot_with_a_computed_num_classes_says_it_must_be_a_literal():
    gm = linearize(Lin(lambda m, h: F.one_hot(h.argmax(-1), num_classes=h.shape[-1]).float() * h))
    reasons = report(gm)
    assert "num_classes is computed at run time" in reasons["one_hot"][1]
    assert "must be a literal int" in reasons["one_hot"][1]
    assert "that one_hot(argmax) is left hard" in reasons["argmax"][1]


# ----------------------------------------------------------------------------------------
# 7. a selection whose comparison gets no surrogate stays the hard where/masked_fill
# ----------------------------------------------------------------------------------------

class Select(nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fc, self.fn = nn.Linear(4, 4), fn
        self.register_buffer("b", torch.randn(4, generator=torch.Generator().manual_seed(3)))

    def forward(self, x):
        return self.fn(self, self.fc(x)).sum()


HARD_SELECTIONS = {
    "dropout_where": (lambda m, h: torch.where(torch.rand_like(h) < 0.8, h / 0.8, 0.0), "lt", "where"),
    "dropout_masked_fill": (lambda m, h: h.masked_fill(torch.rand_like(h) < 0.2, 0.0), "lt", "masked_fill"),
    "buffer_where": (lambda m, h: torch.where(m.b > 0, h, 0.0), "gt", "where"),
    "detached_where": (lambda m, h: torch.where(h.detach() > 0, h, -h), "gt", "where"),
}


def _grads(model, seed):
    model.zero_grad()
    torch.manual_seed(seed)
    out = model(X)
    out.backward()
    return out.detach(), model.fc.weight.grad.clone()


@pytest.mark.parametrize("exported", [False, True], ids=["module", "exported"])
@pytest.mark.parametrize("case", HARD_SELECTIONS)
def test_a_selection_whose_comparison_stays_hard_is_left_hard(case, exported):
    """The comparison gets no surrogate (no gradient reaches it), so the selection has none to read: it stays the
    model's where/masked_fill (torch.where's own gradient to its branches), reported with the comparison's reason."""
    fn, cmp, select = HARD_SELECTIONS[case]
    model = Select(fn)
    source = torch.export.export(model, (X,)) if exported else model
    gm = linearize(source)
    found = report(gm)
    assert found[cmp][0] is None, found
    assert found[select][0] is None and found[select][1].startswith(f"left hard: its comparison '{cmp}' stays hard ("), \
        found
    assert found[cmp][1] in found[select][1]
    torch.manual_seed(0)
    copy = Select(fn)
    copy.load_state_dict(model.state_dict())
    if not exported:  # (the same draws, the same values and gradients as the model)
        got, got_grad = _grads(gm, 7)
        want, want_grad = _grads(copy, 7)
        assert_bitwise(got, want)
        assert_bitwise(got_grad, want_grad)
    torch.manual_seed(7)
    got = sll_fx.export_hard(gm)(X)
    torch.manual_seed(7)
    assert_bitwise(got, model(X))


# ----------------------------------------------------------------------------------------
# 8. an integer use reached through nodes shared with float uses: a copy of them reads the hard result
# ----------------------------------------------------------------------------------------

EPS = 0.2


class Both(nn.Module):
    """``fn(self, h)`` -> (a float loss, an integer output); ``h`` is ``x`` itself (a gradient to the input)."""

    def __init__(self, fn):
        super().__init__()
        self.fn = fn
        self.emb = nn.Embedding(4, 2)

    def forward(self, x):
        return self.fn(self, x)


def _quant(h):
    return torch.round(h / 0.25).clamp(-8, 7) * 0.25


def _ste(h):
    return (h * 4 + (torch.round(h * 4) - h * 4)).clamp(-8, 7)


ROW = [[0.0, 0.25, 1.0, -1.0], [0.7, -0.5, 2.0, 0.05]]  # out of every band below but at [0][0]
SHARED = {
    # fn -> (loss, integer output); the node; x[0][0] (in its band); d loss / d x[0][0] (1 / (2 eps) per jump)
    "quant_long": (lambda m, h: (((q := _quant(h)) * 2).sum(), q.long()), "round_1", 0.8875, 2 / (2 * EPS)),
    "quant_int8": (lambda m, h: (((q := _quant(h)) * 2).sum(), q.to(torch.int8)), "round_1", 0.8875, 2 / (2 * EPS)),
    "ste_clamp_int8": (lambda m, h: ((q := _ste(h)).sum(), q.to(torch.int8)), "round_1", 0.6375, 4 / (2 * EPS)),
    "embedding_and_feature": (lambda m, h: (m.emb((r := torch.round(h * 3).clamp(0, 3)).long()).sum() + (r * 0.5).sum(),
                                            r.long()), "round_1", 0.5, 0.5 * 3 / (2 * EPS)),
    "gate_sum": (lambda m, h: ((g := (h > 0.1).float().sum()) * 0.01, g.long()), "gt", 0.15, 0.01 / (2 * EPS)),
}


def _check_shared(model, gm, x, node):
    entry = report(gm)[node]
    assert entry[0] is not None, entry
    assert "through a copy of" in entry[1] and "used only by" not in entry[1] and "view twice" not in entry[1], entry
    want = model(x)
    xg = x.clone().requires_grad_(True)
    loss, ints = gm(xg)
    assert_bitwise(ints, want[1], "integer output")  # the hard result's, not the surrogate's truncation
    loss.backward()
    assert_bitwise(sll_fx.export_hard(gm)(x), want, "export_hard")
    assert_bitwise(linearize(model, mode="hard")(x), want, "mode=hard")
    return xg.grad


@pytest.mark.parametrize("case", SHARED)
def test_an_integer_use_through_nodes_shared_with_float_uses_reads_a_hard_copy(case):
    """round(h / s).clamp(-8, 7) * s used as a float and by .long(): the float uses read the surrogate (the
    gradient passes, at the analytic in-band slope), the integer use a copy of clamp/mul on the hard result."""
    fn, node, value, slope = SHARED[case]
    model = Both(fn)
    x = torch.tensor(ROW)
    x[0, 0] = value
    gm = linearize(model)
    grad = _check_shared(model, gm, x, node)
    torch.testing.assert_close(grad[0, 0], torch.tensor(slope))


def test_a_one_hot_argmax_shared_by_a_loss_and_an_integer_count():
    """F.one_hot(h.argmax(-1), n).float() into a float loss, and .sum(0).long(): the count is the hard one's."""
    model = Both(lambda m, h: (((mk := F.one_hot(h.argmax(-1), 4).float()).mean(0) * h.softmax(-1).mean(0)).sum(),
                              mk.sum(0).long()))
    gm = linearize(model, eps=0.5)
    grad = _check_shared(model, gm, X, "one_hot")
    assert grad.abs().sum() > 0
    (entry,) = [e for e in gm.sll_report.entries if e.node == "one_hot"]
    assert entry.replacement == "sll.argmax_onehot"


def test_a_gate_with_a_float_use_is_not_reported_as_used_only_by_its_integer_use():
    model = Both(lambda m, h: ((g := (h > 0.1).float().sum()) * 0.01, g.long()))
    reason = report(linearize(model))["gt"][1]
    assert reason.startswith("also used as bool by Tensor.long") and "through a copy of Tensor.sum" in reason, reason


def test_a_chain_written_in_place_keeps_the_node_hard_and_says_why():
    """q = round(h).clamp(...); q.mul_(s) writes into the shared chain: no copy for q.long() (it would miss the
    write); the node stays hard, and the reason names the in-place write."""
    def fn(m, h):
        c = torch.round(h * 3).clamp(-4, 4)
        c.mul_(0.5)
        return (c * 2).sum(), c.long()

    model = Both(fn)
    gm = linearize(model)
    replacement, reason = report(gm)["round_1"]
    assert replacement is None and "written in place" in reason and "view twice" not in reason, reason
    x = torch.tensor(ROW)
    assert_bitwise(gm(x), model(x))


class _WhereReadAsInteger(nn.Module):
    def __init__(self, spelling):
        super().__init__()
        self.lin, self.spelling = nn.Linear(4, 4), spelling

    def forward(self, x):
        h = self.lin(x) * 3
        if self.spelling == "where":
            w = torch.where(h > 0, h * 3, h - 1)
        else:
            w = h.masked_fill(h < 0.5, 0.25)
        return w.sum(), w.long()


@pytest.mark.parametrize("spelling", ["where", "masked_fill"])
def test_a_selection_read_as_an_integer_is_left_hard_with_its_branches_gradient(spelling):
    """where(h > 0, h * 3, h - 1).long(): a blend inside the band would change the integer; the selection stays
    the original (its branches keep torch.where's gradient), and its comparison says why it stays hard."""
    torch.manual_seed(0)
    model = _WhereReadAsInteger(spelling)
    gm = sll_fx.linearize_module(model, eps=0.5, verbose=False)
    entries = {e.node: e for e in gm.sll_report.entries}
    select = entries[spelling]
    assert select.replacement is None and "read as an integer" in select.reason
    (compare,) = [e for n, e in entries.items() if n != spelling]
    assert compare.replacement is None and compare.reason.startswith("the mask of ")
    x = X.clone().requires_grad_()
    got, want = gm(x), model(x)
    assert_bitwise(got[1], want[1], "integer use")
    assert_bitwise(got[0], want[0], "float use")
    g_got = torch.autograd.grad(got[0], x)[0]
    g_want = torch.autograd.grad(model(x)[0], x)[0]
    assert_bitwise(g_got, g_want, "gradient through the branches")


class _SelectionIntoHardRound(nn.Module):
    """A selection whose one user is an elementwise op that stays hard (its result is read as an integer)."""

    def __init__(self, spelling):
        super().__init__()
        self.spelling = spelling

    def forward(self, h):
        if self.spelling == "where":
            y = torch.where(h < 0, h * 3, h)
        else:
            y = h.masked_fill(h > 0, 2.5)
        return torch.round(y).long(), (y * 2).sum()


@pytest.mark.parametrize("spelling", ["where", "masked_fill"])
def test_a_selection_read_by_an_op_left_hard_is_not_blended(spelling):
    """``torch.round(h.masked_fill(h > 0, 2.5)).long()``: the round stays hard (its only use is an integer one), so
    the selection's result reaches it as a hard op's input, an integer use further on.  Selections are planned before
    elementwise ops: the round's decision is now foreseen, and the selection stays hard; before, it was blended and
    the integer differed from the model's inside the band (h = 0.01: 1 against 2)."""
    model = _SelectionIntoHardRound(spelling)
    gm = sll_fx.linearize_module(model, eps=0.1, verbose=False)
    entries = {e.node: e for e in gm.sll_report.entries}
    assert entries[spelling].replacement is None and entries["round_1"].replacement is None
    h = torch.tensor([-0.5, -0.05, -0.01, 0.0, 0.01, 0.05, 0.5], requires_grad=True)
    got, want = gm(h), model(h)
    assert_bitwise(got[0], want[0], "integer use")
    assert_bitwise(got[1], want[1], "float use")


_INTO_A_DISCRETE_OP = {  # an in-place discrete op stays hard: it would round a surrogate
    "masked_fill_round_": lambda h: (h.masked_fill(h > 0, 2.5).round_().long(),),
    "where_round_": lambda h: (torch.where(h > 0, h * 3, h - 1).round_().long(),),
}


@pytest.mark.parametrize("case", _INTO_A_DISCRETE_OP)
def test_an_in_place_discrete_op_reading_a_selection_keeps_it_hard(case):
    """``h.masked_fill(h > 0, 2.5).round_().long()``: the in-place round stays hard (an in-place spelling), so the
    selection it reads stays hard too; the integer is the model's inside the band (audit: 1 instead of 0)."""
    model = Fn(_INTO_A_DISCRETE_OP[case])
    gm = linearize(model, 0.05)
    h = torch.tensor([-1.3, -0.02, 0.01, 0.04, 0.3, 0.96, 1.52, 2.49], requires_grad=True)
    outs, wants = gm(h), model(h)
    for o, w in zip(outs, wants):
        if not o.is_floating_point():
            assert_bitwise(o, w, "integer use")


def test_a_selection_reached_only_through_detach_says_so():
    """``torch.round(h.masked_fill(h > 0, 2.5)).detach() + h``: the selection stays hard because its value reaches
    the output only through ``.detach()``; its reason says that, not that it is read as an integer (audit)."""
    model = Fn(lambda h: torch.round(h.masked_fill(h > 0, 2.5)).detach() + h)
    entries = {e.node: e for e in linearize(model, 0.05).sll_report.entries}
    assert entries["masked_fill"].replacement is None
    assert entries["masked_fill"].reason.startswith("only used through .detach()")


class _QuantLIF(nn.Module):
    """A spiking neuron over 4 steps with a quantized membrane and a spike count logged as an integer."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.tensor(1.5))

    def forward(self, x):
        v, out, count = torch.zeros_like(x), 0, 0
        for _ in range(4):
            v = torch.round((0.9 * v + x * self.w) * 4) / 4
            spike = (v > 1.1).float()  # (off the membrane's grid of 0.25: v > 1.0 ties for v == 1.0, left hard)
            v = v * (1 - spike)
            out = out + spike
            count = count + spike.long().sum()
        return out, count


def test_a_spiking_neuron_with_an_integer_spike_count_keeps_its_gradient():
    """Every round and comparison is rewritten: the count's ``.long()`` reads each comparison's hard value, and
    no chain of discrete ops is left hard for it (a rule tried this session, leaving a discrete op hard when the
    op reading it keeps its hard node for integer uses, took this neuron's gradient to exactly zero; audit)."""
    torch.manual_seed(0)
    model = _QuantLIF()
    gm = linearize(model, 0.05)
    assert all(e.replacement for e in gm.sll_report.entries) and len(gm.sll_report.entries) == 8
    x = (torch.rand(16, 8) * 0.8).requires_grad_()
    gx, gw = torch.autograd.grad(gm(x)[0].sum(), (x, model.w))
    assert gx.abs().sum() > 0 and gw.abs() > 0


class HalfStepGate(nn.Module):
    """A rounded value with a float use and a bool use: the bool use reads a hard copy."""

    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(16, 32), nn.Linear(32, 10)

    def forward(self, x):
        h = torch.round(self.fc1(x) / 0.5) * 0.5
        return self.fc2(h * (h > 1.0).float())


class ArgmaxGate(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.o = nn.Linear(16, 6), nn.Linear(6, 10)

    def forward(self, x):
        logits = self.a(x)
        p = F.one_hot(logits.argmax(-1), 6).float()
        r = F.relu(p * logits)
        return self.o(r * (r > 0).float() + p)


def _discrete_calls(gm) -> list[str]:
    names = []
    for n in gm.graph.nodes:
        name = n.target if n.op == "call_method" else getattr(n.target, "__name__", "")
        if name in ("round", "one_hot", "argmax"):
            names.append(name)
    return names


def _copied(gm, how: str):
    """``gm`` itself, or a copy of it made by ``how``."""
    if how == "pickle":
        buffer = io.BytesIO()
        torch.save(gm, buffer)
        buffer.seek(0)
        return torch.load(buffer, weights_only=False)
    return copy.deepcopy(gm) if how == "deepcopy" else gm


@pytest.mark.parametrize("how", ["itself", "pickle", "deepcopy"])
@pytest.mark.parametrize("cls", [HalfStepGate, ArgmaxGate])
def test_export_hard_computes_each_discrete_op_once(cls, how):
    """The hard copy linearize_module keeps for a use left hard (the original op, the chain after it) came back
    from export_hard next to the restored op: the hard model computed round (and one_hot, argmax) twice, and
    linearizing it again reported one more entry (a39); an unpickled gm had lost the marks, and did so still."""
    torch.manual_seed(0)
    model, x = cls(), torch.randn(8, 16)
    gm = _copied(sll_fx.linearize_module(model, eps=1e-2, verbose=False), how)
    hard = sll_fx.export_hard(gm, verbose=False)
    calls = _discrete_calls(hard)
    assert calls and len(calls) == len(set(calls)), calls
    assert_bitwise(hard(x), model(x))
    again = sll_fx.linearize_module(hard, eps=1e-2, verbose=False)
    assert [(e.node, e.rewritten) for e in again.sll_report.entries] == \
        [(e.node, e.rewritten) for e in gm.sll_report.entries]


class CompareAgainAfterAWrite(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(8, 6)

    def forward(self, x):
        h = self.fc(x)
        c = h > 0.1
        y = h * c.float()      # (rewritten; its integer use reads the kept hard original)
        n = c.long()
        h.add_(0.3)
        return y, n, h > 0.1   # (the model's own comparison after the write: not the same value)


class DrawsAroundATopkMask(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(8, 6)

    def forward(self, x):
        h = self.fc(x)
        d = F.dropout(h, 0.5, True)
        m = torch.zeros_like(d).scatter(-1, d.topk(2, -1).indices, 1.0)
        return h * m, m.bool().sum(-1), d, F.dropout(h, 0.5, True)


class ReluAgainAfterAWrite(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(8, 6)

    def forward(self, x):
        z = self.fc(x)
        h = F.relu(z)
        m = torch.zeros_like(h).scatter(-1, h.topk(2, -1).indices, 1.0)
        count = m.bool().sum(-1)
        z.sub_(1.0)
        return h * m, count, F.relu(z)


@pytest.mark.parametrize("cls", [CompareAgainAfterAWrite, DrawsAroundATopkMask, ReluAgainAfterAWrite])
def test_export_hard_merges_only_the_copies_it_made(cls):
    """f3a2484 merged any call equal by name to a marked one: the model's own comparison after h.add_(0.3) (8 of 96
    differ), a second independent dropout (d2 == d), relu(z) after z.sub_(1) (|diff| 1.0) (a43)."""
    torch.manual_seed(1)
    model, x = cls(), torch.randn(16, 8) * 3
    gm = sll_fx.linearize_module(model, eps=1e-2, verbose=False)
    hard = sll_fx.export_hard(gm, verbose=False)
    torch.manual_seed(2)
    with torch.no_grad():
        ref = model(x)
    torch.manual_seed(2)
    with torch.no_grad():
        got = hard(x)
    for r, g in zip(ref, got):
        assert_bitwise(g, r)


class RoundWrittenInPlace(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(8, 6)

    def forward(self, x):
        r = torch.round(self.fc(x))
        r.add_(1.0)  # (linearize_module gives the write a copy of the sll op's result; export_hard drops it)
        return r


@pytest.mark.parametrize("how", ["itself", "pickle", "deepcopy"])
def test_export_hard_drops_the_copies_of_in_place_writes_also_of_a_copied_gm(how):
    torch.manual_seed(0)
    model, x = RoundWrittenInPlace(), torch.randn(8, 8)
    gm = sll_fx.linearize_module(model, eps=1e-2, verbose=False)
    assert [n for n in gm.graph.nodes if n.target == "clone"]
    hard = sll_fx.export_hard(_copied(gm, how), verbose=False)
    assert not [n for n in hard.graph.nodes if n.target == "clone"], hard.code
    assert_bitwise(hard(x), model(x))


class UsersCloneBesideAnIsolatedWrite(nn.Module):
    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.tensor(1.0))

    def forward(self, x):
        h = x * self.w
        s = torch.sign(h)
        s.add_(1)              # (linearize_module gives the write a copy of the sll op's result)
        u = h.clone()          # (the user's own copy, written in place: without it h doubles)
        u.mul_(2)
        g = (h.T > 0.5).float().T  # (h.T: the retrace of a pickle makes its node at its first use, reordering)
        return s + u + h + g


@pytest.mark.parametrize("how", ["itself", "pickle", "deepcopy"])
def test_export_hard_of_a_copied_gm_keeps_the_users_own_clone(how):
    """Where the retrace of a pickle reorders the nodes, the marks were matched by name, and the clones' names had
    swapped: export_hard dropped the user's clone, not the copy linearize_module made (|diff| 3.0; a46)."""
    model, x = UsersCloneBesideAnIsolatedWrite(), torch.linspace(-3, 3, 6000).reshape(1000, 6)
    gm = _copied(sll_fx.linearize_module(model, eps=1e-3, verbose=False), how)
    assert_bitwise(sll_fx.export_hard(gm, verbose=False)(x), model(x))


class ChainWrittenThroughAView(nn.Module):
    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.tensor(1.0))

    def forward(self, x):
        h = x * self.w
        h = h + (h > 1.0).float()  # (rewritten; the comparison below reads its hard value through a copy of h)
        h[:, 0].zero_()            # (the chain written through a view: a copy of it would miss the write)
        s = (h <= 0.0).float()     # (left hard: 0 on whole ranges)
        return h * s + 0.001 * s.sum()


def test_a_chain_written_through_a_view_is_not_copied():
    """The hard copy of a chain for a use left hard missed a write through a view of the chain (h[:, 0].zero_()):
    outside every band gm gave s = 0 where the model has 1, all 768 outputs off by 0.256 (a45's fuzzer, rerun)."""
    torch.manual_seed(0)
    model, x = ChainWrittenThroughAView(), torch.randn(64, 6) * 3
    gm = sll_fx.linearize_module(model, eps=1e-6, verbose=False)
    with torch.no_grad():
        assert_bitwise(gm(x), model(x))


class HeavisideBesideACeil(nn.Module):
    """A heaviside with a float use and a use left hard (a ceil on its jump: relu(h) * s is 0 on h <= 0.1)."""

    def __init__(self, spelled="function", float_use=True):
        super().__init__()
        self.fc = nn.Linear(8, 8)
        self.spelled, self.float_use = spelled, float_use

    def forward(self, x):
        h = self.fc(x)
        v = torch.tensor(0.0)
        s = (h - 0.1).heaviside(v) if self.spelled == "method" else torch.heaviside(h - 0.1, v)
        return (s if self.float_use else h) + torch.ceil(F.relu(h) * s)


def _calls(gm, name: str) -> int:
    """The nodes of ``gm`` calling an op whose name holds ``name``."""
    return sum(name in (n.target if n.op == "call_method" else str(n.target)) for n in gm.graph.nodes
               if n.op in ("call_function", "call_method"))


def _weight_grad(model, out):
    model.zero_grad()
    out.sum().backward()
    return model.fc.weight.grad.clone(), model.fc.bias.grad.clone()


@pytest.mark.parametrize("spelled", ["function", "method", "exported"])
def test_a_hard_copy_of_a_heaviside_passes_the_surrogate_gradient(spelled):
    """A heaviside rewritten for its float use kept a hard torch.heaviside for its use left hard (the ceil); the
    gradient reached it through the ceil (0, but autograd calls its backward) and backward failed with torch's
    "derivative for aten::heaviside is not implemented", naming no node (a54), as the model does.  The copy reads a
    detached input now: fc gets the surrogate's gradient; export_hard is the model, bit for bit, without the detach."""
    torch.manual_seed(0)
    model, x, eps = HeavisideBesideACeil("method" if spelled == "method" else "function"), torch.randn(256, 8), 0.05
    source = torch.export.export(model, (x,)) if spelled == "exported" else model
    gm = sll_fx.linearize_module(source, eps, verbose=False)
    assert [(e.node, e.rewritten) for e in gm.sll_report.entries] == [("heaviside", True), ("ceil", False)]
    got = _weight_grad(model, gm(x))
    h = model.fc(x).detach().requires_grad_()
    g, = torch.autograd.grad(sll_fx.heaviside(h - 0.1, eps, values=0.0).sum(), h)  # (the ceil's path: 0)
    assert torch.equal(g != 0, (h - 0.1).abs() < eps) and (g != 0).sum() > 0
    torch.testing.assert_close(got, (g.T @ x, g.sum(0)))
    hard = sll_fx.export_hard(gm, verbose=False)
    traced = source.graph_module if spelled == "exported" else fx.symbolic_trace(model)
    assert _calls(hard, "detach") == _calls(traced, "detach") and _calls(hard, "heaviside") == 1, hard.code
    with torch.no_grad():
        assert_bitwise(hard(x), model(x))


def test_a_heaviside_left_hard_as_its_uses_pass_no_gradient_reads_a_detached_input():
    """``ceil(relu(h) * heaviside(h - 0.1, 0)) + h``: every use of the heaviside left hard, it stays hard, and a
    backward through the ceil failed on it ("derivative for aten::heaviside is not implemented", a54).  It reads a
    detached input now: fc's gradient is the one of the ``+ h`` alone.  Switched off by the config, it stays as the
    model has it."""
    torch.manual_seed(0)
    model, x = HeavisideBesideACeil(float_use=False), torch.randn(64, 8)
    gm = sll_fx.linearize_module(model, 0.05, verbose=False)
    assert [(e.node, e.rewritten) for e in gm.sll_report.entries] == [("heaviside", False), ("ceil", False)]
    got = _weight_grad(model, gm(x))
    torch.testing.assert_close(got, (torch.ones(64, 8).T @ x, torch.full((8,), 64.0)))
    hard = sll_fx.export_hard(gm, verbose=False)
    assert _calls(gm, "detach") == 1 and _calls(hard, "detach") == 0
    assert_bitwise(hard(x), model(x))
    off = sll_fx.linearize_module(model, sll_fx.SLLConfig(eps=0.05, disabled=("heaviside",)), verbose=False)
    assert _calls(off, "detach") == 0

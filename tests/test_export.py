"""``torch.export`` and sll_fx, both ways.

1. A linearized model exports with ``torch.export.export``: every sll op stays one node
   (``torch.ops.sll.<op>.<overload>``), the exported program computes what the linearized
   model computes, gradients included; ``export_hard`` strips the ``ExportedProgram`` (or its
   ``module()``, or its ``graph_module``) back to aten ops, bit for bit the original model,
   and the result exports again.  ``export_hard(linearize_module(model))`` exports too.
2. ``linearize_module`` takes an ``ExportedProgram``, ``ep.module()`` or ``ep.graph_module``:
   the rule table matches the aten spellings (``aten.sign.default``, ``aten.gt.Scalar`` +
   ``aten.to.dtype`` / ``aten._to_copy``, ``aten.where.ScalarOther``, ``aten.one_hot(aten.argmax)``,
   ``aten.scatter.value(aten.zeros_like, aten.topk)``, ...), rewrites what the graph pass
   rewrites on the model itself, with the same values, sharing the model's parameters.

One model per rule kind (elementwise ops, comparisons cast to float, where/masked_fill,
one_hot(argmax), top-k masks), each with every spelling that matters, both modes.
"""

from __future__ import annotations

import operator
import os

import pytest
import torch
import torch.nn.functional as F
from torch import fx, nn

import sll_fx
from sll_fx import rules
from sll_fx.diagnostics import is_soft_mask
from _helpers import assert_bitwise, sll_nodes

pytestmark = pytest.mark.filterwarnings("ignore:.*LeafSpec.*:FutureWarning")  # torch's own, deep-copying a pytree spec

THIS_FILE = os.path.basename(__file__)
INF, NAN = float("inf"), float("nan")
EPS = 0.04  # round(decimals=1) allows 0.05
MODES = ("linear", "hard")


# ----------------------------------------------------------------------------------------
# models: an elementwise affine layer (parameters to train) in front of the discrete ops
# ----------------------------------------------------------------------------------------

class Affine(nn.Module):
    """``x * scale + shift``, starting as the identity: the inputs below reach the ops unchanged."""

    def __init__(self, n: int = 4):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(n))
        self.shift = nn.Parameter(torch.zeros(n))

    def forward(self, x):
        return x * self.scale + self.shift


class Elementwise(nn.Module):
    def __init__(self):
        super().__init__()
        self.pre = Affine()
        self.register_buffer("values", torch.tensor(0.5))

    def forward(self, x):
        y = self.pre(x)
        return (torch.sign(y), torch.round(y), y.round(decimals=1), torch.floor(y), y.ceil(), torch.trunc(y),
                torch.fix(y), torch.heaviside(y, self.values))


class Comparisons(nn.Module):
    def __init__(self):
        super().__init__()
        self.pre = Affine()
        self.register_buffer("t", torch.tensor(0.2))

    def forward(self, x):
        y = self.pre(x)
        return ((y > 0.2).float(), (y <= self.t).to(y.dtype), (y >= x).type_as(y), (0.5 < y).float(),
                torch.greater(y, self.t).double().float(), torch.lt(y, -0.5).half().float(), y * (y < 1.5))


class Selections(nn.Module):
    def __init__(self):
        super().__init__()
        self.pre = Affine()
        self.register_buffer("t", torch.tensor(0.2))

    def forward(self, x):
        y = self.pre(x)
        return (torch.where(y > 0, y, -y), torch.where(y < self.t, 1.0, y), torch.where(y >= 0.5, y, 0.0),
                torch.where(y > 0, 1.0, 0.0), y.masked_fill(y < 0.1, 2.0), y.masked_fill(y > self.t, self.t))


class OneHot(nn.Module):
    def __init__(self):
        super().__init__()
        self.pre = Affine()

    def forward(self, x):
        y = self.pre(x)
        return F.one_hot(y.argmax(-1), 4), F.one_hot(torch.argmin(y, dim=1), 4).float()


class TopK(nn.Module):
    def __init__(self):
        super().__init__()
        self.pre = Affine()

    def forward(self, x):
        y = self.pre(x)
        mask = torch.zeros_like(y).scatter(-1, torch.topk(y, 2, -1).indices, 1.0)
        low = torch.zeros_like(y)
        low.scatter_(1, torch.topk(y, 1, dim=1, largest=False).indices, 1.0)
        return mask, low * y


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.pre = Affine()

    def forward(self, x):
        return torch.round(self.pre(x))


class Nested(nn.Module):
    def __init__(self):
        super().__init__()
        self.block = Block()

    def forward(self, x):
        return self.block(x) + (x > 0).float() + torch.sign(x)


MODELS = {"elementwise": Elementwise, "compare": Comparisons, "select": Selections, "onehot": OneHot, "topk": TopK}

#: discrete-op boundaries, round's ties, signed zeros, specials, then ordinary values (no ties in a row,
#: so that argmax/top-k do not depend on how a backend breaks them)
X_BOUNDARIES = torch.tensor([[0.5, -0.5, 1.5, 2.5], [0.0, 0.2, 1.0, -1.0], [0.1, -0.05, 0.25, 0.35]])
X_SPECIAL = torch.tensor([[0.0, -0.0, 0.2, 1.0], [INF, -INF, NAN, 0.1]])
X_RANDOM = torch.randn(5, 4, generator=torch.Generator().manual_seed(0)) * 2
X = torch.cat([X_BOUNDARIES, X_SPECIAL, X_RANDOM])
X_FINITE = torch.nan_to_num(X, nan=0.3, posinf=3.0, neginf=-3.0)  # the shape export fixed


# ----------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------

def sll_ops(gm: fx.GraphModule) -> list[str]:
    return sorted(rules.sll_op_name(n.target) for n in sll_nodes(gm))


def linearize(model, mode: str = "linear", eps: float = EPS):
    return sll_fx.linearize_module(model, eps, mode=mode, verbose=False)


def export(module, x=X):
    return torch.export.export(module, (x,))


def lifted_inputs(ep, *inputs) -> tuple:
    """The arguments of ``ep.graph_module``: the lifted parameters, buffers and constants, then the inputs."""
    from torch.export.graph_signature import InputKind

    args, user = [], iter(inputs)
    for spec in ep.graph_signature.input_specs:
        if spec.kind == InputKind.USER_INPUT:
            args.append(next(user))
        elif spec.target in ep.state_dict:
            args.append(ep.state_dict[spec.target])
        else:
            args.append(ep.constants[spec.target])
    return tuple(args)


def floats(out) -> torch.Tensor:
    """A scalar of every floating output, for a backward pass: a weighted sum (a one-hot row sums to a
    constant, so its plain sum has no gradient)."""
    return sum((o * torch.linspace(1, 2, o.numel(), dtype=o.dtype).reshape(o.shape)).sum()
               for o in out if o.is_floating_point() and o.requires_grad)


def grads(module, x) -> tuple:
    x = x.clone().requires_grad_(True)
    params = [p for p in module.parameters() if p.requires_grad]
    return torch.autograd.grad(floats(module(x)), [x, *params])


# ----------------------------------------------------------------------------------------
# 1. exporting a linearized model; stripping the exported program
# ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("case", MODELS)
def test_linearized_model_exports_with_sll_ops_as_single_nodes(case, mode):
    model = MODELS[case]()
    gm = linearize(model, mode)
    ep = export(gm)
    nodes = sll_nodes(ep.graph_module)
    assert nodes and all(isinstance(n.target, torch._ops.OpOverload) for n in nodes)
    assert sll_ops(ep.graph_module) == sll_ops(gm)  # one exported node per sll node: nothing decomposed
    assert_bitwise(ep.module()(X), gm(X), case)
    # the exported program trains as the linearized model does
    for g_ep, g_gm in zip(grads(ep.module(), X_FINITE), grads(gm, X_FINITE)):
        assert_bitwise(g_ep, g_gm, f"{case} gradient")
    assert any(g.abs().sum() > 0 for g in grads(ep.module(), X_FINITE)[1:])


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("case", MODELS)
def test_export_hard_strips_an_exported_program_to_aten_ops(case, mode):
    model = MODELS[case]()
    ep = export(linearize(model, mode))
    code = ep.graph_module.code
    hard = sll_fx.export_hard(ep, verbose=False)
    assert ep.graph_module.code == code  # the program is not changed
    assert not sll_nodes(hard)
    entries = hard.sll_report.entries
    # (a hard-mode selection's soft mask goes with its selection: no entry of its own)
    assert len(entries) == len([n for n in sll_nodes(ep.graph_module) if not is_soft_mask(n)])
    assert all(e.restored.startswith("aten.") for e in entries), [e.restored for e in entries]
    assert all(isinstance(n.target, torch._ops.OpOverload) or n.target is operator.getitem
               for n in hard.graph.nodes if n.op == "call_function"), hard.code
    assert not [n for n, _ in hard.named_buffers() if "_sll_eps" in n]
    assert_bitwise(hard(X), model(X), case)
    again = export(hard)  # and the stripped module exports again
    assert not sll_nodes(again.graph_module)
    assert_bitwise(again.module()(X), model(X), f"{case} re-exported")


@pytest.mark.parametrize("form", ["module", "graph_module"])
def test_export_hard_takes_the_programs_module_and_graph_module(form):
    model = Comparisons()
    ep = export(linearize(model))
    if form == "module":
        hard = sll_fx.export_hard(ep.module(), verbose=False)
        assert_bitwise(hard(X), model(X))
    else:
        hard = sll_fx.export_hard(ep.graph_module, verbose=False)
        assert_bitwise(hard(*lifted_inputs(ep, X)), model(X))
    assert not sll_nodes(hard)


@pytest.mark.parametrize("case", MODELS)
def test_export_of_export_hard(case):
    model = MODELS[case]()
    hard = sll_fx.export_hard(linearize(model), verbose=False)
    ep = export(hard)
    assert not sll_nodes(ep.graph_module)
    assert_bitwise(ep.module()(X), model(X), case)


@pytest.mark.parametrize("case", MODELS)
def test_a_decomposed_linearized_program_is_refused_not_stripped_to_its_surrogate(case):
    """run_decompositions() inlines the sll ops into their surrogate arithmetic: export_hard used to find
    no sll op there and return the surrogate as the hard model. Now both passes refuse it, by name."""
    model = MODELS[case]()
    gm = linearize(model)
    ep = export(gm).run_decompositions()  # (round(decimals=d)'s scale is made by an op: no lifted constant)
    assert not sll_nodes(ep.graph_module)
    torch.testing.assert_close(ep.module()(X), gm(X), equal_nan=True)  # the surrogate, inlined
    code = ep.graph_module.code
    for call in (lambda: sll_fx.export_hard(ep, verbose=False),
                 lambda: sll_fx.linearize_module(ep, 0.05, verbose=False)):
        with pytest.raises(sll_fx.RewriteError, match=r"node '\w+' .* is part of sll op '\w+' \(sll\.\w+") as err:
            call()
        assert "run_decompositions" in str(err.value) and "Fix:" in str(err.value)
    assert ep.graph_module.code == code
    # the way round it: strip first, then decompose; that program passes both ways again
    hard = torch.export.export(sll_fx.export_hard(export(linearize(model)), verbose=False), (X,))
    hard = hard.run_decompositions()
    assert_bitwise(hard.module()(X), model(X), case)
    assert_bitwise(sll_fx.export_hard(hard, verbose=False)(X), model(X), case)
    assert sll_fx.linearize_module(hard, 0.05, verbose=False).sll_report.entries  # (found; decomposed
    # one_hot is reported hard: test_aten_spellings_left_hard_are_reported)


def test_explicit_sll_op_overloads_strip_to_aten():
    """A module calling the op overloads itself (what export writes) strips to aten ops, also
    an explicit threshold (no cast after it): an aten comparison and an ``aten._to_copy``."""
    class Explicit(nn.Module):
        def forward(self, x):
            return torch.ops.sll.round.default(x, eps=0.1) + sll_fx.threshold(x, 0.2, 0.1) * 2

    ep = export(Explicit())
    hard = sll_fx.export_hard(ep, verbose=False)
    assert [e.restored for e in hard.sll_report.entries] == \
        ["aten.round.default", "aten.gt.Scalar + aten._to_copy.default(dtype=torch.float32)"]
    assert_bitwise(hard(X), torch.round(X) + (X > 0.2).float() * 2)


# ----------------------------------------------------------------------------------------
# 2. linearizing an exported program (aten-level graphs)
# ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("form", ["program", "module", "graph_module"])
@pytest.mark.parametrize("case", MODELS)
def test_linearize_module_takes_an_exported_program(case, form):
    model = MODELS[case]()
    ep = export(model)
    code = ep.graph_module.code
    ref = linearize(model)
    source = {"program": ep, "module": ep.module(), "graph_module": ep.graph_module}[form]
    gm = linearize(source)
    assert ep.graph_module.code == code
    assert gm.sll_report.counts == ref.sll_report.counts, str(gm.sll_report)
    assert sorted(str(e.replacement) for e in gm.sll_report.entries) == \
        sorted(str(e.replacement) for e in ref.sll_report.entries)
    # the matched ops keep their aten spelling (aten.scatter_.value is read as Tensor.scatter_)
    assert all(e.op.startswith("aten.") or e.op == "Tensor.scatter_" for e in gm.sll_report.rewritten)
    assert sll_ops(gm) == sll_ops(ref)
    args = lifted_inputs(ep, X) if form == "graph_module" else (X,)
    assert_bitwise(gm(*args), ref(X), case)
    hard = sll_fx.export_hard(gm, verbose=False)
    assert_bitwise(hard(*args), model(X), f"{case} stripped")
    assert_bitwise(torch.export.export(gm, args).module()(*args), ref(X), f"{case} exported again")


@pytest.mark.parametrize("mode", MODES)
def test_linearized_program_shares_and_trains_the_models_parameters(mode):
    model = Comparisons()
    ep = export(model)
    gm = linearize(ep, mode, eps=0.3)
    ref = linearize(model, mode, eps=0.3)
    assert gm.pre.scale is model.pre.scale and gm.get_buffer("t") is model.t
    assert [k for k in gm.state_dict()] == [k for k in ep.module().state_dict()]
    for g, r in zip(grads(gm, X_FINITE), grads(ref, X_FINITE)):
        assert_bitwise(g, r, "gradient")
    opt = torch.optim.SGD(gm.parameters(), lr=0.1)
    before = model.pre.shift.detach().clone()
    floats(gm(X_FINITE)).backward()
    opt.step()
    assert not torch.equal(model.pre.shift, before)  # training the result trains the model


def test_report_keeps_exports_sources_and_submodule_names():
    model = Nested()
    cfg = sll_fx.SLLConfig(eps=0.1, module_eps={"block": 0.25}, module_mode={Block: "hard"})
    gm = sll_fx.linearize_module(export(model, X_FINITE), cfg, verbose=False)
    by_op = {e.op: e for e in gm.sll_report.entries}
    assert set(by_op) == {"aten.round.default", "aten.gt.Scalar", "aten.sign.default"}
    assert all(e.source.startswith(THIS_FILE + ":") for e in by_op.values())
    assert by_op["aten.round.default"].module == "block" and by_op["aten.round.default"].eps == 0.25
    assert by_op["aten.sign.default"].module == "" and by_op["aten.sign.default"].eps == 0.1
    modes = {rules.sll_op_name(n.target): n.kwargs.get("mode", "linear") for n in sll_nodes(gm)}
    assert modes == {"round": "hard", "compare": "linear", "sign": "linear"}  # module_mode by type
    assert sll_fx.set_eps(gm, 0.2, where="block") == [n.name for n in sll_nodes(gm)
                                                     if rules.sll_op_name(n.target) == "round"]


def test_decomposed_program_casts_are_aten_to_copy():
    """After ``run_decompositions`` a cast is ``aten._to_copy.default(b, dtype=...)``: still a float cast."""
    class Gate(nn.Module):
        def forward(self, x):
            return (x > 0.2).float() * x + torch.round(x)

    ep = export(Gate()).run_decompositions()
    assert any(n.target is torch.ops.aten._to_copy.default for n in ep.graph.nodes)
    gm = linearize(ep)
    assert gm.sll_report.counts == {"found": 2, "rewritten": 2, "hard": 0}, str(gm.sll_report)
    assert_bitwise(gm(X), linearize(Gate())(X))
    assert_bitwise(sll_fx.export_hard(gm, verbose=False)(X), Gate()(X))


def test_aten_spellings_left_hard_are_reported():
    class Odd(nn.Module):
        def forward(self, x):
            y = x.clone()
            y.view(-1).round_()              # in place, on a view: left hard (a72: on y itself, rewritten)
            return y + (x == 0.5).float() + torch.logical_not(x > 0)   # == has no jump; a bool used as a bool

    gm = linearize(export(Odd()))
    hard = {e.op: e.reason for e in gm.sll_report.hard}
    assert set(hard) == {"aten.round_.default", "aten.eq.Scalar", "aten.gt.Scalar"}, str(gm.sll_report)
    assert not gm.sll_report.rewritten
    assert_bitwise(gm(X), Odd()(X))


@pytest.mark.parametrize("form", ["program", "module", "graph_module"])
def test_integer_inputs_of_an_exported_program_stay_hard(form):
    """Dtypes come from export's own input values: an integer input is recognised without example_inputs."""
    class Mixed(nn.Module):
        def forward(self, x, k):
            return torch.round(k) + (k > 2).float() + torch.sign(x), x * (x > 0.5)

    x, k = X_FINITE[:, 0].contiguous(), torch.arange(X.shape[0])
    ep = torch.export.export(Mixed(), (x, k))
    source = {"program": ep, "module": ep.module(), "graph_module": ep.graph_module}[form]
    gm = linearize(source)
    assert {e.op: e.rewritten for e in gm.sll_report.entries} == \
        {"aten.round.default": False, "aten.gt.Scalar": True, "aten.sign.default": True}, str(gm.sll_report)
    assert [e.reason for e in gm.sll_report.hard] == \
        ["input 'k' has an integer dtype: no gradient to give, left hard"] * 2
    args = lifted_inputs(ep, x, k) if form == "graph_module" else (x, k)
    assert_bitwise(sll_fx.export_hard(gm, verbose=False)(*args), Mixed()(x, k))


def test_size_comparisons_of_a_data_dependent_shape_are_not_tensor_comparisons():
    """``x[x > 0]`` makes export compare symbolic sizes (``u0 >= 0``: a SymBool): no rule matches those."""
    class Index(nn.Module):
        def forward(self, x):
            return x[x > 0].sum() + torch.sign(x)

    gm = linearize(export(Index()))
    assert {e.op for e in gm.sll_report.entries} == {"aten.gt.Scalar", "aten.sign.default"}, str(gm.sll_report)
    assert_bitwise(sll_fx.export_hard(gm, verbose=False)(X), Index()(X))


# ----------------------------------------------------------------------------------------
# the rule table at aten level
# ----------------------------------------------------------------------------------------

aten = torch.ops.aten

ATEN_SPELLINGS = [
    (aten.sign.default, "sign"), (aten.round.default, "round"), (aten.round.decimals, "round"),
    (aten.floor.default, "floor"), (aten.ceil.default, "ceil"), (aten.trunc.default, "trunc"),
    (aten.fix.default, "trunc"), (aten.heaviside.default, "heaviside"),
    (aten.gt.Scalar, "gt"), (aten.gt.Tensor, "gt"), (aten.greater.Scalar, "gt"), (aten.ge.Scalar, "ge"),
    (aten.greater_equal.Tensor, "ge"), (aten.lt.Tensor, "lt"), (aten.less.Scalar, "lt"), (aten.le.Scalar, "le"),
    (aten.less_equal.Tensor, "le"), (aten.where.self, "where"), (aten.where.ScalarSelf, "where"),
    (aten.where.ScalarOther, "where"), (aten.where.Scalar, "where"), (aten.masked_fill.Scalar, "masked_fill"),
    (aten.masked_fill.Tensor, "masked_fill"), (aten.one_hot.default, "argmax_onehot"),
    (aten.scatter.value, "topk_mask"),
]


@pytest.mark.parametrize("target,kind", ATEN_SPELLINGS, ids=[str(t) for t, _ in ATEN_SPELLINGS])
def test_rule_table_matches_aten_spellings(target, kind):
    g = fx.Graph()
    x = g.placeholder("x")
    required = [a for a in target._schema.arguments if not a.has_default_value() and not a.kwarg_only]
    node = g.call_function(target, (x,) * len(required))  # (every operand: a call without one is not matched)
    assert rules.match(node).kind == kind


def test_operand_values_read_aten_keywords():
    g = fx.Graph()
    c, a, b = g.placeholder("c"), g.placeholder("a"), g.placeholder("b")
    where = g.call_function(aten.where.self, (c,), {"self": a, "other": b})
    assert rules.match(where).operand_values(where) == (c, a, b)
    gt = g.call_function(aten.gt.Scalar, (), {"self": a, "other": 0.5})
    assert rules.match(gt).operand_values(gt) == (a, 0.5)
    fill = g.call_function(aten.masked_fill.Scalar, (a,), {"mask": c, "value": 1.0})
    assert rules.match(fill).operand_values(fill) == (a, c, 1.0)


@pytest.mark.parametrize("rule", [r for r in rules.RULES if r.pattern in ("elementwise", "cast")],
                         ids=lambda r: r.kind)
def test_emitted_aten_ops_are_the_rules_own_spellings(rule):
    """``aten_hard`` picks among the rule's functions (it asserts so) for every argument shape."""
    g = fx.Graph()
    x, t = g.placeholder("x"), g.placeholder("t")
    args = (x, t) if len(rule.operands) == 2 else (x,)
    choices = [rule.aten_hard(args, {})]
    if rule.pattern == "cast":
        choices.append(rule.aten_hard((x, 0.5), {}))
    if rule.keywords:
        choices.append(rule.aten_hard(args, {"decimals": 2}))
    assert all(c in rule.functions for c in choices)
    assert len(set(choices)) == len(choices)


def test_sll_nodes_of_an_exported_graph_carry_no_stale_fake_values():
    """An elementwise node is rewritten in place: the hard op's ``val``/``tensor_meta`` must go with it."""
    class M(nn.Module):
        def forward(self, x):
            return torch.sign(x) + torch.round(x) + (x > 0.5).float()

    ep = torch.export.export(M(), (torch.randn(4),))
    gm = sll_fx.linearize_module(ep, 0.1, verbose=False)
    nodes = sll_nodes(gm)
    assert len(nodes) == 3
    assert not any(key in n.meta for n in nodes for key in ("val", "tensor_meta", "example_value"))
    x = torch.randn(4)
    assert_bitwise(sll_fx.export_hard(gm, verbose=False)(x), M()(x))


# ----------------------------------------------------------------------------------------
# submodules export drops: ep.module() keeps only those holding parameters or buffers
# ----------------------------------------------------------------------------------------

class Quantizer(nn.Module):
    """No parameter, no buffer: ``ep.module()`` has no submodule of this name; export's nodes still name it."""

    def forward(self, h):
        return torch.round(h * 3) / 3


class Encoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 4)
        self.q = Quantizer()

    def forward(self, x):
        return self.q(self.lin(x))


class WithQuantizer(nn.Module):
    def __init__(self):
        super().__init__()
        self.enc = Encoder()

    def forward(self, x):
        return torch.sign(self.enc(x))


def test_a_program_whose_quantizer_module_export_dropped_calibrates_and_takes_set_eps():
    # (set_eps, load_eps, calibrate and eps="auto"'s first call took the program for "the nested part 'enc.q'")
    torch.manual_seed(0)
    model, x = WithQuantizer(), torch.randn(32, 4)
    ep = torch.export.export(model, (x,))
    direct, from_ep = (sll_fx.linearize_module(m, verbose=False) for m in (model, ep))
    assert torch.equal(from_ep(x), direct(x))  # both calibrated on their first call, to the same eps
    assert sll_fx.eps_state(from_ep) == sll_fx.eps_state(direct)
    assert sll_fx.set_eps(from_ep, 0.1) == sll_fx.set_eps(direct, 0.1) == ["round_1", "sign"]
    assert sll_fx.set_eps(from_ep, 0.2, where="enc.q") == ["round_1"]
    assert sll_fx.load_eps(from_ep, {"round_1": 0.15, "sign": 0.3}) == ["round_1", "sign"]
    assert sll_fx.eps_state(from_ep) == pytest.approx({"round_1": 0.15, "sign": 0.3})


def test_config_names_a_submodule_export_dropped():
    # (SLLConfig refused "enc.q": "no submodule named 'enc.q'", though the report names the node's module so)
    torch.manual_seed(0)
    model, x = WithQuantizer(), torch.randn(32, 4)
    ep = torch.export.export(model, (x,))
    for config in (sll_fx.SLLConfig(eps=0.05, module_eps={"enc.q": 0.2}),
                   sll_fx.SLLConfig(eps=0.05, module_mode={"enc.q": "hard"}),
                   sll_fx.SLLConfig(eps=0.05, skip=("enc.q",))):
        direct, from_ep = (sll_fx.linearize_module(m, config, verbose=False) for m in (model, ep))
        assert [(e.module, e.eps, e.mode) for e in from_ep.sll_report.rewritten] == \
            [(e.module, e.eps, e.mode) for e in direct.sll_report.rewritten]
        assert torch.equal(from_ep(x), direct(x))
    with pytest.raises(ValueError, match="no submodule named 'enc.p'"):
        sll_fx.linearize_module(ep, sll_fx.SLLConfig(eps=0.05, module_eps={"enc.p": 0.2}), verbose=False)


class GateAndMask(nn.Module):
    """One comparison cast to a float gate and taken as a where mask: torch.export gives the select the cast
    (``aten.to.dtype`` of the float sll comparison returns it)."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 6)

    def forward(self, x):
        h = self.fc(x)
        c = h > 0.1
        return h * c.float(), torch.where(c, h, -h)


class WrittenGateAndMask(GateAndMask):
    """The gate written in place: the select's mask is a cast of the copy linearize_module gives the write."""

    def forward(self, x):
        h = self.fc(x)
        c = h > 0.1
        g = c.float()
        g.mul_(2)
        return g, torch.where(c, h, -h)


@pytest.mark.parametrize("cls", [GateAndMask, WrittenGateAndMask])
def test_export_hard_of_a_program_whose_select_reads_the_float_cast_of_its_mask(cls):
    model = cls()
    ep = export(linearize(model))
    select = next(n for n in sll_nodes(ep.graph_module) if rules.sll_op_name(n.target) == "select")
    assert select.args[0].target == torch.ops.aten.to.dtype  # (the case: export's alias of the float comparison)
    hard = sll_fx.export_hard(ep, verbose=False)
    assert not sll_nodes(hard)
    assert_bitwise(hard(X), model(X))
    assert_bitwise(export(hard).module()(X), model(X), "re-exported")


def test_a_select_whose_mask_is_no_comparison_is_refused_with_a_fix():
    gm = linearize(GateAndMask())
    select = next(n for n in sll_nodes(gm) if rules.sll_op_name(n.target) == "select")
    select.update_arg(0, next(n for n in gm.graph.nodes if n.name == "mul"))
    gm.recompile()
    with pytest.raises(sll_fx.RewriteError, match=r"(?s)takes its mask from 'mul'.*Fix: "):
        sll_fx.export_hard(gm, verbose=False)

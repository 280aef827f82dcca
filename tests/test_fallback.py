"""The tracing fallback: models that ``torch.fx`` cannot trace as a whole.

A block with ``if x.sum() > 0:`` is kept opaque (listed with the fx error) while the other
blocks, and the traceable children of the opaque block, are rewritten; an
``autograd.Function`` is never traced through, so its own backward survives; the model's
own forward failing keeps the model opaque and its children rewritten; ``concrete_args``
reaches fx.  Throughout: the user's model is not modified, parameters are shared,
``state_dict()`` keys are the model's, and ``export_hard`` is bit-identical with no sll op
left in any graph.
"""

from __future__ import annotations

import copy
import pickle
import re

import pytest
import torch
from torch import fx, nn

import sll_fx
from sll_fx.annealing import EPS_PREFIX
from sll_fx.opaque import is_opaque
from sll_fx.ops import is_sll_target
from sll_fx.report import OpaqueModule, RewriteReport, StripReport
from sll_fx.tracer import trace, trace_with_fallback
from _helpers import assert_bitwise, assert_unchanged, snapshot

CONTROL_FLOW = "symbolically traced variables cannot be used as inputs to control flow"
INF, NAN = float("inf"), float("nan")


# ----------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------

def graphs(module: nn.Module) -> dict[str, fx.GraphModule]:
    return {p: m for p, m in module.named_modules(remove_duplicate=False) if isinstance(m, fx.GraphModule)}


def sll_count(gm: fx.GraphModule) -> int:
    return sum(n.op == "call_function" and is_sll_target(n.target) for n in gm.graph.nodes)


def inputs(seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    special = torch.tensor([[0.0, -0.0, 0.5, -0.5], [INF, -INF, NAN, 1.5], [0.2, 0.1, -2.5, 1e30]])
    return [torch.randn(8, 4, generator=g), torch.randn(8, 4, generator=g) * 3, torch.randn(8, 4, generator=g) - 2,
            special]


# ----------------------------------------------------------------------------------------
# models (module level, so that results pickle)
# ----------------------------------------------------------------------------------------

class STE(torch.autograd.Function):
    """Straight-through sign with a recognisable backward: 2 * grad."""

    @staticmethod
    def forward(ctx, x):
        return torch.sign(x)

    @staticmethod
    def backward(ctx, grad):
        return 2 * grad


class IdentityFn(torch.autograd.Function):
    """Leaves no node at all when fx traces through it: only the static scan can see it."""

    @staticmethod
    def forward(ctx, x):
        return x

    @staticmethod
    def backward(ctx, grad):
        return 3 * grad


def ste_helper(x):
    return STE.apply(x)  # called from a helper: found while tracing (Function.apply on the stack)


class Quant(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 4)

    def forward(self, x):
        return torch.round(self.lin(x) * 2) / 2


class Good(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 4)
        self.register_buffer("t", torch.tensor(0.2))

    def forward(self, x):
        h = self.lin(x)
        return torch.sign(h) * 0.5 + (h > self.t).float() + h


class Bad(nn.Module):
    """Python control flow on a tensor value; its child ``inner`` is traceable and discrete."""

    def __init__(self):
        super().__init__()
        self.inner = Quant()
        self.thr = nn.Parameter(torch.tensor(0.1))
        self.register_buffer("scratch", torch.ones(4), persistent=False)

    def forward(self, x):
        h = self.inner(x) + self.scratch
        if h.sum() > 0:
            return (h > self.thr).float() + h
        return torch.sign(h) + h


class SteBlock(nn.Module):
    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.linspace(0.5, 2.0, 4))

    def forward(self, x):
        return STE.apply(x * self.w)


class Model(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.block1 = Good()
        self.register_buffer("scale", torch.tensor(1.5))
        self.block2 = Bad()
        self.unused = nn.Linear(4, 2)
        self.ste = SteBlock()
        self.last = nn.Parameter(torch.tensor(0.75))

    def forward(self, x):
        h = self.block1(x) * self.scale
        h = self.block2(h)
        return torch.floor(self.ste(h) + h) * self.last


class Nested(nn.Module):
    """Opaque inside opaque: ``outer`` branches, so does ``outer.bad``; ``outer.bad.inner`` is rewritten."""

    def __init__(self):
        super().__init__()
        self.outer = BadOuter()
        self.head = Quant()

    def forward(self, x):
        return self.head(self.outer(x))


class BadOuter(nn.Module):
    def __init__(self):
        super().__init__()
        self.bad = Bad()
        self.layers = nn.ModuleList([Good(), Quant()])

    def forward(self, x):
        for layer in self.layers:
            x = layer(x)
        return self.bad(x) if x.mean() > -100 else x


class RootControlFlow(nn.Module):
    """The model's own forward branches: the model itself is opaque, its children are rewritten."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(1)
        self.pre = Good()
        self.blocks = nn.ModuleList([Quant(), Quant()])
        self.act = nn.ReLU()

    def forward(self, x):
        h = self.pre(x)
        if h.sum() > 0:
            h = self.blocks[0](h)
        return self.act(self.blocks[1](h))


class Flag(nn.Module):
    def __init__(self):
        super().__init__()
        self.q = Quant()

    def forward(self, x, flag):
        if flag:
            return self.q(x) + torch.trunc(x)
        return x


class SteNet(nn.Module):
    """``fn_name`` picks how the Function is reached: directly, via a helper, or the identity one."""

    def __init__(self, fn_name: str):
        super().__init__()
        self.w = nn.Parameter(torch.linspace(0.5, 2.0, 4))
        self.how = fn_name
        self.block = {"direct": DirectBlock, "helper": SteHelperBlock, "identity": IdentityBlock}[fn_name]()

    def forward(self, x):
        return self.block(x * self.w) + torch.round(x)


class DirectBlock(nn.Module):
    def forward(self, x):
        return STE.apply(x)


class SteHelperBlock(nn.Module):
    def forward(self, x):
        return ste_helper(x)


class IdentityBlock(nn.Module):
    def forward(self, x):
        return IdentityFn.apply(x)


class ReadsChildAttr(nn.Module):
    """An opaque module that reads an attribute of a child: that child stays the user's class."""

    def __init__(self):
        super().__init__()
        self.q = Quant()
        self.q.gain = 3.0
        self.other = Quant()

    def forward(self, x):
        if x.sum() > 0:
            return self.q(x) * self.q.gain + self.other(x)
        return self.other(x)


class ExplicitInOpaque(nn.Module):
    def forward(self, x):
        if x.sum() > 0:
            return sll_fx.sign(x, 0.1)
        return x


class Unregistered(nn.Module):
    """Calls a module kept in a plain list (not a registered submodule): the caller goes opaque."""

    def __init__(self):
        super().__init__()
        self.helpers = [nn.Linear(4, 4)]
        self.q = Quant()

    def forward(self, x):
        return self.q(self.helpers[0](x))


class WithUnregistered(nn.Module):
    def __init__(self):
        super().__init__()
        self.block = Unregistered()
        self.good = Good()

    def forward(self, x):
        return self.good(self.block(x))


# ----------------------------------------------------------------------------------------
# the bad block is opaque; everything else is rewritten
# ----------------------------------------------------------------------------------------

def test_control_flow_block_is_opaque_and_other_blocks_are_rewritten():
    model = Model()
    gm = sll_fx.linearize_module(model, eps=0.05, verbose=False)
    rep = gm.sll_report
    assert isinstance(rep, RewriteReport)
    assert rep.opaque == [
        OpaqueModule("block2", "Bad", rep.opaque[0].reason),
        OpaqueModule("ste", "SteBlock", "autograd.Function STE: kept opaque so its backward survives"),
    ]
    assert CONTROL_FLOW in rep.opaque[0].reason
    # block1 (sign, >), the top-level floor, and block2's traceable child (round)
    found = sorted((e.module, e.op, e.replacement) for e in rep.entries)
    assert found == [("", "torch.floor", "sll.floor"), ("block1", "torch.sign", "sll.sign"),
                     ("block1", "x > t", "sll.compare(gt)"), ("block2.inner", "torch.round", "sll.round")]
    assert rep.counts == {"found": 4, "rewritten": 4, "hard": 0}
    # the top graph calls the opaque blocks as leaves, and the private copy of block2 calls a rewritten graph
    called = {n.target for n in gm.graph.nodes if n.op == "call_module"}
    assert {"block2", "ste"} <= called
    assert is_opaque(gm.block2) and type(gm.block2) is Bad and gm.block2 is not model.block2
    assert isinstance(gm.block2.inner, fx.GraphModule) and sll_count(gm.block2.inner) == 1
    assert sll_count(gm) == 3
    # it runs, and equals the model away from the bands (mode="hard": equal everywhere)
    hard_mode = sll_fx.linearize_module(model, eps=0.05, mode="hard", verbose=False)
    with torch.no_grad():
        for x in inputs():
            assert_bitwise(hard_mode(x), model(x))


def test_report_lists_opaque_modules_in_a_second_table(capsys):
    model = Model()
    gm = sll_fx.linearize_module(model, eps=0.05, verbose=True)
    out = capsys.readouterr().out
    text = str(gm.sll_report)
    assert text in out
    assert "opaque (not traced): 2 module(s)" in text
    assert "2 module(s) kept opaque" in text.splitlines()[0]
    table = text.split("opaque (not traced)")[1]
    for header in ("module", "type", "reason"):
        assert header in table
    assert "block2" in table and "Bad" in table and CONTROL_FLOW in table
    assert "ste" in table and "autograd.Function STE: kept opaque so its backward survives" in table
    # a model that traces has no opaque table, and the report text is what it always was
    plain = sll_fx.linearize_module(Good(), verbose=False)
    assert plain.sll_report.opaque == [] and "opaque" not in str(plain.sll_report)


def test_nested_opaque_modules_and_module_lists():
    model = Nested()
    gm = sll_fx.linearize_module(model, eps=0.05, verbose=False)
    rep = gm.sll_report
    assert [(o.path, o.type) for o in rep.opaque] == [("outer", "BadOuter"), ("outer.bad", "Bad")]
    assert {e.module for e in rep.entries} == {"head", "outer.layers.0", "outer.layers.1", "outer.bad.inner"}
    assert all(e.rewritten for e in rep.entries)
    g = graphs(gm)
    assert {p for p in g} == {"", "outer.layers.0", "outer.layers.1", "outer.bad.inner"}
    assert type(gm.outer.layers) is nn.ModuleList and gm.outer.layers is not model.outer.layers
    hard = sll_fx.export_hard(gm, verbose=False)
    with torch.no_grad():
        for x in inputs(1):
            assert_bitwise(hard(x), model(x))


class SteRoot(nn.Module):
    """The model's own forward calls an autograd.Function next to a ``torch.round`` (the STE article's style)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.l1, self.q = nn.Linear(4, 8), nn.Linear(8, 8)

    def forward(self, x):
        return torch.round(self.q(STE.apply(self.l1(x))))


class IntRoot(nn.Module):
    def __init__(self):
        super().__init__()
        self.q = Quant()

    def forward(self, x):
        m = (x > 0.3).float()
        return self.q(x * m), int(m.sum())


@pytest.mark.parametrize("make, said", [
    (SteRoot, ["SteRoot itself cannot be traced", "autograd.Function STE", "0 node(s) rewritten",
               "Fix: call STE.apply from a child module"]),
    (IntRoot, ["IntRoot itself cannot be traced", "TypeError: int()", "node(s) rewritten, in its traced children",
               "Fix: move what torch.fx cannot trace"]),
    (RootControlFlow, ["RootControlFlow itself cannot be traced", "4 node(s) rewritten", "into a child module"])],
    ids=["autograd_function", "int", "control_flow"])
def test_a_model_whose_own_forward_is_kept_opaque_warns(make, said):
    """The model's own forward kept opaque left its discrete ops hard (a71: the round after an STE Function passed
    every layer before it a zero gradient) under a report reading "0 discrete node(s) found", with no warning: now an
    OpaqueModelWarning names the model, the reason, the count rewritten in its children and the fix."""
    with pytest.warns(sll_fx.OpaqueModelWarning) as caught:
        sll_fx.linearize_module(make(), eps=0.05, verbose=False)
    message = str(next(w.message for w in caught if w.category is sll_fx.OpaqueModelWarning))
    assert all(s in message for s in said), message


class BlockRoot(nn.Module):
    @sll_fx.linearize(eps=0.1)
    def forward(self, x):
        return torch.round(x)


@pytest.mark.parametrize("make, opaque", [(lambda: SteNet("direct"), ["block"]), (BlockRoot, [""])],
                         ids=["opaque_child", "root_block"])
def test_an_opaque_child_or_a_root_block_does_not_warn(make, opaque):
    """A child kept opaque is listed in the report, the model's own forward traced; a model whose forward enters an
    ``sll_fx.linearize`` block runs its ops linearized by the block: no OpaqueModelWarning for either."""
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error", sll_fx.OpaqueModelWarning)
        gm = sll_fx.linearize_module(make(), eps=0.05, verbose=False)
    assert [o.path for o in gm.sll_report.opaque] == opaque


def test_root_forward_fails_model_is_opaque_and_children_rewritten():
    model = RootControlFlow()
    before = snapshot(model)
    gm = sll_fx.linearize_module(model, eps=0.05, verbose=False)
    assert type(gm) is RootControlFlow and gm is not model and is_opaque(gm)
    rep = gm.sll_report
    assert [(o.path, o.type) for o in rep.opaque] == [("", "RootControlFlow")]
    assert CONTROL_FLOW in rep.opaque[0].reason and "(model)" in str(rep)
    assert {e.module for e in rep.entries} == {"pre", "blocks.0", "blocks.1"}
    assert set(graphs(gm)) == {"pre", "blocks.0", "blocks.1"}
    assert gm.act is model.act  # torch.nn leaves are shared, never traced
    assert list(gm.state_dict()) == list(model.state_dict())
    assert all(a is b for a, b in zip(gm.parameters(), model.parameters()))
    hard = sll_fx.export_hard(gm, verbose=False)
    assert type(hard) is RootControlFlow and isinstance(hard.sll_report, StripReport)
    assert hard.sll_report.counts == {"stripped": 4, "remaining": 0}
    assert all(sll_count(g) == 0 for g in graphs(hard).values())
    assert all(sll_count(g) > 0 for g in graphs(gm).values())  # the linearized result is untouched
    with torch.no_grad():
        for x in inputs(2):
            assert_bitwise(hard(x), model(x))
    assert_unchanged(model, before)


def test_child_of_opaque_module_whose_attribute_is_read_stays_opaque():
    model = ReadsChildAttr()
    gm = sll_fx.linearize_module(model, eps=0.05, verbose=False)
    rep = gm.sll_report
    assert [(o.path, o.type) for o in rep.opaque] == [("", "ReadsChildAttr"), ("q", "Quant")]
    assert ".gain" in rep.opaque[1].reason
    assert type(gm.q) is Quant and isinstance(gm.other, fx.GraphModule)
    hard = sll_fx.export_hard(gm, verbose=False)
    with torch.no_grad():
        for x in (torch.ones(2, 4), -torch.ones(2, 4), *inputs(3)):
            assert_bitwise(hard(x), model(x))


def test_unregistered_submodule_makes_its_caller_opaque():
    model = WithUnregistered()
    gm = sll_fx.linearize_module(model, eps=0.05, verbose=False)
    rep = gm.sll_report
    assert [(o.path, o.type) for o in rep.opaque] == [("block", "Unregistered")]
    assert {e.module for e in rep.entries} == {"good", "block.q"}
    hard = sll_fx.export_hard(gm, verbose=False)
    x = inputs()[0]
    assert_bitwise(hard(x), model(x))


# ----------------------------------------------------------------------------------------
# autograd.Function: kept opaque, its own backward used
# ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("how,factor", [("direct", 2.0), ("helper", 2.0), ("identity", 3.0)])
def test_autograd_function_is_opaque_and_its_backward_survives(how, factor):
    model = SteNet(how)
    gm = sll_fx.linearize_module(model, eps=0.1, verbose=False)
    fn = "IdentityFn" if how == "identity" else "STE"
    assert [(o.path, o.reason) for o in gm.sll_report.opaque] == [
        ("block", f"autograd.Function {fn}: kept opaque so its backward survives")]
    assert [e.op for e in gm.sll_report.entries] == ["torch.round"]  # nothing traced out of the Function
    assert any(n.op == "call_module" and n.target == "block" for n in gm.graph.nodes)

    x = torch.tensor([[0.3, -1.2, 0.05, 2.0], [1.0, -0.4, -2.0, 0.7]])
    gm(x).sum().backward()
    # d/dw of Fn(x * w): the Function's backward (factor * grad) times x
    torch.testing.assert_close(model.w.grad, factor * x.sum(0))
    ref_grad = model.w.grad.clone()
    model.w.grad = None
    model(x).sum().backward()  # the model's own eager gradient through the same Function
    torch.testing.assert_close(ref_grad, model.w.grad)


def test_strict_trace_refuses_to_trace_through_autograd_function():
    for how in ("direct", "helper", "identity"):
        with pytest.raises(sll_fx.TraceError) as info:
            trace(SteNet(how))
        assert info.value.module_path == "block"
        assert "autograd.Function" in str(info.value) and "backward" in str(info.value)
        assert info.value.reason.endswith("kept opaque so its backward survives")
    result, opaque = trace_with_fallback(SteNet("direct"))
    assert isinstance(result, fx.GraphModule) and [o.path for o in opaque] == ["block"]


def test_an_autograd_function_of_the_caller_is_not_the_models():
    """linearize_module called inside a Function's forward (the caller's frames hold an apply frame): the model,
    which calls none, is traced and rewritten, not kept opaque."""
    class Plain(nn.Module):
        def forward(self, x):
            return torch.round(x) + torch.sign(x)

    made = {}

    class Builder(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            made["gm"] = sll_fx.linearize_module(Plain(), eps=0.1, verbose=False)
            return x.clone()

        @staticmethod
        def backward(ctx, g):
            return g

    Builder.apply(torch.ones(2))
    report = made["gm"].sll_report
    assert report.opaque == [] and [e.replacement for e in report.entries] == ["sll.round", "sll.sign"]


class CkptBlock(nn.Module):
    def __init__(self):
        super().__init__()
        self.l1, self.l2 = nn.Linear(4, 16), nn.Linear(16, 4)

    def forward(self, x):
        h = self.l1(x)
        return self.l2(torch.round(h * 2) / 2 + torch.tanh(h))


def _checkpointed(module, x, reentrant):
    from torch.utils.checkpoint import checkpoint
    return checkpoint(module, x, use_reentrant=reentrant)


class CkptMid(nn.Module):
    """Calls ``checkpoint`` through a helper function."""

    def __init__(self, reentrant: bool):
        super().__init__()
        self.reentrant, self.inner = reentrant, CkptBlock()

    def forward(self, x):
        return _checkpointed(self.inner, x, self.reentrant) * 2


class Checkpointed(nn.Module):
    """``checkpoint(self.block, x)`` in the model's own forward, or (``deep``) in a submodule's, through a helper."""

    def __init__(self, reentrant: bool, deep: bool):
        super().__init__()
        self.reentrant, self.deep = reentrant, deep
        self.block, self.head, self.mid = CkptBlock(), nn.Linear(4, 1), CkptMid(reentrant)

    def forward(self, x):
        if self.deep:
            return self.head(self.block(x) + self.mid(x))
        return self.head(_checkpointed(self.block, x, self.reentrant))  # (mid: unused)


@pytest.mark.filterwarnings("ignore:None of the inputs have requires_grad")  # (torch's, the reentrant trace)
@pytest.mark.parametrize("reentrant", [False, True])
def test_a_checkpoint_in_a_forward_keeps_that_module_opaque_and_its_child_rewritten(reentrant):
    """fx would trace through ``torch.utils.checkpoint.checkpoint`` and keep every activation of the checkpointed
    block (non-reentrant), or blame the leaf it calls (reentrant): the module whose forward calls it is kept
    opaque instead, so the checkpoint runs as written, and the checkpointed block is still rewritten."""
    model = Checkpointed(reentrant, deep=False)
    gm = sll_fx.linearize_module(model, eps=0.1, verbose=False)
    reason = "calls torch.utils.checkpoint: kept opaque so its activations are recomputed in the backward"
    assert [(o.path, o.reason) for o in gm.sll_report.opaque] == [("", reason), ("mid", reason)]  # (mid unused)
    assert [(e.module, e.replacement) for e in gm.sll_report.entries] == [("block", "sll.round"), ("mid.inner", "sll.round")]
    x = torch.randn(8, 4, requires_grad=True)
    saved = []

    def pack(t):
        saved.append(t.numel())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = gm(x)
    outer = sum(saved)
    saved.clear()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(x)
    assert outer == sum(saved)  # the checkpointed block's activations are not kept: as many as the model keeps
    out.sum().backward()
    assert model.block.l1.weight.grad.abs().sum() > 0
    assert_bitwise(sll_fx.export_hard(gm, verbose=False)(x), model(x))


@pytest.mark.filterwarnings("ignore:None of the inputs have requires_grad")
@pytest.mark.parametrize("reentrant", [False, True])
def test_a_checkpoint_in_a_submodule_keeps_that_submodule_opaque(reentrant):
    model = Checkpointed(reentrant, deep=True)
    with pytest.raises(sll_fx.TraceError) as info:
        trace(model)
    assert info.value.module_path == "mid" and "torch.utils.checkpoint" in str(info.value)
    gm = sll_fx.linearize_module(model, eps=0.1, verbose=False)
    assert [o.path for o in gm.sll_report.opaque] == ["mid"]
    assert [(e.module, e.replacement) for e in gm.sll_report.entries] == [("block", "sll.round"), ("mid.inner", "sll.round")]
    x = torch.randn(8, 4)
    assert_bitwise(sll_fx.export_hard(gm, verbose=False)(x), model(x))


class RoundQ(nn.Module):
    def forward(self, x):
        return torch.round(x * 4) / 4


class WithSealed(nn.Module):
    def __init__(self, q):
        super().__init__()
        self.a, self.q = nn.Linear(4, 4), q

    def forward(self, x):
        return self.q(self.a(x)) + torch.sign(x)


SEALED = {
    "torch.compile": (lambda: torch.compile(RoundQ(), backend="eager"), "OptimizedModule", "compiled with torch.compile"),
    "jit.script": (lambda: torch.jit.script(RoundQ()), "RecursiveScriptModule", "a TorchScript module"),
    "jit.trace": (lambda: torch.jit.trace(RoundQ(), torch.randn(2, 4)), "TopLevelTracedModule", "a TorchScript module"),
}


@pytest.mark.filterwarnings("ignore:.*torch.jit.*is deprecated:DeprecationWarning")
@pytest.mark.parametrize("kind", SEALED)
def test_a_compiled_or_scripted_child_runs_as_it_is_and_is_listed(kind):
    """Its forward is not Python fx can trace, nor code that would call rewritten children (a compiled module
    calls the original ``_orig_mod``): it is kept as the user's own module and listed, its round stays hard.
    Before: the compiled child's round was reported rewritten but the hard op ran (no gradient), and a
    TorchScript child crashed linearize_module with an AttributeError."""
    make, kind_name, words = SEALED[kind]
    model = WithSealed(make())
    gm = sll_fx.linearize_module(model, eps=0.1, verbose=False)
    [(path, type_name, reason)] = [(o.path, o.type, o.reason) for o in gm.sll_report.opaque]
    assert (path, type_name) == ("q", kind_name) and reason.startswith(words) and "discrete ops stay hard" in reason
    assert [e.replacement for e in gm.sll_report.entries] == ["sll.sign"]
    assert gm.q is model.q and list(gm.state_dict()) == list(model.state_dict())
    x = torch.randn(8, 4)
    assert_bitwise(sll_fx.export_hard(gm, verbose=False)(x), model(x))
    with pytest.raises(sll_fx.TraceError, match=f"submodule 'q' .*{words}"):
        trace(model)


def test_a_compiled_model_is_refused_with_the_fix():
    with pytest.raises(sll_fx.TraceError, match=r"cannot linearize a torch.compile wrapper.*\nFix: linearize the "
                                                 r"model itself, then compile"):
        sll_fx.linearize_module(torch.compile(WithSealed(RoundQ()), backend="eager"), eps=0.1, verbose=False)


# ----------------------------------------------------------------------------------------
# concrete_args
# ----------------------------------------------------------------------------------------

def test_concrete_args_pass_through():
    model = Flag()
    x = inputs()[0]
    gm = sll_fx.linearize_module(model, eps=0.05, verbose=False, concrete_args={"flag": True})
    assert gm.sll_report.opaque == []
    assert sorted(e.op for e in gm.sll_report.entries) == ["torch.round", "torch.trunc"]
    hard = sll_fx.export_hard(gm, verbose=False)
    assert_bitwise(hard(x, True), model(x, True))
    # without it, `if flag:` on a proxy fails at the top level: the model is kept opaque
    fallback = sll_fx.linearize_module(model, eps=0.05, verbose=False)
    assert [(o.path, o.type) for o in fallback.sll_report.opaque] == [("", "Flag")]
    assert [e.module for e in fallback.sll_report.entries] == ["q"]
    assert_bitwise(sll_fx.export_hard(fallback, verbose=False)(x, False), model(x, False))


@pytest.mark.parametrize("fixed, error, message", [
    ({"flg": True}, ValueError, r"concrete_args names 'flg', which Flag.forward\(x, flag\) does not take.*\nFix: use "
                                r"the forward's input names: x, flag"),
    ([True], TypeError, r"concrete_args must be a dict.*got a list\nFix: concrete_args=\{'flag': True\}")],
    ids=["misspelled", "list"])
def test_concrete_args_fx_would_ignore_are_refused(fixed, error, message):
    """A misspelled name or a list: fx ignored them, the trace failed on ``if flag:`` and the whole model was kept
    opaque, nothing rewritten, no error (a58)."""
    model = Flag()
    before = snapshot(model)
    with pytest.raises(error, match=message):
        sll_fx.linearize_module(model, eps=0.05, verbose=False, concrete_args=fixed)
    assert_unchanged(model, before)


def test_concrete_args_with_an_exported_program_are_refused():
    class M(nn.Module):
        def forward(self, x):
            return torch.round(x)

    ep = torch.export.export(M(), (torch.randn(3),))
    with pytest.raises(ValueError, match="an exported program is not traced again"):
        sll_fx.linearize_module(ep, eps=0.05, verbose=False, concrete_args={"x": None})


def test_a_linearized_model_given_to_linearize_module_again_is_refused():
    """Its sll ops counted as explicit ones (their eps and mode kept) and nothing was rewritten: eps=0.2, mode="hard"
    were ignored, with no word (a58)."""
    gm = sll_fx.linearize_module(Model(), eps=0.1, verbose=False)
    state = sll_fx.eps_state(gm)
    with pytest.raises(ValueError, match=r"already linearized \(\d+ node\(s\) rewritten.*\nFix: change eps with "
                                         r"sll_fx.set_eps"):
        sll_fx.linearize_module(gm, eps=0.2, mode="hard", verbose=False)
    assert sll_fx.eps_state(gm) == state
    hard = sll_fx.export_hard(gm, verbose=False)  # (a hard model linearizes as the original does)
    assert sll_fx.linearize_module(hard, eps=0.2, verbose=False).sll_report.rewritten


# ----------------------------------------------------------------------------------------
# the user's model, shared parameters, state_dict keys
# ----------------------------------------------------------------------------------------

def test_user_model_unchanged_also_when_an_error_is_raised():
    model = Model()
    before = snapshot(model)
    forward = type(model.block2).forward
    gm = sll_fx.linearize_module(model, eps=0.05, verbose=False)
    hard = sll_fx.export_hard(gm, verbose=False)
    sll_fx.export_hard(model, verbose=False)
    copy.deepcopy(gm)
    gm(inputs()[0])
    hard(inputs()[0])
    assert_unchanged(model, before)
    assert type(model.block2).forward is forward
    assert not is_opaque(model.block2) and not isinstance(model.block2.inner, fx.GraphModule)
    # eps too wide for the round inside the opaque block: EpsError, and the model is untouched
    with pytest.raises(sll_fx.EpsError):
        sll_fx.linearize_module(model, eps=0.7, verbose=False)
    assert_unchanged(model, before)
    with pytest.raises(sll_fx.RewriteError):
        sll_fx.export_hard(ExplicitInOpaque(), verbose=False)
    assert_unchanged(model, before)


def test_parameters_shared_and_training_moves_them():
    model = Model()
    gm = sll_fx.linearize_module(model, eps=0.3, verbose=False)
    mp, gp = list(model.named_parameters()), list(gm.named_parameters())
    assert [n for n, _ in gp] == [n for n, _ in mp]
    assert all(a is b for (_, a), (_, b) in zip(gp, mp))
    assert [n for n, _ in gm.named_buffers() if not n.split(".")[-1].startswith(EPS_PREFIX)] \
        == [n for n, _ in model.named_buffers()]
    before = {n: p.detach().clone() for n, p in mp}
    opt = torch.optim.SGD(gm.parameters(), lr=0.05)
    g = torch.Generator().manual_seed(3)
    x, y = torch.randn(32, 4, generator=g), torch.randn(32, 4, generator=g)
    for step in range(3):
        opt.zero_grad()
        loss = ((gm(x) - y) ** 2).mean()
        loss.backward()
        if step == 0:
            # the round inside the opaque block is linearized: its linear layer gets a gradient
            assert model.block2.inner.lin.weight.grad.abs().sum() > 0
            assert model.ste.w.grad.abs().sum() > 0  # through the STE's own backward
        opt.step()
    moved = {n for n, p in model.named_parameters() if not torch.equal(p.detach(), before[n])}
    assert {"block1.lin.weight", "block2.inner.lin.weight", "ste.w", "last"} <= moved
    assert "unused.weight" not in moved
    assert "block2.thr" not in moved  # used only by the opaque block's own (hard) comparison
    hard = sll_fx.export_hard(gm, verbose=False)
    assert_bitwise(hard(x), model(x))  # the model's own forward sees the trained parameters


def test_state_dict_keys_equal_the_models():
    model = Model()
    keys = list(model.state_dict())
    assert "block2.scratch" not in keys and "unused.weight" in keys
    gm = sll_fx.linearize_module(model, verbose=False)
    hard = sll_fx.export_hard(gm, verbose=False)
    for result in (gm, hard, sll_fx.export_hard(model, verbose=False), copy.deepcopy(gm)):
        assert list(result.state_dict()) == keys
        result.load_state_dict(model.state_dict(), strict=True)
    for k, v in model.state_dict().items():
        assert gm.state_dict()[k].data_ptr() == v.data_ptr(), k
    assert "block2.scratch" in dict(gm.named_buffers())  # non-persistent, still there


# ----------------------------------------------------------------------------------------
# export_hard
# ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("make", [Model, Nested, RootControlFlow], ids=["model", "nested", "root"])
def test_export_hard_bit_identical_and_no_sll_op_anywhere(make):
    model = make()
    gm = sll_fx.linearize_module(model, eps=0.05, verbose=False)
    assert sum(sll_count(g) for g in graphs(gm).values()) == len(gm.sll_report.rewritten) > 0
    outs = {i: gm(x) for i, x in enumerate(inputs())}
    for hard in (sll_fx.export_hard(gm, verbose=False), sll_fx.export_hard(model, verbose=False)):
        rep = hard.sll_report
        assert isinstance(rep, StripReport) and rep.remaining == 0
        assert [o.path for o in rep.opaque] == [o.path for o in gm.sll_report.opaque]
        assert all(sll_count(g) == 0 for g in graphs(hard).values())
        for m in hard.modules():  # every submodule's graph, inside the opaque copies too
            if isinstance(m, fx.GraphModule):
                assert not any(is_sll_target(n.target) for n in m.graph.nodes)
        with torch.no_grad():
            for x in inputs(4) + inputs(5):
                assert_bitwise(hard(x), model(x), make.__name__)
    assert len(sll_fx.export_hard(gm, verbose=False).sll_report.entries) == len(gm.sll_report.rewritten)
    for i, x in enumerate(inputs()):  # the linearized result keeps working, unchanged
        assert_bitwise(gm(x), outs[i])


def test_export_hard_refuses_sll_ops_in_opaque_python_code():
    with pytest.raises(sll_fx.RewriteError, match="ExplicitInOpaque"):
        sll_fx.export_hard(ExplicitInOpaque(), verbose=False)


# ----------------------------------------------------------------------------------------
# copies, example_inputs, per-submodule settings
# ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("how", ["deepcopy", "pickle"])
def test_copies_of_a_result_with_opaque_modules(how):
    model = Model()
    gm = sll_fx.linearize_module(model, eps=0.05, verbose=False)
    clone = copy.deepcopy(gm) if how == "deepcopy" else pickle.loads(pickle.dumps(gm))
    assert list(clone.state_dict()) == list(model.state_dict())
    assert is_opaque(clone.block2) and isinstance(clone.block2.inner, fx.GraphModule)
    assert clone.block2.inner.lin.weight is not model.block2.inner.lin.weight
    with torch.no_grad():
        for x in inputs():
            assert_bitwise(clone(x), gm(x))
    hard = sll_fx.export_hard(clone, verbose=False)
    x = inputs()[0]
    assert_bitwise(hard(x), model(x))


def test_example_inputs_with_an_opaque_module(capfd):
    model = Model()
    gm = sll_fx.linearize_module(model, eps=0.05, verbose=False, example_inputs=(inputs()[0],))
    assert gm.sll_report.counts == {"found": 4, "rewritten": 4, "hard": 0}
    assert capfd.readouterr().err == ""  # no traceback printed by a failed fake-tensor run


def test_per_submodule_eps_reaches_graphs_inside_opaque_modules():
    config = sll_fx.SLLConfig(eps=0.05, module_eps={"block2.inner": 0.2})
    gm = sll_fx.linearize_module(Model(), config, verbose=False)
    eps = {e.module: e.eps for e in gm.sll_report.entries}
    assert eps["block2.inner"] == 0.2 and eps["block1"] == 0.05


# ----------------------------------------------------------------------------------------
# an opaque forward that iterates, indexes, slices or measures an nn.Sequential child
# ----------------------------------------------------------------------------------------

class Sgn(nn.Module):
    def forward(self, x):
        return torch.sign(x)


class IteratesSequential(nn.Module):
    """Kept opaque (a data-dependent ``if``); uses ``self.seq`` and the blocks of ``self.ml`` as sequences."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(2)
        self.seq = nn.Sequential(nn.Linear(4, 4), Sgn(), nn.Linear(4, 4))
        self.ml = nn.ModuleList([nn.Sequential(nn.Linear(4, 4), Sgn())])
        self.other = nn.Sequential(nn.Linear(4, 4), Sgn())  # only called: still one traced graph

    def forward(self, x):
        if x.sum() > 0:
            x = x + 1
        for layer in self.seq:
            x = layer(x)
        x = self.seq[:2](x) + self.seq[-1](x) * len(self.seq)
        for blk in self.ml:
            x = blk[0](x) + blk[1](x)
        return self.other(x)


class SlicesSequential(nn.Module):
    """fx fails on ``self.seq[:2]`` (a Sequential made while tracing is no registered submodule)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(3)
        self.seq = nn.Sequential(nn.Linear(4, 4), Sgn(), nn.Linear(4, 4), nn.LayerNorm(4))

    def forward(self, x):
        h = torch.sign(self.seq[:2](x) - 0.1)
        return self.seq[2:](h)


@pytest.mark.parametrize("make", [IteratesSequential, SlicesSequential])
def test_an_opaque_forward_iterating_or_indexing_a_sequential_keeps_it_a_sequential(make):
    model = make()
    before = snapshot(model)
    gm = sll_fx.linearize_module(model, eps=0.05, verbose=False)
    rep = gm.sll_report
    kept = {o.path: o.reason for o in rep.opaque if o.path}
    if make is IteratesSequential:
        assert set(kept) == {"seq", "ml.0"}
        assert "iterates, indexes, slices or takes len() of it" in kept["seq"] and "an item of ml" in kept["ml.0"]
        assert type(gm.ml[0]) is nn.Sequential and isinstance(gm.other, fx.GraphModule)
        assert {e.module for e in rep.rewritten} == {"seq.1", "ml.0.1", "other.1"}
    else:
        assert set(kept) == {"seq"}
        assert {e.module for e in rep.rewritten} == {"seq.1"}  # (the model's own sign runs as written: opaque)
    assert type(gm.seq) is nn.Sequential and isinstance(gm.seq[1], fx.GraphModule)
    assert list(gm.state_dict()) == list(model.state_dict())
    hard = sll_fx.export_hard(gm, verbose=False)
    with torch.no_grad():
        for x in inputs(4):
            assert_bitwise(hard(x), model(x))
            gm(x)
    assert_unchanged(model, before)


def test_an_opaque_forward_that_only_calls_a_sequential_gets_it_traced():
    from sll_fx.scans import children_used_as_values

    assert children_used_as_values(IteratesSequential()) == {"seq", "ml"}
    assert children_used_as_values(Nested().outer) == {"layers"}  # (its items are no sequences: still traced)


class _ZerosOfTracedSize(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 8)

    def forward(self, x):
        v = torch.zeros(x.shape[0], 8)  # (torch.fx cannot pass a traced size to a factory)
        return torch.round(v + self.fc(x))


def test_a_factory_given_a_traced_size_names_the_line_and_the_fix():
    """The report said only fx's "TypeError: zeros() takes 1 positional argument but 2 were given"."""
    gm = sll_fx.linearize_module(_ZerosOfTracedSize(), eps=0.1, verbose=False)
    (record,) = gm.sll_report.opaque
    assert re.search(r"zeros\(\) takes 1 positional argument but 2 were given \(test_fallback\.py:\d+\); a size from "
                     r"a traced tensor: write x\.new_zeros", record.reason)


class _Branchy(nn.Module):
    def forward(self, x):
        if x.sum() > 0:  # (data-dependent: fx raises)
            return torch.round(x * 3)
        return x


class _CatchesItsChild(nn.Module):
    """A forward that catches what its child's call raises and goes on along a fallback."""

    def __init__(self):
        super().__init__()
        self.child = _Branchy()

    def forward(self, x):
        try:
            y = self.child(x)
        except Exception:
            y = x * 0
        return torch.sign(y - 0.5)


def test_a_failure_a_forward_catches_keeps_that_forward_opaque():
    """Before: the child's TraceError (control flow on a tensor) was caught by the parent's ``except Exception``, so
    the trace went on along the fallback, ``y = x * 0``: gm and export_hard gave [-1, -1] where the model gives
    [1, 1] (it runs the child).  The module whose forward caught it is kept opaque: its try/except runs as written."""
    model, x = _CatchesItsChild(), torch.tensor([0.4, 1.0])
    gm = sll_fx.linearize_module(model, eps=0.05, verbose=False)
    reasons = {o.path: o.reason for o in gm.sll_report.opaque}
    assert set(reasons) == {"", "child"} and reasons[""].startswith("catches what tracing raised inside it")
    assert torch.equal(model(x), torch.tensor([1.0, 1.0]))
    assert torch.equal(gm(x), model(x)) and torch.equal(sll_fx.export_hard(gm, verbose=False)(x), model(x))


class _NoFastPath(nn.Module):
    def forward(self, x):
        raise NotImplementedError("no fast path on this device")


class _Rounds(nn.Module):
    def forward(self, x):
        return torch.round(x * 3) / 3


class _FallsBack(nn.Module):
    """A fast path that raises at run time too, and the fallback the model always takes."""

    def __init__(self):
        super().__init__()
        self.fast, self.slow = _NoFastPath(), _Rounds()

    def forward(self, x):
        try:
            return self.fast(x)
        except Exception:
            return self.slow(x)


class _CatchesItsOwnBranch(nn.Module):
    def forward(self, x):
        try:
            if x.sum() > 0:  # (fx's control-flow error, raised in this forward itself)
                return torch.sign(x)
            return -torch.sign(x)
        except Exception:
            return torch.zeros_like(x)


def test_a_forward_falling_back_at_run_time_too_runs_its_fallback():
    """c72c639 kept the failing child opaque, so the graph called the fast path with no try around it: gm(x) raised
    NotImplementedError where the model falls back.  A forward catching fx's own control-flow error traced its
    fallback: gm gave [0, 0, 0] where the model gives [1, 1, -1]."""
    model, x = _FallsBack(), torch.tensor([0.1, 0.4, -0.9])
    gm = sll_fx.linearize_module(model, eps=0.05, verbose=False)
    assert torch.equal(gm(x), model(x)) and [e.module for e in gm.sll_report.rewritten] == ["slow"]
    model, x = _CatchesItsOwnBranch(), torch.tensor([0.5, 0.2, -0.3])
    gm = sll_fx.linearize_module(model, eps=0.05, verbose=False)
    assert torch.equal(model(x), torch.tensor([1.0, 1.0, -1.0]))
    assert torch.equal(gm(x), model(x)) and torch.equal(sll_fx.export_hard(gm, verbose=False)(x), model(x))


class _Cfg:
    scale = 2.0


class _UsesItem(nn.Module):
    def forward(self, x, cfg):
        return torch.sign(x) * float(x.abs().sum().item()) * cfg.scale  # (.item(): kept opaque)


class _PassesAConfig(nn.Module):
    def __init__(self):
        super().__init__()
        self.c, self.cfg = _UsesItem(), _Cfg()

    def forward(self, x):
        return torch.round(self.c(x, self.cfg))


def test_a_leaf_called_with_an_argument_a_graph_cannot_hold_keeps_the_caller_opaque():
    """Before: the child, opaque (.item()), was called with a plain config object: fx could not record the call,
    and linearize_module raised 'cannot trace submodule c ... keeps it opaque' (a leaf cannot be made more opaque)."""
    model, x = _PassesAConfig(), torch.tensor([0.3, -0.2, 0.9])
    gm = sll_fx.linearize_module(model, eps=0.05, verbose=False)
    reasons = {o.path: o.reason for o in gm.sll_report.opaque}
    assert reasons[""] == "calls c with an argument a graph cannot hold (NotImplementedError): kept opaque"
    assert torch.equal(gm(x), model(x))


class _FinfoFill(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(8, 8)

    def forward(self, x):
        s = self.lin(x)
        return s.masked_fill(s < 0.1, torch.finfo(s.dtype).min).softmax(-1)


def test_finfo_of_a_traced_dtype_names_the_fix():
    """Before: the reason was torch's "torch.finfo() requires a floating point input type. Use torch.iinfo ...", which
    does not say that the dtype is a proxy while tracing."""
    gm = sll_fx.linearize_module(_FinfoFill(), eps=0.05, verbose=False)
    (reason,) = [o.reason for o in gm.sll_report.opaque]
    assert reason.endswith("; torch.finfo of a traced tensor's dtype: name the dtype, torch.finfo(torch.float32), "
                           "or a number")


class _MultiStep(nn.Module):
    """SpikingJelly's multi-step form: a loop over the time steps of the input."""

    def forward(self, x_seq):
        return torch.stack([(x_seq[t] > 0).float() for t in range(x_seq.shape[0])])


class _FixedSteps(nn.Module):
    def __init__(self, steps: int):
        super().__init__()
        self.steps = steps

    def forward(self, x_seq):
        return torch.stack([(x_seq[t] > 0).float() for t in range(self.steps)])


def test_a_loop_over_a_traced_size_names_the_fix():
    """Before: the reason was fx's bare "TypeError: 'Proxy' object cannot be interpreted as an integer" (a21)."""
    gm = sll_fx.linearize_module(_MultiStep(), eps=0.05, verbose=False)
    (reason,) = [o.reason for o in gm.sll_report.opaque]
    assert reason.startswith("TypeError: ") and reason.endswith(
        "; a traced value used as a Python int (range(x.shape[0]), range(n) of a tensor n): make it a constant the "
        "module holds (range(self.T))")
    fixed = sll_fx.linearize_module(_FixedSteps(3), eps=0.05, verbose=False)  # (the fix: traced, rewritten)
    assert not fixed.sll_report.opaque and len(fixed.sll_report.rewritten) == 3
    x = torch.randn(3, 4)
    assert torch.equal(gm(x), _MultiStep()(x))


class _Heaviside(nn.Module):
    def forward(self, x):
        return (x >= 0).to(x)


class _ResetByBool(nn.Module):
    """A multi-step neuron kept opaque (its loop over the input's length) whose hard reset reads its traced spike
    function's result as a bool."""

    def __init__(self):
        super().__init__()
        self.surrogate_function = _Heaviside()

    def forward(self, x_seq):
        v, out = torch.zeros_like(x_seq[0]), []
        for t in range(x_seq.shape[0]):
            v = v + x_seq[t]
            spike = self.surrogate_function(v - 1.0)
            v = torch.where(spike.bool(), torch.zeros_like(v), v)
            out.append(spike)
        return torch.stack(out)


class _ResetByProduct(_ResetByBool):
    """The same reset as a product, which reads the linearized value by design (SpikingJelly's own spelling)."""

    def forward(self, x_seq):
        v, out = torch.zeros_like(x_seq[0]), []
        for t in range(x_seq.shape[0]):
            v = v + x_seq[t]
            spike = self.surrogate_function(v - 1.0)
            v = v * (1 - spike)
            out.append(spike)
        return torch.stack(out)


def test_a_traced_childs_result_converted_to_bool_by_an_opaque_parent_is_noted():
    """In a graph a bool use of a rewritten op reads the hard result; in an opaque parent's Python code it reads the
    linearized one: 0.25 (0.05 below the threshold, inside the band) reset the membrane, and the spike at t=1, 0.45
    from the band, was lost (gm [0.25, 0], model [0, 1]). Nothing said so (a21); the entry now does, with the fix."""
    gm = sll_fx.linearize_module(_ResetByBool(), eps=0.1, verbose=False)
    (entry,) = gm.sll_report.rewritten
    assert entry.module == "surrogate_function" and entry.reason == (
        "returned to the Python code of opaque _ResetByBool, whose .bool() reads the linearized value, not the hard one "
        "(for the hard value there compare a 0/1 result with 0.5, spike > 0.5, and round others first, "
        "q.round().long())")
    plain = sll_fx.linearize_module(_ResetByProduct(), eps=0.1, verbose=False)
    assert [e.reason for e in plain.sll_report.rewritten] == [""]


class _FallsBackNarrowly(_FallsBack):
    def forward(self, x):
        try:
            return self.fast(x)
        except NotImplementedError:  # (only what the fast path raises)
            return self.slow(x)


class _CatchesInside(nn.Module):
    def __init__(self):
        super().__init__()
        self.inner = _Branchy()

    def forward(self, x):
        try:
            return self.inner(x)
        except Exception:
            return x


class _OuterTry(nn.Module):
    """An outer try that never catches anything once mid is opaque; its own sign is rewritten."""

    def __init__(self):
        super().__init__()
        self.mid, self.w = _CatchesInside(), nn.Parameter(torch.tensor(1.0))

    def forward(self, x):
        try:
            h = self.mid(x)
        except Exception:
            h = x
        return torch.sign(h * self.w - 0.5)


def test_a_narrow_except_and_a_nested_catch_keep_the_right_module_opaque():
    """``except NotImplementedError:`` did not catch the TraceError the child's failure became, so only the child was
    kept opaque and gm raised NotImplementedError where the model falls back (the error now keeps the child's type
    too).  A nested catch left fx's module stack with a stale entry: mid's reason was "AssertionError: Unexpected
    key mid.inner", and an outer try catching that made the whole model opaque (its sign hard, w's gradient 0)."""
    model, x = _FallsBackNarrowly(), torch.tensor([0.1, 0.4, -0.9])
    gm = sll_fx.linearize_module(model, eps=0.05, verbose=False)
    assert torch.equal(gm(x), model(x))
    model = _OuterTry()
    gm = sll_fx.linearize_module(model, eps=0.05, verbose=False)
    reasons = {o.path: o.reason for o in gm.sll_report.opaque}
    assert set(reasons) == {"mid", "mid.inner"} and reasons["mid"].startswith("catches what tracing raised inside it")
    assert [e.node for e in gm.sll_report.rewritten] == ["sign"]
    y = torch.tensor([0.2, 0.4, 0.1])
    assert torch.equal(gm(y), model(y))


class _LoadsAFile(nn.Module):
    def forward(self, x):
        raise FileNotFoundError("no cache file")  # (an OSError: its class refuses a combined TraceError's __new__)


class _NoCatch(nn.Module):
    def __init__(self):
        super().__init__()
        self.load = _LoadsAFile()

    def forward(self, x):
        return torch.sign(self.load(x) - 0.5)


def test_a_child_failing_with_an_oserror_keeps_only_the_child_opaque():
    """8e6f2d2's combined TraceError/OSError class could not be made ("RuntimeError.__new__(TraceError) is not safe"):
    that TypeError became the parent's failure, so the parent went opaque (its sign hard, gradient 0)."""
    gm = sll_fx.linearize_module(_NoCatch(), eps=0.05, verbose=False)
    assert [o.path for o in gm.sll_report.opaque] == ["load"] and [e.node for e in gm.sll_report.rewritten] == ["sign"]


class _FallsBackOnOSError(nn.Module):
    def __init__(self):
        super().__init__()
        self.tuned, self.slow = _LoadsAFile(), _Rounds()

    def forward(self, x):
        try:
            return self.tuned(x)
        except OSError:  # (a tuned config file missing: the fallback, at run time too)
            return self.slow(x)


def test_an_oserror_fallback_keeps_its_forward_opaque():
    """Before: the child's FileNotFoundError became a TraceError (an OSError subclass cannot be combined with it),
    which ``except OSError`` did not catch: only the child was kept opaque and gm raised FileNotFoundError where the
    model falls back.  Such an exception is now raised on as it is, carrying its TraceError."""
    model, x = _FallsBackOnOSError(), torch.tensor([0.1, 0.4, -0.9])
    gm = sll_fx.linearize_module(model, eps=0.05, verbose=False)
    assert torch.equal(gm(x), model(x)) and {o.path for o in gm.sll_report.opaque} == {"", "tuned"}


_MISSING_FILE = FileNotFoundError("no tuned kernel file")  # (one exception object, raised again and again)


class _RaisesCached(nn.Module):
    def forward(self, x):
        raise _MISSING_FILE


class _HoldsCached(nn.Module):
    def __init__(self):
        super().__init__()
        self.load = _RaisesCached()

    def forward(self, x):
        return torch.sign(self.load(x) - 0.5)


class _WrapsIt(nn.Module):
    def __init__(self):
        super().__init__()
        self.enc = _HoldsCached()

    def forward(self, x):
        return torch.round(self.enc(x) * 2)


def test_one_oserror_object_raised_in_two_models_names_each_ones_child():
    """7d27230 put the TraceError on the user's exception object: a second model raising the same object got the
    first one's path ("AttributeError: _WrapsIt has no attribute 'load'"), and the exception was left changed."""
    assert [o.path for o in sll_fx.linearize_module(_HoldsCached(), eps=0.05, verbose=False).sll_report.opaque] == \
        ["load"]
    gm = sll_fx.linearize_module(_WrapsIt(), eps=0.05, verbose=False)
    assert [o.path for o in gm.sll_report.opaque] == ["enc.load"] and vars(_MISSING_FILE) == {}

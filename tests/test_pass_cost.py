"""What keeps ``linearize_module`` and ``export_hard`` cheap, checked as behaviour.

- Each graph's Python code is generated once, for the final graph: the traced graph and the
  private copy of a user's graph are built without code (``SLLGraphModule(..., codegen=False)``),
  edited in place, and get their code after the pass; no module sll_fx hands back lacks it.
- A module built without code generates it on first use (a call, ``.code``, a copy, a pickle).
- The tracer records one frame per node (the user's line) instead of a whole stack trace, in
  fx's format, so ``source_of`` and fx's own stack-trace parser both read the user's line.
- The planner runs the rule table only on nodes whose target is one of its spellings.
- The pass leaves no reference cycle behind: its planner and tie check, with their per-node tables, are freed when it
  returns (a cycle kept them until a full garbage collection, which then walked them).
- The user's GraphModule is never edited (its graph is copied; a traced one is private).
- What a trace reads of a module's code (the names its ``forward`` resolves, an ``autograd.Function`` it references,
  the values it reads off ``self``) is scanned once per ``forward`` function and class, while each instance's own
  attributes are still read per instance.
"""

from __future__ import annotations

import copy
import gc
import pickle
import re

import pytest
import torch
from torch import fx, nn
from torch.fx.graph import _parse_stack_trace

import sll_fx
from sll_fx import rules
from sll_fx.graph_module import SLLGraphModule, generate_code, is_deferred
from sll_fx.opaque import is_opaque
from sll_fx.tracer import source_of, trace, trace_with_fallback

HERE = __file__.rsplit("/", 1)[-1]


def _line(marker: str) -> int:
    """Line number of the source line of this file that contains ``marker``."""
    with open(__file__) as f:
        return next(i for i, text in enumerate(f, 1) if marker in text and "_line(" not in text)


def _sign(x):
    return torch.sign(x)  # <- helper sign


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 4)

    def forward(self, x):
        h = torch.tanh(self.lin(x))
        return h + 0.1 * torch.round(h * 2)  # <- block round


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.block = Block()
        self.register_buffer("scale", torch.tensor(1.5))

    def forward(self, x):
        h = self.block(x) * self.scale
        g = (h > 0.25).float()  # <- net compare
        return h * g + _sign(h)


class Moody(nn.Module):
    """Python control flow on a tensor value: kept opaque, its child traced and rewritten."""

    def __init__(self):
        super().__init__()
        self.inner = Block()

    def forward(self, x):
        if x.sum() > 0:
            return self.inner(x)
        return -self.inner(x)


class WithOpaque(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.pre = Block()
        self.moody = Moody()

    def forward(self, x):
        return torch.floor(self.moody(self.pre(x)))


class Chain(nn.Module):
    def __init__(self, n: int):
        super().__init__()
        self.n = n

    def forward(self, x):
        for _ in range(self.n):
            x = torch.tanh(x * 0.9 + 0.1)
        return torch.sign(x)


class Blocks(nn.Module):
    """benchmarks/pass_scaling.py's chain: a discrete op in each block, its result read by float arithmetic."""

    def __init__(self, n: int):
        super().__init__()
        self.n = n

    def forward(self, x):
        for i in range(self.n):
            h = torch.tanh(x * 0.9 + 0.1)  # <- blocks tanh
            d = torch.round(h * 2) if i % 2 else (h > 0.5).float()  # <- blocks discrete
            x = h + 0.1 * d  # <- blocks sum
        return x


def graph_modules(module: nn.Module) -> dict[str, fx.GraphModule]:
    return {p: m for p, m in module.named_modules(remove_duplicate=False) if isinstance(m, fx.GraphModule)}


@pytest.fixture
def codegen_count(monkeypatch):
    """Counts the times any GraphModule generates its code (fx's recompile runs)."""
    calls = []
    real = fx.GraphModule.recompile

    def counting(self):
        calls.append(self)
        return real(self)

    monkeypatch.setattr(fx.GraphModule, "recompile", counting)
    return calls


# ----------------------------------------------------------------------------------------
# code generated once per graph, never missing from a result
# ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("model_cls", [Net, WithOpaque])
def test_linearize_module_generates_each_graph_once(model_cls, codegen_count):
    gm = sll_fx.linearize_module(model_cls(), 0.05, verbose=False)
    assert len(codegen_count) == len(graph_modules(gm)) >= 1
    assert {id(m) for m in codegen_count} == {id(m) for m in graph_modules(gm).values()}


@pytest.mark.parametrize("model_cls", [Net, WithOpaque])
def test_export_hard_generates_each_graph_once(model_cls, codegen_count):
    gm = sll_fx.linearize_module(model_cls(), 0.05, verbose=False)
    codegen_count.clear()
    hard = sll_fx.export_hard(gm, verbose=False)
    assert len(codegen_count) == len(graph_modules(hard)) >= 1
    codegen_count.clear()
    sll_fx.export_hard(model_cls(), verbose=False)  # traced first: still once per graph
    assert len(codegen_count) == len(graph_modules(hard))


@pytest.mark.parametrize("model_cls", [Net, WithOpaque])
def test_results_have_their_code(model_cls):
    model = model_cls()
    x = torch.randn(3, 4)
    gm = sll_fx.linearize_module(model, 0.05, verbose=False)
    hard = sll_fx.export_hard(gm, verbose=False)
    for result in (gm, hard, *trace_with_fallback(model)[:1], trace(model.block if model_cls is Net else model.pre)):
        for path, m in graph_modules(result).items():
            assert not is_deferred(m), path
            assert "_code" in m.__dict__ and "forward" in vars(type(m)), path
    torch.testing.assert_close(hard(x), model(x), rtol=0, atol=0)


def test_a_module_without_code_generates_it_on_first_use():
    model, x = Net(), torch.randn(3, 4)
    for use in ("call", "code", "str", "deepcopy", "pickle"):
        gm, _ = trace_with_fallback(model, codegen=False)
        assert isinstance(gm, SLLGraphModule) and is_deferred(gm)
        gm.recompile()  # only marks the code stale
        assert is_deferred(gm) and "_code" not in gm.__dict__
        if use == "call":
            out = gm(x)
        elif use == "code":
            assert "def forward" in gm.code
        elif use == "str":
            assert "def forward" in str(gm)
        else:
            clone = copy.deepcopy(gm) if use == "deepcopy" else pickle.loads(pickle.dumps(gm))
            assert not is_deferred(clone)
            out = clone(x)
        assert not is_deferred(gm)
        if use in ("call", "deepcopy", "pickle"):
            torch.testing.assert_close(out, model(x), rtol=0, atol=0)
        generate_code(gm)  # a no-op now
        assert gm.recompile() is not None  # regenerates at once, as any GraphModule


def test_opaque_children_run_before_their_graph_is_rewritten():
    """With example_inputs the fake-tensor run goes through an opaque module into its traced child,
    whose code is generated on that first call; the result is the same as without the run."""
    x = torch.randn(3, 4)
    plain = sll_fx.linearize_module(WithOpaque(), 0.05, verbose=False)
    typed = sll_fx.linearize_module(WithOpaque(), 0.05, verbose=False, example_inputs=(x,))
    assert typed.sll_report.entries == plain.sll_report.entries
    assert {p: m.code for p, m in graph_modules(typed).items()} == {p: m.code for p, m in graph_modules(plain).items()}
    assert is_opaque(typed.moody)
    torch.testing.assert_close(typed(x), plain(x), rtol=0, atol=0)


def test_the_users_graph_module_is_not_edited():
    traced = fx.symbolic_trace(Net())
    code, nodes = traced.code, [(n.name, n.op, n.target) for n in traced.graph.nodes]
    lin = sll_fx.linearize_module(traced, 0.05, verbose=False)
    assert traced.code == code and [(n.name, n.op, n.target) for n in traced.graph.nodes] == nodes
    sll_nodes = [(n.name, n.op, n.target) for n in lin.graph.nodes]
    hard = sll_fx.export_hard(lin, verbose=False)
    assert [(n.name, n.op, n.target) for n in lin.graph.nodes] == sll_nodes
    assert hard.graph is not lin.graph and lin.sll_report.counts["rewritten"] == 3


# ----------------------------------------------------------------------------------------
# source lines
# ----------------------------------------------------------------------------------------

def test_each_node_records_the_users_line_in_fx_format():
    gm = trace(Net())
    by_name = {n.name: n for n in gm.graph.nodes}
    expect = {"round_1": _line("<- block round"), "gt": _line("<- net compare"), "sign": _line("<- helper sign")}
    for name, line in expect.items():
        node = by_name[name]
        assert source_of(node) == f"{HERE}:{line}"
        assert node.stack_trace.startswith(f'File "{__file__}", line {line}, in ')
        parsed = _parse_stack_trace(node.stack_trace)  # what fx's print_readable shows
        assert parsed is not None and (parsed.file, int(parsed.lineno)) == (__file__, line)
    assert by_name["sign"].stack_trace.split(", in ")[1].startswith("_sign\n")
    assert all(source_of(n).startswith(HERE) for n in gm.graph.nodes if n.op not in ("placeholder", "output"))


def test_the_report_gives_the_users_lines():
    gm = sll_fx.linearize_module(Net(), 0.05, verbose=False)
    sources = {e.op: e.source for e in gm.sll_report.entries}
    assert sources == {"torch.round": f"{HERE}:{_line('<- block round')}", "x > t": f"{HERE}:{_line('<- net compare')}",
                       "torch.sign": f"{HERE}:{_line('<- helper sign')}"}
    hard = sll_fx.export_hard(gm, verbose=False)
    assert sorted(e.source for e in hard.sll_report.entries) == sorted(sources.values())


# ----------------------------------------------------------------------------------------
# the planner's sweeps
# ----------------------------------------------------------------------------------------

def test_the_rule_table_runs_only_on_its_spellings(monkeypatch):
    calls = []
    real = rules.match

    def counting(node):
        calls.append(node.name)
        return real(node)

    monkeypatch.setattr(rules, "match", counting)
    gm = sll_fx.linearize_module(Chain(200), 0.05, verbose=False)
    assert gm.sll_report.counts == {"found": 1, "rewritten": 1, "hard": 0}
    assert len(gm.graph.nodes) > 600
    assert set(calls) == {"sign"} and len(calls) <= 3  # planning (and the guarantee's check), not 600 nodes


def test_the_planner_is_freed_when_the_pass_returns():
    from sll_fx.passes._plan import _Planner, _Step
    from sll_fx.passes._ties import Ties

    model = Blocks(20)
    gc.collect()
    gc.disable()  # (nothing but reference counts frees objects: an object in a cycle stays until a collection)
    try:
        gm = sll_fx.linearize_module(model, 0.05, verbose=False)
        left = [type(o).__name__ for o in gc.get_objects() if isinstance(o, (_Planner, Ties, _Step))]
    finally:
        gc.enable()
    assert gm.sll_report.counts["rewritten"] == 20
    assert left == []


def test_the_use_and_gradient_sweeps_settle_arithmetic_by_its_target(monkeypatch):
    # how a user reads a result, and whether a node passes a gradient on, are answered once per target for
    # arithmetic; the per-node tests (a cast's dtype, what carries no gradient) run only where they can matter
    from sll_fx.passes import _gradients, _plan, _uses

    calls = {"_cast_to": [], "_carries_no_gradient": []}
    for name, found in calls.items():
        real = getattr(_uses, name, None) or getattr(_gradients, name)

        def counting(node, *args, _real=real, _found=found, **kwargs):
            _found.append(node.name)
            return _real(node, *args, **kwargs)

        for module in (_uses, _gradients, _plan):  # (each module that calls it, by its own global name)
            if hasattr(module, name):
                monkeypatch.setattr(module, name, counting)
    gm = sll_fx.linearize_module(Blocks(50), 0.05, verbose=False)
    assert gm.sll_report.counts == {"found": 50, "rewritten": 50, "hard": 0}
    assert calls["_cast_to"] == []  # (.float(): a cast of known dtype, by its name)
    comparisons = {e.node for e in gm.sll_report.entries if e.op == "x > t"}
    assert len(comparisons) == 25 and set(calls["_carries_no_gradient"]) == comparisons  # (bool results only)


def test_the_nodes_of_a_loop_record_their_own_lines():
    # (each block: x * 0.9, + 0.1 and tanh on its first line; h * 2 and round, or > and .float(), on the second;
    # 0.1 * d and h + on the third)
    gm = trace(Blocks(6))
    nodes = [n for n in gm.graph.nodes if n.op not in ("placeholder", "output")]
    block = [_line("<- blocks tanh")] * 3 + [_line("<- blocks discrete")] * 2 + [_line("<- blocks sum")] * 2
    assert [source_of(n) for n in nodes] == [f"{HERE}:{line}" for line in block * 6]
    assert all(n.stack_trace.startswith(f'File "{__file__}", line {source_of(n).split(":")[1]}, in forward\n')
               for n in nodes)


# ----------------------------------------------------------------------------------------
# code scans once per class, instance attributes per instance
# ----------------------------------------------------------------------------------------

class _Straight(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, g):
        return g


class Quant(nn.Module):
    """A quantizer whose bit width is an instance value; one instance calls an autograd.Function it holds."""

    fn = None

    def __init__(self, bits: int, fn=None):
        super().__init__()
        self.bits = bits
        if fn is not None:
            self.fn = fn

    def forward(self, x):
        n = 2 ** self.bits - 1
        y = torch.round(x.clamp(0, 1) * n) / n
        return y if self.fn is None else self.fn.apply(y)


class Quants(nn.Module):
    def __init__(self):
        super().__init__()
        self.qs = nn.ModuleList([Quant(4), Quant(2), Quant(3, _Straight), Quant(4)])

    def forward(self, x):
        for q in self.qs:
            x = q(x)
        return x


def test_code_scans_run_once_per_class_and_instance_attributes_per_instance(monkeypatch):
    from sll_fx import frozen
    from sll_fx.errors import TraceError

    scanned = []
    real = frozen._code_reads

    def counting(forward, klass):
        scanned.append(klass.__name__)
        return real(forward, klass)

    monkeypatch.setattr(frozen, "_code_reads", counting)
    model = Quants()
    x = torch.rand(6, 4)
    gm = sll_fx.linearize_module(model, 0.05, verbose=False)
    # the instance holding the autograd.Function is kept opaque, the others of its class are traced
    assert [o.path for o in gm.sll_report.opaque] == ["qs.2"]
    assert gm.sll_report.counts == {"found": 3, "rewritten": 3, "hard": 0}  # (an opaque module's ops stay hard)
    assert torch.equal(sll_fx.export_hard(gm, verbose=False)(x), model(x))
    # Quant's forward and Quants': scanned once each, whatever the number of instances
    assert sorted(scanned) == ["Quant", "Quants"]
    # each value read off self is the instance's own: a change of one instance's bit width is named
    model.qs[1].bits = 5
    with pytest.raises(TraceError, match=re.escape("'qs.1.bits' is 5 now, 2 when")):
        gm(x)


# ----------------------------------------------------------------------------------------
# the tracer's work per node and per module call
# ----------------------------------------------------------------------------------------

def test_a_traced_value_is_made_without_an_attribute_write_per_field(monkeypatch):
    # fx's Proxy.__init__ sets .tracer and .node through the Proxy's __setattr__ (which refuses a traced tensor's
    # attribute writes): two Python calls per node; the tracer's proxies set them directly
    from sll_fx import tracer as tracer_module

    writes = []
    real = tracer_module._Proxy.__setattr__

    def counting(self, k, value):
        writes.append(k)
        return real(self, k, value)

    monkeypatch.setattr(tracer_module._Proxy, "__setattr__", counting)
    gm = trace(Blocks(20))
    assert len(gm.graph.nodes) > 100
    assert writes == []
    x = torch.rand(3, 4)
    assert torch.equal(gm(x), Blocks(20)(x))


class Many(nn.Module):
    """Blocks of their own (a Linear each), one class: the per-module work of a trace shows."""

    def __init__(self, n: int):
        super().__init__()
        self.blocks = nn.ModuleList(Block() for _ in range(n))

    def forward(self, x):
        for block in self.blocks:
            x = block(x)
        return x


def test_each_module_call_is_judged_a_leaf_once_and_each_forward_scanned_for_training_once(monkeypatch):
    # whether a module is a leaf is worked out once per call (fx's call_module asks again, right after the
    # tracer's own), besides once per module when the trace begins (its training flag); whether a forward names
    # .training, once per function
    from sll_fx import tracer as tracer_module

    judged, scanned = [], []
    real_leaf, real_code = tracer_module.torch_leaf, tracer_module.code_objects

    def counting_leaf(m):
        judged.append(m)
        return real_leaf(m)

    def counting_code(code):
        scanned.append(code)
        return real_code(code)

    monkeypatch.setattr(tracer_module, "torch_leaf", counting_leaf)
    monkeypatch.setattr(tracer_module, "code_objects", counting_code)
    model = Many(5)
    gm = trace(model)
    calls = 5 * 2  # (the model's own forward is traced, not called; its blocks are called, and each calls its Linear)
    modules = len(list(model.modules()))
    assert len(judged) == modules + calls
    assert [c.co_name for c in scanned] == ["forward", "forward"]  # (Many's, Block's: once each)
    x = torch.rand(3, 4)
    assert torch.equal(gm(x), model(x))


class Levels(nn.Module):
    """Plain instance values its forward names (a bit width, a name): per instance, nothing to resolve."""

    def __init__(self, bits: int):
        super().__init__()
        self.bits, self.label = bits, f"q{bits}"

    def forward(self, x):
        n = 2 ** self.bits - 1
        return torch.round(x.clamp(0, 1) * n) / n


def test_plain_instance_values_are_not_resolved_per_module(monkeypatch):
    # the mode and autograd.Function scans resolve what a forward names once per function and class; per instance,
    # only its attributes that may name code (not self.bits, an int)
    from sll_fx import scans

    walks = []
    real = scans._expand

    def counting(frontier, names, depth):
        walks.append(list(frontier))
        return real(frontier, names, depth)

    monkeypatch.setattr(scans, "_expand", counting)
    model = nn.Sequential(*(Levels(b) for b in (2, 3, 4, 5)))
    gm = sll_fx.linearize_module(model, 0.05, verbose=False)
    assert gm.sll_report.counts == {"found": 4, "rewritten": 4, "hard": 0}
    # (the first instance's bit width is walked when its class is resolved, with the instance: not the others')
    assert {v for frontier in walks for v in frontier if isinstance(v, int)} == {2}
    x = torch.rand(3, 4)
    assert torch.equal(sll_fx.export_hard(gm, verbose=False)(x), model(x))

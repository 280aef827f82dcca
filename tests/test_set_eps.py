"""Tests of ``sll_fx.set_eps``: changing the band half-width of a linearized model in place.

``set_eps(gm, eps, where=None)`` sets the eps of the selected sll nodes (``where``: all, a rule
kind or group, a submodule name, a node name, an ``nn.Module`` type or a predicate), in place in
their eps buffers (read with ``sll_fx.annealing.node_eps``; the code does not change), so
that the forward and the gradients use it (slope ``1/(2 eps)``); it returns the node names and
keeps the report current; an eps too wide for a selected node is an ``EpsError`` naming the node,
raised before any node changes; a ``where`` that selects nothing is a ``ValueError``; it works
repeatedly (an annealing loop) on the same GraphModule, without retracing.
"""

from __future__ import annotations

import copy
import math
import pickle

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import fx, nn

import sll_fx
from sll_fx.annealing import EPS_PREFIX, node_eps
from sll_fx.rules import sll_op_name
from sll_fx.tracer import module_of
from _helpers import Fn, assert_bitwise, sll_nodes

INF, NAN = float("inf"), float("nan")


class Leaf(nn.Module):
    def __init__(self):
        super().__init__()
        self.t = nn.Parameter(torch.tensor(0.2))

    def forward(self, x):
        return torch.round(x) + (x > self.t).float() + torch.sign(x)


class Net(nn.Module):
    """enc, enc2 (a sibling whose name starts with "enc"), dec: Leafs; top level: a where on a comparison,
    one_hot(argmax), a top-k mask."""

    def __init__(self):
        super().__init__()
        self.enc = Leaf()
        self.enc2 = Leaf()
        self.dec = Leaf()

    def forward(self, x):
        h = self.enc(x) + self.enc2(x) + self.dec(x)
        return (h + torch.where(x > 0.1, x, -x) + F.one_hot(x.argmax(-1), 4).float()
                + torch.zeros_like(x).scatter(-1, torch.topk(x, 2, -1).indices, 1.0))


def eps_nodes(gm) -> list[fx.Node]:
    return [n for n in sll_nodes(gm) if "eps" in n.kwargs]


def eps_of(gm) -> dict:
    return {n.name: node_eps(gm, n) for n in eps_nodes(gm)}


def named(n: fx.Node) -> str:
    """The name set_eps returns for a top-level sll node: the report's (``gt``, not the ``compare`` it became)."""
    return n.meta.get("sll_entry", n.name)


def kind(n: fx.Node) -> str:
    op = sll_op_name(n.target)
    return n.args[2] if op == "compare" else op


def entry_eps(gm) -> dict:
    return {e.node: e.eps for e in gm.sll_report.entries}


def snapshot(gm):
    return eps_of(gm), entry_eps(gm), gm.code, [n.name for n in gm.graph.nodes]


def make(eps=0.1, mode="linear"):
    model = Net()
    return model, sll_fx.linearize_module(model, eps, mode=mode, verbose=False)


X = torch.tensor([[0.0, 0.5, -0.5, 0.2], [0.21, 0.19, 1.0, 0.1], [1.49, -2.5, 0.3, 0.05],
                  [INF, -INF, NAN, 0.0], [0.12, 0.09, 0.7, 0.71]])


# ----------------------------------------------------------------------------------------
# selecting nodes
# ----------------------------------------------------------------------------------------

def test_set_eps_everywhere_returns_names_and_updates_nodes_and_report_not_code():
    model, gm = make(0.1)
    ident, graph_id = id(gm), id(gm.graph)
    code = gm.code
    names = sll_fx.set_eps(gm, 0.2)
    assert isinstance(names, list) and all(isinstance(n, str) for n in names)
    assert sorted(names) == sorted(named(n) for n in eps_nodes(gm))  # the report's names (eps_state's)
    assert len(names) == 12   # 3 x (round, compare, sign) + compare of the where + argmax_onehot + topk_mask
    assert set(eps_of(gm).values()) == {0.2}
    assert gm.code == code  # eps lives in buffers that set_eps fills in place: no recompile (torch.compile)
    assert id(gm) == ident and id(gm.graph) == graph_id
    for e in gm.sll_report.rewritten:
        if e.replacement != "sll.select(where)":
            assert e.eps == 0.2, e
    # modes untouched
    assert {n.kwargs["mode"] for n in eps_nodes(gm)} == {"linear"}


def test_set_eps_everywhere_also_updates_the_selection_entries():
    """The where's entry reports its band (its comparison's eps): it must follow set_eps too."""
    model, gm = make(0.1)
    sll_fx.set_eps(gm, 0.2)
    assert {e.eps for e in gm.sll_report.rewritten} == {0.2}, str(gm.sll_report)


def test_where_kind_and_group():
    model, gm = make(0.1)
    rounds = sorted(n.name for n in eps_nodes(gm) if kind(n) == "round")
    assert sorted(sll_fx.set_eps(gm, 0.3, where="round")) == rounds
    for n in eps_nodes(gm):
        assert node_eps(gm, n) == (0.3 if kind(n) == "round" else 0.1), n
    compares = sorted(named(n) for n in eps_nodes(gm) if kind(n) in ("gt", "ge", "lt", "le"))
    assert len(compares) == 4
    assert sorted(sll_fx.set_eps(gm, 0.25, where="compare")) == compares
    assert sorted(sll_fx.set_eps(gm, 0.05, where="gt")) == compares   # all four are gt here
    assert sll_fx.set_eps(gm, 0.4, where="argmax_onehot") == [named(n) for n in eps_nodes(gm)
                                                               if kind(n) == "argmax_onehot"]
    assert sll_fx.set_eps(gm, 0.35, where="topk_mask") == [named(n) for n in eps_nodes(gm) if kind(n) == "topk_mask"]
    expected = {"round": 0.3, "gt": 0.05, "sign": 0.1, "argmax_onehot": 0.4, "topk_mask": 0.35}
    for n in eps_nodes(gm):
        assert node_eps(gm, n) == expected[kind(n)], n
    # the report follows, entry by entry
    for e in gm.sll_report.rewritten:
        if e.replacement.startswith("sll.round"):
            assert e.eps == 0.3
        if e.replacement.startswith("sll.sign"):
            assert e.eps == 0.1


def test_where_submodule_name_covers_descendants_only():
    model, gm = make(0.1)
    names = sll_fx.set_eps(gm, 0.3, where="enc")
    assert sorted(names) == sorted(named(n) for n in eps_nodes(gm) if module_of(n) == "enc")
    assert len(names) == 3
    for n in eps_nodes(gm):
        assert node_eps(gm, n) == (0.3 if module_of(n) == "enc" else 0.1), n   # enc2 is not below enc
    for e in gm.sll_report.rewritten:
        if e.replacement != "sll.select(where)":
            assert e.eps == (0.3 if e.module == "enc" else 0.1), e


def test_where_the_roots_empty_name_is_the_whole_model():
    """``""`` is the root's qualified name (``named_modules()``'s first): every node, as ``where=None``."""
    model, gm = make(0.1)
    assert sll_fx.set_eps(gm, 0.2, where="") == sll_fx.set_eps(gm, 0.2)
    assert set(sll_fx.eps_state(gm).values()) == {0.2}


def test_where_node_name_of_the_sll_node():
    model, gm = make(0.1)
    node = next(n for n in eps_nodes(gm) if kind(n) == "round" and module_of(n) == "dec")
    assert sll_fx.set_eps(gm, 0.45, where=node.name) == [node.name]
    assert eps_of(gm) == {n.name: (0.45 if n is node else 0.1) for n in eps_nodes(gm)}
    (entry,) = [e for e in gm.sll_report.entries if e.node == node.meta["sll_entry"]]
    assert entry.eps == 0.45
    assert {e.eps for e in gm.sll_report.rewritten if e is not entry and e.replacement != "sll.select(where)"} \
        == {0.1}


def test_where_node_name_as_the_report_shows_it():
    """The report lists nodes by their traced names (``round_1``); those names select them too."""
    model, gm = make(0.1)
    entry = next(e for e in gm.sll_report.entries if e.op == "torch.round" and e.module == "dec")
    names = sll_fx.set_eps(gm, 0.45, where=entry.node)
    (node,) = [n for n in eps_nodes(gm) if n.meta.get("sll_entry") == entry.node]
    assert names == [node.name]
    assert node_eps(gm, node) == 0.45


def test_where_type_and_predicate():
    model, gm = make(0.1)
    names = sll_fx.set_eps(gm, 0.3, where=Leaf)
    assert sorted(names) == sorted(named(n) for n in eps_nodes(gm) if module_of(n) in ("enc", "enc2", "dec"))
    assert len(names) == 9
    for n in eps_nodes(gm):
        assert node_eps(gm, n) == (0.3 if module_of(n) else 0.1)

    seen = []

    def pick(node):
        seen.append(node)
        return module_of(node) == "" and kind(node) in ("argmax_onehot", "topk_mask")

    names = sll_fx.set_eps(gm, 0.05, where=pick)
    assert len(names) == 2
    assert all(isinstance(n, fx.Node) for n in seen)
    for n in eps_nodes(gm):
        expected = 0.05 if named(n) in names else 0.3 if module_of(n) else 0.1
        assert node_eps(gm, n) == expected, n


@pytest.mark.parametrize("where", ["select", "where"])
def test_where_selection_kinds_set_the_selection_band(where):
    """"select" is a kind group (config.KIND_GROUPS) and "where" a kind: they name the where's band."""
    model, gm = make(0.1)
    cmp = next(n for n in eps_nodes(gm) if kind(n) == "gt" and module_of(n) == "")
    assert any(u.op == "call_function" and sll_op_name(u.target) == "select" for u in cmp.users)
    sll_fx.set_eps(gm, 0.3, where=where)
    assert node_eps(gm, cmp) == 0.3
    assert {e.eps for e in gm.sll_report.rewritten if e.module == "" and e.op in ("x > t", "torch.where")} == {0.3}


@pytest.mark.parametrize("where", ["nonexistent", "enc.x", "encoder", nn.Conv2d, (lambda n: False), "trunc"],
                         ids=["name", "deeper_name", "prefix_not_path", "type", "predicate", "absent_kind"])
def test_where_selecting_nothing_is_a_value_error(where):
    model, gm = make(0.1)
    before = snapshot(gm)
    with pytest.raises(ValueError) as info:
        sll_fx.set_eps(gm, 0.2, where=where)
    if isinstance(where, str):
        assert where in str(info.value)
    assert snapshot(gm) == before


@pytest.mark.parametrize("where", [["sign", "gt"], ("sign",), 3], ids=["list", "tuple", "int"])
def test_where_of_another_type_is_a_type_error_with_the_fix(where):
    """A list of names reached ``issubclass`` for the nodes of submodules: "issubclass() arg 2 must be a class"
    (a58)."""
    model, gm = make(0.1)
    before = snapshot(gm)
    with pytest.raises(TypeError, match=r"where=.* must be None, a name .*\nFix: one call per name, or a predicate"):
        sll_fx.set_eps(gm, 0.2, where=where)
    assert snapshot(gm) == before


def test_where_non_module_type_is_a_value_error():
    model, gm = make(0.1)
    before = snapshot(gm)
    with pytest.raises(ValueError):
        sll_fx.set_eps(gm, 0.2, where=int)
    assert snapshot(gm) == before


# ----------------------------------------------------------------------------------------
# limits: all or nothing
# ----------------------------------------------------------------------------------------

def test_eps_too_wide_for_round_raises_naming_the_node_and_changes_nothing():
    model, gm = make(0.1)
    before = snapshot(gm)
    rounds = [n.name for n in eps_nodes(gm) if kind(n) == "round"]
    with pytest.raises(sll_fx.EpsError) as info:
        sll_fx.set_eps(gm, 0.7)
    msg = str(info.value)
    assert isinstance(info.value, ValueError)
    assert any(f"'{name}'" in msg for name in rounds), msg
    assert "round" in msg and "0.5" in msg and "0.7" in msg
    assert snapshot(gm) == before           # the signs, comparisons ... did not change either
    y = gm(X)
    with pytest.raises(sll_fx.EpsError):
        sll_fx.set_eps(gm, 0.7, where="enc")
    assert snapshot(gm) == before
    assert_bitwise(gm(X), y)
    # 0.7 is fine where no round is selected
    assert len(sll_fx.set_eps(gm, 0.7, where="sign")) == 3
    assert sll_fx.set_eps(gm, 0.5, where="round") == rounds    # the limit itself is allowed


@pytest.mark.parametrize("eps", [0.0, -0.1, NAN, INF, "0.1", None, True], ids=str)
def test_bad_eps_raises_and_changes_nothing(eps):
    model, gm = make(0.1)
    before = snapshot(gm)
    with pytest.raises(sll_fx.EpsError):
        sll_fx.set_eps(gm, eps)
    assert snapshot(gm) == before


# ----------------------------------------------------------------------------------------
# the forward and the gradients use the new eps
# ----------------------------------------------------------------------------------------

class One(nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn
        self.t = nn.Parameter(torch.tensor(0.3))

    def forward(self, x):
        return self.fn(self, x)


def _slope(gm, x0) -> torch.Tensor:
    x = torch.tensor(x0, requires_grad=True)
    gm(x).sum().backward()
    return x.grad


@pytest.mark.parametrize("fn,x0,slope", [
    (lambda m, x: torch.sign(x), [0.0, 0.01], lambda e: [1 / e, 1 / e]),
    (lambda m, x: torch.round(x), [0.5, 1.52], lambda e: [1 / (2 * e)] * 2),
    (lambda m, x: torch.floor(x), [1.0, -2.01], lambda e: [1 / (2 * e)] * 2),
    (lambda m, x: (x > m.t).float(), [0.3, 0.32], lambda e: [1 / (2 * e)] * 2),
    (lambda m, x: (x <= m.t).float(), [0.3, 0.29], lambda e: [-1 / (2 * e)] * 2),
    (lambda m, x: torch.where(x > m.t, 3 * torch.ones_like(x), -torch.ones_like(x)), [0.3, 0.31],
     lambda e: [4 / (2 * e)] * 2),
    (lambda m, x: x.masked_fill(x < m.t, 1.3), [0.3, 0.3], lambda e: [0.5 - (1.3 - 0.3) / (2 * e)] * 2),
], ids=["sign", "round", "floor", "gt", "le", "where", "masked_fill"])
def test_slope_follows_eps(fn, x0, slope):
    model = One(fn)
    gm = sll_fx.linearize_module(model, 0.1, verbose=False)
    torch.testing.assert_close(_slope(gm, x0), torch.tensor(slope(0.1)))
    sll_fx.set_eps(gm, 0.25)
    torch.testing.assert_close(_slope(gm, x0), torch.tensor(slope(0.25)))
    sll_fx.set_eps(gm, 0.02)
    torch.testing.assert_close(_slope(gm, x0), torch.tensor(slope(0.02)))


def test_threshold_gradient_and_forward_value_follow_eps():
    model = One(lambda m, x: (x > m.t).float())
    gm = sll_fx.linearize_module(model, 0.1, verbose=False)
    x = torch.tensor([0.35])
    torch.testing.assert_close(gm(x), torch.tensor([0.75]))
    sll_fx.set_eps(gm, 0.25)
    torch.testing.assert_close(gm(x), torch.tensor([0.6]))
    gm(x).sum().backward()
    torch.testing.assert_close(model.t.grad, torch.tensor(-1 / 0.5))


def test_argmax_and_topk_slopes_follow_eps():
    argmax = sll_fx.linearize_module(One(lambda m, x: F.one_hot(x.argmax(-1), 3).float()), 0.1, verbose=False)
    topk = sll_fx.linearize_module(
        One(lambda m, x: torch.zeros_like(x).scatter(-1, torch.topk(x, 1, -1).indices, 1.0)), 0.1, verbose=False)
    x = torch.tensor([1.0, 0.99, -1.0])
    for eps in (0.1, 0.3, 0.05):
        if eps != 0.1:
            sll_fx.set_eps(argmax, eps)
            sll_fx.set_eps(topk, eps)
        k = 1 / (2 * eps)
        jac = torch.autograd.functional.jacobian(argmax, x)
        torch.testing.assert_close(jac[0, :2], torch.tensor([k, -k]))
        torch.testing.assert_close(jac[1, :2], torch.tensor([-k, k]))
        # top-1 mask: tau = (x_0 + x_1) / 2, so d y_0 / d x_0 = k - k/2, d y_0 / d x_1 = -k/2
        jac = torch.autograd.functional.jacobian(topk, x)
        torch.testing.assert_close(jac[0, :2], torch.tensor([k / 2, -k / 2]))
        torch.testing.assert_close(argmax(x)[:2], torch.tensor([0.5 + 0.01 * k, 0.5 - 0.01 * k]))


def test_hard_mode_boxcar_width_follows_eps():
    model = One(lambda m, x: torch.round(x))
    gm = sll_fx.linearize_module(model, 0.1, mode="hard", verbose=False)
    x0 = [0.5 + 0.15, 1.5 - 0.15, 2.0]
    torch.testing.assert_close(_slope(gm, x0), torch.tensor([0.0, 0.0, 0.0]))
    sll_fx.set_eps(gm, 0.2)
    torch.testing.assert_close(_slope(gm, x0), torch.tensor([2.5, 2.5, 0.0]))
    assert {n.kwargs["mode"] for n in eps_nodes(gm)} == {"hard"}
    xs = torch.tensor([0.5, 1.5, 2.5, -0.5, 0.65, 0.35, INF, -INF, NAN, -0.0])
    assert_bitwise(gm(xs), model(xs))


# ----------------------------------------------------------------------------------------
# annealing: repeatedly, in place
# ----------------------------------------------------------------------------------------

def test_annealing_loop_without_retracing():
    torch.manual_seed(0)
    model = Net()
    gm = sll_fx.linearize_module(model, eps=0.3, verbose=False)
    ident, graph_id = id(gm), id(gm.graph)
    node_names = [n.name for n in gm.graph.nodes]
    params = [id(p) for p in model.parameters()]
    assert [id(p) for p in gm.parameters()] == params
    opt = torch.optim.SGD(gm.parameters(), lr=0.01)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(32, 4, generator=g)
    target = torch.randn(32, 4, generator=g)
    probe = One(lambda m, x: (x > m.t).float())
    probe_gm = sll_fx.linearize_module(probe, eps=0.3, verbose=False)
    steps = 10
    for step in range(steps):
        eps = 0.3 * (0.05 / 0.3) ** (step / (steps - 1))
        names = sll_fx.set_eps(gm, eps)
        sll_fx.set_eps(probe_gm, eps)
        assert len(names) == 12
        assert all(math.isclose(v, eps) for v in eps_of(gm).values())
        assert all(math.isclose(e.eps, eps) for e in gm.sll_report.rewritten
                   if e.replacement != "sll.select(where)")
        opt.zero_grad()
        loss = ((gm(x) - target) ** 2).mean()
        loss.backward()
        assert math.isfinite(loss.item())
        opt.step()
        # the slope at the threshold is 1/(2 eps) at every step
        torch.testing.assert_close(_slope(probe_gm, [float(probe.t.detach())]), torch.tensor([1 / (2 * eps)]))
        assert id(gm) == ident and id(gm.graph) == graph_id
        assert [n.name for n in gm.graph.nodes] == node_names
        assert [id(p) for p in gm.parameters()] == params
    assert math.isclose(next(iter(eps_of(gm).values())), 0.05)
    # the trained thresholds are the model's; the export is the model, bit for bit
    hard = sll_fx.export_hard(gm, verbose=False)
    assert_bitwise(hard(X), model(X))


def test_copies_are_independent_and_keep_their_eps():
    model, gm = make(0.1)
    clone = copy.deepcopy(gm)
    sll_fx.set_eps(clone, 0.3)
    assert set(eps_of(gm).values()) == {0.1}
    assert set(eps_of(clone).values()) == {0.3}
    again = pickle.loads(pickle.dumps(clone))
    assert set(eps_of(again).values()) == {0.3}
    assert_bitwise(again(X), clone(X))
    assert not torch.equal(torch.nan_to_num(clone(X)), torch.nan_to_num(gm(X)))


# ----------------------------------------------------------------------------------------
# where eps lives: non-persistent buffers, read by get_attr nodes
# ----------------------------------------------------------------------------------------

def eps_buffers(gm) -> dict:
    return {n: b for n, b in gm.named_buffers() if n.split(".")[-1].startswith(EPS_PREFIX)}


def test_eps_lives_in_non_persistent_buffers_that_set_eps_replaces():
    model, gm = make(0.1)
    buffers = eps_buffers(gm)
    assert len(buffers) == 12 and all(b.dim() == 0 and b.dtype == torch.float64 for b in buffers.values())
    assert list(gm.state_dict()) == list(model.state_dict())          # not state: the keys stay the model's
    for n in eps_nodes(gm):
        assert n.kwargs["eps"].op == "get_attr" and n.kwargs["eps"].target in buffers
    forward, code, ids = type(gm).forward, gm.code, {n: id(b) for n, b in buffers.items()}
    sll_fx.set_eps(gm, 0.25)
    assert type(gm).forward is forward and gm.code == code             # nothing recompiled
    new = eps_buffers(gm)                                              # same names, new tensors: a pending
    assert set(new) == set(ids) and not {id(b) for b in new.values()} & set(ids.values())  # backward keeps its own
    assert all(b.dim() == 0 and b.dtype == torch.float64 for b in new.values())
    assert {float(b) for b in eps_buffers(gm).values()} == {0.25}
    assert list(gm.state_dict()) == list(model.state_dict())          # still not state
    gm.load_state_dict(model.state_dict())                             # loading state leaves eps alone
    assert {float(b) for b in eps_buffers(gm).values()} == {0.25}


def test_eps_buffers_stay_non_persistent_in_copies_and_export_drops_them():
    model, gm = make(0.1)
    sll_fx.set_eps(gm, 0.3)
    for copied in (copy.deepcopy(gm), pickle.loads(pickle.dumps(gm))):
        assert list(copied.state_dict()) == list(model.state_dict())
        assert set(eps_buffers(copied)) == set(eps_buffers(gm))
        assert set(eps_of(copied).values()) == {0.3}
        assert_bitwise(copied(X), gm(X))
    hard = sll_fx.export_hard(gm, verbose=False)
    assert not eps_buffers(hard) and not [n for n in hard.graph.nodes if n.op == "get_attr"
                                          and n.target.startswith(EPS_PREFIX)]
    assert list(hard.state_dict()) == list(model.state_dict())
    assert_bitwise(hard(X), model(X))
    assert len(eps_buffers(gm)) == 12 and set(eps_of(gm).values()) == {0.3}   # the input keeps its own


def test_node_eps_reads_nested_graph_modules_and_literals():
    class Untraceable(nn.Module):
        def __init__(self):
            super().__init__()
            self.leaf = Leaf()

        def forward(self, x):
            if x.sum() > 0:   # control flow on a value: kept opaque, its child traced
                return self.leaf(x)
            return -self.leaf(x)

    top = sll_fx.linearize_module(Untraceable(), 0.1, verbose=False)
    nested = [n for n in sll_nodes(top.leaf) if "eps" in n.kwargs]
    assert len(nested) == 3 and {node_eps(top, n) for n in nested} == {0.1}
    sll_fx.set_eps(top, 0.2, where="round")
    assert sorted(node_eps(top, n) for n in nested) == [0.1, 0.1, 0.2]
    assert sorted(node_eps(None, n) for n in nested) == [0.1, 0.1, 0.2]   # the graph's owner

    class Explicit(nn.Module):   # an explicit op traced as it is: linearize_module gives its eps a buffer
        def forward(self, x):
            return sll_fx.sign(x, 0.1) + torch.round(x)

    gm = sll_fx.linearize_module(Explicit(), 0.2, verbose=False)
    literal = next(n for n in sll_nodes(gm) if sll_op_name(n.target) == "sign")
    assert isinstance(literal.kwargs["eps"], fx.Node) and node_eps(gm, literal) == 0.1
    sll_fx.set_eps(gm, 0.3)
    assert {n.name: node_eps(gm, n) for n in sll_nodes(gm)} == {n.name: 0.3 for n in sll_nodes(gm)}
    torch.testing.assert_close(_slope(gm, [0.0]), torch.tensor([1 / 0.3]))
    with pytest.raises(KeyError):
        node_eps(top, next(n for n in sll_nodes(make()[1]) if sll_op_name(n.target) == "select"))


@pytest.mark.parametrize("backend", ["eager", "aot_eager"])
@pytest.mark.parametrize("mode", ["linear", "hard"])
def test_set_eps_between_forward_and_backward_keeps_the_forwards_eps(backend, mode):
    """y = gm(x); set_eps(gm, e); y.backward(): the gradient is the forward's eps's, compiled as in eager
    (filling the buffer in place failed the compiled backward's saved-tensor version check)."""
    class Net(nn.Module):
        def forward(self, x):
            return torch.round(x * 2)

    gm = sll_fx.linearize_module(Net(), 0.25, mode=mode, verbose=False)
    run = gm if backend == "eager" else torch.compile(gm, backend=backend, fullgraph=True)
    x = torch.tensor([0.2, 0.3, 0.0, 0.6], requires_grad=True)
    run(x)  # compile
    y = run(x)
    sll_fx.set_eps(gm, 0.05)
    y.sum().backward()
    assert x.grad.tolist() == [4.0, 4.0, 0.0, 0.0]   # 2 * 1/(2 * 0.25) where |2x - 1/2| = 0.1 < 0.25
    x.grad = None
    run(x).sum().backward()                          # the next forward uses the new eps: 0.1 > 0.05
    assert x.grad.tolist() == [0.0, 0.0, 0.0, 0.0]


# ----------------------------------------------------------------------------------------
# where= precedence, nested graphs, eps types
# ----------------------------------------------------------------------------------------

class _Q(nn.Module):
    def forward(self, x):
        return torch.round(x)


class _KindNamedSubmodule(nn.Module):
    """A submodule named ``round`` (a kind) and another one of the same type; two top-level signs."""

    def __init__(self):
        super().__init__()
        self.round = _Q()
        self.other = _Q()

    def forward(self, a, b, c):
        return self.round(a), self.other(b), torch.sign(c), torch.sign(2 * c)


def test_where_submodule_name_beats_a_kind_and_a_kind_beats_a_node_named_like_it():
    gm = sll_fx.linearize_module(_KindNamedSubmodule(), 0.1, verbose=False)
    by_module = {(module_of(n), kind(n)): n for n in eps_nodes(gm)}
    assert sll_fx.set_eps(gm, 0.3, where="round") == [by_module["round", "round"].name]   # the submodule only
    assert {module_of(n): node_eps(gm, n) for n in eps_nodes(gm) if kind(n) == "round"} == {"round": 0.3,
                                                                                             "other": 0.1}
    assert {(e.module, e.eps) for e in gm.sll_report.rewritten if e.op == "torch.round"} == {("round", 0.3),
                                                                                            ("other", 0.1)}
    # "sign" stays the kind (a node named sign exists): every sign node; load_eps names the node alone
    assert sll_fx.set_eps(gm, 0.2, where="sign") == ["sign", "sign_1"]
    assert sll_fx.load_eps(gm, {"sign": 0.4}, strict=False) == ["sign"]
    assert {n.name: node_eps(gm, n) for n in eps_nodes(gm) if kind(n) == "sign"} == {"sign": 0.4, "sign_1": 0.2}
    assert sll_fx.set_eps(gm, 0.45, where="sign_1") == ["sign_1"]   # a name that is no kind: the node


class _Gate(nn.Module):
    def forward(self, x):
        return torch.sign(x * 0.5) + torch.round(x)


class _Opaque(nn.Module):
    def __init__(self):
        super().__init__()
        self.g = _Gate()

    def forward(self, x):   # control flow on a value: kept opaque, ``g`` traced
        return self.g(x) if x.sum() > 0 else self.g(-x)


class _WithOpaque(nn.Module):
    def __init__(self):
        super().__init__()
        self.b = _Opaque()
        self.block = _Q()   # traced through: a plain container in gm

    def forward(self, x):
        return torch.sign(x) + self.b(x) + self.block(x) + torch.where(x > 0.1, x, -x) \
            + torch.where(x < 0.2, x, 2 * x)


def test_where_qualified_name_of_a_nested_node_and_a_selection_entry():
    gm = sll_fx.linearize_module(_WithOpaque(), 0.1, verbose=False)
    state = sll_fx.eps_state(gm)
    assert state == {"sign": 0.1, "round_1": 0.1, "gt": 0.1, "lt": 0.1, "b.g.sign": 0.1, "b.g.round_1": 0.1}
    assert sll_fx.set_eps(gm, 0.3, where="b.g.sign") == ["b.g.sign"]        # the nested node alone
    assert sll_fx.set_eps(gm, 0.2, where="where_1") == ["lt"]               # a selection: its comparison
    assert sll_fx.eps_state(gm) == {**state, "b.g.sign": 0.3, "lt": 0.2}
    rows = {(e.node, e.module): e.eps for e in gm.sll_report.rewritten}
    assert rows[("sign", "b.g")] == 0.3 and rows[("sign", "")] == 0.1
    assert rows[("lt", "")] == rows[("where_1", "")] == 0.2 and rows[("where", "")] == 0.1


def test_set_eps_on_a_nested_graph_module_is_refused_pointing_to_the_model():
    gm = sll_fx.linearize_module(_WithOpaque(), 0.1, verbose=False)
    before = sll_fx.eps_state(gm)
    for part, path in ((gm.b.g, "b.g"), (gm.b, "b")):
        with pytest.raises(ValueError, match=f"set_eps\\(gm, eps, where='{path}'\\)"):
            sll_fx.set_eps(part, 0.3)
        with pytest.raises(ValueError, match=f"where='{path}.sign'"):
            sll_fx.set_eps(part, 0.3, where="sign")
    assert sll_fx.eps_state(gm) == before
    assert sll_fx.set_eps(gm, 0.3, where="b.g") == ["b.g.sign", "b.g.round_1"]  # the names eps_state gives
    assert {(e.node, e.module): e.eps for e in gm.sll_report.rewritten if e.module == "b.g"} == \
        {("sign", "b.g"): 0.3, ("round_1", "b.g"): 0.3}
    with pytest.raises(ValueError, match="set_eps\\(gm, eps, where=\"<submodule name>\"\\)"):
        sll_fx.set_eps(gm.block, 0.3)                                   # a traced-through container
    assert sll_fx.set_eps(gm, 0.25, where="block") == ["round_1"]
    assert sll_fx.eps_state(gm) == {"sign": 0.1, "round_1": 0.25, "gt": 0.1, "lt": 0.1, "b.g.sign": 0.3,
                                    "b.g.round_1": 0.3}


@pytest.mark.parametrize("eps", [np.float32(0.25), np.float64(0.25), torch.tensor(0.25), torch.tensor([0.25]),
                                 torch.tensor(0.25, dtype=torch.float64), 1],
                         ids=["np.float32", "np.float64", "tensor0d", "tensor1", "tensor_float64", "int"])
def test_set_eps_takes_any_real_number(eps):
    model, gm = make(0.1)
    names = sll_fx.set_eps(gm, eps, where="sign")
    assert len(names) == 3
    assert {node_eps(gm, n) for n in eps_nodes(gm) if n.name in names} == {1.0 if eps == 1 else 0.25}
    assert all(type(e.eps) is float for e in gm.sll_report.rewritten)


@pytest.mark.parametrize("eps", [torch.ones(2), "0.2", None, True], ids=["tensor2", "str", "None", "bool"])
def test_set_eps_refuses_what_is_not_one_real_number_without_naming_a_node(eps):
    model, gm = make(0.1)
    before = snapshot(gm)
    with pytest.raises(sll_fx.EpsError) as info:
        sll_fx.set_eps(gm, eps)
    message = str(info.value)
    assert message.startswith("set_eps: eps must be") and "node" not in message
    assert "real number" in message
    assert snapshot(gm) == before


def test_set_eps_and_load_eps_refuse_an_eps_on_the_meta_device_naming_it():
    """A meta tensor holds no value: set_eps raised torch's "Tensor.item() cannot be called on meta tensors" (audit)."""
    model, gm = make(0.1)
    before = snapshot(gm)
    with pytest.raises(sll_fx.EpsError, match=r"^set_eps: eps is a tensor on the 'meta' device, which holds no value "
                                              r"to read\nFix: pass a Python float"):
        sll_fx.set_eps(gm, torch.tensor(0.2, device="meta"))
    state = sll_fx.eps_state(gm)
    name = next(iter(state))
    with pytest.raises(sll_fx.EpsError, match=rf"^load_eps: state\['{name}'\]: eps is a tensor on the 'meta' device"):
        sll_fx.load_eps(gm, {**state, name: torch.tensor(0.2, device="meta")})
    assert snapshot(gm) == before


def test_set_eps_and_load_eps_refuse_an_eps_that_requires_grad_as_linearize_module_does():
    """A tensor requiring grad was read as its number silently (a58), where linearize_module refuses it: no gradient
    reaches an eps read as a number.  The same EpsError, naming the function (and load_eps' key)."""
    model, gm = make(0.1)
    before = snapshot(gm)
    eps = torch.tensor(0.2, requires_grad=True)
    with pytest.raises(sll_fx.EpsError, match=r"^SLLConfig: eps requires grad"):
        sll_fx.linearize_module(model, eps=eps, verbose=False)
    with pytest.raises(sll_fx.EpsError, match=r"^set_eps: eps requires grad, but it is read as a number \(each op's "
                                              r"band half-width, 0\.2.*\), which gets no gradient\nFix: pass "
                                              r"eps\.detach\(\), or a Python float$"):
        sll_fx.set_eps(gm, eps)
    state = sll_fx.eps_state(gm)
    name = next(iter(state))
    with pytest.raises(sll_fx.EpsError, match=rf"^load_eps: state\['{name}'\]: eps requires grad"):
        sll_fx.load_eps(gm, {**state, name: eps})
    assert snapshot(gm) == before
    assert len(sll_fx.set_eps(gm, eps.detach(), where="sign")) == 3


def test_eps_state_of_the_original_model_is_refused():
    """It returned {} silently (a58), where calibrate and freeze_eps refuse it: the same ValueError.  A linearized
    model that rewrote nothing, or whose only sll node computes its eps, gives {}."""
    model, gm = make(0.1)
    with pytest.raises(ValueError, match=r"^eps_state: Net holds no sll node: it is no linearize_module result \(the "
                                         r"original model\?\)\nFix: call it on the linearized model"):
        sll_fx.eps_state(model)
    with pytest.raises(ValueError, match=r"^eps_state: Net is an export_hard result"):
        sll_fx.eps_state(sll_fx.export_hard(gm, verbose=False))
    assert sll_fx.eps_state(sll_fx.linearize_module(nn.Linear(2, 2), eps=0.1, verbose=False)) == {}
    computed = fx.symbolic_trace(Fn(lambda x: sll_fx.round(x, (x.std() * 0.1).detach())))
    assert sll_fx.eps_state(computed) == {}


@pytest.mark.parametrize("call", ["set_eps", "eps_state", "load_eps"])
@pytest.mark.parametrize("model", [None, lambda x: x], ids=["None", "function"])
def test_set_eps_eps_state_and_load_eps_of_no_module_are_a_type_error(call, model):
    """set_eps(None, 0.1) raised "'NoneType' object has no attribute 'modules'", eps_state(None) "... 'named_modules'"
    (audit): now linearize_module's TypeError, naming the function."""
    args = {"set_eps": (model, 0.1), "eps_state": (model,), "load_eps": (model, {})}[call]
    with pytest.raises(TypeError, match=rf"^{call}: sll_fx expects an nn.Module \(the model sll_fx.linearize_module "
                                        r"returned\), got (a NoneType|function .*<lambda>)\nFix: pass the linearized "
                                        r"model, gm = sll_fx.linearize_module\(model, ...\)"):
        getattr(sll_fx, call)(*args)


def test_a_predicate_returning_a_tensor_is_a_type_error_naming_the_node():
    """It raised "Boolean value of Tensor with more than one value is ambiguous" (audit); a one-element tensor says
    yes or no as a bool does."""
    model, gm = make(0.1)
    before = snapshot(gm)
    with pytest.raises(TypeError, match=r"^set_eps: where=.*<lambda>' returned a tensor of shape \(2,\) for node "
                                        r"'\w+', where it must say yes or no\nFix: return a bool"):
        sll_fx.set_eps(gm, 0.2, where=lambda node: torch.tensor([True, False]))
    assert snapshot(gm) == before
    assert sll_fx.set_eps(gm, 0.2, where=lambda node: torch.tensor(node.name == "sign")) == ["sign"]


class _OwnEps(nn.Module):
    """An explicit op reading its eps from the model's own tensor, next to an op linearize_module rewrites."""

    def __init__(self, kind: str):
        super().__init__()
        if kind == "parameter":
            self.eps = nn.Parameter(torch.tensor(0.1), requires_grad=False)
        else:
            self.register_buffer("eps", torch.tensor(0.1))

    def forward(self, x):
        return sll_fx.sign(x, self.eps) + torch.round(x)


@pytest.mark.parametrize("kind", ["parameter", "buffer"])
def test_set_eps_does_not_replace_the_models_own_eps_tensor(kind):
    """set_eps put a new buffer in its place on gm only: a parameter was shadowed (set_eps said 'sign' was set,
    nothing changed, torch.export then failed) and a buffer left the model's behind (their state_dicts differed);
    audit. Now a ValueError with the fix, before anything changes; its own value and other nodes are fine."""
    model = _OwnEps(kind)
    gm = sll_fx.linearize_module(model, eps=0.2, verbose=False)
    x = torch.tensor([0.05, 0.2, -0.01, 1.3])
    before = gm(x)
    with pytest.raises(ValueError, match=rf"node 'sign' .* takes its eps from the model's {kind} 'eps' .*\n"
                                         r"Fix: set it on the model \(with torch.no_grad\(\): model\.eps\.fill_\(0\.3\)\)"):
        sll_fx.set_eps(gm, 0.3)
    assert gm.eps is model.eps and "eps" not in gm._buffers if kind == "parameter" else gm.eps is model.eps
    state = sll_fx.eps_state(gm)
    (rounded,) = set(state) - {"sign"}
    assert state == pytest.approx({"sign": 0.1, rounded: 0.2}) and torch.equal(gm(x), before)
    assert sorted(sll_fx.load_eps(gm, state)) == sorted(state)  # (the values it has: a round trip)
    assert sll_fx.set_eps(gm, 0.3, where="round") == [rounded]
    with torch.no_grad():
        model.eps.fill_(0.3)  # (the fix: gm reads the model's tensor)
    torch.testing.assert_close(gm(x), torch.clamp(x / 0.3, -1, 1) + sll_fx.round(x, 0.3))
    torch.export.export(gm, (x,))


def test_a_computed_eps_is_no_state():
    """An explicit op given an eps its forward computes has no eps to read or set: eps_state raised a TypeError
    (the checkpoint recipe failed) and so did set_eps(gm, eps); audit. Both pass it by; naming it says why."""

    class DataEps(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(4, 4)

        def forward(self, x):
            h = self.lin(x)
            return sll_fx.round(h, (h.std() * 0.1).detach()) + torch.sign(h)

    gm = sll_fx.linearize_module(DataEps(), eps=0.1, verbose=False)
    assert sll_fx.set_eps(gm, 0.2) == ["sign"]
    assert sll_fx.eps_state(gm) == {"sign": 0.2}
    assert sll_fx.load_eps(gm, sll_fx.eps_state(gm)) == ["sign"]
    with pytest.raises(TypeError, match=r"node 'round_1': its eps comes from node 'detach' .*\nFix: leave the node"):
        sll_fx.load_eps(gm, {"sign": 0.1, "round_1": 0.1})


class _StepAttr(nn.Module):
    """The quantizer step is also the band's half-width: a plain tensor attribute (or a literal) the forward computes
    with, given to two explicit ops."""

    def __init__(self, literal: bool = False):
        super().__init__()
        self.literal = literal
        self.step = torch.tensor(0.1)

    def forward(self, x):
        step = torch.tensor(0.1) if self.literal else self.step
        return sll_fx.round(x / step, step) * step + sll_fx.sign(x - 1.0, step)


def test_a_tensor_literal_eps_gets_its_own_buffer_when_linearized():
    """A ``torch.tensor`` literal of the forward given as eps (and used as the quantizer step, and given to two ops):
    set_eps replaced it, so the step changed too and setting one op set both (audit); then set_eps gave the node a
    buffer of its own by editing the graph, which code compiled before did not follow and which broke a shallow
    copy sharing the graph (audit of that fix). linearize_module gives such a node its own eps buffer up front."""
    model = _StepAttr(literal=True)
    gm = sll_fx.linearize_module(model, eps=0.3, verbose=False)
    x = torch.tensor([0.33, 0.71, 1.26, 1.05])
    hard_before = sll_fx.export_hard(gm, verbose=False)(x)
    shallow = copy.copy(gm)
    compiled = torch.compile(gm, backend="eager", fullgraph=True)
    compiled(x)
    assert sll_fx.set_eps(gm, 0.2, where="sign") == ["sign"]
    assert sll_fx.eps_state(gm) == pytest.approx({"round_1": 0.1, "sign": 0.2})
    want = sll_fx.round(x / 0.1, 0.1) * 0.1 + sll_fx.sign(x - 1.0, 0.2)
    torch.testing.assert_close(gm(x), want)
    torch.testing.assert_close(compiled(x), want)  # (compiled code follows: no graph change)
    assert torch.equal(sll_fx.export_hard(gm, verbose=False)(x), hard_before)  # (the step is still 0.1)
    assert sorted(sll_fx.load_eps(gm, {"sign": 0.05, "round_1": 0.2})) == ["round_1", "sign"]
    torch.testing.assert_close(gm(x), sll_fx.round(x / 0.1, 0.2) * 0.1 + sll_fx.sign(x - 1.0, 0.05))
    sll_fx.eps_state(shallow)
    copy.deepcopy(shallow)


def test_set_eps_refuses_an_eps_the_models_forward_computes_with():
    """A plain tensor attribute given as eps is the model's value, which its forward also uses (the quantizer step):
    set_eps changed the step with it (audit), then edited the graph (audit of that fix); now a ValueError with the fix,
    nothing changed."""
    model = _StepAttr(literal=False)
    gm = sll_fx.linearize_module(model, eps=0.3, verbose=False)
    x = torch.tensor([0.33, 0.71, 1.26, 1.05])
    before = gm(x)
    code = gm.code
    with pytest.raises(ValueError, match=r"node 'sign' .* the model's tensor attribute 'step' \(0\.1.*\n"
                                         r"Fix: set it on the model"):
        sll_fx.set_eps(gm, 0.2, where="sign")
    assert torch.equal(gm(x), before) and gm.code == code and gm.step is model.step
    assert sorted(sll_fx.load_eps(gm, sll_fx.eps_state(gm))) == ["round_1", "sign"]


def test_the_refusal_names_the_node_and_the_tensor_by_the_models_names():
    class G(nn.Module):
        def __init__(self):
            super().__init__()
            self.register_buffer("eps", torch.tensor(0.1))

        def forward(self, x):
            return sll_fx.sign(x, self.eps)

    class B(nn.Module):  # (opaque: its forward branches on a value; its child g is traced)
        def __init__(self):
            super().__init__()
            self.g = G()

        def forward(self, x):
            return self.g(x) if x.sum() > 0 else -self.g(x)

    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.b = B()

        def forward(self, x):
            return self.b(x)

    gm = sll_fx.linearize_module(M(), eps=0.2, verbose=False)
    assert list(sll_fx.eps_state(gm)) == ["b.g.sign"]
    with pytest.raises(ValueError, match=r"^load_eps: node 'b\.g\.sign' .* the model's buffer 'b\.g\.eps' .*\n"
                                         r"Fix: set it on the model \(with torch.no_grad\(\): model\.b\.g\.eps\.fill_"):
        sll_fx.load_eps(gm, {"b.g.sign": 0.3})


@pytest.mark.parametrize("literal", ["torch.tensor([0.1])", "torch.tensor(1)", "grad"])
def test_an_invalid_tensor_literal_eps_is_refused_as_in_the_model(literal):
    """A tensor literal eps the op refuses (not 0-dim, not floating, requiring grad) was given a valid buffer when
    linearized, so gm ran where the model raised (audit of the literal buffers)."""
    make = {"torch.tensor([0.1])": lambda: torch.tensor([0.1]), "torch.tensor(1)": lambda: torch.tensor(1),
            "grad": lambda: torch.tensor(0.1, requires_grad=True)}[literal]
    model = Fn(lambda x: sll_fx.round(x * 3, make()))
    x = torch.randn(4)
    with pytest.raises(sll_fx.EpsError):
        model(x)
    gm = sll_fx.linearize_module(model, eps=0.1, verbose=False)
    with pytest.raises(sll_fx.EpsError):
        gm(x)


def test_set_eps_on_only_computed_eps_says_so():
    """An exported program's tensor literal eps is computed in the graph: set_eps said the model held no sll node,
    blaming a traced-through submodule (audit)."""
    model = Fn(lambda x: sll_fx.round(x * 3, torch.tensor(0.1)))
    x = torch.randn(4)
    gm = sll_fx.linearize_module(torch.export.export(model, (x,)), eps=0.1, verbose=False)
    assert sll_fx.eps_state(gm) == {}
    with pytest.raises(ValueError, match=r"compute their eps in the forward .*\nFix: give the op an eps held by"):
        sll_fx.set_eps(gm, 0.05)


class _NothingDiscrete(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 4)

    def forward(self, x):
        return self.lin(x).relu()


@pytest.mark.parametrize("compiled", [False, True])
def test_set_eps_on_a_linearized_model_with_nothing_rewritten_warns_and_changes_nothing(compiled):
    """It raised "holds no sll node. A submodule that linearize_module traced through ...": wrong for the model
    itself, and an eps schedule stopped a training run on a model nothing of which was rewritten (a22)."""
    gm = sll_fx.linearize_module(_NothingDiscrete(), eps=0.1, verbose=False)
    target = torch.compile(gm, backend="eager") if compiled else gm
    with pytest.warns(UserWarning, match=r"set_eps: linearize_module rewrote no node of _NothingDiscrete \(0 discrete "
                                         r"node\(s\) found, 0 rewritten; 0 module\(s\) kept opaque"):
        assert sll_fx.set_eps(target, 0.2) == []
    with pytest.raises(ValueError, match="holds no sll node"):  # (a selection that reaches nothing stays an error)
        sll_fx.set_eps(gm, 0.2, where="lin")


def test_set_eps_on_an_export_hard_result_and_a_bad_eps_with_nothing_rewritten():
    """The nothing-rewritten branch read ``report.counts['found']``: a bare KeyError for an export_hard result (its
    report counts stripped nodes), and it returned [] for eps=-1.0 without checking it (a23)."""
    hard = sll_fx.export_hard(sll_fx.linearize_module(Fn(torch.round), eps=0.1, verbose=False), verbose=False)
    with pytest.raises(ValueError, match="is an export_hard result: its sll ops are stripped to the hard ops, which "
                                         "have no eps\nFix: call set_eps on the linearized model"):
        sll_fx.set_eps(hard, 0.1)
    gm = sll_fx.linearize_module(_NothingDiscrete(), eps=0.1, verbose=False)
    with pytest.raises(sll_fx.errors.EpsError, match=r"set_eps: eps=-1.0 must be positive and finite"):
        sll_fx.set_eps(gm, -1.0)


def test_calibrate_regenerating_a_hand_made_graph_keeps_its_code():
    """``calibrate`` gives a literal eps of a hand-made graph a buffer and regenerates the code; the calibration's
    saved state put the old code text back (``gm.code`` showed ``eps = 0.1`` while the forward read the buffer)."""
    gm = fx.symbolic_trace(Fn(lambda x: sll_fx.round(x, 0.1) + sll_fx.sign(x, 0.2)))
    sll_fx.calibrate(gm, torch.randn(50, generator=torch.Generator().manual_seed(0)))
    assert gm.code == fx.GraphModule(gm, gm.graph).code and "self._sll_eps_round" in gm.code

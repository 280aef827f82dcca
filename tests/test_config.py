"""Tests of ``sll_fx.SLLConfig``: per-kind and per-submodule eps and mode, rules switched off, submodules skipped.

Documented (README, ``sll_fx/config.py``): a readable repr, a frozen value; eps by rule kind
(``"round"``, ...) and group (``"compare"``, ``"select"``); eps and mode by submodule, keyed by
qualified name (a name covers everything below it, the longest matching name wins) or by module
type (the innermost enclosing module of that type); priority name > type > kind > default;
``disabled`` kinds stay hard with a "switched off" reason; ``skip``ped submodules are left as they
are; unknown kinds / submodule names, non-module types, bad eps and modes are ``ValueError``s
naming them; ``linearize_module(model, 0.05)`` is unchanged; the eps each node got is in its report
entry and in its sll node's ``eps`` keyword.
"""

from __future__ import annotations

import dataclasses
import functools
import types

import pytest
import torch
import torch.nn.functional as F
from torch import fx, nn

import sll_fx
from sll_fx import SLLConfig
from sll_fx.annealing import node_eps
from sll_fx.diagnostics import is_soft_mask
from sll_fx.rules import sll_op_name
from sll_fx.tracer import module_of
from _helpers import assert_bitwise, sll_nodes

INF, NAN = float("inf"), float("nan")


# ----------------------------------------------------------------------------------------
# a model with nested submodules of several types
# ----------------------------------------------------------------------------------------

class Leaf(nn.Module):
    def forward(self, x):
        return torch.round(x) + (x > 0.2).float() + torch.sign(x)


class SubLeaf(Leaf):
    """A subclass: a type key ``Leaf`` covers it too."""


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = Leaf()
        self.b = Leaf()

    def forward(self, x):
        return self.a(x) + self.b(x) + torch.floor(x)


class Net(nn.Module):
    """enc (Block: enc.a, enc.b Leaf), enc2 (SubLeaf: a name sharing enc's prefix, not below it), dec (Block),
    and top-level ops: a where on a comparison, round, sign, one_hot(argmax)."""

    def __init__(self):
        super().__init__()
        self.enc = Block()
        self.enc2 = SubLeaf()
        self.dec = Block()
        self.norm = nn.LayerNorm(3)

    def forward(self, x):
        h = self.enc(x) + self.enc2(x) + self.dec(x)
        return (h + torch.where(x > 0.1, x, -x) + torch.round(x * 3) + torch.sign(x - 1)
                + F.one_hot(x.argmax(-1), 3).float() + self.norm(x))


OP_KIND = {"torch.round": "round", "x > t": "gt", "x < t": "lt", "torch.sign": "sign", "torch.floor": "floor",
           "torch.where": "where", "Tensor.masked_fill": "masked_fill", "torch.one_hot": "argmax_onehot",
           "Tensor.scatter": "topk_mask", "torch.trunc": "trunc"}
LEAF_PATHS = ("enc.a", "enc.b", "enc2", "dec.a", "dec.b")


def kind_of(entry) -> str:
    return OP_KIND[entry.op]


def node_of_entry(gm, entry) -> fx.Node:
    (node,) = [n for n in sll_nodes(gm) if n.meta.get("sll_entry") == entry.node]
    return node


def band_eps(node: fx.Node) -> float:
    """The eps an sll node actually uses: its own, or for a selection its comparison's."""
    if sll_op_name(node.target) == "select":
        return node_eps(None, node.args[0])
    return node_eps(None, node)


def entries_by(gm) -> dict:
    """(module, kind) -> [entries]."""
    out: dict = {}
    for e in gm.sll_report.entries:
        out.setdefault((e.module, kind_of(e)), []).append(e)
    return out


def eps_table(gm) -> dict:
    """(module, kind) -> eps of the rewritten entries (all entries of a key agree)."""
    table = {}
    for key, es in entries_by(gm).items():
        values = {e.eps for e in es}
        assert len(values) == 1, (key, es)
        table[key] = values.pop()
    return table


def run(cfg, model=None, **kw):
    return sll_fx.linearize_module(model if model is not None else Net(), cfg, verbose=False, **kw)


X = torch.tensor([[0.0, 0.5, -0.5], [0.21, 0.19, 1.0], [1.49, -2.5, 0.3], [INF, -INF, NAN], [0.12, 0.09, 0.7]])


# ----------------------------------------------------------------------------------------
# the value itself
# ----------------------------------------------------------------------------------------

def test_repr_is_readable():
    assert repr(SLLConfig()) == "SLLConfig(eps=0.01, mode='linear')"
    cfg = SLLConfig(eps=0.05, kind_eps={"round": 0.25, "compare": 0.1}, module_eps={"enc": 0.2, nn.LayerNorm: 0.01},
                    module_mode={"dec": "hard"}, disabled={"trunc", "sign"}, skip=("dec.b", Leaf))
    r = repr(cfg)
    assert "\n" not in r and r.startswith("SLLConfig(") and r.endswith(")")
    for part in ("eps=0.05", "mode='linear'", "kind_eps={'round': 0.25, 'compare': 0.1}",
                 "module_eps={'enc': 0.2, LayerNorm: 0.01}", "module_mode={'dec': 'hard'}",
                 "disabled=['sign', 'trunc']", "skip=['dec.b', Leaf]"):
        assert part in r, (part, r)
    for noise in ("mappingproxy", "frozenset", "<class", "MappingProxy"):
        assert noise not in r, r
    assert str(cfg) == r


def test_frozen():
    source = {"round": 0.25}
    cfg = SLLConfig(eps=0.05, kind_eps=source, module_eps={"enc": 0.2}, disabled=["trunc"], skip=["dec"])
    for field in ("eps", "mode", "kind_eps", "module_eps", "module_mode", "disabled", "skip"):
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(cfg, field, getattr(cfg, field))
    with pytest.raises(TypeError):
        cfg.kind_eps["round"] = 0.1
    with pytest.raises(TypeError):
        cfg.module_eps["dec"] = 0.1
    with pytest.raises(AttributeError):
        cfg.disabled.add("sign")
    source["round"] = 0.4           # the caller's dict is copied, not kept
    assert cfg.kind_eps["round"] == 0.25
    assert cfg.disabled == frozenset({"trunc"}) and cfg.skip == ("dec",)
    assert dataclasses.replace(cfg, eps=0.1).eps == 0.1 and cfg.eps == 0.05   # new values, not edits


# ----------------------------------------------------------------------------------------
# eps by kind, group, name, type; priority
# ----------------------------------------------------------------------------------------

def test_float_form_unchanged():
    model = Net()
    a = sll_fx.linearize_module(model, 0.05, verbose=False)
    b = run(SLLConfig(eps=0.05), model)
    assert a.code == b.code
    assert a.sll_report.entries == b.sll_report.entries
    assert {e.eps for e in a.sll_report.rewritten} == {0.05}
    assert all(node_eps(a, n) == 0.05 and n.kwargs["mode"] == "linear" for n in sll_nodes(a) if "eps" in n.kwargs)
    assert a.sll_report.counts == {"found": 22, "rewritten": 22, "hard": 0}, str(a.sll_report)
    h = sll_fx.linearize_module(model, 0.05, mode="hard", verbose=False)
    # (not the selections' soft masks: the linear copies of their comparisons that weigh the branches' gradients)
    assert {n.kwargs["mode"] for n in sll_nodes(h) if "mode" in n.kwargs and not is_soft_mask(n)} == {"hard"}
    assert h.sll_report.mode == "hard"
    assert_bitwise(h(X), model(X))
    # a config carries its own mode: the keyword does not override it
    c = sll_fx.linearize_module(model, SLLConfig(eps=0.05), mode="hard", verbose=False)
    assert {n.kwargs["mode"] for n in sll_nodes(c) if "mode" in n.kwargs} == {"linear"}
    assert SLLConfig.of(0.05) == SLLConfig(eps=0.05)


def test_eps_per_kind():
    gm = run(SLLConfig(eps=0.05, kind_eps={"round": 0.25, "argmax_onehot": 0.3}))
    for (module, kind), eps in eps_table(gm).items():
        assert eps == {"round": 0.25, "argmax_onehot": 0.3}.get(kind, 0.05), (module, kind)


def test_eps_per_group_compare_and_kind_beats_group():
    class Cmp(nn.Module):
        def forward(self, x):
            return (x > 0.1).float() + (x < -0.1).float() + (x >= 1).to(x.dtype) + x.le(2).float() + torch.sign(x)

    gm = run(SLLConfig(eps=0.05, kind_eps={"compare": 0.1}), Cmp())
    assert {e.op: e.eps for e in gm.sll_report.entries} == {"x > t": 0.1, "x < t": 0.1, "x >= t": 0.1,
                                                           "Tensor.le": 0.1, "torch.sign": 0.05}
    gm = run(SLLConfig(eps=0.05, kind_eps={"compare": 0.1, "lt": 0.3}), Cmp())
    assert {e.op: e.eps for e in gm.sll_report.entries}["x < t"] == 0.3
    assert {e.op: e.eps for e in gm.sll_report.entries}["x > t"] == 0.1
    for n in sll_nodes(gm):
        assert node_eps(gm, n) == {"lt": 0.3, "gt": 0.1, "ge": 0.1, "le": 0.1}.get(
            n.args[2] if len(n.args) > 2 else None, 0.05)


class Sel(nn.Module):
    def forward(self, x):
        return torch.where(x > 0.1, x, -x) + x.masked_fill(x < -0.2, 0.0) + torch.sign(x)


@pytest.mark.parametrize("kind", ["select", "where", "masked_fill"])
def test_eps_for_a_selection_kind_is_refused_with_the_fix(kind):
    """A where's band is its comparison's: an eps set on the selection itself would do nothing."""
    with pytest.raises(ValueError, match=rf"{kind}.*comparison.*'compare'"):
        SLLConfig(eps=0.05, kind_eps={kind: 0.3})
    assert SLLConfig(disabled={"select"}).is_disabled("where")


def test_group_compare_reaches_the_selections_band():
    gm = run(SLLConfig(eps=0.05, kind_eps={"compare": 0.3}), Sel())
    eps = {e.op: e.eps for e in gm.sll_report.entries}
    assert eps["torch.where"] == 0.3 and eps["Tensor.masked_fill"] == 0.3
    assert eps["torch.sign"] == 0.05


@pytest.mark.parametrize("kind_eps", [{"compare": 0.1}, {"gt": 0.2, "lt": 0.3}], ids=["compare", "per_cmp"])
def test_selection_entry_eps_is_the_band_it_uses(kind_eps):
    """A where's band is its comparison's (README): its report entry must show that band's eps."""
    gm = run(SLLConfig(eps=0.05, kind_eps=kind_eps), Sel())
    for e in gm.sll_report.rewritten:
        assert e.eps == band_eps(node_of_entry(gm, e)), (e, str(gm.sll_report))


def test_eps_per_submodule_name_longest_wins_prefix_is_a_path():
    gm = run(SLLConfig(eps=0.05, module_eps={"enc": 0.2, "enc.a": 0.01}))
    for (module, kind), eps in eps_table(gm).items():
        expected = 0.01 if module == "enc.a" else 0.2 if module in ("enc", "enc.b") else 0.05
        assert eps == expected, (module, kind, eps)
    assert eps_table(gm)[("enc2", "round")] == 0.05     # "enc" does not cover "enc2"
    # the order of the keys does not matter
    gm2 = run(SLLConfig(eps=0.05, module_eps={"enc.a": 0.01, "enc": 0.2}))
    assert eps_table(gm2) == eps_table(gm)


def test_the_roots_empty_name_covers_the_whole_model_top_level_nodes_included():
    """``""`` is the root's qualified name: module_eps={"": v} set the nodes inside submodules only, a top-level node
    (no module stack) kept the default (a59); set_eps(where="") and an exported graph's stack cover every node."""
    gm = run(SLLConfig(eps=0.05, module_eps={"": 0.2, "enc": 0.1}, kind_eps={"round": 0.3}))
    for (module, kind), eps in eps_table(gm).items():
        expected = 0.1 if module == "enc" or module.startswith("enc.") else 0.2
        assert eps == expected, (module, kind, eps)
    assert ("", "round") in eps_table(gm)
    hard = run(SLLConfig(eps=0.05, module_mode={"": "hard"}))
    moded = [n for n in sll_nodes(hard) if "mode" in n.kwargs and not is_soft_mask(n)]  # (a selection: its mask)
    assert {n.kwargs["mode"] for n in moded} == {"hard"} and any(module_of(n) == "" for n in moded)


def test_eps_per_submodule_type_innermost_and_subclasses():
    gm = run(SLLConfig(eps=0.05, module_eps={Block: 0.2, Leaf: 0.02}))
    for (module, kind), eps in eps_table(gm).items():
        expected = 0.02 if module in LEAF_PATHS else 0.2 if module in ("enc", "dec") else 0.05
        assert eps == expected, (module, kind, eps)
    # order of the type keys does not matter either: innermost wins
    gm2 = run(SLLConfig(eps=0.05, module_eps={Leaf: 0.02, Block: 0.2}))
    assert eps_table(gm2) == eps_table(gm)
    # a type that is not in the model: refused (it selected nothing, silently: a59)
    with pytest.raises(ValueError, match="module_eps names the type Conv2d"):
        run(SLLConfig(eps=0.05, module_eps={nn.Conv2d: 0.3}))


def test_priority_name_type_kind_default():
    cfg = SLLConfig(eps=0.05, kind_eps={"round": 0.25, "compare": 0.1},
                    module_eps={"enc": 0.2, Leaf: 0.02, "dec.b": 0.03})
    gm = run(cfg)

    def expected(module, kind):
        if module == "dec.b":
            return 0.03                         # name beats type (dec.b is a Leaf)
        if module == "enc" or module.startswith("enc."):
            return 0.2                          # name beats type and kind
        if module in LEAF_PATHS:
            return 0.02                         # type beats kind (enc2 is a SubLeaf, dec.a a Leaf)
        # kind beats default; a where/masked_fill shows its comparison's band
        return {"round": 0.25, "gt": 0.1, "where": 0.1, "masked_fill": 0.1}.get(kind, 0.05)
    table = eps_table(gm)
    for (module, kind), eps in table.items():
        assert eps == expected(module, kind), (module, kind, eps)
    assert table[("", "round")] == 0.25 and table[("", "sign")] == 0.05 and table[("dec", "floor")] == 0.05
    assert table[("enc.a", "round")] == 0.2 and table[("dec.a", "gt")] == 0.02


def test_eps_per_node_in_report_entries_and_node_kwargs():
    cfg = SLLConfig(eps=0.05, kind_eps={"round": 0.25, "argmax_onehot": 0.3},
                    module_eps={"enc": 0.2, Leaf: 0.02, "dec.b": 0.03})
    gm = run(cfg)
    assert len(gm.sll_report.rewritten) == len(sll_nodes(gm)) == 22
    seen = set()
    for e in gm.sll_report.rewritten:
        node = node_of_entry(gm, e)
        assert module_of(node) == e.module
        assert band_eps(node) == e.eps, e
        seen.add(node)
    assert seen == set(sll_nodes(gm))

    # and the forward uses it: sign(x - 1) with eps 0.25 has slope 1/eps at x = 1
    class S(nn.Module):
        def forward(self, x):
            return torch.sign(x - 1)

    x = torch.full((1, 3), 1.0, requires_grad=True)
    s = run(SLLConfig(eps=0.05, kind_eps={"sign": 0.25}), S())
    s(x).sum().backward()
    torch.testing.assert_close(x.grad, torch.full((1, 3), 1 / 0.25))


# ----------------------------------------------------------------------------------------
# mode per submodule
# ----------------------------------------------------------------------------------------

class Two(nn.Module):
    def __init__(self):
        super().__init__()
        self.enc = Leaf()
        self.dec = Leaf()

    def forward(self, x):
        return torch.stack([self.enc(x), self.dec(x), torch.round(x)])


def test_mode_per_submodule_name():
    model = Two()
    gm = run(SLLConfig(eps=0.2, module_mode={"dec": "hard"}), model)
    for n in sll_nodes(gm):
        assert n.kwargs["mode"] == ("hard" if module_of(n) == "dec" else "linear"), n
    x = torch.tensor([0.45, 0.55, 0.2, 0.25, 0.0, 0.1, -0.05, 1.5])
    y, ref = gm(x), model(x)
    assert_bitwise(y[1], ref[1])                   # dec: hard forward
    assert not torch.equal(y[0], ref[0])           # enc: the surrogate inside its bands
    assert not torch.equal(y[2], ref[2])
    xg = x.clone().requires_grad_(True)
    gm(xg)[1].sum().backward()
    assert xg.grad.abs().sum() > 0                 # hard mode still has a gradient


def test_mode_per_type_and_name_beats_type_and_default_mode():
    gm = run(SLLConfig(eps=0.2, module_mode={Leaf: "hard", "enc.a": "linear"}))
    for n in sll_nodes(gm):  # (a hard-mode selection's soft mask, its comparison's linear copy, runs linear)
        if is_soft_mask(n):
            assert n.kwargs["mode"] == "linear"
            continue
        path = module_of(n)
        expected = "linear" if path == "enc.a" else "hard" if path in LEAF_PATHS else "linear"
        assert n.kwargs.get("mode", expected) == expected, (path, n)
    gm = run(SLLConfig(eps=0.2, mode="hard", module_mode={"enc": "linear"}))
    for n in sll_nodes(gm):
        if is_soft_mask(n):
            assert n.kwargs["mode"] == "linear"
            continue
        path = module_of(n)
        expected = "linear" if path == "enc" or path.startswith("enc.") else "hard"
        assert n.kwargs.get("mode", expected) == expected, (path, n)
    assert gm.sll_report.mode == "hard"


# ----------------------------------------------------------------------------------------
# disabled kinds, skipped submodules
# ----------------------------------------------------------------------------------------

class Kinds(nn.Module):
    def forward(self, x):
        return (torch.round(x) + torch.floor(x) + torch.sign(x) + (x > 0.1).float() + (x <= -0.3).float()
                + torch.trunc(x) + F.one_hot(x.argmax(-1), 3).float()
                + torch.zeros_like(x).scatter(-1, torch.topk(x, 1, -1).indices, 1.0))


@pytest.mark.parametrize("disabled,off", [
    ({"round"}, {"round"}),
    ({"trunc", "sign"}, {"trunc", "sign"}),
    ({"compare"}, {"gt", "le"}),
    ({"gt"}, {"gt"}),
    ({"argmax_onehot"}, {"argmax_onehot"}),
    ({"topk_mask"}, {"topk_mask"}),
], ids=["round", "trunc_sign", "group_compare", "gt", "argmax_onehot", "topk_mask"])
def test_disabled_kinds_are_hard_with_reason(disabled, off):
    model = Kinds()
    gm = run(SLLConfig(eps=0.05, disabled=disabled), model)
    kinds = {"torch.round": "round", "torch.floor": "floor", "torch.sign": "sign", "x > t": "gt", "x <= t": "le",
             "torch.trunc": "trunc", "torch.one_hot": "argmax_onehot", "Tensor.scatter": "topk_mask"}
    report = gm.sll_report
    assert {e.op for e in report.entries} == set(kinds), str(report)
    for e in report.entries:
        if kinds[e.op] in off:
            assert not e.rewritten and e.eps is None, e
            assert "switched off" in e.reason and kinds[e.op] in e.reason, e.reason
        else:
            assert e.rewritten and e.reason == "", e
    assert report.counts["hard"] == len([k for k in kinds.values() if k in off])
    names = {sll_op_name(n.target) + (f"({n.args[2]})" if len(n.args) > 2 and isinstance(n.args[2], str) else "")
             for n in sll_nodes(gm)}
    for kind in off:
        assert not any(kind in name for name in names), (kind, names)
    x = torch.tensor([[0.0, 0.5, -0.3], [0.1, 1.5, -2.5], [INF, -INF, NAN], [0.3, 0.3, 0.1]])
    assert_bitwise(sll_fx.export_hard(gm, verbose=False)(x), model(x))


@pytest.mark.parametrize("disabled", [{"select"}, {"where", "masked_fill"}], ids=["group", "kinds"])
def test_disabled_selections(disabled):
    model = Sel()
    gm = run(SLLConfig(eps=0.05, disabled=disabled), model)
    by_op = {e.op: e for e in gm.sll_report.entries}
    for op in ("torch.where", "Tensor.masked_fill"):
        assert not by_op[op].rewritten and "switched off" in by_op[op].reason
    assert [sll_op_name(n.target) for n in sll_nodes(gm)] == ["sign"]
    x = torch.tensor([0.1, 0.11, -0.2, -0.25, 0.0, INF, -INF, NAN])
    assert_bitwise(gm(x) - torch.ops.sll.sign(x, eps=0.05), model(x) - torch.sign(x))
    assert_bitwise(sll_fx.export_hard(gm, verbose=False)(x), model(x))


def test_disabled_comparison_feeding_a_where_is_reported_switched_off():
    gm = run(SLLConfig(eps=0.05, disabled={"compare"}), Sel())
    report = gm.sll_report
    assert not report.rewritten[1:] and [e.op for e in report.rewritten] == ["torch.sign"]
    for e in report.entries:
        if e.op in ("x > t", "x < t"):
            assert not e.rewritten
            assert "switched off" in e.reason, e.reason   # not "cast it with .float() to linearize"
        if e.op in ("torch.where", "Tensor.masked_fill"):
            assert not e.rewritten and "switched off" in e.reason


@pytest.mark.parametrize("skip,skipped", [
    (("enc.a",), ("enc.a",)),
    (("enc",), ("enc", "enc.a", "enc.b")),
    ((Leaf,), LEAF_PATHS),
    (("dec", SubLeaf), ("dec", "dec.a", "dec.b", "enc2")),
], ids=["leaf_name", "prefix", "type", "name_and_subtype"])
def test_skip_leaves_submodules_as_they_are(skip, skipped):
    model = Net()
    gm = run(SLLConfig(eps=0.05, skip=skip), model)
    modules = {e.module for e in gm.sll_report.entries}
    assert not modules & set(skipped), modules
    assert modules == {"", "enc", "enc.a", "enc.b", "enc2", "dec", "dec.a", "dec.b"} - set(skipped)
    assert not [n for n in sll_nodes(gm) if module_of(n) in skipped]
    # the skipped submodules still compute their hard ops: traced through (hard nodes in the graph)
    # or called as they are (a call_module node)
    hard_here = {module_of(n) for n in gm.graph.nodes if n.op == "call_function" and n.target is torch.round}
    called = {n.target for n in gm.graph.nodes if n.op == "call_module"}
    for path in (p for p in skipped if p in LEAF_PATHS):
        parts = path.split(".")
        assert path in hard_here or any(".".join(parts[:i]) in called for i in range(1, len(parts) + 1)), gm.code
    assert_bitwise(sll_fx.export_hard(gm, verbose=False)(X), model(X))


def test_skipped_submodule_computes_exactly_the_hard_op():
    model = Two()
    gm = run(SLLConfig(eps=0.2, skip=("dec",)), model)
    x = torch.tensor([0.45, 0.55, 0.2, 0.25, 0.0, 0.1, -0.05, 1.5, INF, -INF, NAN])
    y, ref = gm(x), model(x)
    assert_bitwise(y[1], ref[1])               # dec: untouched
    assert not torch.equal(y[0], ref[0])       # enc: the surrogate inside its bands
    assert {e.module for e in gm.sll_report.entries} == {"enc", ""}


# ----------------------------------------------------------------------------------------
# errors
# ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs,name", [
    ({"kind_eps": {"rnd": 0.1}}, "rnd"),
    ({"kind_eps": {"where_": 0.1}}, "where_"),
    ({"disabled": {"signn"}}, "signn"),
    ({"disabled": ["compare", "cmp"]}, "cmp"),
], ids=["kind_eps", "kind_eps2", "disabled", "disabled_list"])
def test_unknown_kind_is_a_value_error_naming_it(kwargs, name):
    with pytest.raises(ValueError) as info:
        SLLConfig(**kwargs)
    assert repr(name) in str(info.value) or name in str(info.value)


@pytest.mark.parametrize("kwargs,name", [
    ({"module_eps": {"encoder": 0.1}}, "encoder"),
    ({"module_eps": {"enc.c": 0.1}}, "enc.c"),
    ({"module_mode": {"decoder": "hard"}}, "decoder"),
    ({"skip": ("enc.a.x",)}, "enc.a.x"),
], ids=["module_eps", "nested", "module_mode", "skip"])
def test_unknown_submodule_name_is_a_value_error_naming_it(kwargs, name):
    model = Net()
    before = [(k, v.clone()) for k, v in model.state_dict().items()]
    cfg = SLLConfig(**kwargs)   # names are checked against the model
    with pytest.raises(ValueError) as info:
        sll_fx.linearize_module(model, cfg, verbose=False)
    assert name in str(info.value)
    assert [k for k, _ in before] == list(model.state_dict())


@pytest.mark.parametrize("kwargs,table,name", [
    ({"module_eps": {nn.BatchNorm1d: 0.1}}, "module_eps", "BatchNorm1d"),
    ({"module_mode": {nn.Conv2d: "hard"}}, "module_mode", "Conv2d"),
    ({"skip": (nn.Conv2d,)}, "skip", "Conv2d"),
    ({"module_eps": {Leaf: 0.2, Net: 0.1}}, "module_eps", "Net"),
], ids=["module_eps", "module_mode", "skip", "the_model_itself"])
def test_a_module_type_the_model_does_not_hold_is_a_value_error_naming_it(kwargs, table, name):
    """Accepted silently and selecting nothing, where a misspelled name was refused (a58); types the model holds
    (its own submodules', a base of them, a torch.nn leaf's) are taken."""
    model = Net()
    with pytest.raises(ValueError) as info:
        sll_fx.linearize_module(model, SLLConfig(**kwargs), verbose=False)
    text = str(info.value)
    assert text.startswith(f"SLLConfig: {table} names the type {name}, and Net holds no submodule of it")
    assert "(its submodules' types: Block, LayerNorm, Leaf, SubLeaf)\nFix: drop " + f"{name} from {table}" in text
    assert ("Net is the model itself" in text) == (name == "Net")
    gm = sll_fx.linearize_module(model, SLLConfig(eps=0.1, module_eps={Leaf: 0.2, nn.Module: 0.3},
                                                  skip=(nn.LayerNorm,)), verbose=False)
    assert gm.sll_report.rewritten


@pytest.mark.parametrize("kwargs,name", [
    ({"module_eps": {int: 0.1}}, "int"),
    ({"module_mode": {torch.Tensor: "hard"}}, "Tensor"),
    ({"skip": (3,)}, "3"),
    ({"skip": (nn.Linear(2, 2),)}, "Linear"),
], ids=["int_type", "tensor_type", "int_key", "module_instance"])
def test_non_module_type_is_a_value_error_naming_it(kwargs, name):
    with pytest.raises(ValueError) as info:
        SLLConfig(**kwargs)
    assert name in str(info.value)


@pytest.mark.parametrize("kwargs,named", [
    ({"eps": 0.0}, "0.0"),
    ({"eps": -1.0}, "-1.0"),
    ({"eps": NAN}, "nan"),
    ({"eps": INF}, "inf"),
    ({"eps": "0.1"}, "str"),
    ({"kind_eps": {"round": 0.0}}, "0.0"),
    ({"kind_eps": {"compare": -0.5}}, "-0.5"),
    ({"module_eps": {"enc": NAN}}, "nan"),
    ({"module_eps": {Leaf: -2.0}}, "-2.0"),
    ({"mode": "soft"}, "soft"),
    ({"mode": None}, "None"),
    ({"module_mode": {"enc": "Linear"}}, "Linear"),
    ({"module_mode": {Leaf: "straight-through"}}, "straight-through"),
], ids=["eps0", "eps_neg", "eps_nan", "eps_inf", "eps_str", "kind0", "group_neg", "module_nan", "type_neg",
        "mode", "mode_none", "module_mode", "type_mode"])
def test_bad_eps_or_mode_is_a_value_error_naming_it(kwargs, named):
    with pytest.raises(ValueError) as info:
        SLLConfig(**kwargs)
    assert named in str(info.value), str(info.value)


@pytest.mark.parametrize("eps", ["AUTO", "0.1", "Auto"])
def test_an_eps_string_other_than_auto_says_so(eps):
    """``eps="AUTO"`` said only "eps must be a Python float, got str" (a58)."""
    with pytest.raises(sll_fx.EpsError, match=rf"eps='{eps}' \(a str\) is neither a number nor \"auto\"\nFix: "
                                              r"eps=\"auto\""):
        sll_fx.linearize_module(Net(), eps=eps, verbose=False)


def test_eps_too_wide_for_the_op_from_a_config_raises_naming_the_node():
    model = Net()
    with pytest.raises(sll_fx.EpsError) as info:
        run(SLLConfig(eps=0.05, module_eps={"enc.a": 0.7}), model)
    msg = str(info.value)
    assert "round" in msg and "0.5" in msg and "node '" in msg


def test_eps_too_wide_only_for_a_disabled_kind_is_not_an_error():
    """round is switched off, so its limit (0.5) does not apply; 0.7 is fine for the single-jump ops."""
    model = Net()
    gm = run(SLLConfig(eps=0.05, module_eps={"enc.a": 0.7}, disabled={"round"}), model)
    assert {e.eps for e in gm.sll_report.rewritten if e.module == "enc.a"} == {0.7}


# ----------------------------------------------------------------------------------------
# module_mode with an estimator (method="ste"/"sigmoid"): refused, it would be ignored
# ----------------------------------------------------------------------------------------

class _HeadBody(nn.Module):
    def __init__(self):
        super().__init__()
        self.head = Leaf()
        self.body = Leaf()

    def forward(self, a, b):
        return self.head(a), self.body(b)


@pytest.mark.parametrize("method", ["ste", "sigmoid"])
def test_module_mode_with_an_estimator_method_is_a_value_error(method):
    with pytest.raises(ValueError, match=f"module_mode=\\{{'head': 'linear'\\}} cannot be combined with "
                                         f"method='{method}'.*drop module_mode, or use method='sll'"):
        SLLConfig(eps=0.1, method=method, module_mode={"head": "linear"})
    config = SLLConfig(eps=0.1, module_mode={"head": "hard"})   # method given to linearize_module
    with pytest.raises(ValueError, match=f"method='{method}'"):
        sll_fx.linearize_module(_HeadBody(), config, method=method, verbose=False)
    # without module_mode the estimator works, with module_eps too (sigmoid's tau)
    gm = sll_fx.linearize_module(_HeadBody(), SLLConfig(eps=0.1, method=method, module_eps={"head": 0.2}),
                                 verbose=False)
    assert {e.mode for e in gm.sll_report.rewritten} == {method}
    # module_mode with method="sll" is what it is for: head runs the linear surrogate, body the hard op
    gm = sll_fx.linearize_module(_HeadBody(), SLLConfig(eps=0.1, module_mode={"body": "hard"}), verbose=False)
    x = torch.tensor([0.55])
    head, body = gm(x, x)
    assert body.item() == 1.0 + 1.0 + 1.0          # round(0.55) + (0.55 > t) + sign(0.55), hard
    assert head.item() == pytest.approx(0.75 + 1.0 + 1.0)   # round's linear surrogate in its band: 0.75


@pytest.mark.parametrize("eps", [pytest.param(torch.tensor(0.1), id="tensor"),
                                 pytest.param(torch.tensor([0.1]), id="one-element"),
                                 pytest.param(__import__("numpy").float32(0.1), id="numpy")])
def test_numpy_and_one_element_tensor_eps_are_floats(eps):
    # (linearize_module refused them, "eps must be a Python float", where set_eps takes them)
    class Round(nn.Module):
        def forward(self, x):
            return torch.round(x)

    gm = sll_fx.linearize_module(Round(), eps, verbose=False)
    assert [e.eps for e in gm.sll_report.rewritten] == [float(eps)]
    assert isinstance(SLLConfig(eps=eps, kind_eps={"round": eps}, module_eps={nn.Linear: eps}).eps, float)
    with pytest.raises(sll_fx.EpsError, match="Python float"):
        SLLConfig(eps=torch.tensor([0.1, 0.2]))


class _WhereIntoRound(nn.Module):
    def forward(self, x):
        h = torch.where(x > 0.2, x * 3, x)
        return torch.round(h) + h


def test_a_selection_left_hard_by_a_switched_off_reader_names_it():
    """disabled={"round"} leaves a where read by that round hard (documented); its reason named neither the round
    nor the setting ("read as an integer or a mask further on (a cast, an index, a logical op)")."""
    gm = sll_fx.linearize_module(_WhereIntoRound(), SLLConfig(eps=0.05, disabled={"round"}), verbose=False)
    entry = next(e for e in gm.sll_report.hard if e.node == "where")
    assert "by torch.round (round_1)" in entry.reason
    assert "rule 'round' is switched off by the config" in entry.reason


class _Legacy(nn.Module):
    def forward(self, x):
        return torch.round(x) + torch.where(x > 0.2, x, 0.0)


class _WithLegacy(nn.Module):
    def __init__(self):
        super().__init__()
        self.legacy = _Legacy()

    def forward(self, x):
        return torch.sign(x) + self.legacy(x)


def test_skipped_submodules_are_listed_in_the_report():
    """Before: a skipped submodule (discrete ops inside, left as they are) appeared nowhere in the report."""
    gm = sll_fx.linearize_module(_WithLegacy(), SLLConfig(eps=0.05, skip=("legacy",)), verbose=False)
    assert gm.sll_report.skipped == ["legacy"]
    assert "1 submodule(s) skipped by the config, not looked into: legacy" in str(gm.sll_report)
    assert [e.node for e in gm.sll_report.entries] == ["sign"]
    by_type = sll_fx.linearize_module(_WithLegacy(), SLLConfig(eps=0.05, skip=(_Legacy,)), verbose=False)
    assert by_type.sll_report.skipped == ["legacy"]


def test_an_eps_on_the_meta_device_is_an_eps_error_naming_the_config():
    """A meta tensor holds no value: linearize_module and SLLConfig raised torch's "Tensor.item() cannot be called on
    meta tensors" (audit)."""
    meta = torch.tensor(0.1, device="meta")
    with pytest.raises(sll_fx.EpsError, match=r"^SLLConfig: eps is a tensor on the 'meta' device, which holds no value "
                                              r"to read\nFix: pass a Python float \(eps=0.1\)"):
        sll_fx.linearize_module(Net(), meta, verbose=False)
    with pytest.raises(sll_fx.EpsError, match=r"^SLLConfig: eps is a tensor on the 'meta' device"):
        SLLConfig(kind_eps={"round": meta})


def test_a_single_string_is_one_name_for_disabled_and_skip():
    """A str was iterated letter by letter: disabled="round" said "unknown rule kind 'r'", skip="enc" "no submodule
    named 'e'" (audit)."""
    assert SLLConfig(disabled="round") == SLLConfig(disabled={"round"})
    assert SLLConfig(skip="enc") == SLLConfig(skip=["enc"]) and SLLConfig(skip=Leaf).skip == (Leaf,)
    model = Net()
    single, listed = run(SLLConfig(eps=0.05, skip="enc", disabled="round"), model), \
        run(SLLConfig(eps=0.05, skip=["enc"], disabled=["round"]), model)
    assert [(e.node, e.rewritten, e.reason) for e in single.sll_report.entries] == \
        [(e.node, e.rewritten, e.reason) for e in listed.sll_report.entries]
    assert_bitwise(single(X), listed(X))


@pytest.mark.parametrize("kwargs,message", [
    ({"kind_eps": [("round", 0.1)]}, r"kind_eps must be a dict, got list \[\('round', 0.1\)\]\nFix: kind_eps=\{'round': 0.1\}"),
    ({"module_eps": 0.1}, r"module_eps must be a dict, got float 0.1\nFix: module_eps=\{'encoder': 0.1\}"),
    ({"module_mode": "hard"}, r"module_mode must be a dict, got str 'hard'\nFix: module_mode=\{'encoder': 'hard'\}"),
    ({"disabled": None}, r"disabled must be a collection of names, got NoneType None\nFix: disabled="),
    ({"skip": 3}, r"skip must be a collection of names, got int 3\nFix: skip="),
], ids=["kind_eps_pairs", "module_eps_float", "module_mode_str", "disabled_none", "skip_int"])
def test_a_table_of_the_wrong_type_is_a_type_error_naming_it(kwargs, message):
    # (kind_eps=[("round", 0.1)] raised "'list' object has no attribute 'items'"; audit)
    with pytest.raises(TypeError, match=rf"^SLLConfig: {message}"):
        SLLConfig(**kwargs)


class _Blk(nn.Module):
    def forward(self, x):
        return torch.round(x)


class _Parent(nn.Module):
    def __init__(self, blk):
        super().__init__()
        self.blk = blk

    def forward(self, x):
        return self.blk(x)


class _SharedBlock(nn.Module):  # encoder.blk is dec.blk
    def __init__(self):
        super().__init__()
        blk = _Blk()
        self.encoder, self.dec = _Parent(blk), _Parent(blk)
        self.act = nn.ReLU()
        self.encoder.act = self.dec.act = self.act  # (a shared torch.nn leaf: no code of its own to set)

    def forward(self, x):
        return self.encoder(x) + 10 * self.dec(x)


def _eps_and_modes(gm):
    return [(e.module, e.eps, e.mode) for e in gm.sll_report.rewritten]


@pytest.mark.parametrize("config, expected", [
    (dict(module_eps={"encoder": 0.1, "dec": 0.3}), [("encoder.blk", 0.1, "linear"), ("dec.blk", 0.3, "linear")]),
    (dict(module_eps={"dec": 0.3, "encoder": 0.1}), [("encoder.blk", 0.1, "linear"), ("dec.blk", 0.3, "linear")]),
    (dict(module_eps={"dec": 0.3}), [("encoder.blk", 0.05, "linear"), ("dec.blk", 0.3, "linear")]),
    (dict(module_eps={"dec.blk": 0.3}), [("encoder.blk", 0.05, "linear"), ("dec.blk", 0.3, "linear")]),
    (dict(module_eps={"encoder.blk": 0.2}), [("encoder.blk", 0.2, "linear"), ("dec.blk", 0.05, "linear")]),
    (dict(module_eps={_Blk: 0.2}), [("encoder.blk", 0.2, "linear"), ("dec.blk", 0.2, "linear")]),
    (dict(module_mode={"encoder": "hard"}), [("encoder.blk", 0.05, "hard"), ("dec.blk", 0.05, "linear")]),
    (dict(skip=("encoder",)), [("dec.blk", 0.05, "linear")]),
])
def test_a_module_shared_by_two_parents_takes_the_setting_of_the_parent_calling_it(config, expected):
    """Before: the shared block's nodes were named by its first path (encoder.blk), so skip=("encoder",) also left
    the call through dec hard and unreported (gradient 0), module_eps for dec reached it or not by dict order, and
    'dec.blk' was 'no submodule named'.  Each call is now named by the path it was made through."""
    gm = sll_fx.linearize_module(_SharedBlock(), SLLConfig(eps=0.05, **config), verbose=False)
    assert _eps_and_modes(gm) == expected
    if "skip" in config:
        x = torch.tensor([0.48, 1.52], requires_grad=True)
        gm(x).sum().backward()
        assert x.grad.tolist() == [100.0, 100.0]  # 10 * 1/(2 * 0.05), through dec
    assert sll_fx.set_eps(sll_fx.linearize_module(_SharedBlock(), 0.05, verbose=False), 0.2, where="dec") == ["round_2"]


def test_another_name_of_a_module_called_by_iterating_is_refused_with_its_first_name():
    """ALBERT-style: three names of one block, called by iterating the container: every call is named 'layers.0'."""
    class Shared(nn.Module):
        def __init__(self):
            super().__init__()
            self.layers = nn.ModuleList([_Blk()] * 3)

        def forward(self, x):
            for layer in self.layers:
                x = layer(x) * 1.5 + 0.3  # (not * 1.5 alone: multiples of 1.5 hold half-integers, round's jumps)
            return x

    with pytest.raises(ValueError, match=r"'layers.2' is another name of the submodule 'layers.0'.*\nFix: use "
                                         r"'layers.0'"):
        sll_fx.linearize_module(Shared(), SLLConfig(eps=0.05, module_eps={"layers.2": 0.2}), verbose=False)
    gm = sll_fx.linearize_module(Shared(), SLLConfig(eps=0.05, module_eps={"layers.0": 0.2}), verbose=False)
    assert [e.eps for e in gm.sll_report.rewritten] == [0.2, 0.2, 0.2]


class _Untraceable(nn.Module):  # kept opaque (a data-dependent branch); its child is traced
    def __init__(self):
        super().__init__()
        self.inner = _Blk()

    def forward(self, x):
        if x.sum() > -1e9:
            return self.inner(x)
        return x


class _SharedOpaque(nn.Module):
    def __init__(self):
        super().__init__()
        blk = _Untraceable()
        self.encoder, self.dec = _Parent(blk), _Parent(blk)

    def forward(self, x):
        return self.encoder(x) + 10 * self.dec(x)


@pytest.mark.parametrize("config", [dict(module_mode={"dec": "hard"}), dict(module_eps={"dec": 0.01}),
                                    dict(module_eps={"encoder": 0.01})])
def test_a_setting_for_one_parent_of_a_shared_opaque_module_is_refused(config):
    """Its copy runs one graph for every call, named by its first path: the setting for dec was accepted and did
    nothing (gm 4.5 at x = 0.455, as with no setting, where a traced block gives 5.0)."""
    with pytest.raises(ValueError, match=r"kept opaque that is shared with another parent.*\nFix: set it for "
                                         r"'encoder.blk'"):
        sll_fx.linearize_module(_SharedOpaque(), SLLConfig(eps=0.1, **config), verbose=False)
    gm = sll_fx.linearize_module(_SharedOpaque(), SLLConfig(eps=0.1, module_eps={"encoder.blk": 0.05}), verbose=False)
    assert sll_fx.eps_state(gm) == {"encoder.blk.inner.round_1": 0.05}


class _UnusedAlias(nn.Module):
    def __init__(self):
        super().__init__()
        self.layers = nn.Sequential(nn.Linear(4, 4), _Untraceable())
        self.last = self.layers[-1]  # a convenience alias no forward calls

    def forward(self, x):
        return self.layers(x)


def test_an_alias_no_forward_calls_does_not_count_as_another_parent():
    gm = sll_fx.linearize_module(_UnusedAlias(), SLLConfig(eps=0.1, module_eps={"layers": 0.05}), verbose=False)
    assert list(sll_fx.eps_state(gm).values()) == [0.05]


class _ReachingParent(nn.Module):
    def __init__(self, blk, spelling):
        super().__init__()
        self.blk, self.spelling = blk, spelling

    def forward(self, x):
        if self.spelling == "getattr":
            return getattr(self, "blk")(x)
        return [m for m in self.children()][0](x)


class _SharedReached(nn.Module):
    def __init__(self, spelling):
        super().__init__()
        blk = _Untraceable()
        self.encoder, self.dec = _Parent(blk), _ReachingParent(blk, spelling)

    def forward(self, x):
        return self.encoder(x) + 10 * self.dec(x)


@pytest.mark.parametrize("spelling", ["getattr", "children"])
def test_a_parent_reaching_a_shared_opaque_module_otherwise_still_counts(spelling):
    """Before: only self.<name> counted as a call, so module_mode={'dec': 'hard'} was accepted and did nothing."""
    with pytest.raises(ValueError, match="kept opaque that is shared with another parent"):
        sll_fx.linearize_module(_SharedReached(spelling), SLLConfig(eps=0.1, module_mode={"dec": "hard"}),
                                verbose=False)


class _AliasAndGetattr(_UnusedAlias):
    def forward(self, x):
        return getattr(torch.nn.functional, "relu")(self.layers(x))


class _ViaHelper(nn.Module):
    def __init__(self, blk):
        super().__init__()
        self.blk = blk

    def forward(self, x):
        return _run_block(self, x)


def _run_block(m, x):
    return m.blk(x)


class _SharedViaHelper(nn.Module):
    def __init__(self):
        super().__init__()
        blk = _Untraceable()
        self.encoder, self.dec = _Parent(blk), _ViaHelper(blk)

    def forward(self, x):
        return self.encoder(x) + 10 * self.dec(x)


def test_getattr_on_another_object_does_not_count_as_reaching_every_child():
    """Before (00c1879): any getattr in the parent's forward made the unused alias a call again: refused."""
    gm = sll_fx.linearize_module(_AliasAndGetattr(), SLLConfig(eps=0.1, module_eps={"layers": 0.05}), verbose=False)
    assert list(sll_fx.eps_state(gm).values()) == [0.05]


def test_a_parent_handing_self_to_a_helper_reaches_the_shared_opaque_module():
    with pytest.raises(ValueError, match="kept opaque that is shared with another parent"):
        sll_fx.linearize_module(_SharedViaHelper(), SLLConfig(eps=0.1, module_mode={"dec": "hard"}), verbose=False)


class _SuperStoredParent(_Parent):
    def forward(self, x):
        s = super()
        return s.forward(x) * 2


class _SharedViaStoredSuper(nn.Module):
    def __init__(self):
        super().__init__()
        blk = _Untraceable()
        self.encoder, self.dec = _Parent(blk), _SuperStoredParent(blk)

    def forward(self, x):
        return self.encoder(x) + 10 * self.dec(x)


@pytest.mark.parametrize("config", [dict(module_mode={"dec": "hard"}), dict(module_eps={"dec": 0.01})])
def test_a_parent_reaching_a_shared_opaque_module_through_a_stored_super_counts(config):
    """Before: ``s = super(); s.forward(x)`` read no attribute of self nor of super(), so dec did not count as calling
    its blk: the setting was accepted and changed nothing (eps_state {'encoder.blk.inner.round_1': 0.1}, gm equal to
    the one without it)."""
    with pytest.raises(ValueError, match=r"the setting for 'dec' covers 'dec.blk', a submodule kept opaque that is "
                                         r"shared with another parent.*\nFix: set it for 'encoder.blk'"):
        sll_fx.linearize_module(_SharedViaStoredSuper(), SLLConfig(eps=0.1, **config), verbose=False)


class _EqCallsItsBlock(nn.Module):
    """A parent whose ``__eq__`` calls the shared block: ``self == x`` reaches it."""

    def __init__(self, blk):
        super().__init__()
        self.blk = blk

    def __eq__(self, other):
        return self.blk(other)

    __hash__ = nn.Module.__hash__

    def forward(self, x):
        return (self == x) * 2


class _SharedViaEq(nn.Module):
    def __init__(self):
        super().__init__()
        blk = _Untraceable()
        self.encoder, self.dec = _Parent(blk), _EqCallsItsBlock(blk)

    def forward(self, x):
        return self.encoder(x) + 10 * self.dec(x)


def test_a_parent_comparing_self_with_its_own_eq_reaches_the_shared_opaque_module():
    """Before (d29640f): ``self == x`` counted as inert, so a parent whose ``__eq__`` calls the shared opaque block
    did not count: ``module_mode={"dec": "hard"}`` was accepted and changed nothing."""
    with pytest.raises(ValueError, match="kept opaque that is shared with another parent"):
        sll_fx.linearize_module(_SharedViaEq(), SLLConfig(eps=0.1, module_mode={"dec": "hard"}), verbose=False)


class _LogsItsType(_UnusedAlias):
    def forward(self, x):
        name = type(self).__name__
        return self.layers(x) if name else x


class _ChecksIsinstance(_UnusedAlias):
    def forward(self, x):
        if isinstance(self, nn.Module) and self is not x and f"{self!r}":
            return self.layers(x)
        return x


@pytest.mark.parametrize("cls", [_LogsItsType, _ChecksIsinstance])
def test_self_handed_to_a_builtin_that_cannot_call_it_does_not_reach_the_unused_alias(cls):
    """Before: any load of self not followed by an attribute counted as handing it on, so type(self).__name__ or
    isinstance(self, nn.Module) made the unused alias self.last a second parent of the opaque layers.1: the
    setting was refused with 'kept opaque that is shared with another parent'."""
    gm = sll_fx.linearize_module(cls(), SLLConfig(eps=0.1, module_eps={"layers": 0.05}), verbose=False)
    assert sll_fx.eps_state(gm) == {"layers.1.inner.round_1": 0.05}


def _shadowing_type():
    """A class whose module binds the global name ``type`` to a function of its own (which could call the module)."""
    space = {"_UnusedAlias": _UnusedAlias, "type": lambda m: m}
    exec("class ShadowedType(_UnusedAlias):\n"
         "    def forward(self, x):\n"
         "        return self.layers(x) if type(self) else x\n", space)
    return space["ShadowedType"]


def test_self_handed_to_a_global_shadowing_a_builtin_still_reaches_every_child():
    with pytest.raises(ValueError, match="kept opaque that is shared with another parent"):
        sll_fx.linearize_module(_shadowing_type()(), SLLConfig(eps=0.1, module_eps={"layers": 0.05}), verbose=False)


class _HeldDeeper(nn.Module):
    """A parent reaching its blk through what an attribute holds, deeper than a flat list, or a decorated forward."""

    def __init__(self, blk, spelling):
        super().__init__()
        self.blk, self.spelling = blk, spelling
        self.held = {"nested list": [[blk]], "pairs": [("b", blk)], "namespace": types.SimpleNamespace(m=blk),
                     "partial": functools.partial(lambda m, x: m(x), blk), "bound method": blk.__call__}.get(spelling)

    def forward(self, x):
        if self.spelling == "nested list":
            return [m for group in self.held for m in group][0](x)
        if self.spelling == "pairs":
            return self.held[0][1](x)
        if self.spelling == "namespace":
            return self.held.m(x)
        if self.spelling == "__dict__":
            return self.__dict__["_modules"]["blk"](x)
        return self.held(x)


def _passing(fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        return fn(*args, **kwargs)
    return wrapper


class _DecoratedParent(_Parent):
    @_passing
    def forward(self, x):
        return self.blk(x)


class _SharedHeldDeeper(nn.Module):
    def __init__(self, spelling):
        super().__init__()
        blk = _Untraceable()
        self.encoder = _Parent(blk)
        self.dec = _DecoratedParent(blk) if spelling == "decorated forward" else _HeldDeeper(blk, spelling)

    def forward(self, x):
        return self.encoder(x) + 10 * self.dec(x)


@pytest.mark.parametrize("spelling", ["nested list", "pairs", "namespace", "partial", "bound method", "__dict__",
                                      "decorated forward"])
def test_a_parent_reaching_a_shared_opaque_module_through_what_an_attribute_holds_counts(spelling):
    """Before: only a flat list, tuple or dict attribute holding the module counted (and only forward's own code, not
    a decorated forward's), so module_mode={'dec': 'hard'} through [[blk]], [("b", blk)], a SimpleNamespace, a
    functools.partial, blk.__call__, self.__dict__ or a functools.wraps decorator was accepted and changed nothing
    (eps_state {'encoder.blk.inner.round_1': 0.1}, gm equal to the one without it)."""
    model = _SharedHeldDeeper(spelling)
    x = torch.linspace(-1, 1, 8).reshape(2, 4)
    assert torch.equal(model(x), model.encoder(x) + 10 * model.encoder(x))
    with pytest.raises(ValueError, match=r"the setting for 'dec' covers 'dec.blk', a submodule kept opaque that is "
                                         r"shared with another parent"):
        sll_fx.linearize_module(model, SLLConfig(eps=0.1, module_mode={"dec": "hard"}), verbose=False)

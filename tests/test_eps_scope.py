"""Which eps calibration and set_eps touch, and that compiled code follows them.

- explicit ops in the model (``sll_fx.round(h, 0.05)``) keep the user's eps through ``eps="auto"``
  calibration and ``sll_fx.calibrate``; ``linearize_module`` gives them an eps buffer, so ``set_eps``
  reaches compiled code there too;
- ``SLLConfig(eps="auto", kind_eps=..., module_eps=...)``: only the nodes left to "auto" are calibrated;
- ``calibrate``/``freeze_eps``/``is_calibrating`` take the ``torch.compile`` wrapper;
- config errors name the dict and the key; report entries carry their mode.
"""

import copy
import pickle
import re

import pytest
import torch
from torch import fx, nn

import sll_fx
from sll_fx.annealing import _eps_nodes, node_eps
from sll_fx.diagnostics import sll_node_names
from sll_fx.errors import EpsError, ModeError
from sll_fx.graph_module import EPS_PREFIX
from sll_fx.ops import DEFAULT_EPS, is_sll_target
from sll_fx.report import Entry


def eps_of(gm) -> dict[str, float]:
    return {n.name: node_eps(m, n) for m, n in _eps_nodes(gm)}


def entry_eps_of(gm) -> dict[str, float]:
    """As eps_of, keyed by the names calibrate returns: the report's (gt, not compare)."""
    names = {n: name for path, m in gm.named_modules() if isinstance(m, fx.GraphModule)
             for n, name in sll_node_names(m.graph, path).items()}
    return {names[n]: node_eps(m, n) for m, n in _eps_nodes(gm)}


def data(n=256, width=8, seed=0):
    return torch.randn(n, width, generator=torch.Generator().manual_seed(seed))


class Counter:
    """A dynamo backend running the captured graph as it is; counts the graphs it is handed and keeps,
    per graph, the eps argument of each sll call (an fx.Node: an input of the graph)."""

    def __init__(self):
        self.n = 0
        self.eps_args: list[list] = []

    def __call__(self, g, example_inputs):
        self.n += 1
        self.eps_args.append([n.kwargs.get("eps") for n in g.graph.nodes
                              if n.op == "call_function" and is_sll_target(n.target)])
        return g.forward


@pytest.fixture(autouse=True)
def _fresh(fresh_dynamo):  # (conftest.py)
    yield


# ----------------------------------------------------------------------------------------
# 1. explicit ops keep the user's eps through calibration
# ----------------------------------------------------------------------------------------

class ExplicitRound(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(8, 8)

    def forward(self, x):
        h = self.fc(x)
        return sll_fx.round(h * 3, 0.05) + torch.sign(h)   # explicit op, eps chosen by the user


def test_auto_calibration_leaves_explicit_ops_alone():
    torch.manual_seed(0)
    gm = sll_fx.linearize_module(ExplicitRound(), verbose=False)
    assert eps_of(gm) == {"round_1": 0.05, "sign": DEFAULT_EPS}
    assert [(e.node, e.auto) for e in gm.sll_report.entries] == [("sign", True)]   # round_1 is no entry
    x = data()
    gm(x)
    eps = eps_of(gm)
    assert eps["round_1"] == 0.05 and eps["sign"] != DEFAULT_EPS
    # the explicit op computes with the user's eps
    h = gm.fc(x)
    torch.testing.assert_close(gm(x), torch.ops.sll.round(h * 3, eps=0.05) + torch.ops.sll.sign(h, eps=eps["sign"]))
    # an explicit calibrate does the same: only the rewritten node
    chosen = sll_fx.calibrate(gm, data(seed=1), target=0.5)
    assert list(chosen) == ["sign"] and eps_of(gm) == {"round_1": 0.05, "sign": chosen["sign"]}
    assert [(e.node, e.eps) for e in gm.sll_report.entries] == [("sign", chosen["sign"])]


def test_explicit_op_gets_an_eps_buffer_holding_its_literal():
    gm = sll_fx.linearize_module(ExplicitRound(), 0.2, verbose=False)
    (node,) = [n for n in gm.graph.nodes if n.name == "round_1"]
    eps = node.kwargs["eps"]
    assert isinstance(eps, fx.Node) and eps.op == "get_attr" and eps.target == EPS_PREFIX + "round_1"
    buf = getattr(gm, EPS_PREFIX + "round_1")
    assert buf.dtype == torch.float64 and buf.shape == () and float(buf) == 0.05
    assert EPS_PREFIX + "round_1" not in gm.state_dict()
    assert eps_of(gm) == {"round_1": 0.05, "sign": 0.2}
    # set_eps reaches it (where=None: every sll node; a kind too), calibrate does not
    sll_fx.set_eps(gm, 0.3)
    assert eps_of(gm) == {"round_1": 0.3, "sign": 0.3}
    sll_fx.set_eps(gm, 0.1, where="round")
    assert eps_of(gm) == {"round_1": 0.1, "sign": 0.3}
    chosen = sll_fx.calibrate(gm, data())   # a fixed-eps model: every rewritten node, never the explicit one
    assert list(chosen) == ["sign"] and eps_of(gm)["round_1"] == 0.1
    # export_hard drops the buffer with the op
    hard = sll_fx.export_hard(gm, verbose=False)
    assert not [b for b, _ in hard.named_buffers() if b.startswith(EPS_PREFIX)]


def test_model_of_explicit_ops_only_starts_no_calibration():
    class OnlyExplicit(nn.Module):
        def forward(self, x):
            return sll_fx.sign(x, 0.1) + sll_fx.threshold(x, 0.5, 0.2)

    gm = sll_fx.linearize_module(OnlyExplicit(), verbose=False)
    assert not sll_fx.is_calibrating(gm) and not gm.sll_report.calibrating
    assert eps_of(gm) == {"sign": 0.1, "compare": 0.2}
    gm(data())
    assert sll_fx.calibrate(gm, data()) == {}
    assert eps_of(gm) == {"sign": 0.1, "compare": 0.2}


@pytest.mark.parametrize("how", ["deepcopy", "pickle"])
def test_copies_keep_the_scope(how):
    torch.manual_seed(0)
    gm = sll_fx.linearize_module(ExplicitRound(), verbose=False)
    c = copy.deepcopy(gm) if how == "deepcopy" else pickle.loads(pickle.dumps(gm))
    chosen = sll_fx.calibrate(c, data())
    assert list(chosen) == ["sign"] and eps_of(c)["round_1"] == 0.05


def test_explicit_op_in_an_exported_program_gets_the_tensor_overload():
    class E(nn.Module):
        def forward(self, x):
            return sll_fx.sign(x, 0.1) + torch.round(x) + sll_fx.threshold(x, 0.5, 0.2)

    x = torch.tensor([0.05, -0.02, 0.3, 0.45, 0.6])
    gm = sll_fx.linearize_module(torch.export.export(E(), (x,)), 0.2, verbose=False)
    targets = {n.name: n.target for _, n in _eps_nodes(gm)}
    assert targets["sign"] == torch.ops.sll.sign.eps_tensor
    assert targets["compare"] == torch.ops.sll.compare.Scalar_eps_tensor
    assert eps_of(gm) == {"sign": 0.1, "round_1": 0.2, "compare": 0.2}
    sll_fx.set_eps(gm, 0.3)
    want = torch.ops.sll.sign(x, eps=0.3) + torch.ops.sll.round(x, eps=0.3) + \
        torch.ops.sll.compare(x, 0.5, "gt", eps=0.3)
    torch.testing.assert_close(gm(x), want)


# ----------------------------------------------------------------------------------------
# 2. set_eps on an explicit op under torch.compile
# ----------------------------------------------------------------------------------------

class ExplicitSign(nn.Module):
    def forward(self, x):
        return sll_fx.sign(x, 0.1) + torch.round(x)


def test_set_eps_on_an_explicit_op_reaches_compiled_code_without_recompiling():
    gm = sll_fx.linearize_module(ExplicitSign(), 0.2, verbose=False)
    counter = Counter()
    compiled = torch.compile(gm, backend=counter, fullgraph=True)
    x = torch.tensor([0.05, -0.02, 0.3, 0.45, -0.6, 1.5])
    torch.testing.assert_close(compiled(x), torch.ops.sll.sign(x, eps=0.1) + torch.ops.sll.round(x, eps=0.2))
    graphs = counter.n
    assert all(isinstance(e, fx.Node) for e in counter.eps_args[0]) and len(counter.eps_args[0]) == 2
    for eps in (0.3, 0.05, 0.4, 0.1):
        sll_fx.set_eps(gm, eps)
        want = torch.ops.sll.sign(x, eps=eps) + torch.ops.sll.round(x, eps=eps)
        torch.testing.assert_close(gm(x), want)
        torch.testing.assert_close(compiled(x), want)
    sll_fx.set_eps(gm, 0.25, where="sign")   # the explicit node alone
    torch.testing.assert_close(compiled(x), torch.ops.sll.sign(x, eps=0.25) + torch.ops.sll.round(x, eps=0.1))
    assert counter.n == graphs   # no recompilation


def test_set_eps_on_a_hand_made_literal_makes_it_a_buffer():
    """A graph linearize_module did not make: set_eps turns the literal into a buffer (once); compiled after
    that, later set_eps calls reach the compiled code."""
    gm = fx.symbolic_trace(ExplicitSign())
    (node,) = [n for n in gm.graph.nodes if n.op == "call_function" and is_sll_target(n.target)]
    assert node.kwargs["eps"] == 0.1
    sll_fx.set_eps(gm, 0.3)
    assert isinstance(node.kwargs["eps"], fx.Node) and float(getattr(gm, EPS_PREFIX + node.name)) == 0.3
    x = torch.tensor([0.05, -0.02, 0.3, 0.45])
    torch.testing.assert_close(gm(x), torch.ops.sll.sign(x, eps=0.3) + torch.round(x))
    counter = Counter()
    compiled = torch.compile(gm, backend=counter, fullgraph=True)
    compiled(x)
    graphs = counter.n
    sll_fx.set_eps(gm, 0.05)
    torch.testing.assert_close(compiled(x), torch.ops.sll.sign(x, eps=0.05) + torch.round(x))
    assert counter.n == graphs


# ----------------------------------------------------------------------------------------
# 3. calibrate on the torch.compile wrapper
# ----------------------------------------------------------------------------------------

class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(6, 6)
        self.t = nn.Parameter(torch.tensor(0.1))

    def forward(self, x):
        h = self.lin(x)
        return torch.sign(h) + torch.round(h * 2) + (h > self.t).float() + torch.where(h < self.t, h, -h)


@pytest.mark.parametrize("fullgraph", [True, False])
def test_calibrate_on_the_compiled_wrapper(fullgraph):
    x = data(64, 6)
    torch.manual_seed(0)
    ref = sll_fx.linearize_module(Net(), 0.3, verbose=False)
    want = sll_fx.calibrate(ref, x)
    torch.manual_seed(0)
    gm = sll_fx.linearize_module(Net(), 0.3, verbose=False)
    counter = Counter()
    compiled = torch.compile(gm, backend=counter, fullgraph=fullgraph)
    compiled(x).sum().backward()
    graphs = counter.n
    got = sll_fx.calibrate(compiled, x)
    assert got == want and eps_of(gm) == eps_of(ref) and len(got) == 4
    torch.testing.assert_close(compiled(x), gm(x))
    torch.testing.assert_close(compiled(x), ref(x))
    compiled(x).sum().backward()
    assert counter.n == graphs   # eps is an input: calibration recompiles nothing


def test_auto_model_calibrated_through_the_wrapper_then_fullgraph():
    x = data(64, 6)
    torch.manual_seed(0)
    gm = sll_fx.linearize_module(Net(), verbose=False)
    compiled = torch.compile(gm, backend=Counter(), fullgraph=True)
    assert sll_fx.is_calibrating(compiled)
    chosen = sll_fx.calibrate(compiled, x)
    assert len(chosen) == 4 and entry_eps_of(gm) == chosen
    # calibrate took the place of the pending automatic calibration: fullgraph runs
    assert not sll_fx.is_calibrating(compiled) and not sll_fx.is_calibrating(gm)
    torch.testing.assert_close(compiled(x), gm(x))
    assert entry_eps_of(gm) == chosen


def test_freeze_eps_on_the_compiled_wrapper():
    gm = sll_fx.linearize_module(Net(), verbose=False)
    compiled = torch.compile(gm, backend=Counter(), fullgraph=True)
    sll_fx.freeze_eps(compiled)
    assert not sll_fx.is_calibrating(gm)
    compiled(data(8, 6))   # no calibration left: fullgraph does not break
    assert set(eps_of(gm).values()) == {DEFAULT_EPS}


# ----------------------------------------------------------------------------------------
# 4. SLLConfig(eps="auto", kind_eps=..., module_eps=...): explicit values are kept
# ----------------------------------------------------------------------------------------

class Blk(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 4)

    def forward(self, x):
        h = self.lin(x)
        return torch.round(h) + torch.sign(h) + (h > 0.2).float()


class Top(nn.Module):
    def __init__(self):
        super().__init__()
        self.dec = Blk()
        self.head = Blk()

    def forward(self, x):
        return self.head(self.dec(x))


def test_auto_config_calibrates_only_the_auto_nodes():
    torch.manual_seed(0)
    cfg = sll_fx.SLLConfig(eps="auto", kind_eps={"round": 0.25}, module_eps={"dec": 0.2})
    gm = sll_fx.linearize_module(Top(), cfg, verbose=False)
    before = eps_of(gm)
    assert before == {"round_1": 0.2, "sign": 0.2, "compare": 0.2,
                      "round_2": 0.25, "sign_1": DEFAULT_EPS, "compare_1": DEFAULT_EPS}
    assert {e.node: e.auto for e in gm.sll_report.rewritten} == {
        "round_1": False, "sign": False, "gt": False, "round_2": False, "sign_1": True, "gt_1": True}
    text = str(gm.sll_report)
    rows = {cells[0]: cells[3] for line in text.splitlines()[3:] if (cells := re.split(r"\s{2,}", line.strip()))}
    assert rows == {"round_1": "0.2", "sign": "0.2", "gt": "0.2", "round_2": "0.25", "sign_1": "auto",
                    "gt_1": "auto"}
    x = torch.randn(64, 4, generator=torch.Generator().manual_seed(1))
    gm(x)
    after = eps_of(gm)
    assert {k: after[k] for k in ("round_1", "sign", "compare", "round_2")} == \
        {"round_1": 0.2, "sign": 0.2, "compare": 0.2, "round_2": 0.25}
    assert after["sign_1"] != DEFAULT_EPS and after["compare_1"] != DEFAULT_EPS
    chosen = sll_fx.calibrate(gm, x * 3)   # explicit: the same nodes
    assert set(chosen) == {"sign_1", "gt_1"}   # the report's names
    assert {k: eps_of(gm)[k] for k in ("round_1", "sign", "compare", "round_2")} == \
        {"round_1": 0.2, "sign": 0.2, "compare": 0.2, "round_2": 0.25}
    # set_eps still changes a configured node
    sll_fx.set_eps(gm, 0.1, where="dec")
    assert eps_of(gm)["round_1"] == 0.1


def test_auto_config_with_every_node_configured_starts_no_calibration():
    cfg = sll_fx.SLLConfig(eps="auto", module_eps={"dec": 0.2, "head": 0.3})
    gm = sll_fx.linearize_module(Top(), cfg, verbose=False)
    assert not sll_fx.is_calibrating(gm) and "auto" not in str(gm.sll_report)
    gm(torch.randn(8, 4))
    assert sll_fx.calibrate(gm, torch.randn(8, 4)) == {}
    assert sorted(set(eps_of(gm).values())) == [0.2, 0.3]


def test_selection_entries_follow_their_comparison():
    class Sel(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(4, 4)

        def forward(self, x):
            h = self.a(x)
            return torch.where(h > 0.1, h, -h) + torch.round(h)

    gm = sll_fx.linearize_module(Sel(), sll_fx.SLLConfig(eps="auto", kind_eps={"compare": 0.3},
                                                          module_mode={"a": "hard"}), verbose=False)
    entries = {e.node: (e.auto, e.mode) for e in gm.sll_report.rewritten}
    assert entries == {"gt": (False, "linear"), "where": (False, "linear"), "round_1": (True, "linear")}
    assert set(chosen := sll_fx.calibrate(gm, torch.randn(32, 4))) == {"round_1"} and chosen


def test_fixed_config_is_calibrated_whole_by_calibrate():
    """A fixed default eps: nothing is "auto", an explicit calibrate sets every rewritten node."""
    torch.manual_seed(0)
    cfg = sll_fx.SLLConfig(eps=0.05, kind_eps={"round": 0.25})
    gm = sll_fx.linearize_module(Top(), cfg, verbose=False)
    assert not gm.sll_report.auto and not any(e.auto for e in gm.sll_report.entries)
    chosen = sll_fx.calibrate(gm, torch.randn(64, 4))
    assert set(chosen) == set(entry_eps_of(gm)) and len(chosen) == 6


# ----------------------------------------------------------------------------------------
# 5. config errors name the dict and the key
# ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, error, message", [
    ({"module_mode": {"enc": "hrad"}}, ModeError,
     "SLLConfig: module_mode['enc']: mode='hrad' is not one of ('linear', 'hard')"),
    ({"module_mode": {nn.Linear: "soft"}}, ModeError,
     "SLLConfig: module_mode[Linear]: mode='soft' is not one of ('linear', 'hard')"),
    ({"kind_eps": {"round": -1}}, EpsError, "SLLConfig: kind_eps['round']: eps=-1.0 must be positive and finite"),
    ({"module_eps": {"enc": float("nan")}}, EpsError,
     "SLLConfig: module_eps['enc']: eps=nan must be positive and finite"),
])
def test_config_errors_name_the_dict_and_the_key(kwargs, error, message):
    with pytest.raises(error) as info:
        sll_fx.SLLConfig(**kwargs)
    assert str(info.value) == message


# ----------------------------------------------------------------------------------------
# 6. report entries carry their mode
# ----------------------------------------------------------------------------------------

class Gate(nn.Module):
    def forward(self, x):
        return (x > 0.1).float()


class Gates(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = Gate()
        self.b = Gate()

    def forward(self, x):
        return self.a(x) + self.b(x)


def test_report_shows_per_module_modes():
    gm = sll_fx.linearize_module(Gates(), sll_fx.SLLConfig(eps=0.2, module_mode={"a": "hard"}), verbose=False)
    report = gm.sll_report
    assert [(e.node, e.mode) for e in report.entries] == [("gt", "hard"), ("gt_1", "linear")]
    assert report.modes == ["hard", "linear"]
    modes = {n.name: n.kwargs["mode"] for _, n in _eps_nodes(gm)}
    assert modes == {"compare": "hard", "compare_1": "linear"}
    lines = str(report).splitlines()
    assert lines[0] == "sll_fx.linearize_module: 2 discrete node(s) found, 2 rewritten (mode=mixed), 0 left hard"
    assert lines[1].split() == ["node", "op", "replacement", "mode", "eps", "module", "source", "reason"]
    assert lines[3].split()[:7] == ["gt", "x", ">", "t", "sll.compare(gt)", "hard", "0.2"]
    assert lines[4].split()[:7] == ["gt_1", "x", ">", "t", "sll.compare(gt)", "linear", "0.2"]


def test_report_with_one_mode_keeps_its_format():
    gm = sll_fx.linearize_module(Gates(), sll_fx.SLLConfig(eps=0.2, mode="hard"), verbose=False)
    lines = str(gm.sll_report).splitlines()
    assert lines[0] == "sll_fx.linearize_module: 2 discrete node(s) found, 2 rewritten (mode=hard), 0 left hard"
    assert lines[1].split() == ["node", "op", "replacement", "eps", "module", "source", "reason"]
    assert [e.mode for e in gm.sll_report.entries] == ["hard", "hard"]
    # every node moved to hard by module_mode: the header names the mode they run
    gm = sll_fx.linearize_module(Gates(), sll_fx.SLLConfig(eps=0.2, module_mode={"a": "hard", "b": "hard"}),
                                 verbose=False)
    assert "(mode=hard)" in str(gm.sll_report).splitlines()[0]
    # ste: the method, as before
    gm = sll_fx.linearize_module(Gates(), eps=None, method="ste", verbose=False)
    assert "(method=ste, hard forward)" in str(gm.sll_report).splitlines()[0]
    assert [e.mode for e in gm.sll_report.entries] == ["ste", "ste"]


def test_entry_defaults_keep_old_constructions_working():
    e = Entry(node="n", op="torch.sign", replacement="sll.sign", reason="", eps=0.1, module="", source="")
    assert e.mode is None and e.auto is False


def test_auto_calibrates_every_rewritten_node_of_every_pattern():
    """Each pattern's sll node is found from its report entry: none is left out of the calibration."""
    class M(nn.Module):
        def forward(self, x):
            m = torch.zeros_like(x).scatter(-1, torch.topk(x, 3, -1).indices, 1.0)
            a = x.masked_fill(x < 0.2, 0.0)
            b = nn.functional.one_hot(x.argmax(-1), 8).float()
            return (m * x + a + b.sum() + torch.heaviside(x, torch.tensor(0.5)) + torch.trunc(x * 2)
                    + torch.ceil(x) + torch.round(x, decimals=1) + sll_fx.floor(x, 0.3))

    gm = sll_fx.linearize_module(M(), verbose=False)
    assert all(e.auto and e.mode == "linear" for e in gm.sll_report.entries) and len(gm.sll_report.entries) == 8
    chosen = sll_fx.calibrate(gm, data())
    assert set(chosen) == set(entry_eps_of(gm)) - {"floor"} and len(chosen) == 7
    assert eps_of(gm)["floor"] == 0.3

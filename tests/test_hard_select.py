"""Hard-mode selections: ``torch.where(c(x), a, b)`` / ``b.masked_fill(c(x), a)`` with ``mode="hard"``.

SLL_MATH.md defines the selection's surrogate as ``a s + b (1 - s)``, ``s`` the comparison's surrogate, and hard
mode as the hard forward with the backward of that surrogate at the same point: the branches get the gradient
weighed by the *soft* ``s = clamp((x - t)/(2 eps) + 1/2, 0, 1)``, not by the 0/1 mask (s37).  ``linearize_module``
gives such a selection a linear-mode copy of its comparison as ``sll.select``'s ``soft`` input (same inputs, same
eps buffer); that copy is part of the selection everywhere: the pass's own check, ``set_eps``/``eps_state``,
calibration, ``band_stats``, the precision check, ``export_hard`` (``sll_fx.diagnostics.is_soft_mask``).
"""

from __future__ import annotations

import copy
import pickle
import warnings

import pytest
import torch
from torch import nn

import sll_fx
from sll_fx.annealing import node_eps
from sll_fx.diagnostics import is_soft_mask
from sll_fx.rules import sll_op_name
from _helpers import assert_bitwise, sll_nodes

pytestmark = pytest.mark.filterwarnings("ignore:.*LeafSpec.*:FutureWarning")  # torch's own, deep-copying a pytree spec

EPS = 0.1
T = 0.5


class Where(nn.Module):
    def forward(self, x, a, b):
        return torch.where(x > T, a, b)


class WhereLe(nn.Module):
    def forward(self, x, a, b):
        return torch.where(x <= T, a, b)


class Fill(nn.Module):
    """``b.masked_fill(x < t, a)``: ``a`` (0-dim) where ``x < t``."""

    def forward(self, x, a, b):
        return b.masked_fill(x < T, a)


class Branches(nn.Module):
    """The branches computed from ``x``: SLL_MATH's full derivative ``s'(a - b) + s a' + (1 - s) b'`` (s37)."""

    def forward(self, x):
        return torch.where(x > T, x * 3, -x)


class Shared(nn.Module):
    """One mask, two selections, and a float use of the mask."""

    def forward(self, x):
        m = x > T
        return torch.where(m, x * 3, -x) + (x * 2).masked_fill(m, 1.0) + m.float() * x


def _soft(x: torch.Tensor, rising: bool, eps: float = EPS) -> torch.Tensor:
    """SLL_MATH.md's unit jump at T: clamp((x - T)/(2 eps) + 1/2, 0, 1) (``(T - x)`` for ``<``, ``<=``)."""
    d = (x - T) if rising else (T - x)
    return (d / (2 * eps) + 0.5).clamp(0, 1)


def _inputs():
    # in the band, on its edges' neighbourhood, outside, at the boundary itself, and +-inf
    x = torch.tensor([0.45, 0.5, 0.58, 0.7, 0.3, 0.42, 0.59, 0.41, 0.61, 0.39, T, float("inf"), -float("inf")],
                     dtype=torch.float64)
    g = torch.linspace(-1.5, 2.0, x.numel(), dtype=torch.float64)  # upstream gradient (not all ones)
    a = torch.linspace(2.0, 3.0, x.numel(), dtype=torch.float64)
    b = torch.linspace(-1.0, -0.25, x.numel(), dtype=torch.float64)
    return x, g, a, b


CASES = [(Where, True, False), (WhereLe, False, False), (Fill, False, True)]  # model, rising surrogate, 0-dim a
IDS = ["where_gt", "where_le", "masked_fill_lt"]


@pytest.mark.parametrize("model_cls, rising, scalar", CASES, ids=IDS)
def test_hard_mode_forward_is_hard_and_branches_get_the_surrogate_weights(model_cls, rising, scalar):
    model = model_cls()
    gm = sll_fx.linearize_module(model, eps=EPS, mode="hard", verbose=False)
    x0, g, a0, b0 = _inputs()
    if scalar:
        a0 = torch.tensor(2.5, dtype=torch.float64)
    x, a, b = (t.clone().requires_grad_(True) for t in (x0, a0, b0))
    y = gm(x, a, b)
    assert_bitwise(y.detach(), model(x0, a0, b0), "hard-mode forward")
    y.backward(g)
    s = _soft(x0, rising)
    inside = (x0 - T).abs() < EPS
    assert inside.any() and (~inside).any()
    # the branches: weighed by the surrogate (exactly 1/0 outside the band)
    torch.testing.assert_close(a.grad, (g * s).sum() if scalar else g * s, rtol=0, atol=1e-12)
    torch.testing.assert_close(b.grad, g * (1 - s), rtol=0, atol=1e-12)
    assert torch.equal(b.grad[~inside], (g * (1 - s))[~inside])
    assert scalar or torch.equal(a.grad[~inside], (g * s)[~inside])
    assert 0 < float(s[inside & (x0 != T)].min()) and float(s[inside].max()) < 1  # (fractional weights in the band)
    # x through the mask, as before: g (a - b) times the slope +-1/(2 eps) in the band, 0 outside
    slope = (1.0 if rising else -1.0) / (2 * EPS)
    want = torch.where(inside, g * (a0 - b0) * slope, torch.zeros_like(x0))
    torch.testing.assert_close(x.grad, want, rtol=0, atol=1e-12)


def test_hard_mode_branches_from_x_get_sll_math_derivative():
    """s37's repro: d/dx of where(x > 0.5, 3x, -x) is 3 s - (1 - s) + s' (3x + x) in both modes."""
    x0 = torch.tensor([0.45, 0.5, 0.58, 0.7, 0.3], dtype=torch.float64)
    s = _soft(x0, True)
    inside = ((x0 - T).abs() < EPS).double()
    want = 3 * s - (1 - s) + inside * (3 * x0 + x0) / (2 * EPS)
    for mode in ("linear", "hard"):
        gm = sll_fx.linearize_module(Branches(), eps=EPS, mode=mode, verbose=False)
        x = x0.clone().requires_grad_(True)
        gm(x).sum().backward()
        torch.testing.assert_close(x.grad, want, rtol=0, atol=1e-12)
    assert x.grad.tolist() == pytest.approx([9.0, 11.0, 14.2, 3.0, -1.0])


def test_hard_mode_soft_mask_is_part_of_its_selection():
    gm = sll_fx.linearize_module(Shared(), eps=EPS, mode="hard", verbose=False)
    softs = [n for n in sll_nodes(gm) if is_soft_mask(n)]
    assert len(softs) == 1  # one per comparison, however many selections read it
    (soft,) = softs
    (mask,) = [n for n in sll_nodes(gm) if n.target == soft.target and not is_soft_mask(n)]
    assert mask.kwargs["mode"] == "hard" and soft.kwargs["mode"] == "linear"
    assert soft.args == mask.args and soft.kwargs["eps"] is mask.kwargs["eps"]  # the same eps get_attr node
    assert sorted(u.kwargs["op"] for u in soft.users) == ["masked_fill", "where"]
    assert all(u.kwargs["soft"] is soft and u.args[0] is mask for u in soft.users)
    report = gm.sll_report
    assert report.counts == {"found": 3, "rewritten": 3, "hard": 0}, str(report)
    assert [e.node for e in report.rewritten] == ["gt", "where", "masked_fill"]
    x0 = torch.tensor([0.45, 0.55, 0.7, 0.2, T], dtype=torch.float64)
    assert_bitwise(gm(x0), Shared()(x0), "shared mask, hard mode")
    # linear mode and the estimators read no soft mask
    for kwargs in ({"mode": "linear"}, {"method": "ste"}, {"method": "sigmoid"}):
        other = sll_fx.linearize_module(Shared(), eps=EPS, verbose=False, **kwargs)
        assert not [n for n in sll_nodes(other) if is_soft_mask(n) or "soft" in n.kwargs], kwargs


@pytest.mark.parametrize("model_cls, rising, scalar", CASES, ids=IDS)
def test_hard_mode_export_hard_is_bitwise_the_original(model_cls, rising, scalar):
    model = model_cls()
    gm = sll_fx.linearize_module(model, eps=EPS, mode="hard", verbose=False)
    hard = sll_fx.export_hard(gm, verbose=False)
    assert not sll_nodes(hard)
    assert not [k for k, _ in hard.named_buffers() if k.startswith("_sll_eps")]
    assert len(hard.sll_report.entries) == 2  # the comparison and the selection; the soft mask went with it
    x0, _, a0, b0 = _inputs()
    a0 = torch.tensor(2.5, dtype=torch.float64) if scalar else a0
    b0 = b0.clone()
    b0[3] = float("nan")  # NaN in the unselected branch stays out, as in torch.where
    for x in (x0, -x0, x0 + EPS / 2):
        assert_bitwise(hard(x, a0, b0), model(x, a0, b0), "export_hard")
    assert_bitwise(sll_fx.export_hard(sll_fx.linearize_module(Shared(), eps=EPS, mode="hard", verbose=False),
                                      verbose=False)(x0), Shared()(x0), "export_hard, shared mask")


def test_hard_mode_compiles_fullgraph_and_exports():
    model = Where()
    gm = sll_fx.linearize_module(model, eps=EPS, mode="hard", verbose=False)
    x0, g, a0, b0 = _inputs()

    def run(fn):
        x, a, b = (t.clone().requires_grad_(True) for t in (x0, a0, b0))
        y = fn(x, a, b)
        y.backward(g)
        return y.detach(), x.grad, a.grad, b.grad

    eager = run(gm)
    torch._dynamo.reset()
    compiled = run(torch.compile(gm, backend="aot_eager", fullgraph=True))
    assert_bitwise(compiled[0], model(x0, a0, b0), "compiled forward")
    for got, want, what in zip(compiled[1:], eager[1:], ("x", "a", "b")):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-12, msg=what)
    torch.testing.assert_close(compiled[2], g * _soft(x0, True), rtol=0, atol=1e-12)
    ep = torch.export.export(gm, (x0, a0, b0))
    softs = [n for n in ep.graph_module.graph.nodes if is_soft_mask(n)]
    assert len(softs) == 1 and softs[0].target.overloadpacket is torch.ops.sll.compare
    exported = run(ep.module())
    for got, want, what in zip(exported, eager, ("y", "x", "a", "b")):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-12, msg=what)
    hard = sll_fx.export_hard(ep, verbose=False)
    assert not sll_nodes(hard)
    assert_bitwise(hard(x0, a0, b0), model(x0, a0, b0), "export_hard of the exported program")


def test_hard_mode_set_eps_moves_both_comparisons():
    gm = sll_fx.linearize_module(Where(), eps=EPS, mode="hard", verbose=False)
    (soft,) = [n for n in sll_nodes(gm) if is_soft_mask(n)]
    (mask,) = [n for n in sll_nodes(gm) if n.kwargs.get("mode") == "hard"]
    assert sll_fx.eps_state(gm) == {"gt": EPS}
    assert sll_fx.set_eps(gm, 0.2) == [mask.meta["sll_entry"]]  # the report name
    assert node_eps(gm, mask) == node_eps(gm, soft) == 0.2
    assert sll_fx.set_eps(gm, 0.15, where="where") == [mask.meta["sll_entry"]]  # a selection sets its comparison
    assert node_eps(gm, mask) == node_eps(gm, soft) == 0.15
    assert sll_fx.eps_state(gm) == {"gt": 0.15}
    assert [e.eps for e in gm.sll_report.rewritten] == [0.15, 0.15]
    x0, g, a0, b0 = _inputs()
    a = a0.clone().requires_grad_(True)
    gm(x0, a, b0).backward(g)
    torch.testing.assert_close(a.grad, g * _soft(x0, True, 0.15), rtol=0, atol=1e-12)  # the soft mask's eps moved
    sll_fx.load_eps(gm, {"gt": 0.05})
    assert node_eps(gm, soft) == 0.05
    # copies keep the soft mask a part of its selection
    for copied in (copy.deepcopy(gm), pickle.loads(pickle.dumps(gm))):
        assert sll_fx.eps_state(copied) == {"gt": 0.05}
        assert len([n for n in sll_nodes(copied) if is_soft_mask(n)]) == 1
        sll_fx.set_eps(copied, 0.12)
        (s2,) = [n for n in sll_nodes(copied) if is_soft_mask(n)]
        assert node_eps(copied, s2) == 0.12


def test_hard_mode_calibration_one_eps_per_entry():
    x0 = torch.linspace(0.0, 1.0, 101, dtype=torch.float64)
    a0, b0 = torch.ones_like(x0), torch.zeros_like(x0)
    chosen = {}
    for mode in ("linear", "hard"):
        gm = sll_fx.linearize_module(Where(), mode=mode, verbose=False)  # eps="auto"
        assert sll_fx.is_calibrating(gm)
        gm(x0, a0, b0)
        assert not sll_fx.is_calibrating(gm)
        chosen[mode] = sll_fx.calibrate(gm, x0, a0, b0)
        assert list(chosen[mode]) == ["gt"]
        assert [e.eps for e in gm.sll_report.rewritten] == [chosen[mode]["gt"]] * 2
        assert {node_eps(gm, n) for n in sll_nodes(gm) if "eps" in n.kwargs} == {chosen[mode]["gt"]}
    # the soft mask adds no samples: the same eps as linear mode from the same data (the 26th of the 101 sorted
    # |x - 0.5| = 0, 0.01, 0.01, ..., 0.13, 0.13: a quarter of them inside the band)
    assert chosen["hard"] == chosen["linear"]
    assert chosen["hard"]["gt"] == pytest.approx(0.13, abs=1e-6)


def test_hard_mode_band_stats_lists_the_entry_once():
    gm = sll_fx.linearize_module(Where(), eps=EPS, mode="hard", verbose=False)
    x0, g, a0, b0 = _inputs()
    x = x0.clone().requires_grad_(True)
    with sll_fx.band_stats(gm) as stats:
        gm(x, a0, b0).backward(g)
    assert [r.node for r in stats.records] == ["gt"]
    assert list(stats.skipped) == ["where"]
    (row,) = stats.summary()
    assert row.band_fraction == float(((x0 - T).abs() < EPS).sum()) / x0.numel()  # (measured once, not doubled)
    assert row.mode == "hard" and row.steps == 1
    assert row.mean_abs_grad == pytest.approx(float(x.grad.abs().mean()))  # (x's one use is the comparison)
    assert row.mean_abs_grad > 0


def test_hard_mode_precision_warning_once():
    class Half(nn.Module):
        def forward(self, x):
            return torch.where(x > 1000.0, x * 2, x)

    x = torch.full((8,), 1000.0, dtype=torch.float16)
    for mode, n_compares in (("hard", 2), ("linear", 1)):
        gm = sll_fx.linearize_module(Half(), eps=0.01, mode=mode, verbose=False)
        assert [sll_op_name(n.target) for n in sll_nodes(gm)].count("compare") == n_compares
        with warnings.catch_warnings(record=True) as record:
            warnings.simplefilter("always")
            gm(x.clone().requires_grad_(True))
        found = [w.message for w in record if issubclass(w.category, sll_fx.PrecisionWarning)]
        assert [(w.node, w.op, w.spacing) for w in found] == [("gt", "compare", 0.5)], (mode, found)  # (the
        # report's name, as set_eps takes it)
        assert [f.node for f in sll_fx.precision.findings(gm, x)] == ["gt"]


def test_calibration_runs_each_node_with_its_calibrated_eps():
    """Calibration goes in graph order and a node runs with the eps just chosen for it, so the comparison after
    ``round`` sees ``round``'s output at the calibrated eps (not at the placeholder): calibrating again on the same
    batch chooses the same eps (before, the first call measured the comparison on the placeholder's outputs)."""

    class Chain(nn.Module):
        def forward(self, x):
            return torch.where(torch.round(x) - x > 0.1, x, -x)

    x = torch.linspace(-3.0, 3.0, 601, dtype=torch.float64) + 0.003
    for mode in ("linear", "hard"):
        gm = sll_fx.linearize_module(Chain(), mode=mode, verbose=False)  # eps="auto": placeholders until called
        first = sll_fx.calibrate(gm, x)
        assert list(first) == ["round_1", "gt"]
        assert sll_fx.calibrate(gm, x) == first, mode
        assert sll_fx.eps_state(gm) == first

"""Tests of ``sll_fx.band_stats`` (``sll_fx/diagnostics.py``).

The figures are checked against hand counts: inputs are built so that a known number of
elements lies inside the band of sign / round / a threshold / heaviside, and the mean
absolute gradient is the analytic ``|slope| * sum(|grad_output| over in-band elements) /
numel(x)`` (with ``loss = (y * w).sum()``, ``grad_output = w``).  Then: several steps, the
warning (once, naming the node; not when the fraction recovers), outputs and gradients
bit-identical with and without recording, the module restored after the block (also
after an exception), the table, modules without sll nodes, nested GraphModules, skipped
nodes, recompiles inside the block.
"""

from __future__ import annotations

import copy
import operator
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import fx, nn

import sll_fx
from sll_fx import diagnostics
from sll_fx.diagnostics import BandRecord, BandStats, BandWarning, NodeSummary, band_stats
from sll_fx.ops import is_sll_target


# ----------------------------------------------------------------------------------------
# helpers and models
# ----------------------------------------------------------------------------------------

def sll_names(gm: fx.GraphModule) -> list[str]:
    """The sll nodes' names as band_stats gives them: the report's (a rewritten x > t: "gt", not "compare")."""
    names = [e.node for e in gm.sll_report.rewritten] if hasattr(gm, "sll_report") else []
    graph = [n.meta.get("sll_entry", n.name) for n in gm.graph.nodes
             if n.op == "call_function" and is_sll_target(n.target)]
    assert sorted(graph) == sorted(names) or not hasattr(gm, "sll_report")
    return graph


def linearize(model: nn.Module, eps: float, **kw) -> fx.GraphModule:
    return sll_fx.linearize_module(model, eps=eps, verbose=False, **kw)


class Sign(nn.Module):
    def forward(self, x):
        return torch.sign(x)


class Round(nn.Module):
    def forward(self, x):
        return torch.round(x)


class Gate(nn.Module):
    def __init__(self, t: float = 0.5, cmp: str = ">"):
        super().__init__()
        self.t, self.cmp = t, cmp

    def forward(self, x):
        return ((x > self.t) if self.cmp == ">" else (x < self.t)).float()


class Heaviside(nn.Module):
    """Explicit sll op (one node under symbolic_trace); x (3, 1) broadcasts against values (4,)."""

    def __init__(self, eps: float):
        super().__init__()
        self.eps = eps
        self.register_buffer("values", torch.full((4,), 0.5))

    def forward(self, x):
        return torch.ops.sll.heaviside(x, self.values, eps=self.eps)


class Mixed(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(6, 6)

    def forward(self, x, t: float = 0.25):
        h = self.lin(x)
        return torch.sign(h) * 0.5 + torch.round(2 * h) + (h > t).float() + (h < -t).float()


class SignThenMatmul(nn.Module):
    def forward(self, x):
        return torch.sign(x) @ torch.ones(3, 1)


def only(records: list[BandRecord], step: int | None = None) -> BandRecord:
    rows = [r for r in records if step is None or r.step == step]
    assert len(rows) == 1, rows
    return rows[0]


# ----------------------------------------------------------------------------------------
# hand counts: band fraction and mean |grad|
# ----------------------------------------------------------------------------------------

# 3 of 10 elements inside |x| < 0.1 (sign's band); slope 1/eps = 10
SIGN_X = [-0.05, 0.02, 0.09, 0.5, -0.5, 1.0, -1.0, 2.0, 0.3, -0.2]
# 3 of 10 inside |x - (k + 1/2)| < 0.1 (round's bands: 0.45, 1.55, -0.52); slope 1/(2 eps) = 5
ROUND_X = [0.45, 1.55, -0.52, 0.0, 0.2, 0.8, 1.0, 2.3, -1.2, 3.7]
# 3 of 10 inside |x - 0.5| < 0.1 (0.45, 0.55, 0.59); slope +-1/(2 eps) = +-5
GATE_X = [0.45, 0.55, 0.59, 0.0, 0.3, 0.8, 1.0, -0.5, 2.0, 0.61]

CASES = {  # name -> (module, x, in-band indices, |slope|)
    "sign": (Sign(), SIGN_X, [0, 1, 2], 10.0),
    "round": (Round(), ROUND_X, [0, 1, 2], 5.0),
    "gt": (Gate(0.5, ">"), GATE_X, [0, 1, 2], 5.0),
    "lt": (Gate(0.5, "<"), GATE_X, [0, 1, 2], 5.0),
}


@pytest.mark.parametrize("mode", ["linear", "hard"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_hand_count_fraction_and_mean_grad(case, mode):
    model, xs, inside, slope = CASES[case]
    gm = linearize(model, 0.1, mode=mode)
    (name,) = sll_names(gm)
    x = torch.tensor(xs, requires_grad=True)
    w = torch.arange(1.0, 11.0)  # grad_output = w
    with band_stats(gm) as stats:
        (gm(x) * w).sum().backward()
    rec = only(stats.records)
    assert (rec.node, rec.step, rec.in_band, rec.numel) == (name, 0, 3, 10)
    assert rec.op == ("compare" if case in ("gt", "lt") else case)
    assert rec.band_fraction == pytest.approx(0.3)
    expected = slope * sum(w[i].item() for i in inside) / 10  # slope * (1 + 2 + 3) / 10
    assert rec.mean_abs_grad == pytest.approx(expected)
    assert rec.mean_abs_grad == pytest.approx(x.grad.abs().mean().item())  # what reached x
    assert rec.eps == 0.1


@pytest.mark.parametrize("mode", ["linear", "hard"])
def test_band_edges_count_as_the_gradient_does(mode):
    """At eps = 1/2 round's bands meet at the integers: hard mode's closed band passes the slope there, linear
    mode's backward reads the clamped ramp and gives 0.  band_stats counts what the gradient does (it counted
    every integer out in hard mode: band fraction 0 and a BandWarning while every element got slope 1)."""

    class Round(nn.Module):
        def forward(self, x):
            return torch.round(x)

    gm = linearize(Round(), 0.5, mode=mode)
    x = torch.tensor([-2.0, -1.0, 0.0, 1.0, 3.0, 0.25, 0.5, 1.75], requires_grad=True)
    with band_stats(gm) as stats:
        gm(x).sum().backward()
    rec = only(stats.records)
    inside = int((x.grad != 0).sum())
    assert inside == (8 if mode == "hard" else 3)
    assert (rec.in_band, rec.numel) == (inside, 8)
    assert rec.mean_abs_grad == pytest.approx(x.grad.abs().mean().item())


def test_heaviside_broadcast_fraction_and_grad_reduced_to_input_shape():
    gm = fx.symbolic_trace(Heaviside(eps=0.1))
    x = torch.tensor([[0.05], [0.3], [-1.0]], requires_grad=True)  # 1 of 3 rows in band, 4 columns each
    with band_stats(gm) as stats:
        gm(x).sum().backward()
    rec = only(stats.records)
    assert (rec.op, rec.in_band, rec.numel) == ("heaviside", 4, 12)
    assert rec.band_fraction == pytest.approx(1 / 3)
    # x[0] receives 4 * slope = 4 * 5 = 20 (summed over the broadcast); mean over x's 3 elements
    assert rec.mean_abs_grad == pytest.approx(20 / 3)
    assert rec.mean_abs_grad == pytest.approx(x.grad.abs().mean().item())


@pytest.mark.parametrize("mode", ["linear", "hard"])
def test_mean_grad_matches_autograd_on_random_inputs(mode):
    torch.manual_seed(0)
    for model, eps, scale in [(Sign(), 0.3, 1.0), (Round(), 0.2, 3.0), (Gate(0.1, "<"), 0.4, 1.0)]:
        gm = linearize(model, eps, mode=mode)
        x = (torch.randn(50, 7) * scale).requires_grad_()
        w = torch.randn(50, 7)
        with band_stats(gm) as stats:
            (gm(x) * w).sum().backward()
        rec = only(stats.records)
        assert rec.mean_abs_grad == pytest.approx(x.grad.abs().mean().item(), rel=1e-6)
        assert 0 < rec.in_band < rec.numel == 350


class Selections(nn.Module):
    """A top-k mask and a one_hot(argmax) on the same input: selections, whose elements compete."""

    def forward(self, x):
        mask = torch.zeros_like(x).scatter(-1, torch.topk(x, 2, dim=-1).indices, 1.0)
        return (x * mask).sum(-1) + (x * F.one_hot(x.argmax(-1), 6).float()).sum(-1)


def test_selections_are_measured_with_their_own_vector_jacobian_product():
    # (they were skipped, "in_band does not support sll.topk_mask yet", though in_band does)
    torch.manual_seed(0)
    gm = linearize(Selections(), 0.3)
    x = torch.randn(16, 6)
    w = torch.randn(16)
    with band_stats(gm) as stats:
        (gm(x.requires_grad_()) * w).sum().backward()
    assert stats.skipped == {}
    records = {r.op: r for r in stats.records}
    assert set(records) == {"topk_mask", "argmax_onehot"}
    for op, rec in records.items():
        xd = x.detach()
        assert rec.in_band == int(sll_fx.ops.in_band(op, (xd, 2, -1) if op == "topk_mask" else (xd, -1, 6),
                                                     {"eps": 0.3}).sum()) > 0
        # the gradient through this node alone: the op's VJP with the gradient its output got
        xr = xd.clone().requires_grad_()
        out = torch.ops.sll.topk_mask(xr, 2, -1, eps=0.3) if op == "topk_mask" else \
            torch.ops.sll.argmax_onehot(xr, -1, 6, eps=0.3)
        (out * (xd * w[:, None])).sum().backward()
        assert rec.mean_abs_grad == pytest.approx(xr.grad.abs().mean().item(), rel=1e-6) and rec.mean_abs_grad > 0


def test_no_backward_or_no_requires_grad_leaves_grad_none():
    gm = linearize(Sign(), 0.1)
    with band_stats(gm) as stats:
        gm(torch.tensor(SIGN_X))                          # x does not require grad
        gm(torch.tensor(SIGN_X, requires_grad=True))      # no backward
        with torch.no_grad():
            gm(torch.tensor(SIGN_X, requires_grad=True))
    assert [r.mean_abs_grad for r in stats.records] == [None, None, None]
    assert [r.in_band for r in stats.records] == [3, 3, 3]
    assert stats.summary()[0].mean_abs_grad is None


# ----------------------------------------------------------------------------------------
# steps, summary, table
# ----------------------------------------------------------------------------------------

def test_multiple_steps_records_and_summary():
    gm = linearize(Sign(), 0.1)
    inputs = [SIGN_X, [0.05] * 10, [1.0] * 10, SIGN_X]     # 3/10, 10/10, 0/10, 3/10 in band
    with band_stats(gm, window=3) as stats:
        for i, xs in enumerate(inputs):
            x = torch.tensor(xs, requires_grad=True)
            y = gm(x)
            if i < 3:  # no backward at the last step
                y.sum().backward()
    assert stats.steps == 4
    assert [r.step for r in stats.records] == [0, 1, 2, 3]
    assert [r.in_band for r in stats.records] == [3, 10, 0, 3]
    grads = [r.mean_abs_grad for r in stats.records]
    assert grads[:3] == pytest.approx([3.0, 10.0, 0.0]) and grads[3] is None
    (s,) = stats.summary()
    assert isinstance(s, NodeSummary)
    assert (s.node, s.op, s.steps, s.eps) == ("sign", "sign", 4, 0.1)
    assert s.band_fraction == pytest.approx((1.0 + 0.0 + 0.3) / 3)  # mean over the last window=3 steps
    assert s.last_band_fraction == pytest.approx(0.3)
    assert s.mean_abs_grad == pytest.approx(0.0)  # step 2: the latest step a backward reached
    assert stats.warned == ()


def test_records_are_frozen_rows():
    gm = linearize(Sign(), 0.1)
    with band_stats(gm) as stats:
        gm(torch.tensor(SIGN_X))
    rec = stats.records[0]
    with pytest.raises(AttributeError):
        rec.band_fraction = 1.0  # type: ignore[misc]


def test_table_names_every_node():
    gm = linearize(Mixed(), 0.05)
    names = sll_names(gm)
    assert len(names) == 4
    with band_stats(gm) as stats:
        gm(torch.randn(5, 6)).sum().backward()
    text = str(stats)
    assert text.startswith("sll_fx.band_stats: 1 step(s), 4 sll node(s) measured")
    for name in names:
        assert name in text
    assert "sll.compare" in text and "band fraction" in text and "mean |grad|" in text
    assert [r.node for r in stats.records] == names  # execution order


def test_max_steps_keeps_recent_records_only():
    gm = linearize(Sign(), 0.1)
    with band_stats(gm, max_steps=2, window=5) as stats:
        for _ in range(5):
            gm(torch.tensor(SIGN_X))
    assert [r.step for r in stats.records] == [3, 4]
    assert stats.summary()[0].steps == 5


# ----------------------------------------------------------------------------------------
# the warning
# ----------------------------------------------------------------------------------------

def test_warning_fires_once_after_window_naming_the_node():
    gm = linearize(Sign(), 0.1)
    low = torch.tensor([0.05] + [1.0] * 19)  # 1/20 = 0.05 in band
    with band_stats(gm, threshold=0.1, window=4) as stats:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            for step in range(3):
                gm(low)
            assert not caught, "no warning before the window is full"
            gm(low)  # 4th consecutive low step
            assert len(caught) == 1
            for _ in range(6):
                gm(low)
    assert len(caught) == 1, [str(w.message) for w in caught]
    w = caught[0]
    assert issubclass(w.category, BandWarning) and issubclass(BandWarning, UserWarning)
    msg = str(w.message)
    for part in ("'sign'", "sll.sign", "0.05", "threshold=0.1", "eps=0.1", "4 consecutive steps",
                 "raise eps (e.g. set_eps) or use eps='auto'"):
        assert part in msg, (part, msg)
    assert w.filename == __file__  # points at the gm(...) call
    assert stats.warned == ("sign",)
    assert stats.summary()[0].warned and "yes" in str(stats)


def test_pytest_warns_names_only_the_starved_node():
    gm = linearize(Mixed(), 0.05)
    with torch.no_grad():  # sign/round/gates see h = x exactly
        gm.lin.weight.copy_(torch.eye(6))
        gm.lin.bias.zero_()
    # sign: 1 of 12 in |h| < 0.05; round(2h): h in band of 2h = k + 1/2; gates at +-0.25
    x = torch.tensor([[0.01, 0.7, 0.9, 0.26, -0.26, 0.6], [0.8, 0.9, 0.7, 0.6, 0.1, 0.95]])
    with band_stats(gm, threshold=0.1, window=3) as stats:
        with pytest.warns(BandWarning) as caught:
            for _ in range(5):
                gm(x)
    by_node = {r.node: r for r in stats.records if r.step == 0}
    starved = sorted(n for n, r in by_node.items() if r.band_fraction < 0.1)
    assert starved and len(starved) < 4
    assert sorted(stats.warned) == starved
    assert len(caught) == len(starved)
    for name, w in zip(stats.warned, caught):
        assert f"'{name}'" in str(w.message)


def test_no_warning_when_fraction_recovers_within_window():
    gm = linearize(Sign(), 0.1)
    low, high = torch.tensor([0.05] + [1.0] * 19), torch.tensor([0.05] * 10)
    with warnings.catch_warnings():
        warnings.simplefilter("error", BandWarning)
        with band_stats(gm, threshold=0.1, window=3) as stats:
            for _ in range(4):  # two low steps, one good one, ... never 3 low in a row
                gm(low)
                gm(low)
                gm(high)
            for _ in range(10):
                gm(high)
    assert stats.warned == ()
    assert stats.summary()[0].low_steps == 0


def test_no_warning_at_exactly_the_threshold():
    gm = linearize(Sign(), 0.1)
    with warnings.catch_warnings():
        warnings.simplefilter("error", BandWarning)
        with band_stats(gm, threshold=0.3, window=2) as stats:
            for _ in range(5):
                gm(torch.tensor(SIGN_X))  # 0.3, not below 0.3
    assert stats.warned == ()


# ----------------------------------------------------------------------------------------
# recording changes nothing
# ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["linear", "hard"])
def test_outputs_and_gradients_bit_identical(mode):
    torch.manual_seed(1)
    gm = linearize(Mixed(), 0.1, mode=mode)
    xs = [torch.randn(16, 6) for _ in range(3)]

    def run():
        outs, grads = [], []
        for x in xs:
            x = x.clone().requires_grad_()
            gm.zero_grad()
            y = gm(x, t=0.3)
            (y * torch.linspace(-1, 2, y.numel()).view_as(y)).sum().backward()
            outs.append(y.detach())
            grads.append([x.grad] + [p.grad.clone() for p in gm.parameters()])
        return outs, grads

    plain = run()
    with band_stats(gm) as stats:
        recorded = run()
    assert stats.steps == 3 and len(stats.records) == 12
    for a, b in zip(plain[0], recorded[0]):
        assert torch.equal(a, b)
    for ga, gb in zip(plain[1], recorded[1]):
        for a, b in zip(ga, gb):
            assert torch.equal(a, b)


def test_module_restored_after_block_and_after_exception():
    gm = linearize(Sign(), 0.1)
    own = gm.forward
    x = torch.tensor(SIGN_X)
    with band_stats(gm) as stats:
        assert "forward" in gm.__dict__
    assert "forward" not in gm.__dict__ and gm.forward == own

    with pytest.raises(ZeroDivisionError):
        with band_stats(gm):
            gm(x)
            1 / 0
    assert "forward" not in gm.__dict__

    with pytest.raises(TypeError):
        with band_stats(gm) as stats:
            gm(x)
            gm(x, x)  # too many arguments for gm's forward
    assert "forward" not in gm.__dict__
    assert stats.steps == 1  # the failed forward is no step

    failing = linearize(SignThenMatmul(), 0.1)
    with band_stats(failing) as failed:
        failing(torch.ones(2, 3))
        with pytest.raises(RuntimeError):
            failing(torch.ones(2, 2))  # sll.sign runs (and is probed), then the matmul fails
        failing(torch.ones(2, 3))
    assert "forward" not in failing.__dict__
    assert failed.steps == 2 and [(r.step, r.numel) for r in failed.records] == [(0, 6), (1, 6)]
    assert torch.equal(gm(x), torch.ops.sll.sign(x, eps=0.1))
    # after the block nothing is recorded any more
    gm(x)
    assert stats.steps == 1


def test_instance_forward_present_before_is_put_back():
    gm = linearize(Sign(), 0.1)
    marker = gm.forward  # an instance-level forward someone else installed
    gm.forward = marker
    with band_stats(gm):
        assert gm.forward is not marker
    assert gm.__dict__["forward"] is marker


def test_start_stop_and_reentry():
    gm = linearize(Sign(), 0.1)
    stats = band_stats(gm).start()
    with pytest.raises(RuntimeError, match="already recording"):
        stats.start()
    gm(torch.tensor(SIGN_X))
    stats.stop()
    assert "forward" not in gm.__dict__ and stats.steps == 1


def test_a_second_recorder_on_a_recorded_model_is_refused_and_the_first_keeps_every_step():
    """A band_stats(gm) started inside another on the same model replaced its recording forward: the outer recorded
    2 of 5 steps, silently (audit).  Now the second is a RuntimeError with the fix, and the first records on."""
    gm = linearize(Sign(), 0.1)
    x = torch.tensor(SIGN_X)
    with band_stats(gm) as outer:
        gm(x)
        with pytest.raises(RuntimeError, match=r"^band_stats: another band_stats recorder is recording .*\nFix: stop "
                                               r"the other recorder first"):
            with band_stats(gm):
                gm(x)
        gm(x)
    assert outer.steps == 2 and "forward" not in gm.__dict__  # (the refused block did not run)
    with band_stats(gm) as again:  # (after the first stopped: fine)
        gm(x)
    assert again.steps == 1
    inner = linearize(Sign(), 0.1)  # a nested GraphModule that a recorder of its own records
    holder = fx.GraphModule(Outer(inner), _KeepGraphModules().trace(Outer(inner)))
    with band_stats(inner):
        with pytest.raises(RuntimeError, match=r"recording GraphModule \(its submodule 'inner'\)"):
            band_stats(holder).start()
    assert "forward" not in inner.__dict__ and "forward" not in holder.__dict__


def test_argument_checks():
    gm = linearize(Sign(), 0.1)
    with pytest.raises(ValueError, match="threshold"):
        band_stats(gm, threshold=2.0)
    with pytest.raises(ValueError, match="window"):
        band_stats(gm, window=0)
    with pytest.raises(TypeError):
        band_stats(lambda x: x)  # type: ignore[arg-type]


def test_deepcopy_inside_block_is_a_clean_module():
    gm = linearize(Sign(), 0.1)
    with band_stats(gm) as stats:
        twin = copy.deepcopy(gm)
        twin(torch.tensor(SIGN_X))
    assert "forward" not in twin.__dict__ and stats.steps == 0


# ----------------------------------------------------------------------------------------
# other modules: none linearized, nested, skipped nodes, recompiles
# ----------------------------------------------------------------------------------------

def test_module_without_sll_nodes_is_refused_and_a_linearized_one_with_none_gives_empty_stats():
    """A module never linearized (the original model given for gm) recorded nothing, silently (a58): a ValueError, as
    calibrate/freeze_eps/eps_state give (assertion changed on purpose: it gave empty stats).  A linearize_module
    result that rewrote nothing gives empty stats."""
    for model in (fx.symbolic_trace(Sign()), Mixed()):  # (torch.sign, no sll node; not a GraphModule at all)
        with pytest.raises(ValueError, match=rf"^band_stats: {type(model).__name__} holds no sll node: it is no "
                                             r"linearize_module result \(the original model\?\)\nFix: call it on "
                                             r"the linearized model"):
            band_stats(model)
        assert "forward" not in model.__dict__
    hard = sll_fx.export_hard(linearize(Sign(), 0.1), verbose=False)
    with pytest.raises(ValueError, match=r"^band_stats: Sign is an export_hard result"):
        band_stats(hard)
    gm = sll_fx.linearize_module(nn.Linear(6, 6), eps=0.1, verbose=False)
    with band_stats(gm) as stats:
        gm(torch.randn(2, 6))
    assert stats.steps == 1 and stats.records == [] and stats.summary() == []
    assert str(stats).startswith("sll_fx.band_stats: 1 step(s), 0 sll node(s)")


class Outer(nn.Module):
    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return self.inner(x) + self.inner(x * 10)


class _KeepGraphModules(fx.Tracer):
    def is_leaf_module(self, m, qualname):
        return isinstance(m, fx.GraphModule) or super().is_leaf_module(m, qualname)


def test_nested_graph_module_is_measured_and_aggregated_per_step():
    inner = linearize(Sign(), 0.1)
    outer = fx.GraphModule(Outer(inner), _KeepGraphModules().trace(Outer(inner)))
    assert isinstance(outer.inner, fx.GraphModule) and not sll_names(outer)
    x = torch.tensor(SIGN_X, requires_grad=True)
    expected = Outer(inner)(x)
    with band_stats(outer) as stats:
        y = outer(x)
        y.sum().backward()
    assert torch.equal(y, expected)
    rec = only(stats.records)
    # the inner sign ran twice in the step, one record: 3 of 10 in band, then 0 of 10 (x * 10)
    assert (rec.node, rec.op, rec.in_band, rec.numel) == ("inner.sign", "sign", 3, 20)
    # d/dx through the node: 10 per in-band element of the first call, 0 for the second
    assert rec.mean_abs_grad == pytest.approx(3 * 10 / 20)
    assert "forward" not in inner.__dict__ and "forward" not in outer.__dict__

    plain_outer = Outer(inner)  # a plain module holding a linearized GraphModule
    with band_stats(plain_outer) as stats:
        plain_outer(x)
    assert only(stats.records).node == "inner.sign"
    # called directly, outside a forward of the recorded module: no step, no record
    with band_stats(plain_outer) as stats:
        inner(x)
    assert stats.steps == 0 and stats.records == []


def test_unsupported_op_and_integer_input_are_skipped_and_listed(monkeypatch):
    real = diagnostics.ops.in_band

    def in_band(op, args, kwargs):
        if op == "round":
            raise KeyError(f"no jump for sll.{op}")  # as for a selection op in_band does not know
        return real(op, args, kwargs)

    monkeypatch.setattr(diagnostics.ops, "in_band", in_band)
    gm = linearize(Mixed(), 0.05)
    with band_stats(gm, window=1, threshold=1.0) as stats:
        with pytest.warns(BandWarning):
            gm(torch.randn(3, 6))
            gm(torch.randn(3, 6))
    (round_node,) = [n for n in sll_names(gm) if n.startswith("round")]
    assert stats.skipped == {round_node: "in_band does not support sll.round yet"}
    assert round_node not in {r.node for r in stats.records} and round_node not in stats.warned
    assert len(stats.records) == 6
    assert f"skipped: {round_node} (in_band does not support sll.round yet)" in str(stats)

    gm = linearize(Sign(), 0.1)
    with band_stats(gm) as stats:
        gm(torch.arange(-3, 4))  # integer input: the op is hard, there is no band
    assert stats.records == [] and "not floating" in stats.skipped["sign"]


def test_recompile_inside_block_rebuilds_the_shadow():
    gm = linearize(Sign(), 0.1)
    x = torch.tensor(SIGN_X)
    with band_stats(gm) as stats:
        gm(x)
        (node,) = [n for n in gm.graph.nodes if n.name == "sign"]
        node.kwargs = {**node.kwargs, "eps": 0.6}  # a graph edit (a literal eps instead of the eps buffer)
        gm.recompile()
        y = gm(x)
    assert torch.equal(y, torch.ops.sll.sign(x, eps=0.6))
    assert [(r.eps, r.in_band) for r in stats.records] == [(0.1, 3), (0.6, 7)]


def test_set_eps_inside_block_is_seen_at_the_next_step_as_a_float():
    """set_eps puts new tensors in the eps buffers (no recompile): the shadow follows them."""
    gm = linearize(Sign(), 0.1)
    x = torch.tensor(SIGN_X)
    with band_stats(gm) as stats:
        gm(x)
        code = gm.code
        sll_fx.set_eps(gm, 0.6)
        assert gm.code == code
        y = gm(x)
    assert torch.equal(y, torch.ops.sll.sign(x, eps=0.6))
    assert [(r.eps, r.in_band) for r in stats.records] == [(0.1, 3), (0.6, 7)]
    assert all(type(r.eps) is float for r in stats.records)
    assert all(type(s.eps) is float for s in stats.summary()) and "0.6" in str(stats)


# ----------------------------------------------------------------------------------------
# train / eval inside a recording (the shadow forward reads every attribute from the module)
# ----------------------------------------------------------------------------------------

class DropNet(nn.Module):
    """Functional dropout on self.training (a traced get_attr), a Dropout and a BatchNorm (leaf modules)."""

    def __init__(self):
        super().__init__()
        self.l = nn.Linear(8, 8)
        self.bn = nn.BatchNorm1d(8)
        self.drop = nn.Dropout(0.5)

    def forward(self, x):
        h = self.bn(self.l(x))
        return self.drop(F.dropout(torch.sign(h), 0.5, training=self.training)) + h


def _run(gm, x, seed, train):
    gm.train(train)
    torch.manual_seed(seed)
    y = gm(x)
    y.square().sum().backward()
    grads = [p.grad.clone() for p in gm.parameters()]
    gm.zero_grad()
    return y.detach(), grads, gm.bn.running_mean.clone()


@pytest.mark.parametrize("first", ["train", "eval"])
def test_train_eval_switch_inside_recording_follows_the_flag(first):
    """gm.eval() / gm.train() inside a recording: outputs, gradients and BatchNorm statistics are those
    without recording, whatever mode the first recorded step ran in."""
    torch.manual_seed(0)
    x = torch.randn(16, 8)
    order = [True, False, True, False] if first == "train" else [False, True, False, True]
    plain = linearize(DropNet(), 0.1)
    recorded = copy.deepcopy(plain)
    expected = [_run(plain, x, seed, train) for seed, train in enumerate(order)]
    with band_stats(recorded) as stats:
        got = [_run(recorded, x, seed, train) for seed, train in enumerate(order)]
    for (y0, g0, rm0), (y1, g1, rm1) in zip(expected, got):
        assert torch.equal(y0, y1) and torch.equal(rm0, rm1)
        assert all(torch.equal(a, b) for a, b in zip(g0, g1))
    assert not torch.equal(expected[0][0], expected[1][0])   # the two modes differ
    assert stats.steps == 4 and [r.step for r in stats.records] == [0, 1, 2, 3]


def test_train_eval_switch_eval_values_exact():
    """The audit's case: a training step, then gm.eval() in the same recording: dropout is off."""
    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.l = nn.Linear(8, 8)

        def forward(self, x):
            return F.dropout(torch.sign(self.l(x)), 0.5, training=self.training)

    torch.manual_seed(0)
    gm = linearize(M(), 0.1)
    x = torch.randn(4, 8)
    with torch.no_grad():
        gm.l.bias.fill_(5.0)   # every sign is +1: eval gives all ones, train gives 0 or 2
    gm.eval()
    with torch.no_grad():
        expected = gm(x)
    assert torch.equal(expected, torch.ones(4, 8))
    gm.train()
    with band_stats(gm):
        y = gm(x)
        assert set(y.unique().tolist()) == {0.0, 2.0}
        gm.eval()
        with torch.no_grad():
            assert torch.equal(gm(x), torch.ones(4, 8))
        gm.train()
        assert set(gm(x).unique().tolist()) == {0.0, 2.0}


def test_shadow_reads_attributes_of_submodule_paths_at_call_time():
    """A graph reading get_attr("sub.training") and a plain attribute: set after the shadow was built."""
    root = nn.Module()
    root.sub = nn.Module()
    root.register_buffer("eps", torch.tensor(0.1))
    root.scale = 2.0
    graph = fx.Graph()
    x = graph.placeholder("x")
    training = graph.get_attr("sub.training")
    scale = graph.get_attr("scale")
    s = graph.call_function(torch.ops.sll.sign, (x,), {"eps": graph.get_attr("eps")})
    d = graph.call_function(F.dropout, (s, 0.5), {"training": training})
    graph.output(graph.call_function(operator.mul, (d, scale)))
    gm = fx.GraphModule(root, graph)
    assert gm.sub.training
    x = torch.tensor(SIGN_X)
    with band_stats(gm) as stats:
        torch.manual_seed(0)
        dropped = gm(x)
        gm.sub.eval()
        gm.scale = 3.0
        y = gm(x)
    kept, sign = dropped != 0, torch.ops.sll.sign(x, eps=0.1)
    assert 0 < int(kept.sum()) < 10 and torch.equal(dropped[kept], (sign * 2 * 2.0)[kept])  # dropout on
    assert torch.equal(y, torch.ops.sll.sign(x, eps=0.1) * 3.0)
    assert stats.steps == 2 and [r.in_band for r in stats.records] == [3, 3]


def test_hot_path_regenerates_the_shadow_only_on_recompile(monkeypatch):
    gm = linearize(Sign(), 0.1)
    built = []
    real = BandStats._shadow
    monkeypatch.setattr(BandStats, "_shadow", lambda self, path, mod: built.append(path) or real(self, path, mod))
    x = torch.tensor(SIGN_X)
    with band_stats(gm):
        gm(x)
        gm.eval()
        sll_fx.set_eps(gm, 0.3)
        gm.train()
        assert torch.equal(gm(x), torch.ops.sll.sign(x, eps=0.3))
        gm.recompile()
        gm(x)
    assert built == ["", ""]


# ----------------------------------------------------------------------------------------
# estimators (method="ste" / "sigmoid"): their gradient, no warning
# ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("method", ["ste", "sigmoid"])
def test_estimator_nodes_get_their_gradient_and_no_warning(method):
    torch.manual_seed(0)
    gm = sll_fx.linearize_module(Round(), eps=0.1, method=method, verbose=False)
    # far from every k + 1/2: 0 of 1000 in the band of eps 0.1
    x = (torch.randint(-5, 5, (1000,)).float() + 0.1 * torch.rand(1000)).requires_grad_()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with band_stats(gm, window=3) as stats:
            for _ in range(4):
                x.grad = None
                gm(x).sum().backward()
    assert stats.warned == ()
    s = only(stats.summary() and [r for r in stats.records if r.step == 3])
    assert (s.mode, s.band_fraction, s.in_band) == (method, 0.0, 0)
    assert s.mean_abs_grad == pytest.approx(x.grad.abs().mean().item(), rel=1e-6)
    if method == "ste":
        assert s.mean_abs_grad == 1.0   # identity for round: 1 on every element
    else:
        assert 0 < s.mean_abs_grad < 1.0
    (summary,) = stats.summary()
    assert summary.mode == method and summary.low_steps == 0 and not summary.warned
    assert f"sll.round [{method}]" in str(stats)


def test_estimator_sign_ste_clip():
    """ste on sign: the clipped identity 1{|x| <= 1}; the mean |grad| is what reached x."""
    gm = sll_fx.linearize_module(Sign(), eps=None, method="ste", verbose=False)
    x = torch.tensor([-2.0, -1.0, -0.5, 0.3, 0.9, 1.5, 3.0, 0.0], requires_grad=True)
    with band_stats(gm) as stats:
        (gm(x) * torch.arange(1.0, 9.0)).sum().backward()
    rec = only(stats.records)
    assert rec.mode == "ste"
    assert rec.mean_abs_grad == pytest.approx((2 + 3 + 4 + 5 + 8) / 8)
    assert rec.mean_abs_grad == pytest.approx(x.grad.abs().mean().item())


class _Threshold(nn.Module):
    def __init__(self):
        super().__init__()
        self.t = nn.Parameter(torch.tensor([[0.0], [0.5], [1.0], [2.0]]))

    def forward(self, x):
        return (x > self.t).float()   # (10,) against (4, 1): broadcast to (4, 10)


@pytest.mark.parametrize("method", ["ste", "sigmoid"])
def test_estimator_gradient_of_a_broadcasting_comparison(method):
    gm = sll_fx.linearize_module(_Threshold(), eps=0.3, method=method, verbose=False)
    x = torch.linspace(-1, 3, 10).requires_grad_()
    w = torch.arange(40.0).reshape(4, 10)
    with band_stats(gm) as stats:
        (gm(x) * w).sum().backward()
    rec = only(stats.records)
    assert (rec.mode, rec.numel) == (method, 40)
    assert rec.mean_abs_grad > 0
    assert rec.mean_abs_grad == pytest.approx(x.grad.abs().mean().item(), rel=1e-6)


def test_linear_and_hard_nodes_record_their_mode():
    for mode in ("linear", "hard"):
        gm = linearize(Sign(), 0.1, mode=mode)
        with band_stats(gm) as stats:
            gm(torch.tensor(SIGN_X))
        assert only(stats.records).mode == mode and stats.summary()[0].mode == mode


# ----------------------------------------------------------------------------------------
# names: the report's (entry names; "path.node" in a nested GraphModule), as calibrate's
# ----------------------------------------------------------------------------------------

class _Gate2(nn.Module):
    def forward(self, x):
        return torch.sign(x)


class _Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.g = _Gate2()

    def forward(self, x):
        return self.g(x) if x.sum() > 0 else self.g(-x)   # data-dependent: kept opaque, g traced


class _Named(nn.Module):
    def __init__(self):
        super().__init__()
        self.b = _Block()

    def forward(self, x):
        return (x > 0.3).float() + (x > 5.0).float() + self.b(x)


def test_names_are_the_report_entry_names():
    gm = linearize(_Named(), 0.01)
    report = {(e.module, e.node) for e in gm.sll_report.rewritten}
    assert report == {("", "gt"), ("", "gt_1"), ("b.g", "sign")}
    x = torch.randn(64, 8).abs() + 0.5
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with band_stats(gm, window=2) as stats:
            gm(x)
            gm(x)
    names = [r.node for r in stats.records if r.step == 0]
    assert sorted(names) == ["b.g.sign", "gt", "gt_1"]
    assert sorted(stats.warned) == ["b.g.sign", "gt", "gt_1"]
    messages = " ".join(str(w.message) for w in caught if issubclass(w.category, BandWarning))
    assert "'gt'" in messages and "'gt_1'" in messages and "'b.g.sign'" in messages
    assert "'compare'" not in messages
    # each name is a report entry: "node" at the top, "<nested GraphModule path>.<node>" below
    for name in names:
        path, _, node = name.rpartition(".")
        assert any(e.node == node and (e.module == path or e.module.startswith(path + ".")) and
                   (path == "" or isinstance(gm.get_submodule(path), fx.GraphModule))
                   for e in gm.sll_report.rewritten), name
    # the same names as calibrate's
    assert sorted(sll_fx.calibrate(gm, torch.randn(8, 8))) == sorted(names)
    assert diagnostics.sll_node_names(gm.graph) == {
        n: n.meta["sll_entry"] for n in gm.graph.nodes if n.op == "call_function" and is_sll_target(n.target)}


def test_public_names():
    assert sll_fx.band_stats is band_stats and sll_fx.BandWarning is BandWarning
    assert {"band_stats", "BandWarning"} <= set(sll_fx.__all__)
    assert isinstance(band_stats(linearize(Sign(), 0.1)), BandStats)

"""eps="auto": per-node calibration of eps to a target band fraction (issue 5, item 2)."""

import copy
import types
import warnings

import numpy as np
import pytest
import torch
from torch import fx, nn
from torch.nn import functional as F

import sll_fx
from sll_fx import ops, rules
from sll_fx.annealing import _eps_nodes, node_eps

from _helpers import COPIES


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(8, 8)

    def forward(self, x):
        h = self.lin(x)
        q = torch.round(h * 4)
        s = torch.sign(h - 0.1)
        m = (h > 0.3).float()
        f = torch.floor(h * 3.3)
        c = nn.functional.one_hot(torch.argmax(h, -1), 8).float()
        return q.sum(-1) + s.sum(-1) + m.sum(-1) + f.sum(-1) + (c * h).sum(-1)


class _Fractions(fx.Interpreter):
    """Each sll node's band fraction (ops.in_band) with its current eps."""

    def __init__(self, gm):
        super().__init__(gm)
        self.fractions = {}

    def run_node(self, n):
        if n.op == "call_function" and ops.is_sll_target(n.target) and "eps" in n.kwargs:
            args, kwargs = self.fetch_args_kwargs_from_env(n)
            self.fractions[n.name] = float(ops.in_band(rules.sll_op_name(n.target), args, kwargs).double().mean())
        return super().run_node(n)


def _fractions(gm, x):
    f = _Fractions(gm)
    with torch.no_grad():
        f.run(x)
    return f.fractions


def _eps(gm):
    return {n.name: node_eps(m, n) for m, n in _eps_nodes(gm)}


def _data(seed, scale=1.0):
    return torch.randn(1024, 8, generator=torch.Generator().manual_seed(seed)) * scale

def test_calibration_functions_are_exported_names():
    """``from sll_fx import *`` gives the calibration functions the README uses."""
    names = {}
    exec("from sll_fx import *", names)
    assert names["calibrate"] is sll_fx.calibrate
    assert names["freeze_eps"] is sll_fx.freeze_eps
    assert names["is_calibrating"] is sll_fx.is_calibrating



@pytest.mark.parametrize("target", [0.05, 0.1, 0.3])
def test_first_forward_calibrates_to_the_target(target):
    torch.manual_seed(0)
    gm = sll_fx.linearize_module(Net(), eps="auto", target=target, verbose=False)
    assert sll_fx.is_calibrating(gm)
    x = _data(1)
    gm(x)
    assert not sll_fx.is_calibrating(gm)
    fractions = _fractions(gm, x)
    eps = _eps(gm)
    assert len(fractions) == 5
    for name, frac in fractions.items():
        node = next(n for _, n in _eps_nodes(gm) if n.name == name)
        limit = ops.eps_limit(rules.sll_op_name(node.target), node.kwargs.get("decimals", 0))
        assert abs(frac - target) <= 0.02 or eps[name] == limit, (name, frac, eps[name])
    # the report shows the chosen eps
    by_entry = {n.meta["sll_entry"]: node_eps(m, n) for m, n in _eps_nodes(gm)}
    for e in gm.sll_report.rewritten:
        if e.node in by_entry:
            assert e.eps == by_entry[e.node]
    assert f"{by_entry['round_1']:g}" in str(gm.sll_report)


def test_limit_binds():
    class R(nn.Module):
        def forward(self, x):
            return torch.round(x)
    gm = sll_fx.linearize_module(R(), eps="auto", target=0.99999, verbose=False)
    x = torch.linspace(-3, 3, 10001, dtype=torch.float64)[:-1]
    chosen = sll_fx.calibrate(gm, x)
    assert list(chosen.values()) == [0.5]


def test_freeze_and_recalibrate():
    torch.manual_seed(0)
    gm = sll_fx.linearize_module(Net(), eps="auto", target=0.1, calibrate_steps=5, verbose=False)
    gm(_data(1))
    first = _eps(gm)
    sll_fx.freeze_eps(gm)
    assert not sll_fx.is_calibrating(gm)
    gm(_data(2, scale=5.0))
    assert _eps(gm) == first  # frozen: new data changes nothing
    new = _data(3, scale=5.0)
    sll_fx.calibrate(gm, new)  # an explicit call re-calibrates
    second = _eps(gm)
    assert second != first
    for frac in _fractions(gm, new).values():
        assert abs(frac - 0.1) <= 0.02
    sll_fx.calibrate(gm, new, target=0.3)
    assert all(abs(f - 0.3) <= 0.02 for f in _fractions(gm, new).values())


def test_more_steps_keep_calibrating_then_stop():
    torch.manual_seed(0)
    gm = sll_fx.linearize_module(Net(), eps="auto", calibrate_steps=2, verbose=False)
    gm(_data(1))
    a = _eps(gm)
    assert sll_fx.is_calibrating(gm)
    gm(_data(2, scale=3.0))
    b = _eps(gm)
    assert a != b and not sll_fx.is_calibrating(gm)
    gm(_data(4, scale=9.0))
    assert _eps(gm) == b


def test_calibration_changes_no_graph_and_compiled_code_follows():
    torch.manual_seed(0)
    gm = sll_fx.linearize_module(Net(), eps="auto", verbose=False)
    with pytest.warns(UserWarning, match="placeholder eps"):
        sll_fx.freeze_eps(gm)  # (no automatic calibration: the explicit one below)
    code = gm.code
    compiles = []

    def backend(g, inputs):
        compiles.append(g)
        return g.forward

    compiled = torch.compile(gm, backend=backend)
    x = _data(1)
    compiled(x)
    sll_fx.calibrate(gm, x)
    assert gm.code == code
    y = compiled(x)
    assert len(compiles) == 1  # eps is a graph input: no recompilation
    torch.testing.assert_close(y, gm(x))


def test_calibrate_works_on_a_fixed_eps_model_and_keeps_state_dict():
    torch.manual_seed(0)
    model = Net()
    gm = sll_fx.linearize_module(model, 0.05, verbose=False)
    keys = set(gm.state_dict())
    chosen = sll_fx.calibrate(gm, _data(1), target=0.2)
    # keyed by the report's names (gt, one_hot: the entries), each with the eps its node now has
    by_entry = {n.meta["sll_entry"]: node_eps(m, n) for m, n in _eps_nodes(gm)}
    assert set(chosen) == {e.node for e in gm.sll_report.rewritten} == set(by_entry)
    assert chosen == by_entry and {e.node: e.eps for e in gm.sll_report.rewritten} == chosen
    assert set(gm.state_dict()) == keys
    assert not sll_fx.is_calibrating(gm)


def test_bad_target():
    with pytest.raises(ValueError, match="target"):
        sll_fx.linearize_module(Net(), eps="auto", target=1.5, verbose=False)


def test_a_target_that_is_no_number_is_a_type_error_naming_the_function():
    """target="0.2" raised "'<' not supported between instances of 'float' and 'str'" (audit)."""
    fix = r"\nFix: pass a float in \(0, 1\), e.g. target=0.25"
    for eps in ("auto", 0.1):
        with pytest.raises(TypeError, match=rf"^linearize_module: target='0.2' must be a number.*got str{fix}"):
            sll_fx.linearize_module(Net(), eps=eps, target="0.2", verbose=False)
    gm = sll_fx.linearize_module(Net(), eps=0.1, verbose=False)
    with pytest.raises(TypeError, match=rf"^calibrate: target='0.2' must be a number.*got str{fix}"):
        sll_fx.calibrate(gm, _data(0), target="0.2")


@pytest.mark.parametrize("call", ["calibrate", "freeze_eps"])
@pytest.mark.parametrize("model", [None, lambda x: x], ids=["None", "function"])
def test_calibrate_and_freeze_eps_of_no_module_is_a_type_error(call, model):
    """calibrate(lambda x: x, x) raised "'function' object has no attribute 'modules'", freeze_eps(None) "'NoneType'
    object has no attribute '__dict__'" (audit)."""
    args = (model, _data(0)) if call == "calibrate" else (model,)
    with pytest.raises(TypeError, match=rf"^{call}: sll_fx expects an nn.Module \(the model sll_fx.linearize_module "
                                        r"returned\), got .*\nFix: pass the linearized model"):
        getattr(sll_fx, call)(*args)


def test_auto_with_ste_and_sigmoid_methods():
    torch.manual_seed(0)

    class S(nn.Module):
        def forward(self, x):
            return torch.round(x * 3) + torch.sign(x)
    gm = sll_fx.linearize_module(S(), eps="auto", method="sigmoid", verbose=False)
    x = _data(5).requires_grad_()
    y = gm(x)
    assert torch.equal(y, S()(x))
    y.sum().backward()
    assert x.grad.abs().sum() > 0


class _Floor(nn.Module):
    def forward(self, x):
        return torch.floor(x)


def test_only_atoms_at_a_boundary_give_the_dtype_floor_not_a_useless_eps():
    gm = sll_fx.linearize_module(_Floor(), eps="auto", target=0.05, verbose=False)
    x = torch.tensor([0.0, 1.0, 2.0, 3.0]).repeat(250)  # every element exactly on a boundary
    (eps,) = sll_fx.calibrate(gm, x).values()
    assert eps == pytest.approx(4 * torch.finfo(torch.float32).eps * float(x.max()))


def test_atoms_at_a_boundary_are_left_out_of_the_quantile():
    """Elements exactly on a boundary lie in every band: the others set its width (counting 30% of zeros under a
    target of 0.05 put eps at the floor, a band holding no other element)."""
    from sll_fx.calibration import choose_eps
    torch.manual_seed(0)
    off = torch.rand(700) * 3
    x = torch.cat([torch.zeros(300), off])  # 30% exactly on a boundary
    gm = sll_fx.linearize_module(_Floor(), eps="auto", target=0.05, verbose=False)
    (eps,) = sll_fx.calibrate(gm, x).values()
    distances = (off - off.round()).abs().double()  # (floor's boundaries: the integers)
    assert eps == choose_eps(distances, 0.05, 0.5) and eps > 1e-3
    inside = ((off - off.round()).abs() < eps).float().mean().item()
    assert inside == pytest.approx(0.05, abs=0.002)


def test_a_heaviside_in_hard_mode_on_relu_zeros_passes_a_gradient_with_auto_eps():
    """An integrate-and-fire neuron with a non-negative membrane: heaviside(relu(...), 0) sits on its jump on whole
    ranges (left in mode "hard" by the tie check); with eps="auto" its band was the floor, and no gradient reached
    the layer before it."""
    class IF(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1, self.fc2 = nn.Linear(16, 32), nn.Linear(32, 10)

        def forward(self, x):
            h = self.fc1(x)
            v, out = torch.zeros_like(h), torch.zeros_like(h)
            for _ in range(4):
                v = F.relu(v + h - 0.5)
                s = torch.heaviside(v, torch.zeros(()))
                v = v * (1.0 - s)
                out = out + s
            return self.fc2(out)

    torch.manual_seed(0)
    m, x = IF(), torch.randn(64, 16)
    assert (F.relu(m.fc1(x) - 0.5) == 0).float().mean() > 0.5
    gm = sll_fx.linearize_module(m, eps="auto", verbose=False)
    (entry,) = [e for e in gm.sll_report.rewritten if e.node == "heaviside"]
    assert entry.mode == "hard"
    y = gm(x)
    assert torch.equal(y, m(x))
    y.square().sum().backward()
    assert sll_fx.eps_state(gm)["heaviside"] > 1e-2
    assert (m.fc1.weight.grad != 0).float().mean() > 0.9


def test_auto_is_the_default_with_the_documented_target():
    """``linearize_module(model)`` calibrates: a fraction ``DEFAULT_TARGET`` of each node's inputs in its band."""
    from sll_fx.calibration import DEFAULT_TARGET
    torch.manual_seed(0)
    gm = sll_fx.linearize_module(Net(), verbose=False)
    assert sll_fx.is_calibrating(gm)
    x = _data(1)
    gm(x)
    assert not sll_fx.is_calibrating(gm)
    for name, fraction in _fractions(gm, x).items():
        assert abs(fraction - DEFAULT_TARGET) < 0.01, (name, fraction)


class Decisions(nn.Module):
    """A node of parameters alone (per-item logits, a weight mask) next to a data-dependent gate."""

    def __init__(self):
        super().__init__()
        self.theta = nn.Parameter(torch.randn(50) * 0.1)
        self.w = nn.Parameter(torch.randn(50, 50))
        self.t = nn.Parameter(torch.tensor(0.2))

    def forward(self, x):
        pick = (self.theta > 0).float()
        mask = (self.w.abs() > 0.5).float()
        gate = (x > self.t).float()
        return (x * gate) @ (self.w * mask) * pick


def test_nodes_of_parameters_alone_get_a_band_over_all_their_elements():
    torch.manual_seed(0)
    model = Decisions()
    gm = sll_fx.linearize_module(model, verbose=False)
    x = _data(2, 1.0).repeat(1, 7)[:, :50]
    gm(x)
    fractions, eps = _fractions(gm, x), _eps(gm)
    pick, mask, gate = sorted(fractions)   # node names: gt (theta), gt_1 (w), gt_2 (x)
    assert fractions[pick] == 1.0 and fractions[mask] == 1.0
    assert eps[pick] == pytest.approx(1.5 * float(model.theta.detach().abs().max()), rel=1e-3)
    assert eps[mask] == pytest.approx(1.5 * float((model.w.detach().abs() - 0.5).abs().max()), rel=1e-3)
    assert abs(fractions[gate] - 0.25) < 0.01


def test_report_says_auto_until_the_first_calibration():
    torch.manual_seed(0)
    gm = sll_fx.linearize_module(Net(), verbose=False)
    report = gm.sll_report
    assert report.calibrating and 'eps="auto"' in str(report)
    rows = [line for line in str(report).splitlines()[3:] if "sll." in line]
    assert len(rows) == len(report.rewritten) and all(" auto " in line for line in rows)
    gm(_data(3))
    assert not report.calibrating and 'eps="auto"' not in str(report) and " auto " not in str(report)
    eps = _eps(gm)
    assert sorted(e.eps for e in report.rewritten) == pytest.approx(sorted(eps.values()))


def test_compile_before_calibration_calibrates_eagerly_or_says_how():
    """eps="auto" calibrates on the first call, eagerly: torch.compile (graph break there) gets the
    calibrated model; fullgraph=True cannot break and says what to do; strict export refuses."""
    import torch._dynamo
    torch.manual_seed(0)
    x = _data(4)
    gm = sll_fx.linearize_module(Net(), verbose=False)
    compiled = torch.compile(gm, backend="aot_eager")
    y = compiled(x)
    assert not sll_fx.is_calibrating(gm)
    torch.testing.assert_close(y, gm(x))
    assert all(abs(f - 0.25) < 0.01 for f in _fractions(gm, x).values())
    torch._dynamo.reset()
    gm = sll_fx.linearize_module(Net(), verbose=False)
    with pytest.raises(Exception, match="calibrates eps eagerly on the first forward call"):
        torch.compile(gm, backend="aot_eager", fullgraph=True)(x)
    torch._dynamo.reset()
    with pytest.raises(Exception, match="placeholders"):
        torch.export.export(gm, (x,), strict=True)
    gm(x)   # calibrated: both work
    torch.compile(gm, backend="aot_eager", fullgraph=True)(x)
    torch._dynamo.reset()


class _LutQ(nn.Module):
    def forward(self, x):
        return torch.round(x * 2)


class _Lut(nn.Module):
    """A tensor literal indexed in forward: traced as ``call_method __getitem__``, retraced from the code
    as ``operator.getitem`` (unpickling then dropped every node's metadata: calibrate found no node)."""

    def __init__(self):
        super().__init__()
        self.q = _LutQ()

    def forward(self, x):
        lut = torch.arange(4.0)
        return self.q(x) + lut[x.long().clamp(0, 3)]


def test_an_unpickled_model_calibrates_and_selects_by_submodule_as_the_original():
    import pickle
    x = torch.randn(64, 4, generator=torch.Generator().manual_seed(0)) * 2
    gm = sll_fx.linearize_module(_Lut(), eps=0.1, verbose=False)
    pk = pickle.loads(pickle.dumps(gm))
    assert sll_fx.calibrate(pk, x) == sll_fx.calibrate(gm, x) and len(sll_fx.calibrate(gm, x)) == 1
    assert sll_fx.set_eps(pk, 0.3, where="q") == sll_fx.set_eps(gm, 0.3, where="q") == ["round_1"]
    auto = pickle.loads(pickle.dumps(sll_fx.linearize_module(_Lut(), verbose=False)))  # before its first call
    assert list(sll_fx.calibrate(auto, x)) == ["round_1"]


@pytest.mark.parametrize("first", [torch.no_grad, torch.inference_mode])
def test_a_first_call_under_inference_mode_makes_normal_eps_tensors(first):
    """A validation pass before training (Lightning's sanity check runs under inference_mode) calibrates:
    the eps buffers it writes are normal tensors (an inference tensor cannot be saved for a backward,
    which compiled training code does), and the precision check still runs afterwards."""
    torch.manual_seed(0)
    gm = sll_fx.linearize_module(Net(), verbose=False)
    x = torch.randn(16, 8)
    with first():
        gm(x)
    buffers = {n: b for n, b in gm.named_buffers() if n.startswith("_sll_eps_")}
    assert len(buffers) == 5 and not any(b.is_inference() for b in buffers.values())
    with torch.inference_mode():
        sll_fx.set_eps(gm, 0.05, where="round")
    assert not gm._sll_eps_round_1.is_inference() and gm._sll_eps_round_1.item() == 0.05
    compiled = torch.compile(gm, backend="aot_eager", fullgraph=True)
    xg = x.clone().requires_grad_(True)
    compiled(xg).sum().backward()
    xe = x.clone().requires_grad_(True)
    gm(xe).sum().backward()
    torch.testing.assert_close(xg.grad, xe.grad)


@pytest.mark.parametrize("reentrant", [False, True])
def test_a_checkpoint_recompute_is_no_calibration_step(reentrant):
    """``checkpoint(gm, x)``: the backward runs the forward again (and its pre-hook): that is the same batch,
    not another calibration step, and it runs no calibration forward of its own."""
    from torch.utils.checkpoint import checkpoint
    torch.manual_seed(0)
    gm = sll_fx.linearize_module(Net(), calibrate_steps=3, verbose=False)
    calls = []
    gm.lin.register_forward_hook(lambda *a: calls.append(1))
    x = torch.randn(16, 8, requires_grad=True)
    checkpoint(gm, x, use_reentrant=reentrant).sum().backward()
    assert gm.__dict__["_sll_calibration"]["steps"] == 2
    assert len(calls) == 3  # the calibration's forward, the forward, the recompute


# --- calibration and a band_stats recording (the recording stays; the calibration forward is no step) ---

class _Rounder(nn.Module):
    def __init__(self):
        super().__init__()
        self.l = nn.Linear(4, 4)

    def forward(self, x):
        return torch.round(self.l(x) * 2)


@pytest.mark.parametrize("steps", [1, 3])
def test_auto_calibration_keeps_a_band_stats_recording(steps):
    torch.manual_seed(0)
    gm = sll_fx.linearize_module(_Rounder(), calibrate_steps=steps, verbose=False)
    x = torch.randn(256, 4)
    opt = torch.optim.SGD(gm.parameters(), lr=0.01)
    with sll_fx.band_stats(gm) as stats:
        for _ in range(5):
            loss = gm(x).pow(2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        assert "forward" in gm.__dict__   # the recording's forward, still there
    assert not sll_fx.is_calibrating(gm)
    assert stats.steps == 5 and [r.step for r in stats.records] == [0, 1, 2, 3, 4]
    assert all(r.mean_abs_grad is not None for r in stats.records)
    # steps after the calibration record its eps
    assert stats.records[-1].eps == pytest.approx(gm.sll_report.rewritten[0].eps)
    assert "forward" not in gm.__dict__


def test_calibrate_while_recording_is_no_step_and_keeps_the_recording():
    torch.manual_seed(0)
    gm = sll_fx.linearize_module(_Rounder(), eps=0.1, verbose=False)
    x = torch.randn(256, 4)
    with sll_fx.band_stats(gm) as stats:
        gm(x)
        recording = gm.__dict__["forward"]
        chosen = sll_fx.calibrate(gm, x)
        assert gm.__dict__["forward"] is recording
        gm(x)
        gm(x)
    assert stats.steps == 3 and [r.step for r in stats.records] == [0, 1, 2]
    assert [r.eps for r in stats.records] == [0.1, chosen["round_1"], chosen["round_1"]]
    assert stats.records[1].band_fraction == pytest.approx(0.25, abs=0.01)   # the default target on x
    assert "forward" not in gm.__dict__


def test_calibrate_puts_back_a_users_instance_forward():
    gm = sll_fx.linearize_module(_Rounder(), eps=0.1, verbose=False)
    calls = []
    own = type(gm).forward.__get__(gm)

    def forward(*a, **k):
        calls.append(1)
        return own(*a, **k)

    gm.forward = forward
    sll_fx.calibrate(gm, torch.randn(16, 4))
    assert gm.__dict__["forward"] is forward and calls == []   # the calibration ran its own forward
    gm(torch.randn(2, 4))
    assert calls == [1]


class _OnlyNested(nn.Module):
    """Every discrete node in the traced child of an opaque module (a GraphModule at "b.g")."""

    class _Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.g = _Sign()

        def forward(self, x):
            return self.g(x) if x.sum() > 0 else self.g(-x)

    def __init__(self):
        super().__init__()
        self.l = nn.Linear(4, 4)
        self.b = self._Block()

    def forward(self, x):
        return self.b(self.l(x))


class _Sign(nn.Module):
    def forward(self, x):
        return torch.sign(x)


def test_auto_calibration_of_nested_nodes_only_is_no_step_either():
    torch.manual_seed(0)
    gm = sll_fx.linearize_module(_OnlyNested(), verbose=False)
    assert [(e.module, e.node) for e in gm.sll_report.rewritten] == [("b.g", "sign")]
    x = torch.randn(64, 4)
    with sll_fx.band_stats(gm) as stats:
        for _ in range(3):
            gm(x)
    assert stats.steps == 3 and [(r.node, r.step) for r in stats.records] == [("b.g.sign", i) for i in range(3)]
    assert stats.records[0].band_fraction == pytest.approx(0.25, abs=0.02)
    assert sll_fx.calibrate(gm, x).keys() == {"b.g.sign"}


# --- freeze_eps before any calibration: the report shows the eps in use, and a warning says so ---

def test_freeze_before_the_first_call_warns_and_the_report_shows_the_placeholder():
    gm = sll_fx.linearize_module(_Rounder(), verbose=False)
    report = gm.sll_report
    assert report.calibrating
    with pytest.warns(UserWarning, match=r"placeholder eps.*sll_fx\.calibrate\(gm, x\).*set_eps") as caught:
        sll_fx.freeze_eps(gm)
    assert len(caught) == 1 and caught[0].filename == __file__
    assert not sll_fx.is_calibrating(gm) and not report.calibrating
    text = str(report)
    assert 'eps="auto"' not in text and " auto " not in text
    (entry,) = report.rewritten
    (eps,) = _eps(gm).values()
    assert entry.eps == eps == 0.01 and " 0.01 " in text
    for _ in range(2):
        gm(torch.randn(8, 4))
    assert _eps(gm) == {"round_1": 0.01}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sll_fx.freeze_eps(gm)          # once only
        sll_fx.calibrate(gm, torch.randn(64, 4))   # still works, frozen or not
    assert report.rewritten[0].eps == _eps(gm)["round_1"] != 0.01


def test_freeze_after_a_calibration_or_by_calibrate_does_not_warn():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        gm = sll_fx.linearize_module(_Rounder(), calibrate_steps=3, verbose=False)
        gm(torch.randn(64, 4))
        sll_fx.freeze_eps(gm)          # after one of three calibrating calls: eps from data
        assert not gm.sll_report.calibrating and not sll_fx.is_calibrating(gm)
        gm = sll_fx.linearize_module(_Rounder(), verbose=False)
        sll_fx.calibrate(gm, torch.randn(64, 4))   # ends the pending calibration itself
        assert not gm.sll_report.calibrating and not sll_fx.is_calibrating(gm)
        gm = sll_fx.linearize_module(_Rounder(), eps=0.1, verbose=False)
        sll_fx.freeze_eps(gm)          # no automatic calibration at all


def test_set_eps_while_a_calibration_is_pending_takes_the_node_out_of_it():
    """An eps schedule from the first step with eps="auto" and calibrate_steps=3: the calibration passes the nodes
    set_eps set (before: it overwrote them on its steps, and the report said 'auto')."""
    torch.manual_seed(0)
    gm = sll_fx.linearize_module(Net(), calibrate_steps=3, verbose=False)
    x = torch.randn(32, 8)
    for step, eps in enumerate((0.4, 0.35, 0.3)):
        sll_fx.set_eps(gm, eps, where="round")
        gm(x)
        entry = next(e for e in gm.sll_report.rewritten if e.op == "torch.round")
        assert entry.eps == eps and not entry.auto
        assert node_eps(gm, next(n for n in gm.graph.nodes if n.name == "round_1")) == eps
    others = [e for e in gm.sll_report.rewritten if e.op != "torch.round"]
    assert others and all(e.auto and e.eps != 0.4 for e in others)  # still calibrated


def test_calibration_arguments_with_a_fixed_eps():
    """calibrate_steps with a fixed eps is refused (it was ignored); target becomes calibrate()'s default (a later
    calibrate() used 0.25)."""
    with pytest.raises(ValueError, match=r'calibrate_steps=3 applies to eps="auto" only.*\nFix: drop calibrate_steps'):
        sll_fx.linearize_module(Net(), eps=0.1, calibrate_steps=3, verbose=False)
    torch.manual_seed(0)
    x = torch.randn(64, 8)
    gm = sll_fx.linearize_module(Net(), eps=0.1, target=0.5, verbose=False)
    chosen = sll_fx.calibrate(gm, x)
    expected = sll_fx.calibrate(gm, x, target=0.5)
    assert chosen == expected and chosen != sll_fx.calibrate(gm, x, target=0.25)


# ----------------------------------------------------------------------------------------
# copies keep a pending calibration and calibrate's target; no data; calibrate_steps
# ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("how", list(COPIES))
def test_a_copy_made_before_the_first_call_calibrates_on_its_own_first_call(how):
    torch.manual_seed(0)
    gm = sll_fx.linearize_module(Net(), target=0.3, verbose=False)
    placeholders = _eps(gm)
    twin = COPIES[how](gm)
    assert sll_fx.is_calibrating(twin) and twin.sll_report.calibrating and 'eps="auto"' in str(twin.sll_report)
    x = _data(1)
    twin(x)
    assert not sll_fx.is_calibrating(twin) and not twin.sll_report.calibrating
    assert _eps(twin) != placeholders and all(abs(f - 0.3) <= 0.02 for f in _fractions(twin, x).values()
                                              if f not in (0.0, 1.0))
    gm(x)  # the original calibrates on its own first call too, to the same values
    assert _eps(twin) == _eps(gm)


@pytest.mark.parametrize("how", list(COPIES))
def test_a_copy_between_calibration_steps_pools_the_samples_of_the_steps_before(how):
    torch.manual_seed(0)
    gm = sll_fx.linearize_module(Net(), calibrate_steps=2, verbose=False)
    gm(_data(1))
    twin = COPIES[how](gm)
    assert sll_fx.is_calibrating(twin)
    twin(_data(2, scale=3.0))
    gm(_data(2, scale=3.0))
    assert not sll_fx.is_calibrating(twin) and not sll_fx.is_calibrating(gm) and _eps(twin) == _eps(gm)


@pytest.mark.parametrize("how", list(COPIES))
def test_copies_keep_the_target_calibrate_defaults_to(how):
    torch.manual_seed(0)
    x = _data(1)
    fixed = sll_fx.linearize_module(Net(), eps=0.05, target=0.4, verbose=False)
    auto = sll_fx.linearize_module(Net(), target=0.4, verbose=False)
    auto(x)
    for gm in (fixed, auto):
        twin = COPIES[how](gm)
        assert sll_fx.calibrate(twin, x) == sll_fx.calibrate(gm, x) != sll_fx.calibrate(gm, x, target=0.25)


class _NoElements(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(8, 8)

    def forward(self, x):
        h = self.lin(x)
        return torch.round(h * 4).sum(-1) + torch.sign(h[:, :0]).sum(-1)  # sign sees no element, ever


def test_an_empty_first_batch_keeps_the_placeholders_and_the_next_batch_calibrates():
    torch.manual_seed(0)
    gm = sll_fx.linearize_module(Net(), verbose=False)
    placeholders = _eps(gm)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # (no warning: nothing ended, the next call calibrates)
        gm(torch.empty(0, 8))
    assert _eps(gm) == placeholders and sll_fx.is_calibrating(gm) and gm.sll_report.calibrating
    with pytest.warns(UserWarning, match=r"saw no input element .* the automatic calibration stays pending"):
        assert sll_fx.calibrate(gm, torch.empty(0, 8)) == {}
    assert _eps(gm) == placeholders and sll_fx.is_calibrating(gm)
    x = _data(1)
    gm(x)
    assert not sll_fx.is_calibrating(gm) and not gm.sll_report.calibrating
    eps = _eps(gm)
    for name, frac in _fractions(gm, x).items():
        node = next(n for _, n in _eps_nodes(gm) if n.name == name)
        limit = ops.eps_limit(rules.sll_op_name(node.target), node.kwargs.get("decimals", 0))
        assert abs(frac - 0.25) <= 0.02 or eps[name] == limit, (name, frac, eps[name])
    with pytest.raises(ValueError, match="no distances"):
        sll_fx.calibration.choose_eps(torch.empty(0, dtype=torch.float64), 0.25, 0.5)


def test_a_node_that_never_sees_an_element_keeps_its_placeholder_and_is_named():
    torch.manual_seed(0)
    gm = sll_fx.linearize_module(_NoElements(), verbose=False)
    placeholders = _eps(gm)
    with pytest.warns(UserWarning, match=r"calibration of .* ended, but node\(s\) sign saw no input element"):
        gm(_data(1))
    eps = _eps(gm)
    assert not sll_fx.is_calibrating(gm)
    assert eps["sign"] == placeholders["sign"] and eps["round_1"] != placeholders["round_1"]
    with pytest.warns(UserWarning, match=r"sll_fx.calibrate: node\(s\) sign saw no input element"):
        assert list(sll_fx.calibrate(gm, _data(2))) == ["round_1"]


@pytest.mark.parametrize("steps", [0, -1, 1.5, True])
def test_calibrate_steps_must_be_a_positive_int(steps):
    with pytest.raises(ValueError, match=r"calibrate_steps=\S+ must be a positive int(.|\n)*Fix: calibrate_steps=1"):
        sll_fx.linearize_module(Net(), calibrate_steps=steps, verbose=False)


@pytest.mark.parametrize("steps", [np.int64(2), np.int32(2), 2])
def test_calibrate_steps_takes_any_integral_number(steps):
    """np.int64(2) was refused ("must be a positive int") where eps takes numpy scalars (a58)."""
    gm = sll_fx.linearize_module(_Rounder(), calibrate_steps=steps, verbose=False)
    x = torch.randn(64, 4)
    gm(x)
    assert sll_fx.is_calibrating(gm)
    gm(x)
    assert not sll_fx.is_calibrating(gm)
    with pytest.raises(ValueError, match=r"calibrate_steps=np\.int64\(0\) must be a positive int"):
        sll_fx.linearize_module(_Rounder(), calibrate_steps=np.int64(0), verbose=False)


@pytest.mark.parametrize("steps", [0, -2])
def test_calibrate_steps_is_checked_also_where_no_node_is_rewritten(steps):
    # eps="auto" on a model with no discrete op: nothing to calibrate, the argument is still refused
    with pytest.raises(ValueError, match=r"calibrate_steps=\S+ must be a positive int"):
        sll_fx.linearize_module(torch.nn.Sequential(torch.nn.Linear(2, 2)), calibrate_steps=steps, verbose=False)


class _Dropped(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc, self.drop = nn.Linear(6, 6), nn.Dropout(0.5)

    def forward(self, x):
        return torch.sign(self.drop(self.fc(x)))


@pytest.mark.parametrize("explicit", [False, True])
def test_calibrating_leaves_the_random_generator_as_it_found_it(explicit):
    """The calibrating forward draws Dropout masks too: the training step after it draws the ones it would have
    drawn without it (the same masks as the model's own forward), and so does what comes next."""
    torch.manual_seed(0)
    model, x = _Dropped(), torch.randn(16, 6)
    gm = sll_fx.linearize_module(model, verbose=False)
    torch.manual_seed(1)
    if explicit:
        sll_fx.calibrate(gm, x)
    got, after = gm(x), torch.rand(4)
    assert not getattr(gm.sll_report, "calibrating", False)
    torch.manual_seed(1)
    want, after_want = model(x), torch.rand(4)
    assert torch.equal(got == 0, want == 0) and (want == 0).any()
    assert torch.equal(after, after_want)


class _Observed(nn.Module):
    """A quantizer whose step follows a running maximum updated in place (an observer), with a step counter, a
    BatchNorm in training mode and an opaque neuron whose membrane potential ``self.v`` carries over calls."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(8, 8)
        self.bn = nn.BatchNorm1d(8)
        self.register_buffer("running_max", torch.tensor(1.0))
        self.register_buffer("steps", torch.tensor(0))
        self.neuron = _Neuron()

    def forward(self, x):
        h = self.bn(self.fc(x))
        with torch.no_grad():
            self.running_max.mul_(0.9).add_(0.1 * h.abs().max())
            self.steps.add_(1)
        s = self.running_max / 7
        return self.neuron(torch.round(h / s) * s)


class _Neuron(nn.Module):
    def __init__(self):
        super().__init__()
        self.v, self.calls, self.log = 0.0, 0, []

    def forward(self, x):
        self.v = self.v * 0.5 + x
        self.calls += 1
        self.log.append(self.calls)
        s = (self.v >= 1.0).float()
        self.v = self.v * (1 - s)
        return s


@pytest.mark.parametrize("explicit", [False, True])
def test_calibrating_puts_back_the_module_state_it_changes(explicit):
    """The calibrating forward updated the observer, the BatchNorm statistics and the neuron a second time: in hard
    mode, whose forward is the hard op's, 43 of 48 first-call outputs differed from the model's (a21)."""
    torch.manual_seed(0)
    model = _Observed()
    twin = copy.deepcopy(model)
    gm = sll_fx.linearize_module(model, mode="hard", verbose=False)
    xs = [torch.randn(6, 8, generator=torch.Generator().manual_seed(i)) for i in range(3)]
    if explicit:
        sll_fx.calibrate(gm, xs[0])
    for x in xs:
        assert torch.equal(gm(x), twin(x))
    assert not sll_fx.is_calibrating(gm)
    for a, b in zip(model.buffers(), twin.buffers()):
        assert torch.equal(a, b)
    assert gm.neuron.calls == twin.neuron.calls == 3 and gm.neuron.log == [1, 2, 3]


class _Uncopyable(nn.Module):
    """Buffers the saved state cannot copy (a lazy module's, a sparse one, one made under inference mode), and a
    codebook its opaque forward updates through ``.data`` with a helper object counting calls."""

    def __init__(self, kind: str):
        super().__init__()
        self.kind = kind
        self.fc = nn.Linear(4, 4)
        self.bn = nn.LazyBatchNorm1d() if kind == "lazy" else nn.Identity()
        if kind == "sparse":
            self.register_buffer("adj", torch.eye(4).to_sparse())
        if kind == "inference":
            with torch.inference_mode():
                self.register_buffer("scale", torch.full((4,), 2.0))

    def forward(self, x):
        h = self.bn(self.fc(x))
        if self.kind == "sparse":
            h = torch.sparse.mm(self.adj, h.t()).t()
        if self.kind == "inference":
            h = h + self.scale  # (added: an inference tensor saved for backward raises, in the model too)
        return torch.round(h * 4) / 4


class _Codebook(nn.Module):
    """An opaque (``self.training`` branch) EMA codebook written through ``.data``, a meter object, a global list."""

    def __init__(self):
        super().__init__()
        self.codes = nn.Embedding(3, 4)
        self.meter = types.SimpleNamespace(calls=0, log={"seen": []})

    def forward(self, x):
        if self.training:
            self.codes.weight.data.mul_(0.5).add_(0.5 * x.mean(0))
            self.meter.calls += 1
            self.meter.log["seen"].append(self.meter.calls)
            _SEEN.append(1)
        return x @ self.codes.weight.t()


class _Quantized(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.book = _Codebook()

    def forward(self, x):
        return torch.round(self.book(torch.round(self.fc(x) * 4) / 4) * 4)


_SEEN: list = []


@pytest.mark.parametrize("kind", ["lazy", "sparse", "inference", "codebook"])
def test_calibrating_copes_with_state_it_cannot_copy_and_puts_back_deeper_state(kind):
    """A lazy module's uninitialized buffer, a sparse buffer or an inference-mode one made the first call of an
    eps="auto" result crash (the saved state copied and compared them) and left the calibration half-installed; an
    opaque module's parameter written through ``.data``, a helper object's counter, a list in its dict and a
    module-level list were updated twice (a23)."""
    def make():  # (twice, from one seed: a lazy module cannot be deep-copied)
        torch.manual_seed(0)
        return _Quantized() if kind == "codebook" else _Uncopyable(kind)

    model, twin = make(), make()
    gm = sll_fx.linearize_module(model, mode="hard", verbose=False)
    _SEEN.clear()
    xs = [torch.randn(5, 4, generator=torch.Generator().manual_seed(i)) for i in range(3)]
    for x in xs:
        assert torch.equal(gm(x), twin(x)), kind
    assert not sll_fx.is_calibrating(gm) and "forward" not in gm.__dict__
    if kind == "codebook":
        assert gm.sll_report.opaque and torch.equal(model.book.codes.weight, twin.book.codes.weight)
        assert gm.book.meter.calls == twin.book.meter.calls == 3 and gm.book.meter.log["seen"] == [1, 2, 3]
        assert len(_SEEN) == 6


def test_calibrate_through_a_data_parallel_wrapper_names_the_models_nodes():
    """``calibrate`` on a ``DataParallel``/``DistributedDataParallel`` wrapper: the names eps_state and the report use
    (they had the wrapper's ``module.`` prefix, so load_eps(gm, calibrate(ddp, x)) failed), and the pending automatic
    calibration of the model inside ends (it was not found on the wrapper and stayed pending)."""
    gm = sll_fx.linearize_module(Net(), verbose=False)
    chosen = sll_fx.calibrate(nn.DataParallel(gm), _data(0))
    assert chosen and set(chosen) == set(sll_fx.eps_state(gm))
    assert not sll_fx.calibration.is_calibrating(gm)
    assert sll_fx.load_eps(gm, chosen)


@pytest.mark.parametrize("call", ["set_eps", "eps_state", "load_eps", "calibrate", "freeze_eps"])
def test_the_eps_functions_refuse_an_exported_program(call):
    """An ExportedProgram holds eps as constants of export time: a TypeError with the fix (set_eps, eps_state,
    load_eps and calibrate raised an AttributeError, freeze_eps did nothing)."""
    gm = sll_fx.linearize_module(Net(), eps=0.1, verbose=False)
    x = _data(0)
    ep = torch.export.export(gm, (x,))
    args = {"set_eps": (0.2,), "eps_state": (), "load_eps": ({},), "calibrate": (x,), "freeze_eps": ()}[call]
    with pytest.raises(TypeError, match=rf"{call}: got an ExportedProgram.*\nFix: call it on the linearized model"):
        getattr(sll_fx, call)(ep, *args)


class _RoundThenFloor(nn.Module):
    """``round(x)`` runs, then ``x + y`` raises for a ``y`` of the wrong shape, before ``floor``."""

    def forward(self, x, y):
        return torch.floor(torch.round(x) + y)


def test_a_calibrate_call_that_raises_changes_nothing():
    """``calibrate`` set each node's eps as the forward reached it: a call that raised between two nodes left the first
    calibrated and the second not (a58)."""
    torch.manual_seed(0)
    gm = sll_fx.linearize_module(_RoundThenFloor(), eps=0.1, verbose=False)
    before, entries = sll_fx.eps_state(gm), list(gm.sll_report.entries)
    buffers = {k: v for k, v in gm.named_buffers()}
    with pytest.raises(RuntimeError, match="size of tensor"):
        sll_fx.calibrate(gm, torch.randn(8, 4), torch.zeros(8, 3))
    assert sll_fx.eps_state(gm) == before == {"round_1": 0.1, "floor": 0.1}
    assert gm.sll_report.entries == entries
    assert all(t is buffers[k] for k, t in gm.named_buffers())
    assert sll_fx.calibrate(gm, torch.randn(8, 4), torch.zeros(8, 4))["round_1"] != 0.1


def test_an_automatic_calibration_whose_first_call_raises_keeps_nothing_of_it():
    """With ``eps="auto"``, a first call that raised wrote the eps of the nodes before the failing one and kept that
    batch's samples: the next call calibrated on both batches (eps 0.239, where 0.393 from the good batch alone), and
    the report showed fixed eps while the calibration was pending (a58)."""
    torch.manual_seed(0)
    x, good, bad = torch.randn(8, 4) * 3, torch.zeros(8, 4), torch.zeros(8, 3)
    gm = sll_fx.linearize_module(_RoundThenFloor(), verbose=False)
    placeholder = sll_fx.eps_state(gm)
    with pytest.raises(RuntimeError, match="size of tensor"):
        gm(torch.randn(8, 4), bad)
    assert sll_fx.eps_state(gm) == placeholder
    assert sll_fx.is_calibrating(gm) and gm.sll_report.calibrating
    gm(x, good)
    fresh = sll_fx.linearize_module(_RoundThenFloor(), verbose=False)
    fresh(x, good)
    assert sll_fx.eps_state(gm) == sll_fx.eps_state(fresh) != placeholder


def test_a_target_tensor_of_several_elements_is_a_type_error():
    """``calibrate(gm, x, target=torch.tensor([0.1, 0.2]))``: "Boolean value of Tensor with more than one value is
    ambiguous" (a58)."""
    gm = sll_fx.linearize_module(_Floor(), eps=0.1, verbose=False)
    with pytest.raises(TypeError, match=r"target=.* must be a number.*got a tensor of 2 elements\nFix"):
        sll_fx.calibrate(gm, torch.randn(8), target=torch.tensor([0.1, 0.2]))


@pytest.mark.parametrize("call", ["calibrate", "freeze_eps"])
@pytest.mark.parametrize("which", ["original", "hard"])
def test_calibrate_and_freeze_eps_refuse_a_module_that_is_not_the_linearized_one(call, which):
    """On the original model (or the export_hard result) they returned ``{}`` and None and did nothing: the linearized
    model stayed uncalibrated, silently (a58)."""
    model = _Floor()
    gm = sll_fx.linearize_module(model, verbose=False)
    target = model if which == "original" else sll_fx.export_hard(gm, verbose=False)
    what = "holds no sll node" if which == "original" else "is an export_hard result"
    with pytest.raises(ValueError, match=rf"{call}: .* {what}.*\nFix: call it on the linearized model"):
        sll_fx.calibrate(target, torch.randn(8)) if call == "calibrate" else sll_fx.freeze_eps(target)
    assert sll_fx.is_calibrating(gm)
    sll_fx.freeze_eps(sll_fx.linearize_module(model, eps=0.1, verbose=False))  # (a fixed eps: nothing to stop)

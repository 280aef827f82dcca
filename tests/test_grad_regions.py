"""``torch.no_grad()`` and ``torch.autocast`` blocks in a traced forward (sll_fx/grad_regions.py,
sll_fx/tracer.py), and discrete ops that no gradient reaches (passes/_gradients.py, _gradient_sources)."""

import copy
import functools
import types

import pytest
import torch
from torch import autocast, nn  # (autocast: a global named like _Flagged's flag)

import sll_fx
from sll_fx.grad_regions import detached

from _helpers import NO_GRADIENT

X = torch.randn(8, 4, generator=torch.Generator().manual_seed(0))


class Quant(nn.Module):
    """A quantizer whose scale is computed without gradient, with a running maximum, and a shape read."""

    def __init__(self, explicit=False):
        super().__init__()
        self.lin = nn.Linear(4, 4)
        self.register_buffer("running", torch.ones(()))
        self.explicit = explicit

    def forward(self, x):
        h = self.lin(x)
        if self.explicit:  # the same, written with .detach()
            scale = h.detach().abs().amax()
            self.running.mul_(0.9).add_(0.1 * torch.round(scale * 4))
            n = h.shape[0]
        else:
            with torch.no_grad():
                scale = h.abs().amax()
                self.running.mul_(0.9).add_(0.1 * torch.round(scale * 4))
                n = h.shape[0]
        return torch.round(h / scale * 3) * scale + n


def _pair():
    torch.manual_seed(0)
    a = Quant()
    b = Quant(explicit=True)
    b.load_state_dict(a.state_dict())
    return a, b


def _grads(model, x):
    model.zero_grad()
    model(x).sum().backward()
    return [p.grad.clone() for p in model.parameters()]


@pytest.mark.parametrize("mode", ["hard", "linear"])
def test_a_no_grad_block_stops_the_gradient_as_in_the_model(mode):
    model, reference = _pair()
    gm = sll_fx.linearize_module(model, eps=0.05, mode=mode, verbose=False)
    ref = sll_fx.linearize_module(reference, eps=0.05, mode=mode, verbose=False)
    assert [(e.node, e.reason) for e in gm.sll_report.entries if not e.replacement] == [("round_1", NO_GRADIENT)]
    assert any(n.target is detached for n in gm.graph.nodes)
    x = X.clone().requires_grad_()
    for g, r in zip(_grads(gm, x), _grads(ref, x)):
        assert torch.equal(g, r)
    assert all(g.abs().sum() > 0 for g in _grads(gm, x))  # the outer round gives a gradient


def test_values_and_the_running_buffer_match_the_model():
    model, _ = _pair()
    twin = copy.deepcopy(model)
    gm = sll_fx.linearize_module(model, eps=0.05, mode="hard", verbose=False)
    for _ in range(3):
        expected = twin(X)
        out = gm(X)
        out.sum().backward()  # (a buffer carrying autograd history would fail the second backward)
        assert torch.equal(out, expected)
        assert torch.equal(model.running, twin.running) and not model.running.requires_grad
    hard = sll_fx.export_hard(gm, verbose=False)
    assert torch.equal(hard(X), twin(X)) and torch.equal(model.running, twin.running)
    ep = torch.export.export(hard, (X,))
    assert torch.equal(ep.module()(X), twin(X))


class Distill(nn.Module):
    def __init__(self):
        super().__init__()
        self.student = nn.Linear(4, 4)
        self.teacher = nn.Sequential(nn.Linear(4, 4), nn.Tanh(), nn.Linear(4, 4))

    def forward(self, x):
        with torch.no_grad():
            target = torch.sign(self.teacher(x))
        return torch.sign(self.student(x)) * target


def test_a_teacher_called_under_no_grad_gets_no_gradient():
    torch.manual_seed(0)
    model = Distill()
    gm = sll_fx.linearize_module(model, eps=0.5, verbose=False)
    assert {e.node: e.replacement for e in gm.sll_report.entries} == {"sign": None, "sign_1": "sll.sign"}
    gm(X).sum().backward()
    assert all(p.grad is None for p in model.teacher.parameters())
    assert model.student.weight.grad is not None and model.student.weight.grad.abs().sum() > 0


def test_linearizing_under_no_grad_marks_nothing():
    torch.manual_seed(0)
    with torch.no_grad():
        gm = sll_fx.linearize_module(Distill(), eps=0.5, verbose=False)
    assert sum(n.target is detached for n in gm.graph.nodes) == 2  # the block's own edges only
    assert torch.is_grad_enabled()


class Frozen(nn.Module):
    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.randn(4), requires_grad=False)
        self.v = nn.Parameter(torch.randn(4))
        self.register_buffer("b", torch.randn(4))

    def forward(self, x):
        return x * torch.sign(self.w) + x * torch.round(self.b) + x * torch.floor(x.detach()) + torch.ceil(self.v)


def test_ops_no_gradient_reaches_are_left_hard():
    gm = sll_fx.linearize_module(Frozen(), eps=0.1, verbose=False)
    entries = {e.op: e for e in gm.sll_report.entries}
    assert entries["torch.round"].reason == NO_GRADIENT  # a buffer alone
    assert entries["torch.sign"].replacement == "sll.sign"  # a frozen parameter may be unfrozen later
    assert entries["torch.floor"].replacement is None  # (reaches the output only through .detach())
    assert entries["torch.ceil"].replacement == "sll.ceil"


class Mixed(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 4)

    def forward(self, x):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            h = self.lin(x)
        return torch.sign(h)


class Outer(nn.Module):
    def __init__(self):
        super().__init__()
        self.mixed = Mixed()

    def forward(self, x):
        return torch.round(self.mixed(x) * 2)


@pytest.mark.parametrize("top", [Mixed, Outer])
def test_an_autocast_block_keeps_its_module_opaque(top):
    torch.manual_seed(0)
    model = top()
    gm = sll_fx.linearize_module(model, eps=0.05, mode="hard", verbose=False)
    path = "" if top is Mixed else "mixed"
    assert {o.path: o.reason for o in gm.sll_report.opaque} == \
        {path: "enters torch.autocast in forward: kept opaque so it runs under autocast"}
    out = gm(X)
    assert out.dtype == torch.bfloat16 and torch.equal(out, model(X))


class Jitter(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 4)

    def forward(self, x):
        return torch.round(self.lin(x) + torch.rand(1)) + torch.sign(x * torch.rand_like(x))


class Reseeded(nn.Module):
    def __init__(self):
        super().__init__()
        self.jitter = Jitter()

    def forward(self, x):
        torch.manual_seed(123)
        return torch.round(x + torch.randn_like(x))


@pytest.mark.parametrize("top,path", [(Jitter, ""), (Reseeded, "")])
def test_a_random_draw_at_trace_time_keeps_its_module_opaque(top, path):
    torch.manual_seed(0)
    model = top()
    state = torch.get_rng_state()
    gm = sll_fx.linearize_module(model, eps=0.05, mode="hard", verbose=False)
    assert torch.equal(torch.get_rng_state(), state)  # tracing never moves the caller's random stream
    assert {o.path: o.reason for o in gm.sll_report.opaque}[path].startswith("draws from or seeds the random")
    torch.manual_seed(5)
    expected = model(X)
    torch.manual_seed(5)
    assert torch.equal(gm(X), expected)


def test_a_submodule_drawing_at_trace_time_is_opaque_alone():
    class Holder(nn.Module):
        def __init__(self):
            super().__init__()
            self.jitter = Jitter()

        def forward(self, x):
            return torch.sign(self.jitter(x))

    gm = sll_fx.linearize_module(Holder(), eps=0.05, verbose=False)
    assert [o.path for o in gm.sll_report.opaque] == ["jitter"] and len(gm.sll_report.rewritten) == 1


def test_a_pickled_or_retraced_model_keeps_the_no_grad_edges():
    import pickle

    model, reference = _pair()
    gm = sll_fx.linearize_module(model, eps=0.05, verbose=False)
    ref = sll_fx.linearize_module(reference, eps=0.05, verbose=False)
    loaded = pickle.loads(pickle.dumps(gm))
    assert sum(n.target is detached for n in loaded.graph.nodes) == sum(n.target is detached for n in gm.graph.nodes)
    x = X.clone().requires_grad_()
    for g, r in zip(_grads(loaded, x), _grads(ref, x)):
        assert torch.equal(g, r)
    retraced = torch.fx.symbolic_trace(gm)
    assert any(n.target is detached for n in retraced.graph.nodes)


class Caller(nn.Module):
    """An autocast block around a traced child's call: the caller is opaque, the child is traced."""

    def __init__(self):
        super().__init__()
        self.child = Outer()

    def forward(self, x):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            h = self.child(x)
        return torch.sign(h.float())


def test_an_autocast_block_around_a_childs_call_is_the_callers():
    torch.manual_seed(0)
    model = Caller()
    gm = sll_fx.linearize_module(model, eps=0.05, mode="hard", verbose=False)
    assert {o.path for o in gm.sll_report.opaque} == {"", "child.mixed"}  # (Mixed enters a block itself)
    assert "child" in {e.module for e in gm.sll_report.rewritten}  # Outer's round is still rewritten
    assert torch.equal(gm(X), model(X))


class Float32Part(nn.Module):
    """A part kept in float32 under mixed precision (autocast turned off), as a decorator or a block."""

    def __init__(self, decorated):
        super().__init__()
        self.lin = nn.Linear(4, 4)
        self.decorated = decorated

    def forward(self, x):
        if self.decorated:
            return self.part(x)
        with torch.autocast("cpu", enabled=False):
            return torch.round(self.lin(x.float()) * 100)

    @torch.autocast("cpu", enabled=False)
    def part(self, x):
        return torch.round(self.lin(x) * 100)


class DecoratedFloat32(Float32Part):
    forward = torch.autocast("cpu", enabled=False)(Float32Part.part)


class Holder(nn.Module):
    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return torch.sign(self.inner(x) - 1)


@pytest.mark.parametrize("make", [lambda: Float32Part(False), lambda: Float32Part(True), lambda: DecoratedFloat32(True)])
@pytest.mark.parametrize("nested", [False, True])
def test_an_autocast_block_turning_it_off_keeps_its_module_opaque(make, nested):
    """Under an outer autocast the model returned float32 and gm/export_hard bfloat16 (5 of 32 elements differed):
    the tracer only noticed autocast being turned on."""
    torch.manual_seed(0)
    inner = make()
    model = Holder(inner) if nested else inner
    gm = sll_fx.linearize_module(model, eps=0.05, mode="hard", verbose=False)
    assert {o.path: o.reason for o in gm.sll_report.opaque} == \
        {"inner" if nested else "": "enters torch.autocast in forward: kept opaque so it runs under autocast"}
    hard = sll_fx.export_hard(gm, verbose=False)
    x = torch.randn(4, 4, generator=torch.Generator().manual_seed(1)) * 3
    with torch.autocast("cpu", dtype=torch.bfloat16):
        expected = inner(x)
        got = gm.inner(x) if nested else gm(x)
        out = hard(x)
        assert expected.dtype == torch.float32 and got.dtype == torch.float32 and torch.equal(got, expected)
        assert torch.equal(out, model(x))


class GradOn(nn.Module):
    """A forward that sets its own grad mode: a decorator or a block."""

    def __init__(self, how):
        super().__init__()
        self.lin = nn.Linear(3, 3)
        self.how = how

    def forward(self, x):
        if self.how == "block":
            with torch.enable_grad():
                return torch.round(self.lin(x) * 4)
        return self.decorated(x)

    def decorated(self, x):
        return torch.round(self.lin(x) * 4)


class EnableGradDecorated(GradOn):
    @torch.enable_grad()
    def forward(self, x):
        return torch.round(self.lin(x) * 4)


class InferenceDecorated(GradOn):
    @torch.inference_mode()
    def forward(self, x):
        return torch.round(self.lin(x) * 4)


@pytest.mark.parametrize("make,block", [(lambda: GradOn("block"), "torch.enable_grad"),
                                        (lambda: EnableGradDecorated("deco"), "torch.enable_grad"),
                                        (lambda: InferenceDecorated("deco"), "torch.inference_mode")])
def test_a_grad_mode_block_in_forward_keeps_its_module_opaque(make, block):
    """Under no_grad the model's output required grad and gm's did not; under inference_mode the model returned an
    inference tensor and gm a normal one: the block was dropped."""
    torch.manual_seed(0)
    model = make()
    gm = sll_fx.linearize_module(model, eps=0.05, mode="hard", verbose=False)
    assert {o.path: o.reason for o in gm.sll_report.opaque} == \
        {"": f"enters {block} in forward: kept opaque so it runs in that grad mode"}
    x = torch.randn(2, 3)
    for m in (gm, sll_fx.export_hard(gm, verbose=False)):
        with torch.no_grad():
            a, b = model(x), m(x)
        assert torch.equal(a, b) and a.requires_grad == b.requires_grad and a.is_inference() == b.is_inference()
        assert b.requires_grad or b.is_inference()


def test_a_no_grad_block_stays_traced_next_to_a_mode_scan():
    gm = sll_fx.linearize_module(Quant(), eps=0.05, verbose=False)
    assert gm.sll_report.opaque == [] and gm.sll_report.rewritten


class AttributeReads(nn.Module):
    """Attribute reads fx makes where first used: inside the block (used after it), and before it."""

    def __init__(self, early):
        super().__init__()
        self.lin = nn.Linear(4, 4)
        self.early = early

    def forward(self, x):
        if self.early:  # read before the block, first used inside it: it keeps its gradient after it
            wt = self.lin.weight.T
            with torch.no_grad():
                scale = wt.abs().amax()
            return torch.round(x @ wt / scale)
        h = self.lin(x)
        with torch.no_grad():
            ht = h.T  # read inside the block, used after it: no gradient
        return torch.round(ht.sum(0) * 3) + h.sum()


@pytest.mark.parametrize("early", [True, False])
def test_an_attribute_read_keeps_the_grad_mode_it_was_written_in(early):
    torch.manual_seed(0)
    model = AttributeReads(early)
    gm = sll_fx.linearize_module(model, eps=0.05, method="ste", verbose=False)
    model.zero_grad()
    model(X).sum().backward()
    expected = model.lin.weight.grad.clone()
    model.zero_grad()
    gm(X).sum().backward()
    if early:  # the STE gradient through round(x @ wt / scale): nonzero, the model's own is zero
        assert model.lin.weight.grad.abs().sum() > 0 and expected.abs().sum() == 0
    else:  # only through h.sum(): the same as the model's
        assert torch.equal(model.lin.weight.grad, expected)


class _FlagNamedLikeABlock(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.lin = nn.Linear(4, 4)
        self.autocast = False  # a plain flag, named like the torch.autocast this file imports

    def forward(self, x):
        h = self.lin(x)
        if self.autocast:
            h = h * 2
        return torch.sign(h)


def test_an_attribute_named_like_a_mode_block_is_no_block():
    """Before: self.autocast resolved to the global torch.autocast (imported here), so the module was kept opaque and
    its sign left hard (weight gradient 0)."""
    assert autocast is torch.autocast
    gm = sll_fx.linearize_module(_FlagNamedLikeABlock(), eps=0.1, verbose=False)
    assert not gm.sll_report.opaque and [e.node for e in gm.sll_report.rewritten] == ["sign"]


class _FlagOnAConfig(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.lin = nn.Linear(4, 4)
        self.cfg = types.SimpleNamespace(autocast=False)  # a flag on a config object

    def forward(self, x):
        h = self.lin(x)
        if self.cfg.autocast:
            h = h * 2
        return torch.sign(h)


def test_a_flag_named_like_autocast_on_a_config_is_no_block():
    """Before: ``self.cfg.autocast`` with ``torch`` loaded for ``torch.sign`` read as torch.autocast entered in
    forward: the model was kept opaque, its sign left hard (weight gradient 0)."""
    model = _FlagOnAConfig()
    gm = sll_fx.linearize_module(model, eps=0.1, verbose=False)
    assert not gm.sll_report.opaque and [e.node for e in gm.sll_report.rewritten] == ["sign"]
    gm(torch.randn(8, 4)).sum().backward()
    assert model.lin.weight.grad.abs().sum() > 0


class _StoredBlockClass(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.lin = nn.Linear(4, 4)
        self.ac = torch.autocast  # the class, stored

    def forward(self, x):
        with self.ac("cpu", enabled=False):
            return torch.round(self.lin(x.float()) * 4)


class _BlockInAMethod(nn.Module):
    """A float32 part (autocast off) in a method forward calls; ``spelling`` picks a subclass's way to reach it."""

    def __init__(self, spelling=None):
        super().__init__()
        torch.manual_seed(0)
        self.lin, self.spelling = nn.Linear(4, 4), spelling

    def part(self, x):
        with torch.autocast("cpu", enabled=False):
            return torch.round(self.lin(x.float()) * 4)

    def forward(self, x):
        return self.part(x)


@pytest.mark.parametrize("cls", [_StoredBlockClass, _BlockInAMethod])
def test_an_autocast_block_from_a_stored_class_or_in_a_method_keeps_its_module_opaque(cls):
    """Before: a block class stored on the module (missed since the scan ignores self.autocast flags) and a with
    block in a method forward calls were traced without the block: bfloat16 results under an outer autocast."""
    gm = sll_fx.linearize_module(cls(), eps=0.1, verbose=False)
    assert [o.reason for o in gm.sll_report.opaque] == ["enters torch.autocast in forward: kept opaque so it runs "
                                                        "under autocast"]
    x = torch.randn(8, 4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert gm(x).dtype == torch.float32


class _TryIsland(_BlockInAMethod):
    def forward(self, x):
        try:
            with torch.autocast("cpu", enabled=False):
                y = self.lin(x.float())
        except Exception:  # (catches what the trace raises inside the block)
            y = self.lin(x)
        return torch.round(y * 4)


def test_an_autocast_block_inside_a_try_except_keeps_its_module_opaque():
    """Before: the signal the trace raises inside the block was caught by the forward's ``except Exception``, the
    trace went on along the fallback, and gm ran bfloat16 under an outer autocast where the model gives float32."""
    model = _TryIsland()
    gm = sll_fx.linearize_module(model, eps=0.1, verbose=False)
    assert [o.reason for o in gm.sll_report.opaque] == ["enters torch.autocast in forward: kept opaque so it runs "
                                                        "under autocast"]
    x = torch.randn(8, 4, generator=torch.Generator().manual_seed(1)) * 3
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert gm(x).dtype == torch.float32 and torch.equal(sll_fx.export_hard(gm, verbose=False)(x), model(x))


class _DeviceTypeIsland(_BlockInAMethod):
    def forward(self, x):
        with torch.autocast(device_type=x.device.type, enabled=False):  # (a traced device type: autocast raises)
            h = self.lin(x.float())
        return torch.round(h * 4)


def test_an_autocast_block_on_the_inputs_device_type_gives_the_autocast_reason():
    """fe07705 reported fx's raw ``ValueError: Expected device_type of type str`` as the reason (the code scan had
    named the block); the module is opaque either way."""
    gm = sll_fx.linearize_module(_DeviceTypeIsland(), eps=0.1, verbose=False)
    assert [o.reason for o in gm.sll_report.opaque] == ["enters torch.autocast in forward: kept opaque so it runs "
                                                        "under autocast"]


def _float32_round(lin, x):
    """A plain helper function entering the block (no module's code names it)."""
    with torch.autocast("cpu", enabled=False):
        return torch.round(lin(x.float()) * 4)


def _passing(fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        return fn(*args, **kwargs)
    return wrapper


class _ExplicitBaseCall(_BlockInAMethod):
    def forward(self, x):
        return _BlockInAMethod.forward(self, x) + 1


class _SuperStored(_BlockInAMethod):
    def forward(self, x):
        s = super()
        return s.forward(x) + 1


class _GetattrPart(_BlockInAMethod):
    def forward(self, x):
        return getattr(self, "part")(x) + 1


class _UserDecoratedForward(_BlockInAMethod):
    @_passing
    def forward(self, x):
        with torch.autocast("cpu", enabled=False):
            return torch.round(self.lin(x.float()) * 4)


class _HelperFunction(_BlockInAMethod):
    def forward(self, x):
        return _float32_round(self.lin, x) + 1


@pytest.mark.parametrize("cls", [_ExplicitBaseCall, _SuperStored, _GetattrPart, _UserDecoratedForward, _HelperFunction])
@pytest.mark.parametrize("nested", [False, True])
def test_an_autocast_block_the_code_scan_cannot_follow_is_found_by_the_trace(cls, nested):
    """Before: a block turning autocast off reached through ``Base.forward(self, x)``, ``s = super(); s.forward(x)``,
    ``getattr(self, "part")``, a user's decorator of forward or a plain helper function was traced without it (the
    trace saw no change in the autocast state): under an outer bfloat16 autocast gm returned bfloat16 where the model
    returns float32.  The trace now also watches the autocast nesting, which every block's entry raises."""
    inner = cls()
    model = Holder(inner) if nested else inner
    gm = sll_fx.linearize_module(model, eps=0.1, verbose=False)
    assert {o.path: o.reason for o in gm.sll_report.opaque} == \
        {"inner" if nested else "": "enters torch.autocast in forward: kept opaque so it runs under autocast"}
    hard = sll_fx.export_hard(gm, verbose=False)
    x = torch.randn(8, 4, generator=torch.Generator().manual_seed(1)) * 3
    with torch.autocast("cpu", dtype=torch.bfloat16):
        expected = model(x)
        assert gm(x).dtype == torch.float32 and torch.equal(hard(x), expected)
    if nested:  # (the holder's own sign is still rewritten)
        assert [e.node for e in gm.sll_report.rewritten] == ["sign"]


class _Enc(nn.Module):
    def encode(self, x):
        return torch.sign(x)

    def forward(self, x):
        return self.encode(x)


class _NamesAChildsMethod(nn.Module):
    def __init__(self):
        super().__init__()
        self.enc = _Enc()

    def encode(self, x):  # an inference helper forward never calls
        with torch.autocast("cpu", enabled=False):
            return x

    def forward(self, x):
        return self.enc.encode(x) + torch.round(x)


def test_a_method_named_like_one_forward_calls_on_a_child_is_not_scanned():
    """Before: self.enc.encode made the scan read the model's own encode (its autocast block): everything opaque."""
    gm = sll_fx.linearize_module(_NamesAChildsMethod(), eps=0.1, verbose=False)
    assert not gm.sll_report.opaque and len(gm.sll_report.rewritten) == 2


class _Deep(_BlockInAMethod):
    def inner(self, x):
        with torch.autocast("cpu", enabled=False):
            return torch.round(self.lin(x.float()) * 4)

    def part(self, x):
        return self.inner(x)

    @staticmethod
    def static(lin, x):
        with torch.autocast("cpu", enabled=False):
            return torch.round(lin(x.float()) * 4)

    @property
    def fp32(self):
        return torch.autocast("cpu", enabled=False)

    def forward(self, x):
        if self.spelling == "depth 2":
            return self.part(x)
        if self.spelling == "staticmethod":
            return self.static(self.lin, x)
        with self.fp32:
            return torch.round(self.lin(x.float()) * 4)


@pytest.mark.parametrize("spelling", ["depth 2", "staticmethod", "property"])
def test_an_autocast_block_two_calls_deep_in_a_staticmethod_or_a_property_is_found(spelling):
    gm = sll_fx.linearize_module(_Deep(spelling), eps=0.1, verbose=False)
    assert [o.path for o in gm.sll_report.opaque] == [""]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert gm(torch.randn(8, 4)).dtype == torch.float32


class _ClosureOverSelf(_BlockInAMethod):
    def forward(self, x):
        if self.spelling == "lambda":
            f = lambda t: self.part(t)  # noqa: E731  (self is a cell: every self.<name> loads it with LOAD_DEREF)
            return f(x)
        return self.part(x)


class _Base(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.lin = nn.Linear(4, 4)

    def forward(self, x):
        with torch.autocast("cpu", enabled=False):
            return torch.round(self.lin(x.float()) * 4)


class _Child(_Base):
    def forward(self, x):
        return super().forward(x)


@pytest.mark.parametrize("make", [lambda: _ClosureOverSelf("lambda"), _Child], ids=["lambda", "super().forward"])
def test_a_block_reached_through_a_closure_over_self_or_super_is_found(make):
    """Before (e7b6da4): a closure over self compiles every self.<name> to LOAD_DEREF, and super().forward reads no
    attribute of self, so the block was missed: bfloat16 under an outer autocast where the model gives float32."""
    gm = sll_fx.linearize_module(make(), eps=0.1, verbose=False)
    assert [o.path for o in gm.sll_report.opaque] == [""]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert gm(torch.randn(8, 4)).dtype == torch.float32


class _FlagInAClosure(_FlagNamedLikeABlock):
    def forward(self, x):
        f = lambda t: self.lin(t)  # noqa: E731  (self in a closure: self.autocast loads it with LOAD_DEREF)
        h = f(x)
        if self.autocast:
            h = h * 2
        return torch.sign(h)


def test_a_flag_named_like_a_block_read_through_a_closure_is_no_block():
    gm = sll_fx.linearize_module(_FlagInAClosure(), eps=0.1, verbose=False)
    assert not gm.sll_report.opaque and [e.node for e in gm.sll_report.rewritten] == ["sign"]


class _PlainBase(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.lin = nn.Linear(4, 4)

    def forward(self, x):
        return self.lin(x)


class _SuperThenOther(_PlainBase):
    def normalize(self, h):  # a helper forward never calls, with a block
        with torch.autocast("cpu", enabled=False):
            return h

    def forward(self, x):
        h = super().forward(x)
        return torch.round(torch.nn.functional.normalize(h, dim=-1) * 4)


def test_super_makes_only_the_name_read_off_it_a_method_call():
    """Before (00c1879): with super() in forward every attribute name counted as self.<name>, so F.normalize made
    the scan read the model's own unrelated normalize (its block): the model went opaque (no gradient)."""
    gm = sll_fx.linearize_module(_SuperThenOther(), eps=0.1, verbose=False)
    assert not gm.sll_report.opaque and len(gm.sll_report.rewritten) == 1


class _GradBase(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.lin = nn.Linear(3, 3)

    def forward(self, x):
        with torch.enable_grad():
            return torch.round(self.lin(x) * 4)


class _GradSuperStored(_GradBase):
    def forward(self, x):
        s = super()
        return s.forward(x)


class _GradSuperNamed(_GradBase):
    def forward(self, x):
        return super(_GradSuperNamed, self).forward(x)


@pytest.mark.parametrize("cls", [_GradSuperStored, _GradSuperNamed])
def test_a_grad_mode_block_reached_through_a_stored_or_named_super_is_found(cls):
    """Before: ``s = super(); s.forward(x)`` read no attribute of self nor of super(), so the base forward's
    ``torch.enable_grad()`` block was dropped: under no_grad gm's output did not require grad, the model's did."""
    model = cls()
    gm = sll_fx.linearize_module(model, eps=0.05, mode="hard", verbose=False)
    assert {o.path: o.reason for o in gm.sll_report.opaque} == \
        {"": "enters torch.enable_grad in forward: kept opaque so it runs in that grad mode"}
    x = torch.randn(2, 3, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        a, b = model(x), gm(x)
    assert torch.equal(a, b) and a.requires_grad and b.requires_grad


class _GradUserDecorated(_GradBase):
    @_passing
    def forward(self, x):
        with torch.enable_grad():
            return torch.round(self.lin(x) * 4)


def test_a_grad_mode_block_in_a_forward_under_a_users_decorator_is_found():
    """Before: the scan read only the decorator's wrapper (``functools.wraps``), which names the function and nothing
    else: the block was dropped, under no_grad gm's output did not require grad where the model's did."""
    model = _GradUserDecorated()
    gm = sll_fx.linearize_module(model, eps=0.05, mode="hard", verbose=False)
    assert {o.path: o.reason for o in gm.sll_report.opaque} == \
        {"": "enters torch.enable_grad in forward: kept opaque so it runs in that grad mode"}
    x = torch.randn(2, 3, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        a, b = model(x), gm(x)
    assert torch.equal(a, b) and a.requires_grad and b.requires_grad


class Branchy(nn.Module):
    def forward(self, x):
        if x.sum() > 0:  # (control flow on a tensor: fails to trace)
            return torch.round(x)
        return torch.floor(x)


class DrawThenFail(nn.Module):
    """A child draws, then a later child fails to trace."""

    def __init__(self):
        super().__init__()
        self.jitter, self.branchy, self.post = Jitter(), Branchy(), nn.Linear(4, 4)

    def forward(self, x):
        return torch.sign(self.post(self.branchy(self.jitter(x))))


class CatchesDraw(nn.Module):
    """The parent's forward catches what the drawing child's call raises."""

    def __init__(self):
        super().__init__()
        self.jitter, self.lin = Jitter(), nn.Linear(4, 4)

    def forward(self, x):
        try:
            y = self.jitter(x)
        except Exception:
            y = x
        return torch.sign(self.lin(y))


@pytest.mark.parametrize("top,expected", [
    (DrawThenFail, {"jitter": "draws from or seeds the random", "branchy": "inputs to control flow"}),
    (CatchesDraw, {"": "draws from or seeds the random", "jitter": "draws from or seeds the random"}),
])
def test_a_draw_is_named_by_module_also_next_to_another_failure(top, expected):
    """The generator's state is compared around the whole trace, and only when it changed around each module's call
    (a trace made again): the module that drew is named, before a later failure, and a forward catching what its call
    raised is kept opaque, as when every call was compared."""
    torch.manual_seed(0)
    model = top()
    state = torch.get_rng_state()
    gm = sll_fx.linearize_module(model, eps=0.05, mode="hard", verbose=False)
    assert torch.equal(torch.get_rng_state(), state)
    reasons = {o.path: o.reason for o in gm.sll_report.opaque}
    assert sorted(reasons) == sorted(expected), reasons
    for path, start in expected.items():
        assert start in reasons[path], (path, reasons[path])
    torch.manual_seed(5)
    want = model(X)
    torch.manual_seed(5)
    assert torch.equal(gm(X), want)

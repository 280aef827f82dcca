"""Checkpoints: the original model, its linearized GraphModule and its hard export are one model.

- ``state_dict()`` keys of all three are the original's, in order: with non-persistent
  buffers (not keys), tied submodules and parameters (a key per name, as torch has it),
  submodules that ``forward`` never calls, tensor literals in ``forward`` (fx constants, not
  keys) and sll_fx's own eps buffers (non-persistent: not keys);
- a checkpoint saved from any of the three loads strictly into any of the three (3 x 3,
  through ``torch.save`` / ``torch.load(weights_only=True)``, after a training step so that
  every value differs), and the loaded module computes what the saved one computes;
- ``torch.save`` / ``torch.load(weights_only=False)`` of the module itself, ``copy.deepcopy``,
  ``pickle`` and ``copy.copy`` give the same module back: same keys, values, outputs,
  gradients, eps, tied submodules still tied, non-persistent buffers still non-persistent;
- all of it also for a model with an opaque submodule (``if h.sum() > 0:``) from the
  tracing fallback, and for a model whose own ``forward`` cannot be traced.
"""

from __future__ import annotations

import copy
import io
import pickle

import pytest
import torch
from torch import fx, nn

import sll_fx
from sll_fx.ops import is_sll_target

from _helpers import assert_bitwise, pickle_roundtrip, torch_roundtrip

KINDS = ("original", "linearized", "hard")


# ----------------------------------------------------------------------------------------
# models
# ----------------------------------------------------------------------------------------

class Gate(nn.Module):
    """A traced block: parameters, a persistent and a non-persistent buffer, sign and a gate."""

    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(4, 4)
        self.register_buffer("offset", torch.tensor(0.1))
        self.register_buffer("scratch", torch.ones(4), persistent=False)
        self.thr = nn.Parameter(torch.tensor(0.2))

    def forward(self, h):
        h = self.proj(h) + self.offset * self.scratch
        return torch.sign(h) * 0.5 + (h > self.thr).float() + h


class Tied(nn.Module):
    """Every kind of state at once."""

    def __init__(self):
        super().__init__()
        self.enc = nn.Linear(4, 4)
        self.norm = nn.BatchNorm1d(4)                   # running stats: buffers a forward changes
        self.gate = Gate()
        self.gate_again = self.gate                     # a tied submodule: two names, one module
        self.dec = nn.Linear(4, 4)
        self.dec.weight = self.enc.weight               # a tied parameter
        self.unused = nn.Linear(4, 2)                   # never called by forward
        self.register_buffer("scale", torch.tensor(2.0))
        self.register_buffer("mask", torch.ones(4), persistent=False)
        self.last = nn.Parameter(torch.tensor(1.5))

    def forward(self, x):
        h = self.norm(self.enc(x)) * self.scale * self.mask
        h = self.gate(h) + self.gate_again(h * 0.5)
        h = torch.round(self.dec(h) * 2) / 2 * self.last
        return h + (h > torch.tensor(0.25)).float()     # a tensor literal: an fx constant, not state


class Moody(nn.Module):
    """Data-dependent control flow: kept opaque by the tracing fallback; its child is traced."""

    def __init__(self):
        super().__init__()
        self.inner = Gate()
        self.lin = nn.Linear(4, 4)
        self.register_buffer("calls", torch.zeros(()))
        self.register_buffer("bias", torch.zeros(4), persistent=False)

    def forward(self, h):
        if h.sum() > 0:
            h = self.inner(h)
        else:
            h = -self.inner(-h)
        return self.lin(h) + self.bias


class WithOpaque(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Linear(4, 4)
        self.block = Moody()
        self.alias = self.block                         # the opaque module tied at a second name
        self.unused = nn.Linear(4, 1)
        self.head = nn.Linear(4, 4)
        self.register_buffer("tmp", torch.zeros(4), persistent=False)

    def forward(self, x):
        return torch.round(self.head(self.block(self.stem(x)) + self.tmp) * 4) / 4


class OpaqueTop(nn.Module):
    """The model's own forward is untraceable: linearize_module returns a private copy of it."""

    def __init__(self):
        super().__init__()
        self.gate = Gate()
        self.lin = nn.Linear(4, 4)
        self.register_buffer("ones", torch.ones(4), persistent=False)

    def forward(self, x):
        if x.mean() > 0:
            return self.gate(self.lin(x)) * self.ones
        return self.gate(x)


MODELS = {"tied": Tied, "opaque": WithOpaque, "opaque_top": OpaqueTop}


def build(model_name: str, kind: str, seed: int) -> tuple[nn.Module, nn.Module]:
    """(module of ``kind``, the original model it shares its state with)."""
    torch.manual_seed(seed)
    model = MODELS[model_name]()
    with torch.no_grad():  # the values of the persistent buffers differ from seed to seed as well
        for name, b in model.state_dict(keep_vars=True).items():
            if b.is_floating_point() and not isinstance(b, nn.Parameter):
                b.add_(torch.rand_like(b) * 0.1)
    if kind == "original":
        return model, model
    gm = sll_fx.linearize_module(model, eps=0.25, verbose=False)
    return (gm if kind == "linearized" else sll_fx.export_hard(gm, verbose=False)), model


def batch(seed: int, n: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 4, generator=g), torch.randn(n, 4, generator=g)


def train_step(module: nn.Module, seed: int) -> None:
    """One SGD step in train mode (BatchNorm's running stats move too)."""
    module.train()
    opt = torch.optim.SGD(module.parameters(), lr=0.1)
    x, y = batch(seed)
    loss = ((module(x) - y) ** 2).mean()
    loss.backward()
    with torch.no_grad():  # the hard ops cut some gradients: move every parameter a little anyway
        for p in module.parameters():
            p.add_(0.01 * (seed % 7 + 1))
    opt.step()
    opt.zero_grad(set_to_none=True)


def hard_view(module: nn.Module) -> nn.Module:
    """The hard model a module stands for: itself (original, hard) or its export (linearized)."""
    return sll_fx.export_hard(module, verbose=False) if has_sll(module) else module


def has_sll(module: nn.Module) -> bool:
    return any(is_sll_target(n.target) for m in module.modules() if isinstance(m, fx.GraphModule)
               for n in m.graph.nodes if n.op == "call_function")


def eps_of(module: nn.Module) -> dict[str, float]:
    """``{"path.node": eps}`` of every sll node with an eps, read from its literal or its buffer."""
    out = {}
    for path, m in module.named_modules():
        if not isinstance(m, fx.GraphModule):
            continue
        for node in m.graph.nodes:
            if node.op == "call_function" and is_sll_target(node.target) and "eps" in node.kwargs:
                value = node.kwargs["eps"]
                if isinstance(value, fx.Node):
                    assert value.op == "get_attr", value
                    owner = m
                    for part in value.target.split("."):
                        owner = getattr(owner, part)
                    value = owner
                out[f"{path}.{node.name}" if path else node.name] = float(value)
    return out


def non_persistent(module: nn.Module) -> set[str]:
    """Qualified names of the non-persistent buffers (eps buffers included)."""
    return {f"{p}.{n}" if p else n for p, m in module.named_modules() for n in m._buffers
            if n in m._non_persistent_buffers_set and m._buffers[n] is not None}


def assert_same_state(a: dict, b: dict) -> None:
    assert list(a) == list(b)
    for k in a:
        assert a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]), k


def assert_tied(module: nn.Module, model_name: str) -> None:
    if model_name == "tied":
        assert module.get_submodule("gate") is module.get_submodule("gate_again")
        assert module.get_parameter("dec.weight") is module.get_parameter("enc.weight")
    elif model_name == "opaque":
        assert module.get_submodule("block") is module.get_submodule("alias")


# ----------------------------------------------------------------------------------------
# state_dict keys
# ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("model_name", list(MODELS))
def test_state_dict_keys_of_all_three_are_the_models(model_name):
    lin, model = build(model_name, "linearized", 0)
    hard = sll_fx.export_hard(lin, verbose=False)
    keys = list(model.state_dict())
    if model_name == "tied":  # the model is what it should be: torch keeps a key per name of tied state
        assert "gate_again.proj.weight" in keys and "dec.weight" in keys and "unused.weight" in keys
        assert "mask" not in keys and "gate.scratch" not in keys and "norm.num_batches_tracked" in keys
    assert list(lin.state_dict()) == keys
    assert list(hard.state_dict()) == keys
    # the non-persistent buffers are there, and still non-persistent; sll_fx adds only non-persistent ones
    for module in (lin, hard):
        assert non_persistent(model) <= non_persistent(module)
        named = dict(module.named_buffers())
        assert all(name in named for name in non_persistent(model))
        assert set(module.state_dict()) == set(keys)
    # tied submodules stay tied, the unused submodule is there
    assert_tied(lin, model_name)
    assert_tied(hard, model_name)
    if hasattr(model, "unused"):
        assert lin.get_submodule("unused") is model.unused


def test_eps_buffers_are_not_state():
    lin, model = build("tied", "linearized", 0)
    eps = eps_of(lin)
    assert eps and set(eps.values()) == {0.25}
    extra = set(dict(lin.named_buffers())) - set(dict(model.named_buffers()))
    assert extra <= non_persistent(lin)  # whatever sll_fx keeps as buffers (eps, fx constants) is not state
    assert not extra & set(lin.state_dict())


@pytest.mark.parametrize("model_name", list(MODELS))
@pytest.mark.parametrize("kind", ["linearized", "hard"])
def test_buffers_list_the_models_first_in_its_order_then_sll_fx_s(model_name, kind):
    """``zip(model.buffers(), gm.buffers())`` pairs each buffer with its own (an EMA copy of the model updated
    from ``gm``; ``AveragedModel(model, use_buffers=True).update_parameters(gm)``): eps and fx's constants last."""
    module, model = build(model_name, kind, 0)
    theirs = list(model.named_buffers())
    mine = list(module.named_buffers())
    assert [n for n, _ in mine[:len(theirs)]] == [n for n, _ in theirs]
    assert all(a is b for (_, a), (_, b) in zip(theirs, mine))
    assert all(n not in module.state_dict() for n, _ in mine[len(theirs):])
    assert [b for _, b in mine] == list(module.buffers())
    if kind == "linearized":
        assert any(n.rpartition(".")[2].startswith("_sll_eps_") for n, _ in mine[len(theirs):])
    # a prefix and recurse=False give the same order as nn.Module would, sll_fx's last
    assert [n for n, _ in module.named_buffers(prefix="m")] == [f"m.{n}" for n, _ in mine]
    top = [n for n, _ in module.named_buffers(recurse=False)]
    assert sorted(top) == sorted(module._buffers) and top == sorted(top, key=lambda n: n.startswith("_sll_eps_"))


def test_resuming_with_the_eps_saved_next_to_the_checkpoint():
    """The README's recipe: eps is not state, so ``sll_fx.eps_state(gm)`` travels next to the state_dict and
    ``sll_fx.load_eps`` puts it back."""
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.l = nn.Linear(8, 8)

        def forward(self, x):
            h = self.l(x)
            return torch.round(h * 4).sum(-1) + torch.sign(h).sum(-1) + (h > 0.2).float().sum(-1)

    torch.manual_seed(0)
    gm = sll_fx.linearize_module(Net(), verbose=False)  # eps="auto": calibrated on the first batch
    gm(torch.randn(32, 8))
    sll_fx.set_eps(gm, 0.07, where="sign")
    buf = io.BytesIO()
    torch.save({"model": gm.state_dict(), "eps": sll_fx.eps_state(gm)}, buf)
    buf.seek(0)
    ckpt = torch.load(buf, weights_only=True)
    resumed = sll_fx.linearize_module(Net(), eps=0.1, verbose=False)
    resumed.load_state_dict(ckpt["model"])
    sll_fx.load_eps(resumed, ckpt["eps"])
    assert eps_of(resumed) == eps_of(gm) and len(set(eps_of(gm).values())) == 3
    x = torch.randn(32, 8)
    assert torch.equal(resumed(x), gm(x))


class _Gate(nn.Module):
    def forward(self, x):
        return torch.sign(x * 0.5)


class _Block(nn.Module):
    """Control flow on a value: kept opaque; its child ``g`` is traced, with a node named ``sign``."""

    def __init__(self):
        super().__init__()
        self.g = _Gate()

    def forward(self, x):
        return self.g(x) if x.sum() > 0 else self.g(-x)


class _NestedNet(nn.Module):
    """A top-level ``sign`` (and ``sign_1``), the nested ``b.g``'s ``sign``, two ``torch.where``."""

    def __init__(self):
        super().__init__()
        self.l = nn.Linear(8, 8)
        self.b = _Block()

    def forward(self, x):
        h = self.l(x)
        return (torch.sign(h) + torch.sign(h * 5) + self.b(h)
                + torch.where(h > 0.1, h, -h) + torch.where(h < 0.3, h, 2 * h))


def test_resume_recipe_with_an_opaque_module_and_two_wheres():
    """The README recipe on names that repeat across nested graphs (``sign`` at the top and in ``b.g``),
    names equal to a kind (``sign``, ``gt``, ``lt``) and two selections: every node gets its own eps back
    (the old ``{e.node: e.eps}`` recipe gave the top-level ``sign`` the nested one's eps, or raised)."""
    torch.manual_seed(0)
    model = _NestedNet()
    gm = sll_fx.linearize_module(model, eps=0.1, verbose=False)
    saved = {"sign": 0.21, "sign_1": 0.33, "gt": 0.05, "lt": 0.07, "b.g.sign": 0.0125}
    assert sorted(sll_fx.load_eps(gm, saved)) == sorted(saved)  # the names eps_state gives
    assert sll_fx.eps_state(gm) == saved
    rows = {(e.node, e.module): e.eps for e in gm.sll_report.rewritten}
    assert rows == {("sign", ""): 0.21, ("sign_1", ""): 0.33, ("gt", ""): 0.05, ("where", ""): 0.05,
                    ("lt", ""): 0.07, ("where_1", ""): 0.07, ("sign", "b.g"): 0.0125}

    buf = io.BytesIO()
    torch.save({"model": gm.state_dict(), "eps": sll_fx.eps_state(gm)}, buf)   # README: save
    buf.seek(0)
    ckpt = torch.load(buf, weights_only=True)                                   # README: resume
    resumed = sll_fx.linearize_module(model, eps=0.1, verbose=False)
    resumed.load_state_dict(ckpt["model"])
    sll_fx.load_eps(resumed, ckpt["eps"])

    assert eps_of(resumed) == eps_of(gm) == {"sign": 0.21, "sign_1": 0.33, "compare": 0.05, "compare_1": 0.07,
                                             "b.g.sign": 0.0125}
    assert {(e.node, e.module): e.eps for e in resumed.sll_report.rewritten} == rows
    x = torch.randn(16, 8)
    assert torch.equal(resumed(x), gm(x))


def test_load_eps_checks_its_keys_and_values_before_changing_anything():
    model = _NestedNet()
    gm = sll_fx.linearize_module(model, eps=0.1, verbose=False)
    full = sll_fx.eps_state(gm)
    assert full == {"sign": 0.1, "sign_1": 0.1, "gt": 0.1, "lt": 0.1, "b.g.sign": 0.1}
    with pytest.raises(ValueError, match="no node named 'nope'"):
        sll_fx.load_eps(gm, {**full, "nope": 0.2})
    with pytest.raises(ValueError, match="no eps given for node.*b.g.sign"):
        sll_fx.load_eps(gm, {k: v for k, v in full.items() if k != "b.g.sign"})
    with pytest.raises(ValueError, match="both set"):   # a selection's eps is its comparison's
        sll_fx.load_eps(gm, {**full, "gt": 0.2, "where": 0.3})
    with pytest.raises(sll_fx.EpsError, match="finite"):
        sll_fx.load_eps(gm, {**full, "gt": 0.2, "b.g.sign": float("inf")})
    assert sll_fx.eps_state(gm) == full   # nothing changed
    # strict=False: unknown keys skipped, the others keep their eps; the old recipe's dict (with selections) loads
    assert sll_fx.load_eps(gm, {"nope": 0.2, "sign": 0.3, "where_1": 0.2, "lt": 0.2}, strict=False) \
        == ["sign", "lt"]
    assert sll_fx.eps_state(gm) == {**full, "sign": 0.3, "lt": 0.2}


# ----------------------------------------------------------------------------------------
# 3 x 3 strict loads through torch.save / torch.load(weights_only=True)
# ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("model_name", list(MODELS))
@pytest.mark.parametrize("dst_kind", KINDS)
@pytest.mark.parametrize("src_kind", KINDS)
def test_checkpoint_loads_strictly_across_kinds(model_name, src_kind, dst_kind):
    src, _ = build(model_name, src_kind, 1)
    train_step(src, 11)
    buf = io.BytesIO()
    torch.save(src.state_dict(), buf)
    buf.seek(0)
    state = torch.load(buf, weights_only=True)
    assert_same_state(state, src.state_dict())

    dst, _ = build(model_name, dst_kind, 2)
    train_step(dst, 22)
    before = dst.state_dict()
    differ = [k for k in state if not torch.equal(state[k], before[k])]
    assert len(differ) >= len(state) - 1, "the checkpoint must change (almost) every value"  # tied copies agree
    result = dst.load_state_dict(state, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    assert_same_state(dst.state_dict(), state)
    assert_tied(dst, model_name)

    # the loaded module computes what the saved one computes (as a hard model, in eval mode)
    src.eval(), dst.eval()
    x, _ = batch(5)
    with torch.no_grad():
        assert torch.equal(hard_view(dst)(x), hard_view(src)(x))
        if src_kind == dst_kind:
            assert torch.equal(dst(x), src(x))


# ----------------------------------------------------------------------------------------
# the module itself: torch.save/torch.load, deepcopy, pickle, copy.copy
# ----------------------------------------------------------------------------------------

COPIES = {
    "torch.save": torch_roundtrip,
    "deepcopy": copy.deepcopy,
    "pickle": pickle_roundtrip,
}


@pytest.mark.parametrize("model_name", list(MODELS))
@pytest.mark.parametrize("kind", ("linearized", "hard"))
@pytest.mark.parametrize("how", list(COPIES))
def test_copies_are_the_same_module(model_name, kind, how):
    module, model = build(model_name, kind, 3)
    if kind == "linearized":
        sll_fx.set_eps(module, 0.125, where="sign")  # a non-default eps, which the copy must keep
    train_step(module, 33)
    module.eval()
    clone = COPIES[how](module)

    assert type(clone).__name__ == type(module).__name__
    assert isinstance(clone, fx.GraphModule) == isinstance(module, fx.GraphModule)
    assert_same_state(clone.state_dict(), module.state_dict())
    assert list(clone.state_dict()) == list(model.state_dict())
    assert non_persistent(clone) == non_persistent(module)
    for name in non_persistent(module):
        assert torch.equal(clone.get_buffer(name), module.get_buffer(name)), name
    assert_tied(clone, model_name)
    assert eps_of(clone) == eps_of(module)
    if kind == "linearized":
        assert 0.125 in eps_of(clone).values()
    assert clone.sll_report is not None and str(clone.sll_report) == str(module.sll_report)
    # a copy owns its state
    assert all(a is not b for a, b in zip(clone.parameters(), module.parameters()))
    assert all(a.data_ptr() != b.data_ptr() for a, b in zip(clone.buffers(), module.buffers()) if a.numel())

    # same outputs and gradients
    x, _ = batch(6)
    xa, xb = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    ya, yb = module(xa), clone(xb)
    assert torch.equal(ya, yb)
    ya.sum().backward()
    yb.sum().backward()
    assert torch.equal(xa.grad, xb.grad)
    for (na, pa), (nb, pb) in zip(module.named_parameters(), clone.named_parameters()):
        assert na == nb
        assert (pa.grad is None) == (pb.grad is None), na
        if pa.grad is not None:
            assert torch.equal(pa.grad, pb.grad), na

    # the copy loads the model's checkpoint strictly, exports hard, and changing it leaves the source alone
    clone.load_state_dict(model.state_dict(), strict=True)
    with torch.no_grad():
        assert torch.equal(hard_view(clone)(x), hard_view(module)(x))
    if kind == "linearized":
        sll_fx.set_eps(clone, 0.3)
        assert set(eps_of(clone).values()) == {0.3} and 0.125 in eps_of(module).values()
    with torch.no_grad():
        next(clone.parameters()).add_(1.0)
    assert not torch.equal(next(clone.parameters()), next(module.parameters()))


@pytest.mark.parametrize("model_name", list(MODELS))
def test_copies_of_the_original_model_load_into_the_linearized_one(model_name):
    """The plain ``torch.save(model)`` of the user's model and the linearized one are interchangeable."""
    lin, model = build(model_name, "linearized", 4)
    loaded = torch_roundtrip(model)
    assert_tied(loaded, model_name)
    lin.load_state_dict(loaded.state_dict(), strict=True)
    loaded.load_state_dict(lin.state_dict(), strict=True)


@pytest.mark.parametrize("model_name", ["tied", "opaque"])
def test_shallow_copy_shares_state_and_keeps_keys(model_name):
    lin, model = build(model_name, "linearized", 5)
    clone = copy.copy(lin)
    assert isinstance(clone, fx.GraphModule)
    assert list(clone.state_dict()) == list(model.state_dict())
    assert all(a is b for a, b in zip(clone.parameters(), lin.parameters()))
    assert non_persistent(clone) == non_persistent(lin)
    assert_tied(clone, model_name)
    lin.eval()
    x, _ = batch(7)
    with torch.no_grad():
        assert torch.equal(clone(x), lin(x))


def test_opaque_module_survives_copies_and_still_runs_its_python():
    lin, model = build("opaque", "linearized", 6)
    assert [o.path for o in lin.sll_report.opaque] == ["block"]
    for how, fn in COPIES.items():
        clone = fn(lin)
        block = clone.get_submodule("block")
        assert type(block) is Moody and sll_fx.opaque.is_opaque(block), how
        assert isinstance(block.inner, fx.GraphModule) and has_sll(block.inner), how
        assert [o.path for o in clone.sll_report.opaque] == ["block"]
        lin.eval(), clone.eval()
        for sign in (1.0, -1.0):  # both branches of the Python `if`
            x = sign * (batch(8)[0].abs() + 0.1)
            with torch.no_grad():
                assert torch.equal(clone(x), lin(x)), how
        hard = sll_fx.export_hard(clone, verbose=False)
        assert not has_sll(hard)
        assert list(hard.state_dict()) == list(model.state_dict())


def test_state_dict_alone_needs_no_pickle_of_code():
    """``weights_only=True`` loads a linearized model's checkpoint: it holds tensors only."""
    lin, model = build("tied", "linearized", 7)
    buf = io.BytesIO()
    torch.save(lin.state_dict(), buf)
    buf.seek(0)
    state = torch.load(buf, weights_only=True)
    fresh = Tied()
    fresh.load_state_dict(state, strict=True)
    assert_same_state(fresh.state_dict(), model.state_dict())


# ----------------------------------------------------------------------------------------
# what a pickle keeps beyond the state; buffers are read, not frozen
# ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("how", ["pickle", "torch.save"])
def test_pickle_keeps_node_names_sources_and_submodule_names(how):
    from sll_fx.tracer import module_of, source_of

    lin, _ = build("tied", "linearized", 8)
    clone = COPIES[how](lin)
    nodes = [(n.op, n.name, source_of(n), module_of(n), n.meta.get("sll_entry"))
             for n in lin.graph.nodes]
    assert [(n.op, n.name, source_of(n), module_of(n), n.meta.get("sll_entry")) for n in clone.graph.nodes] == nodes
    assert clone.code == lin.code
    # so everything that selects by those still works on the copy
    assert sll_fx.set_eps(clone, 0.2, where="gate") == sll_fx.set_eps(lin, 0.2, where="gate")
    names = [e.node for e in clone.sll_report.entries]
    assert sll_fx.set_eps(clone, 0.1, where=names[0])


@pytest.mark.parametrize("kind", ("linearized", "hard"))
def test_arithmetic_on_buffers_alone_is_read_at_run_time_not_frozen(kind):
    """``self.offset * self.scratch`` (no input involved) is a graph op on the buffers, not a constant that
    fx computed while tracing: a loaded checkpoint's buffer values are used, also after pickling."""
    module, model = build("tied", kind, 9)
    module.eval(), model.eval()
    x, _ = batch(10)
    for current in (module, pickle.loads(pickle.dumps(module))):
        with torch.no_grad():
            current.get_buffer("gate.offset").fill_(3.0)
            model.gate.offset.fill_(3.0)
            assert torch.equal(hard_view(current)(x), model(x))
        assert not any(n.startswith("_tensor_constant") and "gate" in n for n, _ in current.named_buffers())


class _RunningQuant(nn.Module):
    """A traced-through module with a buffer of its own (not a torch.nn leaf)."""

    def __init__(self):
        super().__init__()
        self.register_buffer("amax", torch.ones(()))

    def forward(self, x):
        self.amax.copy_(torch.maximum(self.amax, x.detach().abs().amax()))
        return torch.round(x / self.amax * 7) * self.amax / 7


class _Moved(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 4)
        self.bn = nn.BatchNorm1d(4)
        self.q = _RunningQuant()

    def forward(self, x):
        return self.q(self.bn(self.lin(x)))


def _same_tensors(a: nn.Module, b: nn.Module) -> bool:
    return all(x is y for x, y in zip(a.state_dict(keep_vars=True).values(), b.state_dict(keep_vars=True).values()))


def test_moving_the_result_moves_the_models_buffers_too():
    torch.manual_seed(0)
    model = _Moved()
    gm = sll_fx.linearize_module(model, eps=0.05, verbose=False)
    gm.double()  # (a dtype cast stands for .cuda() on this machine)
    assert _same_tensors(gm, model) and model.q.amax.dtype == torch.float64 and model.lin.weight.dtype == torch.float64
    for _ in range(2):
        gm(torch.randn(8, 4, dtype=torch.float64) * 5).sum().backward()
    assert model.q.amax > 1 and model.state_dict().keys() == gm.state_dict().keys()
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), gm.state_dict().values()))
    hard = sll_fx.export_hard(gm, verbose=False)
    hard.float()  # export_hard's result: gm and the model follow it too
    assert _same_tensors(hard, gm) and _same_tensors(gm, model) and model.bn.running_mean.dtype == torch.float32
    twin = copy.deepcopy(gm)  # a deep copy owns its tensors: moving it leaves the model alone
    twin.double()
    assert model.q.amax.dtype == torch.float32


class _Literal(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 4)

    def forward(self, x):
        return torch.round(self.lin(x) * torch.tensor([1.0, 2.0, 3.0, 4.0]))  # a literal: an fx constant


def test_to_empty_keeps_the_eps_and_constants_of_a_model_built_on_the_meta_device():
    """Non-persistent buffers are not in the checkpoint: ``to_empty`` must not leave sll_fx's own uninitialized."""
    torch.manual_seed(0)
    ref = _Literal()
    with torch.device("meta"):
        model = _Literal()
    gm = sll_fx.linearize_module(model, eps=0.1, verbose=False)
    kept = {name: b.clone() for name, b in gm.named_buffers()}  # the eps buffer and the fx constant: on the CPU
    assert any(name.startswith("_sll_eps_") for name in kept) and any("_tensor_constant" in name for name in kept)
    junk = [torch.full((1000,), 123.0, dtype=torch.float64) for _ in range(20)]  # (freed memory to reuse)
    del junk
    gm.to_empty(device="cpu")
    gm.load_state_dict(ref.state_dict())
    assert sll_fx.eps_state(gm) == {"round_1": 0.1}
    assert all(torch.equal(b, kept[name]) and b.dtype == kept[name].dtype for name, b in gm.named_buffers())
    x = torch.randn(8, 4)
    assert torch.equal(gm(x), sll_fx.linearize_module(ref, eps=0.1, verbose=False)(x))


class _Lsq(nn.Module):
    """A traced-through quantizer with a learnable step and a buffer of its own (fx gives gm a container for it)."""

    def __init__(self):
        super().__init__()
        self.step = nn.Parameter(torch.tensor([0.5]))
        self.register_buffer("bits", torch.tensor(7.0))

    def forward(self, x):
        return torch.clamp(torch.round(x / self.step), -self.bits, self.bits) * self.step


class _LsqNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.t = nn.Parameter(torch.tensor([0.1]))  # the model's own parameter: held by gm itself
        self.lin = nn.Linear(4, 4)                  # a leaf: the model's module, shared by gm
        self.q = _Lsq()

    def forward(self, x):
        return self.lin(self.q(x)) + self.t


def _holds_the_models_tensors(result: nn.Module, model: nn.Module) -> bool:
    ours = dict(model.named_parameters(remove_duplicate=False)) | dict(model.named_buffers(remove_duplicate=False))
    theirs = dict(result.named_parameters(remove_duplicate=False)) | dict(result.named_buffers(remove_duplicate=False))
    return all(theirs[k] is v for k, v in ours.items())


@pytest.mark.parametrize("into", ["gm", "hard"])
def test_load_with_assign_gives_the_model_the_new_tensors(into):
    """``load_state_dict(..., assign=True)`` puts new tensor objects in the module it is called on: the containers fx
    made for traced-through modules, and gm itself, hold the model's tensors, not its modules, so the model kept the old
    ones (and training gm no longer trained it: model(x) and export_hard(gm)(x) differed, silently; audit)."""
    torch.manual_seed(0)
    model = _LsqNet()
    gm = sll_fx.linearize_module(model, eps=0.1, verbose=False)
    hard = sll_fx.export_hard(gm, verbose=False)
    ckpt = {k: v + 0.25 for k, v in _LsqNet().state_dict().items()}
    loaded = {k: v.clone() for k, v in ckpt.items()}  # (assign=True: the model trains ckpt's own tensors)
    (gm if into == "gm" else hard).load_state_dict(ckpt, assign=True)
    for result in (gm, hard):  # (export_hard's result follows gm, and gm follows it: it kept the old tensors)
        assert _holds_the_models_tensors(result, model)
    assert all(torch.equal(v, loaded[k]) for k, v in model.state_dict().items())
    opt = torch.optim.SGD(gm.parameters(), lr=0.5)
    x = torch.randn(3, 4)
    gm(x).pow(2).sum().backward()
    opt.step()
    assert not torch.equal(model.q.step.detach(), loaded["q.step"])  # the step trained the model
    assert torch.equal(model(x), sll_fx.export_hard(gm, verbose=False)(x))
    assert torch.equal(model(x), hard(x))  # (the result made before the load: the trained tensors too)


class _Scaled(nn.Module):
    def __init__(self, w=None):
        super().__init__()
        self.w = w if w is not None else nn.Parameter(torch.ones(4))

    def forward(self, x):
        return torch.round(x * self.w)


class _Tied(nn.Module):
    """One parameter at ``a.w`` and ``b.w``, both traced through: the graph reads it as ``a.w``."""

    def __init__(self):
        super().__init__()
        self.a = _Scaled()
        self.b = _Scaled(self.a.w)

    def forward(self, x):
        return self.a(x) + 10 * self.b(x)


@pytest.mark.parametrize("keys", [("a.w", "b.w"), ("a.w",), ("b.w",)])
def test_load_with_assign_keeps_tied_parameters_tied(keys):
    """``assign=True`` gives each name its own tensor (nn.Module unties them); the graph reads one: they stay one
    tensor, in gm and in the model (a partial load left gm's b.w behind: the next call blamed the user with a
    TraceError; a full one left model and gm computing different things)."""
    model = _Tied()
    gm = sll_fx.linearize_module(model, eps=0.1, verbose=False)
    gm.load_state_dict({k: torch.full((4,), 2.0) for k in keys}, assign=True, strict=len(keys) == 2)
    assert gm.a.w is gm.b.w is model.a.w is model.b.w
    assert torch.equal(model.a.w.detach(), torch.full((4,), 2.0))
    x = torch.ones(1, 4)
    assert torch.equal(gm(x), model(x)) and torch.equal(sll_fx.export_hard(gm, verbose=False)(x), model(x))


@pytest.mark.parametrize("wrap", ["data_parallel", "parent"])
def test_load_with_assign_through_a_wrapper(wrap):
    """A wrapper (DataParallel, DDP, torch.compile) or a parent module loads gm through ``_load_from_state_dict``, not
    gm's ``load_state_dict``: the model and the ties follow there too (they were left behind)."""
    model = _Tied()
    gm = sll_fx.linearize_module(model, eps=0.1, verbose=False)
    outer = nn.DataParallel(gm) if wrap == "data_parallel" else nn.Sequential(gm)
    prefix = "module." if wrap == "data_parallel" else "0."
    outer.load_state_dict({prefix + "a.w": torch.full((4,), 2.0), prefix + "b.w": torch.full((4,), 2.0)}, assign=True)
    assert gm.a.w is gm.b.w is model.a.w is model.b.w
    assert torch.equal(gm(torch.ones(1, 4)), model(torch.ones(1, 4)))


class _RenamingNet(nn.Module):
    """A model that loads itself otherwise than ``nn.Module`` does (an old checkpoint's key renamed): gm's load runs
    the model's own, with a traced-through ``q`` tied at ``q2``."""

    def __init__(self):
        super().__init__()
        self.t = nn.Parameter(torch.tensor([0.1]))
        self.q = _Lsq()
        self.q2 = self.q

    def forward(self, x):
        return self.q(x) + self.t

    def _load_from_state_dict(self, state_dict, prefix, *args):
        if prefix + "old_t" in state_dict:
            state_dict[prefix + "t"] = state_dict.pop(prefix + "old_t")
        super()._load_from_state_dict(state_dict, prefix, *args)


def test_load_with_assign_into_a_model_that_loads_itself():
    """A model whose class overrides ``_load_from_state_dict`` has gm run that override: it skipped the ``assign=True``
    handling, so the traced-through ``q.step`` came apart from the model's and from export_hard's earlier result
    (training gm no longer trained them, silently)."""
    torch.manual_seed(0)
    model = _RenamingNet()
    gm = sll_fx.linearize_module(model, eps=0.1, verbose=False)
    hard = sll_fx.export_hard(gm, verbose=False)
    ckpt = {k: v + 0.25 for k, v in _RenamingNet().state_dict().items()}
    ckpt["old_t"] = ckpt.pop("t")
    gm.load_state_dict(ckpt, assign=True)
    for result in (gm, hard):
        assert _holds_the_models_tensors(result, model)
    assert gm.q.step is gm.q2.step
    opt = torch.optim.SGD(gm.parameters(), lr=0.5)
    x = torch.randn(3, 4)
    gm(x).pow(2).sum().backward()
    opt.step()
    assert torch.equal(model(x), sll_fx.export_hard(gm, verbose=False)(x)) and torch.equal(model(x), hard(x))


def test_a_failed_load_with_assign_keeps_the_model_linked():
    """torch assigns every tensor, then raises for an unexpected key: gm and the model must not come apart (the retry
    with strict=False could never link them again)."""
    model = _Tied()
    gm = sll_fx.linearize_module(model, eps=0.1, verbose=False)
    with pytest.raises(RuntimeError, match="Unexpected key"):
        gm.load_state_dict({"a.w": torch.full((4,), 2.0), "b.w": torch.full((4,), 2.0), "extra": torch.ones(1)},
                           assign=True)
    assert gm.a.w is gm.b.w is model.a.w is model.b.w and float(model.a.w.detach()[0]) == 2.0


def test_load_with_assign_of_tied_weights_holding_nan():
    """The model's own state_dict, NaN in a tied weight: the same values (torch.equal counts NaN unequal)."""
    model = _Tied()
    with torch.no_grad():
        model.a.w[1] = float("nan")
    gm = sll_fx.linearize_module(model, eps=0.1, verbose=False)
    gm.load_state_dict({k: v.clone() for k, v in model.state_dict().items()}, assign=True)
    assert gm.a.w is gm.b.w is model.a.w is model.b.w


def test_load_with_assign_refuses_to_untie_what_the_graph_reads_as_one():
    model = _Tied()
    gm = sll_fx.linearize_module(model, eps=0.1, verbose=False)
    with pytest.raises(ValueError, match=r"'a.w' and 'b.w' are one tensor of the model \(tied\).*\nFix: tie them"):
        gm.load_state_dict({"a.w": torch.full((4,), 2.0), "b.w": torch.full((4,), 3.0)}, assign=True)
    assert gm.a.w is model.a.w is model.b.w and torch.equal(model.a.w.detach(), torch.ones(4))  # nothing loaded


def test_to_empty_then_load_gives_the_model_real_parameters():
    """A model built on ``meta``: ``gm.to_empty(device=...)`` makes new parameter objects (meta tensors cannot be
    swapped in place), which the model's own and traced-through modules did not get (still on meta: the model then
    failed to run)."""
    torch.manual_seed(0)
    ref = _LsqNet()
    with torch.device("meta"):
        model = _LsqNet()
    gm = sll_fx.linearize_module(model, eps=0.1, verbose=False)
    gm.to_empty(device="cpu")
    gm.load_state_dict(ref.state_dict())
    assert _holds_the_models_tensors(gm, model)
    x = torch.randn(3, 4)
    assert torch.equal(model(x), ref(x))


def test_a_cast_that_makes_new_parameters_gives_them_to_the_model():
    """Under ``set_overwrite_module_params_on_conversion(True)`` a cast makes new parameter objects: the model's
    modules get them too (they kept float32 ones)."""
    model = _LsqNet()
    gm = sll_fx.linearize_module(model, eps=0.1, verbose=False)
    before = torch.__future__.get_overwrite_module_params_on_conversion()
    torch.__future__.set_overwrite_module_params_on_conversion(True)
    try:
        gm.double()
    finally:
        torch.__future__.set_overwrite_module_params_on_conversion(before)
    assert _holds_the_models_tensors(gm, model)
    assert model.q.step.dtype == model.t.dtype == model.lin.weight.dtype == torch.float64


class _Table(nn.Module):
    """Reads a plain tensor attribute (neither a parameter nor a buffer: fx holds it as a get_attr)."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 4)
        self.table = torch.arange(4.0) / 3
        self.register_buffer("scale", torch.full((4,), 1.5))

    def forward(self, x):
        return torch.round(self.lin(x) * self.scale + self.table)


class _Holds(nn.Module):
    def __init__(self):
        super().__init__()
        self.inner = _Table()

    def forward(self, x):
        return self.inner(x) * 2


@pytest.mark.parametrize("how", ["linearized", "hard", *sorted(COPIES)])
@pytest.mark.parametrize("cls,path", [(_Table, ""), (_Holds, "inner")])
def test_a_cast_leaves_a_plain_tensor_attribute_as_the_model_does(cls, path, how):
    """``model.half()`` casts parameters and buffers, not a plain tensor attribute: neither does the result's cast,
    on a copy or an export too (a float32 table still promotes the half activations, as in the model)."""
    torch.manual_seed(0)
    model, ref = cls(), cls()
    ref.load_state_dict(model.state_dict())
    ref.get_submodule(path).table = model.get_submodule(path).table
    gm = sll_fx.linearize_module(model, eps=1e-6, verbose=False)
    module = sll_fx.export_hard(gm, verbose=False) if how == "hard" else \
        COPIES[how](gm) if how in COPIES else gm
    module.half()
    ref.half()
    assert ref.get_submodule(path).table.dtype == torch.float32
    assert module.get_submodule(path).table.dtype == torch.float32  # (gm.half() made it float16)
    assert module.get_submodule(path).scale.dtype == torch.float16
    assert [k for k, _ in module.named_buffers() if k.endswith("table")] == [f"{path}.table".lstrip(".")]
    x = torch.randn(8, 4).half()
    with torch.no_grad():
        assert_bitwise(sll_fx.export_hard(module, verbose=False)(x) if how != "hard" else module(x), ref(x))


class _Validated(nn.Module):
    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.tensor([1.0]))

    def forward(self, x):
        return torch.round(x * self.w)


class _ValidatedNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.t = nn.Parameter(torch.tensor([0.1]))
        self.z = _Validated()

    def forward(self, x):
        return self.z(x) + self.t


def _refuse_large(module, state_dict, prefix, *args):
    if state_dict[prefix + "w"].abs().max() > 10:
        raise ValueError("checkpoint has |w| > 10")


@pytest.mark.parametrize("through", ["gm", "wrapper"])
def test_an_assign_load_that_raises_part_way_keeps_the_model_linked(through):
    """A load pre-hook's error stops the load after gm's own ``t`` was assigned, before the post-hook that links the
    model ran: gm and the model came apart for good (a later good load did not link them either; audit). gm's own
    load_state_dict completes it at once, a wrapper's by the next load."""
    model = _ValidatedNet()
    model.z.register_load_state_dict_pre_hook(_refuse_large)
    gm = sll_fx.linearize_module(model, eps=0.1, verbose=False)
    hard = sll_fx.export_hard(gm, verbose=False)
    target = gm if through == "gm" else nn.Sequential(gm)
    prefix = "" if through == "gm" else "0."
    with pytest.raises(ValueError, match=r"\|w\| > 10"):
        target.load_state_dict({prefix + "t": torch.tensor([2.0]), prefix + "z.w": torch.tensor([100.0])}, assign=True)
    if through == "gm":
        assert gm.t is model.t is hard.t
    else:
        target(torch.ones(1))  # (the next call completes it: training through the wrapper trains the model)
        assert gm.t is model.t is hard.t
    target.load_state_dict({prefix + "t": torch.tensor([3.0]), prefix + "z.w": torch.tensor([1.5])}, assign=True)
    assert gm.t is model.t is hard.t and gm.z.w is model.z.w is hard.z.w and float(model.t) == 3.0


class _ResizedTable(nn.Module):
    """Loads itself (a table of any size: it replaces the buffer), on a plain load too."""

    def __init__(self):
        super().__init__()
        self.register_buffer("table", torch.tensor([0.5, 1.5]))

    def forward(self, x):
        return torch.round(x * self.table.sum())

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing, unexpected, errors):
        if prefix + "table" in state_dict:
            self.table = state_dict[prefix + "table"].clone()
        elif strict:
            missing.append(prefix + "table")


def test_a_module_replacing_its_tensors_on_a_plain_load_reaches_export_hards_results():
    """A self-loading module swaps in a new buffer on a load without assign: the model and gm got it, an export_hard
    result made before kept the old one (hard(x) != model(x), silently; audit)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 4), _ResizedTable())
    gm = sll_fx.linearize_module(model, eps=0.1, verbose=False)
    hard = sll_fx.export_hard(gm, verbose=False)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    state["1.table"] = torch.tensor([1.0, 2.0, 4.0])
    gm.load_state_dict(state)
    x = torch.randn(5, 4)
    assert model[1].table is gm.get_submodule("1").table is hard.get_submodule("1").table
    assert torch.equal(hard(x), model(x))


def test_a_deep_copy_of_model_gm_and_hard_together_keeps_them_linked():
    """The links between a model, gm and export_hard's result are not copied with gm alone (a copy shares none of
    their tensors), but a deep copy of all three in one was left unlinked: an assign load into the copied gm came
    apart from the copied model and hard result (audit)."""
    model = _LsqNet()
    gm = sll_fx.linearize_module(model, eps=0.1, verbose=False)
    hard = sll_fx.export_hard(gm, verbose=False)
    model2, gm2, hard2 = copy.deepcopy((model, gm, hard))
    gm2.load_state_dict({k: v + 1.0 for k, v in model.state_dict().items()}, assign=True)
    assert gm2.q.step is model2.q.step is hard2.q.step
    assert gm.q.step is model.q.step is hard.q.step and not torch.equal(gm.q.step, gm2.q.step)  # (the originals)

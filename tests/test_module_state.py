"""Module state beyond parameters and buffers: parametrizations and extra state.

- A user module with a parametrization (``torch.nn.utils.parametrize``, which swaps its class for
  ``Parametrized<Cls>`` in torch's namespace) is traced into by its original class: its discrete
  ops, and those of its parametrizations, are rewritten exactly as the same code written inline;
  a parametrized ``torch.nn`` module (``weight_norm`` on an ``nn.Linear``) stays a leaf; an
  opaque parametrized module is listed under its own class name.
- ``get_extra_state``/``set_extra_state`` (the ``<prefix>_extra_state`` key), on the model itself
  (traced or opaque), on a traced-through submodule and on an opaque one: the original, linearized
  and hard models have the same keys, a checkpoint loads strictly in all 6 directions between them,
  the loaded module gives the saved extra state back and computes what the model computes (linear
  mode outside the bands, export_hard bit for bit); ``copy.deepcopy``, ``pickle`` and
  ``torch.save``/``torch.load`` keep it (a copy owns it); ``copy.copy`` and ``export_hard`` share a
  traced module's extra state with the model, as they share its tensors (an opaque module is a
  private copy: its Python attributes, extra state included, are its own).
"""

from __future__ import annotations

import copy
import io
import itertools
import pickle

import pytest
import torch
from torch import fx, nn
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import weight_norm

import sll_fx
import _helpers
from _helpers import assert_bitwise, sll_nodes

KINDS = ("original", "linearized", "hard")
DIRECTIONS = [(a, b) for a, b in itertools.permutations(KINDS, 2)]


# ----------------------------------------------------------------------------------------
# models
# ----------------------------------------------------------------------------------------

class Sym(nn.Module):
    def forward(self, w):
        return (w + w.T) / 2


class Binarize(nn.Module):
    def forward(self, w):
        return torch.sign(w)


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(4, 4))
        self.mix = nn.Parameter(torch.randn(4, 4))
        self.register_buffer("offset", torch.randn(4))

    def forward(self, h):
        return torch.sign(h @ self.weight + self.offset) + h @ self.mix * 0.25


class Parametrized(nn.Module):
    """A user block with two parametrizations (one with a discrete op) and a parametrized nn.Linear."""

    def __init__(self, block: type = Block):
        super().__init__()
        self.blk = block()
        parametrize.register_parametrization(self.blk, "weight", Sym())
        parametrize.register_parametrization(self.blk, "mix", Binarize())
        self.head = weight_norm(nn.Linear(4, 4))      # a torch.nn module: a leaf, parametrized or not

    def forward(self, x):
        return torch.round(self.head(self.blk(x)) * 2) / 2


class InlineBlock(Block):
    """``Block`` with its parametrizations written into ``forward``."""

    def forward(self, h):
        w = (self.weight + self.weight.T) / 2
        return torch.sign(h @ w + self.offset) + h @ torch.sign(self.mix) * 0.25


class Inline(Parametrized):
    def __init__(self):
        nn.Module.__init__(self)
        self.blk = InlineBlock()
        self.head = weight_norm(nn.Linear(4, 4))


class MoodyBlock(Block):
    """Data-dependent control flow: kept opaque."""

    def forward(self, h):
        if h.sum() > 0:
            return Block.forward(self, h)
        return -Block.forward(self, -h)


class Stepper(nn.Module):
    """A traced block with extra state."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 4)
        self.step = 7

    def get_extra_state(self):
        return {"step": self.step}

    def set_extra_state(self, state):
        self.step = state["step"]

    def forward(self, h):
        return torch.sign(self.lin(h)) + h


class WithExtra(nn.Module):
    """Extra state on the model itself and on a traced-through submodule."""

    def __init__(self):
        super().__init__()
        self.blk = Stepper()
        self.scale = nn.Parameter(torch.tensor(1.5))
        self.epoch = 3

    def get_extra_state(self):
        return self.epoch

    def set_extra_state(self, state):
        self.epoch = state

    def forward(self, x):
        return torch.round(self.blk(x) * self.scale)


class OpaqueStepper(Stepper):
    """Opaque (control flow), with extra state, holding a traced child with extra state."""

    def __init__(self):
        super().__init__()
        self.inner = Stepper()

    def forward(self, h):
        if h.sum() > 0:
            return self.inner(self.lin(h))
        return -self.inner(-h)


class WithOpaqueExtra(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Linear(4, 4)
        self.block = OpaqueStepper()

    def forward(self, x):
        return torch.round(self.block(self.stem(x)) * 4) / 4


class OpaqueTopExtra(WithExtra):
    """The model's own forward is untraceable: linearize_module returns a private copy of it."""

    def forward(self, x):
        if x.sum() > 0:
            return torch.round(self.blk(x) * self.scale)
        return torch.round(self.blk(-x))


MODELS = {"parametrized": Parametrized, "extra": WithExtra, "opaque_extra": WithOpaqueExtra,
          "opaque_top_extra": OpaqueTopExtra}
#: the modules with extra state, per model ("" is the model itself)
EXTRA = {"parametrized": [], "extra": ["", "blk"], "opaque_extra": ["block", "block.inner"],
         "opaque_top_extra": ["", "blk"]}
#: the opaque ones among them: they run as private copies of the user's modules
OPAQUE = {"extra": [], "opaque_extra": ["block"], "opaque_top_extra": [""]}
KEYS = {
    "parametrized": ["blk.offset", "blk.parametrizations.weight.original", "blk.parametrizations.mix.original",
                     "head.bias", "head.parametrizations.weight.original0", "head.parametrizations.weight.original1"],
    "extra": ["scale", "_extra_state", "blk._extra_state", "blk.lin.weight", "blk.lin.bias"],
    "opaque_top_extra": ["scale", "_extra_state", "blk._extra_state", "blk.lin.weight", "blk.lin.bias"],
    "opaque_extra": ["stem.weight", "stem.bias", "block._extra_state", "block.lin.weight", "block.lin.bias",
                     "block.inner._extra_state", "block.inner.lin.weight", "block.inner.lin.bias"],
}


# ----------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------

def build(model_name: str, kind: str, seed: int) -> tuple[nn.Module, nn.Module]:
    """(module of ``kind``, the original model it shares its state with)."""
    torch.manual_seed(seed)
    model = MODELS[model_name]()
    if kind == "original":
        return model, model
    gm = sll_fx.linearize_module(model, eps=0.25, verbose=False)
    return (gm if kind == "linearized" else sll_fx.export_hard(gm, verbose=False)), model


def batch(seed: int, n: int = 16) -> torch.Tensor:
    return torch.randn(n, 4, generator=torch.Generator().manual_seed(seed))


def train_step(module: nn.Module, seed: int) -> None:
    opt = torch.optim.SGD(module.parameters(), lr=0.1)
    ((module(batch(seed)) - 1.0) ** 2).mean().backward()
    with torch.no_grad():  # the hard ops cut some gradients: move every parameter a little anyway
        for p in module.parameters():
            p.add_(0.01 * (seed % 7 + 1))
    opt.step()
    opt.zero_grad(set_to_none=True)


def extra_states(module: nn.Module, model_name: str) -> dict:
    return {path: module.get_submodule(path).get_extra_state() for path in EXTRA[model_name]}


def set_extra_states(module: nn.Module, model_name: str, base: int) -> dict:
    """Give every module with extra state a value of its own; returns them."""
    values = {}
    for i, path in enumerate(EXTRA[model_name]):
        owner = module.get_submodule(path)
        values[path] = base + i if path == "" else {"step": base + i}  # WithExtra's own, or a Stepper's
        owner.set_extra_state(values[path])
    return values


def assert_same_state(a: dict, b: dict) -> None:
    assert list(a) == list(b)
    for k in a:
        if isinstance(a[k], torch.Tensor):
            assert a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]), k
        else:
            assert a[k] == b[k], k


def save_load(state: dict) -> dict:
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


def as_hard(module: nn.Module) -> nn.Module:
    """The module with its sll ops exactly hard: its export (linearized) or itself."""
    has_sll = any(sll_nodes(m) for m in module.modules() if isinstance(m, fx.GraphModule))
    return sll_fx.export_hard(module, verbose=False) if has_sll else module


def classes_and_attributes(model: nn.Module) -> dict:
    return {p: (type(m), sorted(m.__dict__)) for p, m in model.named_modules(remove_duplicate=False)}


def _torch_roundtrip(module):
    buf = io.BytesIO()
    torch.save(module, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=False)


COPIES = {"torch.save": _torch_roundtrip, "deepcopy": copy.deepcopy, "pickle": lambda m: pickle.loads(pickle.dumps(m))}


# ----------------------------------------------------------------------------------------
# parametrized modules
# ----------------------------------------------------------------------------------------

def test_parametrized_user_module_is_traced_into_and_a_parametrized_linear_stays_a_leaf():
    torch.manual_seed(0)
    model = Parametrized()
    assert type(model.blk).__name__ == "ParametrizedBlock" and type(model.head).__name__ == "ParametrizedLinear"
    before = classes_and_attributes(model)
    gm = sll_fx.linearize_module(model, eps=0.25, verbose=False)
    report = gm.sll_report
    assert [(e.node, e.op, e.replacement, e.module) for e in report.entries] == [
        ("sign", "torch.sign", "sll.sign", "blk"),                          # the block's own op
        ("sign_1", "torch.sign", "sll.sign", "blk.parametrizations.mix.0"),  # its parametrization's
        ("round_1", "torch.round", "sll.round", ""),
    ]
    assert report.opaque == []
    assert [n.target for n in gm.graph.nodes if n.op == "call_module"] == ["head"]
    assert gm.head is model.head                           # the parametrized nn.Linear, untouched, shared
    assert gm.get_parameter("blk.parametrizations.weight.original") is model.blk.parametrizations.weight.original
    assert list(gm.state_dict()) == list(model.state_dict()) == KEYS["parametrized"]
    assert classes_and_attributes(model) == before         # the user's model is not changed


class BNN(nn.Module):
    """The BNN spelling with torch.nn.utils.parametrize: sign weights on torch.nn layers, sign activations."""

    def __init__(self):
        super().__init__()
        self.conv, self.fc = nn.Conv2d(1, 4, 3), nn.Linear(16, 3)
        self.bn = nn.BatchNorm2d(4)
        parametrize.register_parametrization(self.conv, "weight", Binarize())
        parametrize.register_parametrization(self.fc, "weight", Binarize())

    def forward(self, x):
        h = torch.sign(self.bn(self.conv(x)))
        return self.fc(h.flatten(1))


def test_a_torch_nn_layer_with_a_users_parametrization_is_traced_into():
    """``register_parametrization(nn.Linear(...), "weight", Binarize())``: the layer is traced into, so its
    weight's sign is rewritten and the latent weight learns (before: the layer stayed a leaf, its sign hard and
    not even listed, no gradient); torch's own parametrizations (weight_norm) keep a layer a leaf (above)."""
    torch.manual_seed(0)
    model = BNN().eval()
    gm = sll_fx.linearize_module(model, eps=0.25, verbose=False)
    assert [(e.op, e.replacement, e.module) for e in gm.sll_report.entries] == [
        ("torch.sign", "sll.sign", "conv.parametrizations.weight.0"), ("torch.sign", "sll.sign", ""),
        ("torch.sign", "sll.sign", "fc.parametrizations.weight.0")]
    assert list(gm.state_dict()) == list(model.state_dict())
    x = torch.randn(2, 1, 4, 4)
    assert_bitwise(sll_fx.export_hard(gm, verbose=False)(x), model(x))
    gm(x).pow(2).sum().backward()
    for layer in (model.conv, model.fc):
        assert torch.count_nonzero(layer.parametrizations.weight.original.grad) > 0


def test_parametrized_module_linearizes_as_the_same_code_written_inline():
    torch.manual_seed(1)
    model, inline = Parametrized(), Inline()
    renamed = {"blk.parametrizations.weight.original": "blk.weight", "blk.parametrizations.mix.original": "blk.mix"}
    inline.load_state_dict({renamed.get(k, k): v for k, v in model.state_dict().items()}, strict=True)
    a = sll_fx.linearize_module(model, eps=0.25, verbose=False)
    b = sll_fx.linearize_module(inline, eps=0.25, verbose=False)
    assert [(e.op, e.eps) for e in a.sll_report.entries] == [(e.op, e.eps) for e in b.sll_report.entries]
    xa, xb = batch(2).requires_grad_(True), batch(2).requires_grad_(True)
    ya, yb = a(xa), b(xb)
    assert_bitwise(ya, yb)
    ya.sum().backward()
    yb.sum().backward()
    assert_bitwise(xa.grad, xb.grad)
    assert_bitwise(model.blk.parametrizations.weight.original.grad, inline.blk.weight.grad)
    assert_bitwise(model.blk.parametrizations.mix.original.grad, inline.blk.mix.grad)
    assert torch.count_nonzero(model.blk.parametrizations.mix.original.grad) > 0  # through the parametrization's sign
    with torch.no_grad():
        assert_bitwise(sll_fx.export_hard(a, verbose=False)(xa), model(xa))


def test_opaque_parametrized_module_is_listed_by_its_class_and_its_parametrization_is_rewritten():
    torch.manual_seed(2)
    model = Parametrized(MoodyBlock)
    gm = sll_fx.linearize_module(model, eps=0.25, verbose=False)
    report = gm.sll_report
    assert [(o.path, o.type) for o in report.opaque] == [("blk", "MoodyBlock")]
    assert [(e.node, e.op, e.module) for e in report.entries] == [
        ("round_1", "torch.round", ""), ("sign", "torch.sign", "blk.parametrizations.mix.0")]
    assert "MoodyBlock" in str(report) and "ParametrizedMoodyBlock" not in str(report)
    assert list(gm.state_dict()) == list(model.state_dict()) == KEYS["parametrized"]
    hard = sll_fx.export_hard(gm, verbose=False)
    assert list(hard.state_dict()) == KEYS["parametrized"]
    for sign in (1.0, -1.0):  # both branches of the Python `if`
        x = sign * (batch(3).abs() + 0.1)
        with torch.no_grad():
            assert_bitwise(hard(x), model(x))
    gm(batch(3).abs() + 0.1).sum().backward()
    assert torch.count_nonzero(model.blk.parametrizations.mix.original.grad) > 0


def test_model_with_a_parametrization_of_its_own():
    torch.manual_seed(3)
    model = Block()
    parametrize.register_parametrization(model, "mix", Binarize())
    gm = sll_fx.linearize_module(model, eps=0.25, verbose=False)
    assert type(gm).__name__ == "Block"
    assert [(e.node, e.module) for e in gm.sll_report.entries] == [("sign", ""), ("sign_1", "parametrizations.mix.0")]
    assert list(gm.state_dict()) == list(model.state_dict()) == ["weight", "offset", "parametrizations.mix.original"]
    with torch.no_grad():
        assert_bitwise(sll_fx.export_hard(gm, verbose=False)(batch(4)), model(batch(4)))


def test_linearizing_inside_parametrize_cached_is_refused_and_changes_nothing():
    """Inside ``parametrize.cached()`` a traced forward would read the weight from torch's cache (a constant: no
    gradient, never recomputed) and leave a proxy in that cache for the user's module (before: the model then
    returned a Proxy inside the block)."""
    torch.manual_seed(3)
    model = Block()
    parametrize.register_parametrization(model, "mix", Binarize())
    x = batch(4)
    with parametrize.cached():
        expected = model(x)
        with pytest.raises(sll_fx.TraceError, match=r"inside torch.nn.utils.parametrize.cached\(\).*\nFix: call "
                                                     "linearize_module outside the cached"):
            sll_fx.linearize_module(model, eps=0.25, verbose=False)
        assert_bitwise(model(x), expected)
    gm = sll_fx.linearize_module(model, eps=0.25, verbose=False)
    with parametrize.cached():  # the result runs inside one
        assert_bitwise(sll_fx.export_hard(gm, verbose=False)(x), model(x))
        gm(x).sum().backward()
    assert torch.count_nonzero(model.parametrizations.mix.original.grad) > 0


# ----------------------------------------------------------------------------------------
# keys and strict loads across the three kinds
# ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("model_name", list(MODELS))
def test_state_dict_keys_of_all_three_are_the_models(model_name):
    lin, model = build(model_name, "linearized", 0)
    hard = sll_fx.export_hard(lin, verbose=False)
    assert list(model.state_dict()) == KEYS[model_name]
    assert list(lin.state_dict()) == KEYS[model_name]
    assert list(hard.state_dict()) == KEYS[model_name]
    assert extra_states(lin, model_name) == extra_states(hard, model_name) == extra_states(model, model_name)


@pytest.mark.parametrize("model_name", list(MODELS))
@pytest.mark.parametrize("src_kind,dst_kind", DIRECTIONS)
def test_checkpoint_loads_strictly_across_kinds(model_name, src_kind, dst_kind):
    src, _ = build(model_name, src_kind, 1)
    train_step(src, 11)
    saved_extra = set_extra_states(src, model_name, 100)
    state = save_load(src.state_dict())
    assert_same_state(state, src.state_dict())

    dst, _ = build(model_name, dst_kind, 2)
    train_step(dst, 22)
    set_extra_states(dst, model_name, 200)
    before = dst.state_dict()
    assert all(not torch.equal(state[k], before[k]) for k in state if isinstance(state[k], torch.Tensor))
    result = dst.load_state_dict(state, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    assert_same_state(dst.state_dict(), state)
    assert extra_states(dst, model_name) == saved_extra           # the extra state came back

    # the loaded module computes what the model computes with that state: bit for bit as a hard model,
    # and the same values in linear mode wherever no input is inside a band (eps 1e-6; the linear
    # kernels may differ in the sign of a zero)
    reference = MODELS[model_name]()
    reference.load_state_dict(state, strict=True)
    if dst_kind == "linearized":
        sll_fx.set_eps(dst, 1e-6)
    for x in (batch(5), -batch(5).abs() - 0.1, batch(5).abs() + 0.1):
        with torch.no_grad():
            assert_bitwise(as_hard(dst)(x), reference(x))
            assert torch.equal(dst(x), reference(x))


@pytest.mark.parametrize("model_name", list(OPAQUE))
def test_linearized_and_hard_share_the_models_extra_state(model_name):
    """Setting (loading) the extra state of a traced module through the linearized or the hard module, or a
    shallow copy, reaches the model, as it does for its tensors.  (An opaque module runs as a private copy
    of the user's: its Python attributes, extra state included, are its own.)"""
    lin, model = build(model_name, "linearized", 4)
    hard = sll_fx.export_hard(lin, verbose=False)
    traced = [p for p in EXTRA[model_name] if p not in OPAQUE[model_name]]
    for i, module in enumerate((lin, hard, copy.copy(lin))):
        values = {p: v for p, v in set_extra_states(module, model_name, 10 * i).items() if p in traced}
        for current in (model, lin, hard):
            assert {p: v for p, v in extra_states(current, model_name).items() if p in traced} == values


# ----------------------------------------------------------------------------------------
# copies of the module itself
# ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("model_name", list(OPAQUE))
@pytest.mark.parametrize("kind", ("linearized", "hard"))
@pytest.mark.parametrize("how", list(COPIES))
def test_copies_keep_extra_state_and_own_it(model_name, kind, how):
    module, model = build(model_name, kind, 5)
    values = set_extra_states(module, model_name, 50)
    clone = COPIES[how](module)
    assert type(clone).__name__ == type(module).__name__
    assert list(clone.state_dict()) == KEYS[model_name]
    assert_same_state(clone.state_dict(), module.state_dict())
    assert extra_states(clone, model_name) == values
    x = batch(6)
    with torch.no_grad():
        assert_bitwise(clone(x), module(x))
    # the copy owns its extra state, loads the model's checkpoint strictly, and copies again
    set_extra_states(clone, model_name, 70)
    assert extra_states(module, model_name) == values
    clone.load_state_dict(model.state_dict(), strict=True)
    assert extra_states(clone, model_name) == extra_states(model, model_name)
    set_extra_states(clone, model_name, 90)
    again = COPIES[how](clone)
    assert extra_states(again, model_name) == extra_states(clone, model_name) != values
    hard = sll_fx.export_hard(again, verbose=False)
    assert list(hard.state_dict()) == KEYS[model_name]
    assert extra_states(hard, model_name) == extra_states(clone, model_name)


@pytest.mark.parametrize("how", list(COPIES))
def test_copies_of_a_parametrized_user_module(how):
    """A parametrized user module that is traced into leaves no parametrized class in the result, so it
    pickles, unlike the model (torch refuses to pickle a parametrized module: "only supported through
    state_dict()")."""
    torch.manual_seed(7)
    model = nn.Sequential(Block(), nn.Linear(4, 4))
    parametrize.register_parametrization(model[0], "mix", Binarize())
    with pytest.raises(RuntimeError, match="state_dict"):
        pickle.dumps(model)
    gm = sll_fx.linearize_module(model, eps=0.25, verbose=False)
    clone = COPIES[how](gm)
    assert list(clone.state_dict()) == list(model.state_dict()) == \
        ["0.weight", "0.offset", "0.parametrizations.mix.original", "1.weight", "1.bias"]
    assert_same_state(clone.state_dict(), gm.state_dict())
    x = batch(8)
    with torch.no_grad():
        assert_bitwise(clone(x), gm(x))
        assert_bitwise(sll_fx.export_hard(clone, verbose=False)(x), model(x))


# ----------------------------------------------------------------------------------------
# state_dict hooks and _save_to_state_dict/_load_from_state_dict overrides of traced modules
# ----------------------------------------------------------------------------------------

#: (hook, module it was called with) of every state_dict hook call
CALLS: list = []


def _record_pre(module, prefix, keep_vars):
    CALLS.append(("state_dict_pre", module))


def _add_version(module, state, prefix, local_metadata):
    CALLS.append(("state_dict", module))
    state[prefix + "version"] = torch.tensor(module.version)


def _record_load_pre(module, state, prefix, *args):
    CALLS.append(("load_pre", module))


def _record_load_post(module, incompatible):
    CALLS.append(("load_post", module))


class Renamed(nn.Module):
    """A traced block that loads checkpoints of an older version (``weight`` is now ``w``) and adds a key of its own
    with a state_dict hook (which its ``_load_from_state_dict`` drops)."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.randn(4, 4))
        self.register_buffer("offset", torch.randn(4))
        self.version = 2
        self.register_state_dict_pre_hook(_record_pre)
        self._register_state_dict_hook(_add_version)
        self.register_load_state_dict_pre_hook(_record_load_pre)
        self.register_load_state_dict_post_hook(_record_load_post)

    def _load_from_state_dict(self, state, prefix, *args):
        if prefix + "weight" in state:
            state[prefix + "w"] = state.pop(prefix + "weight")
        state.pop(prefix + "version", None)
        super()._load_from_state_dict(state, prefix, *args)

    def forward(self, h):
        return torch.sign(h @ self.w + self.offset)


class WithRenamed(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Linear(4, 4)
        self.blk = Renamed()

    def forward(self, x):
        return torch.round(self.blk(self.stem(x)) * 2)


class RenamedTop(Renamed):
    """The model itself renames its key."""


HOOKED = {"nested": (WithRenamed, "blk"), "top": (RenamedTop, "")}
HOW = ("linearized", "hard", *_helpers.COPIES)


def _result(model: nn.Module, how: str) -> nn.Module:
    gm = sll_fx.linearize_module(model, eps=0.25, verbose=False)
    return sll_fx.export_hard(gm, verbose=False) if how == "hard" else gm if how == "linearized" else \
        _helpers.COPIES[how](gm)


def _old_checkpoint(model: nn.Module, path: str) -> dict:
    """``model``'s state as an older version saved it: ``weight`` for ``w``, no ``version`` key."""
    prefix = f"{path}." if path else ""
    return {(f"{prefix}weight" if k == f"{prefix}w" else k): v.clone() + 1
            for k, v in model.state_dict().items() if k != f"{prefix}version"}


@pytest.mark.parametrize("name", list(HOOKED))
@pytest.mark.parametrize("how", HOW)
def test_a_traced_module_loading_an_old_checkpoint_key_loads_it_through_the_result(name, how):
    """The model's ``_load_from_state_dict`` renames an old key: the result (and its export and copies) load that
    checkpoint strictly too, and compute what the model loaded with it computes."""
    cls, path = HOOKED[name]
    torch.manual_seed(3)
    model, reference = cls(), cls()
    module = _result(model, how)
    old = _old_checkpoint(model, path)
    reference.load_state_dict(old, strict=True)
    result = module.load_state_dict(old, strict=True)  # (was: missing "w", unexpected "weight")
    assert not result.missing_keys and not result.unexpected_keys
    assert list(module.state_dict()) == list(reference.state_dict())
    assert_same_state(module.state_dict(), reference.state_dict())
    x = batch(9)
    with torch.no_grad():
        assert_bitwise(as_hard(module)(x), reference(x))
    # a checkpoint of the current version (with the hook's key) loads strictly too, the model's into the result and back
    module.load_state_dict(cls().state_dict(), strict=True)
    reference.load_state_dict(module.state_dict(), strict=True)
    assert_same_state(module.state_dict(), reference.state_dict())


@pytest.mark.parametrize("name", list(HOOKED))
@pytest.mark.parametrize("how", ("linearized", "hard", "copy"))
def test_state_dict_hooks_of_a_traced_module_run_with_the_models_module(name, how):
    """``state_dict()``/``load_state_dict()`` through the result run the hooks of the model's module, called with
    that module (the result shares its tensors); its key (``version``) is in the result's ``state_dict()``."""
    cls, path = HOOKED[name]
    model = cls()
    module = _result(model, how)
    owner = model.get_submodule(path)
    CALLS.clear()
    state = module.state_dict()
    assert CALLS == [("state_dict_pre", owner), ("state_dict", owner)]
    assert list(state) == list(model.state_dict()) and int(state[f"{path}.version".lstrip(".")]) == 2
    owner.version = 3  # read by the hook when it runs
    assert int(module.state_dict()[f"{path}.version".lstrip(".")]) == 3
    CALLS.clear()
    module.load_state_dict(state, strict=True)
    assert CALLS == [("load_pre", owner), ("load_post", owner)]


@pytest.mark.parametrize("how", list(COPIES))
def test_a_copy_runs_the_hooks_on_its_own_state(how):
    """A deep or unpickled copy runs the hooks on a copy of the model's module holding the copy's own tensors (moved
    or cast with it): loading it leaves the model alone."""
    model = WithRenamed()
    gm = sll_fx.linearize_module(model, eps=0.25, verbose=False)
    clone = COPIES[how](gm)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    clone.load_state_dict(_old_checkpoint(model, "blk"), strict=True)
    assert_same_state(model.state_dict(), before)
    assert torch.equal(clone.state_dict()["blk.w"], before["blk.w"] + 1)
    model.blk.version = 5  # the model's module: not the copy's
    clone.half()
    state = clone.state_dict()
    assert state["blk.w"].dtype == state["blk.offset"].dtype == torch.float16 and int(state["blk.version"]) == 2
    assert list(state) == list(model.state_dict()) and int(model.state_dict()["blk.version"]) == 5


def test_loading_with_assign_gives_the_result_the_loaded_tensors():
    model = WithRenamed()
    gm = sll_fx.linearize_module(model, eps=0.25, verbose=False)
    old = _old_checkpoint(model, "blk")
    reference = WithRenamed()
    reference.load_state_dict({k: v.clone() for k, v in old.items()}, strict=True)
    gm.load_state_dict(old, strict=True, assign=True)
    assert gm.blk.w is model.blk.w and gm.blk.offset is model.blk.offset  # the model's module's new tensors
    assert torch.equal(gm.blk.w, old["blk.weight"]) and torch.equal(gm.blk.offset, old["blk.offset"])
    x = batch(10)
    with torch.no_grad():
        assert_bitwise(sll_fx.export_hard(gm, verbose=False)(x), reference(x))

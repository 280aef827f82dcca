"""Assertions and graph queries several test modules share (``from _helpers import ...``)."""

import copy
import io
import pickle

import torch
from torch import fx, nn

from sll_fx.ops import is_sll_target


def assert_bitwise(a, b, what: str = "") -> None:
    """Same structure, dtype, shape, NaN positions, values and sign bits (so -0.0 != +0.0)."""
    if isinstance(a, (tuple, list)):
        assert isinstance(b, (tuple, list)) and len(a) == len(b), what
        for i, (u, v) in enumerate(zip(a, b)):
            assert_bitwise(u, v, f"{what}[{i}]")
        return
    assert a.dtype == b.dtype, f"{what}: dtype {a.dtype} != {b.dtype}"
    assert a.shape == b.shape, f"{what}: shape {tuple(a.shape)} != {tuple(b.shape)}"
    if not a.is_floating_point():
        assert torch.equal(a, b), f"{what}: {a} != {b}"
        return
    na, nb = torch.isnan(a), torch.isnan(b)
    assert torch.equal(na, nb), f"{what}: NaN positions differ\n{a}\n{b}"
    keep = ~na
    assert torch.equal(a[keep], b[keep]), f"{what}: values differ\n{a}\n{b}"
    assert torch.equal(torch.signbit(a[keep]), torch.signbit(b[keep])), f"{what}: sign bits differ\n{a}\n{b}"


def sll_nodes(gm: fx.GraphModule) -> list[fx.Node]:
    return [n for n in gm.graph.nodes if n.op == "call_function" and is_sll_target(n.target)]


def is_op(target, packet) -> bool:
    """``target`` is the sll packet or one of its overloads."""
    return target is packet or getattr(target, "overloadpacket", None) is packet


# --- SpikingJelly's quantizers, verbatim: in-place rounds on a fresh temporary ---------------------------------------

def step_quantize_forward(x, step):
    return torch.round_(x / step) * step


def k_bit_quantize_forward(x, k):
    c = float(1 << k) - 1.0
    x = x * c
    torch.round_(x)
    return x / c


# --- the user's model is never changed ------------------------------------------------------

def snapshot(model: nn.Module) -> dict:
    """Everything ``assert_unchanged`` checks: attributes, containers, tensors (identity, version, value), keys."""
    mods = dict(model.named_modules(remove_duplicate=False))
    return {
        "dict": {p: (m.__dict__, dict(m.__dict__)) for p, m in mods.items()},
        "containers": {p: {k: (v, copy.copy(v)) for k, v in m.__dict__.items() if isinstance(v, (dict, set, list))}
                       for p, m in mods.items()},
        "tensors": {(p, k): (v, v._version, v.detach().clone()) for p, m in mods.items()
                    for k, v in [*m.__dict__.items(), *m._buffers.items(), *m._parameters.items()]
                    if isinstance(v, torch.Tensor)},
        "state_keys": list(model.state_dict()),
    }


def assert_unchanged(model: nn.Module, before: dict) -> None:
    mods = dict(model.named_modules(remove_duplicate=False))
    assert mods.keys() == before["dict"].keys()
    for p, m in mods.items():
        d, items = before["dict"][p]
        assert m.__dict__ is d and list(m.__dict__) == list(items), p        # no attribute added or removed
        for k, v in items.items():                                           # none rebound
            assert m.__dict__[k] is v, (p, k, type(m.__dict__[k]))
        assert "forward" not in m.__dict__
        for k, (obj, contents) in before["containers"][p].items():           # no list/dict/set changed in place
            assert m.__dict__[k] is obj, (p, k)
            if isinstance(obj, set):
                assert obj == contents, (p, k)
            elif isinstance(obj, dict):
                assert list(obj) == list(contents) and all(obj[n] is contents[n] for n in obj), (p, k)
            else:
                assert len(obj) == len(contents) and all(a is b for a, b in zip(obj, contents)), (p, k)
    for (p, k), (t, version, value) in before["tensors"].items():           # no tensor changed in place
        assert t._version == version and torch.equal(t.detach(), value), (p, k)
    assert list(model.state_dict()) == before["state_keys"]
    for p, m in mods.items():
        assert not any(isinstance(v, fx.Proxy) for v in m.__dict__.values()), p


def torch_roundtrip(module):
    """``module`` saved with ``torch.save`` and loaded back (the whole module, not its state_dict)."""
    buf = io.BytesIO()
    torch.save(module, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=False)


def pickle_roundtrip(module):
    return pickle.loads(pickle.dumps(module))


#: the ways a user copies a module: each returns the copy
COPIES = {"copy": copy.copy, "deepcopy": copy.deepcopy, "pickle": pickle_roundtrip, "torch.save": torch_roundtrip}


#: the report's reason for an op no gradient reaches (passes/_plan.py ``_NO_GRADIENT``)
NO_GRADIENT = ("no gradient reaches its input (computed under torch.no_grad(), after .detach(), from buffers "
               "and constants alone, or from values that carry none: random draws, *_like/new_* tensors, "
               "indices, integers): no gradient to give, left hard")


class Fn(nn.Module):
    """``fn(x)`` as a module (the one-line models several test modules linearize)."""

    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, x):
        return self.fn(x)

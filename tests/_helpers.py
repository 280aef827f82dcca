"""Assertions and graph queries several test modules share (``from _helpers import ...``)."""

import torch
from torch import fx

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

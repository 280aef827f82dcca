"""Readers of graph nodes for the tie check: functions of a node and its arguments, with no state of the check's
(``Ties``): an op's name and first operand (``_name``, ``_first``, ``_keeps``), views and in-place writes (``_viewed``,
``_viewed_attribute``, ``_views_before``, ``_written_value``, ``_attribute``, ``_fixed_dims``), aliases and
hand-written straight-through values (``_tensor_of``, ``_of_itself``, ``_straight_through``,
``_left_by_detached_copies``), two values 0 together only at one point (``_disjoint``), and the parts of ops (``_put``,
``_branches``, ``_difference``, ``_taken``, ``_order_statistic_values``, ``_reduced_along``).

The check itself is :class:`_ties.Ties`; that module's docstring says where the rest is.
"""

from __future__ import annotations

import functools
import operator
from typing import Callable

import torch
from torch import nn
from torch.ao.quantization import FakeQuantizeBase
from torch.fx import Node

from sll_fx import dtypes, rules
from sll_fx.grad_regions import detached

from ._grids import _number
from ._patterns import _arg, _order_statistic_of, _same_value, _uncopied
from ._spellings import _target_name
from ._tie_ops import (_EXTREMA, _KEEPING_REDUCTIONS, _KEEP_VALUES, _MAX_POOLS, _ORDER_STATISTICS_OF_MANY,
                       _ORDER_STATISTICS_OF_ONE, _PUTS, _SUMS, _VIEWS, _VIEW_DEPTH)
from ._uses import _mutated, _writes_first


def _fake_quantizer(module) -> bool:
    """Is ``module`` a torch.ao fake quantizer (fake quantization on or off: a warm-up turns it on later)?"""
    return isinstance(module, FakeQuantizeBase)


def _operands_down(t: Node, depth: int) -> list:
    """``t`` and, ``depth`` deep, the operand each call in turn reads (its first argument, or the second after a
    number, ``0.5 * v``), while there is one node to follow: the values a term of a sum may be an elementwise function
    of (:meth:`_tie_values._RangeValues._on_points`)."""
    chain = [t]
    for _ in range(depth):
        if t.op != "call_function" and t.op != "call_method" or not (args := t.args):
            break
        u = args[0]
        if not isinstance(u, Node) and len(args) == 2 and _number(u):
            u = args[1]
        if not isinstance(u, Node):
            break
        chain.append(t := u)
    return chain


def _difference(name: str, node: Node, alpha) -> tuple | None:
    """``(a, b)`` for a node computing ``a - b``: ``a - b``, ``a + (-b)``, ``-b + a``, ``torch.add(a, b, alpha=-1)``."""
    a, b = node.args[:2]
    if name == "sub" and alpha == 1:
        return a, b
    if name != "add":
        return None
    if alpha == -1:
        return a, b
    if alpha == 1:
        for x, y in ((a, b), (b, a)):
            if isinstance(y, Node) and _name(y) == "neg":
                return x, _first(y)
    return None


def _factor_of(node) -> tuple:
    """``(v, k)`` where ``node`` is ``v * k`` or ``k * v`` (``k`` a Python number: one product) or ``-v`` (``k`` -1),
    else ``(node, 1.0)``.  Two such terms of one ``v`` with ``k`` and ``-k`` add up to 0 exactly: float32 rounds
    ``-k * v`` to ``-(k * v)``."""
    name = _name(node) if isinstance(node, Node) else None
    if name == "neg" and len(node.args) == 1 and not node.kwargs:
        return node.args[0], -1.0
    if name == "mul" and len(node.args) == 2 and not node.kwargs:
        a, b = node.args
        if _number(b) and isinstance(a, Node):
            return a, float(b)
        if _number(a) and isinstance(b, Node):
            return b, float(a)
    return node, 1.0


def _factors_of(node, depth: int = 4) -> tuple:
    """:func:`_factor_of` through products of products with numbers, ``depth`` deep: ``(x * 3) * 5`` is ``(x, 15.0)``.
    Two such terms of one ``v`` with ``k`` and ``-k`` add up to 0 where float32 rounds both alike (most inputs, not
    all: ``(x * 3) * 5 - x * 15``), not exactly as one product each."""
    k = 1.0
    for _ in range(depth):
        v, c = _factor_of(node)
        if v is node:
            break
        node, k = v, k * c
    return node, k


def _added(a, b, copies: bool = False):
    """The other operand of ``a`` where ``a`` is ``other + b`` (either order), else None.  ``copies``: an operand
    that is a copy of ``b`` counts as ``b`` (:func:`_uncopied`; in a graph that writes nothing in place)."""
    if not isinstance(a, Node) or _name(a) != "add" or len(a.args) < 2 or a.kwargs:
        return None
    u, v = (_uncopied(w) for w in a.args[:2]) if copies else a.args[:2]
    return v if u is b else u if v is b else None


def _put(name: str, node: Node):
    """The value an op of :data:`_PUTS` puts in (a number, a node), or None (one that accumulates: ``scatter``'s
    ``reduce``, ``index_put``'s ``accumulate``)."""
    if name == "scatter":
        return _arg(node, 3, "src", _arg(node, 3, "value")) if "reduce" not in node.kwargs and len(node.args) < 5 \
            else None
    if name == "index_put" and _arg(node, 3, "accumulate", False) is not False:
        return None
    return _arg(node, *_PUTS[name])


def _viewed_attribute(node, copies: set | None = None) -> str | None:
    """The target of the tensor attribute ``node`` is, or is a view of (``self.zp[0]``), or, given the graph's written
    nodes as ``copies``, a copy of that nothing writes (``self.zp.clone()``: the same values; a write to it is not a
    write of the attribute), else None."""
    for _ in range(_VIEW_DEPTH):
        if not isinstance(node, Node):
            return None
        if node.op == "get_attr":
            return node.target
        if _name(node) not in _VIEWS and not (copies is not None and _name(node) in ("clone", "contiguous") and
                                               node not in copies):
            return None
        node = _first(node)
    return None


def _viewed(node):
    """``node`` and the nodes it is a view of, outwards (``c[0]``, ``c``, up to a node no view makes; an in-place
    call's result is what it wrote into: ``t.add_(h).relu_()`` writes ``t``)."""
    for _ in range(_VIEW_DEPTH):
        if not isinstance(node, Node):
            return
        yield node
        if _name(node) not in _VIEWS and not _mutated(node):
            return
        node = _first(node)


def _less_its_extremum(node: Node) -> Node | None:
    """The reduction ``r`` of ``x`` where ``node`` is ``x - r`` or ``r - x`` and ``r`` one of ``x``'s elements (its
    minimum, maximum, a top-k value: ``_order_statistic_of``): ``node`` is exactly 0 on that element, in every row
    (a min-max normalisation, ``(x - x.min(-1, keepdim=True).values) / (x.max(...) - x.min(...))``), else None."""
    if _name(node) != "sub" or len(node.args) != 2 or node.kwargs or not all(isinstance(a, Node) for a in node.args):
        return None
    x, r = node.args
    return _order_statistic_of(r, x) or _order_statistic_of(x, r)


def _views_before(node: Node, at: int, order: dict) -> list[Node]:
    """The views of ``node`` (and theirs) made before graph position ``at``: they share its storage, so a write to
    ``node`` there changes them too (``q.view(-1, 8)``, ``q[:]``, ``q.unsqueeze(0)``, ``q.t()``; not ``q[idx]`` of a
    tensor index, a copy)."""
    found, todo = [], [(node, 0)]
    while todo:
        v, depth = todo.pop()
        for u in v.users:
            if depth < _VIEW_DEPTH and order.get(u, at) < at and _first(u) is v and _name(u) in _VIEWS and \
                    not (_name(u) == "getitem" and _advanced_index(u.args[1] if len(u.args) > 1 else None)):
                found.append(u)
                todo.append((u, depth + 1))
    return found


def _advanced_index(index) -> bool:
    """Does the index ``index`` (of ``h[index]``) pick elements by a tensor or a list (a copy, not a view)?"""
    parts = index if isinstance(index, tuple) else (index,)
    return any(isinstance(p, (Node, list)) for p in parts)


def _fixed_dims(put: Node, base: Node) -> tuple[int, ...]:
    """The dims of ``base`` along which ``put`` (a put, or an in-place write) puts its value at one index only, as
    written (counted from the front, or from the end after an Ellipsis): ``(1,)`` for ``base[:, 0].fill_(c)``, ``(-1,)``
    for ``base[..., 0] = c``, the dim of an ``index_fill`` of one index; ``()`` where it is not known (a write through
    another view of ``base``: ``base.t()[:, 0]``)."""
    name = _name(put)
    if name == "setitem":
        return _index_dims(put.args[1]) if len(put.args) > 2 and put.args[0] is base else ()
    if name in ("index_fill", "index_copy"):
        dim, index = _arg(put, 1, "dim"), _arg(put, 2, "index")
        one = isinstance(index, Node) and index.op == "get_attr" and getattr(_attr_value(index), "numel",
                                                                             lambda: 0)() == 1
        return (dim,) if one and _first(put) is base and isinstance(dim, int) and not isinstance(dim, bool) else ()
    target = put.args[0] if put.args else None  # (a write through a view of base itself: base[:, 0].fill_(1.0))
    if not isinstance(target, Node) or _first(target) is not base:
        return ()
    if _name(target) == "getitem" and len(target.args) > 1:
        return _index_dims(target.args[1])
    if _name(target) == "select":
        dim = _arg(target, 1, "dim")
        return (dim,) if isinstance(dim, int) and not isinstance(dim, bool) else ()
    return ()


def _index_dims(index) -> tuple[int, ...]:
    """The dims an index (``[:, 0]``, ``[..., 1]``, ``[0]``) fixes with an int, counted from the front, or from the end
    after an Ellipsis; ``()`` for an index of anything else (a tensor, a bool)."""
    items = index if isinstance(index, tuple) else (index,)
    if not all(i is None or i is Ellipsis or isinstance(i, slice) or isinstance(i, int) and not isinstance(i, bool)
               for i in items) or sum(i is Ellipsis for i in items) > 1:
        return ()
    cut = items.index(Ellipsis) if Ellipsis in items else len(items)
    front = [i for i in items[:cut] if i is not None]  # (None adds a dim of the result, not of base)
    back = [i for i in items[cut + 1:] if i is not None]
    return tuple(d for d, i in enumerate(front) if isinstance(i, int)) + \
        tuple(d - len(back) for d, i in enumerate(back) if isinstance(i, int))


def _first_node(node: Node) -> Node | None:
    """The first of ``node``'s arguments that is a node (``m`` for ``2.0 * m``), else None."""
    return next((a for a in node.args if isinstance(a, Node)), None)


def _attr_value(node: Node):
    """The tensor a ``get_attr`` node reads (fx's ``_tensor_constant`` of ``torch.tensor([0])`` in forward)."""
    module = node.graph.owning_module
    return dtypes.fetch_attr(module, node.target) if module is not None else None


def _meta_like(value) -> torch.Tensor | None:
    """An empty meta tensor of ``value``'s shape, strides and dtype (a tensor of static shape), else None."""
    if not isinstance(value, torch.Tensor) or not all(isinstance(d, int) for d in (*value.shape, *value.stride())):
        return None
    return torch.empty_strided(value.shape, value.stride(), dtype=value.dtype, device="meta")


def _written_value(writer: Node):
    """What an in-place write leaves in its target: ``copy_``'s and ``fill_``'s value, 0 for ``zero_``, else the
    writing op's own result (``torch.round(z, out=zp)``, ``zp.round_()``)."""
    name = _name(writer)
    if name in ("copy", "fill") and len(writer.args) > 1:  # (Tensor.fill_, aten.fill_.Scalar, aten.copy_.default)
        return writer.args[1]
    if name == "zero" or name == "mul" and any(_number(a) and a == 0 for a in writer.args[1:2]):  # (h.mul_(0))
        return 0.0
    return writer


def _attribute(node: Node) -> str | None:
    """The target of the tensor attribute ``node`` is, or is a view or cast of (``self.scale.to(x.dtype)``)."""
    for _ in range(_VIEW_DEPTH):
        if not isinstance(node, Node):
            return None
        if node.op == "get_attr":
            return node.target
        if not node.args:
            return None
        node = node.args[0]
    return None


def _disjoint(a, b, ties_at: Callable | None = None, sources: bool = False) -> bool:
    """Are ``a`` and ``b`` 0 together only where one value is at one number: clamps at 0 of a value and of its negative
    (``relu(h)``, ``relu(-h)``; ``clamp(h, max=0)``, ``-h.clamp(min=0)``), scaled by positive numbers (a leaky relu
    written as ``relu(h) - 0.01 * relu(-h)``), and masks of a value against one number from either side (``(h > 0)``,
    ``(h <= 0)``: a leaky relu written as ``h * (h > 0) + 0.1 * h * (h <= 0)``, a57)?  Where both are 0 at that
    point (``relu(v)``, ``relu(-v)`` at ``v == 0``; ``v > t``, ``v < t`` at ``v == t``), ``ties_at(v, t)`` says whether
    ``v`` sits at it on whole ranges (``v = relu(k)``): then they are 0 together there; without it, not disjoint.
    ``sources``: ``a`` and ``b`` are the ops that make values 0 (:meth:`Ties._of_two`), so a ``where`` with a 0 branch
    counts by its condition (``where(h > 0, h, 0.0)``: 0 for ``h <= 0``; its other branch's zeros are sources of their
    own)."""
    def side(node):  # ((v, t), +1 where node is 0 for v below t, -1 above; whether at t too), or (None, 0, False)
        node, _ = _unsigned(node)  # (outside the clamp: c * relu(v), -relu(v))
        for _ in range(3):  # (a mask's casts: (h > 0).float())
            if isinstance(node, Node) and _name(node) in _MASK_CASTS and not node.kwargs:
                node = _first(node)
        if not isinstance(node, Node):
            return None, 0, False
        name = _name(node) if node.op != "call_module" else _module_name(node)
        if sources and name == "where" and len(node.args) == 3 and not node.kwargs and isinstance(node.args[0], Node) and \
                sum(_number(b) and b == 0 for b in node.args[1:]) == 1:  # (where(h > 0, h, 0.0): 0 where its
            u, s, closed = side(node.args[0])                              # condition picks the 0)
            return (u, s, closed) if node.args[2] == 0 else (u, -s, not closed) if u is not None else (None, 0, False)
        if name in _BELOW_OR_ABOVE and len(node.args) == 2 and isinstance(node.args[0], Node) and \
                _number(node.args[1]):  # (h > t: 0 where h <= t; h >= t: where h < t, not at t)
            return (node.args[0], float(node.args[1])), *_BELOW_OR_ABOVE[name]
        low, high = ((0, None) if name == "relu" else (_arg(node, 1, "min"), _arg(node, 2, "max"))
                     if name in ("clamp", "clip") else (_arg(node, 1, "min"), None) if name == "clamp_min"
                     else (None, _arg(node, 1, "max")) if name == "clamp_max" else (1, 1))
        if (low, high) == (0, None):  # (inside: relu(-v), relu(-1 * v), relu(0 - v), relu(v * 2))
            v, sign = _unsigned(_first(node), 1, minus=True)
            return (v, 0.0), sign, True
        if (low, high) == (None, 0):  # (clamp(v, max=0) = -relu(-v): 0 where v >= 0)
            v, sign = _unsigned(_first(node), -1, minus=True)
            return (v, 0.0), sign, True
        return None, 0, False
    (u, s, closed), (v, r, closed_too) = side(a), side(b)
    if u is None or v is None or u[0] is not v[0] or u[1] != v[1] or s != -r:
        return False
    return not (closed and closed_too) or ties_at is not None and not ties_at(*u)


#: comparisons of a value with a number -> (+1 where their 0 is below it, -1 above; whether at the number too):
#: h > t is 0 for h <= t, h >= t for h < t
_BELOW_OR_ABOVE = {"gt": (1, True), "ge": (1, False), "lt": (-1, True), "le": (-1, False)}
#: casts of a 0/1 mask that keep its 0
_MASK_CASTS = frozenset(("float", "to", "type_as", "double", "half", "bfloat16", "_to_copy"))


def _straight_through(node: Node, name_of: Callable[[Node], str | None],
                      written: Callable[[Node], bool] | None = None):
    """The hard value ``r`` of a hand-written straight-through estimator ``(r - x).detach() + x`` (or ``x + (r -
    x).detach()``, ``x - (x - r).detach()``), which holds ``r``'s values (``(r - x) + x`` is ``r`` exactly where ``x``
    and ``r`` are within a factor of 2, and at ``r == 0``); ``r`` plus (less) ``x - x.detach()``, 0 exactly (``r`` a
    sum itself, ``v + p + (v - v.detach())``, which :func:`_left_by_detached_copies` opens); else None.  ``name_of``:
    :func:`_name` (a memo of it, :meth:`Ties._name_of`)."""
    name = name_of(node)
    args = node.args
    if name not in _SUMS or len(args) != 2 or node.kwargs:
        return None
    for a in args:  # (a loop, each term's name read once: this runs on every sum of an inert term, _tie_inert)
        if isinstance(a, Node) and ((a_name := name_of(a)) in _SUMS or a_name == "detach" or
                                    a.target is getattr and a.args[1:] == ("data",)):
            break
    else:
        return None  # (two terms, neither a sum, a detach nor .data: none held, nothing cancels, as below)
    for held, x in (args[::-1], args) if name == "add" else ((args[1], args[0]),):
        if isinstance(held, Node) and name_of(held) == "detach" and isinstance(diff := _first(held), Node) and \
                name_of(diff) == "sub" and len(diff.args) == 2 and not diff.kwargs:
            r, other = diff.args if name == "add" else diff.args[::-1]
            if (other is x or written is None and _uncopied(other) is _uncopied(x)) and isinstance(r, Node):
                return r  # (a copy of x, in a graph that writes nothing in place: (r - x.clone()).detach() + x)
    for held, zero in (args, args[::-1]) if name == "add" else (args,):  # (b + (a - a.detach()): b, whatever b is)
        if isinstance(zero, Node) and name_of(zero) == "sub" and _less_its_detached_copy(zero, name_of, written) and \
                isinstance(held, Node):
            return held
    return _left_by_detached_copies(node, name_of, written)


def _less_its_detached_copy(v: Node, name_of: Callable[[Node], str | None],
                            written: Callable[[Node], bool] | None) -> bool:
    """Is ``v``, a ``sub``, ``a - a.detach()`` (or ``a - a.data``): 0 exactly, ``a`` not ``written`` in place?"""
    if len(v.args) != 2 or v.kwargs:
        return False
    a, d = v.args
    if not isinstance(d, Node) or not (name_of(d) == "detach" or d.target is getattr and d.args[1:] == ("data",)):
        return False
    copied = d.args[0] if d.args else _first(d)
    return isinstance(a, Node) and (copied is a if written is not None else _uncopied(copied) is _uncopied(a)) and \
        (written is None or not written(a))  # (a copy of a, in a graph that writes nothing: a.clone() - a.detach())


def _left_by_detached_copies(node: Node, name_of: Callable[[Node], str | None],
                             written: Callable[[Node], bool] | None) -> Node | None:
    """The one value left of a sum whose other terms cancel against their detached copies (``r.detach() + h -
    h.detach()``, ``h - h.detach() + r``, ``h.data``), read through ``detach`` and sums (``(a + b).detach()``), a call
    written twice counting as one (``sign(x).detach() + hardtanh(x) - hardtanh(x).detach()``, only where the graph
    writes nothing in place, ``written`` None): it holds that value (to a few ulps: ``(r + h) - h``), else None.  None
    where a term is ``written`` in place (its node's value would not be what the sum reads).  ``name_of``: :func:`_name`
    (a memo of it)."""
    signs: dict[Node, int] = {}
    todo = [(node, 1)]
    while todo and len(signs) <= 8:
        v, sign = todo.pop()
        while isinstance(v, Node) and (name_of(v) == "detach" or v.target is getattr and v.args[1:] == ("data",)):
            v = v.args[0] if v.args else _first(v)
        if not isinstance(v, Node) or written is not None and written(v):
            return None  # (a number: r + 0.5 + h - h.detach() is not read here)
        if name_of(v) in _SUMS and len(v.args) == 2 and not v.kwargs:
            todo += [(v.args[0], sign), (v.args[1], sign if name_of(v) == "add" else -sign)]
            continue
        if written is None:
            v = next((u for u in signs if _same_value(u, v)), v)
        signs[v] = signs.get(v, 0) + sign
    left = [v for v, sign in signs.items() if sign]
    return left[0] if not todo and len(signs) > 1 and len(left) == 1 and signs[left[0]] == 1 else None


def _tensor_of(v):
    """The node whose tensor ``v`` is, the same object or an alias of all of it: through ``detach`` and ``.data``,
    and in-place calls, which return their first operand (``h.clamp_(0, 1)``, ``torch.relu_(h)``)."""
    for _ in range(8):
        if not isinstance(v, Node) or not v.args or not isinstance(v.args[0], Node):
            return v
        if _name(v) == "detach" or v.target is getattr and v.args[1:] == ("data",) or \
                v.op in ("call_method", "call_function") and _writes_first(v.op, v.target) and not v.kwargs.get("out"):
            v = v.args[0]
        else:
            return v
    return v


def _of_itself(v):
    """``v`` less the copies (:func:`_uncopied`) and the extrema of a tensor with itself around it (``maximum(x, x)``,
    ``minimum(x, x.detach())``, ``maximum(x, x.clone())``: ``x``, out of place: the same values where nothing is written
    in place between), else ``v``."""
    for _ in range(8):
        v = _uncopied(v)
        if not isinstance(v, Node) or _name(v) not in _EXTREMA or len(v.args) != 2 or v.kwargs or \
                _uncopied(v.args[0]) is not _uncopied(v.args[1]) or not isinstance(v.args[0], Node):
            return v
        v = v.args[0]
    return v


def _unsigned(node, sign: int = 1, minus: bool = False) -> tuple:
    """``node`` without the negations and non-zero factors around it (``-v``, ``-1 * v``, ``v * 2``; ``minus``: ``0 -
    v`` too), and the sign they leave on it."""
    for _ in range(4):
        name = _name(node) if isinstance(node, Node) else None
        if name == "neg":
            node, sign = _first(node), -sign
        elif name == "mul" and len(node.args) == 2 and any(_number(v) and v for v in node.args):
            c = next(v for v in node.args if _number(v))
            node, sign = next(v for v in node.args if not _number(v)), sign * (1 if c > 0 else -1)
        elif minus and name == "sub" and len(node.args) == 2 and _number(node.args[0]) and node.args[0] == 0:
            node, sign = node.args[1], -sign
        else:
            break
    return node, sign


def _taken(name: str, a, b) -> tuple:
    """The operands a ``maximum``/``minimum`` of ``a`` and ``b`` may take: both, but for ``x`` and ``floor(x)`` in a
    maximum (``floor(x) <= x``: ``x``), ``x`` and ``ceil(x)`` in a minimum."""
    below = "floor" if name in ("maximum", "fmax") else "ceil"
    for x, r in ((a, b), (b, a)):
        if isinstance(r, Node) and _name(r) == below and len(r.args) == 1 and not r.kwargs and _first(r) is x:
            return (x,)
    return a, b


def _order_statistic_values(node: Node) -> Node | None:
    """The reduction whose values ``node`` takes (``x.max(-1)[0]``, ``.values`` of ``x.topk(2)``, ``kthvalue``,
    ``median``, ``sort``, ``cummax``: each an element of ``x``), else None (their indices: integers)."""
    if node.op != "call_function" or len(node.args) != 2 or not isinstance(reduced := node.args[0], Node) or not (
            node.target is operator.getitem and node.args[1] == 0 or node.target is getattr and node.args[1] == "values"):
        return None
    return reduced if _name(reduced) in _ORDER_STATISTICS_OF_ONE | _ORDER_STATISTICS_OF_MANY and \
        isinstance(_first(reduced), Node) else None


def _reduced_along(node: Node, dim: int) -> bool:
    """Is ``node`` a reduction over ``dim`` (the same number) that keeps it as a dim of 1 (``h.mean(-1,
    keepdim=True)``, ``h.max(-1, keepdim=True).values``): one value for each row along ``dim``?"""
    if (statistic := _order_statistic_values(node)) is not None:
        node = statistic
    if node.op not in ("call_function", "call_method") or _name(node) not in _KEEPING_REDUCTIONS:
        return False
    reduced = _arg(node, 1, "dim")
    reduced = reduced[0] if isinstance(reduced, (list, tuple)) and len(reduced) == 1 else reduced
    return _arg(node, 2, "keepdim", False) is True and isinstance(reduced, int) and not isinstance(reduced, bool) \
        and reduced == dim


def _first(node: Node):
    """An op's first operand (also given as ``input=``)."""
    args = node.args
    return args[0] if args else node.kwargs.get("input", node.kwargs.get("self"))


def _name(node: Node) -> str | None:
    """The op's name, without an in-place op's trailing underscore (``round_``, ``add_``); casts by their method."""
    op = node.op
    if op not in ("call_function", "call_method") or _first(node) is None:
        return None
    t = node.target
    if t is getattr and len(node.args) == 2 and node.args[1] in ("T", "mT", "H", "mH", "data"):
        return "t"  # (x.T: a view)
    try:
        name, stripped = _target_names(op, t)
    except TypeError:  # (an unhashable callable)
        name, stripped = _target_names.__wrapped__(op, t)
    if name in ("max", "min") and isinstance(_arg(node, 1, "other", None), Node):  # (torch.max(a, b): of two tensors)
        return "maximum" if name == "max" else "minimum"
    return stripped


@functools.lru_cache(maxsize=1024)  # (a graph calls few targets, many times)
def _target_names(op: str, t) -> tuple:
    """What :func:`_name` reads of a call's target alone: its name before and after the trailing underscore goes."""
    if op == "call_function" and t is detached:  # (a no-grad region's detach)
        return "detach", "detach"
    name = t if op == "call_method" and t in rules.FLOAT_CASTS else _target_name(op == "call_method", t)
    if name and name.startswith("__") and name.endswith("__"):  # (h.__setitem__(m, v), t.__getitem__(0))
        name = name[2:-2]
    name = _IN_PLACE_OPERATORS.get(name, name)  # (operator.iadd, h.__iadd__(1): add, written in place)
    return name, (name.rstrip("_") if name and not name.startswith("_") else name)


def _module_name(node: Node) -> str | None:
    """``relu`` for a call of an ``nn.ReLU`` module (``self.act(h)``), else None."""
    owner = node.graph.owning_module
    try:
        module = owner.get_submodule(node.target) if owner is not None else None
    except AttributeError:
        return None
    return "relu" if type(module) is nn.ReLU else None


#: Python's in-place operators -> the op they compute
_IN_PLACE_OPERATORS = {"iadd": "add", "isub": "sub", "imul": "mul", "itruediv": "truediv"}


def _keeps(name: str, node: Node) -> bool:
    """Does the op pass on values its input had (views, copies, casts, selections, max pooling)?"""
    if name in ("interpolate", "upsample"):
        return _arg(node, 3, "mode", "nearest") == "nearest"
    return name in _KEEP_VALUES or name.startswith(_MAX_POOLS)


def _branches(node: Node) -> tuple:
    """``torch.where(c, a, b)``'s and ``a.where(c, b)``'s branches."""
    if node.op == "call_function":
        return _arg(node, 1, "input"), _arg(node, 2, "other")
    return node.args[0], _arg(node, 2, "other")

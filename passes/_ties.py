"""Which values a node takes on whole ranges of inputs: a comparison's ties.

SLL's surrogate of ``x > t`` is 1/2 at ``x == t`` at every eps.  For a continuous ``x`` that is a
null set; but ``round(x) > 0`` has ``round(x) == 0`` for every ``x`` in (-0.5, 0.5), and
``F.relu(x) > 0`` has ``relu(x) == 0`` for every ``x <= 0``: rewritten, such a comparison gives 1/2
there, never the model's 0/1.  The planner leaves it hard (``_Planner._plan_comparison``), with a
reason from :func:`Ties.of`:

- a **grid**: values ``offset + step * k`` only (:class:`Grid`), each taken on whole ranges (a rounded
  value, a count, an integer or bool tensor, ``round(x / s) * s``, sums of them); ``sign`` is the grid
  ``1 + 2k`` (its 0 is a single point), so ``sign(x) > 0`` has no ties but ``sign(a) + sign(b) > 0`` has;
- a **constant** an op takes on a whole range (``relu``'s 0, a clamp's bounds, a ``where`` or
  ``masked_fill`` constant, a constant pad), through views, casts, max pooling and arithmetic with a
  number (``relu(x) * 2 > 0``);
- at 0, a **product** with a factor that is 0 on whole ranges (``x * mask > 0``, ``x * round(w) > 0``).

Outside the bands of rewritten ops upstream the values are exact (a rewritten ``round`` is whole
outside its bands), which is what the grids describe.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Callable

import torch
from torch import nn
from torch.fx import GraphModule, Node

from sll_fx import dtypes, rules

from ._patterns import _THROUGH, _arg
from ._spellings import _op_name


@dataclass(frozen=True)
class Grid:
    """Values ``offset + step * k`` (``k`` whole) only, each on whole ranges of inputs; ``source``: the op they come
    from (``round``, ``sign``, an integer tensor).  ``scale``: a tensor they are multiplied by (``round(x / s) * s``
    with ``s`` a parameter: the node ``s``), or None; such grids add up only with the same scale, and hit only 0."""

    offset: float
    step: float
    source: Node
    scale: Node | None = None

    def hits(self, t: float) -> bool:
        if self.scale is not None and t != 0:  # (s * (o + step * k): 0 where o + step * k is; other values unknown)
            return False
        return _multiple((t - self.offset) / self.step)

    def times(self, number: float) -> Grid | None:
        return replace(self, offset=self.offset * number, step=self.step * abs(number)) if number else None

    def plus(self, number: float) -> Grid | None:
        return replace(self, offset=self.offset + number) if self.scale is None else None

    def describe(self) -> str:
        offset = self.offset % self.step
        offset = 0.0 if _multiple(offset / self.step) else offset  # (-1 on the grid of step 1: whole numbers)
        what = ("whole numbers" if offset == 0 and self.step == 1 else f"multiples of {self.step:g}" if offset == 0
                else f"the values {offset:g} + {self.step:g}k")
        return what if self.scale is None else f"{what} times '{self.scale.name}'"


@dataclass(frozen=True)
class Tie:
    """Why an input takes a threshold's value on whole ranges: ``source`` (the op), ``grid`` (the values it takes), or
    None for a constant an op takes (``relu``'s 0) or a product with a factor that is 0 there."""

    source: Node
    grid: Grid | None = None


class Ties:
    """The ties of the comparisons of the graph of ``gm``.  ``is_int(node)``: is the node's dtype integer or bool
    (inferred)."""

    def __init__(self, gm: GraphModule, is_int: Callable[[Node], bool]):
        self.gm, self.is_int = gm, is_int
        self._grids: dict[Node, Grid | None] = {}

    # -- the question the planner asks --------------------------------------------------------------
    def of(self, x, t) -> Tie | None:
        """Does ``x`` equal ``t`` (a number, or a node: a computed threshold) on whole ranges of inputs?"""
        if isinstance(t, Node):  # (both on grids whose difference has 0: pos <= cap, counts against a count)
            g, h = self.grid(x), self.grid(t)
            if g is None or h is None or g.scale is not h.scale:
                return None
            step = _common_step(g.step, h.step)
            return Tie(g.source, g) if step is not None and _multiple((g.offset - h.offset) / step) else None
        return self._ties(x, t, 8) if _number(t) else None

    def _ties(self, node, t: float, depth: int) -> Tie | None:
        if not isinstance(node, Node) or depth == 0:
            return None
        g = self.grid(node)
        if g is not None and g.hits(t):
            return Tie(g.source, g)
        if node.op == "call_module":
            module = self._module_of(node)
            if module is None:
                return None
            if t in _module_constants(module):
                return Tie(node)
            return self._ties(node.args[0], t, depth - 1) if _keeps_values(module) and node.args else None
        name = _name(node)
        if name is None:
            return None
        args = node.args
        if t in _constants(name, node):
            return Tie(node)
        if name in _KEEP_VALUES or name.startswith(_MAX_POOLS):
            return self._ties(args[0], t, depth - 1)
        if name == "neg":
            return self._ties(args[0], -t, depth - 1)
        if name == "abs":
            return (self._ties(args[0], t, depth - 1) or self._ties(args[0], -t, depth - 1)) if t >= 0 else None
        if name in ("relu", "clamp", "clip", "clamp_min", "clamp_max", "hardtanh", "relu6"):  # (between its bounds:
            low, high = _bounds(name, node)  # its input's value)
            inside = (low is None or low < t) and (high is None or t < high)
            return self._ties(args[0], t, depth - 1) if inside else None
        if name in ("where", "masked_fill"):  # (where its condition picks a branch that ties)
            branches = _branches(node) if name == "where" else args[:1]
            return next((f for b in branches if (f := self._ties(b, t, depth - 1)) is not None), None)
        number, other = _number_and_node(args)
        if name == "mul":
            if number is not None and number != 0:
                return self._ties(other, t / number, depth - 1)
            if t == 0 and number is None:  # (0 where a factor is 0 on whole ranges)
                found = next((f for a in args[:2] if (f := self._ties(a, 0, depth - 1)) is not None), None)
                return Tie(found.source) if found is not None else None
        if name in ("div", "true_divide", "truediv") and isinstance(args[0], Node):
            if number is not None and number != 0:
                return self._ties(args[0], t * number, depth - 1)
            if t == 0 and number is None:
                found = self._ties(args[0], 0, depth - 1)
                return Tie(found.source) if found is not None else None
        if name in ("add", "sub") and number is not None and other is not None and not node.kwargs:
            if name == "add":
                return self._ties(other, t - number, depth - 1)
            return self._ties(other, t + number if args[0] is other else number - t, depth - 1)
        return None

    # -- grids ---------------------------------------------------------------------------------------
    def grid(self, node) -> Grid | None:
        """The grid ``node``'s values lie on (outside the bands of rewritten ops upstream), else None."""
        if not isinstance(node, Node):
            return None
        if node not in self._grids:
            self._grids[node] = None  # (a cycle: none)
            self._grids[node] = self._grid(node, 8)
        return self._grids[node]

    def _grid(self, node: Node, depth: int) -> Grid | None:
        if node.op == "call_method" and node.target in _INT_CASTS and node.args:  # (w.sign().int(): the sign's)
            found = self.grid(node.args[0])
            if found is not None:
                return found
        if self.is_int(node) or node.op == "get_attr" and _whole_tensor(dtypes.fetch_attr(self.gm, node.target)):
            return Grid(0.0, 1.0, node)
        if depth == 0:
            return None
        if node.op == "call_module":
            module = self._module_of(node)
            return self.grid(node.args[0]) if module is not None and _keeps_values(module) and node.args else None
        name = _name(node)
        if name is None:
            return None
        args = node.args
        if name in _WHOLE_OPS:
            decimals = _arg(node, 1, "decimals", 0) if name == "round" else 0
            if not isinstance(decimals, int) or abs(decimals) > 15:
                return None
            return Grid(0.0, 10.0 ** -decimals, node)
        if name == "sign":
            return Grid(1.0, 2.0, node)  # (+-1: its 0 is a single point)
        if name in _KEEP_VALUES or name.startswith(_MAX_POOLS):
            return self.grid(args[0])
        if name in ("relu", "clamp", "clip", "clamp_min", "clamp_max", "maximum", "minimum", "fmax", "fmin"):
            g = self.grid(args[0])  # (its bounds on the grid: still on it)
            bounds = [b for b in (_bounds(name, node) if name not in ("maximum", "minimum", "fmax", "fmin")
                                  else (args[1],)) if b is not None]
            if g is None or not all(g.hits(b) if _number(b) else (h := self.grid(b)) is not None and
                                    _on(h, g) for b in bounds):
                return None
            return g
        if name == "neg":
            g = self.grid(args[0])
            return g.times(-1) if g is not None else None
        if name == "abs":
            g = self.grid(args[0])  # (|o + sk| is on the grid when -o is)
            return g if g is not None and _multiple(2 * g.offset / g.step) else None
        number, other = _number_and_node(args)
        if name == "mul" and len(args) > 1:
            if number is not None:
                g = self.grid(other)
                return g.times(number) if g is not None else None
            g, h = self.grid(args[0]), self.grid(args[1])
            if g is not None and h is not None:
                return _product(g, h)
            if (g is None) == (h is None):
                return None
            grid, factor = (g, args[1]) if g is not None else (h, args[0])  # (round(x / s) * s: scaled by s)
            return replace(grid, scale=factor) if grid.scale is None else None
        if name in ("div", "true_divide", "truediv"):
            g = self.grid(args[0]) if number is not None and other is args[0] else None
            return g.times(1 / number) if g is not None and number else None
        if name in ("add", "sub") and len(args) > 1:
            alpha = node.kwargs.get("alpha", 1)
            if not _number(alpha) or set(node.kwargs) - {"alpha"}:
                return None
            first, second = (self.grid(a) if isinstance(a, Node) else a for a in args[:2])
            if first is None or second is None:
                return None
            sign = alpha if name == "add" else -alpha
            if not isinstance(second, Grid):
                return first.plus(sign * second) if isinstance(first, Grid) else None
            second = second.times(sign)
            if second is None or not isinstance(first, Grid):  # (a number minus a grid: 1 - m)
                return second.plus(first) if second is not None else None
            step = _common_step(first.step, second.step)
            if step is None or first.scale is not second.scale:
                return None
            return replace(first, offset=first.offset + second.offset, step=step)
        if name in ("sum", "cumsum", "nansum", "cumulative_sum"):  # (n values o + sk: n*o + s*k, n unknown)
            g = self.grid(args[0])  # (a scale that is no single number: each element its own, (x * sign(w)).sum(-1)
            return _sum(g) if g is None or g.scale is None or self._single(g.scale) else None  # is a multiple of none)
        if name in ("matmul", "mm", "bmm", "mv", "dot", "inner", "outer"):
            return _sum(_product(self.grid(args[0]), self.grid(args[1]))) if len(args) > 1 else None
        if name in ("remainder", "fmod", "mod") and number is not None and other is args[0]:
            g = self.grid(args[0])
            return g if g is not None and g.scale is None and g.offset == 0 and _multiple(number / g.step) else None
        if name == "where":
            found = [self.grid(b) if isinstance(b, Node) else b for b in _branches(node)]
            if len(found) != 2 or None in found:
                return None
            if not any(isinstance(g, Grid) for g in found):  # (two numbers: torch.where(c, 1.0, 0.0))
                a, b = found
                return Grid(float(b), abs(a - b), node) if _number(a) and _number(b) and a != b else None
            return _union(found)
        if name in ("stack", "cat", "concat", "concatenate", "hstack", "vstack") and isinstance(args[0], (list, tuple)):
            return _union([self.grid(a) for a in args[0]])
        return None

    def _single(self, node: Node) -> bool:
        """Does ``node`` hold a single number (a scalar parameter: LSQ's step)?"""
        t = dtypes.fetch_attr(self.gm, node.target) if node.op == "get_attr" else node.meta.get("val")
        meta = node.meta.get("tensor_meta")
        if isinstance(t, torch.Tensor):
            return t.numel() == 1
        return meta is not None and math.prod(meta.shape) == 1

    def _module_of(self, node: Node) -> nn.Module | None:
        try:
            return self.gm.get_submodule(node.target)
        except AttributeError:
            return None


def _name(node: Node) -> str | None:
    """The op's name, without an in-place op's trailing underscore (``round_``, ``add_``); casts by their method."""
    if node.op not in ("call_function", "call_method") or not node.args:
        return None
    if node.target is getattr and len(node.args) == 2 and node.args[1] in ("T", "mT", "H", "mH", "data"):
        return "t"  # (x.T: a view)
    name = node.target if node.op == "call_method" and node.target in rules.FLOAT_CASTS else _op_name(node)
    return name.rstrip("_") if name and not name.startswith("_") else name


def _whole_tensor(t) -> bool:
    """Is ``t`` a small tensor of whole numbers that no gradient changes (``tri = torch.ones(n, n).tril()``)?"""
    if not isinstance(t, torch.Tensor) or t.requires_grad or t.device.type == "meta" or not 0 < t.numel() <= 4096:
        return False
    return not t.is_floating_point() or bool((t == t.round()).all())


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _multiple(k: float) -> bool:
    """Is ``k`` a whole number (to rounding: 0.6 / 0.3)?"""
    return math.isfinite(k) and abs(k - round(k)) <= 1e-9 * max(1.0, abs(k))


def _common_step(a: float, b: float) -> float | None:
    """The step of a grid that holds both grids' steps (the smaller, when it divides the other), else None."""
    small, large = sorted((abs(a), abs(b)))
    return small if small and _multiple(large / small) else None


def _on(h: Grid, g: Grid) -> bool:
    """Is every value of ``h`` on ``g``?"""
    return h.scale is g.scale and _multiple(h.step / g.step) and _multiple((h.offset - g.offset) / g.step)


def _union(found: list) -> Grid | None:
    """One grid that holds all of ``found`` (grids, numbers), else None."""
    grids = [g for g in found if isinstance(g, Grid)]
    if not grids or None in found or len({id(g.scale) for g in grids}) > 1:
        return None
    step = grids[0].step
    for g in grids[1:]:
        step = _common_step(step, g.step)
        if step is None:
            return None
    g = replace(grids[0], step=step)
    return g if all(_on(h, g) if isinstance(h, Grid) else g.hits(h) for h in found) else None


def _product(g: Grid | None, h: Grid | None) -> Grid | None:
    """(o + sk)(p + ql) = op + oql + psk + sqkl: on the grid of step s*q when o*q and p*s are multiples of it."""
    if g is None or h is None or g.scale is not None or h.scale is not None:
        return None
    terms = [v for v in (g.offset * h.step, h.offset * g.step, g.step * h.step) if v]
    step = min(map(abs, terms))
    return Grid(g.offset * h.offset, step, g.source) if all(_multiple(v / step) for v in terms) else None


def _sum(g: Grid | None) -> Grid | None:
    """The grid of a sum of values on ``g`` (of an unknown count: its offset is unknown, a multiple of g's)."""
    if g is None:
        return None
    if _multiple(g.offset / g.step):
        return replace(g, offset=0.0)
    if g.offset and _multiple(g.step / g.offset):  # (+-1 summed: whole numbers)
        return replace(g, offset=0.0, step=abs(g.offset))
    return None


def _number_and_node(args: tuple) -> tuple:
    """Of a binary op's two operands, the number (or None) and the node."""
    if len(args) < 2:
        return None, None
    a, b = args[:2]
    if isinstance(a, Node) and _number(b):
        return b, a
    if isinstance(b, Node) and _number(a):
        return a, b
    return None, None


def _branches(node: Node) -> tuple:
    """``torch.where(c, a, b)``'s and ``a.where(c, b)``'s branches."""
    if node.op == "call_function":
        return tuple(node.args[1:3])
    return node.args[0], _arg(node, 2, "other")


def _bounds(name: str, node: Node) -> tuple:
    if name == "relu":
        return 0, None
    if name == "relu6":
        return 0, 6
    if name == "hardtanh":
        return _arg(node, 1, "min_val", -1.0), _arg(node, 2, "max_val", 1.0)
    if name == "clamp_min":
        return _arg(node, 1, "min"), None
    if name == "clamp_max":
        return None, _arg(node, 1, "max")
    return _arg(node, 1, "min"), _arg(node, 2, "max")


def _constants(name: str, node: Node) -> tuple:
    """The numbers the op ``name`` at ``node`` takes on whole ranges of its input (``relu``: 0)."""
    if name in ("relu", "relu6", "hardtanh", "clamp", "clip", "clamp_min", "clamp_max"):
        return tuple(b for b in _bounds(name, node) if _number(b))
    if name == "hardsigmoid":
        return 0, 1
    if name == "hardswish":
        return (0,)
    if name in ("threshold", "_threshold", "masked_fill"):
        return (v,) if _number(v := _arg(node, 2, "value")) else ()
    if name == "where":
        return tuple(b for b in _branches(node) if _number(b))
    if name == "pad" and _arg(node, 2, "mode", "constant") == "constant":
        return (_arg(node, 3, "value", None) or 0,)
    if name == "constant_pad_nd":
        return (_arg(node, 2, "value", 0),)
    return ()


def _module_constants(module: nn.Module) -> tuple:
    """:func:`_constants` of an activation or padding module (``nn.ReLU()``)."""
    if isinstance(module, nn.ReLU | nn.Hardswish | nn.ZeroPad1d | nn.ZeroPad2d | nn.ZeroPad3d):
        return (0,)
    if isinstance(module, nn.ReLU6):
        return 0, 6
    if isinstance(module, nn.Hardtanh):
        return module.min_val, module.max_val
    if isinstance(module, nn.Hardsigmoid):
        return 0, 1
    if isinstance(module, nn.Threshold | nn.ConstantPad1d | nn.ConstantPad2d | nn.ConstantPad3d):
        return (module.value,)
    return ()


def _keeps_values(module: nn.Module) -> bool:
    return isinstance(module, nn.Identity | nn.Flatten | nn.Unflatten | nn.MaxPool1d | nn.MaxPool2d | nn.MaxPool3d |
                      nn.AdaptiveMaxPool1d | nn.AdaptiveMaxPool2d | nn.AdaptiveMaxPool3d)


#: ops whose results are whole numbers (``round`` with ``decimals=d``: multiples of 10^-d)
_WHOLE_OPS = frozenset(("floor", "ceil", "trunc", "fix", "round", "one_hot", "argmax", "argmin", "bucketize",
                        "searchsorted", "floor_divide", "floordiv"))
#: what passes its first argument's values on (each element a value it had: views, copies, casts, selections)
_INT_CASTS = frozenset(("int", "long", "short", "bool", "char", "byte"))
_KEEP_VALUES = _THROUGH | {"getitem", "clone", "type_as", "narrow", "select", "flip", "roll", "repeat", "tile",
                           "positive"} | _INT_CASTS | frozenset(rules.FLOAT_CASTS)
_MAX_POOLS = ("max_pool", "adaptive_max_pool")


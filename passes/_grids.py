"""The tie check's records and their arithmetic: :class:`Grid` (values ``offset + step * k`` only, each on whole
ranges of inputs) and :class:`Tie` (why an input takes a threshold's value on whole ranges), numbers equal and whole
to :data:`_TOLERANCE` (``_close``, ``_multiple``, ``_same``), and the grids of sums, products, unions and an op's jumps
(``_common_step``, ``_union``, ``_product``, ``_sum``, ``_grid_meets``): functions of grids and numbers, no graph.

The check itself is :class:`_ties.Ties`; that module's docstring says where the rest is.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from fractions import Fraction
from typing import Callable

import torch
from torch.fx import Node


@dataclass(frozen=True)
class Grid:
    """Values ``offset + step * k`` (``k`` whole) only, each on whole ranges of inputs; ``source``: the op they come
    from (``round``, ``sign``, an integer tensor); ``values``: exactly which, where known (a buffer of ones: {1}).
    ``scale``: a tensor they are multiplied by (``round(x / s) * s`` with ``s`` a parameter: the node ``s``), or
    None, and ``scale_value`` the number they are multiplied by now, where it holds one; ``divided``: divided by the
    scale instead (``round(h) / p``: ``scale_value`` is ``1 / p`` now); scaled grids add up only with the same scale,
    both multiplied or both divided (:meth:`scaled_as`).  ``any_count``: means of such values over a count the graph
    does not fix (``q.mean(-1)`` of a traced graph), ``offset + step * k / n`` for any whole ``n``: every number is one
    of them for some ``n`` (whole numbers' halves for an even ``n``), so it hits every number and meets every grid."""

    offset: float
    step: float
    source: Node
    values: frozenset | None = None
    scale: Node | None = None
    scale_value: float | None = None
    divided: bool = False
    any_count: bool = False

    def hits(self, t: float) -> bool:
        if self.any_count:
            return True
        if self.scale is not None:  # (s * (o + step * k): 0 where o + step * k is; others by s's value now)
            if t != 0 and not self.scale_value:
                return False
            t = t / self.scale_value if t != 0 else 0.0
        if self.values is not None:
            return any(_close(t, v) for v in self.values)
        return _multiple((t - self.offset) / self.step)

    def times(self, number: float) -> Grid | None:
        values = frozenset(v * number for v in self.values) if self.values is not None else None
        return _grid(self, offset=self.offset * number, step=self.step * abs(number), values=values)

    def plus(self, number: float) -> Grid | None:
        if self.scale is not None:  # (s * (o + step * k) + c = s * (o + c / s + step * k), at s's value now)
            if not self.scale_value:
                return None
            number = number / self.scale_value
        values = frozenset(v + number for v in self.values) if self.values is not None else None
        return _grid(self, offset=self.offset + number, values=values)

    def absolute(self) -> Grid | None:
        """The grid of ``|v|`` for ``v`` on this grid: ``|o + sk|`` is on it when ``-o`` is; which values, where known
        (``|-0.5|``, ``|1.5|``: 0.5 + 1k); else None."""
        if self.values is not None and self.scale is None and (values := sorted({abs(v) for v in self.values})):
            step = min((v - values[0] for v in values[1:]), default=self.step)
            if all(_multiple((v - values[0]) / step) for v in values):
                return Grid(values[0], step, self.source, frozenset(values))
        return replace(self, values=None) if _multiple(2 * self.offset / self.step) else None

    def added(self, other: Grid) -> Grid | None:
        """The grid of a sum of a value on this grid and one on ``other`` (scaled alike): their common step, no values
        known; None where they have none."""
        step = _common_step(self.step, other.step)
        if step is None or not self.scaled_as(other):
            return None
        return _grid(self, offset=self.offset + other.offset, step=step, values=None,
                     any_count=self.any_count or other.any_count)

    def scaled_as(self, other: Grid) -> bool:
        """Are both grids' values multiplied by one same scale (or none), or both divided by it?"""
        return self.scale is other.scale and self.divided == other.divided

    def describe(self) -> str:
        offset = self.offset % self.step
        offset = 0.0 if _multiple(offset / self.step) else offset  # (-1 on the grid of step 1: whole numbers)
        what = ("whole numbers" if offset == 0 and self.step == 1 else f"multiples of {self.step:g}" if offset == 0
                else f"the values {offset:g} + {self.step:g}k")
        if self.any_count:
            what = f"means of {what} over a count the graph does not fix (any value, for some count)"
        if self.scale is None:
            return what
        if self.divided:
            return f"{what} divided by '{self.scale.name}'"
        return f"{what} times '{self.scale.name}'" if not self._quantizer() else \
            f"{what} times the quantization step of '{self.scale.target}'"

    def half_step(self) -> str:
        """Half the distance between the values, in the comparison's units (``0.5 * s`` for a scaled grid)."""
        if self.scale is None:
            return f"{self.step / 2:g}"
        if self.divided:
            return f"{self.step / 2:g} / {self.scale.name}"
        return f"{self.step / 2:g} * {self.scale.name}" if not self._quantizer() else f"{self.step / 2:g} step"

    def _quantizer(self) -> bool:  # (scaled by a fake-quantize module's own step)
        return self.scale.op == "call_module" and self.scale is self.source


def _grid(g: Grid, **changes) -> Grid | None:
    """``g`` changed, or None where its step is no usable number (0 after an underflow, inf)."""
    new = replace(g, **changes)
    return new if math.isfinite(new.step) and new.step > 1e-300 and math.isfinite(new.offset) else None


@dataclass(frozen=True)
class Tie:
    """Why an input takes a threshold's value on whole ranges: ``source`` (the op), ``grid`` (the values the input
    takes), or None for a constant an op takes (``relu``'s 0) or a product with a factor that is 0 there."""

    source: Node
    grid: Grid | None = None
    rows: bool = False  # (a constant put in one element per row of a dim the graph's unknown rank hides: flat)

    def mapped(self, f: Callable[[Grid], Grid | None]) -> Tie:
        """The tie of a value computed from this one (its grid times a number, plus one)."""
        return replace(self, grid=f(self.grid) if self.grid is not None else None)


def _same(a, b) -> bool:
    return a is b if isinstance(a, Node) or isinstance(b, Node) else _close(a, b)


#: relative tolerance of "equal" and "whole": a few float32 ulps (a buffer's float32(0.2) is 0.2000000030, on the grid of
#: round(x, decimals=1) as the model computes it in float32)
_TOLERANCE = 1e-6


def _close(a: float, b: float) -> bool:
    return a == b or abs(a - b) <= _TOLERANCE * max(abs(a), abs(b))


def _tensor_grid(t, node: Node) -> Grid | None:
    """The grid of a small tensor of whole numbers (``tri = torch.ones(n, n).tril()``, ``round(w)`` now), with its
    values where they are few."""
    if not isinstance(t, torch.Tensor) or t.device.type == "meta" or not 0 < t.numel() <= 4096:
        return None
    if t.is_floating_point() and not bool((t == t.round()).all()):
        return None
    values = t.unique()
    return Grid(0.0, 1.0, node, frozenset(values.double().tolist()) if values.numel() <= 16 else None)


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _multiple(k: float) -> bool:
    """Is ``k`` a whole number (to rounding: 0.6 / 0.3, float32(0.2) / 0.1)?"""
    return math.isfinite(k) and abs(k - round(k)) <= min(_TOLERANCE * max(1.0, abs(k)), 1e-3)  # (a fine grid: not
    # every number within float32 precision of one of its values)


def _common_step(a: float, b: float) -> float | None:
    """The step of a grid that holds both grids' steps: the smaller, when it divides the other; else their greatest
    common divisor, for steps that are ratios of small whole numbers (0.3 and 1: 0.1; 1/127 and 1/255: denominators
    up to 256); else None."""
    small, large = sorted((abs(a), abs(b)))
    if not small:
        return None
    if _multiple(large / small):
        return small
    ratio = Fraction(large / small).limit_denominator(256)  # (large / small = p / q: the step small / q; 8-bit grids)
    return small / ratio.denominator if _close(float(ratio), large / small) else None


def _on(h: Grid, g: Grid) -> bool:
    """Is every value of ``h`` on ``g``?"""
    if g.any_count or h.any_count:
        return h.scaled_as(g) and g.any_count
    return h.scaled_as(g) and _multiple(h.step / g.step) and _multiple((h.offset - g.offset) / g.step)


def _grid_meets(g: Grid, jumps: Grid, skip_zero: bool = False) -> bool:
    """Does a value of ``g`` lie on ``jumps`` (a grid of an op's jumps, unscaled; ``skip_zero``: not at 0)?"""
    if g.any_count:
        return True
    if g.values is not None:  # (times a scale: 0, and the others at its value now, where it holds one)
        scale = 1.0 if g.scale is None else g.scale_value
        return any(jumps.hits(v * scale if v else 0.0) and not (skip_zero and v == 0)
                   for v in g.values if v == 0 or scale)
    if g.scale is not None:  # (o + step * k times a scale that moves: 0 only, where the grid holds it)
        if g.scale_value:
            g = Grid(g.offset * g.scale_value, g.step * abs(g.scale_value), g.source)
        else:
            return not skip_zero and _multiple(-g.offset / g.step) and jumps.hits(0.0)
    if jumps.values is not None:
        return any(g.hits(v) for v in jumps.values if not (skip_zero and v == 0))
    step = _common_step(g.step, jumps.step)
    return step is not None and _multiple((g.offset - jumps.offset) / step)


def _union(found: list) -> Grid | None:
    """One grid that holds all of ``found`` (grids, numbers), else None."""
    grids = [g for g in found if isinstance(g, Grid)]
    if not grids or None in found or not all(g.scaled_as(grids[0]) for g in grids[1:]):
        return None
    step = grids[0].step
    for g in grids[1:]:
        step = _common_step(step, g.step)
        if step is None:
            return None
    g = replace(grids[0], step=step, values=None, any_count=any(h.any_count for h in grids))
    if not all(_on(h, g) if isinstance(h, Grid) else g.hits(h) for h in found):
        return None
    known = [h.values if isinstance(h, Grid) else frozenset((float(h),)) for h in found]  # (which values, where each
    if g.scale is None and None not in known and len(values := frozenset().union(*known)) <= 16:  # part's are known:
        return replace(g, values=values)  # zeros_like(h).scatter(-1, i, 1.0), 0 and 1)
    return g


def _product(g: Grid | None, h: Grid | None) -> Grid | None:
    """(o + sk)(p + ql) = op + oql + psk + sqkl: on the grid of step s*q when o*q and p*s are multiples of it."""
    if g is None or h is None or g.scale is not None or h.scale is not None:
        return None
    terms = [v for v in (g.offset * h.step, h.offset * g.step, g.step * h.step) if v]
    step = min(map(abs, terms))
    if not all(_multiple(v / step) for v in terms):
        return None
    values = frozenset(a * b for a in g.values for b in h.values) if g.values is not None and h.values is not None \
        and len(g.values) * len(h.values) <= 16 else None
    return _grid(g, offset=g.offset * h.offset, step=step, values=values, any_count=g.any_count or h.any_count)


def _sum(g: Grid | None) -> Grid | None:
    """The grid of a sum of values on ``g`` (of an unknown count: its offset is unknown, a multiple of g's)."""
    if g is None:
        return None
    if _multiple(g.offset / g.step):
        return replace(g, offset=0.0, values=None)
    if g.offset and _multiple(g.step / g.offset):  # (+-1 summed: whole numbers)
        return replace(g, offset=0.0, step=abs(g.offset), values=None)
    return None

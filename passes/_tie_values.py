"""The values a node takes on whole ranges of inputs (``_range_values``: its grid, the constants an op takes, through
ops that keep values and arithmetic with numbers), which :meth:`Ties.on_jumps` reads; the zeros of a product, quotient
or sum of two values (``_of_two``; two functions of one value on its grid's points or the numbers it takes on
ranges, ``_on_points``), a value's quotients by a learned bound (``_ratios``, ``_multiples``) and a value shifted less
itself (``_cancelled_shift``: ``(x + c) - x``; ``_selected_shifts``: a selection with such a branch, ``where(m, x +
1.0, x) - (x + 1.0)``; which the flat rule and the ties at a threshold read too).

A part of :class:`_ties.Ties` (a mixin: ``Ties.__init__`` sets the memos it reads); that module's docstring says
where the rest is.
"""

from __future__ import annotations

import functools
import math
from dataclasses import replace
from typing import Callable

import torch
from torch import nn
from torch.fx import Node

from ._grids import Grid, _close, _number, _same
from ._patterns import _arg, _same_value, _uncopied
from ._tie_nodes import (_added, _branches, _difference, _disjoint, _first, _keeps, _less_its_extremum, _of_itself,
                         _operands_down, _put, _taken, _tensor_of, _written_value)
from ._tie_ops import (_ARITHMETIC, _AVG_POOL_MODULES, _AVG_POOLS, _CHAIN, _CLAMPS, _DIVS, _EXTREMA, _IDENTITY_ABOVE_0,
                       _IDENTITY_ON_A_RANGE, _JOINS, _FOLDABLE, _MEANS, _MODULES_IDENTITY_ON_A_RANGE,
                       _MODULE_ONE_TO_ONE, _ONE_TO_ONE, _POWERS, _PUTS, _REDUCED_SUMS, _RUN, _SUMS, _UNNAMED,
                       _ZERO_PRODUCTS, _arithmetic_step, _composed_grid, _composed_number, _elementwise_call,
                       _grid_points, _images_of, _keeps_values, _mapped)




#: how deep :meth:`_RangeValues._nested_clip` reads ops that are their input on a range, one inside another
_NESTED_CLIPS = 3

#: a shift by a number (:meth:`_RangeValues._written_shift`: ``x + c``, ``x - c``, out of place or written in place)
_SHIFTS = frozenset(("add", "sub"))
#: a value times a number, out of place or written in place (:meth:`_RangeValues._written_factor`: ``x * k``, ``x /
#: k``, ``-x``, ``x + x``; a copy, ``x.clone()``: 1)
_SCALINGS = _DIVS | {"mul", "neg", "add", "clone"}


class _RangeValues:
    """The values a node takes on whole ranges of inputs: a part of :class:`_ties.Ties`."""

    def _range_values(self, node, depth: int, numbers: bool = False) -> list[tuple]:
        """``(value, source)`` for the numbers and grids ``node`` takes on whole ranges of inputs: its grid, or the
        constants an op takes (``relu``'s 0, a fill, a clamp's bounds, a ``where`` branch), through ops that keep
        values and arithmetic with numbers (``relu(h) + 0.5``: 0.5).  ``numbers``: the numbers only (under an op that
        keeps no grid: one-to-one ops, arithmetic; its grid, looked for up the whole chain, is not)."""
        if not isinstance(node, Node) or depth == 0:
            return []
        if not numbers and (g := self.grid(node)) is not None:
            if g.scale is None or g.scale_value is not None or g.values is None or g.divided:
                return [(g, g.source)]
            scale = self.grid(g.scale)  # (a mask times a value: that value's numbers and grid where the mask is 1,
            # where(h < 1, 0.5, h) * (h > 0.1): 0.5; g * (g > 0.5) of a grid g)
            return [(g, g.source)] + [(v * c, n) for c, n in self._range_values(g.scale, depth - 1, True)
                                      if _number(c) for v in g.values] + \
                [(t, t.source) for v in g.values if v and scale is not None and (t := scale.times(v)) is not None]
        found = [(c, node) for c in self._constants(node) if _number(c)]
        if numbers and _number(v := self._value(node)):  # (zeros_like(h): its number)
            found.append((v, node))
        writes = self._written_nodes().get(node, ())
        if k := self._writes_before(writes):  # (written in place before it is read: what the last write leaves, c[:,
            writer, whole = writes[k - 1]     # 0].fill_(1.0)'s number, h.relu_()'s values read as it reads h; for a
            value = _written_value(writer)    # part, what the rest held before, m.add_(a); m.add_(b): a + b, not a)
            if _number(v := self._value(value)):
                left = [(v, writer)]
            else:
                left = self._read_at(writer, lambda: self._range_values(
                    value, depth if value is writer else depth - 1, numbers)) if isinstance(value, Node) else []
                # (the writer's own op: no step of its own, as the out-of-place op would not be; its inputs are)
            return left if whole else left + self._read_at(writer, lambda: self._range_values(node, depth - 1,
                                                                                              numbers))
        if self._reader is not node and self._any_write():  # (its inputs as it reads them: a copy taken before a
            # later write, out = acc.clone(); acc.add_(v); an in-place op's own result, its input before the write)
            return self._read_at(node, lambda: self._op_values(node, depth, numbers, found))
        return self._op_values(node, depth, numbers, found)

    def _op_values(self, node: Node, depth: int, numbers: bool, found: list) -> list[tuple]:
        """:meth:`_range_values` of what ``node``'s op makes of its inputs (``found``: its own constants)."""
        if node.op == "call_module":
            module = self._module_of(node)
            if module is not None and type(module) in _MODULE_ONE_TO_ONE:  # (nn.Sigmoid() of relu's 0: 0.5)
                kept = self._kept_from_0(_first(node), module) if not numbers and \
                    _MODULE_ONE_TO_ONE[type(module)] in _IDENTITY_ABOVE_0 else []
                return found + kept + _mapped(lambda v: module(v), self._range_values(_first(node), depth - 1, True)) + \
                    self._images(module, _first(node)) + self._images_in_part(module, _first(node), depth)
                # (nn.Tanh() of ceil(h): -1 and 1 from 9 out)
            if isinstance(module, _AVG_POOL_MODULES):  # (nn.AvgPool1d(2) of relu's 0: 0, as F.avg_pool1d)
                return self._averaged_values(node, _first(node), depth, numbers, found)
            keeps = module is not None and _keeps_values(module)
            return found + (self._range_values(_first(node), depth - 1, numbers) if keeps else [])
        name = self._name_of(node)
        if name is None:
            return found
        first = _first(node)
        if _keeps(name, node) or name in _PUTS:
            return found + self._range_values(first, depth - 1, numbers)
        if (shift := self._cancelled_shift(node)) is not None:  # ((x + 2) - x: 2 where x + 2 is exact)
            found = found + [(shift, node)]
        if name == "sub" and (shifts := self._selected_shifts(node)):  # (where(m, x + 1.0, x) - (x + 1.0): -1)
            found = found + [(shift, node) for shift in shifts]
        if name in _SUMS and (hard := self._straight_through(node)) is not None:  # ((relu(h) - h).detach() + h: relu's)
            return found + self._range_values(hard, depth - 1, numbers)
        if name in _CLAMPS or name in _EXTREMA:  # (its input's values between its bounds: those beyond are the
            low, high = self._number_bounds(name, node)  # bounds)
            first, bound = self._extremum_operands(node) if name in _EXTREMA else (first, None)
            if isinstance(bound, Node) and not _number(self._value(bound)):  # (of two tensors: each one's, where it is
                return found + [f for a in _taken(name, first, bound)     # the one taken, minimum(h, round(k)))
                                for f in self._range_values(a, depth - 1, numbers)]
            return found + [(v, n) for v, n in self._range_values(first, depth - 1, numbers)
                            if not _number(v) or (low is None or v >= low) and (high is None or v <= high)] + \
                [f for b in self._tensor_bounds(name, node) for f in self._range_values(b, depth - 1, numbers)]
            # (a tensor bound where it cuts: floor(clamp(x, min=round(x))), whole where x < round(x))
        if name in _ONE_TO_ONE and (call := _elementwise_call(node)) is not None:  # (sqrt(relu(h)): 0)
            if not numbers and name in _IDENTITY_ABOVE_0:
                found = found + self._kept_from_0(first, call)
            return found + _mapped(call, self._range_values(first, depth - 1, True)) + \
                self._images(node, first) + self._images_in_part(node, first, depth)
            # (sigmoid(round(h)): 0.5 at 0, 1.0 from 17 up; tanh(maximum(trunc(x), x)): 0 on (-1, 0))
        if name in _POWERS and isinstance(node.args[0], Node) and (call := _elementwise_call(node)) is not None:
            return found + _mapped(call, self._range_values(first, depth - 1, True)) + \
                self._images(node, first) + self._images_in_part(node, first, depth)  # (relu(h) ** 2 + 0.5: 0.5)
        if name == "pow" and _number(base := first) and len(node.args) == 2 and not node.kwargs and \
                (g := self.grid(node.args[1])) is not None:  # (a number raised to a grid, 2.0 ** round(h): 2^k)
            return found + [(v, g.source) for v in _images_of(lambda t: torch.pow(base, t), _grid_points(g))]
        if name == "where":
            return found + [f for b in _branches(node) for f in self._range_values(b, depth - 1, numbers)]
        if name in _JOINS and isinstance(first, (list, tuple)):
            return found + [f for a in first for f in self._range_values(a, depth - 1, numbers)]
        if name == "neg" or name == "abs":  # (abs(maximum(h, 1.5)): 1.5; the grids its input takes on a part,
            # abs(maximum(round(x), p)): whole numbers from p up)
            value, grid = ((lambda v: -v), (lambda g: g.times(-1))) if name == "neg" else (abs, Grid.absolute)
            found = found + [(value(v), n) for v, n in self._range_values(first, depth - 1, True) if _number(v)]
            return found + [(h, n) for g, n in (self._grids_in_part(first, depth) if not numbers else [])
                            if (h := grid(g)) is not None]
        if name == "sub" and (reduced := _less_its_extremum(node)) is not None:  # (x - x.min(-1, keepdim=True): 0 on
            # its minimum)
            found = found + [(0.0, reduced)]
        if name in _SUMS and (clip := self._less_its_clip(node)) is not None:  # (h - clamp(h, -2, 1): 0 on [-2, 1];
            found = found + [(0.0, clip)]                                     # h + where(h > 0, -h, 0): from 0 up)
        if name in _MEANS or name.startswith(_AVG_POOLS):
            return self._averaged_values(node, first, depth, numbers, found)
        if name in _REDUCED_SUMS:  # (clamp(h, min=2).sum(-1): 2 n where each element of a row is 2)
            return found + self._summed(node, depth, numbers)
        c, other = self._summand_and_node(node)
        if c is None and name in _ZERO_PRODUCTS:
            return found + self._of_two(node, name, depth, numbers) + (self._ratios(node, depth) if name in _DIVS else
                                                                       []) + self._scaled_values(node, name, depth,
                                                                                                 numbers) + \
                (self._combined_values(node, depth, numbers) if name in _SUMS else [])
            # (relu(h) * s, r * 0.9 + 0.1 * r: 0 where relu's input is <= 0, whatever the other operand; v * (h > 0):
            # v's numbers where the mask is 1; clamp(h, -a, a) / a: -1 and 1; y * (7 / alpha): y's times 7 / alpha)
        if c is None or name not in _ARITHMETIC or node.kwargs:
            return found
        if name == "mul" and c == 0:  # (0 * h: 0 everywhere)
            return found + [(0.0, node)]
        if (step := _arithmetic_step(name, c, other is first)) is None:
            return found
        number, grid = step
        if self._untouched(other):  # (a run of such arithmetic, one step of the walk: each op maps one value; no
            # write reaches it, nor the values below it)
            other, number, grid = self._arithmetic_run(other, number, grid)
        inner = [(v, n) for v, n in self._range_values(other, depth - 1, True) if _number(v)]  # (grids: grid() above)
        return found + [(number(v), n) for v, n in inner] + \
            [(h, n) for g, n in (self._grids_in_part(other, depth) if not numbers else []) if (h := grid(g)) is not None]

    def _arithmetic_run(self, t: Node, number: Callable | None, grid: Callable | None) -> tuple:
        """``(base, number, grid)``: ``t`` less the arithmetic with numbers (or learned scalars in sums, at their value
        now) around it, up to :data:`_RUN` ops, and ``number`` and ``grid`` (the maps of the ops above ``t``) composed
        with theirs: a run of such ops is one step of :meth:`_range_values` (each maps one value; as a step each, a
        chain of six of them above a sum, ``floor((((relu(a) + relu(b)) * 2.0 - 1.0) * 2.0 - 1.0) ...)``, left the sum
        too little depth to read its terms).  Not through a node holding a number, nor where a write in place may reach
        ``t`` (an op read where it is written; its caller asks :meth:`_untouched`).  (The flat rule reads the base
        only: ``number`` and ``grid`` None.)"""
        for _ in range(_RUN):
            name = self._name_of(t)
            if name not in _ARITHMETIC or t.kwargs or self._value(t) is not t:
                break
            c, other = self._summand_and_node(t)
            if c is None or name == "mul" and c == 0 or (step := _arithmetic_step(name, c, other is _first(t))) is None:
                break
            if number is not None:  # (the flat rule's walk: the base alone)
                number = functools.partial(_composed_number, number, step[0])
                grid = functools.partial(_composed_grid, grid, step[1])
            t = other
        return t, number, grid

    def _averaged_values(self, node: Node, first, depth: int, numbers: bool, found: list) -> list[tuple]:
        """:meth:`_op_values` of a mean or an average pooling of ``first`` (``clamp(h, min=2).mean(-1)``: 2 where each
        element of a row is, a whole range; as avg_pool's windows; a mean of a grid its input takes on ranges, where
        each element of a row, of a window, is on it: the mean's grid of it, ``maximum(round(x), p).mean(-1)``)."""
        found = found + [(v, n) for v, n in self._range_values(first, depth - 1, True) if _number(v)]
        return found + self._means_in_part(node, first, depth) if not numbers else found

    def _means_in_part(self, mean: Node, first, depth: int) -> list[tuple]:
        """``(grid, source)`` for the grids a mean or an average pooling of ``first`` takes where every element of a
        row (of a window) is on a grid ``first`` takes on ranges (:meth:`_grids_in_part`): the mean's grid of it
        (:meth:`_mean_grid`; of a count the graph does not fix, every value: ``maximum(round(x), p).mean(-1)``), the
        pooling's (:meth:`_pooled`: ``avg_pool1d(maximum(round(x), x), 2)``, halves)."""
        if mean.op == "call_module" or self._name_of(mean) not in _MEANS:
            return [(h, n) for g, n in self._grids_in_part(first, depth) if (h := self._pooled(mean, g)) is not None]
        return [(h, n) for g, n in self._grids_in_part(first, depth) if (h := self._mean_grid(mean, g)) is not None]

    def _summed(self, node: Node, depth: int, numbers: bool) -> list[tuple]:
        """:meth:`_range_values` of a sum of a value's elements (``clamp(h, min=2).sum(-1)``): ``n * c`` for each number
        ``c`` the value takes on whole ranges (the sum takes it where every element summed does, a whole range too),
        ``n`` the count where known (:meth:`_reduced_count`), else, but for numbers only, the grid of ``c``'s multiples
        (a count the graph does not fix: any, read loosely, more ties, never fewer)."""
        n = self._reduced_count(node)
        found = []
        for c, source in self._range_values(_first(node), depth - 1, True):
            if not _number(c):
                continue
            if n or not c:
                found.append((c * n if n else 0.0, source))
            elif not numbers:
                found.append((Grid(0.0, abs(float(c)), source), source))
        return found

    def _grids_in_part(self, v, depth: int) -> list[tuple]:
        """``(grid, source)`` for the grids ``v`` takes on whole ranges where it has none of its own (a minimum of two
        tensors, ``minimum(sign(x), x)``: sign's -1 on (-1, 0) and 1 from 1 up), which arithmetic with a number keeps
        (``minimum(sign(x), x) - 1``: -2 and 0 there); none where it cannot hold one (:meth:`_part_base`, as
        :meth:`_images_in_part`), nor for a sum of two tensors but near the top of a walk (``m * 0.5 + where(x > 0, m,
        x) * 0.25 + 0.25`` of a grid ``m``, on ``0.75 m + 0.25`` from 0 up), also under a chain of such arithmetic that
        starts there (``floor(((v * 2 + 1) * 0.5) - 0.5)``: each op of the chain reads the sum anew, one depth lower,
        and reads it as the chain's top does, :attr:`_part_chain`; the chain walks one value at each op)."""
        if not isinstance(v, Node) or (base := self._part_base(v, depth)) is None or self.grid(v) is not None:
            return []
        outer, self._part_chain = self._part_chain, base  # (the ops of the chain below v read the sum as v does)
        try:
            return [(g, n) for g, n in self._range_values(v, depth - 1) if isinstance(g, Grid)]
        finally:
            self._part_chain = outer

    def _combined_values(self, node: Node, depth: int, numbers: bool) -> list[tuple]:
        """:meth:`_range_values` of a sum that reads one same value in each of its terms (``v + v``, ``v * 0.5 + v``),
        with coefficients of one sign: that value's, times their sum (as :meth:`_combined` reads its grid;
        ``where(m, x, 2.0) * 2``'s 4.0)."""
        if (one := self._one_value(node)) is None:
            return []
        v, k, shift = one
        found = []
        for w, n in self._range_values(v, depth - 1, numbers):
            w = w * k + shift if _number(w) else h.plus(shift) if (h := w.times(k)) is not None else None
            if w is not None:
                found.append((w, n))
        return found

    def _one_value(self, node: Node) -> tuple | None:
        """``(v, k, c)`` where ``node`` is a sum that reads one same value ``v`` in more than one term (one node, or
        the same call of the same values: :meth:`_merged`), ``k * v + c`` with coefficients of one sign (the float32
        sum is that multiple to a few ulps), in a graph that writes nothing in place; else None.  Once per node (a
        walk meets a sum once for each value read above it: :meth:`_grids_in_part` of a sum)."""
        if self._any_write():
            return None
        found = self._one_values.get(node, _UNNAMED)
        if found is _UNNAMED:
            found = self._one_values[node] = self._find_one_value(node)
        return found

    def _find_one_value(self, node: Node) -> tuple | None:
        if (form := self._linear(node, 8)) is None:
            return None
        terms, shift = form
        ks = [k for _, k in terms]
        if len(terms) < 2 or len(merged := self._merged(terms)) != 1 or min(ks) < 0 < max(ks):
            return None
        return next(iter(merged)), sum(ks), shift

    def _less_its_clip(self, node: Node) -> Node | None:
        """The op ``c`` where ``node`` is ``x - c`` or ``c - x`` (also ``x + (-c)``, ``-c + x``: :func:`_difference`)
        and ``c`` is ``x`` itself on a whole range of ``x`` (a clamp or relu of it, a leaky relu, ``minimum(x, y)``:
        :data:`_IDENTITY_ON_A_RANGE`), or ``c`` and ``x`` are two such ops of one value on ranges that meet
        (``clamp(h, -1, 1) - maximum(h, 0.5 * h)``: :meth:`_clips_of_one`): ``node`` is 0 there (``h - h.clamp(-2, 1)
        > 0``, ``floor(relu(h) - h)``), else None.  In a graph that writes in place, where a write reaches either term
        (:meth:`_untouched`), also such an op written into a fresh copy of ``x`` (``c = h.clone(); c.clamp_(-2, 1); c
        - h``): :meth:`_less_its_written_clip`.  Also a
        selection with such a branch (:meth:`_less_its_branch`), and a sum of ``x`` and a selection with a branch that
        is such an op negated (``h + where(h > 0, -h, 0)``)."""
        name = self._name_of(node)
        if name not in _SUMS or len(node.args) != 2 or node.kwargs:
            return None
        pair = _difference(name, node, 1)
        if pair is None:  # (a sum of two tensors, no term negated: a negated branch only)
            return self._plus_its_negated_branch(*node.args)
        return self._clip_between(pair, node)

    def _clip_between(self, pair: tuple, at: Node | None) -> Node | None:
        """:meth:`_less_its_clip` of ``pair[0] - pair[1]`` read at ``at`` (the difference; a comparison of the two, ``x
        > relu(x)``: equal where the difference is 0)."""
        clip = self._less_its_written_clip(at, pair) if not self._untouched(*pair) else \
            self._clip_of(*pair)
        return clip if clip is not None else self._less_its_branch(pair, False)

    def _clip_of(self, a, b) -> Node | None:
        """The op of ``a`` and ``b`` (the other, read as a tensor) that is the other itself on a whole range of it
        (:data:`_IDENTITY_ON_A_RANGE`: ``clamp(x, -2, 1)`` and ``x``, ``minimum(y, x)`` and ``x``), or two such ops of
        one value on ranges that meet (:meth:`_clips_of_one`), also one inside another (:meth:`_nested_clip`: ``x -
        abs(clamp(x, -2, 2))``), else None.  The operand and the other term are one
        value where :meth:`_one_of` reads them so (``clamp(x, -2, 1) - abs(clamp(x, -2, 1))``, the clamp written
        twice)."""
        a, b = self._held_tensor(a), self._held_tensor(b)
        clipped_a, clipped_b = self._clipped(a), self._clipped(b)
        for x, c, clipped in ((a, b, clipped_b), (b, a, clipped_a)):
            if isinstance(x, Node) and self._one_of(x, clipped):
                return c
        if not clipped_a and not clipped_b:  # (no such op: the sums of most graphs)
            return None
        found = self._clips_of_one(a, b, clipped_a, clipped_b)
        return found if found is not None else self._nested_clip(a, b)

    def _one_of(self, x: Node, values: tuple) -> bool:
        """Is ``x`` one of ``values`` (nodes and numbers): the same node, or, in a graph that writes nothing in place
        (or where no write reaches them, :meth:`_untouched`), the same call of the same values (``_same_value``, as
        :meth:`_cancels` reads it: a clamp written twice)?"""
        return x in values or self._untouched(x, *values) and any(
            isinstance(u, Node) and u.op == x.op and u.target == x.target and _same_value(u, x) for u in values)

    def _held_tensor(self, v):
        """The node whose values ``v`` holds, as :meth:`_clip_of` compares a clip's operand with the other term:
        through aliases (:func:`_tensor_of`) and, in a graph that writes nothing in place (or where no write reaches
        it, :meth:`_untouched`), copies and extrema of a tensor with itself (``minimum(x, x)``: :func:`_of_itself`) and
        hand-written straight-through values (``x + (x - x.detach())``: ``x``; ``(r - x).detach() + x``: ``r``, to
        float32's rounding of the sum, on a jump or within ulps of it: more ties, never fewer)."""
        for _ in range(4):
            u = _tensor_of(v)
            if isinstance(u, Node) and self._untouched(u):
                u = _of_itself(u)
                if self._name_of(u) in _SUMS and (hard := self._straight_through(u)) is not None:
                    u = hard
            if u is v:
                return v
            v = u
        return v

    def _clipped(self, c) -> tuple:
        """The values ``c`` is on a whole range of them, as tensors (:data:`_IDENTITY_ON_A_RANGE`): a clamp's or a
        module's input, either operand of ``minimum``/``maximum`` (``minimum(y, x)``); none for another op."""
        if not isinstance(c, Node) or not c.args:
            return ()
        if c.op == "call_module":
            module = self._module_of(c)
            return (self._held_tensor(c.args[0]),) if isinstance(module, _MODULES_IDENTITY_ON_A_RANGE) else ()
        return tuple(self._held_tensor(v) for v in c.args[:2]) if self._name_of(c) in _IDENTITY_ON_A_RANGE else ()

    def _clips_of_one(self, a, b, clipped_a: tuple, clipped: tuple) -> Node | None:
        """``a`` where ``a`` and ``b`` are two ops of :data:`_IDENTITY_ON_A_RANGE` of one same value ``x``, each ``x``
        itself on a range of it, and the two ranges meet on more than a point where both are known (:meth:`
        _identity_range`: ``clamp(x, -1, 1)`` and ``maximum(x, 0.5 * x)``, both ``x`` on [0, 1], ``relu(x)`` and
        ``abs(x)``; not ``relu(x)`` and ``clamp(x, max=0)``), else None.  A range that is not known (a bound that is a
        tensor) is read as meeting: more ties, never fewer.  (``clipped_a``, ``clipped``: :meth:`_clipped` of ``a``,
        ``b``.)"""
        shared = [x for x in clipped_a if isinstance(x, Node) and self._value(x) is x and self._one_of(x, clipped)]
        if not shared:
            return None
        (low, high), (low_b, high_b) = self._identity_range(a), self._identity_range(b)
        return a if max(low, low_b) < min(high, high_b) else None

    def _nested_clip(self, a, b) -> Node | None:
        """``a`` or ``b``, an op of :data:`_IDENTITY_ON_A_RANGE` of such an op (:meth:`_clips`: ``abs(clamp(x, -2,
        2))``, ``x`` on [0, 2]), where the other is the same value on a range that meets the first on more than a point
        (``x``, ``clamp(x, -2, 1)``: 0 on [0, 1]; not ``clamp(x, 2.5, 3)``), else None: :meth:`_clip_of` and
        :meth:`_clips_of_one` one level deeper.  Ranges not known are read as meeting, as there."""
        reads_a, reads_b = self._clips(a, _NESTED_CLIPS), self._clips(b, _NESTED_CLIPS)
        if not any(nested for *_, nested in reads_a + reads_b):  # (one level: read already)
            return None
        for v, reads in ((a, reads_a), (b, reads_b)):  # (a value is itself everywhere)
            if isinstance(v, Node):
                reads.append((v, -math.inf, math.inf, False))
        for x, low, high, nested in reads_a:
            for y, low_b, high_b, nested_b in reads_b:
                if (nested or nested_b) and max(low, low_b) < min(high, high_b) and self._one_of(x, (y,)):
                    return a if nested else b
        return None

    def _clips(self, c, depth: int) -> list[tuple]:
        """``(x, low, high, nested)``: ``c`` is ``x`` where ``x`` is in [``low``, ``high``] (:meth:`_clipped`,
        :meth:`_identity_range`), also through such ops of such ops, ``depth`` deep (``abs(clamp(x, -2, 2))``: its
        input on [0, inf), ``x`` on [0, 2], nested)."""
        found = []
        clipped = self._clipped(c) if depth else ()
        if clipped:
            low, high = self._identity_range(c)
            for y in clipped:
                if isinstance(y, Node) and self._value(y) is y:
                    found.append((y, low, high, depth != _NESTED_CLIPS))
                    found += [(z, max(low, lo), min(high, hi), True) for z, lo, hi, _ in self._clips(y, depth - 1)]
        return found

    def _identity_range(self, c: Node) -> tuple[float, float]:
        """``(low, high)``: the range of its input on which ``c`` (an op of :data:`_IDENTITY_ON_A_RANGE`) is its input,
        where its bounds are numbers (a clamp's, from 0 up for relu, a leaky relu, elu and abs, a minimum's or
        maximum's number); unbounded where a bound is not known."""
        if c.op == "call_module":
            module = self._module_of(c)
            if isinstance(module, nn.Hardtanh):  # (ReLU6 too)
                return float(module.min_val), float(module.max_val)
            if isinstance(module, nn.Threshold):
                return float(module.threshold), math.inf
            return (0.0, math.inf) if isinstance(module, _MODULES_IDENTITY_ON_A_RANGE) else (-math.inf, math.inf)
        name = self._name_of(c)
        if name in _CLAMPS or name in _EXTREMA:
            low, high = self._number_bounds(name, c)
            return -math.inf if low is None else float(low), math.inf if high is None else float(high)
        if name == "threshold" and _number(t := self._value(_arg(c, 1, "threshold"))):
            return float(t), math.inf
        return (0.0, math.inf) if name != "threshold" else (-math.inf, math.inf)

    def _plus_its_negated_branch(self, a, b) -> Node | None:
        """:meth:`_less_its_branch` of ``a + b``, one of them a selection (a ``where``, a put) with a branch that is the
        other negated (``h + where(h > 0, -h, 0)``: 0 from 0 up), else None; the selection by its own op, not through
        views (the check every sum of two tensors meets, as :meth:`_tie_inert._Inert._inert_sum` reads it too).  Also
        ``abs`` of the other, or of an op that is the other on a range (:meth:`_clips`), where it is the other negated:
        ``h + abs(h)``, ``h + abs(clamp(h, -2, 2))``, 0 from 0 down, also inside a clip, beside one
        (:meth:`_negated_by_abs`: ``clamp(abs(h), max=2) + clamp(h, -2, 1)``, 0 on [-2, 0])."""
        for x, w in ((a, b), (b, a)):
            if isinstance(x, Node) and isinstance(w, Node):
                name = self._name_of(w)
                if name == "where" or name in _PUTS:
                    if (found := self._less_its_branch((x, w), True)) is not None:
                        return found
                elif (name in _IDENTITY_ON_A_RANGE or w.op == "call_module" and self._clipped(w)) and \
                        self._negated_by_abs(x, w):
                    return w
        return None

    def _negated_by_abs(self, x: Node, w: Node) -> bool:
        """Is ``w`` the value ``x`` negated on a range of more than a point: ``abs(u)``, ``-u`` from 0 down, or an op
        that is such an ``abs`` on a range of it (:meth:`_clips`: ``clamp(abs(h), max=2)``, ``-h`` on [-2, 0]), ``u``
        ``x`` itself or read through ops that are it on a range (``abs(clamp(h, -2, 2))``), and ``x`` too
        (``clamp(abs(h), max=2) + clamp(h, -2, 1)``: 0 on [-2, 0])?  Ranges not known are read as meeting, as
        :meth:`_nested_clip` reads them."""
        negated = []  # ((v, low, high): w is -v where v is in [low, high])
        for y, low, high in [(w, -math.inf, math.inf)] + [r[:3] for r in self._clips(w, _NESTED_CLIPS)]:
            if self._name_of(y) == "abs" and isinstance(u := self._held_tensor(_first(y)), Node):
                low, high = -high, min(0.0, -low)  # (abs(u) in [low, high] and -u: u in [-high, -low], u <= 0)
                negated += [(u, low, high)] + [(v, max(low, lo), min(high, hi))
                                               for v, lo, hi, _ in self._clips(u, _NESTED_CLIPS - 1)]
        if not negated:
            return False
        same = [(x, -math.inf, math.inf)] + [r[:3] for r in self._clips(x, _NESTED_CLIPS)]
        return any(max(low, lo) < min(high, hi) and self._one_of(v, (y,)) for v, low, high in negated
                   for y, lo, hi in same)

    def _less_its_branch(self, pair: tuple, negated: bool) -> Node | None:
        """The selection ``w`` where ``pair`` is ``(x, w)`` or ``(w, x)``, read as ``x - w``, and a value ``w`` may
        take (:meth:`_selected`: a branch of a ``where``, what a put keeps or puts, ``masked_fill``, and theirs for a
        selection among selections, ``where(m, where(k, h, 0), 1)``) is ``x`` (:meth:`_cancels`) or ``x`` on a whole
        range of it, or ``x`` is it there (:meth:`_clip_of`: ``abs(h) - where(m, h, 0)``): ``x - w`` is 0 where ``w``
        takes that branch (and the clip is its input), else None.  ``negated``: ``pair`` is read as ``x + w``, and the
        branch is such a value negated (``h + where(h > 0, -h, 0)``).  Which inputs take the branch is not followed (a
        tie found where the two ranges may not meet: ``relu(h) - where(h < 0, h, 1)``), nor writes in place between
        the reads (a tie found where a write may have moved one): more ties, never fewer."""
        a, b = (_tensor_of(v) for v in pair)
        for x, w in ((a, b), (b, a)):
            if not isinstance(w, Node) or not isinstance(x, Node):
                continue
            for v in self._selected(w, 4):
                if negated:
                    v = _first(v) if isinstance(v, Node) and self._name_of(v) == "neg" else None
                if isinstance(v, Node) and (self._cancels(x, v) or self._clip_of(x, v) is not None):
                    return w
        return None

    def _selected(self, w: Node, depth: int) -> list:
        """The values the selection ``w`` takes on ranges: a ``where``'s branches, a put's input and the value it puts,
        and, ``depth`` deep, those of a selection among them (``where(m, where(k, h, 0), 1)``: ``h``, 0 and 1)."""
        name = self._name_of(w)
        if name == "where":
            branches = _branches(w)
        elif name in _PUTS and (put := _put(name, w)) is not None:
            branches = (_first(w), put)
        else:
            return []
        return [u for v in branches for u in ([v] + (self._selected(v, depth - 1) if depth > 1 and
                                                     isinstance(v, Node) else []))]

    def _less_its_written_clip(self, node: Node, pair: tuple) -> Node | None:
        """:meth:`_less_its_clip` in a graph that writes in place, of ``node`` read as ``pair[0] - pair[1]``: ``c``, as
        ``node`` reads it, is such an op of ``x`` (out of place, or written into a clone of ``x`` read by nothing
        before: ``c = h.clone(); c.clamp_(-2, 1)``), and the other operand is ``x`` or a clone of it (of a clone of it:
        :meth:`_copy_reads`), with no write
        reaching ``x`` between the two reads of it (not ``c = h.clamp(-2, 1); h.add_(0.5); h - c``).  Unproven (a view
        of the copy, a copy read or written again, a module's input): None."""
        at = self._order.get(node, len(self._order))
        for x, c in (pair, pair[::-1]):
            clip = self._clip_as_read(c, at)
            read = next((r for r in self._copy_reads(x, at) if r[0] in clip[1]), None) if clip is not None else None
            if read is not None and not self._written_between(read[0], min(read[1], clip[2]), max(read[1], clip[2])):
                return clip[0]
        return None

    def _clip_as_read(self, v, at: int, names: frozenset = _IDENTITY_ON_A_RANGE) -> tuple | None:
        """``(op, its operands, where it reads them)`` where ``v``, read at the place ``at``, holds an op of ``names``
        (:data:`_IDENTITY_ON_A_RANGE`; ``add``, ``sub``: :meth:`_written_shift`): out of place and not written since,
        or written in place, once, into all of a clone that nothing but a clone reads before the write (its operand:
        what the clone copied); else None."""
        v = _tensor_of(v)
        if not isinstance(v, Node) or v.op == "call_module":
            return None
        writes = [(w, whole) for w, whole in self._written_nodes().get(v, ()) if self._order.get(w, at) < at]
        if not writes:
            if self._name_of(v) not in names:
                return None
            return v, tuple(_tensor_of(a) for a in v.args[:2] if isinstance(a, Node)), self._order[v]
        writer, whole = writes[0]
        if len(writes) > 1 or not whole or self._name_of(v) != "clone" or writer.op == "call_module" or \
                self._name_of(writer) not in names or \
                not any(_tensor_of(a) is v for a in writer.args[:2]) or \
                any(self._order[u] < self._order[writer] and self._name_of(u) != "clone" for u in v.users):
            return None  # (a view or a read before the write; a clone of it, d = c.clone(), keeps what it copied)
        return writer, (_tensor_of(_first(v)),), self._order[v]

    def _cancelled_shift(self, node: Node) -> float | None:
        """``c`` where ``node`` is ``(x + c) - x``, ``(c + x) - x``, ``x - (x - c)`` (``-c`` for ``(x - c) - x``, ``x -
        (x + c)``; a copy of ``x`` counts as ``x``: ``(x + c) - x.clone()``), ``c`` a number or a learned scalar at its
        value now, in a graph that writes nothing in place (or where no write reaches it, :meth:`_untouched`; where one
        does, :meth:`_written_shift`, which also reads multiples of one value that cancel, ``c + x`` of ``c = x.clone();
        c.mul_(-1.0)``, ``c - 2 * x`` of ``c.mul_(2.0)``: 0): ``c``
        up to float32's rounding of ``x + c``, and exactly ``c`` on whole ranges of ``x`` (where ``x + c`` is exact), so
        a row's elements are equal there too; else None.  Read as a value it takes on ranges, not as a grid: it also
        takes others (0 for a large ``x``), which a grid would rule out."""
        name = self._name_of(node)
        if name != "sub" and (name != "add" or self._writing is False) or len(node.args) != 2 or node.kwargs:
            return None  # (a sum only where a write reaches it: its name and the memo first, as every sum asks)
        if not self._untouched(node):
            return self._written_shift(node, name)
        if name == "add":
            return None
        a, b = (_uncopied(v) for v in node.args)  # (a copy of x is x: (x + c) - x.clone())
        return self._shift_between(a, b)

    def _shift_between(self, a, b) -> float | None:
        """``c`` where ``a - b`` is a value shifted less itself (:meth:`_cancelled_shift`; ``a`` and ``b`` less their
        copies), else None."""
        for whole, part, sign in ((a, b, 1.0), (b, a, -1.0)):  # (whole - part: c; part - whole: -c)
            c = _added(whole, part, True)
            if c is None and isinstance(part, Node) and self._name_of(part) == "sub" and \
                    _uncopied(part.args[0]) is whole and len(part.args) == 2 and not part.kwargs:  # (x - (x - c))
                c = part.args[1]
            if (shift := self._shift_by(c, sign)) is not None:
                return shift
        if (shifted_a := self._shifted(a)) is not None and (shifted_b := self._shifted(b)) is not None and \
                shifted_a[0] is shifted_b[0]:  # ((x + 0.5) - (x + 1.5): -1)
            return shifted_a[1] - shifted_b[1]
        return None

    def _shifted(self, v) -> tuple | None:
        """``(x, c)`` where ``v`` is ``x + c``, ``c + x`` or ``x - c`` (``-c``), ``c`` a number or a learned scalar at
        its value now (:meth:`_shift_by`; ``x`` less its copies), else None."""
        name = self._name_of(v) if isinstance(v, Node) else None
        if name != "add" and name != "sub" or len(v.args) != 2 or v.kwargs:
            return None
        a, b = v.args
        for x, c, sign in ((a, b, 1.0), (b, a, 1.0)) if name == "add" else ((a, b, -1.0),):
            if isinstance(x, Node) and (shift := self._shift_by(c, sign)) is not None:
                return _uncopied(x), shift
        return None

    def _selected_shifts(self, node: Node) -> list[float]:
        """The shifts ``c`` where ``node`` is ``w - x`` (``x - w``) of a selection ``w`` (:meth:`_selected`: a
        ``where``'s branches, what a put keeps or puts) one of whose values less ``x`` (``x`` less it) is a value
        shifted less itself (:meth:`_shift_between`): ``c`` where ``w`` takes that value (``where(m, x + 1.0, x) - (x
        + 1.0)``: -1 where it takes ``x``; which inputs take it is not followed: more ties, never fewer), in a graph
        that writes nothing in place (or where no write reaches it); else []."""
        if self._name_of(node) != "sub" or len(node.args) != 2 or node.kwargs or not self._untouched(node):
            return []
        a, b = (_uncopied(v) for v in node.args)
        found = []
        for w, x, sign in ((a, b, 1.0), (b, a, -1.0)):
            if isinstance(w, Node) and isinstance(x, Node) and ((named := self._name_of(w)) == "where" or
                                                               named in _PUTS):
                found += [sign * shift for u in self._selected(w, 4)
                          if (shift := self._shift_between(_uncopied(u), x)) is not None]
        return found

    def _written_shift(self, node: Node, name: str) -> float | None:
        """:meth:`_cancelled_shift` of ``node``, ``a - b``, where a write reaches it: ``c`` (``-c``) where one term, as
        ``node`` reads it, is ``x + c`` (``x - c``), out of place and not written since or written in place into all
        of a fresh clone of ``x`` (:meth:`_clip_as_read`: ``v = x.clone(); v.add_(1.0); v - x``: 1.0, the fuzzer's
        in-place steps), and the other ``x`` or a clone of it (:meth:`_copy_read`), with no write reaching ``x``
        between the two reads; its negation for ``x - (x + c)``.  Also 0 for ``node``, ``a + b`` (``a - b``), where its
        terms so read are ``k * x`` and ``-k * x`` (``k * x`` twice: :meth:`_written_opposite`), as ``c = x.clone();
        c.mul_(-1.0); c + x`` and ``c.mul_(2.0); c - 2 * x``; else None."""
        at = self._order.get(node, len(self._order))
        if self._written_opposite(node.args, name, at):  # (c = x.clone(); c.mul_(2.0); c - 2 * x: 0)
            return 0.0
        if name == "add":
            return None
        for whole, part, sign in ((*node.args, 1.0), (*node.args[::-1], -1.0)):
            made = self._clip_as_read(whole, at, _SHIFTS)
            if made is None or made[0].kwargs or len(made[0].args) != 2 or not isinstance(part, Node):
                continue
            reads = (*self._copy_reads(part, at), (_tensor_of(part), at))  # (x as read there, or the clone of x read,
            read = next((r for r in reads if r[0] in made[1]), None)          # or a clone of a clone of x)
            if read is None or self._written_between(read[0], min(read[1], made[2]), max(read[1], made[2])):
                continue
            op, (u, w) = made[0], made[0].args
            held = (_tensor_of(whole), read[0])  # (the written clone, or the operand read)
            if self._name_of(op) == "sub":
                c, sign = (w, -sign) if _tensor_of(u) in held else (None, sign)
            else:
                c = w if _tensor_of(u) in held else u if _tensor_of(w) in held else None
            if (shift := self._shift_by(c, sign)) is not None:
                return shift
        return None

    def _written_opposite(self, terms: tuple, name: str, at: int) -> bool:
        """Is ``a + b`` (``a - b``) of ``terms``, read at the place ``at`` where a write reaches them, ``k * x`` and
        ``-k * x`` (``k * x`` twice) of one ``x`` that no write reaches between the two reads, each term read through
        products, quotients with numbers and negations out of place or written in place into all of a fresh clone
        (:meth:`_written_factors`: ``c = x.clone(); c.mul_(2.0); c - 2 * x``, ``c.div_(2); c * 2 - x``, ``c.add_(x);
        c - 2 * x``): 0, as :meth:`_opposite` reads it out of place (coefficients equal to a few ulps: 0 where
        float32 rounds both alike, more ties, never fewer)?"""
        if len(terms) != 2 or not all(isinstance(a, Node) for a in terms):
            return False
        (x, x_at, k), (y, y_at, m) = (self._written_factors(v, at) for v in terms)
        if k == 0 or not _close(k, -m if name == "add" else m) or (x, y) == tuple(terms):
            return False  # (x - y of two values read as they are: _cancels' question)
        reads_y = self._copy_reads(y, y_at)  # (a clone of x counts as x, also a clone of a clone)
        return any(r[0] is s[0] and not self._written_between(r[0], min(r[1], s[1]), max(r[1], s[1]))
                   for r in self._copy_reads(x, x_at) for s in reads_y)

    def _written_factors(self, v: Node, at: int) -> tuple:
        """``(x, where it is read, k)``: ``v``, read at the place ``at``, is ``k * x`` through up to four products and
        quotients with numbers, negations and sums of a value with itself (:meth:`_written_factor`); ``(v, at, 1.0)``
        where it is none."""
        k = 1.0
        for _ in range(4):
            step = self._written_factor(v, at)
            if step is None:
                break
            v, at, k = step[0], step[1], k * step[2]
        return v, at, k

    def _written_factor(self, v: Node, at: int) -> tuple | None:
        """``(x, where it is read, k)`` where ``v``, read at the place ``at``, holds ``x * k``, ``k * x``, ``x / k``
        (``1 / k``), ``-x`` (-1), ``x + x`` (2, exact) or a copy of ``x`` (1), ``k`` a number: out of place and not
        written since, or written in place once into all of a fresh clone of ``x`` (:meth:`_clip_as_read`: ``c =
        x.clone(); c.mul_(2.0)``; ``c.add_(x)`` with no write reaching ``x`` between the clone and the write); else
        None."""
        made = self._clip_as_read(v, at, _SCALINGS)
        if made is None or made[0].kwargs:
            return None
        op, args = made[0], made[0].args
        name, place = self._name_of(op), made[2]
        clone = _tensor_of(v) if op is not _tensor_of(v) else None  # (written in place: its first operand the clone,
        if clone is not None:                                        # which holds what it copied)
            x = made[1][0] if made[1] else None
            args = tuple(x if _tensor_of(a) is clone else a for a in args)
        if name in ("neg", "clone"):  # (-x; a copy of x made before the write read, d = c.clone() of a written c)
            return (args[0], place, -1.0 if name == "neg" else 1.0) if len(args) == 1 and isinstance(args[0], Node) \
                else None
        if len(args) != 2:
            return None
        a, b = (_tensor_of(u) if isinstance(u, Node) else u for u in args)
        if name == "add":  # (x + x: 2 x exactly; in place, x not written between the clone and the write)
            if not isinstance(a, Node) or a is not b or clone is not None and \
                    self._written_between(a, place, self._order.get(op, at)):
                return None
            return a, place, 2.0
        k = self._value(b)
        if _number(k) and isinstance(a, Node):
            return (a, place, float(k)) if name == "mul" else (a, place, 1.0 / k) if k else None
        k = self._value(a)
        if name == "mul" and _number(k) and isinstance(b, Node):
            return b, place, float(k)
        return None

    def _shift_by(self, c, sign: float) -> float | None:
        """``sign * c`` for ``c`` a number (a node holding one) or a learned scalar at its value now, else None."""
        value = self._value(c) if c is not None else None
        if isinstance(value, Node):
            value = self._scalar(value)
        return sign * float(value) if _number(value) else None

    def _kept_from_0(self, first, call: Callable) -> list[tuple]:
        """``(grid, source)`` for ``call``, a leaky relu, of ``first``'s grid: its values, which values where known
        (mapped), else the grid and the grid times the slope (its values from 0 up, and below 0 scaled)."""
        g = self.grid(first)
        slope = _mapped(call, [(-1.0, None)])
        if g is None or g.scale is not None or not slope:
            return []
        if g.values is not None:
            return [(replace(g, values=frozenset(v for v, _ in _mapped(call, [(v, None) for v in g.values]))),
                     g.source)]
        return [(h, g.source) for h in (g, g.times(-slope[0][0])) if h is not None]

    def _of_two(self, node: Node, name: str, depth: int, numbers: bool) -> list[tuple]:
        """:meth:`_range_values` of a product, quotient, sum or difference of two values: 0 where its operands make
        it 0 on whole ranges (a factor, the numerator, both terms not 0 on disjoint ranges: ``relu(h) * s``, ``r * 0.9
        + 0.1 * r``, ``h * (h > 0)``), a factor's numbers where the other is a 0/1 mask at 1 (``where(h < 1, 0.5,
        h) * (h > 0.1)``: 0.5), and a term's grid where the other term is 0 (``sign(x) * 0.5 - relu(x)``: -0.5 and
        0.5 on x <= 0; in a graph that writes nothing in place) or moved by a number or a grid the other term takes on
        ranges (``trunc(x) - where(trunc(x) > 0, x, -3.0)``: 0 on (-4, -3]; ``mask + where(c, mask, x)``: 0, 1 and 2;
        as though the two ranges met), a number of each term added up, as though the two ranges met too
        (``clamp(a, 1, 2) + clamp(b, 1, 2)``: 2; but where both terms read one value ``q``, a number taken where ``q``
        takes one is read at ``q``'s values alone), and a sum of two functions of one value (:meth:`_on_points`)."""
        operands = node.args[:2] if len(node.args) == 2 and not node.kwargs else ()
        if not operands or not all(isinstance(a, Node) for a in operands):
            return []

        def zeros(v, depth, grids=True) -> list:  # (the ops that make v 0 on whole ranges, each of them: a product
            # is 0 where any factor is; a factor's grid too, a mask's 0: followed under a number where it keeps none,
            # as the walk of a sum's terms is not)
            if grids and (g := self.grid(v)) is not None and g.hits(0.0):
                return [g.source]
            return list(dict.fromkeys(n for w, n in self._range_values(v, depth, numbers)
                                      if (w.hits(0.0) if isinstance(w, Grid) else w == 0)))
        if name in _DIVS:
            return [(0.0, source) for source in zeros(operands[0], depth - 1)]
        if name == "mul":
            found = [(0.0, source) for source in dict.fromkeys(zeros(operands[0], depth - 1) +
                                                               zeros(operands[1], depth - 1))]
            for a, b in (operands, operands[::-1]):
                if (g := self.grid(b)) is not None and g.scale is None and g.values is not None and \
                        g.values <= {0.0, 1.0}:
                    found += [(v, n) for v, n in self._range_values(a, depth - 1, True) if _number(v)]
            return found
        depth -= 1  # (a sum of two values: each term's 0 as deep as any value's, a leaky integrator's 4 steps; a
        # term not 0 anywhere ends the walk of the other)
        walked: dict[int, list] = {}

        def values(i: int) -> list:  # (operand i's values on ranges, walked once)
            if i not in walked:
                walked[i] = self._range_values(operands[i], depth, numbers)
            return walked[i]

        def zero_sources(i: int) -> list:  # (zeros(operands[i], depth, False), from the same walk)
            return list(dict.fromkeys(n for w, n in values(i) if (w.hits(0.0) if isinstance(w, Grid) else w == 0)))
        first = zero_sources(0)
        read: list = []  # (the ops above the value the two terms read, where _on_points reads them so)
        found = self._on_points(node, *operands, depth, read)
        # (a grid plus a value 0 on ranges: the grid there, sign(x) * 0.5 + (x - minimum(x, 2 * x)): +-0.5
        # from 0 up; plus a value that is another number c on ranges, the grid moved by c there, trunc(x) - where(
        # trunc(x) > 0, x, -3.0): 0 on (-4, -3], or a grid on ranges, the sum of the grids, mask + where(c, mask, x):
        # 0, 1 and 2; read loosely, as though the two ranges met (more ties, never fewer),
        # also in a graph that writes in place, the value as it is read there (c = x.clone(); c.clamp_(-1, 1); mask
        # + c: the mask less 1 on x <= -1); the grid first, the cheap check, as a sum of two tensors is in every block
        # of the benchmark; not a grid scaled by a tensor, h * (h <= 0): only its 0 is a value it takes on ranges; nor
        # a term holding a number, a grid plus a number, as its writes are read there; the grid where the other is 0
        # in a graph that writes nothing in place: a written zero point's round(x / s + zp) - zp is read as a grid
        # plus its value there)
        minus = -1.0 if name == "sub" else 1.0
        for i, j, sign, sign_i in ((0, 1, minus, 1.0), (1, 0, 1.0, minus)):
            if not numbers and (g := self.grid(operands[j])) is not None and g.scale is None and \
                    (g := g.times(sign)) is not None and not _number(self._value(operands[i])):
                if not self._any_write() and (zs := first if i == 0 else zero_sources(i)):
                    found.append((g, zs[0]))
                in_part = self.grid(operands[i]) is None  # (a grid on ranges only: its own is read as the sum's)
                found += [(h, n) for w, n in values(i) if (in_part or not isinstance(w, Grid)) and
                          (h := self._moved(g, w, sign_i)) is not None]
        if numbers_a := [(w, n) for w, n in values(0) if _number(w)]:  # (a number in each term, as though the two
            # ranges met: clamp(a, 1, 2) + clamp(b, 1, 2), 2 where both are 1; abs(clamp(x, -2, 0)) - clamp(x, -2, 1),
            # 4 on x <= -2 and -1 from 1 up; not 0 and 0, read below, with the ranges where they are 0 together; not
            # a number one term takes where the value q both read takes one, which _on_points reads at that value:
            # relu(v) - v of v = clamp(x, -2.5, 1), 2.5 and 0, not relu's 0 less v's 1; nor two numbers clips of one
            # value take on ranges that never meet, _apart: abs(clamp(x, -2, 0)) - clamp(x, -2, 1), no 2)
            found += [(w + minus * u, n) for u, m in values(1) if _number(u) for w, n in numbers_a if (w or u) and
                      all(n in above_a and m in above_b for above_a, above_b in read) and
                      not self._apart(operands, (w, n), (u, m))]
        other = zero_sources(1) if first else []
        if not other or _disjoint(*operands, self._at):
            return found
        # (0 where some op making one term 0 and some op making the other 0 are 0 together: relu(h) and relu(-h), in
        # m.add_(relu(h)); m.add_(relu(-h)), only at 0; relu(h) * relu(k) + relu(-h) on k <= 0 <= h)
        return found + [(0.0, source) for source in first
                        if any(not _disjoint(source, o, self._at, True) for o in other)]

    @staticmethod
    def _moved(g: Grid, w, sign: float) -> Grid | None:
        """``g`` plus ``sign * w``, ``w`` a number (not 0: the grid where the other term is 0 is read apart) or a grid
        a term with none of its own takes on ranges (``mask + where(c, mask, x)``: 0, 1 and 2; as though the two
        ranges met), else None."""
        if isinstance(w, Grid):
            return h.added(g) if (h := w.times(sign)) is not None else None
        return g.plus(sign * w) if _number(w) and w else None

    def _apart(self, terms: tuple, taken_a: tuple, taken_b: tuple) -> bool:
        """Do the two terms of a sum take their numbers ``taken_a`` and ``taken_b`` (``(number, source)``, as
        :meth:`_of_two` pairs them) on ranges of one value that never meet: each source a clip of that same value
        with number bounds (``clamp(q, lo, hi)``, ``relu(q)``, ``maximum(q, c)``), the term an elementwise function
        of it (:meth:`_composed`) that gives the number at one bound only, ``q <= lo`` for one and ``q >= hi`` for
        the other with ``hi >= lo`` (``abs(clamp(x, -2, 0)) - clamp(x, -2, 1)``: its 0 from 0 up and -2 to -2 down,
        no 2)?  Else (unproven) False: the pair is read as though the ranges met."""
        sides = [self._side(t, *taken) for t, taken in zip(terms, (taken_a, taken_b))]
        if None in sides or sides[0][0] is not sides[1][0] or sides[0][1] == sides[1][1] or \
                not self._untouched(sides[0][0]):  # (one value, read alike by both clips: no write reaches it)
            return False
        low, high = (sides[0][2], sides[1][2]) if sides[0][1] == "low" else (sides[1][2], sides[0][2])
        return high >= low

    def _side(self, term: Node, number, source: Node) -> tuple | None:
        """``(q, "low", lo)`` where ``term`` takes ``number`` from ``source``, a clip of ``q`` with number bounds,
        exactly where ``q <= lo`` (``term`` an elementwise function of it that gives ``number`` at ``lo`` and not at
        the other bound); ``(q, "high", hi)`` for ``q >= hi``; else None."""
        name = self._name_of(source) if isinstance(source, Node) and source.op != "call_module" else None
        if name not in _CLAMPS and name not in _EXTREMA:
            return None
        q = self._extremum_operands(source)[0] if name in _EXTREMA else _first(source)
        low, high = self._number_bounds(name, source)
        unbounded = sum(b is None for b in self._bounds(name, source)) if name in _CLAMPS else 1
        if low is None and high is None or low is not None and high is not None and low >= high or \
                (low is None) + (high is None) != unbounded:
            return None  # (clamp(q, 2, 1): 1 everywhere; clamp(q, p, 2) of a learned p: 2 everywhere for p > 2)
        call = self._composed(term, source) if isinstance(q, Node) else None
        if call is None:
            return None
        bounds = [(side, b) for side, b in (("low", low), ("high", high)) if b is not None]
        images = dict(zip((side for side, _ in bounds), _images_of(call, [b for _, b in bounds])))
        if len(images) != len(bounds):  # (two bounds, one image: abs(clamp(q, -2, 2)), 2 at both)
            return None
        hits = [(side, b) for side, b in bounds if _same(images[side], number)]
        return (q, *hits[0]) if len(hits) == 1 else None

    def _on_points(self, node: Node, a: Node, b: Node, depth: int = 8, read: list | None = None) -> list[tuple]:
        """``(value, source)`` for ``node``, ``a + b`` or ``a - b`` where each term is one same value ``q`` or an
        elementwise function of ``q`` alone, with numbers, up to :data:`_CHAIN` ops deep (``relu(q) * 2``): the sum
        computed in float32 (as the model computes it) on the points of ``q``'s grid (:func:`_grid_points`;
        ``floor(q) - sigmoid(q)`` of ``q = floor(x)``: -0.5 at 0, where each term's values alone say nothing), or,
        where ``q`` has none, on the values ``q`` takes on whole ranges, a grid's points or a number, ``depth`` deep
        (``relu(v) - v`` of ``v = clamp(x, -2, 1)``: 2 on x <= -2, where ``relu`` is 0 and ``v`` is -2), in a graph
        that writes nothing in place (or where no write reaches the sum, :meth:`_untouched`).  ``q`` in each term is
        one node, or where that finds nothing, the same call of the same values (``_same_value``: ``relu(clamp(x, -2,
        1)) - clamp(x, -2, 1)``, the clamp written twice).  ``read``: gets the ops above ``q`` in ``a`` and in ``b``
        (two sets) for each ``q`` read (:meth:`_of_two` reads the numbers each term takes above it only)."""
        down, down_a = _operands_down(b, _CHAIN), _operands_down(a, _CHAIN)  # (the structural check first: the
        q = next((u for u in down_a if u in down and (u is not a or u is not b)), None)  # benchmark's h + 0.1 * d)
        if node.kwargs or not self._untouched(node):
            return []
        found = self._on_points_of(node, a, b, (q, q), depth, read) if q is not None else []
        if found:
            return found
        # (the same call written twice, read as one value where the node test finds nothing: relu(c) - c of two calls
        # clamp(x, -2, 1), where the node test finds x, an input)
        pair = next(((u, v) for u in down_a for v in down if u is not v and u.op == v.op and u.target == v.target and
                     (u is not a or v is not b) and _same_value(u, v)), None)
        return self._on_points_of(node, a, b, pair, depth, read) if pair is not None else []

    def _on_points_of(self, node: Node, a: Node, b: Node, q: tuple, depth: int, read: list | None) -> list[tuple]:
        """:meth:`_on_points` where ``q`` is the value in ``a`` and the one in ``b`` (one node, or the same call)."""
        q, q_b = q
        if self._inert_found is not None and not self._deciding and (self._inert(q) or self._inert(q_b)):  # (asked
            # where a comparison or a rounding has asked first, not inside a verdict of _inert's)
            return []  # (an inert value: no grid, no value on ranges; the benchmark's h + 0.1 * sign(h))
        calls = [self._composed(a, q), self._composed(b, q_b)]
        if None in calls:
            return []
        if read is not None:  # (the ops _composed followed, above q: _operands_down's path)
            read.append(tuple(set(chain[:chain.index(v)]) for chain, v in ((_operands_down(a, _CHAIN), q),
                                                                           (_operands_down(b, _CHAIN), q_b))))
        sign = -1.0 if self._name_of(node) == "sub" else 1.0

        def call(v):
            return calls[0](v) + sign * calls[1](v)
        if (g := self.grid(q)) is not None:
            return [(v, g.source) for v in _images_of(call, _grid_points(g))]
        return [(v, n) for w, n in self._range_values(q, depth - 1)
                for v in _images_of(call, _grid_points(w) if isinstance(w, Grid) else [w])]

    def _composed(self, t: Node, q: Node) -> Callable | None:
        """``t`` as a function of ``q``, a value :func:`_operands_down` reaches from it: the ops between composed, each
        elementwise with numbers (:meth:`_pointwise`; a number first, ``0.5 * v``, ``1 - v``: an op of
        :data:`_FOLDABLE`), else None."""
        steps = []
        while t is not q:
            first = t.args[0]
            if isinstance(first, Node):
                call = self._pointwise(t)
            elif t.op == "call_function" and not t.kwargs and len(t.args) == 2 and _number(first) and \
                    self._name_of(t) in _FOLDABLE:  # (the number first)
                call = functools.partial(t.target, first)
            else:
                call = None
            if call is None:
                return None
            steps.append(call)
            t = first if isinstance(first, Node) else t.args[1]

        def composed(v):
            for step in reversed(steps):
                v = step(v)
            return v
        return composed

    def _pointwise(self, t: Node) -> Callable | None:
        """``t``, a term of :meth:`_on_points` or an op in one, as a function of its first argument: a one-to-one or
        foldable op with numbers (:func:`_elementwise_call`), or an extremum with a node that holds one number
        (``maximum(q, torch.tensor(0.5))``: the planner's ``number``; not a learned scalar), else None."""
        name = self._name_of(t)
        if name in _ONE_TO_ONE or name in _FOLDABLE:
            return _elementwise_call(t)
        if name not in _EXTREMA or len(t.args) != 2 or t.kwargs or not _number(c := self._value(t.args[1])):
            return None
        op, bound = getattr(torch, name), torch.tensor(float(c))
        return lambda v: op(v, bound)

    def _ratios(self, node: Node, depth: int) -> list[tuple]:
        """``(k, source)`` of a quotient ``v / d`` of two values, ``d`` holding no number (a learned clip): ``v`` is
        ``k * d`` on whole ranges, the quotient ``k`` there (``clamp(h, -a, a) / a``: -1 and 1, exactly)."""
        operands = node.args[:2] if len(node.args) == 2 and not node.kwargs else ()
        if not operands or not all(isinstance(a, Node) for a in operands):
            return []
        return self._multiples(*operands, depth - 1)

    def _multiples(self, v, d: Node, depth: int) -> list[tuple]:
        """``(k, source)``: ``v`` is ``k * d`` on whole ranges of inputs, ``source`` the op taking it there (a clamp
        at its bound ``d`` or ``-d``, ``d`` itself), through ops that keep values and arithmetic with numbers."""
        if not isinstance(v, Node) or depth == 0:
            return []
        if v is d:
            return [(1.0, v)]
        found = [(k, v) for c in self._constants(v) if isinstance(c, Node)
                 for k, _ in self._multiples(c, d, depth - 1)]
        name = self._name_of(v) if v.op != "call_module" else None
        if name is None:
            return found
        first = _first(v)
        if _keeps(name, v):
            return found + self._multiples(first, d, depth - 1)
        if name == "neg":
            return found + [(-k, s) for k, s in self._multiples(first, d, depth - 1)]
        c, other = self._number_and_node(v)
        if c is None or v.kwargs:
            return found
        if name == "mul":
            return found + [(k * c, s) for k, s in self._multiples(other, d, depth - 1)]
        if name in _DIVS and other is first and c:
            return found + [(k / c, s) for k, s in self._multiples(other, d, depth - 1)]
        return found

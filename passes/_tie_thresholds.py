"""Whether a node equals a threshold on whole ranges of inputs (``_ties``, which :meth:`Ties.of` and the flat rule
read): through its op (``_op_ties``), what an in-place write leaves (``_written_ties``), and one-to-one ops at the
threshold's preimages or at the values they take on a grid (``_through_preimages``, ``_images``).

A part of :class:`_ties.Ties` (a mixin: ``Ties.__init__`` sets the memos it reads); that module's docstring says
where the rest is.
"""

from __future__ import annotations

import functools
from typing import Callable

from torch.fx import Node

from ._grids import Grid, Tie, _TOLERANCE, _multiple, _number, _same
from ._tie_nodes import _branches, _first, _keeps, _less_its_extremum, _put, _taken, _written_value
from ._tie_ops import (_ACCUMULATING, _ARITHMETIC, _AVG_POOL_MODULES, _AVG_POOLS, _CLAMPS, _DIVS, _EXTREMA,
                       _IDENTITY_ABOVE_0, _JOINS, _MEANS, _MODULE_ONE_TO_ONE, _ONE_TO_ONE, _PUTS, _REDUCED_SUMS, _RUN,
                       _SUMS, _VIEWS, _arithmetic_step, _composed_grid, _elementwise_call, _grid_points, _images_of,
                       _keeps_values, _preimages)


#: the least depth of a walk at which :meth:`_Thresholds._part_base` reads a sum of two tensors, or a chain of
#: arithmetic with numbers above one (a jump op walks its input from 8; deeper, each sum would walk its terms again for
#: each number read above it: a leaky integrator's ``v = 0.8 * v + relu(x - c)``, ``s = floor(0.5 * v + 0.25)``, ``v =
#: v - 0.5 * s``)
_SUMS_IN_PART = 6


def _inverted(name: str, c: float, first: bool, number: float, kwargs: dict) -> tuple | None:
    """``(inner, back)`` for arithmetic ``name`` with the number ``c`` (``first``: its tensor is the first operand,
    ``kwargs`` the node's) compared at ``number``: its operand's threshold (None: none, a quotient by 0) and the map of
    a grid found there up through the op (:func:`_arithmetic_step`'s); None for an op read otherwise (a quotient by
    the tensor, ``alpha=``)."""
    if name == "mul":
        inner = number / c
    elif name in _DIVS and first:
        if not c:
            return None, None
        inner = number * c
    elif (name == "add" or name == "sub") and not kwargs:
        inner = number - c if name == "add" else number + c if first else c - number
        if abs(inner) <= _TOLERANCE * max(abs(number), abs(c)):  # (float32(0.1) - 0.1: 0 to float32 precision)
            inner = 0.0
    else:
        return None
    return inner, _arithmetic_step(name, c, first)[1]


class _Thresholds:
    """Whether a node equals a threshold on whole ranges of inputs: a part of :class:`_ties.Ties`."""

    def _ties(self, node, t, depth: int) -> Tie | None:
        if not isinstance(node, Node) or depth == 0:
            return None
        number = t if not isinstance(t, Node) else None
        if self._reader is not node and node in self._writers():  # (an in-place op's own result, which an exported
            return self._written_ties(node, t, depth)              # graph reads: fill_ = aten.fill_(h, 1.0))
        writes = self._written_nodes().get(node, ())
        k = self._writes_before(writes)  # (the writes made before it is read)
        g = self.grid(node) if number is not None else None  # (and its states before each write: _states)
        if number is not None and k < len(writes):
            states = self._states.get(node)
            g = states[k] if states is not None else None
        if g is not None and g.hits(number):
            return Tie(g.source, g)
        if k:  # (written in place: what the last write before leaves; in the rest of it, for a part, what it held)
            writer, whole = writes[k - 1]
            found = self._written_ties(writer, t, depth)
            if found is not None or whole:
                return found
            return self._read_at(writer, lambda: self._ties(node, t, depth - 1))
        if self._reader is not node and self._any_write():  # (its inputs as it reads them: a copy taken before a
            return self._read_at(node, lambda: self._op_ties(node, t, depth))  # later write, acc.clone())
        return self._op_ties(node, t, depth)

    def _op_ties(self, node: Node, t, depth: int) -> Tie | None:
        """:meth:`_ties` of what ``node``'s op makes of its inputs."""
        number = t if not isinstance(t, Node) else None
        if any(_same(c, t) for c in self._constants(node)):
            return Tie(node)
        if node.op == "call_module":
            module = self._module_of(node)
            if number is not None and (name := _MODULE_ONE_TO_ONE.get(type(module))) is not None:  # (nn.Sigmoid())
                return self._through_preimages(name, module, _first(node), number, depth)
            if number is not None and isinstance(module, _AVG_POOL_MODULES):  # (nn.AvgPool1d(2) of relu(x) > 0)
                return self._averaged_ties(node, _first(node), number, depth)
            return self._ties(_first(node), t, depth - 1) if module is not None and _keeps_values(module) else None
        name = self._name_of(node)
        if name is None:
            return None
        first = _first(node)
        if _keeps(name, node):
            return self._ties(first, t, depth - 1)
        if number is not None and (shift := self._cancelled_shift(node)) is not None and _same(shift, number):  # ((x
            # + 2) - x at 2)
            return Tie(node)
        if number is not None and name == "sub" and any(_same(s, number) for s in self._selected_shifts(node)):  # (
            return Tie(node)  # where(m, x + 1.0, x) - (x + 1.0) at -1)
        if name in _SUMS and (hard := self._straight_through(node)) is not None:  # ((relu(h) - h).detach() + h > 0)
            return self._ties(hard, t, depth - 1)
        if name in _JOINS and isinstance(first, (list, tuple)):  # (the elements from a part that ties)
            return next((f for a in first if (f := self._ties(a, t, depth - 1)) is not None), None)
        if name == "where" or name in _PUTS and (put := _put(name, node)) is not None:  # (where its condition picks
            branches = _branches(node) if name == "where" else (first, put)  # a branch that ties; where a put keeps
            return next((f for b in branches if (f := self._ties(b, t, depth - 1)) is not None), None)  # its input)
        if name in _PUTS or name in _ACCUMULATING:  # (one that accumulates: its rest as it was; index_add)
            return self._ties(first, t, depth - 1)
        if number is None:
            return None
        if name in _CLAMPS:  # (between its bounds: its input's value; a bound that is no number, a learned scalar or
            # a tensor, may be on either side, as a minimum/maximum of two tensors is read: clamp(floor(h), min=p) >= 2)
            low, high = (self._value(b) if b is not None else None for b in self._bounds(name, node))
            inside = (not _number(low) or low < number) and (not _number(high) or number < high)
            if not inside:
                return None
            found = self._ties(first, number, depth - 1)  # (and a tensor bound's where it cuts, clamp(x, min=round(x)))
            return found or next((Tie(f.source) for b in self._tensor_bounds(name, node)
                                  if (f := self._ties(b, number, depth - 1)) is not None), None)
        if name == "neg":
            found = self._ties(first, -number, depth - 1)
            return found.mapped(lambda g: g.times(-1)) if found is not None else None
        if name == "abs":
            return (self._ties(first, number, depth - 1) or self._ties(first, -number, depth - 1)) \
                if number >= 0 else None
        if name in _ONE_TO_ONE or name == "pow":  # (sigmoid(relu(x)) > 0.5: relu(x) at sigmoid's preimage of 0.5;
            exponent = node.args[1] if name == "pow" and _number(first) and len(node.args) == 2 else first  # 2.0 ** h)
            return self._through_preimages(name, node, exponent, number, depth)
        c, other = self._summand_and_node(node)  # (minimum(sign(x), x) + p > 0: a learned scalar at its value now)
        if name == "mul" and c is not None and not c:  # (h * 0: 0 everywhere)
            return Tie(node) if number == 0 else None
        if c is not None and (step := _inverted(name, c, other is first, number, node.kwargs)) is not None:
            inner, back = step  # (relu(h) * 2 + 1 > 1: relu(h) at 0; a run of such ops, one step of the walk)
            if inner is None:
                return None
            if self._untouched(other):  # (no write reaches it, nor the values below it)
                other, inner, back = self._inverted_run(other, inner, back)
            found = self._ties(other, inner, depth - 1)
            return found.mapped(back) if found is not None else None
        operands = [a for a in node.args[:2] if isinstance(a, Node)]
        if name in ("minimum", "maximum", "fmin", "fmax") and c is not None:  # (a clamp at c: its input below/above)
            inside = number < c if name in ("minimum", "fmin") else number > c
            return self._ties(other, number, depth - 1) if inside else None
        if name in _EXTREMA and c is None and len(operands) == 2:  # (of two tensors: each one's value where it is the
            found = next((f for a in _taken(name, *operands) if (f := self._ties(a, number, depth - 1)) is not None),
                         None)  # one taken, minimum(q, h) < 2 at q == 2 <= h, on ranges)
            return Tie(found.source) if found is not None else None
        if name.startswith(_AVG_POOLS) or name in _MEANS:
            return self._averaged_ties(node, first, number, depth)
        if name in _REDUCED_SUMS:  # (clamp(h, min=2).sum(-1) >= 2 n: where each element of a row is 2)
            return self._summed_ties(node, first, number, depth)
        if c is None and number != 0 and (found := self._scaled_ties(node, name, number, depth)) is not None:
            return found  # (y * (7 / alpha), y / p: y's ties, scaled)
        if name == "mul" and len(operands) == 2 and number != 0:  # (g * m, m a 0/1 mask: g where m is 1)
            for a, b in (operands, operands[::-1]):
                g = self.grid(b)
                if g is not None and g.values is not None and g.values <= {0.0, 1.0} and \
                        (found := self._ties(a, number, depth - 1)) is not None:
                    return Tie(found.source)
            return None
        if name in _SUMS and c is None and (one := self._one_value(node)) is not None and one[1]:  # (v + v at 4: v at 2)
            v, k, shift = one
            found = self._ties(v, (number - shift) / k, depth - 1)
            return found.mapped(lambda g: h.plus(shift) if (h := g.times(k)) is not None else None) \
                if found is not None else None
        if name in _DIVS and c is None and (ratio := next((s for k, s in self._ratios(node, depth) if _same(k, number)),
                                                         None)) is not None:  # (clamp(h, -a, a) / a at 1)
            return Tie(ratio)
        if number != 0:  # (a sum of two tensors at the values _of_two reads on ranges: mask + where(c, mask, x) > 1.5
            # at 2; two functions of one value, relu(v) - v > 2 of v = clamp(x, -2, 1), 2 on x <= -2; at 0, below)
            found = self._of_two(node, name, depth, False) if name in _SUMS and len(operands) == 2 else ()
            return next((Tie(n) for v, n in found if (v.hits(number) if isinstance(v, Grid) else _same(v, number))),
                        None)
        if name == "mul" and len(operands) == 2:  # (0 where a factor is 0 on whole ranges)
            found = next((f for a in operands if (f := self._ties(a, 0.0, depth - 1)) is not None), None)
            return Tie(found.source) if found is not None else None
        if name in _DIVS and isinstance(first, Node) and c is None:
            found = self._ties(first, 0.0, depth - 1)
            return Tie(found.source) if found is not None else None
        if name == "sub" and (reduced := _less_its_extremum(node)) is not None:  # (x - x.min(): 0 on its minimum)
            return Tie(reduced)
        if name in _SUMS and (clip := self._less_its_clip(node)) is not None:  # (h - clamp(h, -2, 1): 0 on [-2, 1])
            return Tie(clip)
        if name in ("add", "sub") and len(operands) == 2:  # (0 where the ops making each term 0 are 0 together: not
            zero = [n for v, n in self._of_two(node, name, depth, False)  # h * (h > 0) + 0.1 * h * (h <= 0), a leaky
                    if (v.hits(0.0) if isinstance(v, Grid) else _same(v, 0.0))]  # relu; of its values, those at 0)
            return Tie(zero[0]) if zero else None
        return None

    def _inverted_run(self, t: Node, number: float, back: Callable) -> tuple:
        """``(base, number, back)``: ``t`` less the arithmetic with numbers around it (:data:`_RUN` ops at most, as
        :meth:`_RangeValues._arithmetic_run` reads them), the threshold ``number`` at ``t`` carried back through each op
        to its base, and ``back`` (a grid found there, mapped up to ``t``'s top) composed with each op's: a run of such
        ops is one step of :meth:`_ties` (``relu(a) + relu(b)`` under six of them, compared).  Not through a node
        holding a number or on a grid of its own (read at its grid first), where no write in place reaches ``t`` (its
        caller asks :meth:`_untouched`)."""
        for _ in range(_RUN):
            name = self._name_of(t)
            if name not in _ARITHMETIC or self._value(t) is not t or self.grid(t) is not None:
                break
            c, other = self._summand_and_node(t)
            if c is None or name == "mul" and not c or \
                    (step := _inverted(name, c, other is _first(t), number, t.kwargs)) is None or step[0] is None:
                break
            number, back, t = step[0], functools.partial(_composed_grid, back, step[1]), other
        return t, number, back

    def _averaged_ties(self, node: Node, first, number: float, depth: int) -> Tie | None:
        """:meth:`_ties` at ``number`` of a mean or an average pooling of ``first``: a constant where its window is
        (``avg_pool(relu(x)) > 0``, of hardtanh at 2), where its row is (``clamp(h, min=2).mean(-1) >= 2``); the grids
        it takes where its input is on one on ranges (:meth:`_means_in_part`)."""
        found = self._ties(first, number, depth - 1)
        if found is None:
            found = next((Tie(n) for g, n in self._means_in_part(node, first, depth) if g.hits(number)), None)
        return Tie(found.source) if found is not None else None

    def _summed_ties(self, node: Node, first, number: float, depth: int) -> Tie | None:
        """:meth:`_ties` at ``number`` of a sum of ``first``'s elements: ``first``'s at ``number / n``, ``n`` the count
        where known (:meth:`_reduced_count`), else at 0 for 0, and at a number ``first`` takes on ranges of which
        ``number`` is a whole multiple (a count the graph does not fix: any, read loosely, as :meth:`_summed`)."""
        n = self._reduced_count(node)
        if n or number == 0:
            found = self._ties(first, number / n if n else 0.0, depth - 1)
            return Tie(found.source) if found is not None else None
        return next((Tie(source) for c, source in self._range_values(first, depth - 1, True)
                     if _number(c) and c and number / c > 0 and _multiple(number / c)), None)

    def _written_ties(self, writer: Node, t, depth: int) -> Tie | None:
        """The ties of the values ``writer`` writes in place, in all of a node (``c.relu_()``, ``c.clamp_(0, 1)``,
        ``m.add_(v)``) or in a part (``c[:, 0].fill_(1.0)``, ``c[:, :2].zero_()``, ``c[:, 1:].clamp_(min=0)``): a
        number it fills in, or those of what it leaves, read with the written node, and what it is a view of, as
        they were before that write."""
        value = _written_value(writer)
        if not isinstance(value, Node):
            return Tie(writer) if _number(v := self._value(value)) and _same(v, t) else None
        return self._read_at(writer, lambda: self._ties(value, t, depth - 1))

    def _at(self, v, t: float) -> bool:
        """Does ``v`` sit at ``t`` on whole ranges (:func:`_disjoint`'s point: ``relu(v)`` and ``relu(-v)`` are both
        0 where ``v = relu(k)`` is)?"""
        return isinstance(v, Node) and self._read_at(None, lambda: self._ties(v, t, 4)) is not None

    def _through_preimages(self, name: str, op, first, number: float, depth: int) -> Tie | None:
        """The ties of a one-to-one op ``op`` (a node or a module, :data:`_ONE_TO_ONE`) of ``first`` at ``number``:
        those of ``first`` at its preimages."""
        found = next((f for c in _preimages(name, op, number) if (f := self._ties(first, c, depth - 1))), None)
        if found is None:  # (no preimage, or none that ties: a value the op takes on its input's grid, as float32
            # saturates, sigmoid(round(h) * 8) >= 1.0 from round(h) = 3 up)
            return next((Tie(source) for v, source in self._images(op, first) if _same(v, number)), None)
        return Tie(found.source)

    def _images(self, op, first) -> list[tuple]:
        """``(value, source)`` for the values the one-to-one op ``op`` (a node, or its module) takes on ``first``'s grid
        (:func:`_grid_points`), computed in float32 as the model computes them (``sigmoid(round(h))``: 0.5 at 0, and
        exactly 1.0 from 17 up, where float32 saturates; ``sigmoid(round(x) + round(2 * x))``, a sum's grid, 0.5 at 0);
        none where ``first`` has no grid."""
        if not isinstance(first, Node):
            return []
        g = self.grid(first)
        return self._images_on(op, g) if g is not None else []

    def _images_on(self, op, g: Grid) -> list[tuple]:
        """:meth:`_images` of the one-to-one op ``op`` on the grid ``g``."""
        key = (op, g)  # (the grid as it is read there: states of a value written in place differ)
        if key not in self._images_found:
            call = _elementwise_call(op)
            self._images_found[key] = [(v, g.source) for v in _images_of(call, _grid_points(g))] if call else []
        return self._images_found[key]

    def _images_in_part(self, op, first, depth: int) -> list[tuple]:
        """:meth:`_images` of ``op`` on the grids ``first`` takes on whole ranges where it has none of its own
        (:meth:`_grids_in_part`: a maximum of two tensors, ``tanh(maximum(trunc(x), x))``: tanh of trunc's values where
        trunc is the larger, 0 on (-1, 0); a sum of two tensors near the top of a walk, ``sigmoid(round(x) + where(x >
        0, round(x), x))``: 0.5 on (0, 0.5))."""
        return [f for g, _ in self._grids_in_part(first, depth) for f in self._images_on(op, g)]

    def _part_base(self, node: Node, depth: int) -> Node | None:
        """``node`` less views and arithmetic with numbers, where it may take a grid on a part, else None: a sum of two
        tensors (:meth:`_sum_of_tensors`: followed, for time, only at a ``depth`` of at least :data:`_SUMS_IN_PART`, or
        under a chain of such arithmetic that starts there, :attr:`_part_chain`), or, in a graph that writes nothing in
        place, an op that keeps no grid on a part: a one-to-one op other than those that are their input from 0 up
        (``tanh(x * 0.9 + 0.1)``: its values on ranges are numbers, :meth:`_op_values`), or an input.  Where None,
        :meth:`_images_in_part` and :meth:`_grids_in_part` have no part to read, and skip the walk they would repeat
        (each one-to-one op of the benchmark's chain reads such a value: +21% of the planner's calls)."""
        node = self._less_arithmetic(node)
        if not isinstance(node, Node):
            return None
        if self._sum_of_tensors(node):
            return node if depth >= _SUMS_IN_PART or node is self._part_chain else None
        if self._any_write() or self.grid(node) is not None:
            return node
        if node.op == "placeholder":
            return None
        if node.op == "call_module":
            module = self._module_of(node)
            name = _MODULE_ONE_TO_ONE.get(type(module)) if module is not None else None
        else:
            name = self._name_of(node) if node.op == "call_function" or node.op == "call_method" else None
            name = name if name in _ONE_TO_ONE else None
        return None if name is not None and name not in _IDENTITY_ABOVE_0 else node

    def _less_arithmetic(self, node):
        """``node`` less the views and the arithmetic with numbers around it (``x * 0.9 + 0.1``: ``x``)."""
        for _ in range(8):
            name = self._name_of(node) if isinstance(node, Node) else None
            operands = [a for a in node.args[:2] if isinstance(a, Node)] if name is not None else []
            if not (name in _VIEWS or name in ("add", "sub", "mul", "div", "truediv", "neg")) or len(operands) != 1:
                return node
            node = operands[0]
        return node

    def _sum_of_tensors(self, node: Node) -> bool:
        """Is ``node``, less views and arithmetic with numbers, a sum or difference of two tensors, not a hand-written
        straight-through value (``x * 0.9 + 0.1`` of ``x = h + 0.1 * d``)?"""
        for _ in range(8):
            name = self._name_of(node) if isinstance(node, Node) else None
            operands = [a for a in node.args[:2] if isinstance(a, Node)] if name is not None else []
            if name in _SUMS and len(operands) == 2:
                return self._straight_through(node) is None
            if not (name in _VIEWS or name in ("add", "sub", "mul", "div", "truediv", "neg")) or len(operands) != 1:
                return False
            node = operands[0]
        return False

    def _flat_numbers(self, node, depth: int) -> list[float]:
        """The numbers ``node`` takes on whole ranges as an op's constant (``relu(b)``: 0), through what keeps values."""
        if not isinstance(node, Node) or depth == 0:
            return []
        found = [c for c in self._constants(node) if _number(c)]
        if node.op == "call_module":
            module = self._module_of(node)
            return found + (self._flat_numbers(_first(node), depth - 1) if module is not None and
                            _keeps_values(module) else [])
        name = self._name_of(node)
        if name is not None and _keeps(name, node):
            found += self._flat_numbers(_first(node), depth - 1)
        return found

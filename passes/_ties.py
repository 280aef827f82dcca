"""Which values a node takes on whole ranges of inputs: a comparison's ties.

SLL's surrogate of ``x > t`` is 1/2 at ``x == t`` at every eps.  For a continuous ``x`` that is a
null set; but ``round(x) > 0`` has ``round(x) == 0`` for every ``x`` in (-0.5, 0.5), and
``F.relu(x) > 0`` has ``relu(x) == 0`` for every ``x <= 0``: rewritten, such a comparison gives 1/2
there, never the model's 0/1.  The planner leaves it hard (``_Planner._plan_comparison``), with a
reason from :meth:`Ties.of`:

- a **grid**: values ``offset + step * k`` only (:class:`Grid`), each taken on whole ranges (a rounded
  value, a count, an integer or bool tensor, ``round(x / s) * s``, ``round(x) / p`` and ``q * (7 / alpha)`` at the
  learned scalar's value now, sums of them; a sum reading one value in terms of one sign, ``q * 0.5 + q``, on that
  value's grid times ``1.5``); ``sign`` is the grid ``1 + 2k`` (its 0 is a single point, unless its input is 0 on
  ranges, also rounded: ``round(2 * sign(x))``), so ``sign(x) > 0`` has no ties but ``sign(a) + sign(b) > 0`` has;
- a **constant** an op takes on a whole range (``relu``'s 0, a clamp's bounds, a ``where`` or
  ``masked_fill`` constant, a constant pad, ``tril``'s zeros), through views, copies, casts, selections,
  max pooling, ``cat`` and arithmetic with a number (``relu(x) * 2 > 0``);
- at 0, a **product** with a factor that is 0 on whole ranges (``x * mask > 0``), a sum or an average of
  values that are 0 there together (``relu(a) + relu(b) > 0``, ``avg_pool(relu(x)) > 0``);
- through **one-to-one** ops at the threshold's preimage (``sigmoid(relu(x)) > 0.5``: :data:`_ONE_TO_ONE`), and at
  the values they take on a grid, in float32 (``round(sigmoid(round(h)) * 3)``: 1.5; 1.0 where sigmoid saturates),
  ``minimum``/``maximum`` with a number (a clamp), of two tensors at either one's ties (``minimum(q, h) < 2``), a
  product with a 0/1 mask at its other factor's constant, a product with (a quotient by) a learned scalar at its
  value now (``clamp(h, 0, 1) * p >= 0.5``), average pooling at any constant;
- through **hand-written straight-through values** (``(r - x).detach() + x``, ``x - (x - r).detach()``, ``r.detach()
  + x - x.detach()``: ``r``'s values) and a **quotient by a learned bound** (``clamp(h, -a, a) / a``: -1 and 1 beyond the clip);
- through **in-place writes**: a written node holds what each write leaves, in graph order (``c.relu_()``,
  ``cnt.add_(spike)``), and so do the views of it taken before a write (``o = q.view(-1); q.sub_(0.5)``); each value
  is read where its reader reads it (a copy taken before a later write keeps what it copied); an attribute a module
  the graph calls may write (``scans.state_written``) is not read;
- at 0, a value less **its own order statistic** (``h - h.min(-1, keepdim=True).values``, a min-max
  normalisation): 0 on an element of each row, on every input; a value less itself (``h - h``, ``h - h.detach()``)
  or an op that is it on a range of it (``h - clamp(h, -2, 1)``: 0 on [-2, 1]); a grid's order
  statistics and its mean over an unknown count are on its grid (``q - q.mean(-1, keepdim=True)``: 0 where a row's
  values are equal);
- for a top-k or argmax, ``minimum``/``maximum`` of two tensors where either one's elements are equal, and a reduction
  over the row's dim kept as a dim of 1 (``minimum(h, h.mean(-1, keepdim=True))``).

The planner orients a comparison first (:meth:`Ties.oriented`: ``self.t < v`` is ``v > self.t``).  Values are
equal, and whole, to a few float32 ulps (:data:`_TOLERANCE`).

A value is a number or a node; a node holding one number (``torch.zeros_like(x)``, a buffer, not a
trainable parameter: the planner's ``number``) counts as that number, any other node only as itself
(``torch.clamp(x, max=alpha) >= alpha``).  Outside the bands of rewritten ops upstream the values are
exact (a rewritten ``round`` is whole outside its bands), which is what the grids describe.  Not
followed: sums and means of values 0 on ranges (``relu(x).sum(-1) > 0`` is 0 only where every element
is), random ops (dropout).
"""

from __future__ import annotations

import math
import operator
from dataclasses import dataclass, replace
from fractions import Fraction
from typing import Callable

import torch
from torch import nn
from torch.ao.quantization import DeQuantStub, FakeQuantizeBase
from torch.fx import GraphModule, Node

from sll_fx import dtypes, rules, scans
from sll_fx.grad_regions import is_detached_call

from ._aliases import _writes
from ._patterns import _THROUGH, _arg, _order_statistic_of, _rank, _same_value
from ._spellings import _op_name
from ._uses import _mutated, _writes_first


@dataclass(frozen=True)
class Grid:
    """Values ``offset + step * k`` (``k`` whole) only, each on whole ranges of inputs; ``source``: the op they come
    from (``round``, ``sign``, an integer tensor); ``values``: exactly which, where known (a buffer of ones: {1}).
    ``scale``: a tensor they are multiplied by (``round(x / s) * s`` with ``s`` a parameter: the node ``s``), or
    None, and ``scale_value`` the number they are multiplied by now, where it holds one; ``divided``: divided by the
    scale instead (``round(h) / p``: ``scale_value`` is ``1 / p`` now); scaled grids add up only with the same scale,
    both multiplied or both divided (:meth:`scaled_as`)."""

    offset: float
    step: float
    source: Node
    values: frozenset | None = None
    scale: Node | None = None
    scale_value: float | None = None
    divided: bool = False

    def hits(self, t: float) -> bool:
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

    def scaled_as(self, other: Grid) -> bool:
        """Are both grids' values multiplied by one same scale (or none), or both divided by it?"""
        return self.scale is other.scale and self.divided == other.divided

    def describe(self) -> str:
        offset = self.offset % self.step
        offset = 0.0 if _multiple(offset / self.step) else offset  # (-1 on the grid of step 1: whole numbers)
        what = ("whole numbers" if offset == 0 and self.step == 1 else f"multiples of {self.step:g}" if offset == 0
                else f"the values {offset:g} + {self.step:g}k")
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


class Ties:
    """The ties of the comparisons of the graph of ``gm``.  ``kinds``: the nodes' inferred dtype kinds (integer,
    bool: whole numbers); ``number(node)``: the one number a node holds that no gradient changes (a buffer, ``zeros_like``),
    else None; ``ranks``: the nodes' numbers of dims, where a fake run with example inputs found them."""

    def __init__(self, gm: GraphModule, kinds: dict, number: Callable[[Node], float | None],
                 ranks: dict | None = None):
        self.gm, self.kinds, self.number = gm, kinds, number
        self.ranks = ranks or {}                 # (nodes -> their number of dims: a fake run with example inputs)
        self._grids: dict[Node, Grid | None] = {}
        self._grid_nesting = 0                   # (grid: calls under way, one inside another)
        self._written_targets: set[str] | None = None
        self._writes_found: list | None = None
        self._written_found: dict | None = None
        self._states: dict[Node, list] = {}      # (written nodes -> their grid before each write, and after the last)
        self._order = {n: i for i, n in enumerate(gm.graph.nodes)}
        self._numbers: dict[Node, object] = {}   # (_value(node), in a graph that writes nothing in place)
        self._folds: dict[tuple, tuple | None] = {}   # (_folded: (node, depth) -> its value)
        self._constants_found: set[Node] | None = None
        self._reader: Node | None = None         # (the node whose reading _ties follows: the comparison, a writer)
        self._writer_nodes: set[Node] | None = None  # (_writers: the nodes that write in place)
        self._writing: bool | None = None        # (_any_write: whether the graph writes anything in place)
        self._names: dict[Node, str | None] = {}  # (_name_of: nodes -> their op's name)
        self._stes: dict[Node, Node | None] = {}  # (_straight_through: nodes -> the hard value they hold)
        self._pairs: dict[Node, tuple] = {}      # (_number_and_node: nodes -> (number, other node))
        self._images_found: dict[tuple, list] = {}  # (_images: (op, grid) -> the values the op takes on it)
        self._metas: dict[Node, torch.Tensor | None] = {}  # (_meta: nodes whose shape is known without inputs)
        self._row_dim: int = -1                  # (flat: the dim of the argmax or top-k, its rows)
        self._row_puts: dict[Node, float] = {}   # (flat: constants put in one element per row so far -> their number)
        self._rank_unknown: Node | None = None   # (flat: a put in one element per row of a dim the rank hides)

    # -- the question the planner asks --------------------------------------------------------------
    def oriented(self, x, t, at: Node | None = None) -> tuple:
        """``(input, threshold)`` of a comparison ``at`` of ``x`` and ``t``: swapped where ``x`` holds one number and
        ``t`` does not (a threshold written first: ``self.t < v``, ``torch.lt(torch.tensor(0.5), v)``)."""
        self._reader = at
        if isinstance(x, Node) and isinstance(t, Node) and _number(self._value(x)) and not _number(self._value(t)):
            return t, x
        return x, t

    def of(self, x, t, at: Node | None = None) -> Tie | None:
        """Does ``x`` equal ``t`` (a number, or a node: a computed threshold) on whole ranges of inputs, where the
        comparison ``at`` reads them (a value written in place later is read as it is there; None: at the end)?"""
        self._reader = at
        t = self._value(t)
        if t is None:
            return None
        found = self._ties(x, t, 8)
        if found is not None or _number(t):
            return found
        g, h = self.grid(x), self.grid(t)  # (both on grids whose difference has 0: pos <= cap, a count against one)
        if g is not None and h is not None and g.scaled_as(h) and (step := _common_step(g.step, h.step)):
            if g.values is not None or h.values is not None:  # (which values, where known: a buffer of zeros)
                known, other = (g, h) if g.values is not None else (h, g)
                return Tie(g.source, g) if any(other.hits(v) for v in known.values) else None
            return Tie(g.source, g) if _multiple((g.offset - h.offset) / step) else None
        if _disjoint(x, t, self._at):  # (relu(h) > relu(-h): 0 together only at h == 0)
            return None
        return next((f for c in self._flat_numbers(t, 8) if (f := self._ties(x, c, 8)) is not None), None)  # (relu(a)
        # > relu(b): both at a constant they take)

    def on_jumps(self, x, kind: str, decimals: int = 0, at: Node | None = None) -> Tie | None:
        """Does ``x``, the input of the elementwise op ``kind`` at ``at`` (``round``, ``floor``, ``ceil``, ``trunc``,
        ``heaviside``), sit on one of the op's jumps on whole ranges of inputs: a grid that holds one (``floor(round(
        h))``), a constant an op takes there (``heaviside(relu(h), 0)``, ``round(relu(h) + 0.5)``)?  The surrogate is
        the middle of the jump there at every eps, never the hard value.  (``sign``'s surrogate is 0 at 0, as the
        op.)"""
        if kind not in _JUMPS or not isinstance(decimals, int) or abs(decimals) > 15:
            return None
        offset, values, skip_zero = _JUMPS[kind]
        unit = 10.0 ** -decimals  # (round(x, decimals=d): its jumps scaled by 10^-d)
        jumps = Grid(offset * unit, unit, x, values)
        self._reader = at
        for value, source in self._range_values(x, 8):
            if isinstance(value, Grid):
                if _grid_meets(value, jumps, skip_zero=skip_zero):
                    return Tie(value.source, value)
            elif jumps.hits(value) and not (skip_zero and value == 0):
                return Tie(source)
        return None

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
                    self._images(module, _first(node), False)  # (nn.Tanh() of ceil(h): -1 and 1 from 9 out)
            keeps = module is not None and _keeps_values(module)
            return found + (self._range_values(_first(node), depth - 1, numbers) if keeps else [])
        name = self._name_of(node)
        if name is None:
            return found
        first = _first(node)
        if _keeps(name, node) or name in _PUTS:
            return found + self._range_values(first, depth - 1, numbers)
        if name in _SUMS and (hard := self._straight_through(node)) is not None:  # ((relu(h) - h).detach() + h: relu's)
            return found + self._range_values(hard, depth - 1, numbers)
        if name in _CLAMPS or name in _EXTREMA:  # (its input's values between its bounds: those beyond are the
            low, high = self._number_bounds(name, node)  # bounds)
            first, bound = self._extremum_operands(node) if name in _EXTREMA else (first, None)
            if isinstance(bound, Node) and not _number(self._value(bound)):  # (of two tensors: each one's, where it is
                return found + [f for a in _taken(name, first, bound)     # the one taken, minimum(h, round(k)))
                                for f in self._range_values(a, depth - 1, numbers)]
            return found + [(v, n) for v, n in self._range_values(first, depth - 1, numbers)
                            if not _number(v) or (low is None or v >= low) and (high is None or v <= high)]
        if name in _ONE_TO_ONE and (call := _elementwise_call(node)) is not None:  # (sqrt(relu(h)): 0)
            if not numbers and name in _IDENTITY_ABOVE_0:
                found = found + self._kept_from_0(first, call)
            return found + _mapped(call, self._range_values(first, depth - 1, True)) + self._images(node, first, False)
            # (sigmoid(round(h)): 0.5 at 0, 1.0 from 17 up)
        if name == "where":
            return found + [f for b in _branches(node) for f in self._range_values(b, depth - 1, numbers)]
        if name in _JOINS and isinstance(first, (list, tuple)):
            return found + [f for a in first for f in self._range_values(a, depth - 1, numbers)]
        if name == "neg":
            return found + [(-v, n) for v, n in self._range_values(first, depth - 1, True) if _number(v)]
        if name == "abs":  # (abs(maximum(h, 1.5)): 1.5)
            return found + [(abs(v), n) for v, n in self._range_values(first, depth - 1, True) if _number(v)]
        if name == "sub" and (reduced := _less_its_extremum(node)) is not None:  # (x - x.min(-1, keepdim=True): 0 on
            # its minimum)
            found = found + [(0.0, reduced)]
        if name == "sub" and (clip := self._less_its_clip(node)) is not None:  # (h - clamp(h, -2, 1): 0 on [-2, 1])
            found = found + [(0.0, clip)]
        c, other = self._number_and_node(node)
        if c is None and name in _ZERO_PRODUCTS:
            return found + self._of_two(node, name, depth, numbers) + (self._ratios(node, depth) if name in _DIVS else
                                                                       []) + self._scaled_values(node, name, depth,
                                                                                                 numbers)
            # (relu(h) * s, r * 0.9 + 0.1 * r: 0 where relu's input is <= 0, whatever the other operand; v * (h > 0):
            # v's numbers where the mask is 1; clamp(h, -a, a) / a: -1 and 1; y * (7 / alpha): y's times 7 / alpha)
        if c is None or name not in ("add", "sub", "rsub", "mul", "truediv", "div") or node.kwargs:
            return found
        if name == "mul" and c == 0:  # (0 * h: 0 everywhere)
            return found + [(0.0, node)]
        inner = [(v, n) for v, n in self._range_values(other, depth - 1, True) if _number(v)]  # (grids: grid() above)
        if name == "add":
            return found + [(v + c, n) for v, n in inner]
        if name == "sub":
            return found + [(v - c if other is first else c - v, n) for v, n in inner]
        if name == "rsub":
            return found + [(c - v if other is first else v - c, n) for v, n in inner]
        if name == "mul":
            return found + [(v * c, n) for v, n in inner]
        return found + [(v / c, n) for v, n in inner if other is first and c]

    def _less_its_clip(self, node: Node) -> Node | None:
        """The op ``c`` where ``node`` is ``x - c`` or ``c - x`` and ``c`` is ``x`` itself on a whole range of ``x``
        (a clamp or relu of it, a leaky relu, ``minimum(x, y)``: :data:`_IDENTITY_ON_A_RANGE`), in a graph that writes
        nothing in place: ``node`` is 0 there (``h - h.clamp(-2, 1) > 0``, ``floor(relu(h) - h)``), else None."""
        if len(node.args) != 2 or node.kwargs or self._any_write():
            return None
        a, b = (_tensor_of(v) for v in node.args)
        for x, c in ((a, b), (b, a)):
            if not isinstance(c, Node) or not c.args:
                continue
            if c.op == "call_module":
                module = self._module_of(c)
                if module is not None and isinstance(module, _MODULES_IDENTITY_ON_A_RANGE) and _tensor_of(c.args[0]) is x:
                    return c
            elif self._name_of(c) in _IDENTITY_ON_A_RANGE and any(_tensor_of(v) is x for v in c.args[:2]):
                return c  # (either operand of minimum/maximum: minimum(y, x))
        return None

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
        + 0.1 * r``, ``h * (h > 0)``), and a factor's numbers where the other is a 0/1 mask at 1 (``where(h < 1, 0.5,
        h) * (h > 0.1)``: 0.5)."""
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
        first = zeros(operands[0], depth, False)
        other = zeros(operands[1], depth, False) if first else []
        if not other or _disjoint(*operands, self._at):
            return []
        # (0 where some op making one term 0 and some op making the other 0 are 0 together: relu(h) and relu(-h), in
        # m.add_(relu(h)); m.add_(relu(-h)), only at 0; relu(h) * relu(k) + relu(-h) on k <= 0 <= h)
        return [(0.0, source) for source in first if any(not _disjoint(source, o, self._at, True) for o in other)]

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

    def flat(self, x, dim: int, at: Node | None = None) -> Tie | None:
        """Are ``x``'s elements equal to one another along ``dim`` on whole ranges of inputs, where ``at`` (the argmax,
        the top-k) reads them: values on a grid (``round(h)``) or a constant an op takes (``relu``'s 0, a fill), where
        ``one_hot(argmax(x, dim))`` and a top-k mask of ``x`` sit on their boundary (a margin of 0: 1/2 at every
        eps)?"""
        self._reader, self._row_dim, self._row_puts, self._rank_unknown = at, dim, {}, None
        return self._flat(x, 8)

    def _flat(self, node, depth: int) -> Tie | None:
        if not isinstance(node, Node) or depth == 0:
            return None
        g = self.grid(node)
        if g is not None:
            return Tie(g.source, g)
        numbers = [c for c in self._constants(node) if _number(c)]  # (relu's 0, a fill, a bound)
        if numbers and not (len(numbers) == 1 and self._one_per_row(node, _first(node), numbers[0])):
            return Tie(node, rows=self._rank_unknown is node)
        writes = self._written_nodes().get(node, ())
        for writer, whole in writes[:self._writes_before(writes)]:  # (c.relu_(), c[:, :2].fill_(1.0): what it leaves,
            value = _written_value(writer)                          # those before the reader)
            if not isinstance(value, Node):  # (a number: in one element per row only, c[:, 0].fill_(1.0), no tie)
                found = Tie(writer, rows=self._rank_unknown is writer) if whole or not self._one_per_row(
                    writer, node, value) else None
            else:  # (read as the writer reads it: m.add_(h) adds h to m's zeros)
                found = self._read_at(writer, lambda: self._flat(value, depth - 1))
            if found is not None:
                return found
        if self._reader is not node and self._any_write():  # (its inputs as it reads them: a copy taken before a
            return self._read_at(node, lambda: self._op_flat(node, depth))  # later fill_)
        return self._op_flat(node, depth)

    def _op_flat(self, node: Node, depth: int) -> Tie | None:
        """:meth:`_flat` of what ``node``'s op makes of its inputs."""
        if _reduced_along(node, self._row_dim):  # (one value for the whole row, as a binary op broadcasts it: the mean
            return Tie(node)                     # in every element above it, minimum(h, h.mean(-1, keepdim=True)))
        if node.op == "call_module":
            module = self._module_of(node)
            passes = module is not None and (type(module) in _MODULE_ONE_TO_ONE or _keeps_values(module))
            return self._flat(_first(node), depth - 1) if passes else None
        name = self._name_of(node)
        if name is None:
            return None
        first = _first(node)
        if _keeps(name, node) or name in _ONE_TO_ONE or name in _SAME_FOR_SAME or name in _PUTS or \
                name in _ACCUMULATING:  # (equal elements stay equal: sigmoid(relu(h)), softmax(relu(h)); a put's rest)
            return self._flat(first, depth - 1)
        if name in _SUMS and (hard := self._straight_through(node)) is not None:  # ((relu(h) - h).detach() + h: relu's)
            return self._flat(hard, depth - 1)
        if name in _JOINS and isinstance(first, (list, tuple)):  # (a part whose elements tie)
            return next((f for a in first if (f := self._flat(a, depth - 1)) is not None), None)
        if name == "where":
            return next((f for b in _branches(node) if (f := self._flat(b, depth - 1)) is not None), None)
        operands = [a for a in node.args[:2] if isinstance(a, Node)]
        if name in _EXTREMA and len(operands) == 2:  # (of two tensors: each one's elements where it is the one taken,
            return next((f for a in _taken(name, *operands) if (f := self._flat(a, depth - 1)) is not None), None)
            # minimum(h, heaviside(h, 0)): 1 in every element from 1 up)
        c, other = self._number_and_node(node)
        if name == "mul" and c == 0:  # (h * 0: 0 everywhere)
            return Tie(node)
        if c is not None and name in ("add", "sub", "rsub", "mul", "truediv", "div", "pow"):  # (relu(h) * 2 + 1)
            return self._flat(other, depth - 1)
        if name == "mul":  # (0 where a factor is 0 on whole ranges, whatever the other: clamp(h, 0, 1) * s)
            return next((f for a in operands if (f := self._ties(a, 0.0, depth - 1)) is not None), None)
        if name in _DIVS:  # (0 where its numerator is: round(h) / (h.abs() + 1); clamp(h, -a, a) / a: -1 and 1)
            ratios = self._ratios(node, depth) if c is None else []
            return Tie(ratios[0][1]) if ratios else self._ties(first, 0.0, depth - 1)
        if name in ("add", "sub") and c is None:  # (r * 0.9 + 0.1 * r: 0 where both are)
            return self._ties(node, 0.0, depth)
        return None

    def _one_per_row(self, put: Node, base: Node, number) -> bool:
        """Does ``put`` (a put, or an in-place write) put ``number`` into one element per row of ``base`` along the
        flat rule's dim only (``h[:, 0].fill_(c)``, ``h[..., 1] = c``, ``h.index_fill(-1, tensor([0]), c)`` for an
        argmax over the last dim), as no other put met so far does: no two elements of a row hold it, so it cannot
        tie the argmax or the top-k?  Dims counted from the front and from the end are the same only where ``base``'s
        rank is known (an exported graph, ``example_inputs``): a symbolic trace runs at any rank."""
        if put in self._row_puts:  # (met again on another path: the same put)
            return True
        dims = _fixed_dims(put, base)
        rank = _rank(base) if base not in self.ranks else self.ranks[base]
        if rank is None and (meta := self._meta(base)) is not None:
            rank = meta.dim()
        row = self._row_dim
        if not any(d == row if (d < 0) == (row < 0) else rank is not None and -rank <= min(d, row) and max(d, row) <
                   rank and d % rank == row % rank for d in dims):
            if rank is None and any((d < 0) != (row < 0) for d in dims):
                self._rank_unknown = put  # (h[:, 0] and argmax(-1): the same dim only on a 2-D h)
            return False
        if any(_same(number, c) for c in self._row_puts.values()):  # (h[:, 0].fill_(5); h[:, 1].fill_(5): a tie)
            return False
        self._row_puts[put] = float(number)
        return True

    def _value(self, v):
        """``v`` as a value: a number (also a node holding one, not an attribute the graph writes), a node, or None
        (a bool, NaN, anything else)."""
        if isinstance(v, Node):
            writing = self._writing if self._writing is not None else self._any_write()
            if not writing:  # (most graphs: read once per node)
                found = self._numbers.get(v, _UNNAMED)
                if found is _UNNAMED:
                    number = self.number(v)
                    found = self._numbers[v] = float(number) if _number(number) else v
                return found
            if v in self._writers() and (w := _written_value(v)) is not v and _number(n := self._value(w)):
                return float(n)  # (empty_like(h).fill_(1.0): the number it fills in)
            number = self.number(v) if not self._stale(v) else None
            return float(number) if _number(number) else v
        return float(v) if _number(v) else None

    def _name_of(self, node: Node) -> str | None:
        """:func:`_name`, worked out once per node (the walks meet a node many times)."""
        name = self._names.get(node, _UNNAMED)
        if name is _UNNAMED:
            name = self._names[node] = _name(node)
        return name

    def _straight_through(self, node: Node) -> Node | None:
        """:func:`_straight_through` of ``node``, once per node."""
        if node not in self._stes:
            self._stes[node] = _straight_through(node, self._name_of, (lambda v: v in self._written_nodes())
                                                 if self._any_write() else None)
        return self._stes[node]

    def _any_write(self) -> bool:
        """Does the graph write anything in place, or call a module that may write its attributes?"""
        if self._writing is None:
            self._writing = bool(self._writes()) or bool(self._written_nodes()) or bool(self._written())
        return self._writing

    def _held_grid(self, v):
        """``v``'s grid for a node, else ``v`` as a number, else None."""
        return self.grid(v) if isinstance(v, Node) else self._value(v)

    def _held(self, v):
        """``v`` as a number, else its grid, else None."""
        v = self._value(v)
        return self.grid(v) if isinstance(v, Node) else v

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
            return self._ties(_first(node), t, depth - 1) if module is not None and _keeps_values(module) else None
        name = self._name_of(node)
        if name is None:
            return None
        first = _first(node)
        if _keeps(name, node):
            return self._ties(first, t, depth - 1)
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
        if name in _CLAMPS:  # (between its bounds: its input's value)
            low, high = (self._value(b) if b is not None else None for b in self._bounds(name, node))
            inside = (low is None or _number(low) and low < number) and (high is None or _number(high) and
                                                                          number < high)
            return self._ties(first, number, depth - 1) if inside else None
        if name == "neg":
            found = self._ties(first, -number, depth - 1)
            return found.mapped(lambda g: g.times(-1)) if found is not None else None
        if name == "abs":
            return (self._ties(first, number, depth - 1) or self._ties(first, -number, depth - 1)) \
                if number >= 0 else None
        if name in _ONE_TO_ONE or name == "pow":  # (sigmoid(relu(x)) > 0.5: relu(x) at sigmoid's preimage of 0.5)
            return self._through_preimages(name, node, first, number, depth)
        c, other = self._number_and_node(node)
        if name == "mul" and c is not None:
            if not c:  # (h * 0: 0 everywhere)
                return Tie(node) if number == 0 else None
            found = self._ties(other, number / c, depth - 1)
            return found.mapped(lambda g: g.times(c)) if found is not None else None
        if name in _DIVS and c is not None and other is first:
            found = self._ties(first, number * c, depth - 1) if c else None
            return found.mapped(lambda g: g.times(1 / c)) if found is not None else None
        if name in ("add", "sub") and c is not None and not node.kwargs:
            if name == "add":
                inner, back = number - c, (lambda g: g.plus(c))
            elif other is first:
                inner, back = number + c, (lambda g: g.plus(-c))
            else:
                inner, back = c - number, (lambda g: (h.plus(c) if (h := g.times(-1)) is not None else None))
            if abs(inner) <= _TOLERANCE * max(abs(number), abs(c)):  # (float32(0.1) - 0.1: 0 to float32 precision)
                inner = 0.0
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
        if name.startswith(_AVG_POOLS):  # (a constant where its window is: avg_pool(relu(x)) > 0, of hardtanh at 2)
            found = self._ties(first, number, depth - 1)
            return Tie(found.source) if found is not None else None
        if c is None and number != 0 and (found := self._scaled_ties(node, name, number, depth)) is not None:
            return found  # (y * (7 / alpha), y / p: y's ties, scaled)
        if name == "mul" and len(operands) == 2 and number != 0:  # (g * m, m a 0/1 mask: g where m is 1)
            for a, b in (operands, operands[::-1]):
                g = self.grid(b)
                if g is not None and g.values is not None and g.values <= {0.0, 1.0} and \
                        (found := self._ties(a, number, depth - 1)) is not None:
                    return Tie(found.source)
            return None
        if name in _DIVS and c is None and (ratio := next((s for k, s in self._ratios(node, depth) if _same(k, number)),
                                                         None)) is not None:  # (clamp(h, -a, a) / a at 1)
            return Tie(ratio)
        if number != 0:
            return None
        if name == "mul" and len(operands) == 2:  # (0 where a factor is 0 on whole ranges)
            found = next((f for a in operands if (f := self._ties(a, 0.0, depth - 1)) is not None), None)
            return Tie(found.source) if found is not None else None
        if name in _DIVS and isinstance(first, Node) and c is None:
            found = self._ties(first, 0.0, depth - 1)
            return Tie(found.source) if found is not None else None
        if name == "sub" and (reduced := _less_its_extremum(node)) is not None:  # (x - x.min(): 0 on its minimum)
            return Tie(reduced)
        if name == "sub" and (clip := self._less_its_clip(node)) is not None:  # (h - clamp(h, -2, 1): 0 on [-2, 1])
            return Tie(clip)
        if name in ("add", "sub") and len(operands) == 2:  # (0 where the ops making each term 0 are 0 together: not
            zero = self._of_two(node, name, depth, False)  # h * (h > 0) + 0.1 * h * (h <= 0), a leaky relu)
            return Tie(zero[0][1]) if zero else None
        return None

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

    def _read_at(self, reader: Node, ask):
        """``ask()`` with the values written in place read as ``reader`` reads them (:attr:`_reader`)."""
        before, self._reader = self._reader, reader
        try:
            return ask()
        finally:
            self._reader = before

    def _writes_before(self, writes: list) -> int:
        """How many of ``writes`` (a node's, in graph order) come before the node being read (:attr:`_reader`)."""
        if self._reader is None or not writes:
            return len(writes)
        at = self._order.get(self._reader, len(self._order))
        return sum(1 for w, _ in writes if self._order.get(w, -1) < at)

    def _through_preimages(self, name: str, op, first, number: float, depth: int) -> Tie | None:
        """The ties of a one-to-one op ``op`` (a node or a module, :data:`_ONE_TO_ONE`) of ``first`` at ``number``:
        those of ``first`` at its preimages."""
        found = next((f for c in _preimages(name, op, number) if (f := self._ties(first, c, depth - 1))), None)
        if found is None:  # (no preimage, or none that ties: a value the op takes on its input's grid, as float32
            # saturates, sigmoid(round(h) * 8) >= 1.0 from round(h) = 3 up)
            return next((Tie(source) for v, source in self._images(op, first) if _same(v, number)), None)
        return Tie(found.source)

    def _images(self, op, first, sums: bool = True) -> list[tuple]:
        """``(value, source)`` for the values the one-to-one op ``op`` (a node, or its module) takes on ``first``'s grid
        (:func:`_grid_points`), computed in float32 as the model computes them (``sigmoid(round(h))``: 0.5 at 0, and
        exactly 1.0 from 17 up, where float32 saturates); none where ``first`` has no grid, nor, unless ``sums``, where
        it is a sum of two tensors (a residual stream's, ``tanh(x * 0.9 + 0.1)``: rarely a grid, and costly to rule
        out; a comparison reads its grid anyway)."""
        if not isinstance(first, Node) or not sums and self._sum_of_tensors(first):
            return []
        g = self.grid(first)
        if g is None:
            return []
        key = (op, g)  # (the grid as it is read there: states of a value written in place differ)
        if key not in self._images_found:
            call = _elementwise_call(op)
            self._images_found[key] = [(v, g.source) for v in _images_of(call, _grid_points(g))] if call else []
        return self._images_found[key]

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

    # -- what an op takes on whole ranges -------------------------------------------------------------
    def _constants(self, node: Node) -> list:
        """The values (numbers, nodes) the op at ``node`` takes on whole ranges of its input (``relu``: 0)."""
        if node.op == "call_module":
            module = self._module_of(node)
            return list(_module_constants(module)) if module is not None else []
        name = self._name_of(node)
        if name is None:
            return []
        if name in _CLAMPS:
            found = [b for b in self._bounds(name, node) if b is not None]
        elif name in _EXTREMA:
            found = [bound] if (bound := self._extremum_operands(node)[1]) is not None else []
        elif name == "threshold":
            found = [_arg(node, 2, "value")]
        elif name in _PUTS:  # (the value put in: where it is)
            found = [put] if (put := _put(name, node)) is not None else []
        elif name == "where":
            found = list(_branches(node))
        elif name == "pad" and _arg(node, 2, "mode", "constant") == "constant":
            found = [_arg(node, 3, "value", None) or 0]
        elif name == "constant_pad_nd":
            found = [_arg(node, 2, "value", 0)]
        else:
            found = list(_CONSTANTS.get(name, ()))
        return [v for c in found if (v := self._value(c)) is not None]

    def _number_bounds(self, name: str, node: Node) -> tuple:
        """``(low, high)`` of a clamp, ``maximum``/``minimum`` of a value: the numbers, None where none (unbounded,
        or a bound that is no number)."""
        if name in _CLAMPS:
            bounds = self._bounds(name, node)
        else:
            bound = self._extremum_operands(node)[1]
            bounds = (bound, None) if name in ("maximum", "fmax") else (None, bound)
        return tuple(v if _number(v := self._value(b)) else None for b in bounds)

    def _extremum_operands(self, node: Node) -> tuple:
        """``(input, bound)`` of ``maximum``/``minimum``: the bound is the operand holding a number, also written first
        (``torch.maximum(torch.tensor(-1.0), v)``: ``v`` is the input)."""
        a, b = (*node.args[:2], None, None)[:2]
        if isinstance(a, Node) and _number(self._value(a)) and not _number(self._value(b)):
            return b, a
        return a, b

    def _bounds(self, name: str, node: Node) -> tuple:
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

    def _number_and_node(self, node: Node) -> tuple:
        """Of a binary op's two operands, the number (a node holding one too) or None, and the other node (once per
        node in a graph that writes nothing in place, where :meth:`_value` reads no position)."""
        if self._any_write():
            return self._find_number_and_node(node)
        found = self._pairs.get(node)
        if found is None:
            found = self._pairs[node] = self._find_number_and_node(node)
        return found

    def _find_number_and_node(self, node: Node) -> tuple:
        args = node.args
        if len(args) < 2:
            return None, None
        a, b = args[:2]
        for number, other in ((b, a), (a, b)):
            if isinstance(other, Node) and _number(v := self._value(number)):
                return v, other
        return None, None

    # -- grids ---------------------------------------------------------------------------------------
    def grid(self, node) -> Grid | None:
        """The grid ``node``'s values lie on (outside the bands of rewritten ops upstream), else None."""
        if not isinstance(node, Node):
            return None
        if node not in self._grids:
            if self._grid_nesting > _GRID_NESTING:  # (a long chain, a recurrence unrolled over 100 steps: its inputs'
                self._warm_grids(node)              # grids first, in graph order, so that no call nests deeper)
            self._grid_nesting += 1
            try:
                self._find_grid(node)
            finally:
                self._grid_nesting -= 1
        if self._reader is not None and (states := self._states.get(node)) is not None:  # (written in place later:
            k = self._writes_before(self._written_nodes()[node])  # what it holds where it is read, o = a.clone();
            if k < len(states):                                   # a.add_(h); floor(o - 1.0): a's round grid)
                return states[k]
        return self._grids[node]

    def _warm_grids(self, node: Node) -> None:
        """The grids of ``node``'s inputs, and theirs, not found yet, in graph order: each call finds its inputs'."""
        todo, found = [node], set()
        while todo:
            for a in todo.pop().all_input_nodes:
                if a not in found and a not in self._grids:
                    found.add(a)
                    todo.append(a)
        before, self._grid_nesting = self._grid_nesting, 0
        try:
            for a in sorted(found, key=lambda n: self._order.get(n, -1)):
                self.grid(a)
        finally:
            self._grid_nesting = before

    def _find_grid(self, node: Node) -> None:
        """Put ``node``'s grid, and its states before each in-place write, in :attr:`_grids` and :attr:`_states`."""
        self._grids[node] = None  # (a cycle: none)
        found = self._read_at(node, lambda: self._grid(node, 8))  # (its inputs as it reads them)
        writes = self._written_nodes().get(node, ())
        if writes and found is None and _attribute(node) not in self._written() and not \
                self._reads_written(node) and _number(held := self.number(node)):  # (a start value: zeros_like(x);
            # not an attribute the graph writes, whose value at the start of a call is what the call before left,
            # nor a value computed from one written before: v = -m after m.add_(h))
            found = Grid(float(held), 1.0, node, frozenset((float(held),)))
        states = []
        for writer, whole in writes:  # (written in place, in graph order: what it holds before each write, for
            states.append(found)       # the writer)
            self._grids[node] = found
            value = self._held(_written_value(writer))
            if _number(value):
                value = Grid(float(value), 1.0, writer, frozenset((float(value),)))
            found = value if whole else _union([found, value])  # (c.relu_(): its result; c[0].add_(0.5): a part)
        if writes:
            self._states[node] = states
        self._grids[node] = found

    def _grid(self, node: Node, depth: int) -> Grid | None:
        first = _first(node)
        if node.op == "call_method" and node.target in _INT_CASTS:  # (w.sign().int(): the sign's)
            found = self.grid(first)
            if found is not None:
                return found
        value, moving = self._folded(node, 4) or (None, False)  # (a buffer; round(w) of a parameter: its values now)
        if value is not None and not moving:
            found = _tensor_grid(value, node)
            if found is not None or node.op == "get_attr":
                return found
        if node.op == "get_attr":  # (a trainable one: no grid, it moves; one the graph writes: read before that)
            return self._int_grid(node)
        found = self._structural_grid(node, depth)
        if found is not None and value is not None and found.scale is None and (now := _tensor_grid(value, node)):
            return replace(found, values=now.values)  # (round(w): whole numbers, which ones read now)
        return found

    def _structural_grid(self, node: Node, depth: int) -> Grid | None:
        first = _first(node)
        if (found := self._int_grid(node)) is not None:
            return found
        if self._name_of(node) in _SUMS and (hard := self._straight_through(node)) is not None:  # (LSQ's round_pass,
            return self.grid(hard)  # (x.round() - x).detach() + x: the round's values)
        if _number(c := self._value(node)):  # (torch.zeros_like(x), a membrane's start: that one value)
            return Grid(c, 1.0, node, frozenset((c,)))
        if depth == 0:
            return None
        if node.op == "call_module":
            module = self._module_of(node)
            if _fake_quantizer(module) or _fake_quantizer(getattr(module, "activation_post_process", None)) and any(
                    "activation_post_process" in getattr(getattr(h, "__code__", None), "co_names", ())
                    for h in module._forward_hooks.values()):
                return Grid(0.0, 1.0, node, scale=node)  # ((q - zero_point) * scale: 0 on a range; scale as it
                # observes; eager QAT's modules, whose hook fake-quantizes their output, too)
            if isinstance(module, nn.AvgPool1d | nn.AvgPool2d | nn.AvgPool3d):
                dims = 1 if isinstance(module, nn.AvgPool1d) else 2 if isinstance(module, nn.AvgPool2d) else 3
                return self._averaged(self.grid(first), node, *_avg_window(
                    module.kernel_size, module.padding, module.ceil_mode, module.count_include_pad,
                    getattr(module, "divisor_override", None), dims))
            return self.grid(first) if module is not None and _keeps_values(module) else None
        if (statistic := _order_statistic_values(node)) is not None:  # (q.max(-1).values, q.topk(2)[0])
            return self.grid(_first(statistic))
        name = self._name_of(node)
        if name is None:
            return None
        if name in _WHOLE_OPS:
            decimals = _arg(node, 1, "decimals", 0) if name == "round" else 0
            if not isinstance(decimals, int) or abs(decimals) > 15:
                return None
            if name in _JUMPS and not decimals and (g := self.grid(first)) is not None and _on(g, Grid(0.0, 1.0, node)):
                return g  # (whole already: its input's values, round(2 * sign(h))'s -2 and 2, its 0 a single point)
            return Grid(0.0, 10.0 ** -decimals, node)
        if name in ("fake_quantize_per_tensor_affine", "fake_quantize_per_channel_affine"):
            scale = _arg(node, 1, "scale")
            if _number(scale):
                return Grid(0.0, float(scale), node)
            return Grid(0.0, 1.0, node, scale=scale, scale_value=self._scalar(scale)) if isinstance(scale, Node) \
                else None
        if name == "fused_moving_avg_obs_fake_quant":  # (torch.ao's default QAT fake quantizer, traced: its scale as
            return Grid(0.0, 1.0, node, scale=node)      # it observes; on or off, a warm-up turns it on later)
        if name == "heaviside":
            return Grid(0.0, 1.0, node, frozenset((0.0, 1.0)))  # (its values= at exactly 0: a single point)
        if name == "sign":  # (+-1: its 0 is a single point, unless its input is 0 on ranges)
            if self._ties(first, 0.0, 8) is not None:
                return Grid(0.0, 1.0, node, frozenset((-1.0, 0.0, 1.0)))
            return Grid(1.0, 2.0, node, frozenset((-1.0, 1.0)))
        if _keeps(name, node):
            return self.grid(first)
        if name in _CLAMPS or name in _EXTREMA:  # (its bounds on the grid: on it)
            g = self.grid(self._extremum_operands(node)[0] if name in _EXTREMA else first)
            if g is None:
                return None
            constants = self._constants(node)
            bounds = [v for c in constants if (v := c if _number(c) else self.grid(c)) is not None]
            if len(bounds) < len(constants) or not all(
                    _on(b, g) if isinstance(b, Grid) else g.hits(b) for b in bounds):
                return None
            if g.values is None or g.scale is not None or not all(_number(b) for b in bounds):
                return replace(g, values=None)
            low, high = self._number_bounds(name, node)  # (which values, where known: relu of {0, 1}: {0, 1})
            return replace(g, values=frozenset(min(max(v, -math.inf if low is None else low),
                                                   math.inf if high is None else high) for v in g.values))
        if name == "neg":
            g = self.grid(first)
            return g.times(-1) if g is not None else None
        if name == "abs":
            g = self.grid(first)  # (|o + sk| is on the grid when -o is; which values, where known)
            if g is not None and g.values is not None and g.scale is None and (values := sorted(
                    {abs(v) for v in g.values})):
                step = min((v - values[0] for v in values[1:]), default=g.step)  # (|-0.5|, |1.5|: 0.5 + 1k)
                if all(_multiple((v - values[0]) / step) for v in values):
                    return Grid(values[0], step, g.source, frozenset(values))
            return replace(g, values=None) if g is not None and _multiple(2 * g.offset / g.step) else None
        c, other = self._number_and_node(node)
        if name == "mul" and len(node.args) > 1:
            if c == 0:  # (h * zeros_like(h): 0)
                return Grid(0.0, 1.0, node, frozenset((0.0,)))
            if c is not None:
                g = self.grid(other)
                return g.times(c) if g is not None else None
            g, h = self.grid(node.args[0]), self.grid(node.args[1])
            if g is not None and h is not None:
                return _product(g, h)
            if (g is None) == (h is None):
                return None
            grid, factor = (g, node.args[1]) if g is not None else (h, node.args[0])  # (round(x / s) * s)
            return self._scaled(grid, factor) if isinstance(factor, Node) else None
        if name in _DIVS:
            if c is None and len(node.args) == 2 and not node.kwargs and isinstance(node.args[1], Node):
                return self._scaled(self.grid(first), node.args[1], divided=True)  # (round(h) / p)
            g = self.grid(first) if c is not None and other is first else None
            return g.times(1 / c) if g is not None and c else None
        if name in _ORDER_STATISTICS_OF_ONE and isinstance(first, Node) and (
                name in ("amax", "amin") or len(node.args) == 1 and not node.kwargs):  # (an element of its input:
            return self.grid(first)  # h.amin(-1, keepdim=True) of a grid, and q - q.amin(...) on it; max(dim) below)
        if name == "sub" and len(node.args) == 2 and not node.kwargs and self._cancels(*node.args):  # (h - h: 0 on
            return Grid(0.0, 1.0, node, frozenset((0.0,)))  # every input)
        if name in ("add", "sub") and len(node.args) > 1:
            alpha = node.kwargs.get("alpha", 1)
            if not _number(alpha) or set(node.kwargs) - {"alpha"}:
                return None
            if (pair := _difference(name, node, alpha)) is not None and (found := self._shifted_back(*pair)):
                return found
            if (found := self._combined(node)) is not None:  # (q * 0.5 + q: 1.5 q, not the common grid of its terms)
                return found
            a = self._held_grid(node.args[0])
            b = self._held_grid(node.args[1]) if a is not None else None  # (not both: the first has none)
            if a is None or b is None:
                return None
            sign = alpha if name == "add" else -alpha
            if not isinstance(b, Grid):
                return a.plus(sign * b) if isinstance(a, Grid) and _number(b) else None
            b = b.times(sign)
            if b is None or not isinstance(a, Grid):  # (a number minus a grid: 1 - m)
                return b.plus(a) if b is not None and _number(a) else None
            step = _common_step(a.step, b.step)
            if step is None or not a.scaled_as(b):
                return None
            return _grid(a, offset=a.offset + b.offset, step=step, values=None)
        if name in ("mean", "nanmean") and (n := self._reduced_count(node)):  # (T steps' spikes: j / T)
            g = _sum(self.grid(first))
            return g.times(1 / n) if g is not None and g.scale is None else None
        if name in ("mean", "nanmean"):  # (n unknown: on the grid of step / n for the n it has; its input's grid,
            g = self.grid(first)          # which a row of equal values takes, is read: q - q.mean(-1, keepdim=True)
            return replace(g, values=None) if g is not None else None  # is 0 there; not its halves for an even n)
        if name in ("sum", "cumsum", "nansum", "cumulative_sum"):  # (n values o + sk: n*o + s*k, n unknown)
            g = self.grid(first)  # (a scale that is no single number: each element its own, (x * sign(w)).sum(-1)
            return _sum(g) if g is None or g.scale is None or self._scalar(g.scale) is not None else None  # none)
        if name in ("matmul", "mm", "bmm", "mv", "dot", "inner", "outer"):
            return _sum(_product(self.grid(first), self.grid(node.args[1]))) if len(node.args) > 1 else None
        if name in ("remainder", "fmod", "mod") and c is not None and other is first:
            g = self.grid(first)
            ok = g is not None and g.scale is None and g.offset == 0 and _multiple(c / g.step)
            return replace(g, values=None) if ok else None
        if name == "where":
            found = [self.grid(b) if isinstance(b, Node) and self._value(b) is b else self._value(b)
                     for b in _branches(node)]
            if len(found) != 2 or None in found:
                return None
            if not any(isinstance(g, Grid) for g in found):  # (two numbers: torch.where(c, 1.0, 0.0))
                a, b = found
                return Grid(b, abs(a - b), node, frozenset((a, b))) if a != b else None
            return _union(found)
        if name in _JOINS and isinstance(first, (list, tuple)):
            return _union([self.grid(a) for a in first])
        if name in _PUTS:  # (a grid with values put in: zeros_like(l).scatter(
            put = _put(name, node)
            if put is None:
                return None
            put = self.grid(put) if isinstance(put, Node) and self._value(put) is put else self._value(put)
            return _union([self.grid(first), put]) if put is not None else None  # -1, i, 1.0): counts of top-k)
        if name.startswith(("avg_pool1d", "avg_pool2d", "avg_pool3d")):
            dims = int(name[-2])
            return self._averaged(self.grid(first), node, *_avg_window(
                _arg(node, 1, "kernel_size"), _arg(node, 3, "padding", 0), _arg(node, 4, "ceil_mode", False),
                _arg(node, 5, "count_include_pad", True), _arg(node, 6, "divisor_override") if dims > 1 else None, dims))
        return None

    def _cancels(self, a, b) -> bool:
        """Is ``a - b`` 0 for every input: one same tensor (``h - h``, ``h - h.detach()``, ``h.clamp_(0, 1) - h``: an
        alias reads every write of the other), or the same call of the same values twice (``relu(h) - relu(h)``,
        where the graph writes nothing in place)?"""
        if not isinstance(a, Node):
            return False
        a, b = _tensor_of(a), _tensor_of(b)
        return a is b or not self._any_write() and _same_value(a, b)

    def _reduced_count(self, mean: Node) -> int | None:
        """How many elements ``mean`` (``x.mean(dim)``, ``torch.mean(x, dim)``) averages, where known: the number of
        tensors stacked along that dim (``torch.stack(spikes, 0).mean(0)``), or the sizes of ``x``'s known shape."""
        x, dim = _first(mean), _arg(mean, 1, "dim")
        if isinstance(dim, (list, tuple)) and len(dim) == 1:
            dim = dim[0]
        if isinstance(x, Node) and _name(x) == "stack" and isinstance(dim, int) and \
                isinstance(tensors := _first(x), (list, tuple)) and _arg(x, 1, "dim", 0) == dim:
            return len(tensors)
        meta = self._meta(x)
        if meta is None or dim is None and len(mean.args) < 2:  # (all of it)
            return meta.numel() if meta is not None else None
        dims = dim if isinstance(dim, (list, tuple)) else (dim,)
        if not all(isinstance(d, int) and -meta.dim() <= d < meta.dim() for d in dims):
            return None
        return math.prod(meta.shape[d] for d in dims)

    def _combined(self, node: Node) -> Grid | None:
        """The grid of a sum that reads one same value in more than one term (``q * 0.5 + q``; a leaky integrator fed
        the same ``q``, ``v = 0.8 * v + q``: ``1.8 q``), each value's grid times its coefficients added up, where they
        have one sign (no cancellation: the float32 sum is that multiple to a few ulps) and the graph writes nothing
        in place (each term reads the same values); else None (the common grid of its terms, a coarser one)."""
        if self._any_write() or (form := self._linear(node, 8)) is None:
            return None
        terms, shift = form
        merged: dict[Node, list[float]] = {}
        for v, k in terms:
            merged.setdefault(v, []).append(k)
        if len(merged) == len(terms) or any(min(ks) < 0 < max(ks) for ks in merged.values()):
            return None
        grids = [g.times(sum(ks)) if (g := self.grid(v)) is not None else None for v, ks in merged.items()]
        if None in grids or not all(g.scaled_as(grids[0]) for g in grids[1:]):
            return None
        step = grids[0].step
        for g in grids[1:]:
            if (step := _common_step(step, g.step)) is None:
                return None
        found = _grid(grids[0], offset=sum(g.offset for g in grids), step=step,
                      values=grids[0].values if len(grids) == 1 else None)
        return found.plus(shift) if found is not None else None

    def _linear(self, node, depth: int) -> tuple[list, float] | None:
        """``node`` as ``sum(k * v) + c``: ``([(v, k), ...], c)`` over the values ``v`` it adds up through sums,
        differences, and products and quotients with numbers (``q * 0.5 + q``: ``([(q, 0.5), (q, 1.0)], 0.0)``); None
        for a product with 0."""
        if _number(v := self._value(node)):
            return [], v
        name = self._name_of(node) if isinstance(node, Node) and depth > 0 else None
        c, other = self._number_and_node(node) if name is not None else (None, None)
        if name in ("add", "sub") and len(node.args) == 2 and set(node.kwargs) <= {"alpha"} and \
                _number(alpha := node.kwargs.get("alpha", 1)):
            a, b = (self._linear(x, depth - 1) for x in node.args)
            if a is None or b is None:
                return None
            sign = alpha if name == "add" else -alpha
            return a[0] + [(v, k * sign) for v, k in b[0]], a[1] + sign * b[1]
        if name == "neg":
            c, other = -1.0, _first(node)
        elif name in _DIVS and c and other is _first(node) and not node.kwargs:
            c = 1 / c
        elif name != "mul" or node.kwargs:
            c = None
        if c is None or not c:
            return ([(node, 1.0)], 0.0) if c is None and isinstance(node, Node) else None
        inner = self._linear(other, depth - 1)
        return ([(v, k * c) for v, k in inner[0]], inner[1] * c) if inner is not None else None

    def _scaled(self, g: Grid | None, factor: Node, divided: bool = False) -> Grid | None:
        """``g``'s values times the tensor ``factor`` (``round(x / s) * s``, ``q * (7 / alpha)``) or, ``divided``,
        divided by it (``round(h) / p``), at the number it holds now (:meth:`_scalar`; a product's 0 only where it
        holds none); None for a grid scaled already, or a divisor that holds no number (other than 0) now."""
        if g is None or g.scale is not None:
            return None
        value = self._scalar(factor)
        if divided and not value:
            return None
        return replace(g, scale=factor, scale_value=1 / value if divided else value, divided=divided)

    def _scaled_operands(self, node: Node, name: str) -> list[tuple]:
        """``(value, factor, divided)`` of a product of two tensors (``y * (7 / alpha)``, either way round) or a
        quotient of two (``y / p``) whose factor, the divisor, holds one number now (:meth:`_scalar`)."""
        operands = node.args[:2] if len(node.args) == 2 and not node.kwargs else ()
        if not operands or not all(isinstance(a, Node) for a in operands):
            return []
        pairs = [(*operands, True)] if name in _DIVS else [(*operands, False), (*operands[::-1], False)] \
            if name == "mul" else []
        return [(v, f, divided) for v, f, divided in pairs if self._scalar(f)]

    def _scaled_values(self, node: Node, name: str, depth: int, numbers: bool) -> list[tuple]:
        """:meth:`_range_values` of a product with, or a quotient by, a tensor holding one number now, of a value with
        no grid of its own (PACT's ``minimum(relu(a), alpha) * (7 / alpha)``): the value's, scaled by it."""
        found = []
        for v, factor, divided in self._scaled_operands(node, name):
            k = self._scalar(factor)
            for w, source in self._range_values(v, depth - 1, numbers):
                w = self._scaled(w, factor, divided) if isinstance(w, Grid) else w / k if divided else w * k
                if w is not None:
                    found.append((w, source))
        return found

    def _scaled_ties(self, node: Node, name: str, number: float, depth: int) -> Tie | None:
        """:meth:`_ties` at ``number`` of a product with, or a quotient by, a tensor holding one number now: its value's
        at ``number`` divided (multiplied) by it (``y * (7 / alpha) >= 3.5``: ``y`` at 2 for ``alpha`` 4 now)."""
        for v, factor, divided in self._scaled_operands(node, name):
            k = self._scalar(factor)
            if (found := self._ties(v, number * k if divided else number / k, depth - 1)) is not None:
                return found.mapped(lambda g: self._scaled(g, factor, divided))
        return None

    def _averaged(self, g: Grid | None, node: Node, k: int | None, varying: bool) -> Grid | None:
        """The grid of an average pooling of ``g``'s values over ``k`` of them (``varying``: fewer at the edges)."""
        if g is None or not k or g.scale is not None or g.offset != 0:
            return None
        if not varying:  # (j / k for j of k values: not only the values / k)
            return replace(g, values=None).times(1 / k)
        if g.values is None or not g.values <= {0.0, 1.0} or k > 16:  # (edge windows divide by fewer: 0/1 spikes
            return None                                                 # average to j / m for m <= k)
        return Grid(0.0, 1 / math.lcm(*range(1, k + 1)), node, frozenset(j / m for m in range(1, k + 1)
                                                                       for j in range(m + 1)))

    def _folded(self, node, depth: int) -> tuple[torch.Tensor, bool] | None:
        """The value now of a small tensor computed from tensor attributes alone (a buffer; ``round(w)`` of a
        parameter, whose zeros make a product 0 for every input): a ``get_attr`` or an op of :data:`_FOLDABLE` on
        such values and numbers, and whether a gradient moves it (a trainable parameter in it); else None (also for
        an attribute the graph writes in place, an observer's scale: its value now is not what the graph reads)."""
        if not isinstance(node, Node) or depth == 0 or node in self._written_nodes():
            return None
        if node not in self._constant_nodes():  # (computed from an input: nothing to fold)
            return None
        key = (node, depth)
        if key not in self._folds:  # (once per node and depth: a chain's nodes are asked again by each node after)
            self._folds[key] = self._fold(node, depth)
        return self._folds[key]

    def _constant_nodes(self) -> set[Node]:
        """The nodes computed from tensor attributes and numbers alone (no input, no random op reads), found once."""
        if self._constants_found is None:
            found: set[Node] = set()
            for n in self.gm.graph.nodes:
                if n.op == "get_attr" or n.op in ("call_function", "call_method") and all(
                        a in found for a in n.all_input_nodes) and n.all_input_nodes:
                    found.add(n)
            self._constants_found = found
        return self._constants_found

    def _fold(self, node: Node, depth: int) -> tuple[torch.Tensor, bool] | None:
        if node.op == "get_attr":
            t = dtypes.fetch_attr(self.gm, node.target)
            ok = isinstance(t, torch.Tensor) and t.device.type != "meta" and 0 < t.numel() <= 4096
            return (t.detach(), t.requires_grad) if ok and node.target not in self._written() else None
        name = self._name_of(node)
        if name not in _FOLDABLE or node.kwargs and name not in ("round", "clamp", "clip"):
            return None
        args = [self._folded(a, depth - 1) if isinstance(a, Node) else (a, False) for a in node.args]
        if not args or None in args or not any(isinstance(a, torch.Tensor) for a, _ in args):  # (7.0 / alpha: a number
            return None                                                                          # first, too)
        try:
            with torch.no_grad():
                out = getattr(torch, _FOLDED_AS.get(name, name))(*[a for a, _ in args], **node.kwargs)
        except Exception:  # (an argument this op does not take: not folded)
            return None
        moving = any(m for _, m in args)
        return (out, moving) if isinstance(out, torch.Tensor) and out.numel() <= 4096 else None

    def _written(self) -> set[str]:
        """The targets of the tensor attributes the graph writes in place (through views too), and of those of the
        modules it calls whose code may write them (an opaque child's ``self.aux.fill_(...)``; a BatchNorm's running
        statistics: their value now is stale; ``scans.state_written``)."""
        if self._written_targets is None:
            self._written_targets = set()
            called = tuple(f"{n.target}.{p}." if p else f"{n.target}." for n in self.gm.graph.nodes
                           if n.op == "call_module" and (m := self._module_of(n)) is not None
                           for p in scans.state_written(m))
            self._written_targets.update(n.target for n in self.gm.graph.nodes
                                         if n.op == "get_attr" and n.target.startswith(called))
            self._written_targets.update(target for _, targets in self._writes() for t in targets
                                         if (target := _viewed_attribute(t)) is not None)  # (through views: z = self.thr
        return self._written_targets                                                   # + h; z.relu_() writes z)

    def _stale(self, node: Node) -> bool:
        """Is ``node`` an attribute, or made from one through its first node arguments (a view, a cast, a clone,
        ``2 * v``), that the graph writes in place on the way (``self.zp``; ``c`` for ``c = self.zp.clone();
        c[0].add_(0.5)``): its value now is not what the graph reads?"""
        if not self._any_write():
            return False
        if _attribute(node) in self._written():
            return True
        written = self._written_nodes()
        for _ in range(_VIEW_DEPTH):
            if not isinstance(node, Node):
                return False
            if node in written and self._writes_before(written[node]):  # (not where read before its first write)
                return True
            if _name(node) in _SHAPE_ONLY:  # (zeros_like(h): h's values are not read)
                return False
            node = _first_node(node)
        return False

    def _reads_written(self, node: Node) -> bool:
        """Is ``node`` computed, through its first node arguments, from a node the graph writes in place (``-m`` after
        ``m.add_(h)``: not the number ``m`` started as)?"""
        written = self._written_nodes()
        for _ in range(_VIEW_DEPTH):
            node = _first_node(node) if isinstance(node, Node) and _name(node) not in _SHAPE_ONLY else None
            if not isinstance(node, Node):
                return False
            if node in written:
                return True
        return False

    def _written_nodes(self) -> dict[Node, list[tuple[Node, bool]]]:
        """The nodes the graph writes in place, directly or through views of them (``c`` for ``c[0].add_(0.5)``), and
        the views of those taken before the write (``o = q.view(-1, 8); q.sub_(0.5)``: ``o`` holds what ``q`` does) ->
        ``(writer, whether it writes all of it)``, in graph order."""
        if self._written_found is None:
            self._written_found = {}
            for writer, targets in self._writes():
                seen = set()
                for t in targets:
                    for v in _viewed(t):
                        whole = v is t or self._covers(t, v)
                        for u in (v, *_views_before(v, self._order.get(writer, -1), self._order)):
                            if u not in seen:
                                seen.add(u)
                                self._written_found.setdefault(u, []).append((writer, whole))
        return self._written_found

    def _covers(self, view: Node, node: Node) -> bool:
        """Is ``view``, a view of ``node``, all of it: through views that keep every element (``view(-1)``, ``[:]``,
        ``t()``; a reshape of an input known to be contiguous), or where both shapes are known (:meth:`_meta`:
        ``c.view(1)[0]`` of a 0-d clone of a buffer), no view on the way may copy (``reshape`` of a non-contiguous
        tensor) and none repeats elements (``expand``)?  Unknown: a part."""
        on_the_way = list(_viewed(view))
        if node not in on_the_way:
            return False
        on_the_way = on_the_way[:on_the_way.index(node)]
        if all(self._all_of_it(n) for n in on_the_way):
            return True
        if any(_name(n) in _ALL_IF_CONTIGUOUS for n in on_the_way):  # (a copy, maybe, of a part or of all: a part)
            return False
        a, b = self._meta(view), self._meta(node)
        return a is not None and b is not None and a.numel() == b.numel() and \
            not any(_name(n) in _REPEATING for n in on_the_way)

    def _all_of_it(self, view: Node) -> bool:
        """Does the view ``view`` show every element of its input once (a permutation, a full slice; a reshape of an
        input known to be contiguous, :meth:`_meta`)?"""
        name = _name(view)
        if name == "getitem":
            index = view.args[1] if len(view.args) > 1 else None
            parts = index if isinstance(index, tuple) else (index,)
            return all(p is Ellipsis or isinstance(p, slice) and p == slice(None) for p in parts)
        if name in _ALL_IF_CONTIGUOUS:
            known = self._meta(_first(view))
            return known is not None and known.is_contiguous()
        return name in _ALL_VIEWS or bool(_mutated(view))  # (an in-place call's result: all it wrote into)

    def _meta(self, node, depth: int | None = None) -> torch.Tensor | None:
        """A meta tensor of ``node``'s shape, strides and dtype where it is known without inputs: an exported graph's
        fake value, a tensor attribute, or views and copies of one (computed on meta tensors), :data:`_VIEW_DEPTH`
        deep; else None."""
        depth = _VIEW_DEPTH if depth is None else depth
        if not isinstance(node, Node) or depth == 0:
            return None
        if node not in self._metas:
            self._metas[node] = None  # (a cycle: unknown)
            val = node.meta.get("val")
            if isinstance(val, torch.Tensor):
                found = _meta_like(val)
            elif node.op == "get_attr":
                found = _meta_like(dtypes.fetch_attr(self.gm, node.target))
            elif node.op in ("call_function", "call_method") and (_name(node) in _VIEWS or _name(node) == "clone"):
                found = self._meta_call(node, depth)
            else:
                found = None
            self._metas[node] = found
        return self._metas[node]

    def _meta_call(self, node: Node, depth: int) -> torch.Tensor | None:
        args = []
        for a in node.all_input_nodes:
            args.append(self._meta(a, depth - 1))
            if args[-1] is None:
                return None
        env = dict(zip(node.all_input_nodes, args))
        call_args, call_kwargs = (torch.fx.map_arg(a, env.__getitem__) for a in (node.args, node.kwargs))
        try:
            out = getattr(call_args[0], node.target)(*call_args[1:], **call_kwargs) if node.op == "call_method" \
                else node.target(*call_args, **call_kwargs)
        except Exception:  # (an argument meta tensors do not take: unknown)
            return None
        return out if isinstance(out, torch.Tensor) and out.device.type == "meta" else None

    def _writers(self) -> set[Node]:
        """The nodes that write in place."""
        if self._writer_nodes is None:
            self._writer_nodes = {w for w, _ in self._writes()}
        return self._writer_nodes

    def _writes(self) -> list[tuple[Node, list[Node]]]:
        """The graph's in-place writes (``_aliases._writes``), found once."""
        if self._writes_found is None:
            self._writes_found = _writes(self.gm)
        return self._writes_found

    def _int_grid(self, node: Node) -> Grid | None:
        """Whole numbers for an integer tensor, 0 and 1 for a bool one (inferred), else None."""
        kind = self.kinds.get(node)
        if kind == dtypes.BOOL:
            return Grid(0.0, 1.0, node, frozenset((0.0, 1.0)))
        return Grid(0.0, 1.0, node) if kind == dtypes.INT else None

    def _shifted_back(self, a, b) -> Grid | None:
        """The grid of ``a - b`` where ``a`` is ``g + b`` clamped or not, ``g`` on a grid: a fake quantizer's ``clamp(
        round(x / s) + zp, qmin, qmax) - zp``, on the grid of ``round`` whatever ``zp`` holds (a zero point the
        forward observes)."""
        if not isinstance(b, Node) or not isinstance(a, Node):
            return None
        if _name(a) in ("clamp", "clip"):
            a = _first(a)
        if isinstance(a, Node) and _name(a) in ("round", "floor", "ceil", "trunc") and not _arg(a, 1, "decimals", 0) \
                and _added(_first(a), b) is not None and self._whole(b):
            return Grid(0.0, 1.0, a)  # (round(x / s + zp) - zp: round(x / s), for a whole zero point)
        other = _added(a, b)
        g = self.grid(other) if isinstance(other, Node) else None
        return replace(g, values=None) if g is not None and g.scale is None and g.offset == 0 else None

    def _whole(self, node: Node) -> bool:
        """Is ``node`` whole numbers: on the grid of step 1 through 0, or an attribute every write of which in the
        graph leaves whole numbers (an observer's ``zero_point.copy_(torch.round(...))``, ``.fill_(0)``, ``.zero_()``,
        ``torch.round(z, out=zero_point)``)?"""
        g = self.grid(node)
        if g is not None:
            return g.scale is None and _on(g, Grid(0.0, 1.0, node))
        # (read as it is, through views, or copied: zp.clone(), but not a copy written in its turn, also through a
        # view of it: zp.clone().add_(0.5), c = zp.clone(); c[0].add_(0.5))
        target = _viewed_attribute(node, copies=self._written_nodes())
        if target is None or target not in self._written():
            return False
        values = [_written_value(w) for w, targets in self._writes()
                  if any(_viewed_attribute(t) == target for t in targets)]
        return bool(values) and all(_multiple(v) if _number(v) else isinstance(v, Node) and
                                    (g := self.grid(v)) is not None and g.scale is None and
                                    _on(g, Grid(0.0, 1.0, v)) for v in values)

    def _scalar(self, node: Node) -> float | None:
        """The number a scalar tensor holds now (a scalar parameter, LSQ's step, trainable or not; not an attribute
        the graph writes), else None."""
        if self._stale(node):
            return None
        t = dtypes.fetch_attr(self.gm, node.target) if node.op == "get_attr" else None
        if isinstance(t, torch.Tensor) and t.numel() == 1 and t.device.type != "meta":
            return float(t.detach().reshape(()))
        number = self.number(node)
        if _number(number):
            return float(number)
        folded = self._folded(node, 4)  # (7.0 / alpha, alpha.abs(): computed from attributes, its value now)
        return float(folded[0].reshape(())) if folded is not None and folded[0].numel() == 1 else None

    def _module_of(self, node: Node) -> nn.Module | None:
        try:
            return self.gm.get_submodule(node.target)
        except AttributeError:
            return None


def _fake_quantizer(module) -> bool:
    """Is ``module`` a torch.ao fake quantizer (fake quantization on or off: a warm-up turns it on later)?"""
    return isinstance(module, FakeQuantizeBase)


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


def _added(a, b):
    """The other operand of ``a`` where ``a`` is ``other + b`` (either order), else None."""
    if not isinstance(a, Node) or _name(a) != "add" or len(a.args) < 2 or a.kwargs:
        return None
    return a.args[1] if a.args[0] is b else a.args[0] if a.args[1] is b else None


def _put(name: str, node: Node):
    """The value an op of :data:`_PUTS` puts in (a number, a node), or None (one that accumulates: ``scatter``'s
    ``reduce``, ``index_put``'s ``accumulate``)."""
    if name == "scatter":
        return _arg(node, 3, "src", _arg(node, 3, "value")) if "reduce" not in node.kwargs and len(node.args) < 5 \
            else None
    if name == "index_put" and _arg(node, 3, "accumulate", False) is not False:
        return None
    return _arg(node, *_PUTS[name])


#: ops that read only their input's shape, dtype and device
_SHAPE_ONLY = frozenset(("zeros_like", "ones_like", "full_like", "empty_like", "new_zeros", "new_ones", "new_full",
                         "new_empty", "new_tensor"))
#: ops that give equal outputs for equal inputs along the dims they work on (not elementwise, but within a row)
_SAME_FOR_SAME = frozenset(("softmax", "log_softmax", "neg", "abs", "square", "relu", "relu6", "hardtanh", "clamp",
                            "clip", "clamp_min", "clamp_max", "leaky_relu", "elu", "gelu", "silu", "sign", "round",
                            "floor", "ceil", "trunc", "layer_norm"))
#: ops that add (or otherwise reduce) values into (a copy of) their input where an index says, the rest as it was
#: elementwise maximum and minimum of two values (a bound when one holds a number)
_EXTREMA = frozenset(("maximum", "minimum", "fmax", "fmin"))
_ACCUMULATING = frozenset(("scatter_add", "scatter_reduce", "index_add", "index_reduce"))
#: ops that put values into (a copy of) their input where an index or a mask says, the rest as it was -> the
#: position and keyword of the value put in
_PUTS = {"masked_fill": (2, "value"), "index_fill": (3, "value"), "scatter": (3, "src"), "index_put": (2, "values"),
         "index_copy": (3, "source"), "masked_scatter": (2, "source"), "setitem": (2, "value")}


def _avg_window(kernel, padding, ceil_mode, count_include_pad, divisor, dims: int) -> tuple[int | None, bool]:
    """The number of values an average pooling over ``dims`` dimensions divides by (its kernel, or
    ``divisor_override``), and whether edge windows divide by fewer (``ceil_mode``, ``count_include_pad=False`` with
    padding: then the kernel's size)."""
    varying = bool(ceil_mode) or not count_include_pad and padding not in (0, (0,), [0], (0, 0), [0, 0], (0, 0, 0),
                                                                          [0, 0, 0])
    if divisor is not None:
        return (divisor if isinstance(divisor, int) and divisor > 0 else None), False
    if isinstance(kernel, int):
        return kernel ** dims, varying
    if isinstance(kernel, (list, tuple)) and all(isinstance(k, int) for k in kernel):
        return math.prod(kernel), varying
    return None, varying


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
    and ``r`` are within a factor of 2, and at ``r == 0``), else None.  ``name_of``: :func:`_name` (a memo of it,
    :meth:`Ties._name_of`)."""
    name = name_of(node)
    args = node.args
    if name not in _SUMS or len(args) != 2 or node.kwargs:
        return None
    for held, x in (args[::-1], args) if name == "add" else ((args[1], args[0]),):
        if isinstance(held, Node) and name_of(held) == "detach" and isinstance(diff := _first(held), Node) and \
                name_of(diff) == "sub" and len(diff.args) == 2 and not diff.kwargs:
            r, other = diff.args if name == "add" else diff.args[::-1]
            if other is x and isinstance(r, Node):
                return r
    return _left_by_detached_copies(node, name_of, written)


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
    if node.op not in ("call_function", "call_method") or _first(node) is None:
        return None
    if is_detached_call(node):  # (a no-grad region's detach)
        return "detach"
    if node.target is getattr and len(node.args) == 2 and node.args[1] in ("T", "mT", "H", "mH", "data"):
        return "t"  # (x.T: a view)
    name = node.target if node.op == "call_method" and node.target in rules.FLOAT_CASTS else _op_name(node)
    if name and name.startswith("__") and name.endswith("__"):  # (h.__setitem__(m, v), t.__getitem__(0))
        name = name[2:-2]
    name = _IN_PLACE_OPERATORS.get(name, name)  # (operator.iadd, h.__iadd__(1): add, written in place)
    if name in ("max", "min") and isinstance(_arg(node, 1, "other", None), Node):  # (torch.max(a, b): of two tensors)
        return "maximum" if name == "max" else "minimum"
    return name.rstrip("_") if name and not name.startswith("_") else name


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
    return h.scaled_as(g) and _multiple(h.step / g.step) and _multiple((h.offset - g.offset) / g.step)


def _mapped(f: Callable, values: list[tuple]) -> list[tuple]:
    """``(f(v), source)`` for the numbers among ``values`` (``f`` of a float32 0-d tensor, as the model computes it;
    skipped where it fails)."""
    out = []
    for v, source in values:
        if _number(v):
            try:
                with torch.no_grad():
                    r = f(torch.tensor(v, dtype=torch.float32))
                out.append((float(r), source))
            except Exception:  # (an op that takes no 0-d tensor so: not followed)
                pass
    return out


def _elementwise_call(op) -> Callable | None:
    """``op`` (a node of an elementwise op, or its module) as a function of its first argument, its other arguments as
    they are; None where one is a node (a value the graph computes)."""
    if isinstance(op, nn.Module):
        return op
    if any(isinstance(a, Node) for a in (*op.args[1:], *op.kwargs.values())):
        return None
    if op.op == "call_function":
        return lambda v: op.target(v, *op.args[1:], **op.kwargs)
    return (lambda v: getattr(v, op.target)(*op.args[1:], **op.kwargs)) if op.op == "call_method" else None


def _grid_points(g: Grid) -> list[float]:
    """``g``'s values (at its scale's value now; its 0 only, where the scale holds none), those within
    :data:`_POINTS_REACH` of 0 where they are not known: the :data:`_POINTS` nearest 0 on each side, and the one
    nearest the reach (where a one-to-one op saturates in float32: sigmoid is 1.0 from 17 up, tanh -1 and 1 from 9)."""
    scale = 1.0 if g.scale is None else g.scale_value
    if not scale:
        return [0.0] if g.hits(0.0) else []
    if g.values is not None:
        return [v * scale for v in g.values]
    offset, step = g.offset * scale, g.step * abs(scale)
    centre, reach = round(-offset / step), math.ceil(_POINTS_REACH / step)
    steps = [*range(-min(reach, _POINTS), min(reach, _POINTS) + 1), *((-reach, reach) if reach > _POINTS else ())]
    return [offset + step * (centre + k) for k in steps]


def _images_of(call: Callable, points: list[float]) -> list[float]:
    """The distinct values ``call`` gives on the float32 ``points`` (one call on all of them, as the model computes
    each), finite and below 2^23 in size (beyond, every float32 is a multiple of 0.5: a continuous input's too)."""
    if not points:
        return []
    try:
        with torch.no_grad():
            out = call(torch.tensor(points, dtype=torch.float32))
    except Exception:  # (an op that takes no 1-d tensor so: not followed)
        return []
    return [v for v in dict.fromkeys(out.double().tolist()) if math.isfinite(v) and abs(v) < 2.0 ** 23] if \
        isinstance(out, torch.Tensor) and out.shape == (len(points),) else []


def _grid_meets(g: Grid, jumps: Grid, skip_zero: bool = False) -> bool:
    """Does a value of ``g`` lie on ``jumps`` (a grid of an op's jumps, unscaled; ``skip_zero``: not at 0)?"""
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
    g = replace(grids[0], step=step, values=None)
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
    return _grid(g, offset=g.offset * h.offset, step=step, values=values)


def _sum(g: Grid | None) -> Grid | None:
    """The grid of a sum of values on ``g`` (of an unknown count: its offset is unknown, a multiple of g's)."""
    if g is None:
        return None
    if _multiple(g.offset / g.step):
        return replace(g, offset=0.0, values=None)
    if g.offset and _multiple(g.step / g.offset):  # (+-1 summed: whole numbers)
        return replace(g, offset=0.0, step=abs(g.offset), values=None)
    return None


def _parameter(op, index: int, name: str, default):
    """An argument of a call node, or an attribute of an activation module (``nn.LeakyReLU(0.1).negative_slope``)."""
    return getattr(op, name, default) if isinstance(op, nn.Module) else _arg(op, index, name, default)


def _leaky_relu(t: float, op) -> float | None:
    slope = _parameter(op, 1, "negative_slope", 0.01)
    return t if t >= 0 else t / slope if _number(slope) and slope > 0 else None


def _elu(t: float, op) -> float | None:
    alpha = _parameter(op, 1, "alpha", 1.0)
    return t if t >= 0 else math.log1p(t / alpha) if _number(alpha) and alpha > 0 and t > -alpha else None


def _gelu(t: float, op) -> list[float]:
    """GELU's inputs at ``t`` (exact or tanh-approximated): it falls to a minimum then rises, 0 at 0."""
    if _parameter(op, 1, "approximate", "none") == "tanh":
        return _dipping(lambda x: 0.5 * x * (1 + math.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3))), t)
    return _dipping(lambda x: 0.5 * x * (1 + math.erf(x / math.sqrt(2))), t)


def _dipping(f: Callable[[float], float], t: float) -> list[float]:
    """The inputs at which ``f`` gives ``t``, for an ``f`` like GELU and SiLU: decreasing from 0 at -inf to a minimum
    below 0, then increasing through ``f(0) = 0`` (found by bisection, to float64 precision)."""
    if t == 0:
        return [0.0]

    def solve(lo: float, hi: float) -> float:  # (f(lo) - t and f(hi) - t of opposite signs)
        rising = f(hi) > f(lo)
        for _ in range(200):
            mid = (lo + hi) / 2
            if (f(mid) < t) == rising:
                lo = mid
            else:
                hi = mid
        return (lo + hi) / 2

    if t > 0:
        return [solve(0.0, t + 40.0)]
    low, high = -60.0, 0.0  # (the minimum's input, by ternary search)
    for _ in range(200):
        a, b = low + (high - low) / 3, high - (high - low) / 3
        low, high = (low, b) if f(a) < f(b) else (a, high)
    bottom = (low + high) / 2
    return [solve(-60.0, bottom), solve(bottom, 0.0)] if f(bottom) < t else []


#: one-to-one ops that keep their input's values from 0 up and scale those below (a grid's values stay on it, or on
#: it times the slope)
_IDENTITY_ABOVE_0 = frozenset(("leaky_relu",))
#: elementwise ops that take each value at one input only (strictly monotone) -> that input, or None (none there);
#: GELU and SiLU, which dip below 0 first, -> the list of their inputs there
_ONE_TO_ONE: dict[str, Callable[[float, Node], float | list[float] | None]] = {
    "sigmoid": lambda t, n: math.log(t / (1 - t)) if 0 < t < 1 else None,
    "tanh": lambda t, n: math.atanh(t) if -1 < t < 1 else None,
    "exp": lambda t, n: math.log(t) if t > 0 else None,
    "expm1": lambda t, n: math.log1p(t) if t > -1 else None,
    "log": lambda t, n: math.exp(t) if t < 700 else None,
    "log1p": lambda t, n: math.expm1(t) if t < 700 else None,
    "sqrt": lambda t, n: t * t if t >= 0 else None,
    "atan": lambda t, n: math.tan(t) if abs(t) < math.pi / 2 else None,
    "asinh": lambda t, n: math.sinh(t) if abs(t) < 700 else None,
    "sinh": lambda t, n: math.asinh(t),
    "leaky_relu": _leaky_relu,
    "elu": _elu,
    "gelu": _gelu,
    "silu": lambda t, n: _dipping(lambda x: x / (1 + math.exp(-x)) if x > -700 else -0.0, t),
}


#: activation modules that are ops of :data:`_ONE_TO_ONE`
_MODULE_ONE_TO_ONE = {nn.Sigmoid: "sigmoid", nn.Tanh: "tanh", nn.LeakyReLU: "leaky_relu", nn.ELU: "elu",
                      nn.GELU: "gelu", nn.SiLU: "silu"}


def _preimages(name: str, node, t: float) -> list[float]:
    """The inputs at which ``node`` (an op of :data:`_ONE_TO_ONE`, a module of :data:`_MODULE_ONE_TO_ONE`, or a power
    by a number) gives ``t``."""
    if name != "pow":
        try:
            found = _ONE_TO_ONE[name](t, node)
        except (ValueError, OverflowError, ZeroDivisionError):
            return []
        return [f for f in (found if isinstance(found, list) else [found]) if f is not None and math.isfinite(f)]
    p = node.args[1] if len(node.args) > 1 else None
    if not _number(p) or p <= 0 or not isinstance(node.args[0], Node):
        return []
    if t == 0:
        return [0.0]
    if float(p).is_integer() and int(p) % 2:  # (x ** 3: one root, with t's sign)
        return [math.copysign(abs(t) ** (1 / p), t)]
    return [t ** (1 / p), -(t ** (1 / p))] if t > 0 else []


def _branches(node: Node) -> tuple:
    """``torch.where(c, a, b)``'s and ``a.where(c, b)``'s branches."""
    if node.op == "call_function":
        return _arg(node, 1, "input"), _arg(node, 2, "other")
    return node.args[0], _arg(node, 2, "other")


def _module_constants(module: nn.Module) -> tuple:
    """The constants of an activation or padding module (``nn.ReLU()``: 0)."""
    if isinstance(module, nn.ReLU | nn.Hardswish | nn.ZeroPad1d | nn.ZeroPad2d | nn.ZeroPad3d):
        return (0.0,)
    if isinstance(module, nn.ReLU6):
        return 0.0, 6.0
    if isinstance(module, nn.Hardtanh):
        return float(module.min_val), float(module.max_val)
    if isinstance(module, nn.Hardsigmoid):
        return 0.0, 1.0
    if isinstance(module, nn.Threshold | nn.ConstantPad1d | nn.ConstantPad2d | nn.ConstantPad3d):
        return (float(module.value),)
    return ()


def _keeps_values(module: nn.Module) -> bool:
    return isinstance(module, nn.Identity | DeQuantStub | nn.Flatten | nn.Unflatten | nn.MaxPool1d | nn.MaxPool2d |
                      nn.MaxPool3d |
                      nn.AdaptiveMaxPool1d | nn.AdaptiveMaxPool2d | nn.AdaptiveMaxPool3d | nn.Upsample |
                      nn.PixelShuffle | nn.PixelUnshuffle) and \
        (not isinstance(module, nn.Upsample) or module.mode == "nearest")


#: ops whose results are whole numbers (``round`` with ``decimals=d``: multiples of 10^-d)
_WHOLE_OPS = frozenset(("floor", "ceil", "trunc", "fix", "round", "one_hot", "argmax", "argmin", "bucketize",
                        "searchsorted", "floor_divide", "floordiv"))
#: where the elementwise ops jump (:meth:`Ties.on_jumps`): kind -> (offset of the grid of step 1 they jump on, the
#: values it holds where it is a few points, whether 0 is left out: trunc is continuous there)
_JUMPS = {"round": (0.5, None, False), "floor": (0.0, None, False), "ceil": (0.0, None, False),
          "trunc": (0.0, None, True), "heaviside": (0.0, frozenset((0.0,)), False)}
#: the constants of activations with fixed ones (their bounds: ``_bounds``)
_CONSTANTS = {"hardsigmoid": (0, 1), "hardswish": (0,), "tril": (0,), "triu": (0,)}
#: ops folded on tensor attributes' values (``round(w * 4)``)
_FOLDABLE = frozenset(("round", "floor", "ceil", "trunc", "sign", "mul", "div", "truediv", "true_divide", "add", "sub",
                       "neg", "abs", "clamp", "clip", "relu"))
#: the torch function computing a folded op named otherwise (``7.0 / alpha``: operator.truediv)
_FOLDED_AS = {"truediv": "div"}
_CLAMPS = frozenset(("relu", "relu6", "hardtanh", "clamp", "clip", "clamp_min", "clamp_max"))
#: elementwise ops that give their input itself on a whole range of it (``Ties._less_its_clip``): between a clamp's
#: bounds, from 0 up (relu, leaky relu, elu, celu), above a threshold, where it is the one a minimum/maximum takes
_IDENTITY_ON_A_RANGE = _CLAMPS | _EXTREMA | {"leaky_relu", "elu", "celu", "threshold"}
_MODULES_IDENTITY_ON_A_RANGE = (nn.ReLU, nn.ReLU6, nn.Hardtanh, nn.LeakyReLU, nn.ELU, nn.CELU, nn.Threshold)
_DIVS = frozenset(("div", "true_divide", "truediv"))
#: binary ops of two values that take 0 on whole ranges where their operands do (``Ties._of_two``: a factor, the
#: numerator, both terms of a sum not 0 on disjoint ranges)
_ZERO_PRODUCTS = _DIVS | {"mul", "add", "sub"}
#: the ops a hand-written straight-through value ends with (:func:`_straight_through`)
_SUMS = frozenset(("add", "sub"))
#: how many ``Ties.grid`` calls may nest before the inputs' grids are found first, in graph order (Python's stack)
_GRID_NESTING = 64
#: how far from 0 a one-to-one op's input grid is read (:func:`_grid_points`: sigmoid is 1.0 in float32 from 17 up, tanh
#: -1 and 1 from 9 out, exp past 2^23 from 16), and at most how many of its values on each side
_POINTS_REACH = 32.0
_POINTS = 256
#: what ``Ties._names`` holds for a node not looked at yet
_UNNAMED = object()
#: reductions whose values are elements of their input (an order statistic), a tensor (``amax``; ``max`` of all of
#: it) or, with a dim, values and indices; and those that give both always (the comparisons' list, of ops whose
#: result holds an element of the input, is ``_patterns._ORDER_STATISTICS``: it has ``msort``, a tensor, and no ``mode``)
_ORDER_STATISTICS_OF_ONE = frozenset(("amax", "amin", "max", "min", "median", "nanmedian"))
_ORDER_STATISTICS_OF_MANY = frozenset(("kthvalue", "mode", "topk", "sort", "cummax", "cummin"))
#: reductions called (input, dim, keepdim)
_KEEPING_REDUCTIONS = frozenset(("mean", "nanmean", "sum", "nansum", "amax", "amin", "max", "min", "median",
                                 "nanmedian", "prod", "logsumexp", "mode", "all", "any"))
_JOINS = frozenset(("cat", "concat", "concatenate", "stack", "hstack", "vstack", "dstack", "column_stack"))
_INT_CASTS = frozenset(("int", "long", "short", "bool", "char", "byte"))
#: what passes its first argument's values on (each element a value it had: views, copies, casts, selections)
_KEEP_VALUES = _THROUGH | _INT_CASTS | frozenset(rules.FLOAT_CASTS) | {
    "getitem", "clone", "type_as", "narrow", "select", "flip", "roll", "repeat", "tile", "positive", "unfold",
    "index_select", "repeat_interleave", "gather", "take_along_dim", "take", "movedim", "moveaxis", "swapaxes",
    "swapdims", "split", "chunk", "tensor_split", "unbind", "unflatten", "view_as", "reshape_as", "diagonal",
    "pixel_shuffle", "pixel_unshuffle", "channel_shuffle", "upsample_nearest1d", "upsample_nearest2d",
    "upsample_nearest3d", "_unsafe_view", "alias", "slice", "as_strided", "permute_copy", "view_copy"}
_MAX_POOLS = ("max_pool", "adaptive_max_pool")
#: views: a write through one writes its base (``self.scale.data.copy_``, ``self.buf[0].fill_``)
_VIEW_DEPTH = 16  # (how many views deep an attribute is followed: self.zp.view(-1)[0])
_VIEWS = _THROUGH | frozenset(rules.FLOAT_CASTS) | {  # (and casts: .float() of a float tensor is the tensor)
    "getitem", "select", "narrow", "slice", "view_as", "unflatten", "diagonal", "as_strided", "t", "movedim", "swapaxes",
    "swapdims", "unbind", "split", "chunk", "ravel", "moveaxis", "reshape_as", "adjoint", "alias", "numpy_T", "mT",
    "mH", "matrix_H", "broadcast_to"}
_AVG_POOLS = ("avg_pool", "adaptive_avg_pool")
#: views that show every element of their input once, whatever the shapes
_ALL_VIEWS = frozenset(("view", "view_as", "unflatten", "squeeze", "unsqueeze", "permute", "transpose", "t", "movedim",
                        "moveaxis", "swapaxes", "swapdims", "detach", "alias", "adjoint", "numpy_T", "mT", "mH",
                        "matrix_H"))
#: the same, but views only of a contiguous input (of another, a copy: a write to it does not reach the input)
_ALL_IF_CONTIGUOUS = frozenset(("reshape", "reshape_as", "flatten", "ravel", "contiguous"))
#: views that may show one element more than once (all of a node by number of elements, not by which ones)
_REPEATING = frozenset(("expand", "expand_as", "broadcast_to", "as_strided", "unfold"))

"""Which values a node takes on whole ranges of inputs: a comparison's ties.

SLL's surrogate of ``x > t`` is 1/2 at ``x == t`` at every eps.  For a continuous ``x`` that is a
null set; but ``round(x) > 0`` has ``round(x) == 0`` for every ``x`` in (-0.5, 0.5), and
``F.relu(x) > 0`` has ``relu(x) == 0`` for every ``x <= 0``: rewritten, such a comparison gives 1/2
there, never the model's 0/1.  The planner leaves it hard (``_Planner._plan_comparison``), with a
reason from :meth:`Ties.of`:

- a **grid**: values ``offset + step * k`` only (:class:`Grid`), each taken on whole ranges (a rounded value, a count,
  an integer or bool tensor, ``round(x / s) * s``, ``round(x) / p``, ``q * (7 / alpha)`` and ``sign(x) + p`` at the
  learned scalar's value now, sums of them; a sum reading one value in terms of one sign, ``q * 0.5 + q``, on that
  value's grid times ``1.5``); ``sign`` is the grid ``1 + 2k`` (its 0 is a single point, unless its input is 0 on
  ranges, also rounded: ``round(2 * sign(x))``), so ``sign(x) > 0`` has no ties but ``sign(a) + sign(b) > 0`` has;
  ``heaviside`` is 0 and 1, and its ``values`` where its input is 0 on ranges (``heaviside(round(x), 0.5)``; a
  ``values`` of any value there leaves it on no grid, its 0 and 1 constants: ``heaviside(mask, x)``);
- a **constant** an op takes on a whole range (``relu``'s 0, a clamp's bounds, a ``where`` or
  ``masked_fill`` constant, a constant pad, ``tril``'s zeros), through views, copies, casts, selections,
  max pooling, ``cat`` and arithmetic with a number or a learned scalar (``relu(x) * 2 > 0``, ``relu(x) + p``), with
  the grids a value takes on a part (``minimum(sign(x), x) - 1``: sign's, moved; negated, absolute or averaged,
  ``abs(maximum(round(x), p))``, ``maximum(round(x), p).mean(-1)``; a sum of two tensors near the top of a walk,
  ``m * 0.5 + where(x > 0, m, x) * 0.25 + 0.25``, also under a chain of such arithmetic that starts there); a sum
  reading one value in each term, ``v + v`` (or the same call of the same values twice), that value's times the sum;
- at 0, a **product** with a factor that is 0 on whole ranges (``x * mask > 0``), a sum or an average of
  values that are 0 there together (``relu(a) + relu(b) > 0``, ``avg_pool(relu(x)) > 0``); a grid plus (less) a value
  0 on whole ranges, on the grid there, in a graph that writes nothing in place (``sign(x) * 0.5 - relu(x)``), or
  another number or a grid on ranges, on the grid moved by it, as though the two ranges met (``trunc(x) -
  where(trunc(x) > 0, x, -3.0)``; ``mask + where(c, mask, x)``: 0, 1 and 2), also at a threshold other than 0; a
  number of each term added up, as though the two ranges met too (``clamp(a, 1, 2) + clamp(b, 1, 2)``: 2;
  ``abs(clamp(x, -2, 0)) - clamp(x, -2, 1)``: 4 on x <= -2; not 2, 0 from 0 up less -2 from -2 down, ranges of one
  value that never meet, ``_apart``), but for two functions of one value read at its values;
- through **one-to-one** ops at the threshold's preimage (``sigmoid(relu(x)) > 0.5``: :data:`_ONE_TO_ONE`), and at
  the values they take on a grid, in float32 (``round(sigmoid(round(h)) * 3)``: 1.5; 1.0 where sigmoid saturates),
  also on a grid their input takes on a part only (``tanh(maximum(trunc(x), x))``: 0 on (-1, 0)); through powers by
  a number, of the numbers their input takes (``relu(x) ** 2 + 0.5``: 0.5; by a whole number, a grid's on the grid of
  its products, ``round(x) ** 2 / 2``), and a number raised to a grid at its images (``2.0 ** round(x)``); a sum or
  difference of two elementwise ops of one value on a grid, on its points (``floor(q) - sigmoid(q)``: -0.5 at 0;
  ``maximum(q, torch.tensor(0.5)) - sigmoid(q)``: 0 at 0), or of one value at the numbers it takes on ranges
  (``relu(v) - v`` of ``v = clamp(x, -2, 1)``: 2 on x <= -2; ``v`` also the same call written twice,
  ``_on_points_of``: ``relu(clamp(x, -2, 1)) - clamp(x, -2, 1)``), also at a threshold and along a row;
  ``minimum``/``maximum`` with a number (a clamp), of two tensors at either one's ties (``minimum(q, h) < 2``; a
  clamp with a bound that is no number so, ``clamp(floor(h), min=p) >= 2``; a tensor bound's ties, values and flat
  rows too, ``_tensor_bounds``: ``floor(clamp(x, min=round(x)))``), a
  product with a 0/1 mask at its other factor's constant, a product with (a quotient by) a learned scalar at its
  value now (``clamp(h, 0, 1) * p >= 0.5``), average pooling and means at any constant (``clamp(h, min=2).mean(-1)``:
  2 where every element of a row is below 2; also on the grid they average of a grid their input takes on a part,
  ``round(avg_pool1d(maximum(round(x), x), 2))``), sums at its multiples (``clamp(h, min=2).sum(-1)``: 2 n, any
  multiple for a count the graph does not fix);
- through **hand-written straight-through values** (``(r - x).detach() + x``, ``x - (x - r).detach()``, ``r.detach()
  + x - x.detach()``, ``r + (x - x.detach())`` whatever ``r`` is: ``r``'s values) and a **quotient by a learned
  bound** (``clamp(h, -a, a) / a``: -1 and 1 beyond the clip);
- through **in-place writes**: a written node holds what each write leaves, in graph order (``c.relu_()``,
  ``cnt.add_(spike)``), and so do the views of it taken before a write (``o = q.view(-1); q.sub_(0.5)``); each value
  is read where its reader reads it (a copy taken before a later write keeps what it copied, a copy of such a copy
  too: ``c = x.clone(); d = c.clone(); c.add_(1.0); d - x``: 0; a copy written times -1 plus what it copied, ``c =
  x.clone(); c.mul_(-1.0); c + x``: 0; products, quotients with numbers and a value plus itself so written beside
  the same multiple, ``c.mul_(2.0); c - 2 * x``, ``c.div_(2); c * 2 - x``, ``c.add_(x); c - 2 * x``: 0,
  ``_written_opposite``); an attribute a module
  the graph calls may write (``scans.state_written``) is not read; values no write reaches (none written, none
  reading a written one: ``_touched``) are read as in a graph that writes nothing in place;
- at 0, a value less **its own order statistic** (``h - h.min(-1, keepdim=True).values``, a min-max
  normalisation): 0 on an element of each row, on every input; a value less itself (``h - h``, ``h - h.detach()``,
  ``maximum(h, h) - h``, ``h + (-h)``, ``h * -1.0 + h``, ``h * 2.0 - 2.0 * h``; products through products,
  ``_factors_of``: ``(x * 3) * 5 - x * 15``, ``(x * -1) * 1 + x``, coefficients equal to a few ulps, ``(x * 0.1) * 3 -
  x * 0.3``, where float32 rounds both alike; a copy, ``h - h.clone()``, counts as ``h``, where it writes in place one
  that nothing has written since, of an ``h`` not written between; also compared, ``x > x.clone()``, ``x * 2.0 > 2 *
  x``: ``_equal``) or an op that is it on a range of it (``h - clamp(h,
  -2, 1)``: 0 on [-2, 1]; ``abs(h) - h``; also compared, ``relu(h) > h``; ``h`` also spelt ``minimum(h, h)`` or ``h +
  (h - h.detach())``, or the same call written twice, ``clamp(x, -2, 1) - abs(clamp(x, -2, 1))``; also written in
  place into a fresh copy, ``c = h.clone(); c.clamp_(-2, 1); c - h``), two such ops of one value on ranges that meet
  (``clamp(h, -1, 1) - maximum(h, 0.5 * h)``: 0 on [0, 1]; also one inside another, ``abs(clamp(h, -2, 2)) -
  clamp(h, -2, 1)``), or a selection with such a branch (``abs(h) - where(m,
  h, 0)``, ``h - h.masked_fill(m, 0)``, also among selections, ``h - where(m, where(k, h, 0), 1)``: 0 where it is
  taken), or a value plus a selection with such a branch negated (``h + where(m, -h, 0)``) or plus its absolute
  value (``h + abs(h)``: 0 from 0 down; also an ``abs`` inside a clip beside a clip of it, ``_negated_by_abs``:
  ``clamp(abs(h), max=2) + clamp(h, -2, 1)``, 0 on [-2, 0]); ``c`` for a value plus a number or a learned scalar
  less itself (``(x + c) - x``: ``c`` where ``x + c`` is exact, on ranges, in every element; two shifts of one value,
  ``(x + 0.5) - (x + 1.5)``: -1; also where a selection takes such a branch, ``where(m, x + 1.0, x) - (x + 1.0)``: -1
  where it takes ``x``); a grid's order
  statistics are on its grid, and its mean over a count the graph does not fix on every value (``Grid.any_count``:
  ``round(q.mean(-1))`` is k + 1/2 for an even count; ``q - q.mean(-1, keepdim=True)`` is 0 where a row's values
  are equal);
- for a top-k or argmax, ``minimum``/``maximum`` of two tensors where either one's elements are equal, a reduction
  over the row's dim kept as a dim of 1 (``minimum(h, h.mean(-1, keepdim=True))``), and a learned scalar where it is
  taken (``maximum(h, p)``, ``clamp(h, min=p)``: ``p`` in every element of a row with each ``h < p``, at any ``p``).

The walks go 8 ops deep; a run of arithmetic with numbers (up to 16 ops: ``(relu(a) + relu(b)) * 2.0 - 1.0 ...``,
``_arithmetic_run``, ``_inverted_run``) is one step, where no write in place reaches it (``_untouched``).

The planner orients a comparison first (:meth:`Ties.oriented`: ``self.t < v`` is ``v > self.t``).  Values are
equal, and whole, to a few float32 ulps (:data:`_TOLERANCE`).

A value is a number or a node; a node holding one number (``torch.zeros_like(x)``, a buffer, not a
trainable parameter: the planner's ``number``) counts as that number, any other node only as itself
(``torch.clamp(x, max=alpha) >= alpha``).  Outside the bands of rewritten ops upstream the values are
exact (a rewritten ``round`` is whole outside its bands), which is what the grids describe.  Not
followed: random ops (dropout).

Where things are: this module holds :class:`Ties`, its questions (``oriented``, ``of``, ``on_jumps``, ``flat`` and
the flat rule), how it reads a node as a value (``_value``, ``_name_of``, ``_number_and_node``) and the constants an
op takes (``_constants``, ``_bounds``).  Its parts, one concept each (mixins; ``Ties.__init__`` sets their memos):
``_tie_values.py`` (the values a node takes on whole ranges), ``_tie_thresholds.py`` (its ties at a threshold),
``_tie_grids.py`` (``grid``: the grids of nodes; attributes' values now), ``_tie_writes.py`` (in-place writes, views,
shapes), ``_tie_inert.py`` (the nodes whose walks find nothing, found once in graph order: ``of`` and ``on_jumps``
skip their walks).  Functions and tables: ``_grids.py`` (:class:`Grid`, :class:`Tie`, grid arithmetic),
``_tie_ops.py`` (op tables, the one-to-one ops' maths), ``_tie_nodes.py`` (readers of graph nodes).  Imports go one
way: ``_grids.py``, then ``_tie_ops.py``, ``_tie_nodes.py``, the parts, this module.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn
from torch.fx import GraphModule, Node

from sll_fx import dtypes

from ._grids import Grid, Tie, _common_step, _grid_meets, _multiple, _number, _same
from ._patterns import _arg, _rank
from ._tie_grids import _Grids
from ._tie_inert import _Inert
from ._tie_nodes import (_branches, _disjoint, _first, _fixed_dims, _keeps, _name, _put, _reduced_along,
                         _straight_through, _taken, _written_value)
from ._tie_ops import (_ACCUMULATING, _CLAMPS, _CONSTANTS, _DIVS, _EXTREMA, _JOINS, _JUMPS, _MODULE_ONE_TO_ONE,
                       _ONE_TO_ONE, _PUTS, _SAME_FOR_SAME, _SUMS, _UNNAMED, _keeps_values, _module_constants)
from ._tie_thresholds import _Thresholds
from ._tie_values import _RangeValues
from ._tie_writes import _Writes


class Ties(_RangeValues, _Thresholds, _Grids, _Writes, _Inert):
    """The ties of the comparisons of the graph of ``gm``.  ``kinds``: the nodes' inferred dtype kinds (integer,
    bool: whole numbers); ``number(node)``: the one number a node holds that no gradient changes (a buffer, ``zeros_like``),
    else None; ``ranks``: the nodes' numbers of dims, where a fake run with example inputs found them; ``order``: each
    node's place in the graph (the planner's, read only), made here when not given."""

    def __init__(self, gm: GraphModule, kinds: dict, number: Callable[[Node], float | None],
                 ranks: dict | None = None, order: dict | None = None):
        self.gm, self.kinds, self.number = gm, kinds, number
        self.ranks = ranks or {}                 # (nodes -> their number of dims: a fake run with example inputs)
        self._grids: dict[Node, Grid | None] = {}
        self._grid_nesting = 0                   # (grid: calls under way, one inside another)
        self._written_targets: set[str] | None = None
        self._writes_found: list | None = None
        self._written_found: dict | None = None
        self._states: dict[Node, list] = {}      # (written nodes -> their grid before each write, and after the last)
        self._order = order if order is not None else {n: i for i, n in enumerate(gm.graph.nodes)}  # (graph order)
        self._numbers: dict[Node, object] = {}   # (_value(node), in a graph that writes nothing in place)
        self._folds: dict[tuple, tuple | None] = {}   # (_folded: (node, depth) -> its value)
        self._constants_found: set[Node] | None = None
        self._reader: Node | None = None         # (the node whose reading _ties follows: the comparison, a writer)
        self._writer_nodes: set[Node] | None = None  # (_writers: the nodes that write in place)
        self._writing: bool | None = None        # (_any_write: whether the graph writes anything in place)
        self._names: dict[Node, str | None] = {}  # (_name_of: nodes -> their op's name)
        self._stes: dict[Node, Node | None] = {}  # (_straight_through: nodes -> the hard value they hold)
        self._pairs: dict[Node, tuple] = {}      # (_number_and_node: nodes -> (number, other node))
        self._summands: dict[Node, tuple] = {}   # (_summand_and_node: the same, with learned scalars in sums)
        self._images_found: dict[tuple, list] = {}  # (_images: (op, grid) -> the values the op takes on it)
        self._metas: dict[Node, torch.Tensor | None] = {}  # (_meta: nodes whose shape is known without inputs)
        self._row_dim: int = -1                  # (flat: the dim of the argmax or top-k, its rows)
        self._row_puts: dict[Node, float] = {}   # (flat: constants put in one element per row so far -> their number)
        self._rank_unknown: Node | None = None   # (flat: a put in one element per row of a dim the rank hides)
        self._inert_found: dict[Node, bool] | None = None  # (_inert: nodes -> whether their walks find nothing)
        self._inert_names: dict = {}             # (_inert: (op, target) -> the op's name, of the rules' names)
        self._inert_off = False                  # (_inert: the graph writes in place, nothing is inert)
        self._deciding = False                   # (_inert: a verdict under way)
        self._part_chain: Node | None = None     # (_grids_in_part: the sum a chain of arithmetic reads on a part)
        self._touched_found: set[Node] | None = None  # (_touched: the nodes a write in place may reach)
        self._one_values: dict[Node, tuple | None] = {}  # (_one_value: sums -> the one value their terms read)
        self._modules_found: dict = {}           # (_module_of: call_module targets -> their modules)

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
        if t is None or _number(t) and self._inert(x):  # (an input, tanh(x * 0.9 + 0.1): no walk finds anything)
            return None
        found = self._ties(x, t, 8)
        if found is not None or _number(t):
            return found
        if isinstance(x, Node) and (clip := self._clip_between((x, t), at)) is not None:  # (relu(h) > h: equal from 0
            return Tie(clip)                                                               # up, as relu(h) - h is 0)
        if isinstance(x, Node) and self._equal(x, t, at):  # (x > x.clone(), x * 2.0 > 2 * x: equal everywhere)
            return Tie(x)
        g, h = self.grid(x), self.grid(t)  # (both on grids whose difference has 0: pos <= cap, a count against one)
        if g is not None and h is not None and g.scaled_as(h) and (step := _common_step(g.step, h.step)):
            if g.values is not None or h.values is not None:  # (which values, where known: a buffer of zeros)
                known, other = (g, h) if g.values is not None else (h, g)
                return Tie(g.source, g) if any(other.hits(v) for v in known.values) else None
            return Tie(g.source, g) if g.any_count or h.any_count or _multiple((g.offset - h.offset) / step) else None
        if _disjoint(x, t, self._at):  # (relu(h) > relu(-h): 0 together only at h == 0)
            return None
        return next((f for c in self._flat_numbers(t, 8) if (f := self._ties(x, c, 8)) is not None), None)  # (relu(a)
        # > relu(b): both at a constant they take)

    def _equal(self, a: Node, b, at: Node | None) -> bool:
        """Are ``a`` and ``b``, compared at ``at``, equal on every input, as their difference would be 0: one tensor,
        a copy, the same call of the same values twice (:meth:`_cancels`), or ``k * v`` twice of one ``v``
        (:meth:`_opposite_terms`; where a write reaches them, read where ``at`` reads them, :meth:`_written_opposite`:
        ``c = x.clone(); c.mul_(2.0); c > 2 * x``)?"""
        if not isinstance(b, Node):
            return False
        if self._cancels(a, b, at):
            return True
        if self._untouched(a, b):
            return self._opposite_terms("sub", a, b)
        return self._written_opposite((a, b), "sub", self._order.get(at, len(self._order)))

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
        if self._inert(x):  # (nothing to walk: the benchmark chain's round(tanh(x * 0.9 + 0.1) * 2))
            return None
        for value, source in self._range_values(x, 8):
            if isinstance(value, Grid):
                if _grid_meets(value, jumps, skip_zero=skip_zero):
                    return Tie(value.source, value)
            elif jumps.hits(value) and not (skip_zero and value == 0):
                return Tie(source)
        return None

    # -- the flat rule: argmax and top-k rows -------------------------------------------------------
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
        if node.op == "get_attr" and self._scalar(node) is not None:  # (a learned scalar where it is taken, one value
            return Tie(node)  # in every element, whatever it is: maximum(x, p) on a row with every x < p)
        numbers = []  # (relu's 0, a fill, a bound; a learned scalar, as it is now: clamp(x, min=p))
        for c in self._constants(node):
            if _number(c) or isinstance(c, Node) and (c := self._scalar(c)) is not None:
                numbers.append(c)
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
            found = self._flat(first, depth - 1)  # (a clamp's tensor bound where it cuts: clamp(h, min=round(h)))
            return found or next((f for b in self._tensor_bounds(name, node) if (f := self._flat(b, depth - 1))), None)
        if self._cancelled_shift(node) is not None or name == "sub" and self._selected_shifts(node):  # ((x + 2) - x:
            return Tie(node)  # 2 in every element where x + 2 is exact; where(m, x + 1.0, x) - (x + 1.0): -1 where m)
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
        c, other = self._summand_and_node(node)  # (where(m, x, 1.5) + p: a learned scalar, one number in every element)
        if name == "mul" and c == 0:  # (h * 0: 0 everywhere)
            return Tie(node)
        if c is not None and name in ("add", "sub", "rsub", "mul", "truediv", "div", "pow"):  # (relu(h) * 2 + 1; a
            if name != "pow" and self._untouched(other):  # run of such arithmetic, one step, as _range_values reads it
                # where no write reaches it)
                other = self._arithmetic_run(other, None, None)[0]
            return self._flat(other, depth - 1)
        if name == "mul":  # (0 where a factor is 0 on whole ranges, whatever the other: clamp(h, 0, 1) * s)
            return next((f for a in operands if (f := self._ties(a, 0.0, depth - 1)) is not None), None)
        if name in _DIVS:  # (0 where its numerator is: round(h) / (h.abs() + 1); clamp(h, -a, a) / a: -1 and 1)
            ratios = self._ratios(node, depth) if c is None else []
            return Tie(ratios[0][1]) if ratios else self._ties(first, 0.0, depth - 1)
        if name in ("add", "sub") and c is None:  # (r * 0.9 + 0.1 * r: 0 where both are; any value _of_two reads on
            found = self._ties(node, 0.0, depth)  # ranges, mask + where(c, mask, x), two functions of one value,
            if found is not None or len(operands) != 2:  # relu(v) - v of v = clamp(x, -2, 1): 2 on x <= -2)
                return found
            return next((Tie(n) for _, n in self._of_two(node, name, depth, False)), None)
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

    # -- a node read as a value ---------------------------------------------------------------------
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

    def _held_grid(self, v):
        """``v``'s grid for a node, else the number a learned scalar holds now (``round(sign(x) + p)``), else ``v`` as
        a number, else None.  (A scalar read at its value now, as a product's factor is: the planner decides once, at
        that value; an op left hard or rewritten stays so as ``p`` trains.)"""
        if not isinstance(v, Node):
            return self._value(v)
        g = self.grid(v)
        return g if g is not None else self._scalar(v)

    def _held(self, v):
        """``v`` as a number, else its grid, else None."""
        v = self._value(v)
        return self.grid(v) if isinstance(v, Node) else v

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

    def _tensor_bounds(self, name: str, node: Node) -> list:
        """A clamp's bounds that are tensors (``clamp(x, min=round(x))``: ``round(x)``), not numbers nor learned scalars
        (read at their value now, or by the documented policy not at all): each is the clamp's value where it cuts, as
        a ``maximum``/``minimum`` of two tensors takes each operand (which inputs it cuts is not followed: more ties,
        never fewer); [] for another op."""
        if name not in _CLAMPS:
            return []
        return [b for b in self._bounds(name, node) if isinstance(b, Node) and not _number(self._value(b)) and
                self._scalar(b) is None]

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

    def _summand_and_node(self, node: Node) -> tuple:
        """:meth:`_number_and_node`, and of a sum or difference of two tensors also a learned scalar at its value now
        and the other node (``minimum(sign(x), x) + p``: read as a grid plus one is, :meth:`_held_grid`)."""
        if (found := self._summands.get(node)) is None:
            c, other = found = self._number_and_node(node)
            if c is None and self._name_of(node) in _SUMS and len(node.args) == 2 and not node.kwargs:
                a, b = node.args
                found = next(((c, other) for scalar, other in ((b, a), (a, b)) if isinstance(scalar, Node) and
                              isinstance(other, Node) and (c := self._scalar(scalar)) is not None), (None, None))
            if not self._any_write():  # (once per node, as _number_and_node)
                self._summands[node] = found
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

    def _module_of(self, node: Node) -> nn.Module | None:
        """The module a ``call_module`` node calls (None: none there), looked up once per target."""
        target = node.target
        found = self._modules_found.get(target, _UNNAMED)
        if found is _UNNAMED:
            try:
                found = dtypes.submodule(self.gm, target)
            except AttributeError:
                found = None
            self._modules_found[target] = found
        return found

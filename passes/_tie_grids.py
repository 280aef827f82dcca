"""The grids of nodes' values (``grid``, found once per node, with a value's states before each in-place write): from
the op (``_structural_grid``), a sum reading one value in more than one term (``_combined``, ``_linear``), products
with and quotients by a learned scalar at its value now (``_scaled*``, ``_scalar``), average pooling (``_averaged``),
and the values now of tensors computed from attributes alone (``_folded``, ``_fold``).

A part of :class:`_ties.Ties` (a mixin: ``Ties.__init__`` sets the memos it reads); that module's docstring says
where the rest is.
"""

from __future__ import annotations

import math
from dataclasses import replace

import torch
from torch import nn
from torch.fx import Node

from sll_fx import dtypes

from ._grids import (Grid, Tie, _close, _common_step, _grid, _multiple, _number, _on, _product, _sum, _tensor_grid,
                     _union)
from ._patterns import _arg, _same_value
from ._tie_nodes import (_added, _attribute, _branches, _difference, _factor_of, _factors_of, _fake_quantizer, _first,
                         _keeps, _name, _of_itself, _order_statistic_values, _put, _tensor_of, _viewed_attribute,
                         _written_value)
from ._tie_ops import (_CLAMPS, _DIVS, _EXTREMA, _FOLDABLE, _FOLDED_AS, _GRID_NESTING, _INT_CASTS, _JOINS, _JUMPS,
                       _ORDER_STATISTICS_OF_ONE, _POWERS, _PUTS, _SUMS, _WHOLE_OPS, _avg_window, _keeps_values, _power)


class _Grids:
    """The grids of nodes' values: a part of :class:`_ties.Ties`."""

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
                return self._pooled(node, self.grid(first))
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
            return self._heaviside_grid(node, first)
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
            g = self.grid(first)
            return g.absolute() if g is not None else None
        if name in _POWERS:  # (round(h) ** 2: a product of the grid with itself, k^2 whole)
            n = _power(name, node)
            g = self.grid(first) if n is not None and node.args[0] is first else None
            for _ in range(n - 1 if g is not None else 0):
                g = _product(g, self.grid(first))
            return g
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
        if name in ("add", "sub") and len(node.args) > 1:
            alpha = node.kwargs.get("alpha", 1)
            if not _number(alpha) or set(node.kwargs) - {"alpha"}:
                return None
            if (pair := _difference(name, node, alpha)) is not None:
                if self._cancels(*pair, node):  # (h - h, h + (-h), h - h.clone(): 0 on every input)
                    return Grid(0.0, 1.0, node, frozenset((0.0,)))
                if found := self._shifted_back(*pair):
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
            return a.added(b)
        if name in ("mean", "nanmean"):
            return self._mean_grid(node, self.grid(first))
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
            return self._pooled(node, self.grid(first))
        return None

    def _pooled(self, node: Node, g: Grid | None) -> Grid | None:
        """The grid of ``node``, an average pooling (``F.avg_pool2d``, ``nn.AvgPool2d``), of values on ``g``
        (:meth:`_averaged` over its window), else None (another op, ``adaptive_avg_pool2d``)."""
        if g is None:
            return None
        if node.op == "call_module":
            module = self._module_of(node)
            if not isinstance(module, nn.AvgPool1d | nn.AvgPool2d | nn.AvgPool3d):
                return None
            dims = 1 if isinstance(module, nn.AvgPool1d) else 2 if isinstance(module, nn.AvgPool2d) else 3
            return self._averaged(g, node, *_avg_window(module.kernel_size, module.padding, module.ceil_mode,
                                                        module.count_include_pad,
                                                        getattr(module, "divisor_override", None), dims))
        name = self._name_of(node)
        if name is None or not name.startswith(("avg_pool1d", "avg_pool2d", "avg_pool3d")):
            return None
        dims = int(name[-2])
        return self._averaged(g, node, *_avg_window(
            _arg(node, 1, "kernel_size"), _arg(node, 3, "padding", 0), _arg(node, 4, "ceil_mode", False),
            _arg(node, 5, "count_include_pad", True), _arg(node, 6, "divisor_override") if dims > 1 else None, dims))

    def _mean_grid(self, node: Node, g: Grid | None) -> Grid | None:
        """The grid of ``node``, a mean, of values on ``g``: ``g`` summed over the count it averages (T steps' spikes:
        j / T), or, a count not known, the grid of ``step / n`` for any ``n``, every value for some ``n`` (round's
        halves for an even ``n``; ``q - q.mean(-1, keepdim=True)`` is 0 where a row's values are equal)."""
        if g is None:
            return None
        if n := self._reduced_count(node):
            g = _sum(g)
            return g.times(1 / n) if g is not None and g.scale is None else None
        return replace(g, values=None, any_count=True)

    def _heaviside_grid(self, node: Node, first) -> Grid | None:
        """0 and 1, and its ``values`` where its input is 0 on ranges (``heaviside(round(x), 0.5)``: 0.5 on (-0.5,
        0.5); a learned scalar at its value now).  Where ``values`` is on no grid with 0 and 1 there (a tensor of any
        value, ``heaviside(relu(x), tanh(x))``), none: it takes any value there (``round(heaviside(mask, x) * 2) / 2``
        is on the grid of 0.5, not of 1); the steps 0 and 1 it takes on whole ranges are its constants then
        (``Ties._constants``), which a threshold or jump at 1 ties with (``>= 1``)."""
        steps = Grid(0.0, 1.0, node, frozenset((0.0, 1.0)))
        if self._ties(first, 0.0, 8) is None:  # (its values= at exactly 0: a single point)
            return steps
        values = _arg(node, 1, "values")
        held = self._held(values)
        if held is None and isinstance(values, Node):
            held = self._scalar(values)
        if held is None:
            return None
        if not _number(held):
            return _union([steps, held])
        step = _common_step(1.0, held) if held else 1.0
        return Grid(0.0, step, node, frozenset((0.0, 1.0, float(held)))) if step else steps

    def _cancels(self, a, b, at: Node | None = None) -> bool:
        """Is ``a - b`` 0 for every input: one same tensor (``h - h``, ``h - h.detach()``, ``h.clamp_(0, 1) - h``: an
        alias reads every write of the other), or, where the graph writes nothing in place (or no write reaches
        either, :meth:`_untouched`), a copy of it (``h -
        h.clone()``), the same call of the same values twice (``relu(h) - relu(h)``) or an extremum of a tensor with
        itself (``maximum(h, h) - h``); where it writes in place, read at ``at`` (the difference), a copy of it that
        nothing has written since it was taken, nor ``h`` between (``c = h.clone(); c.add_(1); c - c.clone()``), also a
        copy of such a copy (``d = c.clone(); c.add_(1); d - h``)?"""
        if not isinstance(a, Node):
            return False
        a, b = _tensor_of(a), _tensor_of(b)
        if a is b:
            return True
        if not self._untouched(a, b):
            if at is None:
                return False
            place = self._order.get(at, len(self._order))
            reads_b = self._copy_reads(b, place)  # (a copy of a copy, each level: d = c.clone() of c = x.clone())
            return any(read_a[0] is read_b[0] and not self._written_between(read_a[0], min(read_a[1], read_b[1]),
                                                                             max(read_a[1], read_b[1]))
                       for read_a in self._copy_reads(a, place) for read_b in reads_b)
        return (a := _of_itself(a)) is (b := _of_itself(b)) or _same_value(a, b)

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
        merged = self._merged(terms)
        if len(merged) == len(terms):
            return None
        if any(min(ks) < 0 < max(ks) for ks in merged.values()):  # (x * -1.0 + x: 0 exactly, else none)
            return Grid(0.0, 1.0, node, frozenset((0.0,))) if len(terms) == 2 and self._opposite(node) else None
        grids = [g.times(sum(ks)) if (g := self.grid(v)) is not None else None for v, ks in merged.items()]
        if None in grids or not all(g.scaled_as(grids[0]) for g in grids[1:]):
            return None
        step = grids[0].step
        for g in grids[1:]:
            if (step := _common_step(step, g.step)) is None:
                return None
        found = _grid(grids[0], offset=sum(g.offset for g in grids), step=step,
                      values=grids[0].values if len(grids) == 1 else None, any_count=any(g.any_count for g in grids))
        return found.plus(shift) if found is not None else None

    def _opposite(self, node: Node) -> bool:
        """Is ``node`` ``a + b`` or ``a - b`` of two terms ``k * v`` and ``-k * v`` (``a - b``: ``k * v`` twice) of one
        same node ``v`` (:func:`_factor_of`: ``v``, ``-v``, one product with a number): 0 on every input (``x * -1.0 +
        x``, ``x * 2.0 - 2.0 * x``), as :meth:`_combined` reads it where its terms cancel?  Two terms that are
        products with numbers also through products (:func:`_factors_of`: ``(x * 3) * 5 - x * 15``; beside a plain
        term, ``(x * -1) * 1 + x``), 0 where float32 rounds both alike (on most inputs, not all: a tie on part of the
        range, more ties, never fewer), with coefficients equal to a few ulps (``(x * 0.1) * 3 - x * 0.3``: 0.1 * 3 is
        0.30000000000000004).  (``_tie_inert`` reads the same forms.)"""
        name = self._name_of(node)
        if name not in ("add", "sub") or len(node.args) != 2 or node.kwargs:
            return False
        return self._opposite_terms(name, *node.args)

    def _opposite_terms(self, name: str, a, b) -> bool:
        """:meth:`_opposite` of ``a + b`` (``name`` ``"add"``) or ``a - b`` (``"sub"``), the terms given (a
        comparison's two operands, as ``a - b``: ``x * 2.0 > 2 * x``)."""
        if not (isinstance(a, Node) and isinstance(b, Node)):
            return False
        (u, k), (w, m) = _factor_of(a), _factor_of(b)
        if u is w or self._name_of(a) != "mul" and self._name_of(b) != "mul":
            return u is w and k != 0 and k == (m if name == "sub" else -m)
        (u, k), (w, m) = _factors_of(a), _factors_of(b)  # ((x * 3) * 5 - x * 15, (x * -1) * 1 + x: 0 on most inputs,
        return u is w and k != 0 and _close(k, m if name == "sub" else -m)  # kept hard there; a product, as the inert
        # sums' names ask it)

    def _merged(self, terms: list) -> dict:
        """``{v: [k, ...]}``: the coefficients of :meth:`_linear`'s terms, grouped by the value each reads, one same
        value where two terms read the same node or the same call of the same values (``where(m, x, 2.0)`` written
        twice: ``_same_value``, as :meth:`_cancels` reads it), in a graph that writes nothing in place (as its callers
        are read)."""
        merged: dict[Node, list[float]] = {}
        for v, k in terms:
            for u in merged:  # (the op and target first: the benchmark's h + 0.1 * d reads two ops in every block)
                if u is v or u.op == v.op and u.target == v.target and _same_value(u, v):
                    v = u
                    break
            merged.setdefault(v, []).append(k)
        return merged

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
            users: set[Node] = set()  # (the users of those found so far: a call reading only them is one of them)
            for n in self.gm.graph.nodes:
                if n.op == "get_attr" or n in users and n.op in ("call_function", "call_method") and all(
                        a in found for a in n.all_input_nodes):
                    found.add(n)
                    users.update(n.users)
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
        number = self.number(node) if self._any_write() else self._value(node)  # (once per node: _value's memo)
        if _number(number):
            return float(number)
        folded = self._folded(node, 4)  # (7.0 / alpha, alpha.abs(): computed from attributes, its value now)
        return float(folded[0].reshape(())) if folded is not None and folded[0].numel() == 1 else None

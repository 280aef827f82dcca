"""The graph's in-place writes as the tie check reads them: the nodes written, directly or through views
(``_written_nodes``, ``_writers``, ``_written``), the writes made before the node being read (``_writes_before``,
``_read_at``), values whose value now is not what the graph reads (``_stale``), the nodes a write may reach
(``_touched``, ``_untouched``), whether a view is all of its base (``_covers``), and the shapes known without inputs
(``_meta``).

A part of :class:`_ties.Ties` (a mixin: ``Ties.__init__`` sets the memos it reads); that module's docstring says
where the rest is.
"""

from __future__ import annotations

import torch
from torch.fx import Node

from sll_fx import dtypes, scans

from ._aliases import _writes
from ._tie_nodes import (_attribute, _first, _first_node, _meta_like, _name, _tensor_of, _viewed, _viewed_attribute,
                         _views_before)
from ._tie_ops import _ALL_IF_CONTIGUOUS, _ALL_VIEWS, _REPEATING, _SHAPE_ONLY, _VIEWS, _VIEW_DEPTH
from ._uses import _mutated


class _Writes:
    """The graph's in-place writes, views and shapes: a part of :class:`_ties.Ties`."""

    def _any_write(self) -> bool:
        """Does the graph write anything in place, or call a module that may write its attributes?"""
        if self._writing is None:
            self._writing = bool(self._writes()) or bool(self._written_nodes()) or bool(self._written())
        return self._writing

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

    def _copy_read(self, v, at: int) -> tuple | None:
        """``(x, where it is read)``: ``v``, read at the place ``at``, holds ``x`` as it is at that place, or a clone of
        ``x`` (where the clone is made) that nothing has written since; else None."""
        v = _tensor_of(v)
        if not isinstance(v, Node):
            return None
        if _name(v) == "clone" and not any(self._order.get(w, at) < at for w, _ in self._written_nodes().get(v, ())):
            return _tensor_of(_first(v)), self._order[v]
        return v, at

    def _copy_reads(self, v, at: int) -> list[tuple]:
        """:meth:`_copy_read` of ``v`` and, a few deep, of what it reads where that is such a clone too (``c =
        x.clone(); d = c.clone(); c.add_(1.0)``: ``d`` holds ``c`` as it was made, ``x``), nearest first."""
        read = self._copy_read(v, at)
        found = [read] if read is not None else []
        for _ in range(3):
            deeper = self._copy_read(read[0], read[1]) if read is not None else None
            if deeper is None or deeper[0] is read[0]:
                break
            found.append(read := deeper)
        return found

    def _written_between(self, node: Node, start: int, end: int) -> bool:
        """May a write reach ``node`` between the places ``start`` and ``end``: one into it or a view of it, or an
        attribute it is (``self.zp``) that a module the graph calls may write?"""
        if _attribute(node) in self._written():
            return True
        return any(start < self._order.get(w, -1) < end for w, _ in self._written_nodes().get(node, ()))

    def _written(self) -> set[str]:
        """The targets of the tensor attributes the graph writes in place (through views too), and of those of the
        modules it calls whose code may write them (an opaque child's ``self.aux.fill_(...)``; a BatchNorm's running
        statistics: their value now is stale; ``scans.state_written``)."""
        if self._written_targets is None:
            self._written_targets = set()
            graph = self.gm.graph
            attributes = graph.find_nodes(op="get_attr", sort=False)  # (none: no module's writes to look for, the
            if attributes:                                             # benchmark's many modules, nn.Linear each)
                called = tuple(f"{n.target}.{p}." if p else f"{n.target}."
                               for n in graph.find_nodes(op="call_module", sort=False)
                               if (m := self._module_of(n)) is not None for p in scans.state_written(m))
                self._written_targets.update(n.target for n in attributes if n.target.startswith(called))
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

    def _touched(self) -> set[Node]:
        """The nodes a write in place may reach, found once in graph order: those written (directly, through views, or
        an attribute the graph or a module it calls may write), those that write, and every node that reads one.  The
        others hold one value wherever they are read, and are read as in a graph that writes nothing in place
        (``tanh(x) - tanh(x)`` beside ``c = x.clone(); c.add_(1.0)``: 0)."""
        if self._touched_found is None:
            written, writers, attributes = self._written_nodes(), self._writers(), self._written()
            found = self._touched_found = set()
            for node in self.gm.graph.nodes:
                if node in written or node in writers or node.op == "get_attr" and node.target in attributes or \
                        any(a in found for a in node.all_input_nodes):
                    found.add(node)
        return self._touched_found

    def _untouched(self, *values) -> bool:
        """Are ``values`` (nodes, numbers) read as in a graph that writes nothing in place: none is a node a write may
        reach (:meth:`_touched`)?"""
        if not self._any_write():
            return True
        touched = self._touched()
        return not any(isinstance(v, Node) and v in touched for v in values)

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

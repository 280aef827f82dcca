"""Where a gradient can reach: ``_gradient_sources`` and ``_reach_output``.

A discrete op that no gradient reaches (its inputs come through ``.detach()``, a
``torch.no_grad()`` block, from buffers and constants alone, or from values that carry none:
random draws, indices, integers), or whose value reaches the output only through ``.detach()``,
has no gradient to give: the planner (``_plan.py``) leaves it hard and says why.
"""

from __future__ import annotations

import operator

import torch
from torch import nn
from torch.fx import GraphModule, Node

from sll_fx import dtypes, grad_regions

from ._aliases import _VIEW_NAMES
from ._patterns import _PATTERN_NAMES, _arg, _pattern_inputs
from ._spellings import _match, _op_name, _target_name
from ._uses import (_DETACH_SET, _INT_KINDS, _META_ATTRS, _META_NAMES, _PASS_NAMES, _cast_to, _is_detach, _mutated,
                    _writes_first)


def _gradient_sources(gm: GraphModule, kinds: dict) -> tuple[set, bool]:
    """The nodes a gradient can come from or pass through: the graph's inputs, parameters (frozen ones too:
    they may be unfrozen later) and tensors that require grad, calls of modules with parameters, and everything computed from them, except
    through ``.detach()`` / ``x.data`` / a ``torch.no_grad()`` block's edge (``grad_regions.detached``), and
    except what carries no gradient on (``_carries_no_gradient``: ``rand_like(h)``, ``zeros_like(h)``,
    ``h.new_ones(n)``, ``h.shape``, argmax/argsort indices, an integer or bool result; an exported graph's
    node that its input's gradient did not reach: a ``wrap_with_set_grad_enabled(False, ...)`` body).  A
    pattern's result (``one_hot(argmax(x), n)``, a top-k mask) is one when its ``x`` is.
    A tensor written in place by such a node (``buf.add_(x)``) is one too.  Also returns whether the graph
    has any detach node (one of those edges)."""
    graded: set = set()
    memo: dict = {}  # (_mutated's, over the graph)
    plain: dict = {}  # (op, target) -> _plain_call's answer, over the graph
    any_detach = False
    for node in gm.graph.nodes:
        op = node.op
        if op == "call_function" or op == "call_method":  # (the memo read here first: one call less per node)
            try:
                plain_call = plain[(op, node.target)]
            except (KeyError, TypeError):  # (not seen yet; an unhashable callable: _plain_call answers)
                plain_call = _plain_call(op, node.target, plain)
        else:
            plain_call = False
        if plain_call:  # (most nodes, asked first: the tests below, less those its target settles: what is left of
            # _carries_no_gradient is for an integer kind or export's metadata)
            if graded.isdisjoint(node.all_input_nodes) or (
                    (kinds.get(node) in _INT_KINDS or node.meta.get("tensor_meta") is not None)
                    and _carries_no_gradient(node, kinds, graded)):
                continue
            graded.add(node)
            if op == "call_function" and node.kwargs:  # (an out= tensor)
                graded.update(_written(node, memo))
        elif op == "placeholder":
            if kinds.get(node) not in _INT_KINDS:  # (an integer input cannot require grad)
                graded.add(node)
        elif op == "get_attr":  # (a parameter frozen now may be unfrozen later: it counts)
            value = dtypes.fetch_attr(gm, node.target)
            if isinstance(value, nn.Parameter) or (isinstance(value, torch.Tensor) and value.requires_grad):
                graded.add(node)
        elif op == "output":
            continue
        elif _is_detach(node):
            any_detach = True
        elif op == "call_module":
            if not graded.isdisjoint(node.all_input_nodes) or \
                    dtypes.module_parameters(dtypes.submodule(gm, node.target)):
                graded.add(node)
        else:
            name = _op_name(node)  # (inlined _pattern_inputs: this runs on every node)
            inputs = node.all_input_nodes if name not in _PATTERN_NAMES else _pattern_inputs(node)
            if graded.isdisjoint(inputs) or _carries_no_gradient(node, kinds, graded, name):
                continue
            graded.add(node)
            if op == "call_function" or node.target.endswith("_"):
                graded.update(_written(node, memo))
    return graded, any_detach


def _carried(graph, graded: set, kinds: dict) -> set:
    """The nodes whose value carries a gradient in the model as it is: of those a gradient reaches (``graded``), the
    leaves and what is computed from a carrier, less the bool and integer results (``graded`` counts a comparison
    and its float cast, which only a rewrite gives a gradient: ``_aliases._isolate_saves``)."""
    carried: set = set()
    for node in graph.nodes:
        if node in graded and kinds.get(node) not in _INT_KINDS and (
                node.op in ("placeholder", "get_attr", "call_module") or
                not carried.isdisjoint(node.all_input_nodes)):
            carried.add(node)
    return carried


def _written(node: Node, memo: dict) -> list[Node]:
    """What an in-place call writes into (``_mutated``), and what that is a view of, outwards: ``v.view(-1).add_(h)``
    writes ``v`` too (a ``zeros_like`` accumulator written so was taken for "no gradient reaches its input"), and so
    does ``v.mul_(0.5).add_(h)`` (an in-place call returns what it wrote into)."""
    found = []
    for w in _mutated(node, memo):
        for _ in range(_VIEW_DEPTH):
            found.append(w)
            if not w.args or not isinstance(w.args[0], Node) or \
                    _op_name(w) not in _BASE_VIEWS and not _mutated(w, memo):
                break
            w = w.args[0]
    return found


#: how many views an in-place write is followed out through
_VIEW_DEPTH = 16
#: calls whose result may be a view of their first argument (basic indexing too: a copy, advanced indexing makes, only
#: adds a way for the gradient)
_BASE_VIEWS = _VIEW_NAMES | {"getitem"}


def _plain_call(op: str, t, memo: dict) -> bool:
    """Is a call of ``t`` (``op``: call_function or call_method) one that ``_gradient_sources`` settles by its inputs
    and kind alone, whatever its arguments: no detach, no pattern (``_pattern_inputs``), no item or attribute
    read, no call that carries no gradient by its name or is an exported no-grad block, no in-place spelling
    (only an ``out=`` tensor is written)?  ``memo``: (op, target) -> the answer, over a graph."""
    try:
        found = memo.get((op, t))
    except TypeError:  # (an unhashable callable)
        return False
    if found is None:
        if op == "call_method":
            found = t not in ("detach", "detach_") and not t.endswith("_")
        else:
            found = not (t is getattr or t is operator.getitem or t in _DETACH_SET or
                         t is grad_regions.set_grad_hop() or _writes_first(op, t))
        name = _target_name(op == "call_method", t)
        found = memo[(op, t)] = found and name not in _PATTERN_NAMES and name not in _META_NAMES and \
            name not in _NO_GRADIENT_NAMES
    return found


#: calls whose result carries no gradient from their tensor arguments: tensors made like another (only its
#: shape, dtype or device is read), random draws like it, its shape, indices and counts
_NO_GRADIENT_NAMES = frozenset(("randint_like", "new_tensor", "argmax", "argmin", "argsort", "bucketize",
                                "searchsorted", "nonzero", "argwhere", "bincount", "histc", "count_nonzero",
                                "unique", "unique_consecutive"))
#: calls whose second output is an index tensor: ``x.topk(k)[1]``, ``x.sort().indices``, ``x.max(dim).indices``
_INDEXED_NAMES = frozenset(("topk", "sort", "max", "min", "kthvalue", "mode", "median", "nanmedian", "cummax",
                            "cummin"))


def _carries_no_gradient(node: Node, kinds: dict, graded: set, name: str | None = None) -> bool:
    """Does ``node``, computed from a node a gradient reaches, carry none on (see ``_gradient_sources``)?  An
    integer or bool result carries one only where it may become a surrogate's float: a comparison, a one-hot
    (a discrete op the pass may rewrite), a view or move of such a result, integer arithmetic on a one-hot."""
    target = node.target
    if target is operator.getitem or target is getattr:
        if _is_index_output(node):
            return True
        if target is getattr and node.op == "call_function":
            return len(node.args) > 1 and node.args[1] in _META_ATTRS
    name = _op_name(node) if name is None else name
    if name in _META_NAMES or name in _NO_GRADIENT_NAMES or grad_regions.runs_without_grad(node):
        return True
    meta = node.meta.get("tensor_meta")  # an exported graph: its input required grad, its result does not
    if meta is not None and _requires_grad(meta) is False and meta.dtype.is_floating_point and any(  # (a no-grad
            _requires_grad(n.meta.get("tensor_meta")) for n in node.all_input_nodes):           # body)
        return True
    kind = kinds.get(node)
    if kind not in _INT_KINDS or _match(node) is not None:
        return False
    carriers = [n for n in node.all_input_nodes if n in graded and kinds.get(n) in _INT_KINDS]
    if not carriers:  # x.long(), argmax(x).view(-1), (x > 0).sum(): from floats or a bool's integer use
        return True
    if name in _PASS_NAMES or _cast_to(node, carriers[0], kinds) == "move":  # a view or move of one
        return False
    return not any(kinds.get(n) == dtypes.INT for n in carriers)  # integer arithmetic on a one-hot moves it on


def _requires_grad(meta) -> bool | None:
    """A tracer's ``TensorMetadata`` (``node.meta["tensor_meta"]``: torch.export's): its ``requires_grad``;
    None for anything else (no metadata, a tuple of them)."""
    flag = getattr(meta, "requires_grad", None)
    return flag if isinstance(flag, bool) and isinstance(getattr(meta, "dtype", None), torch.dtype) else None


def _is_index_output(node: Node) -> bool:
    """``x.topk(k)[1]``, ``x.sort().indices``, ``torch.max(x, dim).indices``: an index tensor."""
    if node.op != "call_function" or len(node.args) < 2 or not isinstance(node.args[0], Node):
        return False
    if not ((node.target is operator.getitem and node.args[1] == 1) or
            (node.target is getattr and node.args[1] == "indices")):
        return False
    source = node.args[0]
    name = _op_name(source)
    if name in ("max", "min"):  # with a dim: (values, indices); else a tensor (x.max(y)[1]: a row of it)
        return isinstance(_arg(source, 1, "dim"), int) and not isinstance(_arg(source, 1, "dim"), bool)
    return name in _INDEXED_NAMES


def _reach_output(graph, order: dict) -> tuple[set, set]:
    """The nodes whose value reaches the graph's output, and those that reach it not only through
    ``.detach()`` / ``x.data``: walks back from the output along the inputs of each node (and from a
    tensor to the in-place calls writing into it), not into a detach node's input, nor from a use of a
    tensor after its ``detach_()``.  (A ``torch.no_grad()`` block's edges are ``grad_regions.detached`` calls.)"""
    writers: dict[Node, list[Node]] = {}
    detached_at: dict[Node, int] = {}
    any_detach = False
    for node in graph.nodes:
        for target in _mutated(node):
            writers.setdefault(target, []).append(node)
        if _is_detach(node):
            any_detach = True
            if _mutated(node):  # y.detach_(): y's later uses are detached
                detached_at.setdefault(node.args[0], order[node])
    outputs = [n for n in graph.nodes if n.op == "output"]

    def walk(block: bool) -> set:
        seen, stack = set(), list(outputs)
        while stack:
            node = stack.pop()
            if node in seen:
                continue
            seen.add(node)
            stack += writers.get(node, ())
            if block and _is_detach(node):
                continue
            for source in node.all_input_nodes:
                if block and source in detached_at and order[node] > detached_at[source]:
                    continue
                stack.append(source)
        return seen

    reaches = walk(False)
    return reaches, (walk(True) if any_detach else reaches)

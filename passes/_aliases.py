"""In-place writes that a rewrite would turn into different values or a failed backward: ``isolate_writes``.

The hard ops save nothing for a backward and return fresh tensors; their sll ops save tensors (their
input in hard mode, their output or ramp in linear mode, a selection's branches) and a comparison's
sll op returns floats, so that the user's float casts of it (``c.float()``, each a copy of the bool)
become no-ops, one tensor.  A graph that writes in place (``q.add_(1)``, ``x[i] = v``, ``out=``,
``F.relu(h, inplace=True)``, ``nn.ReLU(inplace=True)``, a module kept opaque, whose Python code may write what it
is given) could then

- write an sll op's output that its backward reads (autograd's "modified by an inplace operation"),
  or an input of it after it ran;
- write, through one cast of a comparison, what the other casts and the comparison's other uses read.

``isolate_writes`` runs after the rewrite and gives such a written tensor its own copy, a ``clone``
marked ``ISOLATED`` in its meta: right after the sll op (its users read the copy, as they read the
hard op's fresh result), right after each cast of a comparison or selection whose original result
was a bool or an integer (a copy there as in the original), and right before the sll op for an input
written after it.  Values are those of the original graph; ``strip.py`` drops the copies again, so
``export_hard`` gives the original graph.  A graph with no in-place write (most) is swept once.

A rewrite also gives a gradient to values that had none (a comparison, ``one_hot(argmax)``, a top-k mask, a
``where`` of constants, and what is computed from them), so the ops reading them save more for their backward:
``h * (h > t).float()`` saves ``h`` in the linearized graph, only the mask in the model.  A tensor such an op
reads and that is written after it (``nn.ReLU(inplace=True)(h)``, ``h.mul_(2)``, ``h[0] = 0``) gets a copy right
before the op, and a result of such an op written later a copy right after it (``_isolate_saves``).

Aliases are followed conservatively: views, casts, ``getitem``, ``.data``/``.T``, and what an in-place
call returns (its first argument); a copy too many costs memory, never a value.
"""

from __future__ import annotations

import operator

import torch
from torch.fx import GraphModule, Node

from sll_fx import dtypes
from sll_fx.graph_module import ISOLATED  # (a node meta key, which a pickle of the GraphModule carries)

from ._spellings import _op_name
from ._uses import _CAST_METHODS, _META_NAMES, _PASS_ATTRS, _is_detach, _mutated, _writes_first

#: calls whose result may share memory with their first argument
_VIEW_NAMES = frozenset((
    "view", "view_as", "reshape", "reshape_as", "_unsafe_view", "_reshape_alias", "flatten", "unflatten", "ravel",
    "squeeze", "unsqueeze", "permute", "transpose", "swapaxes", "swapdims", "t", "movedim", "moveaxis", "expand",
    "expand_as", "broadcast_to", "contiguous", "detach", "alias", "narrow", "select", "slice", "diagonal", "chunk",
    "split", "split_with_sizes", "tensor_split", "unbind", "as_strided", "unfold", "view_as_real", "view_as_complex",
    "real", "imag", "cpu", "cuda", "to", "type", "type_as", *_CAST_METHODS,
))


def isolate_writes(gm: GraphModule, sll_nodes: list[Node], integral: set[Node], created: list[Node],
                   carried: set[Node] = frozenset()) -> None:
    """Add the copies (see the module docstring) for the rewritten nodes ``sll_nodes``; ``integral``: those whose
    original result was a bool or an integer (a comparison, an uncast one_hot).  ``carried``: the nodes whose value
    carried a gradient before the rewrite (``_gradients._carried``; the sll nodes of such originals among them); the
    other sll nodes give gradients that the model has not (``_isolate_saves``).  New nodes go to ``created``."""
    graph = gm.graph
    writes = _writes(gm)
    if not writes:
        return
    _isolate_sll_ops(graph, writes, sll_nodes, integral, created)
    fresh = _fresh_gradients(gm, [n for n in sll_nodes if n not in carried], carried)
    if fresh:  # (the copies above moved some writes onto them: what each writer writes, again)
        _isolate_saves(gm, [(w, _written(gm, w)) for w, _ in writes], fresh, set(sll_nodes), created)


def _isolate_sll_ops(graph, writes: list, sll_nodes: list[Node], integral: set[Node], created: list[Node]) -> None:
    """The copies of the sll ops' inputs written after them, of their outputs and of their first casts written."""
    order = {n: i for i, n in enumerate(graph.nodes)}
    roots: dict[Node, Node] = {}
    written: dict[Node, list[Node]] = {}  # alias root -> the nodes writing into it
    for writer, targets in writes:
        for t in targets:
            written.setdefault(_root(t, roots), []).append(writer)
    for node in sll_nodes:
        for value in dict.fromkeys(node.all_input_nodes):  # written after the sll op read it: its own copy
            if any(order[w] > order[node] for w in written.get(_root(value, roots), ())):
                with graph.inserting_before(node):
                    copy = _copy(graph, value, node, created)
                node.replace_input_with(value, copy)
        if node in written:  # (through any alias of its output: a cast too)
            casts = _first_casts(node, order) if node in integral else []
            for n in [node, *casts]:  # (one node per inserting_after: fx would reverse several)
                with graph.inserting_after(n):
                    copy = _copy(graph, n, n, created)
                n.replace_all_uses_with(copy, delete_user_cb=lambda u, c=copy: u is not c)


def _fresh_gradients(gm: GraphModule, seeds: list[Node], carried: set[Node]) -> set[Node]:
    """The nodes that carry a gradient only since the rewrite: ``seeds`` (sll nodes whose original had none) and what
    is computed from them that had none either, up to a ``.detach()`` or a tensor made like one (``zeros_like``); a
    tensor written with such a value (``acc.add_(mask)``) too."""
    fresh, stack = set(seeds), list(seeds)
    while stack:
        for user in stack.pop().users:
            for n in (user, *_written(gm, user)):
                if n not in fresh and n not in carried and not _is_detach(n) and _op_name(n) not in _META_NAMES:
                    fresh.add(n)
                    stack.append(n)
    return fresh


def _isolate_saves(gm: GraphModule, writes: list, fresh: set[Node], sll_nodes: set[Node], created: list) -> None:
    """Copy what the ops reading a value of ``fresh`` may now save for their backward and is written after them: a
    tensor they read (a copy before the op, which reads it; one copy for the readers up to a write, the sll ops'
    among them) and their own result (a copy right after it, which its users read).  Not for views (they save no
    tensor) nor for the tensor an op writes itself, and a result only where the op's backward reads it
    (``_SAVES_RESULT``); the sll ops' own are ``_isolate_sll_ops``'s."""
    graph = gm.graph
    order = {n: i for i, n in enumerate(graph.nodes)}
    roots: dict[Node, Node] = {}
    places: dict[Node, list[int]] = {}  # alias root -> the places of its writers
    for writer, targets in writes:
        for t in targets:
            places.setdefault(_root(t, roots), []).append(order[writer])
    copies: dict[Node, list] = {}  # value -> [(place, an unwritten copy of it)]
    for n in graph.nodes:
        if n.meta.get(ISOLATED) and n.target == "clone" and n.op == "call_method" and _root(n, roots) not in places:
            copies.setdefault(n.args[0], []).append((order[n], n))
    for node in sorted(dict.fromkeys(u for n in fresh for u in n.users), key=order.__getitem__):
        if node in sll_nodes or node.op == "output" or (_parent(node) is not None and not _mutated(node)):
            continue  # (a view: it saves no tensor)
        at = order[node]
        own = {_root(t, roots) for t in _written(gm, node)}
        for value in dict.fromkeys(node.all_input_nodes):
            root = _root(value, roots)
            written = places.get(root, ())
            if root in own or all(w < at for w in written):
                continue
            copy = next((c for p, c in copies.get(value, ()) if p < at and not any(p < w < at for w in written)), None)
            if copy is None:
                with graph.inserting_before(node):
                    copy = _copy(graph, value, node, created)
                copies.setdefault(value, []).append((at - 0.5, copy))
            node.replace_input_with(value, copy)
        if node in fresh and not own and _op_name(node) in _SAVES_RESULT and any(
                w > at for w in places.get(_root(node, roots), ())):
            with graph.inserting_after(node):
                copy = _copy(graph, node, node, created)
            node.replace_all_uses_with(copy, delete_user_cb=lambda u, c=copy: u is not c)
            roots[copy], places[copy] = copy, places[_root(node, roots)]  # (its writers write the copy now)


#: ops whose backward reads their own result (written in place after them, it fails)
_SAVES_RESULT = frozenset(("exp", "exp2", "expm1", "sigmoid", "tanh", "relu", "sqrt", "rsqrt", "reciprocal",
                           "softmax", "log_softmax", "elu", "celu", "selu", "logsigmoid", "pow"))


def _copy(graph, value: Node, like: Node, created: list) -> Node:
    copy = graph.call_method("clone", (value,))
    copy.meta.update({k: v for k, v in like.meta.items() if k in ("nn_module_stack", "stack_trace")})
    copy.meta[ISOLATED] = True
    created.append(copy)
    return copy


def _writes(gm: GraphModule) -> list[tuple[Node, list[Node]]]:
    """``(node, what it writes into)`` for the nodes of ``gm`` that write in place (one quick sweep: a target's
    answer is worked out once)."""
    memo: dict = {}   # call_function target -> may it write (in place by name, an out= or inplace= argument)
    found = []
    for node in gm.graph.nodes:
        op = node.op
        if op == "call_method":
            t = node.target
            if not (t.endswith("_") or "out" in node.kwargs):
                continue
        elif op == "call_function":
            t, kw = node.target, node.kwargs
            try:
                may = memo.get(t)
            except TypeError:  # (an unhashable callable: it may write)
                may = True
            if may is None:
                may = memo[t] = _writes_first(op, t)
            if not (may or kw and ("out" in kw or kw.get("inplace") is True)):
                continue
        elif op != "call_module":
            continue
        written = _written(gm, node)
        if written:
            found.append((node, written))
    return found


def _written(gm: GraphModule, node: Node) -> list[Node]:
    """What ``node`` writes into: ``_mutated``'s answer; the first argument of a call with ``inplace=True``
    (``F.relu(h, inplace=True)``) or of a submodule whose ``inplace`` flag is set (``nn.ReLU(inplace=True)``); every
    input of a submodule with a module of the user's in it (kept opaque or skipped: Python code that may write
    what it is given)."""
    found = _mutated(node)
    if found or not node.args or not isinstance(node.args[0], Node):
        return found
    if node.op == "call_function" and node.kwargs.get("inplace") is True:
        return [node.args[0]]
    if node.op == "call_module":
        modules = dtypes.module_tree(dtypes.submodule(gm, node.target))
        for m in modules:  # (loops, not any(): this runs on every call_module node)
            if not type(m).__module__.startswith("torch."):
                return list(node.all_input_nodes)
        for m in modules:
            if dtypes.module_attr(m, "inplace", False) is True:
                return [node.args[0]]
    return []


def _parent(node: Node) -> Node | None:
    """The node whose memory ``node``'s result may share (None: a fresh result, or not a call)."""
    if node.op not in ("call_function", "call_method") or not node.args or not isinstance(node.args[0], Node):
        return None
    t = node.target
    if t is operator.getitem or (t is getattr and node.args[1:2] and node.args[1] in _PASS_ATTRS):
        return node.args[0]
    if _op_name(node) in _VIEW_NAMES or _mutated(node):
        return node.args[0]
    return None


#: ops whose result is a new tensor, never one of their inputs nor a view of one (an allowlist: ``F.dropout`` in eval
#: mode, ``torch.positive``, ``x.to(x.dtype)``, ``x.contiguous()`` and a function of the user's may return their input)
_FRESH_NAMES = frozenset((
    "add", "sub", "rsub", "mul", "truediv", "div", "floordiv", "mod", "remainder", "pow", "neg", "negative",
    "matmul", "mm", "bmm", "addmm", "linear", "conv1d", "conv2d", "conv3d", "exp", "exp2", "expm1", "log", "log1p",
    "log2", "log10", "sigmoid", "tanh", "sin", "cos", "sqrt", "rsqrt", "reciprocal", "square", "abs", "clamp", "clip",
    "clamp_min", "clamp_max", "softmax", "log_softmax", "sum", "mean", "prod", "cumsum", "cumprod", "maximum",
    "minimum", "fmax", "fmin", "lerp", "addcmul", "addcdiv", "where", "masked_fill", "round", "floor", "ceil", "trunc",
    "fix", "sign", "clone", "cat", "concat", "concatenate", "stack", "zeros_like", "ones_like", "full_like",
    "empty_like", "rand_like", "randn_like", "zeros", "ones", "full", "rand", "randn",
))


def _fresh(node: Node) -> bool:
    """Is ``node``'s result a tensor it allocates (:data:`_FRESH_NAMES`), shared with no other value: not an input, an
    attribute, a module's output, a view, an alias or an in-place call's (nor an ``out=``/``inplace=True`` one)?"""
    return node.op in ("call_function", "call_method") and _op_name(node) in _FRESH_NAMES and not _mutated(node) \
        and "out" not in node.kwargs and node.kwargs.get("inplace") is not True and _parent(node) is None


def _root(node: Node, roots: dict) -> Node:
    """The first node up ``node``'s chain of aliases (``_parent``); every node walked is recorded in ``roots``."""
    path = []
    while node not in roots:
        path.append(node)
        parent = _parent(node)
        if parent is None:
            roots[node] = node
            break
        node = parent
    root = roots[node]
    for n in path:
        roots[n] = root
    return root


def _first_casts(node: Node, order: dict) -> list[Node]:
    """The dtype casts among the aliases of ``node`` reached from it through no other cast, in graph order: copies
    in the original graph, where ``node`` was a bool or an integer (``c.float()``, ``c.view(-1).float()``; a device
    move ``c.to(x.device)`` is none)."""
    found, stack = [], [node]
    while stack:
        value = stack.pop()
        for user in value.users:
            if user.args[:1] == (value,) and _parent(user) is value:
                (found if _is_dtype_cast(user) else stack).append(user)
    return sorted(set(found), key=order.__getitem__)


def _is_dtype_cast(node: Node) -> bool:
    if node.op != "call_method":
        return False
    if node.target in _CAST_METHODS or node.target == "type_as":
        return True
    if node.target in ("to", "type"):
        rest = [*node.args[1:], *(v for k, v in node.kwargs.items() if k in ("dtype", "other"))]
        return any(not dtypes.is_device(a) for a in rest if isinstance(a, (torch.dtype, Node, str)))
    return False


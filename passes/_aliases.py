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
from ._uses import _CAST_METHODS, _PASS_ATTRS, _mutated, _writes_first

#: calls whose result may share memory with their first argument
_VIEW_NAMES = frozenset((
    "view", "view_as", "reshape", "reshape_as", "_unsafe_view", "_reshape_alias", "flatten", "unflatten", "ravel",
    "squeeze", "unsqueeze", "permute", "transpose", "swapaxes", "swapdims", "t", "movedim", "moveaxis", "expand",
    "expand_as", "broadcast_to", "contiguous", "detach", "alias", "narrow", "select", "slice", "diagonal", "chunk",
    "split", "split_with_sizes", "tensor_split", "unbind", "as_strided", "unfold", "view_as_real", "view_as_complex",
    "real", "imag", "cpu", "cuda", "to", "type", "type_as", *_CAST_METHODS,
))


def isolate_writes(gm: GraphModule, sll_nodes: list[Node], integral: set[Node], created: list[Node]) -> None:
    """Add the copies (see the module docstring) for the rewritten nodes ``sll_nodes``; ``integral``: those whose
    original result was a bool or an integer (a comparison, an uncast one_hot).  New nodes go to ``created``."""
    graph = gm.graph
    writes = _writes(gm)
    if not writes:
        return
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
            may = memo.get(t) if dtypes.hashable(t) else True
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
        module = gm
        for name in node.target.split("."):  # (gm.get_submodule, without its checks: one per call_module node)
            module = module._modules[name]
        modules = list(module.modules())
        if any(not type(m).__module__.startswith("torch.") for m in modules):
            return list(node.all_input_nodes)
        if any(getattr(m, "inplace", False) is True for m in modules):
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


"""What a node calls: the linearize pass's cheap first look at each node.

``_classify`` tells, with one dict lookup on a node's target, whether the node may be a rule's
spelling, an in-place or no-jump spelling, an argmax/top-k selection or a discrete op without a
rule (bits ``_RULE``, ``_FIND``, ``_SELECTION``, ``_UNLISTED``); the tables are read from the rule
table, ``sll_fx.rules``, which stays the only source of spellings.  ``_match`` is ``rules.match``
behind that lookup; ``_rule_nodes`` finds the nodes that may be a rule's spelling by target (fx's lookup
table, no sweep over the graph).  ``_op_name`` names what a node calls when it is PyTorch's own (``mul`` for
``x * y``, ``torch.mul``, ``x.mul_(y)``, ``aten.mul.Tensor``).
"""

from __future__ import annotations

import functools
import operator

import torch
from torch._ops import OpOverload, OpOverloadPacket
from torch.fx import Node
from torch.fx.node import map_arg

from sll_fx import rules
from sll_fx.ops import find_calls

# --- a cheap first look at each node: one dict lookup on its target -----------------------------------
# ``rules.match`` tries every rule on a node; these tables say what a node can be at all, so that a sweep
# over the graph costs one lookup per node.  They are read from the rule table (its spellings stay the
# only source).  Function targets are keyed by identity, as ``Rule.matches`` compares them (the rule
# table keeps them alive).
_RULE, _FIND, _SELECTION, _UNLISTED = 1, 2, 4, 8  # a rule's spelling; in-place or no-jump spelling;
# argmax/argmin/topk; a discrete op without a rule (rules.UNLISTED: found and reported, left hard)


def _spelling_tables() -> tuple[dict[int, int], dict[str, int], frozenset[str]]:
    functions: dict[int, int] = {}
    methods: dict[str, int] = {}

    def add(table, key, bit):
        table[key] = table.get(key, 0) | bit

    for r in rules.RULES:
        for f in r.functions:
            add(functions, id(f), _RULE)
        for m in r.methods:
            add(methods, m, _RULE)
        for m in r.inplace:
            add(methods, m, _FIND)
        for f in r.inplace_functions:  # torch.round_(x)
            add(functions, id(f), _FIND)
    for functions_, method in rules.NO_JUMP.values():
        for f in functions_:
            add(functions, id(f), _FIND)
        add(methods, method, _FIND)
    for key in rules.UNLISTED_FUNCTIONS:  # (keyed by id there too)
        add(functions, key, _UNLISTED)
    for m in rules.UNLISTED_METHODS:
        add(methods, m, _UNLISTED)
    for spelling in (*rules.ARGMAX, *rules.TOPK):
        if isinstance(spelling, str):
            add(methods, spelling, _SELECTION)
        else:
            add(functions, id(spelling), _SELECTION)
    return functions, methods, frozenset(m for r in rules.RULES for m in r.inplace)


_FUNCTION_BITS, _METHOD_BITS, _INPLACE_NAMES = _spelling_tables()


def _classify(node: Node) -> int:
    """What ``node`` may be (``_RULE | _FIND | _SELECTION | _UNLISTED`` bits); 0 for most nodes (and for
    ``call_module`` nodes: ``_Planner.plan`` looks their module's type up in ``rules.UNLISTED_MODULES``)."""
    op = node.op
    if op == "call_function":
        target = node.target
        bits = _FUNCTION_BITS.get(id(target), 0)
        if isinstance(target, OpOverload) and target._opname in _INPLACE_NAMES:
            bits |= _FIND  # aten.round_.default, ...: see Rule.matches_inplace
        return bits
    if op == "call_method":
        return _METHOD_BITS.get(node.target, 0)
    return 0


def _match(node: Node) -> rules.Rule | None:
    """``rules.match(node)``, after a lookup that rules out most nodes."""
    return rules.match(node) if _classify(node) & _RULE else None


#: the functions that are a rule's spelling (``_classify``'s ``_RULE`` bit for a call_function node)
_RULE_FUNCTIONS = tuple({id(f): f for r in rules.RULES for f in r.functions}.values())


def _rule_nodes(graph) -> list[Node]:
    """The nodes of ``graph`` that may be a rule's spelling (``_classify(node) & _RULE``), in graph order: fx's lookup
    of nodes by target for the functions, the call_method nodes by their method name (no sweep over the graph)."""
    found = find_calls(graph, _RULE_FUNCTIONS, ordered=False)
    found += [n for n in graph.find_nodes(op="call_method", sort=False) if _METHOD_BITS.get(n.target, 0) & _RULE]
    return sorted(found) if len(found) > 1 else found
_NAMESPACES = (torch, torch.nn.functional, operator, torch.Tensor, torch.linalg, torch.special)


def _op_name(node: Node) -> str | None:
    """The name of what ``node`` calls, when it is PyTorch's own (``mul`` for ``x * y``, ``torch.mul``,
    ``x.mul_(y)``, ``aten.mul.Tensor``); None for anything else."""
    if node.op == "call_method":
        return _target_name(True, node.target)
    try:
        return _target_name(False, node.target)
    except TypeError:  # (an unhashable callable)
        return _target_name.__wrapped__(False, node.target)


@functools.lru_cache(maxsize=1024)  # (a graph calls few targets, many times: one lookup in torch's namespaces each)
def _target_name(method: bool, t) -> str | None:
    if method:
        name = t
    elif isinstance(t, OpOverload):
        name = t._opname if t.namespace == "aten" else None
    elif isinstance(t, OpOverloadPacket):
        name = t._qualified_op_name.split("::")[-1] if t._qualified_op_name.startswith("aten::") else None
    else:
        name = getattr(t, "__name__", None)
        if not isinstance(name, str) or not any(getattr(ns, name, None) is t for ns in _NAMESPACES):
            return None
    if isinstance(name, str) and name.endswith("_") and not name.startswith("__"):
        name = name[:-1]  # in place: x.mul_(y), torch.relu_(x), aten.add_.Tensor
    return name


def _nodes_in(args) -> list[Node]:
    found = []
    map_arg(args, found.append)
    return found

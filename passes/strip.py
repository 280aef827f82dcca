"""``strip_pass``: put every ``torch.ops.sll`` node back to the exact hard op it came from.

The inverse of each sll op is read from the same rule table that ``linearize_pass``
uses.  A comparison returns as the bare comparison when all its users are the user's
own float casts (what ``linearize_pass`` leaves), else as ``ops.hard_compare`` (the
explicit ``sll_fx.threshold``).  A comparison read only as a selection's ``soft`` mask (hard mode: the
surrogate that weighs the branches in the gradient) goes with its selection, as does a selection's ``hard``
input (the comparison's ``ops.hard_mask``, for a result that may be an integer).  The copies ``linearize_pass``
gave in-place writes (``_aliases.py``) are dropped: the hard ops save nothing and return fresh tensors.
Guarantee, checked: no node targets the ``sll`` namespace afterwards.

The hard ops are written at the graph's level (``Rule.emit_hard``): an sll node that is an
``OpOverload`` (a graph from ``torch.export``: ``sll.round.eps_tensor`` for a linearized model,
whose eps are buffers, ``sll.round.default`` for an explicit op with a float eps) comes back as
aten overloads (``aten.round.default``; a comparison as ``aten.gt.Scalar``, with
``aten._to_copy`` to the sll node's dtype where ``hard_compare`` is needed), so the result
exports again as it is.  Export's ``aten._assert_tensor_metadata`` nodes pin the dtypes of the
linearized graph (an sll comparison is float, the restored one bool): they are dropped.
"""

from __future__ import annotations

import torch
from torch.fx import GraphModule, Node
from torch.fx.passes.infra.pass_base import PassResult

from sll_fx import exported, ops, rules
from sll_fx.annealing import drop_unused_eps
from sll_fx.errors import RewriteError
from sll_fx.report import StripEntry, StripReport
from sll_fx.tracer import module_of, source_of

from ._aliases import HARD_COPY, ISOLATED
from ._checks import check_not_decomposed, check_placement


def strip_pass(gm: GraphModule) -> PassResult:
    """Rewrite ``gm`` in place; the report is attached as ``gm.sll_report``."""
    graph = gm.graph
    check_not_decomposed(graph, "export_hard", "strip the program before decomposing it: "
                         "torch.export.export(sll_fx.export_hard(ep), args).run_decompositions()")
    entries, created, softs, restored = [], [], [], {}
    for node in list(graph.nodes):  # the copies linearize_pass added for in-place writes: the hard ops need none
        if node.meta.get(ISOLATED) and node.op == "call_method" and node.target == "clone":
            node.replace_all_uses_with(node.args[0])
            graph.erase_node(node)
    for node in list(graph.nodes):
        if node.op != "call_function" or not ops.is_sll_target(node.target):
            continue
        try:
            rule = rules.for_sll_node(node)
        except LookupError as e:
            raise RewriteError(f"export_hard: node '{node.name}' targets {node.target}, which no rule strips: {e}")
        if rule.pattern == "cast" and node.users and all(_soft_of(u, node) for u in node.users):
            softs.append(node)  # only a hard-mode selection's gradient weights: it goes with its selections
            continue
        if rule.pattern == "cast" and not all(_takes_bool(u, node) for u in node.users):
            new = _hard_compare(graph, node, rule)  # an explicit sll_fx.threshold: its own float result
        else:
            if rule.pattern == "mask" and not _is_comparison(node.args[0]):
                raise RewriteError(f"export_hard: node '{node.name}' (sll.select) takes its mask from "
                                   f"'{node.args[0]}', not from an sll.compare node")
            new = rule.emit_hard(graph, node)
            hard = node.kwargs.get("hard")  # the comparison's hard value (for an integer result): goes with it too
            if isinstance(hard, Node) and hard not in softs:
                softs.append(hard)
        # not its dtype, nor its provenance: a hard op that came from an sll op is not an inlined one
        new.meta.update({k: v for k, v in node.meta.items() if k not in ("val", "tensor_meta", "from_node")})
        node.replace_all_uses_with(new)
        graph.erase_node(node)
        created.append(new)
        restored[node.name] = new
        entries.append(StripEntry(node=node.name, sll_op=f"sll.{rule.sll_op}", restored=_spell(new),
                                  module=module_of(new), source=source_of(new)))
    for node in reversed(softs):
        if not node.users:
            graph.erase_node(node)
    _merge_hard_copies(graph, restored)
    if entries:
        exported.drop_metadata_asserts(graph)
    drop_unused_eps(gm)  # the eps buffers (and get_attr nodes) of linearize_module that nothing reads now
    check_placement(graph, created, "export_hard")  # graph.lint()'s checks, for the nodes added
    gm.recompile()
    remaining = [n.name for n in graph.nodes if n.op == "call_function" and ops.is_sll_target(n.target)]
    if remaining:
        raise RewriteError(f"export_hard: sll op(s) survived in node(s) {remaining}")
    gm.sll_report = StripReport(entries, remaining=0)
    return PassResult(gm, modified=bool(entries))


def _merge_hard_copies(graph, restored: dict) -> None:
    """Merge each node ``linearize_pass`` kept or copied for a use left hard (``HARD_COPY``) with its twin: a rewritten
    op's original with the op restored from its sll node (``restored``: sll node name -> restored node; where both
    call the same thing), its pattern's pieces then unused dropped; the copy of a chain with the same call on the
    same inputs earlier in the graph (the chain's original): the hard model computes each once, as the model does."""
    for node in list(graph.nodes):
        twin = restored.get(node.meta.get(HARD_COPY))
        if twin is not None and (twin.op, twin.target) == (node.op, node.target):
            node.replace_all_uses_with(twin)
            graph.erase_node(node)
    for node in reversed(list(graph.nodes)):
        if node.meta.get(HARD_COPY) and not node.users and node.op in ("call_function", "call_method") and \
                not _writes(node):
            graph.erase_node(node)
    seen: dict = {}
    for node in list(graph.nodes):
        if node.op not in ("call_function", "call_method"):
            continue
        key = repr((node.op, node.target, node.args, node.kwargs))  # (nodes by their names)
        twin = seen.get(key)
        if twin is not None and (node.meta.get(HARD_COPY) or twin.meta.get(HARD_COPY)):
            node.replace_all_uses_with(twin)
            graph.erase_node(node)
        else:
            seen.setdefault(key, node)


def _writes(node) -> bool:
    """Does ``node`` write in place (a top-k mask's ``scatter_``, an ``out=`` call): kept, even without users?"""
    name = node.target if node.op == "call_method" else getattr(node.target, "__name__", "")
    return str(name).endswith("_") or "out" in node.kwargs


def _soft_of(user, node) -> bool:
    """Is ``user`` an sll.select that reads ``node`` only as its ``soft`` mask (gone with the select)?"""
    return (user.op == "call_function" and ops.is_sll_target(user.target) and rules.sll_op_name(user.target) == "select"
            and user.kwargs.get("soft") is node and node not in user.args)


def _takes_bool(user, node) -> bool:
    """Users after which a comparison may come back as a bare bool: the user's casts (torch- or aten-level;
    a cast of the bool gives what the cast of the 0/1 floats gave), sll.select (as its mask or its ``soft``
    one: both go with the select), export's dtype asserts."""
    if user.op == "call_method" and user.target in rules.FLOAT_CASTS and user.args[:1] == (node,):
        return True
    if _soft_of(user, node):
        return True
    if user.op != "call_function" or user.args[:1] != (node,):
        return False
    target = exported.hashable_target(user)
    if target in rules.ATEN_CASTS or target in rules.ATEN_METADATA_ASSERTS:
        return True
    return ops.is_sll_target(user.target) and rules.sll_op_name(user.target) == "select"


def _hard_compare(graph, node, rule):
    """``ops.hard_compare`` for an sll comparison; at aten level the comparison and an ``aten._to_copy``
    to the sll node's dtype (known from export's fake value)."""
    val = node.meta.get("val")
    if rules.is_aten_level(node) and isinstance(val, torch.Tensor):
        bare = rule.emit_hard(graph, node)
        with graph.inserting_before(node):
            return graph.call_function(torch.ops.aten._to_copy.default, (bare,), {"dtype": val.dtype})
    with graph.inserting_before(node):
        return graph.call_function(ops.hard_compare, (*node.args[:2], rule.cmp))


def _is_comparison(node) -> bool:
    if getattr(node, "op", None) not in ("call_function", "call_method"):
        return False
    rule = rules.match(node)
    return rule is not None and rule.pattern == "cast"


def _spell(node) -> str:
    """``torch.round(decimals=2)``, ``Tensor.scatter``, ``aten.gt.Scalar``: how the restored node reads."""
    if node.op == "call_method":
        name = f"Tensor.{node.target}"
    elif node.target is ops.hard_compare:
        return f"sll_fx.ops.hard_compare(cmp={node.args[2]!r})"
    elif isinstance(node.target, torch._ops.OpOverload):
        name = rules.describe_target(node)
        if node.target is torch.ops.aten._to_copy.default:  # after an aten comparison: the hard_compare
            name = f"{rules.describe_target(node.args[0])} + {name}"
    else:
        mod = "torch.nn.functional" if node.target is torch.nn.functional.one_hot else "torch"
        name = f"{mod}.{node.target.__name__}"
    kwargs = ", ".join(f"{k}={v!r}" for k, v in node.kwargs.items())
    return f"{name}({kwargs})" if kwargs else name

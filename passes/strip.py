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
from sll_fx.graph_module import HARD_COPY, ISOLATED
from sll_fx.report import StripEntry, StripReport
from sll_fx.tracer import module_of, source_of

from ._checks import check_not_decomposed, check_placement
from ._spellings import _op_name


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
                if (compared := _cast_comparison(node.args[0])) is None:
                    raise RewriteError(f"export_hard: node '{node.name}' (sll.select) takes its mask from "
                                       f"'{node.args[0]}', not from an sll.compare node\nFix: give the select the "
                                       "comparison itself as its mask, or call export_hard on the linearized "
                                       "GraphModule (then torch.export its result)")
                node.update_arg(0, compared)  # (torch.export reads a float cast of a float comparison for it)
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
    """Merge the nodes ``linearize_pass`` kept or copied for a use left hard (``HARD_COPY``) with their twins, the same
    call on the same inputs next to them: a rewritten op's original (``("sll", name)``) with the op restored from
    that sll node (``restored``: sll node name -> restored node; also respelled, ``operator.gt`` as ``torch.gt``),
    then a copy of a chain or cast (``("of", name)``) with its original, which reads the restored op too; a pattern's
    pieces (``("piece", None)``) left unused are dropped.  The hard model computes each once, as the model does.  The
    detaches before a hard heaviside (``("input", None)``: it has no derivative) go first: it reads its inputs again."""
    for node in list(graph.nodes):
        if node.meta.get(HARD_COPY) == ("input", None):
            node.replace_all_uses_with(node.args[0])
            graph.erase_node(node)
    by_name = {n.name: n for n in graph.nodes}
    for node in list(graph.nodes):
        mark = node.meta.get(HARD_COPY)
        if not isinstance(mark, tuple) or len(mark) != 2 or mark[0] not in ("sll", "of"):
            continue
        twin = restored.get(mark[1]) if mark[0] == "sll" else by_name.get(mark[1])
        if twin is not None and twin is not node and getattr(twin, "graph", None) is graph and \
                not getattr(twin, "_erased", False) and _same_call(twin, node, respelled=mark[0] == "sll"):
            node.replace_all_uses_with(twin)
            graph.erase_node(node)
    for node in reversed(list(graph.nodes)):
        mark = node.meta.get(HARD_COPY)
        if isinstance(mark, tuple) and mark[:1] == ("piece",) and not node.users and not _writes(node):
            graph.erase_node(node)


def _same_call(a: Node, b: Node, respelled: bool) -> bool:
    """Do ``a`` and ``b`` call the same op on the same inputs (``respelled``: by the op's name, ``operator.gt`` and
    ``torch.gt``, and a pattern's piece of ``b`` stands for the same op of ``a``: ``x.argmax(-1)`` for the restored
    ``torch.argmax(x, -1)``, from the same pattern)?"""
    if not respelled:
        return (a.op, a.target) == (b.op, b.target) and repr((a.args, a.kwargs)) == repr((b.args, b.kwargs))
    if a.op not in ("call_function", "call_method") or _op_name(a) is None or _op_name(a) != _op_name(b) or \
            len(a.args) != len(b.args) or repr(a.kwargs) != repr(b.kwargs):
        return False
    return all(x is y or repr(x) == repr(y) or isinstance(y, Node) and y.meta.get(HARD_COPY) == ("piece", None) and
               isinstance(x, Node) and _op_name(x) is not None and _op_name(x) == _op_name(y)
               for x, y in zip(a.args, b.args))


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


def _cast_comparison(node) -> Node | None:
    """The comparison ``node`` is a cast of, else None: ``torch.export`` gives a selection whose mask is also cast by
    the user (``h * c.float()``, ``torch.where(c, h, -h)``) the cast as its mask, ``aten.to.dtype(compare,
    torch.float32)``, which returns the float sll comparison itself (0/1 where the comparison is; restored first, it
    is the hard comparison by then), or a clone of it (the copy ``linearize_pass`` gave a cast written in place)."""
    for _ in range(4):  # (through the copy linearize_pass gave a write of the cast: aten.clone, export drops its mark)
        if getattr(node, "op", None) == "call_method" and node.target in rules.FLOAT_CASTS or \
                getattr(node, "op", None) == "call_function" and (exported.hashable_target(node) in rules.ATEN_CASTS
                                                                  or node.target is torch.ops.aten.clone.default):
            node = node.args[0] if node.args else None
            if _is_comparison(node):
                return node
        else:
            return None
    return None


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

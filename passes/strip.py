"""``strip_pass``: put every ``torch.ops.sll`` node back to the exact hard op it came from.

The inverse of each sll op is read from the same rule table that ``linearize_pass``
uses.  A comparison returns as the bare comparison when all its users are the user's
own float casts (what ``linearize_pass`` leaves), else as ``ops.hard_compare`` (the
explicit ``sll_fx.threshold``).  Guarantee, checked: no node targets the ``sll``
namespace afterwards.
"""

from __future__ import annotations

from torch.fx import GraphModule
from torch.fx.passes.infra.pass_base import PassResult

from sll_fx import ops, rules
from sll_fx.errors import RewriteError
from sll_fx.report import StripEntry, StripReport
from sll_fx.tracer import module_of, source_of


def strip_pass(gm: GraphModule) -> PassResult:
    """Rewrite ``gm`` in place; the report is attached as ``gm.sll_report``."""
    graph = gm.graph
    entries = []
    for node in list(graph.nodes):
        if node.op != "call_function" or not ops.is_sll_target(node.target):
            continue
        try:
            rule = rules.for_sll_node(node)
        except LookupError as e:
            raise RewriteError(f"export_hard: node '{node.name}' targets {node.target}, which no rule strips: {e}")
        fn, args, kwargs = rule.hard_call(node)
        if rule.cmp and not all(_is_float_cast(u, node) for u in node.users):
            fn, args, kwargs = ops.hard_compare, (*args, rule.cmp), {}
        with graph.inserting_before(node):
            new = graph.call_function(fn, args, kwargs)
        new.meta.update(node.meta)
        node.replace_all_uses_with(new)
        graph.erase_node(node)
        entries.append(StripEntry(node=node.name, sll_op=f"sll.{rule.sll_op}", restored=_spell(fn, kwargs, rule),
                                  module=module_of(new), source=source_of(new)))
    graph.lint()
    gm.recompile()
    remaining = [n.name for n in graph.nodes if n.op == "call_function" and ops.is_sll_target(n.target)]
    if remaining:
        raise RewriteError(f"export_hard: sll op(s) survived in node(s) {remaining}")
    gm.sll_report = StripReport(entries, remaining=0)
    return PassResult(gm, modified=bool(entries))


def _is_float_cast(user, node) -> bool:
    return user.op == "call_method" and user.target in rules.FLOAT_CASTS and user.args[:1] == (node,)


def _spell(fn, kwargs, rule) -> str:
    name = f"sll_fx.ops.{fn.__name__}" if fn is ops.hard_compare else f"torch.{fn.__name__}"
    args = ", ".join(f"{k}={v!r}" for k, v in kwargs.items())
    if fn is ops.hard_compare:
        args = f"cmp={rule.cmp!r}"
    return f"{name}({args})" if args else name

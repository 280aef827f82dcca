"""``linearize_pass``: rewrite every discrete node the rule table knows into its sll op.

Two phases, so that a bad eps or an unsupported argument raises before the graph is
touched: ``_plan`` decides, node by node, what happens and why (one report entry per
discrete node found); ``_apply`` then edits the graph.  Afterwards the pass checks its
guarantee: every node that still matches a rule is reported as left hard.
"""

from __future__ import annotations

import torch
from torch.fx import GraphModule, Node
from torch.fx.passes.infra.pass_base import PassResult

from sll_fx import dtypes, rules
from sll_fx.errors import EpsError, RewriteError
from sll_fx.ops import DEFAULT_EPS, check_eps, check_mode, is_sll_target
from sll_fx.report import Entry, RewriteReport
from sll_fx.tracer import module_of, source_of


def linearize_pass(gm: GraphModule, *, eps: float = DEFAULT_EPS, mode: str = "linear",
                   example_inputs: tuple | None = None) -> PassResult:
    """Rewrite ``gm`` in place; the report is attached as ``gm.sll_report``."""
    check_mode("linearize", mode)
    check_eps("linearize", eps)
    kinds = dtypes.infer_kinds(gm, example_inputs)
    plan = [step for node in list(gm.graph.nodes) if (step := _plan(gm, node, kinds, eps, mode))]
    before = sum(is_sll_target(n.target) for n in gm.graph.nodes)
    for step in plan:
        _apply(gm, step, mode)
    gm.graph.lint()
    gm.recompile()
    report = RewriteReport([s.entry for s in plan], mode=mode)
    _check(gm, report, before)
    gm.sll_report = report
    return PassResult(gm, modified=bool(report.rewritten))


class _Step:
    __slots__ = ("node", "rule", "entry", "casts")

    def __init__(self, node, rule, entry, casts=()):
        self.node, self.rule, self.entry, self.casts = node, rule, entry, casts


def _entry(node: Node, replacement=None, reason="", eps=None) -> Entry:
    return Entry(node=node.name, op=rules.describe_target(node), replacement=replacement, reason=reason,
                 eps=eps, module=module_of(node), source=source_of(node))


def _plan(gm: GraphModule, node: Node, kinds: dict, eps: float, mode: str) -> _Step | None:
    rule = rules.match(node)
    if rule is None:
        return _plan_unmatched(node)
    if extra := rule.unsupported_arguments(node):
        return _Step(node, rule, _entry(node, reason=f"unsupported argument(s) {', '.join(extra)}: left hard"))
    operands = rule.operand_values(node)
    if rule.needs_float_cast:
        return _plan_comparison(node, rule, operands, kinds, eps, mode)
    if kinds.get(operands[0]) in (dtypes.INT, dtypes.BOOL):
        return _Step(node, rule, _entry(node, reason=f"input '{_name(operands[0])}' has an integer dtype: "
                                                      "no gradient to give, left hard"))
    keywords = rule.keyword_values(node)
    if any(isinstance(v, Node) for v in keywords.values()):
        return _Step(node, rule, _entry(node, reason="argument computed at run time (e.g. decimals=tensor): left hard"))
    _check_eps(node, rule, eps, keywords.get("decimals", 0))
    return _Step(node, rule, _entry(node, f"sll.{rule.sll_op}", eps=eps))


def _plan_comparison(node, rule, operands, kinds, eps, mode) -> _Step:
    casts, bool_uses = [], []
    for user in node.users:
        (casts if _is_float_cast(user, node, kinds) else bool_uses).append(user)
    if kinds.get(operands[0]) in (dtypes.INT, dtypes.BOOL):  # as sll::compare itself decides at run time
        return _Step(node, rule, _entry(node, reason=f"input '{_name(operands[0])}' has an integer dtype: "
                                                      "no gradient to give, left hard"))
    if not casts:
        return _Step(node, rule, _entry(node, reason=f"boolean result used by {_describe(bool_uses)}: "
                                                      "left hard (cast it with .float() to linearize)"))
    _check_eps(node, rule, eps, 0)
    reason = f"also used as bool by {_describe(bool_uses)}: that use stays hard" if bool_uses else ""
    return _Step(node, rule, _entry(node, f"sll.compare({rule.cmp})", reason=reason, eps=eps), tuple(casts))


def _plan_unmatched(node: Node) -> _Step | None:
    if rule := rules.match_inplace(node):
        return _Step(node, None, _entry(node, reason=f"in-place Tensor.{node.target}: left hard "
                                                      f"(use the out-of-place spelling to linearize)"))
    if (name := rules.match_no_jump(node)) and any(_is_float_cast(u, node, {}) for u in node.users):
        return _Step(node, None, _entry(node, reason=f"'{name}' has no jump to linearize (a spike of measure "
                                                      "zero): left hard"))
    return None


def _check_eps(node: Node, rule: rules.Rule, eps: float, decimals: int) -> None:
    try:
        check_eps(rule.sll_op, eps, decimals)
    except EpsError as e:
        raise EpsError(f"node '{node.name}' ({rules.describe_target(node)}, {source_of(node) or 'no source'}): "
                       f"{e}") from None


def _is_float_cast(user: Node, node: Node, kinds: dict) -> bool:
    """Does ``user`` turn the boolean ``node`` into floats? (``.float()``, ``.to(torch.float32)``, ``.type_as(x)``)"""
    if user.op != "call_method" or user.target not in rules.FLOAT_CASTS or not user.args or user.args[0] is not node:
        return False
    fixed = rules.FLOAT_CASTS[user.target]
    if fixed is not None:
        return True
    rest = list(user.args[1:]) + list(user.kwargs.values())
    for a in rest:
        if isinstance(a, torch.dtype):
            return a.is_floating_point
        if isinstance(a, str) and user.target == "type":
            return any(w in a for w in ("Float", "Double", "Half", "BFloat16"))
        if isinstance(a, Node):
            kind = kinds.get(a)
            if kind is not None:
                return kind == dtypes.FLOAT
            source = a.args[0] if (a.op == "call_function" and a.target is getattr) else a
            return source in node.args  # .to(x.dtype) / .type_as(x) with x an operand of the comparison
    return False


def _apply(gm: GraphModule, step: _Step, mode: str) -> None:
    node, rule = step.node, step.rule
    if step.entry.replacement is None:
        return
    graph = gm.graph
    args, kwargs = rule.sll_call(node, step.entry.eps, mode)
    with graph.inserting_before(node):
        new = graph.call_function(rule.target, args, kwargs)
    new.meta.update(node.meta)
    if rule.needs_float_cast:
        for cast in step.casts:
            cast.replace_input_with(node, new)
        if not node.users:
            graph.erase_node(node)
    else:
        node.replace_all_uses_with(new)
        graph.erase_node(node)


def _check(gm: GraphModule, report: RewriteReport, before: int) -> None:
    hard = {e.node for e in report.hard} | {e.node for e in report.rewritten if e.reason}
    for node in gm.graph.nodes:
        if rules.match(node) and node.name not in hard:
            raise RewriteError(f"linearize_pass left node '{node.name}' ({rules.describe_target(node)}) "
                               "hard without reporting it")
    after = sum(is_sll_target(n.target) for n in gm.graph.nodes)
    if after != before + len(report.rewritten):
        raise RewriteError(f"linearize_pass: expected {before + len(report.rewritten)} sll nodes, found {after}")


def _name(v) -> str:
    return v.name if isinstance(v, Node) else repr(v)


def _describe(users: list[Node]) -> str:
    return ", ".join(f"{rules.describe_target(u) if u.op in ('call_function', 'call_method') else u.op} "
                     f"({u.name})" for u in users) or "nothing"

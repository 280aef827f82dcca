"""``set_eps``: change the band half-width of a linearized model in place, without retracing.

For eps schedules (wide bands early for gradient, narrow ones late to close the gap to the
hard model)::

    gm = sll_fx.linearize_module(model, eps=0.3)
    for step in range(steps):
        sll_fx.set_eps(gm, 0.3 * (0.05 / 0.3) ** (step / steps))   # geometric decay to 0.05
        ...

``where`` picks the nodes: ``None`` (all), a rule kind or group (``"round"``, ``"compare"``),
a submodule qualified name (that submodule and everything below it), a node name, an
``nn.Module`` type, or a predicate ``f(node) -> bool``.  Every new eps is checked against
its op's limit before any node changes; a ``where`` that selects nothing is a ``ValueError``.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Union

from torch import fx, nn

from . import rules
from .errors import EpsError
from .ops import check_eps, is_sll_target
from .tracer import module_of, source_of

Where = Union[None, str, type, Callable[[fx.Node], bool]]


def _eps_nodes(gm: fx.GraphModule):
    """(graph module, node) for every sll node carrying an eps, nested GraphModules included."""
    for mod in gm.modules():
        if isinstance(mod, fx.GraphModule):
            for node in mod.graph.nodes:
                if node.op == "call_function" and is_sll_target(node.target) and "eps" in node.kwargs:
                    yield mod, node


def _selects(where: Where, node: fx.Node) -> bool:
    if where is None:
        return True
    if callable(where) and not isinstance(where, type):
        return bool(where(node))
    stack = list((node.meta.get("nn_module_stack") or {}).values())
    if isinstance(where, type):
        return any(isinstance(t, type) and issubclass(t, where) for _, t in stack)
    kind = rules.for_sll_node(node).kind
    if where == kind or kind in rules.KIND_GROUPS.get(where, ()):
        return True
    if where in ("where", "masked_fill", "select"):  # a selection's band is its comparison's
        return any(rules.sll_op_name(u.target) == "select" and (where == "select" or
                   u.kwargs.get("op", "where") == where) for u in node.users if u.op == "call_function")
    path = module_of(node)
    return where in (node.name, node.meta.get("sll_entry")) or path == where or path.startswith(where + ".") \
        or where == ""


def set_eps(gm: fx.GraphModule, eps: float, where: Where = None) -> list[str]:
    """Set eps on the selected sll nodes of ``gm``; returns their names.  Raises before changing anything."""
    if isinstance(where, type) and not issubclass(where, nn.Module):
        raise ValueError(f"set_eps: where={where!r} is a type but not an nn.Module type")
    chosen = [(mod, node) for mod, node in _eps_nodes(gm) if _selects(where, node)]
    if not chosen:
        raise ValueError(f"set_eps: where={where!r} selects no sll node of {type(gm).__name__} "
                         f"(kinds: {', '.join(rules.KINDS)}; or a submodule name, node name, type or predicate)")
    for _, node in chosen:
        op = rules.sll_op_name(node.target)
        try:
            check_eps(op, eps, node.kwargs.get("decimals", 0))
        except EpsError as e:
            raise EpsError(f"set_eps: node '{node.name}' ({source_of(node) or 'no source'}): {e}") from None
    for _, node in chosen:
        node.update_kwarg("eps", float(eps))
    changed = {(n.meta.get("sll_entry", n.name), module_of(n)) for _, n in chosen}
    changed |= {(u.meta.get("sll_entry", u.name), module_of(u)) for _, n in chosen for u in n.users
                if u.op == "call_function" and is_sll_target(u.target)}  # selections show their mask's eps
    modules = {id(m): m for m, _ in chosen}
    for mod in modules.values():
        mod.recompile()
    for mod in (gm, *modules.values()):  # the top report merges the nested graphs' entries
        report = getattr(mod, "sll_report", None)
        if report is not None and hasattr(report, "entries"):
            report.entries[:] = [dataclasses.replace(e, eps=float(eps)) if e.rewritten and (e.node, e.module)
                                 in changed else e for e in report.entries]
    return [node.name for _, node in chosen]

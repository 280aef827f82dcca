"""Checks the graph passes share (not a pass): what ``graph.lint()`` would check, for the nodes a pass
added (:func:`check_placement`), and that no sll op was inlined by a decomposition (:func:`check_not_decomposed`)."""

from __future__ import annotations

from torch.fx import Node

from sll_fx import ops
from sll_fx.errors import RewriteError


def check_placement(graph, created: list[Node], who: str) -> None:
    """What ``graph.lint()`` checks, for the nodes a pass added (the rest of the graph kept its order):
    each one still in the graph comes after the nodes it reads and before the nodes that read it."""
    for node in created:
        if node._erased:
            continue
        for arg in node.all_input_nodes:
            if arg.graph is not graph or arg._erased or not arg < node:
                raise RewriteError(f"{who}: node '{node.name}' reads '{arg.name}', which is not in the graph "
                                   "before it")
        for user in node.users:
            if not node < user:
                raise RewriteError(f"{who}: node '{user.name}' reads '{node.name}' before it is computed")


def check_not_decomposed(graph, who: str, fix: str) -> None:
    """Refuse a graph holding the arithmetic of an inlined sll op.

    ``ExportedProgram.run_decompositions()`` inlines the sll ops (``CompositeImplicitAutograd``) into
    their surrogate arithmetic and tags every node it makes with its origin (export's provenance,
    ``node.meta["from_node"]``).  From that arithmetic no pass can restore the op: ``export_hard``
    would return the surrogate as if it were the hard model, ``linearize_module`` would linearize
    the surrogate's own floor.  (``export_hard`` does not pass the provenance on to the hard ops.)
    """
    for node in graph.nodes:
        sources = node.meta.get("from_node")  # (only export's graphs have any)
        if not sources or node.op != "call_function" or ops.is_sll_target(node.target):
            continue
        source = _sll_origin(sources)
        if source is not None:
            raise RewriteError(
                f"{who}: node '{node.name}' ({node.target}) is part of sll op '{source.name}' "
                f"({source.target}), inlined by a decomposition (ExportedProgram.run_decompositions) after "
                f"linearize_module: the hard op cannot be restored from its surrogate arithmetic. Fix: {fix}")


def _sll_origin(sources):
    """The first sll op among a node's provenance records (``NodeSource`` trees), or None."""
    stack, seen = list(sources or ()), set()
    while stack:
        source = stack.pop()
        if id(source) in seen:
            continue
        seen.add(id(source))
        if str(getattr(source, "target", "")).startswith("sll."):
            return source
        stack.extend(getattr(source, "from_node", None) or ())
    return None

"""Checks the graph passes share (not a pass): what ``graph.lint()`` would check, for the nodes a pass added."""

from __future__ import annotations

from torch.fx import Node

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

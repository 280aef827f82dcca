"""``torch.no_grad()`` blocks inside a traced forward.

fx records the ops of a ``with torch.no_grad():`` block but not the block itself, so the graph
would compute gradients there: a quantizer's scale ``x.abs().amax()``, computed without gradient
in the model, would get one; an in-place running-statistics update would record autograd history
into a buffer; a teacher network called under ``no_grad`` would be trained.  The tracer traces with
grad mode on and lists every node created while the forward had it off (``inference_mode`` too; an
attribute read such as ``h.T``, which fx records where it is first used, by the grad mode where it was
written: ``sll_fx.tracer._Attribute``);
:func:`cut` then puts :func:`detached` on every value entering such a
region from outside it and on every value leaving it.  The values are the same, bit for bit, and
no gradient crosses the region, as in the model.  The linearize pass treats :func:`detached` as a
``.detach()``: a discrete op inside a region has no gradient to give and is left hard.

``torch.export`` keeps such a block as a ``wrap_with_set_grad_enabled(False, body, *args)`` call of a
nested graph: :func:`runs_without_grad` tells the linearize pass that its results carry no gradient, and
:func:`nested_bodies` that no gradient reaches the body's own nodes (the pass gets ``no_grad=True`` for it).
"""

from __future__ import annotations

import dataclasses
import functools

import torch
from torch import fx
from torch.utils._pytree import tree_map_only

_COMPUTE = ("call_function", "call_method", "call_module")


def detached(value):
    """``value`` with every tensor in it detached (tuples, lists, dicts and dataclasses followed); anything
    else (a shape, an int) as it is.  What a value computed under ``torch.no_grad()`` is to its users.

    Given a ``torch.fx`` proxy it records itself (a retrace of a graph that calls it, when a pickled
    GraphModule is loaded or a model holding one is traced, keeps the call)."""
    if isinstance(value, fx.Proxy):
        return value.tracer.create_proxy("call_function", detached, (value,), {})
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = {f.name: detached(getattr(value, f.name)) for f in dataclasses.fields(value) if f.init}
        return dataclasses.replace(value, **fields)
    return tree_map_only(torch.Tensor, torch.Tensor.detach, value)


def cut(graph: fx.Graph, no_grad: list[fx.Node]) -> int:
    """Separate the no-grad regions of ``graph`` (the nodes in ``no_grad``, created while grad mode was
    off) from the rest with :func:`detached` nodes.  Returns the number of nodes added."""
    region = {node for node in no_grad if node.op in _COMPUTE and node.graph is graph}
    if not region:
        return 0
    into: dict[fx.Node, fx.Node] = {}   # an outside value -> its detached copy for the regions
    out: dict[fx.Node, fx.Node] = {}    # a region's value -> its detached copy for the rest
    for node in list(graph.nodes):
        inside = node in region
        for source in list(node.all_input_nodes):
            if (source in region) == inside:
                continue
            cache = into if inside else out
            cut_node = cache.get(source)
            if cut_node is None:
                where = graph.inserting_before(node) if inside else graph.inserting_after(source)
                with where:
                    cut_node = cache[source] = graph.call_function(detached, (source,))
                cut_node.meta.update({k: v for k, v in source.meta.items() if k in _META})
            node.replace_input_with(source, cut_node)
    return len(into) + len(out)


_META = ("nn_module_stack", "stack_trace")


def is_detached_call(node: fx.Node) -> bool:
    return node.op == "call_function" and node.target is detached


def runs_without_grad(node: fx.Node) -> bool:
    """Is ``node`` an exported ``torch.no_grad()`` block: ``wrap_with_set_grad_enabled(False, body, *args)``?"""
    hop = set_grad_hop()
    return (hop is not None and node.op == "call_function" and node.target is hop and bool(node.args)
            and node.args[0] is False)


def nested_bodies(top: torch.nn.Module) -> tuple[set[str], dict[str, str]]:
    """The qualified names of the nested graphs of ``top`` (an exported graph module) that higher-order ops call:
    ``(no_grad, traced)``.  ``no_grad``: those that run with grad mode off, the bodies of
    ``wrap_with_set_grad_enabled(False, body, *args)`` calls and the graphs called inside them, unless a
    ``wrap_with_set_grad_enabled(True, ...)`` turns it on again (their nodes' inputs carry no gradient: their
    placeholders are the block's inputs, not a graph's).  ``traced``: name -> op, the branches and bodies of the
    other higher-order ops (``torch.cond``, ``map``, ``while_loop``) and the graphs inside them, which those ops
    trace with fake tensors when they run, where an sll op's eps buffer cannot be read."""
    hop, no_grad, traced = set_grad_hop(), set(), {}

    def walk(gm: fx.GraphModule, path: str, grad: bool, inside: str | None) -> None:
        for node in gm.graph.nodes:
            if node.op != "call_function":
                continue
            on, within = grad, inside
            if hop is not None and node.target is hop:
                on = bool(node.args[0]) if node.args else grad
            elif isinstance(node.target, torch._ops.HigherOrderOperator) and within is None:  # (cond, map, ...)
                within = getattr(node.target, "__name__", str(node.target))
            for arg in node.args:
                if isinstance(arg, fx.Node) and arg.op == "get_attr":
                    body = getattr(gm, arg.target, None)
                    if isinstance(body, fx.GraphModule):
                        name = f"{path}.{arg.target}" if path else arg.target
                        if not on:
                            no_grad.add(name)
                        if within is not None:
                            traced[name] = within
                        walk(body, name, on, within)

    if isinstance(top, fx.GraphModule):
        walk(top, "", True, None)
    return no_grad, traced


@functools.lru_cache(maxsize=1)  # (read for every node of a graph: torch.ops' attribute lookup once)
def set_grad_hop():
    """torch.export's ``wrap_with_set_grad_enabled`` higher-order op (None in a torch without it): the target of
    the calls :func:`runs_without_grad` looks at."""
    return getattr(torch.ops.higher_order, "wrap_with_set_grad_enabled", None)

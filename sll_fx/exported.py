"""``torch.export`` graphs in sll_fx: what ``linearize_module`` and ``export_hard`` do with them.

Both calls accept an :class:`torch.export.ExportedProgram`, its ``ep.module()`` and its
``ep.graph_module``:

- An ``ExportedProgram`` stands for ``ep.module()``: the callable module with the program's
  parameters and buffers back as attributes (the same tensor objects as ``ep.state_dict``,
  which ``torch.export`` took from the model without copying: training the result trains
  them), called like the model with the shapes it was exported for.
- A GraphModule that a fake-tensor tracer made (its nodes carry ``meta["val"]``: ``ep.module()``,
  ``ep.graph_module``, make_fx) is **not retraced**: the passes run on a copy of its own graph
  (:func:`sll_fx.opaque.map_graphs` copies it), so export's node metadata stays, with the user's
  source lines (``report.entries[i].source``) and submodule names (``nn_module_stack``: per-submodule
  settings and ``set_eps(where="block")`` work).  ``ep.graph_module`` takes its parameters as
  inputs (export lifts them); its result does too.  Their values are unknown to the passes there: a tie
  that depends on a buffer's value (a quantizer's step) is seen on the ``ExportedProgram`` and
  ``ep.module()`` only.

Before the linearize pass, :func:`canonicalize` rewrites the aten-level spellings of the pieces
*around* a match into the torch-level spellings the pass reads (``rules.ATEN_CASTS``,
``rules.ATEN_PIECES``): a comparison's ``aten.to.dtype(b, torch.float32)`` /
``aten.to.device(b, device, torch.float32)`` (``.to(x)``, ``.to(x.device, torch.float32)``) /
``aten._to_copy.default(b, dtype=..., device=...)`` / ``aten.to.other(b, x)`` /
``aten.type_as.default(b, x)`` become ``b.to(...)`` with the same dtype, device and flags /
``b.type_as(x)``; a device move, ``aten.to.dtype_layout(b, dtype=torch.bool, device=...)`` from
``(x > t).to(x.device)``, becomes ``b.to(device)`` when its every use is such a cast (else it
stays); ``aten.argmax``/``argmin``/``topk``/``zeros_like`` (plain arguments),
``aten.scatter_.value`` and a product with a comparison (``aten.mul.Tensor``) their torch
spellings.  Each rewrite computes exactly what the aten call computed.  The discrete ops
themselves (``aten.sign.default``, ``aten.gt.Scalar``, ``aten.where.self``, ``aten.one_hot.default``,
``aten.scatter.value``, ...) are matched as they are, by the rule table.  Export's
``aten._assert_tensor_metadata`` nodes, which pin dtypes that both passes change on purpose,
are dropped, and so are unused ``getitem`` nodes (export reads every output of ``topk``).
Type names in export's ``nn_module_stack`` (strings) become the classes where the class is
reachable from an already imported module, so settings keyed by module type apply.  Dtypes:
unless ``example_inputs`` are given, the pass's dtype inference runs on inputs like export's
placeholder values (:func:`example_inputs`), so integer inputs are left hard as usual.

Limits, all torch.export's own: the result keeps export's input checks (``_guards_fn``: the
shapes it was exported for, unless exported with ``dynamic_shapes``) and the train/eval
behaviour export captured (dropout, batch norm); like ``ep.module()`` it does not pickle (save
it with ``torch.export.save`` after exporting it again, or its ``state_dict``).
"""

from __future__ import annotations

import operator
import sys
from collections import OrderedDict

import torch
from torch import fx, nn
from torch.fx import Node

from . import rules

#: meta of fake values, which a pass that creates or retargets a node drops there (they may not describe it)
STALE_META = ("val", "tensor_meta", "example_value")


def as_module(model) -> nn.Module:
    """``ep.module()`` for an ``ExportedProgram``; anything else as it is."""
    if isinstance(model, torch.export.ExportedProgram):
        return model.module()
    return model


def is_exported_graph(model) -> bool:
    """A GraphModule made by a fake-tensor tracer (``torch.export``, make_fx): its nodes carry ``meta["val"]``."""
    return isinstance(model, fx.GraphModule) and any("val" in n.meta for n in model.graph.nodes)


def hashable_target(node: Node):
    try:
        hash(node.target)
    except TypeError:
        return None
    return node.target


def _is_comparison(value) -> bool:
    """Is ``value`` a comparison, or (canonicalized already) a device move of one, ``b.to(device)``?"""
    if not isinstance(value, Node) or value.op not in ("call_function", "call_method"):
        return False
    if value.op == "call_method" and value.target == "to" and len(value.args) == 2 \
            and isinstance(value.args[1], torch.device):
        value = value.args[0]
        if not isinstance(value, Node) or value.op not in ("call_function", "call_method"):
            return False
    rule = rules.match(value)
    return (rule is not None and rule.pattern == "cast") or rules.match_no_jump(value) is not None


def _plain(node: Node) -> tuple:
    """``node``'s args with a ``self=`` keyword (aten schemas) made the first positional argument."""
    kwargs = dict(node.kwargs)
    args = ((kwargs.pop("self"),) if "self" in kwargs else ()) + tuple(node.args)
    return args, kwargs


_DEFAULTS = {"layout": (None, torch.strided), "pin_memory": (None, False),
             "memory_format": (None, torch.preserve_format)}
_CARRIED = ("non_blocking", "copy")  # Tensor.to takes them as keywords (copy= is moot for bool -> float)


def _cast_call(node: Node) -> tuple[tuple, dict] | None:
    """The ``Tensor.to`` arguments (after the tensor) that compute what an aten ``to``/``_to_copy`` call
    computes, when it casts to a floating dtype (``to.other``: to ``other``'s dtype), moving it or not;
    else None (a device move only, a layout change, a memory format)."""
    args, kwargs = _plain(node)
    names = [a.name for a in node.target._schema.arguments]  # to.device(self, device, dtype, non_blocking, ...)
    kwargs.update(zip(names[1:], args[1:]))
    if "other" in kwargs:  # to.other(self, other, ...): other's dtype and device, as Tensor.to(other)
        to_args = (kwargs.pop("other"),)
    else:
        dtype, device = kwargs.pop("dtype", None), kwargs.pop("device", None)
        if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
            return None
        to_args = (dtype,) if device is None else (device, dtype)
    carried = {k: True for k in _CARRIED if kwargs.pop(k, False)}
    if any(k not in _DEFAULTS or not any(v is d or v == d for d in _DEFAULTS[k]) for k, v in kwargs.items()):
        return None
    return to_args, carried


def _move_call(node: Node) -> tuple[tuple, dict] | None:
    """The ``Tensor.to`` arguments of an aten ``to``/``_to_copy`` call of a boolean that moves it to a device
    and nothing else (``aten.to.dtype_layout(b, dtype=torch.bool, device=...)``, from ``(x > t).to(x.device)``),
    when its every use is a float cast (``_cast_call``): ``(device,)``; else None."""
    if not node.users or not all(hashable_target(u) in rules.ATEN_CASTS and _plain(u)[0][:1] == (node,)
                                 and (rules.ATEN_CASTS[u.target] == "type_as" or _cast_call(u) is not None)
                                 for u in node.users):
        return None
    args, kwargs = _plain(node)
    names = [a.name for a in node.target._schema.arguments]
    kwargs.update(zip(names[1:], args[1:]))
    dtype, device = kwargs.pop("dtype", None), kwargs.pop("device", None)
    if dtype not in (None, torch.bool) or not isinstance(device, torch.device):
        return None
    carried = {k: True for k in _CARRIED if kwargs.pop(k, False)}
    if any(k not in _DEFAULTS or not any(v is d or v == d for d in _DEFAULTS[k]) for k, v in kwargs.items()):
        return None
    return (device,), carried


def _torch_spelling(graph: fx.Graph, node: Node) -> Node | None:
    """The torch-level node that computes what the aten ``node`` computes, inserted before it; or None."""
    target = hashable_target(node)
    args, kwargs = _plain(node)
    with graph.inserting_before(node):
        if target in rules.ATEN_CASTS and args and _is_comparison(args[0]):
            if rules.ATEN_CASTS[target] == "type_as":
                return graph.call_method("type_as", args[:2])
            call = _cast_call(node) or _move_call(node)
            return None if call is None else graph.call_method("to", (args[0], *call[0]), call[1])
        spelling = rules.ATEN_PIECES.get(target)
        if spelling is None:
            return None
        if target is torch.ops.aten.mul.Tensor:
            if kwargs or len(args) != 2 or not any(_is_comparison(a) for a in args):
                return None
        if target is torch.ops.aten.zeros_like.default:
            if any(v not in (None, False) for v in kwargs.values()):
                return None
            kwargs = {}
        if isinstance(spelling, str):
            return graph.call_method(spelling, args, kwargs)
        return graph.call_function(spelling, args, kwargs)


def drop_metadata_asserts(graph: fx.Graph) -> int:
    """Erase export's ``aten._assert_tensor_metadata`` nodes (dtype pins); returns how many."""
    asserts = [n for n in graph.nodes if n.op == "call_function" and hashable_target(n) in rules.ATEN_METADATA_ASSERTS]
    for n in asserts:
        graph.erase_node(n)
    return len(asserts)


def canonicalize(gm: fx.GraphModule) -> int:
    """Rewrite, in place, the aten spellings around discrete ops into the torch-level ones the
    linearize pass reads (see the module docstring); returns the number of nodes changed."""
    graph = gm.graph
    # one sweep finds the metadata asserts, the unused getitems (export reads every output of topk: an unused
    # one would keep topk alive) and the aten calls; all of the first two go before the third are looked at
    erased, aten = [], []
    for node in graph.nodes:
        if node.op == "call_function":
            target = node.target
            if target is operator.getitem:
                if not node.users:
                    erased.append(node)
            elif isinstance(target, torch._ops.OpOverload):
                (erased if target in rules.ATEN_METADATA_ASSERTS else aten).append(node)
    for node in erased:
        graph.erase_node(node)
    changed = len(erased)
    for node in aten:
        new = _torch_spelling(graph, node)
        if new is None:
            continue
        new.meta.update(node.meta)
        node.replace_all_uses_with(new)
        graph.erase_node(node)
        changed += 1
    _resolve_module_types(graph)
    if changed:
        graph.lint()
        gm.recompile()
    return changed


def example_inputs(gm: fx.GraphModule) -> tuple | None:
    """Inputs like export's placeholder values (zeros of their shapes and dtypes), for the dtype
    inference of the linearize pass (:func:`sll_fx.dtypes.infer_kinds`), so that integer inputs are
    recognised (and left hard) as with ``example_inputs``; None when a shape is symbolic or a value
    unknown.  (A graph that does not run on fake tensors to the end, ``x[x > 0]``, is the inference's
    business: it falls back to the graph after the failing node.)"""
    args = []
    for node in gm.graph.nodes:
        if node.op != "placeholder":
            continue
        val = node.meta.get("val")
        if isinstance(val, torch.Tensor) and all(isinstance(d, int) for d in val.shape):
            args.append(torch.zeros(val.shape, dtype=val.dtype, device=val.device))
        elif isinstance(val, (bool, int, float)) or (val is None and "val" in node.meta):
            args.append(val)
        else:
            return None
    return tuple(args)


def module_types(gm: fx.GraphModule) -> set:
    """The module types an exported graph's nodes were made in (``nn_module_stack``: export's class names, or the
    classes :func:`_resolve_module_types` put there), for ``SLLConfig``'s check of its type keys."""
    return {value[1] for node in gm.graph.nodes for value in (node.meta.get("nn_module_stack") or {}).values()
            if isinstance(value, tuple) and len(value) == 2}


def _resolve_type(name: str):
    """``"torch.nn.modules.linear.Linear"`` -> the class, looked up in ``sys.modules`` (nothing is imported)."""
    parts = name.split(".")
    for i in range(len(parts) - 1, 0, -1):
        obj = sys.modules.get(".".join(parts[:i]))
        if obj is None:
            continue
        for attr in parts[i:]:
            obj = getattr(obj, attr, None)
        return obj if isinstance(obj, type) and issubclass(obj, nn.Module) else None
    return None


def _resolve_module_types(graph: fx.Graph) -> None:
    for node in graph.nodes:
        stack = node.meta.get("nn_module_stack")
        if not stack:
            continue
        for v in stack.values():  # (a loop, not any(): this runs on every node of every graph linearized)
            if isinstance(v, tuple) and len(v) == 2 and isinstance(v[1], str):
                break
        else:
            continue
        resolved = OrderedDict()
        for key, value in stack.items():
            if isinstance(value, tuple) and len(value) == 2 and isinstance(value[1], str):
                value = (value[0], _resolve_type(value[1]) or value[1])
            resolved[key] = value
        node.meta["nn_module_stack"] = resolved  # a new dict: graph copies share their nodes' meta values

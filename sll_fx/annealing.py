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

**Where eps lives.**  ``linearize_module`` gives every rewritten node its own non-persistent
0-dim float64 buffer ``_sll_eps_<node name>`` on the GraphModule that owns the node, and
passes it to the op through a ``get_attr`` node (``torch.ops.sll.round(x, eps=_sll_eps_round)``,
the ``eps_tensor`` overload, see ``sll_fx/ops.py``).  ``set_eps`` puts a new 0-dim tensor in each
selected buffer (a backward still pending keeps the eps of its forward, see :func:`_replace_eps`):
the graph, the generated code and the GraphModule stay exactly as they are.  That is what makes
annealing compatible with ``torch.compile``: eps is a graph input, not a constant, so a
compiled model keeps its compiled code through any number of ``set_eps`` calls (no
recompilation) and computes with the new value.  Non-persistent buffers are not in
``state_dict()`` (its keys stay the model's), but they move with the module (``.to(device)``;
a dtype cast, ``.half()``/``.to(dtype)``, leaves them float64: ``SLLGraphModule._apply``).
:func:`node_eps` reads a node's current eps as a float.

**Explicit ops.**  An explicit op in the model (``sll_fx.round(h, 0.05)``) traces as an sll node
whose eps is a literal.  ``linearize_module`` gives it a buffer too (:func:`buffer_literal_eps`),
holding the user's value, so that ``set_eps`` sets buffers only and compiled code follows it
there as well.  Such a node is not a report entry and calibration (``eps="auto"``,
``sll_fx.calibrate``) never changes it; ``set_eps`` does when ``where`` selects it (``None``
selects every sll node, explicit ones included; a kind or a submodule name may too).

**Literal eps in a hand-made graph.**  A graph that ``linearize_module`` did not make may hold
sll nodes with a literal eps.  ``set_eps`` turns such a node's literal into a buffer (the first
time it sets it), which changes that GraphModule's graph and recompiles its code.  Code that
``torch.compile`` compiled from the module before that change is not invalidated (dynamo does
not guard on a GraphModule's generated code) and keeps the old literal: call ``set_eps`` once
before compiling (later calls put a new tensor in the buffer, which compiled code reads by name), compile again
(``torch._dynamo.reset()``), or linearize with ``linearize_module``, whose graphs never hold a
literal eps.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Union

import torch
from torch import fx, nn

from . import rules
from .errors import EpsError
from .graph_module import EPS_PREFIX  # the eps buffers' names: _sll_eps_<node name>
from .precision import EPS_GENERATION  # bumped by set_eps on each module whose eps buffers it replaces
from .ops import check_eps, is_sll_target
from .tracer import module_of, source_of

Where = Union[None, str, type, Callable[[fx.Node], bool]]



def eps_device(gm: nn.Module) -> torch.device:
    """Where new eps buffers go: the device of the module's first parameter or buffer (CPU without; not meta)."""
    for t in (*gm.parameters(), *gm.buffers()):
        if t.device.type != "meta":
            return t.device
    return torch.device("cpu")


def eps_input(gm: fx.GraphModule, node: fx.Node, eps: float, device: torch.device | None = None) -> fx.Node:
    """Make ``eps`` an input of sll ``node``: a buffer ``_sll_eps_<node.name>`` on ``gm`` (the GraphModule
    owning ``node``), read by a ``get_attr`` node inserted before ``node``, which becomes ``node``'s
    ``eps`` keyword.  ``eps`` must already be checked.  Returns the ``get_attr`` node.

    The buffer is a 0-dim float64 tensor (every checked float eps exactly), non-persistent (the
    GraphModule's ``state_dict()`` keys stay the model's), on ``device`` (default: the module's).
    """
    if isinstance(node.target, torch._ops.OpOverload) and not isinstance(node.kwargs.get("eps"), fx.Node):
        node.target = _tensor_overload(node.target)  # sll.sign.default -> sll.sign.eps_tensor (export graphs)
    attr = eps_buffer(gm, node, eps, device)
    node.update_kwarg("eps", attr)
    return attr


def eps_buffer(gm: fx.GraphModule, node: fx.Node, eps: float, device: torch.device | None = None) -> fx.Node:
    """:func:`eps_input`'s buffer and ``get_attr`` node, without making it ``node``'s eps (for a pass that
    sets the node's keywords once, the eps among them)."""
    name = EPS_PREFIX + node.name
    if _taken(gm, name):  # a clash with an attribute of the user's: a fresh name
        name = next(f"{name}_{i}" for i in range(1, 1 << 30) if not _taken(gm, f"{name}_{i}"))
    with torch.inference_mode(False):  # (a normal tensor also when linearized under inference_mode)
        t = torch.full((), float(eps), dtype=torch.float64, device=device if device is not None else eps_device(gm))
    gm.register_buffer(name, t, persistent=False)
    with gm.graph.inserting_before(node):
        return gm.graph.create_node("get_attr", name)  # (graph.get_attr would look the new buffer up again)


def _tensor_overload(target: torch._ops.OpOverload) -> torch._ops.OpOverload:
    """The ``Tensor eps`` overload of an sll overload with ``float eps`` (``sll.sign.default`` ->
    ``sll.sign.eps_tensor``, ``sll.compare.Scalar`` -> ``sll.compare.Scalar_eps_tensor``)."""
    overload = target._overloadname
    if overload.endswith("eps_tensor"):
        return target
    name = "eps_tensor" if overload == "default" else f"{overload}_eps_tensor"
    return getattr(target.overloadpacket, name)


def literal_eps_nodes(gm: nn.Module) -> list[tuple[fx.GraphModule, fx.Node]]:
    """(graph module, node) for every sll node of ``gm`` (nested GraphModules included) whose eps is a
    Python number written in the graph (an explicit ``sll_fx.sign(x, 0.1)`` traced, a hand-made graph)."""
    return [(mod, node) for mod in gm.modules() if isinstance(mod, fx.GraphModule) for node in mod.graph.nodes
            if node.op == "call_function" and _is_literal(node.kwargs.get("eps")) and is_sll_target(node.target)]


def _is_literal(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def buffer_literal_eps(gm: nn.Module) -> list[str]:
    """Give every sll node of ``gm`` with a literal eps its own eps buffer (:func:`eps_input`), holding
    that value; returns the nodes' names.  ``linearize_module`` calls it on the graphs it makes, so that
    ``set_eps`` only ever replaces buffers' tensors (compiled code follows).  The node keeps its value and is not a
    report entry: calibration leaves it alone (``sll_fx/calibration.py``).  Recompiles the modules changed."""
    changed = {}
    names = []
    for mod, node in literal_eps_nodes(gm):
        eps_input(mod, node, float(node.kwargs["eps"]), eps_device(mod))
        changed[id(mod)] = mod
        names.append(node.name)
    for mod in changed.values():
        mod.recompile()
    return names


def unwrap_compiled(module: nn.Module) -> nn.Module:
    """The module a ``torch.compile`` wrapper (``OptimizedModule``) compiles; ``module`` itself otherwise."""
    optimized = getattr(getattr(torch, "_dynamo", None), "eval_frame", None)
    optimized = getattr(optimized, "OptimizedModule", None)
    while optimized is not None and isinstance(module, optimized):
        module = module._orig_mod
    return module


def _taken(gm: nn.Module, name: str) -> bool:
    """``hasattr(gm, name)``, without ``nn.Module.__getattr__``'s exception for the usual free name."""
    return name in gm.__dict__ or name in gm._buffers or name in gm._parameters or name in gm._modules \
        or hasattr(type(gm), name)


def _owner(gm: nn.Module | None, node: fx.Node) -> nn.Module:
    """The GraphModule whose graph holds ``node``: ``gm`` itself, one of its submodules, or the graph's owner."""
    if isinstance(gm, fx.GraphModule) and gm.graph is node.graph:
        return gm
    if gm is not None:
        for mod in gm.modules():
            if isinstance(mod, fx.GraphModule) and mod.graph is node.graph:
                return mod
    owner = getattr(node.graph, "owning_module", None)
    if owner is None:
        raise ValueError(f"node '{node.name}' belongs to no GraphModule (of {type(gm).__name__})")
    return owner


def _eps_tensor(gm: nn.Module, node: fx.Node) -> torch.Tensor | None:
    """The buffer feeding ``node``'s eps (None for a literal eps)."""
    value = node.kwargs.get("eps")
    if not isinstance(value, fx.Node):
        return None
    if value.op != "get_attr":
        raise TypeError(f"node '{node.name}': its eps comes from node '{value.name}' ({value.op}), not from an "
                        "attribute of the module")
    obj = _owner(gm, node)
    for part in value.target.split("."):
        obj = getattr(obj, part)
    return obj


def node_eps(gm: nn.Module | None, node: fx.Node) -> float:
    """The current eps of sll ``node`` (its buffer's value, or its literal) as a Python float.

    ``gm`` is the linearized module, or any module holding the GraphModule that owns ``node``
    (a node of a nested GraphModule is read from its own module); ``None``: the graph's owner.
    A node without eps (``sll.select``) is a ``KeyError``.
    """
    if "eps" not in node.kwargs:
        raise KeyError(f"node '{node.name}' ({node.target}) has no eps")
    t = _eps_tensor(gm, node)
    return float(node.kwargs["eps"]) if t is None else float(t)


def drop_unused_eps(gm: fx.GraphModule) -> list[str]:
    """Erase ``get_attr`` nodes of eps buffers that nothing uses any more, and those buffers.

    ``export_hard`` calls it at the end of the strip pass (the hard ops take no eps); returns
    the names of the buffers removed.  Only buffers named ``_sll_eps_*`` that no remaining
    ``get_attr`` reads are removed.  Does not recompile ``gm``.
    """
    for node in list(gm.graph.nodes):
        if node.op == "get_attr" and not node.users and node.target.rsplit(".", 1)[-1].startswith(EPS_PREFIX):
            gm.graph.erase_node(node)
    read = {n.target for n in gm.graph.nodes if n.op == "get_attr"}
    removed = []
    for name in [b for b in gm._buffers if b.startswith(EPS_PREFIX) and b not in read]:
        del gm._buffers[name]
        gm._non_persistent_buffers_set.discard(name)
        removed.append(name)
    return removed


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




def _replace_eps(gm: nn.Module, node: fx.Node, old: torch.Tensor, eps: float) -> None:
    """Put a new 0-dim tensor holding ``eps`` where ``node``'s eps buffer is (same dtype, device, name).

    Not ``old.fill_``: a forward that ran before keeps ``old`` for its backward (AOT autograd saves
    the graph input itself, not the op's snapshot of it), so a backward after ``set_eps`` computes with
    the eps its forward used, compiled as in eager mode, where filling in place would fail the saved
    tensor's version check.  Compiled code reads the buffer by name each call: no recompilation.
    """
    prefix, _, name = node.kwargs["eps"].target.rpartition(".")
    owner = _owner(gm, node)
    owner = owner.get_submodule(prefix) if prefix else owner
    with torch.inference_mode(False):  # (set_eps under inference_mode, or eps="auto" calibrating there, makes
        # a normal tensor: an inference tensor cannot be saved for a backward, which compiled training code does)
        owner._buffers[name] = torch.full((), eps, dtype=old.dtype, device=old.device)
    owner.__dict__[EPS_GENERATION] = owner.__dict__.get(EPS_GENERATION, 0) + 1


def set_eps(gm: fx.GraphModule, eps: float, where: Where = None) -> list[str]:
    """Set eps on the selected sll nodes of ``gm``; returns their names.  Raises before changing anything.

    Puts new eps tensors in the nodes' eps buffers (no graph change, no recompilation, also under
    ``torch.compile``; a pending backward keeps its forward's eps: :func:`_replace_eps`); see the
    module docstring.  ``gm`` may be the ``torch.compile`` wrapper.
    A node with a literal eps (only in a graph ``linearize_module`` did not make) gets a buffer
    instead, once: that GraphModule's graph and code change, which code compiled from it before
    does not see (see the module docstring).
    """
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
    buffers = [(mod, node, _eps_tensor(mod, node)) for mod, node in chosen]  # raises before any change
    literal = {}
    with torch.no_grad():
        for mod, node, t in buffers:
            if t is None:  # a literal eps (a hand-made graph): it becomes a buffer, once (that module recompiles)
                eps_input(mod, node, float(eps), eps_device(mod))
                literal[id(mod)] = mod
            else:  # a new tensor in the buffer's place: the graph, the code and compiled code stay
                _replace_eps(mod, node, t, float(eps))
    changed = {(n.meta.get("sll_entry", n.name), module_of(n)) for _, n in chosen}
    changed |= {(u.meta.get("sll_entry", u.name), module_of(u)) for _, n in chosen for u in n.users
                if u.op == "call_function" and is_sll_target(u.target)}  # selections show their mask's eps
    for mod in literal.values():
        mod.recompile()
    modules = {id(m): m for m, _ in chosen}
    for mod in (gm, *modules.values()):  # the top report merges the nested graphs' entries
        report = getattr(mod, "sll_report", None)
        if report is not None and hasattr(report, "entries"):
            report.entries[:] = [dataclasses.replace(e, eps=float(eps)) if e.rewritten and (e.node, e.module)
                                 in changed else e for e in report.entries]
    return [node.name for _, node in chosen]

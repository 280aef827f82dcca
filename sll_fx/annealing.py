"""``set_eps``: change the band half-width of a linearized model in place, without retracing.

For eps schedules (wide bands early for gradient, narrow ones late to close the gap to the
hard model)::

    gm = sll_fx.linearize_module(model, eps=0.3)
    for step in range(steps):
        sll_fx.set_eps(gm, 0.3 * (0.05 / 0.3) ** (step / steps))   # geometric decay to 0.05
        ...

``where`` picks the nodes: ``None`` (all), a rule kind or group (``"round"``, ``"compare"``),
a submodule qualified name (that submodule and everything below it), a node name (``"b.g.sign"``
for a node of a nested GraphModule), an ``nn.Module`` type, or a predicate ``f(node) -> bool``;
a string that could be several of these is read by :func:`set_eps`'s precedence.  Every new eps
is checked against its op's limit before any node changes; a ``where`` that selects nothing is a
``ValueError``.  ``eps`` is any real number (a numpy scalar, a one-element tensor: its value).

**Saving and restoring eps.**  :func:`eps_state` gives ``{node name: eps}`` with names unique across
nested graphs (``"b.g.sign"``), :func:`load_eps` puts such a dict back (exact node names, never
kinds): eps is not in the ``state_dict``, so a checkpoint carries it next to it.

**Where eps lives.**  ``linearize_module`` gives every rewritten node its own non-persistent
0-dim float64 buffer ``_sll_eps_<node name>`` on the GraphModule that owns the node, and
passes it to the op through a ``get_attr`` node (``torch.ops.sll.round(x, eps=_sll_eps_round)``,
the ``eps_tensor`` overload, see ``sll_fx/ops.py``); a hard-mode selection's soft mask (the linear-mode
copy of its comparison, ``sll_fx.diagnostics.is_soft_mask``) reads its comparison's buffer, so that the two
never differ, and is no node of its own here.  ``set_eps`` puts a new 0-dim tensor in each
selected buffer (a backward still pending keeps the eps of its forward, see :func:`_replace_eps`):
the graph, the generated code and the GraphModule stay exactly as they are.  That is what makes
annealing compatible with ``torch.compile``: eps is a graph input, not a constant, so a
compiled model keeps its compiled code through any number of ``set_eps`` calls (no
recompilation) and computes with the new value.  Non-persistent buffers are not in
``state_dict()`` (its keys stay the model's), but they move with the module (``.to(device)``;
a dtype cast, ``.half()``/``.to(dtype)``, leaves them float64, and ``to_empty(device=...)`` keeps their
values, which ``load_state_dict`` would not restore: ``SLLGraphModule._apply``).
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
import functools
import itertools
import math
import numbers
import warnings
from typing import Callable, Union

import torch
from torch import fx, nn
from torch.nn.modules import module as _nn_module

from . import rules
from .diagnostics import is_soft_mask, sll_node_names  # (the names band_stats and calibrate print: one rule)
from .dtypes import module_list
from .errors import EpsError
from .graph_module import _FX_CONSTANT, EPS_PREFIX, _not_the_models  # the eps buffers' names: _sll_eps_<node>
from .precision import EPS_GENERATION  # bumped by set_eps on each module whose eps buffers it replaces
from .ops import check_eps, check_has_value, check_no_grad, find_sll_nodes, is_sll_target
from .report import RewriteReport, StripReport
from .tracer import module_of, source_of

Where = Union[None, str, type, Callable[[fx.Node], bool]]



def eps_device(gm: nn.Module) -> torch.device:
    """Where new eps buffers go: the device of the module's first parameter or buffer (CPU without; not meta)."""
    for t in itertools.chain(gm.parameters(), gm.buffers()):  # (lazily: the first one is enough)
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
    device = device if device is not None else eps_device(gm)
    if torch.is_inference_mode_enabled():  # (a normal tensor also when linearized under inference_mode)
        with torch.inference_mode(False):
            t = torch.full((), float(eps), dtype=torch.float64, device=device)
    else:
        t = torch.full((), float(eps), dtype=torch.float64, device=device)
    _add_eps_buffer(gm, name, t)
    with gm.graph.inserting_before(node):  # (graph.get_attr would look the new buffer up again; the name given is
        # what fx makes of the target, snake case, where lowering changes nothing: fx's regex is then not run)
        return gm.graph.create_node("get_attr", name, name=name if name == name.lower() else None)


def _add_eps_buffer(gm: nn.Module, name: str, t: torch.Tensor) -> None:
    """``gm.register_buffer(name, t, persistent=False)`` for a ``name`` that :func:`_taken` found free: the two
    entries it makes (``gm._buffers``, ``gm._non_persistent_buffers_set``), without its own ``hasattr(gm, name)``,
    which raises and catches an ``AttributeError`` in ``nn.Module.__getattr__`` for a free name.  ``register_buffer``
    itself where there is more to it: a global buffer registration hook, a class of its own, a name not plain."""
    # (torch's hook dict is private: where a torch has none by that name, register_buffer itself)
    if (type(gm).register_buffer is not nn.Module.register_buffer
            or getattr(_nn_module, "_global_buffer_registration_hooks", True)
            or "_buffers" not in gm.__dict__ or "." in name or not name):
        gm.register_buffer(name, t, persistent=False)
        return
    gm._buffers[name] = t
    gm._non_persistent_buffers_set.add(name)


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
    Python number written in the graph (an explicit ``sll_fx.sign(x, 0.1)`` traced, a hand-made graph), or a
    tensor literal of the forward (``sll_fx.round(x / s, s)`` with ``s = torch.tensor(0.1)``: fx's
    ``_tensor_constant``, which the forward may compute with too, and another op may be given)."""
    return [(mod, node) for mod in module_list(gm) if isinstance(mod, fx.GraphModule)
            for node in find_sll_nodes(mod.graph) if _is_literal(node.kwargs.get("eps")) or _is_constant(mod, node)]


def _is_literal(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_constant(mod: fx.GraphModule, node: fx.Node) -> bool:
    """Is ``node``'s eps fx's constant for a tensor literal (``_tensor_constant0``) that is a valid tensor eps (0-dim,
    floating, no gradient: any other one is left for the op to refuse, naming the node, as the model's op refuses
    it)?"""
    value = node.kwargs.get("eps")
    if not (isinstance(value, fx.Node) and value.op == "get_attr" and
            _FX_CONSTANT.fullmatch(value.target.rpartition(".")[2])):
        return False
    t = _eps_tensor(mod, node)
    return isinstance(t, torch.Tensor) and t.dim() == 0 and t.is_floating_point() and not t.requires_grad


def buffer_literal_eps(gm: nn.Module) -> list[str]:
    """Give every sll node of ``gm`` with a literal eps its own eps buffer (:func:`eps_input`), holding
    that value; returns the nodes' names.  ``linearize_module`` calls it on the graphs it makes, so that
    ``set_eps`` only ever replaces buffers' tensors (compiled code follows).  The node keeps its value and is not a
    report entry: calibration leaves it alone (``sll_fx/calibration.py``).  Recompiles the modules changed."""
    changed = {}
    names = []
    for mod, node in literal_eps_nodes(gm):
        old = node.kwargs["eps"]
        value = float(_eps_tensor(mod, node)) if isinstance(old, fx.Node) else float(old)
        eps_input(mod, node, value, eps_device(mod))
        if isinstance(old, fx.Node) and not old.users:
            mod.graph.erase_node(old)
        changed[id(mod)] = mod
        names.append(node.name)
    for mod in changed.values():
        mod.recompile()
    return names


def unwrap_compiled(module: nn.Module) -> nn.Module:
    """The module a ``torch.compile`` wrapper (``OptimizedModule``) compiles; ``module`` itself otherwise."""
    optimized = _optimized_module()
    while optimized is not None and isinstance(module, optimized):
        module = module._orig_mod
    return module


@functools.lru_cache(maxsize=1)  # (asked per traced module: is_calibrating)
def _optimized_module() -> type | None:
    """``torch._dynamo``'s ``OptimizedModule`` class (a ``torch.compile`` wrapper's), or None where there is none."""
    return getattr(getattr(getattr(torch, "_dynamo", None), "eval_frame", None), "OptimizedModule", None)


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
                        "attribute of the module: the forward computes it (an explicit op given a computed eps), so "
                        "there is no eps to set or save\nFix: leave the node out (eps_state does; set_eps(gm, eps) "
                        "passes it by), or give the op an eps held by the model (a buffer) to set it")
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
    """(graph module, node) for every sll node carrying an eps, nested GraphModules included; not a hard-mode
    selection's soft mask (``is_soft_mask``: it reads its comparison's eps buffer, and follows it)."""
    for mod in gm.modules():
        if isinstance(mod, fx.GraphModule):
            for node in mod.graph.nodes:
                if node.op == "call_function" and is_sll_target(node.target) and settable(node) \
                        and not is_soft_mask(node):
                    yield mod, node


def require_sll(gm: nn.Module, what: str) -> None:
    """``gm`` (a root, :func:`_root`) holds an sll node, or is a ``linearize_module`` result (which may have rewritten
    none); else the original model or an ``export_hard`` result was given for the linearized one, and ``what`` (the
    function called: calibrate, freeze_eps) would do nothing, silently (a58): a ValueError with the fix."""
    report = getattr(gm, "sll_report", None)
    if isinstance(report, RewriteReport) or any(True for _ in _eps_nodes(gm)):
        return
    which = "is an export_hard result: its sll ops are stripped to the hard ops, which have no eps" if isinstance(
        report, StripReport) else "holds no sll node: it is no linearize_module result (the original model?)"
    raise ValueError(f"{what}: {type(gm).__name__} {which}\nFix: call it on the linearized model, "
                     "gm = sll_fx.linearize_module(model)")


def require_sll_node(gm: nn.Module, what: str) -> None:
    """:func:`require_sll` for a function that reads every sll node of ``gm`` (a root), not only those with an eps to
    set (``eps_state``, ``band_stats``): given the original model, they returned nothing, silently (a58)."""
    if not any(n.op == "call_function" and is_sll_target(n.target) for m in gm.modules()
               if isinstance(m, fx.GraphModule) for n in m.graph.nodes):
        require_sll(gm, what)


def settable(node: fx.Node) -> bool:
    """Has sll ``node`` an eps to read and set: a literal or a module's tensor, not one its forward computes (an
    explicit op given ``(h.std() * 0.1).detach()``), nor none (``sll.select``)?"""
    value = node.kwargs.get("eps")
    return "eps" in node.kwargs and (not isinstance(value, fx.Node) or value.op == "get_attr")


# ----------------------------------------------------------------------------------------
# node names: unique across nested graphs
# ----------------------------------------------------------------------------------------

def _named_nodes(gm: nn.Module) -> list[tuple[str, str, fx.GraphModule, fx.Node]]:
    """(name, fx name, graph module, node) for every sll node of ``gm``, nested GraphModules included.

    ``name`` is the one :func:`eps_state`, ``band_stats`` and ``sll_fx.calibrate`` print: the report
    entry's name (``node.meta["sll_entry"]``: ``gt`` for the ``sll.compare`` node that rewrote ``x > t``),
    else (an explicit op, a hand-made graph) the fx node name; for a node of a nested GraphModule (the
    traced child of an opaque module) at qualified name ``path``, ``"<path>.<name>"`` (``"b.g.sign"``).
    A name taken twice in one graph falls back to the fx node name.  ``fx name`` is the fx node name,
    qualified the same way.  Unique across the whole model (node names hold no dot).
    """
    out = []
    for path, mod in _root(gm).named_modules():
        if isinstance(mod, fx.GraphModule):
            out.extend((name, f"{path}.{node.name}" if path else node.name, mod, node)
                       for node, name in sll_node_names(mod.graph, path).items())
    return out


def _report_names(gm: nn.Module, nodes) -> list[str]:
    """The names :func:`eps_state` gives the sll ``nodes`` of ``gm`` (the report's: ``gt``, not the ``compare`` it
    became; ``"<path>.<name>"`` in a nested graph), in the order given."""
    names = {id(node): name for name, _, _, node in _named_nodes(gm)}
    return [names.get(id(node), node.name) for node in nodes]


def _root(gm: nn.Module, what: str = "sll_fx") -> nn.Module:
    """The linearized model inside a ``torch.compile`` wrapper and a ``DistributedDataParallel``/``DataParallel``
    wrapper (its ``module``): names are the model's own, without ``_orig_mod.``/``module.``.  An ``ExportedProgram``
    is a TypeError naming ``what`` (the function called) and the fix: it holds no module whose eps could change."""
    if isinstance(gm, torch.export.ExportedProgram):
        raise TypeError(f"{what}: got an ExportedProgram, which holds the eps of export time as constants (each "
                        "ep.module() call makes a new module from them)\nFix: call it on the linearized model, then "
                        "export again; or keep one m = ep.module() and call it on m")
    if not isinstance(gm, nn.Module):  # (None, a function: "'NoneType' object has no attribute 'modules'")
        from .tracer import not_a_module
        raise not_a_module(gm, what)
    gm = unwrap_compiled(gm)
    while isinstance(gm, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
        gm = unwrap_compiled(gm.module)
    return gm


def _with_eps(pairs):
    """``pairs`` (graph module, node) with a selection (``sll.select``, no eps of its own) replaced by the
    sll nodes carrying an eps that feed it (its mask's comparison): a selection's band is its mask's."""
    out = []
    for mod, node in pairs:
        if "eps" in node.kwargs:
            out.append((mod, node))
        else:
            out += [(mod, a) for a in node.all_input_nodes if a.op == "call_function" and is_sll_target(a.target)
                    and "eps" in a.kwargs and not is_soft_mask(a)]
    return list({id(n): (m, n) for m, n in out}.values())


def _lookup_name(named, name: str):
    """The (graph module, node) pairs named exactly ``name`` (by :func:`_named_nodes`' name, else its fx
    name); [] when none."""
    found = [(mod, node) for qual, _, mod, node in named if qual == name]
    return found or [(mod, node) for _, fx_name, mod, node in named if fx_name == name]


def eps_state(gm: nn.Module) -> dict[str, float]:
    """Every sll node's current eps, by a name unique across the whole model: ``{name: eps}``.

    The names are the report's entry names (``"sign"``, ``"gt_1"``; explicit ops: their fx node
    names) and, for nodes of nested GraphModules (the traced children of opaque modules),
    ``"<module path>.<name>"`` (``"b.g.sign"``): the names ``band_stats`` and ``sll_fx.calibrate``
    print.  Selections (``torch.where``, ``masked_fill``) have no eps of their own (theirs is their
    comparison's) and are not listed.  A module holding no sll node that is no ``linearize_module`` result (the
    original model, an ``export_hard`` result) is a ``ValueError``.  A plain ``dict`` of ``str`` -> ``float``: it
    saves with ``torch.save`` and loads with ``torch.load(..., weights_only=True)``; put it back with
    :func:`load_eps` (eps is not in the ``state_dict``: its buffers are non-persistent)::

        torch.save({"model": gm.state_dict(), "eps": sll_fx.eps_state(gm)}, "ckpt.pt")
        ckpt = torch.load("ckpt.pt", weights_only=True)
        gm = sll_fx.linearize_module(model, eps=0.1)
        gm.load_state_dict(ckpt["model"])
        sll_fx.load_eps(gm, ckpt["eps"])
    """
    require_sll_node(_root(gm, "eps_state"), "eps_state")
    return {name: node_eps(mod, node) for name, _, mod, node in _named_nodes(gm)
            if settable(node)}


def load_eps(gm: nn.Module, state: dict, strict: bool = True) -> list[str]:
    """Set each node's eps from ``state`` (``{name: eps}``, as :func:`eps_state` gives); returns the
    names of the nodes set, as :func:`eps_state` gives them.  Checks everything before changing anything; the report
    follows.

    A key is an exact node name, never a rule kind or a submodule (``"sign"`` is the node the report
    calls ``sign``, not every sign node): a report entry's name or an fx node name, qualified with the
    module path for a node of a nested GraphModule (``"b.g.sign"``).  A selection's name (``"where_1"``)
    sets its comparison.  ``strict`` (default): a key naming no node, or an sll node with an eps that
    no key names, is a ``ValueError`` (as ``load_state_dict(strict=True)``); ``strict=False`` skips
    unknown keys and leaves unnamed nodes as they are.  Values: anything :func:`set_eps` takes.
    """
    gm = _root(gm, "load_eps")
    if not isinstance(state, dict):
        raise TypeError(f"load_eps: state must be a dict {{node name: eps}} (sll_fx.eps_state(gm)), "
                        f"got {type(state).__name__}")
    named = _named_nodes(gm)
    values: dict[int, tuple[fx.GraphModule, fx.Node, float, str]] = {}
    unknown = []
    for key, value in state.items():
        found = _with_eps(_lookup_name(named, key)) if isinstance(key, str) else []
        if not found:
            unknown.append(key)
            continue
        eps = _as_eps(value, f"load_eps: state[{key!r}]")
        for mod, node in found:
            seen = values.get(id(node))
            if seen is not None and seen[2] != eps:
                raise ValueError(f"load_eps: state[{key!r}]={eps!r} and state[{seen[3]!r}]={seen[2]!r} both set "
                                 f"node '{node.name}' (a selection's eps is its comparison's)")
            values[id(node)] = (mod, node, eps, key)
    if strict:
        missing = [name for name, _, mod, node in named if settable(node) and id(node) not in values]
        if unknown or missing:
            known = [name for name, _, _, node in named if settable(node)]
            raise ValueError("load_eps: " + "; ".join(
                [f"no node named {', '.join(map(repr, unknown))} in {type(gm).__name__} "
                 f"(its nodes: {', '.join(known) or 'none'})"] * bool(unknown)
                + [f"no eps given for node(s) {', '.join(missing)}"] * bool(missing))
                + " (strict=False: skip unknown names, keep the others' eps)")
    _refuse_nested(gm, None)
    _apply(gm, [(mod, node, eps) for mod, node, eps, _ in values.values()], "load_eps")
    return _report_names(gm, [node for _, node, _, _ in values.values()])


# ----------------------------------------------------------------------------------------
# set_eps
# ----------------------------------------------------------------------------------------

def _as_eps(eps, what: str = "set_eps") -> float:
    """``eps`` as a Python float: any real number ``float()`` takes (int, float, numpy scalar, a one-element
    tensor without gradient: its item); else an ``EpsError`` saying what to pass.  Range and limits are
    ``check_eps``'s."""
    if isinstance(eps, torch.Tensor):
        if eps.numel() != 1 or eps.dtype == torch.bool or eps.is_complex():
            raise EpsError(f"{what}: eps must be one real number, got a {eps.dtype} tensor of shape "
                           f"{tuple(eps.shape)}; pass float(eps) of one value")
        check_has_value(what, eps)
        check_no_grad(what, eps)  # (as linearize_module: read as a number, it would get no gradient)
        return float(eps.detach().item())
    if isinstance(eps, bool) or not isinstance(eps, numbers.Real):
        raise EpsError(f"{what}: eps must be a real number (float, int, numpy scalar or one-element tensor), got "
                       f"{type(eps).__name__}")
    return float(eps)


def _selects(where: Where, node: fx.Node) -> bool:
    """``where`` (not a string: None, an nn.Module type or a predicate) selects ``node``."""
    if where is None:
        return True
    if callable(where) and not isinstance(where, type):
        chosen = where(node)
        if isinstance(chosen, torch.Tensor) and chosen.numel() != 1:  # ("Boolean value of Tensor ... is ambiguous")
            raise TypeError(f"set_eps: where={getattr(where, '__qualname__', where)!r} returned a tensor of shape "
                            f"{tuple(chosen.shape)} for node '{node.name}', where it must say yes or no\nFix: return a "
                            "bool for each node (e.g. lambda node: node.name.startswith('round'))")
        return bool(chosen)
    stack = list((node.meta.get("nn_module_stack") or {}).values())
    return any(isinstance(t, type) and issubclass(t, where) for _, t in stack)


def _selects_kind(where: str, node: fx.Node) -> bool:
    kind = rules.for_sll_node(node).kind
    if where == kind or kind in rules.KIND_GROUPS.get(where, ()):
        return True
    if where in ("where", "masked_fill", "select"):  # a selection's band is its comparison's
        return any(rules.sll_op_name(u.target) == "select" and (where == "select" or
                   u.kwargs.get("op", "where") == where) for u in node.users if u.op == "call_function")
    return False


def _is_kind(where: str) -> bool:
    return where in rules.KINDS or where in rules.KIND_GROUPS


def _select_string(gm: nn.Module, where: str, nodes) -> list:
    """The nodes a ``where`` string selects: see :func:`set_eps` (precedence: a qualified node name, a top-level
    node name that is not a kind, a submodule name, a kind or group, a node name of one nested graph)."""
    if where == "":
        return list(nodes)
    named = _named_nodes(gm)
    if "." in where or not _is_kind(where):  # 1. an exact node name: "b.g.sign" (nested), "round_2", "where_1"
        found = _with_eps(_lookup_name(named, where))
        if found:
            return found
    inside = [(m, n) for m, n in nodes if module_of(n) == where or module_of(n).startswith(where + ".")]
    if inside:  # 2. a submodule's qualified name
        return inside
    if _is_kind(where):  # 3. a kind or group: every node of it, the one named like the kind included
        return [(m, n) for m, n in nodes if _selects_kind(where, n)]
    # 4. an unqualified name of a node of a nested graph: only when one graph has it
    found = [(m, n) for qual, fx_name, m, n in named
             if "." in qual and where in (qual.rsplit(".", 1)[1], fx_name.rsplit(".", 1)[1])]
    if len({id(m) for m, _ in found}) > 1:
        quals = [q for q, _, m, n in named if any(n is f for _, f in found)]
        raise ValueError(f"set_eps: where={where!r} names a node in several nested graphs ({', '.join(quals)}): "
                         "pass its qualified name")
    return _with_eps(found)


def _nested_path(module: nn.Module, nodes) -> str | None:
    """When ``module`` is a nested part of a linearized model (the traced child of an opaque module, or an
    opaque module itself): its qualified name there ("b.g"); None for a linearized model itself (or a module
    that is no part of one).  A GraphModule says so in its meta (:func:`~sll_fx.opaque.map_graphs`); an opaque
    module is nested when its nodes name submodules from the model's top (paths it cannot resolve)."""
    from .graph_module import SLLGraphModule
    from .opaque import NESTED, is_opaque

    if isinstance(module, SLLGraphModule):  # (map_graphs marks the nested ones: export's paths need not resolve)
        return module.meta.get(NESTED)
    if not is_opaque(module):  # (a hand-made graph names its own paths)
        return None
    paths = {module_of(n) for _, n in nodes} - {""}

    def resolves(prefix: str) -> bool:
        for path in paths:
            if prefix and path != prefix and not path.startswith(prefix + "."):
                return False
            rel = path[len(prefix):].lstrip(".") if prefix else path
            try:
                module.get_submodule(rel)
            except AttributeError:
                return False
        return True

    if not paths or resolves(""):
        return None
    first = min(paths, key=len).split(".")
    return next((p for p in (".".join(first[:i]) for i in range(1, len(first) + 1)) if resolves(p)), "?")


def _refuse_nested(gm: nn.Module, where: Where) -> None:
    nodes = list(_eps_nodes(gm))
    path = _nested_path(gm, nodes)
    if path is None:
        return
    which = f"where={path + '.' + where!r})" if isinstance(where, str) and where and "." not in where else \
        f"where={path!r}) for all of it, or where='{path}.<node>' for one node"
    raise ValueError(f"set_eps: this {type(gm).__name__} is the nested part {path!r} of a linearized model (the "
                     "traced child of an opaque module): setting it here would leave the model's report behind; "
                     f"call it on the linearized model: set_eps(gm, eps, {which}")


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


def _own(node: fx.Node) -> bool:
    """Is ``node``'s eps one of sll_fx's eps buffers (``_sll_eps_<node>``), not a tensor of the model's own (a
    parameter, a buffer, a plain tensor attribute or a ``torch.tensor`` literal its forward may also compute with)?"""
    return node.kwargs["eps"].target.rpartition(".")[2].startswith(EPS_PREFIX)


def _holds(t: torch.Tensor, eps: float) -> bool:
    """Does ``t`` hold ``eps`` already (as its dtype rounds it)?  (A meta tensor holds no value.)"""
    return t.device.type != "meta" and float(t) == float(torch.tensor(eps, dtype=t.dtype))


def _refuse_models_tensor(gm: nn.Module, mod: fx.GraphModule, node: fx.Node, eps: float, t: torch.Tensor,
                          what: str) -> None:
    """An explicit op whose eps is a tensor of the user's model (``sll_fx.sign(x, self.eps)``: a parameter, a buffer,
    a plain tensor attribute; its forward may compute with it too, and give it to other ops) reads the model's own
    value, which ``what`` (set_eps, load_eps) does not replace (a parameter was shadowed and nothing changed; a buffer
    was replaced on the result only; the quantizer step of ``round(x / s, s) * s`` changed with it): a ValueError
    naming the node, the tensor and the fix.  (A ``torch.tensor`` literal of the forward got a buffer of its own
    when the model was linearized: :func:`buffer_literal_eps`.)"""
    prefix, _, name = node.kwargs["eps"].target.rpartition(".")
    owner = mod.get_submodule(prefix) if prefix else mod
    root = _root(gm)
    path = next((p for p, m in root.named_modules() if m is mod), "")
    target = f"{path}.{node.kwargs['eps'].target}" if path else node.kwargs["eps"].target
    (shown,) = _report_names(gm, [node])
    kind = "parameter" if name in owner._parameters else "tensor attribute" if _not_the_models(owner, name) else "buffer"
    value = "no value (meta)" if t.device.type == "meta" else repr(float(t))
    raise ValueError(
        f"{what}: node '{shown}' ({source_of(node) or 'an explicit op'}) takes its eps from the model's {kind} "
        f"'{target}' ({value}), the model's own value (its state, and the forward may compute with it): {what} "
        f"does not replace it\nFix: set it on the model (with torch.no_grad(): model.{target}.fill_({eps!r})), or "
        "leave this node out")


def _apply(gm: nn.Module, chosen: list[tuple[fx.GraphModule, fx.Node, float]], what: str = "set_eps") -> None:
    """Check every (graph module, node, eps), then set them; the reports of ``gm`` and of the graph modules
    follow.  Raises before changing anything.

    A node's own eps buffer gets a new tensor (:func:`_replace_eps`); a literal eps (only in a hand-made graph) gets
    a buffer, once (that GraphModule's code changes, see the module docstring); a tensor of the model's own (a
    parameter, a buffer, a plain tensor attribute) is refused (:func:`_refuse_models_tensor`); a node already at its
    value is left as it is."""
    for _, node, eps in chosen:
        op = rules.sll_op_name(node.target)
        try:
            check_eps(op, eps, node.kwargs.get("decimals", 0))
        except EpsError as e:
            (shown,) = _report_names(gm, [node])
            raise EpsError(f"{what}: node '{shown}' ({source_of(node) or 'no source'}): {e}") from None
    buffers = [(mod, node, eps, _eps_tensor(mod, node)) for mod, node, eps in chosen]  # raises before any change
    for mod, node, eps, t in buffers:
        if t is not None and not _own(node) and not _holds(t, eps):
            _refuse_models_tensor(gm, mod, node, eps, t, what)
    literal = {}
    with torch.no_grad():
        for mod, node, eps, t in buffers:
            if t is not None and _holds(t, eps):
                continue  # (its value already: also a model's own tensor, which eps_state -> load_eps gives back)
            if t is None:  # a literal eps (a hand-made graph): it becomes a buffer, once (that module recompiles)
                eps_input(mod, node, eps, eps_device(mod))
                literal[id(mod)] = mod
            else:  # a new tensor in the buffer's place: the graph, the code and compiled code stay
                _replace_eps(mod, node, t, eps)
    changed = {(n.meta.get("sll_entry", n.name), module_of(n)): eps for _, n, eps in chosen}
    changed.update({(u.meta.get("sll_entry", u.name), module_of(u)): eps for _, n, eps in chosen for u in n.users
                    if u.op == "call_function" and is_sll_target(u.target)})  # selections show their mask's eps
    for mod in literal.values():
        mod.recompile()
    modules = {id(m): m for m, _, _ in chosen}
    # set while an eps="auto" calibration is pending: the user's number, which the calibration must not
    # overwrite (the entry is no longer auto, and calibration.calibrated_nodes passes it by)
    from .calibration import awaits_calibration  # (calibration sets eps through this module)
    keep = {"auto": False} if awaits_calibration(_root(gm)) else {}
    for mod in (_root(gm), *modules.values()):  # the top report merges the nested graphs' entries
        report = getattr(mod, "sll_report", None)
        if report is not None and hasattr(report, "entries"):
            report.entries[:] = [dataclasses.replace(e, eps=changed[e.node, e.module], **keep) if e.rewritten and
                                 (e.node, e.module) in changed else e for e in report.entries]


def set_eps(gm: fx.GraphModule, eps: float, where: Where = None) -> list[str]:
    """Set eps on the selected sll nodes of ``gm``; returns their names as :func:`eps_state` gives them (the report's:
    ``gt``, not the ``compare`` it became).  Raises before changing anything.

    ``eps``: a positive real number within each selected op's limit: a float, an int, a numpy scalar or a
    one-element tensor (its value; one that requires grad is an ``EpsError``, as in ``linearize_module``).  ``where``:

    - ``None``: every sll node (explicit ``sll_fx.*`` ops included);
    - a string, read as the first of these that matches anything:

      1. an exact node name: a report entry's name or an fx node name (``"round_2"``, ``"where_1"``: a
         selection sets its comparison), ``"<module path>.<name>"`` for a node of a nested GraphModule,
         the traced child of an opaque module (``"b.g.sign"``: the names :func:`eps_state`,
         ``band_stats`` and ``sll_fx.calibrate`` print); except a name that is also a rule kind or group
         (below): ``"round"`` stays every round node even when the first of them is named ``round``
         (set that node alone with ``sll_fx.load_eps(gm, {"round": eps})``);
      2. a submodule's qualified name (``"enc"``, ``"enc.0"``): the nodes inside it, at any depth;
         it takes precedence over a kind (a submodule named ``round`` means that submodule); ``""``, the root's
         name in ``named_modules()``, is every node (as ``None``);
      3. a rule kind (``"round"``, ``"gt"``, ``"where"``: the comparisons feeding a where) or a group
         (``"compare"``, ``"select"``);
      4. the unqualified name of a node of a nested graph, when only one graph has it;

    - an ``nn.Module`` type: the nodes inside submodules of that type;
    - a predicate ``f(node) -> bool``.

    A ``where`` selecting nothing is a ``ValueError``.  Puts new eps tensors in the nodes' eps buffers (no
    graph change, no recompilation, also under ``torch.compile``; a pending backward keeps its forward's eps:
    :func:`_replace_eps`); see the module docstring.  ``gm`` may be the ``torch.compile`` wrapper; it is
    the linearized model (whose report follows), not a GraphModule nested in it (set those through the
    model: ``where="b.g"``, refused otherwise).
    A node with a literal eps (only in a graph ``linearize_module`` did not make) gets a buffer
    instead, once: that GraphModule's graph and code change, which code compiled from it before
    does not see (see the module docstring).
    """
    _root(gm, "set_eps")
    eps = _as_eps(eps)
    if isinstance(where, type) and not issubclass(where, nn.Module):
        raise ValueError(f"set_eps: where={where!r} is a type but not an nn.Module type")
    if not (where is None or isinstance(where, (str, type)) or callable(where)):  # (a list of names reached
        # issubclass() for the nodes of submodules: "arg 2 must be a class")
        raise TypeError(f"set_eps: where={where!r} must be None, a name (a kind, a submodule, a node), an nn.Module "
                        f"type or a predicate on nodes, got {type(where).__name__}\nFix: one call per name, or a "
                        "predicate: where=lambda node: node.name in (...)")
    nodes = list(_eps_nodes(gm))
    computed = [name for name, _, _, node in _named_nodes(gm) if "eps" in node.kwargs and not settable(node)]
    if not nodes and computed:
        raise ValueError(f"set_eps: the sll node(s) {', '.join(computed)} of {type(gm).__name__} compute their eps in "
                         "the forward (an explicit op given a computed eps; an ExportedProgram's tensor literal), so "
                         "there is no eps to set\nFix: give the op an eps held by the model (a buffer), and set it there")
    report = getattr(_root(gm), "sll_report", None)
    if not nodes and where is None and isinstance(report, RewriteReport):  # (the linearized model itself)
        if not math.isfinite(eps) or eps <= 0:
            raise EpsError(f"set_eps: eps={eps!r} must be positive and finite")
        opaque = len(report.opaque)
        warnings.warn(f"set_eps: linearize_module rewrote no node of {type(_root(gm)).__name__} "
                      f"({report.counts['found']} discrete node(s) found, 0 rewritten; {opaque} module(s) kept opaque, "
                      "their reasons in "
                      "gm.sll_report.opaque): there is no eps to set, and nothing changed", UserWarning, stacklevel=2)
        return []
    if not nodes and isinstance(report, StripReport):
        raise ValueError(f"set_eps: {type(_root(gm)).__name__} is an export_hard result: its sll ops are stripped to "
                         "the hard ops, which have no eps\nFix: call set_eps on the linearized model")
    if not nodes:
        raise ValueError(f"set_eps: {type(gm).__name__} holds no sll node.  A submodule that linearize_module traced "
                         "through stays a plain container of its parameters and buffers: its ops are nodes of the "
                         "linearized model's graph.  Call set_eps on the linearized model with the submodule's "
                         "qualified name: set_eps(gm, eps, where=\"<submodule name>\")")
    _refuse_nested(_root(gm), where)
    chosen = _select_string(gm, where, nodes) if isinstance(where, str) else \
        [(mod, node) for mod, node in nodes if _selects(where, node)]
    if not chosen:
        raise ValueError(f"set_eps: where={where!r} selects no sll node of {type(gm).__name__} "
                         f"(kinds: {', '.join(rules.KINDS)}; or a submodule name, node name, type or predicate)")
    _apply(gm, [(mod, node, eps) for mod, node in chosen])
    return _report_names(gm, [node for _, node in chosen])

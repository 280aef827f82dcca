"""Symbolic tracing for sll_fx: source lines recorded, failures pinned to a submodule, and
a fallback for models that do not trace as a whole.

``trace(model, concrete_args=None)`` returns a fresh ``GraphModule`` that shares every
parameter and buffer with ``model`` and leaves ``model`` itself untouched (``torch.fx`` would
otherwise store tensor literals as ``_tensor_constant*`` attributes on the model it traces).
A model that cannot be traced raises :class:`~sll_fx.errors.TraceError` naming the innermost
submodule being traced when it failed, the reason and what to do.

``trace_with_fallback(model, concrete_args=None)`` never gives up on a whole model because
of one part (this is what ``linearize_module`` and ``export_hard`` use):

1. Trace; when the trace fails inside submodule ``p`` (the innermost one being traced),
   make ``p`` a leaf of the tracer (an *opaque* module: the graph calls it, its Python
   ``forward`` runs as written) and trace again, until the trace succeeds.  Only the modules
   that fail are opaque, so the other blocks of the model are traced and rewritten.
2. For each opaque module, its own children are traced the same way, recursively, and the
   graph calls a private copy of the opaque module (:func:`sll_fx.opaque.private_copy`:
   the user's module is never edited) whose children are those GraphModules.  Children from
   ``torch.nn`` (``nn.Linear``, ...) stay as they are (torch is never traced into);
   containers without a ``forward`` (``nn.ModuleList``/``ModuleDict``) are copied with their
   items rewritten.  A child whose opaque parent reads one of its attributes or methods
   (``self.child.flag``), which a GraphModule would not have, is kept opaque as well.
3. When the model's *own* ``forward`` fails (not inside a submodule), the model itself is
   the opaque module: the result is then a private copy of the model (its own class, not a
   GraphModule) that calls its traced children, so their discrete ops are still rewritten.

Each opaque module is returned as an :class:`~sll_fx.report.OpaqueModule` record (qualified
name, class name, reason: the fx error as ``"Type: text"``).  Nodes of a graph traced for a
child at ``block2.inner`` carry ``nn_module_stack`` entries with qualified names from the top
model (``block2``, ``block2.inner``, ...), so report entries, per-submodule settings and
``module_of`` use the model's own names.  ``concrete_args`` applies to the top-level trace.

**autograd.Function.**  ``torch.fx`` traces straight through ``Fn.apply(x)`` (the C++ apply
just calls ``Fn.forward`` with the proxies) and the custom backward is lost, silently.  The
tracer therefore never traces through one; the module whose ``forward`` calls it (the model
itself at the top level) is kept opaque with the reason ``"autograd.Function <Name>: kept
opaque so its backward survives"``, so at run time ``Fn.apply`` runs as written with its own
backward.  Two detectors, neither of which patches anything:

- before tracing through a module, a static scan of its ``forward`` code
  (:func:`sll_fx.opaque.autograd_function_used`: names in the code, nested code included,
  resolved in its closure, globals, the module and its class, one or two attribute levels
  deep: ``STE.apply``, ``lib.STE.apply``, ``self.fn.apply``, ``ste = STE.apply``); this also
  catches a Function whose forward returns its input untouched, which leaves no trace at all;
- while tracing, :meth:`SLLTracer.create_node` looks for a frame of
  ``torch.autograd.Function.apply`` on the Python stack (below the tracer's own ``trace``
  frame), and any error raised while tracing is checked the same way; this catches a
  Function called from a helper function or from library code (``torch.utils.checkpoint``).

The static scan is conservative: a ``forward`` that only *references* a Function (a branch
not taken) is kept opaque too.  ``trace`` applies the same detection and raises.
"""

from __future__ import annotations

import copy
import os
import re
import sys
from collections import OrderedDict

import torch
from torch import fx, nn

from .errors import TraceError
from .graph_module import SLLGraphModule
from .opaque import (autograd_function_class, autograd_function_used, child_attributes_read, join, mark_opaque,
                     private_copy)
from .report import OpaqueModule
from .state import mirror_state

_TORCH_DIR = os.path.dirname(torch.__file__)
_SLL_DIR = os.path.dirname(__file__)
_FRAME = re.compile(r'File "([^"]+)", line (\d+)')
_APPLY_CODE = torch.autograd.Function.apply.__func__.__code__

_CONTROL_FLOW_FIX = ("Fix: make its forward traceable (no Python control flow on tensor values, no .item()/.tolist()),"
                     " or use the explicit ops (sll_fx.sign, ...) inside it; linearize_module keeps it opaque")


class _AutogradFunctionCall(Exception):
    """Raised inside a trace that reached an autograd.Function; becomes a TraceError."""

    def __init__(self, fn: type):
        super().__init__(f"autograd.Function {fn.__name__}")
        self.fn = fn


def _apply_frame_class(frame, stop) -> type | None:
    """The autograd.Function class of the innermost ``Function.apply`` frame from ``frame`` up to ``stop``."""
    while frame is not None and frame is not stop:
        if frame.f_code is _APPLY_CODE:
            return autograd_function_class(frame.f_locals.get("cls"))
        frame = frame.f_back
    return None


def _autograd_function_of(e: BaseException) -> type | None:
    """The autograd.Function that ``e`` was raised in (or that raised it), if any."""
    if isinstance(e, _AutogradFunctionCall):
        return e.fn
    tb = e.__traceback__
    found = None
    while tb is not None:
        if tb.tb_frame.f_code is _APPLY_CODE:
            found = autograd_function_class(tb.tb_frame.f_locals.get("cls")) or found
        tb = tb.tb_next
    return found


def _autograd_reason(fn: type) -> str:
    return f"autograd.Function {fn.__name__}: kept opaque so its backward survives"


def _failure(e: BaseException, path: str, module: nn.Module) -> TraceError:
    """The TraceError for ``e`` raised while tracing ``module`` (at ``path``; "" for the top level)."""
    kind = type(module).__name__
    where = f"submodule '{path}' ({kind})" if path else f"the forward of {kind}"
    fn = _autograd_function_of(e)
    if fn is not None:
        return TraceError(
            f"torch.fx would trace {where} through autograd.Function {fn.__name__} and lose its backward\n"
            "Fix: linearize_module keeps such a module opaque (trace_with_fallback); or call the Function "
            "from a submodule of its own", module_path=path, module_type=kind, reason=_autograd_reason(fn))
    return TraceError(f"torch.fx cannot trace {where}: {type(e).__name__}: {e}\n{_CONTROL_FLOW_FIX}",
                      module_path=path, module_type=kind, reason=f"{type(e).__name__}: {e}")


class SLLTracer(fx.Tracer):
    """``fx.Tracer`` with stack traces on, a record of the submodule being traced, the modules
    in ``opaque`` kept as leaves, and no tracing through an ``autograd.Function``."""

    def __init__(self, opaque=()):
        super().__init__()
        self.record_stack_traces = True
        self.proxy_buffer_attributes = True  # buffers are graph inputs: never folded into constants
        self.sll_scope: list[tuple[str, str]] = []
        self.sll_opaque = {id(m) for m in opaque}
        self._sll_base = None

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return id(m) in self.sll_opaque or super().is_leaf_module(m, module_qualified_name)

    def trace(self, root, concrete_args=None):
        self._sll_base = sys._getframe()
        try:
            return super().trace(root, concrete_args)
        finally:
            self._sll_base = None

    def create_node(self, *args, **kwargs):
        fn = _apply_frame_class(sys._getframe(1), self._sll_base)
        if fn is not None:
            raise _AutogradFunctionCall(fn)
        return super().create_node(*args, **kwargs)

    def call_module(self, m, forward, args, kwargs):
        try:
            path = self.path_of_module(m)
        except NameError as e:
            err = TraceError(f"cannot trace a {type(m).__name__} that is not a registered submodule: {e}. "
                             "Register it with add_module (or nn.ModuleList/ModuleDict)",
                             module_type=type(m).__name__, reason=f"calls an unregistered {type(m).__name__}")
            err.sll_fallback_path = self.sll_scope[-1][0] if self.sll_scope else ""  # the caller goes opaque
            raise err from e
        self.sll_scope.append((path, type(m).__name__))
        try:
            if not self.is_leaf_module(m, path):
                fn = autograd_function_used(m)
                if fn is not None:
                    raise _AutogradFunctionCall(fn)
            return super().call_module(m, forward, args, kwargs)
        except TraceError:
            raise
        except Exception as e:
            raise _failure(e, path, m) from e
        finally:
            self.sll_scope.pop()


def _check_module(model) -> None:
    if not isinstance(model, nn.Module):
        raise TypeError(f"sll_fx expects an nn.Module, got {type(model).__name__}")


def _trace(model: nn.Module, concrete_args=None, opaque=()) -> SLLGraphModule:
    root = copy.copy(model)  # shares parameters/submodules; fx's tensor-constant attributes land on the copy
    tracer = SLLTracer(opaque)
    try:
        fn = autograd_function_used(model)
        if fn is not None:
            raise _AutogradFunctionCall(fn)
        graph = tracer.trace(root, concrete_args)
    except TraceError:
        raise
    except Exception as e:
        raise _failure(e, "", model) from e
    gm = SLLGraphModule(root, graph, class_name=type(model).__name__)
    mirror_state(gm, model)
    return gm


def trace(model: torch.nn.Module, *, concrete_args: dict | None = None) -> SLLGraphModule:
    """Trace ``model`` into a new GraphModule with the same parameters, buffers and state_dict keys.

    Raises :class:`TraceError` (naming the innermost failing submodule) when any part of it
    cannot be traced, an ``autograd.Function`` included; see :func:`trace_with_fallback`.
    """
    _check_module(model)
    return _trace(model, concrete_args)


def trace_with_fallback(model: torch.nn.Module, *, concrete_args: dict | None = None, keep=()
                        ) -> tuple[nn.Module, list[OpaqueModule]]:
    """Trace ``model``, keeping the parts that cannot be traced opaque (see the module docstring).

    Returns ``(result, opaque)``: ``result`` is an ``SLLGraphModule`` (or, when the model's own
    ``forward`` cannot be traced, a private copy of the model whose children are traced), with
    the model's parameters, buffers and ``state_dict()`` keys; ``opaque`` lists every opaque
    module, parents before their children.  ``model`` is never modified.  The modules in
    ``keep`` (a config's skipped submodules) stay leaves, exactly as they are, and are not listed.
    """
    _check_module(model)
    records: list[OpaqueModule] = []
    result = _trace_tree(model, concrete_args, "", [], records, {id(m): m for m in keep})
    return result, records


def _trace_tree(model: nn.Module, concrete_args, prefix: str, ancestry: list, records: list,
                keep: dict) -> nn.Module:
    """``model`` (at ``prefix`` in the top model, under the modules ``ancestry``) traced with fallback."""
    leaves: dict[int, tuple[nn.Module, str, str]] = {}
    while True:
        try:
            gm = _trace(model, concrete_args, [*keep.values(), *(m for m, _, _ in leaves.values())])
            break
        except TraceError as e:
            path = getattr(e, "sll_fallback_path", e.module_path)
            if path is None:
                raise
            if path == "":
                return _opaque(model, prefix, ancestry, e.reason, records, keep)
            m = model.get_submodule(path)
            if id(m) in leaves:  # a leaf that fails cannot be made more opaque
                raise
            leaves[id(m)] = (m, path, e.reason)
    if prefix:
        _relabel(gm, ancestry)
    order = {id(m): i for i, m in enumerate(model.modules())}
    user = {id(m) for _, m in model.named_modules(remove_duplicate=False)}
    for m, path, reason in sorted(leaves.values(), key=lambda t: order.get(id(t[0]), 0)):
        full = join(prefix, path)
        replacement = _opaque(m, full, ancestry + _chain(model, path, prefix), reason, records, keep)
        _install(gm, m, replacement, user)
    return gm


def _opaque(m: nn.Module, path: str, ancestry: list, reason: str, records: list, keep: dict) -> nn.Module:
    """A marked private copy of the opaque ``m`` whose children are traced (with fallback)."""
    records.append(OpaqueModule(path, type(m).__name__, reason))
    new = mark_opaque(private_copy(m), reason)
    read = child_attributes_read(m)
    for name, child in list(m._modules.items()):
        if child is None:
            continue
        child_path = join(path, name)
        child_ancestry = ancestry + [(child_path, type(child))]
        if name in read and _traceable(child):
            attrs = ", ".join(sorted(read[name]))
            new._modules[name] = _opaque(child, child_path, child_ancestry,
                                         f"its opaque parent {type(m).__name__} reads .{attrs} of it, which a "
                                         "traced GraphModule would not have", records, keep)
        else:
            new._modules[name] = _rewrite_child(child, child_path, child_ancestry, records, keep)
    return new


def _traceable(m: nn.Module) -> bool:
    """Would the fallback trace ``m`` (not a torch.nn leaf, has a forward)?"""
    torch_leaf = m.__module__.startswith(("torch.nn", "torch.ao.nn")) and not isinstance(m, nn.Sequential)
    return type(m).forward is not nn.Module.forward and not torch_leaf  # torch_leaf: fx's default leaves


def _rewrite_child(child: nn.Module, path: str, ancestry: list, records: list, keep: dict) -> nn.Module:
    """``child`` of an opaque module, with its discrete ops made traceable-and-rewritable."""
    if id(child) in keep:
        return child
    if type(child).forward is nn.Module.forward:  # a container (ModuleList, ModuleDict, ...): rewrite its items
        changed = {}
        for name, item in child._modules.items():
            if item is not None:
                item_path = join(path, name)
                new = _rewrite_child(item, item_path, ancestry + [(item_path, type(item))], records, keep)
                if new is not item:
                    changed[name] = new
        if not changed:
            return child
        new = private_copy(child)
        new._modules.update(changed)
        return new
    if not _traceable(child):  # torch.nn leaves: never traced into
        return child
    return _trace_tree(child, None, path, ancestry, records, keep)


def _chain(model: nn.Module, path: str, prefix: str) -> list:
    """``[(qualified name, type)]`` of the modules from ``model`` (exclusive) down to ``path``."""
    out, m, parts = [], model, path.split(".")
    for i, part in enumerate(parts):
        m = m._modules[part]
        out.append((join(prefix, ".".join(parts[:i + 1])), type(m)))
    return out


def _relabel(gm: fx.GraphModule, ancestry: list) -> None:
    """Give the nodes of a graph traced for a child the model's qualified names in ``nn_module_stack``."""
    prefix = ancestry[-1][0]
    head = [(p, (p, t)) for p, t in ancestry]
    for node in gm.graph.nodes:
        if node.op in ("placeholder", "output"):
            continue
        stack = node.meta.get("nn_module_stack") or {}
        node.meta["nn_module_stack"] = OrderedDict(
            head + [(join(prefix, k), (join(prefix, v[0]), *v[1:])) for k, v in stack.items()])


def _install(gm: nn.Module, old: nn.Module, new: nn.Module, user: set[int]) -> None:
    """Put ``new`` wherever a container that fx made for ``gm`` holds ``old`` (never in a user's module)."""
    for parent in list(gm.modules()):
        if id(parent) in user:
            continue
        for name, child in list(parent._modules.items()):
            if child is old:
                parent._modules[name] = new


def copy_graph_module(gm: fx.GraphModule) -> SLLGraphModule:
    """A GraphModule with a copy of ``gm``'s graph and the same parameters and buffers."""
    new = SLLGraphModule(gm, copy.deepcopy(gm.graph), class_name=type(gm).__name__)
    mirror_state(new, gm)
    return new


def source_of(node: fx.Node) -> str:
    """``file:line`` of the user code that created ``node`` (its innermost frame outside torch and sll_fx)."""
    frames = _FRAME.findall(node.stack_trace or "")
    for path, line in reversed(frames):
        if not path.startswith((_TORCH_DIR, _SLL_DIR)):
            return f"{os.path.basename(path)}:{line}"
    return ""


def module_of(node: fx.Node) -> str:
    """Qualified name of the submodule whose forward created ``node`` ("" for the top level)."""
    stack = node.meta.get("nn_module_stack") or {}
    if not stack:
        return ""
    path, _ = list(stack.values())[-1]
    return path

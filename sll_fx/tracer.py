"""Symbolic tracing for sll_fx: source lines recorded, failures pinned to a submodule, and
a fallback for models that do not trace as a whole.

``trace(model, concrete_args=None)`` returns a fresh ``GraphModule`` that shares every
parameter and buffer with ``model`` and leaves ``model`` itself untouched (``torch.fx`` would
otherwise store tensor literals as ``_tensor_constant*`` attributes on the model it traces, and
run every traced forward on the model's own submodules).
A model that cannot be traced raises :class:`~sll_fx.errors.TraceError` naming the innermost
submodule being traced when it failed, the reason and what to do.

``trace_with_fallback(model, concrete_args=None)`` never gives up on a whole model because
of one part (this is what ``linearize_module`` and ``export_hard`` use):

1. Trace; when the trace fails inside submodule ``p`` (the innermost one being traced),
   make ``p`` a leaf of the tracer (an *opaque* module: the graph calls it, its Python
   ``forward`` runs as written) and trace again, until the trace succeeds.  Only the modules
   that fail, or keep module state (below), are opaque, so the other blocks of the model are
   traced and rewritten.
2. For each opaque module, its own children are traced the same way, recursively, and the
   graph calls a private copy of the opaque module (:func:`sll_fx.opaque.private_copy`:
   the user's module is never edited) whose children are those GraphModules.  Children from
   ``torch.nn`` (``nn.Linear``, ...) stay as they are (torch is never traced into);
   containers without a ``forward`` (``nn.ModuleList``/``ModuleDict``) are copied with their
   items rewritten.  A child whose opaque parent reads one of its attributes or methods
   (``self.child.flag``), which a GraphModule would not have, is kept opaque as well, and so is an
   ``nn.Sequential`` (any child that can be iterated or indexed) that it iterates, indexes, slices or
   takes ``len()`` of (``for layer in self.seq``, ``self.seq[:2]``), with the sequences among the items of
   an ``nn.ModuleList`` it uses (``for blk in self.blocks: blk[0](x)``): kept as a ``Sequential`` whose
   items are rewritten; a ``torch.nn`` child it assigns to (``self.fc.last = x``) is a private copy.
3. When the model's *own* ``forward`` fails (not inside a submodule), the model itself is
   the opaque module: the result is then a private copy of the model (its own class, not a
   GraphModule) that calls its traced children, so their discrete ops are still rewritten.

**Module state.**  fx runs the ``forward`` of every module it traces into, so whatever a forward
assigns (a LIF neuron's ``self.v = self.v * decay + x``, ``self.calls += 1``, ``self.rate =
spike.mean()``) would land on the user's module (a Proxy at that), and the graph would drop the
update.  Every trace therefore runs on a :class:`~sll_fx.opaque.ShadowTree`: private copies of the
model's modules, sharing their parameters and buffers, so that nothing a forward assigns reaches
the user's modules, also when the call raises later (a hook or a buffer a forward registers where the user's
module has none, in a container the copy shares while it is empty, is removed when the trace ends); the
GraphModule gets the user's leaves and tensors back (:meth:`~sll_fx.opaque.ShadowTree.restore`) and
:func:`~sll_fx.state.mirror_state` maps its state onto the model's, as before.  After a trace, a module whose
copy changed (an attribute, buffer, parameter or child rebound, added or deleted; a list/dict/set/deque attribute
or a tensor attribute changed in place; a hook registered) is *stateful*: a graph cannot keep that
state, so ``trace`` raises and the fallback keeps it opaque with the reason ``"assigns self.v in
forward: module state a graph cannot keep"`` (``"changes self._memories ..."`` for in-place
changes), all stateful modules of one trace at once.  The change is put on the module whose
forward ran and whose copy changed, else on the nearest enclosing module whose forward ran
(``self.cell.h = h`` in a parent: the parent, "assigns self.cell.h"); a parent whose forward reads
such a module's state attribute (``self.lif.v``, which the graph would hold as a constant) is kept
opaque too.  The model itself may be stateful: it is then opaque, as when its own forward fails.
The opaque copy's state is the result's own, starting from the model's at the time of the call
(see :func:`sll_fx.opaque.private_copy`): the result and the model, each called on the same
inputs, compute the same outputs, and calling one never changes the other's state; tensors
(parameters, buffers, tensor attributes) stay shared, in-place updates of them included, and so does
the state deeper down (a list inside a dict attribute, a plain helper object's attributes, a module-level
container the forward names, a tensor in any of them or one the forward names as a module-level, closure or
class attribute, whose version counter tells an in-place update): a trace that changes such state makes the
module stateful as well (``"changes self.meter"``, ``"changes global FEATURES"``), and :meth:`~sll_fx.opaque.ShadowTree.restore_nested`
undoes what the trace did there.

Each opaque module is returned as an :class:`~sll_fx.report.OpaqueModule` record (qualified
name, class name, reason: the fx error as ``"Type: text"``, or the module state it changes).
Nodes of a graph traced for a child at ``block2.inner`` carry ``nn_module_stack`` entries with
qualified names from the top model (``block2``, ``block2.inner``, ...), so report entries,
per-submodule settings and ``module_of`` use the model's own names.  ``concrete_args`` applies to
the top-level trace.

**Parametrizations.**  ``torch.nn.utils.parametrize`` swaps the class of a parametrized module for a
subclass ``Parametrized<Cls>`` made in torch's namespace, which fx's default ``is_leaf_module`` would
take for a ``torch.nn`` leaf (and so leave the module's discrete ops silently hard).  The tracer
judges leaves by the class a module was created as (:func:`torch_leaf`, :func:`original_class`): a
user module with a parametrization is traced into, and so is its ``ParametrizationList`` (reading
``self.weight`` runs it: the graph reads ``parametrizations.weight.original`` and computes the
parametrization, whose discrete ops are rewritten like any other); a parametrized ``torch.nn``
module (``weight_norm`` on an ``nn.Linear``) stays a leaf.  Reports and errors name a parametrized
module by its original class.

**Train/eval mode.**  fx reads ``self.training`` as the Python bool it is at trace time, so a graph would
keep one mode's behaviour whatever ``train()``/``eval()`` says later.  While tracing, every module's
``training`` is a proxy of a ``get_attr("<path>.training")`` node (made on first use): used as a value
(``F.dropout(x, p, training=self.training)``, ``x * self.training``) the graph reads, when it runs, the
flag of the result's module at that path, so ``gm.train()``/``gm.eval()`` and a submodule's own
``gm.backbone.eval()`` act as on the model (a torch.nn leaf reads its own flag when the graph calls it;
a forward reading a leaf's flag as a value, ``self.bn.training``, reads it at trace time); a
branch on it (``if self.training:``, ``not self.training``, anything ``bool()`` of a value computed from
it) raises, and the fallback keeps that module opaque with the reason ``"branches on self.training: kept
opaque so it follows train()/eval()"``.  A node nothing reads is dropped.

**Grad mode and autocast.**  fx records a ``with torch.no_grad():`` block's ops but not the block.
The tracer traces with grad mode on, marks the nodes created while the forward had it off, and
:func:`sll_fx.grad_regions.cut` detaches every value crossing such a block's edge, so no gradient
crosses it, as in the model.  A ``torch.autocast`` block cannot be kept that way: the module whose
forward enters one is kept opaque (``"enters torch.autocast in forward: ..."``); so is one entering a
``torch.enable_grad``, ``torch.inference_mode`` or ``torch.set_grad_enabled`` block (``"enters torch.enable_grad
in forward: ..."``).  Every autocast block is seen as the trace runs, wherever the code entering it is: its entry
changes the autocast state or raises the autocast nesting (:func:`_autocast_state`, read at each node).  The grad
modes change nothing the trace sees (it runs with grad mode on), so :func:`sll_fx.scans.mode_scan` finds them in
the forward's code beforehand (a ``with`` block, a decorator of ``forward`` or of a method it names); and so is a
module whose forward draws from or seeds the CPU random generator while it is traced (``torch.rand(1)`` runs for
real and would be a constant; the generator's state is compared around the whole trace and restored after it; only
when it changed, the trace is made again comparing it around each traced module's call, which names the module).
A failure the trace raises inside a forward that catches it (``try: ... except Exception:``) keeps that forward opaque
(:meth:`SLLTracer._note`): its ``try`` runs as written.

**Hooks and overrides.**  fx traces a submodule through ``Module.__call__``, hooks included, once, on
proxies (a forward hook's side effects happen at trace time only; a backward hook is dropped), never runs
the model's own hooks or its own ``__call__``, and the result's ``train()`` is ``nn.Module``'s.  A module
with forward, forward pre-, backward or backward pre-hooks, or whose class overrides ``train()`` (a frozen
BatchNorm), and a model that overrides ``__call__`` (:func:`sll_fx.scans.behaviour_of`) is therefore kept
opaque with the reason ``"hooks registered (1 forward hook): kept opaque so it runs as written"``;
torch.nn leaves are called by the graph as they are, hooks and all.  A ``linearize_module(eps="auto")`` result that has not
calibrated yet is refused (``EpsError``): the graph would keep its placeholder eps.

**autograd.Function.**  ``torch.fx`` traces straight through ``Fn.apply(x)`` (the C++ apply
just calls ``Fn.forward`` with the proxies) and the custom backward is lost, silently.  The
tracer therefore never traces through one; the module whose ``forward`` calls it (the model
itself at the top level) is kept opaque with the reason ``"autograd.Function <Name>: kept
opaque so its backward survives"``, so at run time ``Fn.apply`` runs as written with its own
backward.  Two detectors, neither of which patches anything:

- before tracing through a module, a static scan of its ``forward`` code
  (:func:`sll_fx.scans.autograd_function_used`: names in the code, nested code included,
  resolved in its closure, globals, the module and its class, one or two attribute levels
  deep: ``STE.apply``, ``lib.STE.apply``, ``self.fn.apply``, ``ste = STE.apply``); this also
  catches a Function whose forward returns its input untouched, which leaves no trace at all;
- while tracing, :meth:`SLLTracer.create_node` looks for a frame of
  ``torch.autograd.Function.apply`` on the Python stack (below the tracer's own ``trace``
  frame), and any error raised while tracing is checked the same way; this catches a
  Function called from a helper function or from library code (``torch.utils.checkpoint``).

The static scan is conservative: a ``forward`` that only *references* a Function (a branch
not taken) is kept opaque too.  ``trace`` applies the same detection and raises.

**Activation checkpointing.**  ``torch.utils.checkpoint.checkpoint`` without reentrance calls no
Function: fx would record the checkpointed ops as plain ops, and the graph would keep for the backward
the activations the checkpoint recomputes.  ``create_node`` looks for its frame as for an ``apply`` frame
(the reentrant flavour meets ``CheckpointFunction.apply`` first; both read ``"calls
torch.utils.checkpoint"``).  Either frame belongs to the module whose ``forward`` made the call, not
to a leaf the checkpointed code calls: ``call_module`` passes the error on, unchanged, to the module
whose call encloses the frame, and that one is kept opaque (its checkpointed children are still rewritten).
"""

from __future__ import annotations

import copy
import ctypes
import dis
import functools
import inspect
import linecache
import os
import re
import sys
import types
from collections import OrderedDict
from dataclasses import dataclass, field

import torch
from torch import fx, nn
from torch.nn.utils import parametrize

from .errors import EpsError, TraceError
from . import dynamic, frozen, grad_regions, inputs
from .graph_module import SLLGraphModule
from .opaque import OUTSIDE, ShadowTree, join, mark_opaque, private_copy, sealed_reason
from .scans import (_MODULE_API, _PLAIN, Scans, _names_in, _referenced, _user_class, autograd_function_class,
                    autograd_function_used, behaviour_of, child_attributes_read, children_used_as_values, code_objects,
                    forward_of, function_of, mode_scan, sequence_like)
from .report import OpaqueModule
from .state import mirror_state

_TORCH_DIR = os.path.dirname(torch.__file__)
_SLL_DIR = os.path.dirname(__file__)
_FRAME = re.compile(r'File "([^"]+)", line (\d+)')
_APPLY_CODE = torch.autograd.Function.apply.__func__.__code__
#: the code of ``torch.utils.checkpoint.checkpoint`` (under torch's dynamo-disabling wrapper)
_CHECKPOINT_CODE = inspect.unwrap(torch.utils.checkpoint.checkpoint).__code__
#: the instance attribute of a linearize_module(eps="auto") result's calibration state (sll_fx.calibration._STATE)
_CALIBRATION_STATE = "_sll_calibration"
_MODULE_CALL = nn.Module.__call__  # (read at import: fx patches it while tracing)
_LIBRARY_DIRS = (_TORCH_DIR, _SLL_DIR)  # frames here are never the user's source line

_CONTROL_FLOW_FIX = ("Fix: make its forward traceable (no Python control flow on tensor values, no .item()/.tolist()),"
                     " or use the explicit ops (sll_fx.sign, ...) inside it; linearize_module keeps it opaque")


class _AutogradFunctionCall(Exception):
    """Raised inside a trace that reached an autograd.Function; becomes a TraceError.  ``frame``: its
    ``apply`` frame (None: found by the static scan of the forward that the trace was entering)."""

    def __init__(self, fn: type, frame=None):
        super().__init__(f"autograd.Function {fn.__name__}")
        self.fn, self.frame = fn, frame


class _CheckpointCall(Exception):
    """Raised inside a trace that reached ``torch.utils.checkpoint.checkpoint`` (``frame``: its frame); becomes a
    TraceError.  fx would record the checkpointed ops as plain ops: the activations the checkpoint does not
    keep for the backward would be kept."""

    def __init__(self, frame):
        super().__init__("torch.utils.checkpoint")
        self.frame = frame


def _is_checkpoint(fn: type) -> bool:
    """Is ``fn`` the autograd.Function of a reentrant ``torch.utils.checkpoint.checkpoint``?"""
    return fn.__module__ == "torch.utils.checkpoint"


def _encloses(frame, inner) -> bool:
    """Is ``frame`` ``inner`` or one of the frames ``inner`` was called from?"""
    while inner is not None:
        if inner is frame:
            return True
        inner = inner.f_back
    return False


def _autocast_state() -> tuple[bool, int]:
    """(is autocast on for a device, how many ``torch.autocast`` blocks this thread is in).  A block that turns
    autocast off where it is off already (``torch.autocast("cpu", enabled=False)``: a float32 island under the
    caller's bfloat16 autocast) changes only the second: its ``__enter__`` increments the nesting.  Reading the
    nesting is an increment and a decrement, which leave the thread's autocast state as it was."""
    level = _NESTING_UP()
    _NESTING_DOWN()
    return _AUTOCAST_ON(), level


# (what _autocast_state reads; SLLTracer.create_node reads them itself, once per node)
_NESTING_UP, _NESTING_DOWN = torch.autocast_increment_nesting, torch.autocast_decrement_nesting
_AUTOCAST_ON = torch._C._is_any_autocast_enabled


_GENERATOR = torch.default_generator  # (what torch.get_rng_state reads)


def _rng_state() -> bytes:
    """The CPU random generator's state (``torch.get_rng_state()``, a contiguous uint8 tensor), as bytes copied off its
    memory: a module call compares two (one before, one after), which bytes do in a fraction of ``torch.equal``'s time
    (and the copy takes half of ``.numpy().tobytes()``'s, with no numpy)."""
    state = _GENERATOR.get_state()  # (held while its memory is read)
    return ctypes.string_at(state.data_ptr(), state.numel())


class _AutocastRegion(Exception):
    """Raised inside a trace when the forward entered or left ``torch.autocast``; becomes a TraceError.
    ``outer``: raised as a module's call began, so the block is its caller's."""

    def __init__(self, outer: bool = False):
        super().__init__("torch.autocast block")
        self.outer = outer


class _ModeBlock(Exception):
    """Raised before tracing into a forward that enters a grad-mode block other than ``torch.no_grad``
    (``torch.enable_grad``, ``torch.inference_mode``, ``torch.set_grad_enabled``; a ``with`` block or a decorator),
    found in its code; becomes a TraceError."""

    def __init__(self, block: str):
        super().__init__(f"{block} block")
        self.block = block


class _RandomDraw(Exception):
    """Raised when a traced forward drew from or seeded the CPU generator at trace time; becomes a TraceError."""


class _DrawnSomewhere(Exception):
    """Raised by a trace that did not compare the CPU generator's state around each module's call
    (``SLLTracer(each_call=False)``) when the trace, ending or failing, left it changed: :func:`_trace` traces again,
    comparing it around each call, which names the module that drew and raises as that trace does."""


class _TrainingBranch(Exception):
    """Raised inside a trace that branched on ``self.training``; becomes a TraceError."""


def original_class(m: nn.Module) -> type:
    """The class ``m`` was created as: a parametrization (``torch.nn.utils.parametrize``) swaps a
    module's class for a subclass ``Parametrized<Cls>`` made in torch's namespace."""
    if type(m).__module__ == parametrize.__name__ and parametrize.is_parametrized(m):
        return parametrize.type_before_parametrizations(m)
    return type(m)


_TORCH_NN = ("torch.nn", "torch.ao.nn")


@functools.lru_cache(maxsize=512)
def _torch_class(cls: type) -> bool:
    """Is ``cls`` a ``torch.nn``/``torch.ao.nn`` class, not ``Sequential`` (what :func:`torch_leaf` reads of a class
    that parametrize did not make: once per class, a model of many blocks asks it of each module)?"""
    return cls.__module__.startswith(_TORCH_NN) and not issubclass(cls, nn.Sequential)


def torch_leaf(m: nn.Module) -> bool:
    """Is ``m`` one of fx's default leaves (a ``torch.nn``/``torch.ao.nn`` module, not ``Sequential``),
    judged by its original class?  A parametrized user module is traced into; so is a torch.nn module
    with a parametrization of the user's (a binarizing ``torch.sign`` on an ``nn.Linear``'s weight:
    the BNN spelling), whose ``self.weight`` the trace then records as the parametrization's ops; one
    parametrized by torch alone (``weight_norm`` on an ``nn.Linear``) is a leaf.  A ``ParametrizationList``
    (``module.parametrizations.weight``, reached only inside a module that is traced into) is traced
    into as well: the parametrizations it calls are the user's code, with their own discrete ops, or
    torch.nn leaves themselves."""
    cls = type(m)
    if cls.__module__ == parametrize.__name__:  # (a ParametrizationList; a parametrized module's swapped class, a
        if isinstance(m, parametrize.ParametrizationList) or not _torch_class(original_class(m)):  # subclass of its
            return False                                                                          # original)
    elif not _torch_class(cls):
        return False
    plists = m._modules.get("parametrizations")  # (parametrize.is_parametrized, without a failing getattr)
    return not isinstance(plists, nn.ModuleDict) or all(type(p).__module__.startswith("torch.") for plist in plists.values() for p in plist)


def _hidden_files() -> frozenset[str]:
    """Files outside torch whose frames fx leaves out of a recorded stack trace (``"<string>"``)."""
    from torch.fx.experimental.symbolic_shapes import uninteresting_files

    return frozenset(f for f in uninteresting_files() if not f.startswith(_LIBRARY_DIRS))


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


_TRAINING_REASON = "branches on self.training: kept opaque so it follows train()/eval()"
_CHECKPOINT_REASON = "calls torch.utils.checkpoint: kept opaque so its activations are recomputed in the backward"


def _autograd_reason(fn: type) -> str:
    return f"autograd.Function {fn.__name__}: kept opaque so its backward survives"


def _leaf_call_failure(e: BaseException, path: str, module: nn.Module, caller: str) -> TraceError:
    """The TraceError for the call of a leaf (a torch.nn module, or one kept opaque) at ``path`` that fx could not
    record (an argument a graph cannot hold: a config object): the caller (at ``caller``) is kept opaque."""
    kind = original_class(module).__name__
    first = str(e).splitlines()[0] if str(e) else ""
    where = f"submodule '{caller}'" if caller else "the model's forward"
    return TraceError(
        f"torch.fx cannot record the call of submodule '{path}' ({kind}) in {where}: {type(e).__name__}: {first} (an "
        "argument a graph cannot hold)\nFix: linearize_module keeps the caller opaque, so it runs as written and its "
        "child modules are still rewritten; or pass tensors and Python numbers only", module_path=caller,
        module_type=kind, reason=f"calls {path} with an argument a graph cannot hold ({type(e).__name__}): kept opaque")


@functools.lru_cache(maxsize=64)
def _trace_error_as(kind: type) -> type | None:
    """A TraceError class that is also ``kind`` (an exception class), or None where Python cannot combine them."""
    try:
        return type("TraceError", (TraceError, kind), {"__module__": TraceError.__module__,
                                                      "__qualname__": f"TraceError[{kind.__name__}]"})
    except TypeError:  # (an incompatible layout: OSError's, ...)
        return None


def _keeping_type(err: TraceError, e: BaseException) -> BaseException:
    """``err`` (the TraceError for a child that raised ``e``) as an instance of ``type(e)`` too: a forward's own
    ``except NotImplementedError:`` around the call (a fast path that raises at run time as well) catches it as it
    catches what the model raises, and that forward is kept opaque (:meth:`SLLTracer._note`).  Where no such class
    can be made (``OSError``'s ``__new__`` refuses one), ``e`` itself: the tracer raises it on as it is, and ``err``
    where nothing caught it (``SLLTracer._sll_carried``)."""
    kind = type(e)
    if isinstance(err, kind) or not issubclass(kind, Exception) or kind.__module__.startswith("torch.fx"):
        return err
    cls = _trace_error_as(kind)
    try:
        new = cls.__new__(cls, *err.args) if cls is not None else None
    except TypeError:  # (OSError's __new__ refuses such a class: "not safe")
        new = None
    if new is None:
        return e
    new.args, new.__dict__ = err.args, {**e.__dict__, **err.__dict__}  # (the child's attributes too: e.device)
    return new



def _caught(e: BaseException, path: str, module: nn.Module) -> TraceError:
    """The TraceError for a module (at ``path``) whose forward caught ``e``, raised while tracing inside it."""
    if isinstance(e, (_AutocastRegion, _ModeBlock, _RandomDraw, _TrainingBranch, _CheckpointCall, _AutogradFunctionCall,
                      dynamic.BlockTraced)):  # (a signal of this trace: its own reason, for the module that caught it)
        return _failure(e, path, module)
    kind = original_class(module).__name__
    where = f"submodule '{path}' ({kind})" if path else f"the forward of {kind}"
    inner = e.reason.split(": kept opaque")[0] if isinstance(e, TraceError) and e.reason else \
        f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
    inner = inner if len(inner) <= 80 else inner[:77] + "..."
    return TraceError(
        f"torch.fx would trace {where} along the fallback of a try/except: tracing raised inside it ({inner}), and "
        "its forward caught that\nFix: linearize_module keeps it opaque, so its try/except runs as written and its "
        "child modules are still rewritten", module_path=path, module_type=kind,
        reason=f"catches what tracing raised inside it ({inner}): kept opaque so its try/except runs as written")


_AUTOCAST_INIT = torch.amp.autocast_mode.autocast.__init__.__code__


def _raised_by(e: BaseException, code) -> bool:
    """Was ``e`` raised inside the function whose code is ``code`` (a frame of its traceback)?"""
    tb = e.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code is code:
            return True
        tb = tb.tb_next
    return False


def _failure(e: BaseException, path: str, module: nn.Module) -> TraceError:
    """The TraceError for ``e`` raised while tracing ``module`` (at ``path``; "" for the top level)."""
    kind = original_class(module).__name__
    where = f"submodule '{path}' ({kind})" if path else f"the forward of {kind}"
    if _raised_by(e, _AUTOCAST_INIT):  # (torch.autocast(device_type=x.device.type): a traced device type)
        e = _AutocastRegion()
    if isinstance(e, _RandomDraw):
        return TraceError(
            f"torch.fx ran {where} with the random generator for real: it draws random numbers with no traced "
            "input (torch.rand(1), torch.randn(3)) or seeds the generator (torch.manual_seed) in forward; a graph "
            "would keep that draw as a constant, or drop the seeding\nFix: linearize_module keeps it opaque, so it "
            "draws anew on every call and its child modules are still rewritten; to have its own discrete ops "
            "rewritten, draw from a traced tensor (torch.rand_like(x), torch.rand(x.shape))",
            module_path=path, module_type=kind,
            reason="draws from or seeds the random generator while tracing: kept opaque so it draws on every call")
    if isinstance(e, _AutocastRegion):
        return TraceError(
            f"torch.fx would trace {where} without its torch.autocast block (a graph records the ops, not the "
            "autocast state, and would run them in the input dtypes)\nFix: linearize_module keeps it opaque, so "
            "it runs under autocast as written and its child modules are still rewritten; or wrap the call of the "
            "linearized model in torch.autocast instead", module_path=path, module_type=kind,
            reason="enters torch.autocast in forward: kept opaque so it runs under autocast")
    if isinstance(e, _ModeBlock):
        return TraceError(
            f"torch.fx would trace {where} without its {e.block} block (a graph records the ops, not the grad mode: "
            "called under torch.no_grad() or torch.inference_mode(), it would not run them in the block's mode)\n"
            "Fix: linearize_module keeps it opaque, so it runs in the block's grad mode as written and its child "
            "modules are still rewritten; or set the grad mode around the call of the linearized model instead",
            module_path=path, module_type=kind,
            reason=f"enters {e.block} in forward: kept opaque so it runs in that grad mode")
    if isinstance(e, _CheckpointCall) or (isinstance(e, _AutogradFunctionCall) and _is_checkpoint(e.fn)):
        return TraceError(
            f"torch.fx would trace {where} through torch.utils.checkpoint: a graph records the checkpointed ops "
            "as plain ops, which keep their activations for the backward (the memory the checkpoint saves)\nFix: "
            "linearize_module keeps it opaque, so the checkpoint runs as written and the checkpointed child modules "
            "are still rewritten; or checkpoint the call of the linearized model instead",
            module_path=path, module_type=kind, reason=_CHECKPOINT_REASON)
    if isinstance(e, dynamic.BlockTraced):
        return TraceError(
            f"torch.fx would trace {where} through its {e.block!r} block, and linearize_module would rewrite the "
            "block's ops with its own eps and mode\nFix: linearize_module keeps it opaque, so the block runs as "
            "written (its eps and mode) and its child modules are still rewritten; or remove the block to have "
            "linearize_module rewrite those ops", module_path=path, module_type=kind,
            reason=f"enters {e.block!r}: {dynamic.BLOCK_KEPT}")
    if isinstance(e, _TrainingBranch):
        return TraceError(
            f"torch.fx would trace {where} in one mode only: its forward branches on self.training (a graph keeps "
            "the branch it was traced in, whatever train()/eval() says later)\nFix: linearize_module keeps it opaque, "
            "so it follows train()/eval() and its child modules are still rewritten; for its own discrete ops to be "
            "rewritten, use the flag as a value (F.dropout(x, p, training=self.training), x * self.training) or move "
            "the mode-dependent part into a child module", module_path=path, module_type=kind, reason=_TRAINING_REASON)
    fn = _autograd_function_of(e)
    if fn is not None:
        return TraceError(
            f"torch.fx would trace {where} through autograd.Function {fn.__name__} and lose its backward\n"
            "Fix: linearize_module keeps such a module opaque (trace_with_fallback); or call the Function "
            "from a submodule of its own", module_path=path, module_type=kind, reason=_autograd_reason(fn))
    line = _user_line(e)
    at = f" ({line})" if line else ""
    fix, hint = _CONTROL_FLOW_FIX, ""
    if isinstance(e, TypeError) and _FACTORY_CALL.match(str(e)):  # torch.zeros(x.shape[0], n): a Proxy in a size
        hint = "; a size from a traced tensor: write x.new_zeros((x.shape[0], n)) or torch.zeros_like(h)"
        fix = ("Fix: a size computed from a traced tensor cannot be given to a factory function torch.fx traces: "
               "write x.new_zeros((x.shape[0], n)) (new_ones, new_full, new_empty), torch.zeros_like(h), or "
               "torch.zeros(x.shape[0], n, device=x.device) inside a function wrapped with torch.fx.wrap; "
               "linearize_module keeps it opaque meanwhile")
    elif isinstance(e, TypeError) and str(e).startswith(("torch.finfo()", "torch.iinfo()")):  # finfo(x.dtype)
        hint = "; torch.finfo of a traced tensor's dtype: name the dtype, torch.finfo(torch.float32), or a number"
        fix = ("Fix: a traced tensor's dtype is not known while torch.fx traces, so torch.finfo(x.dtype) fails: name "
               "the dtype (torch.finfo(torch.float32).min, torch.finfo(torch.float16).min for every float type) or "
               "write a number (-1e4, float('-inf')); linearize_module keeps it opaque meanwhile")
    elif isinstance(e, TypeError) and str(e).endswith("object cannot be interpreted as an integer"):  # range(T)
        hint = ("; a traced value used as a Python int (range(x.shape[0]), range(n) of a tensor n): make it a "
                "constant the module holds (range(self.T))")
        fix = ("Fix: a traced tensor's size or value is not a Python int while torch.fx traces, so range(x.shape[0]) "
               "fails: "
               "make the length a constant the module holds (self.T = T in __init__, range(self.T)); "
               "linearize_module keeps it opaque meanwhile")
    return TraceError(f"torch.fx cannot trace {where}: {type(e).__name__}: {e}{at}\n{fix}",
                      module_path=path, module_type=kind, reason=f"{type(e).__name__}: {e}{at}{hint}")


#: torch.fx's error for a factory function (torch.zeros, ...) given a traced size (x.shape[0]): its TypeError
_FACTORY_CALL = re.compile(r"(zeros|ones|empty|full|rand|randn|randint|arange|eye|tensor)\(\) takes \d+ positional")


def _user_line(e: BaseException) -> str:
    """``file.py:12`` of the innermost frame of ``e``'s traceback outside torch and sll_fx (the user's line), or ""."""
    tb, found = e.__traceback__, ""
    while tb is not None:
        name = tb.tb_frame.f_code.co_filename
        if not name.startswith(_LIBRARY_DIRS) and not name.startswith("<"):
            found = f"{os.path.basename(name)}:{tb.tb_lineno}"
        tb = tb.tb_next
    return found


#: a module's hook dicts that :func:`sll_fx.scans.hooks_of` reads
_HOOK_ATTRS = ("_forward_pre_hooks", "_forward_hooks", "_backward_pre_hooks", "_backward_hooks")


def _own_nothing(module: nn.Module, klass: type) -> tuple | None:
    """``(forward, the names its code reads)`` when nothing of ``module``'s own can change what
    :func:`_check_traceable` answers for a module of its class: no forward, hooks or calibration state set on the
    instance, and only plain values (:data:`sll_fx.scans._PLAIN`) among the instance attributes its forward names (what
    :func:`sll_fx.scans._own_scanned` looks through); else None."""
    state = module.__dict__
    if "forward" in state or state.get(_CALIBRATION_STATE) is not None:
        return None
    for attr in _HOOK_ATTRS:
        if state.get(attr, True):  # (one registered, or no dict at all: the whole check)
            return None
    fn = function_of(getattr(klass, "forward", None))
    if fn is None:
        return None
    names = _names_in(fn.__code__)
    # (the types of the instance's values at those names, in one C-level pass)
    if not _PLAIN.issuperset(map(type, map(state.__getitem__, filter(state.__contains__, names)))):
        return None
    return fn, names


def _check_traceable(module: nn.Module, path: str, root: bool = False, scans: Scans | None = None) -> None:
    """What is refused before a trace goes into ``module`` (the model itself: ``root``): an uncalibrated
    eps="auto" model, hooks and overrides (``behaviour_of``), an autograd.Function its forward calls.
    ``scans``: the trace's memo of code scans; with it, a submodule of a class one has passed already, with nothing of
    its own that could change the answer (:func:`_own_nothing`: the rest depends on its class and forward alone), is
    not checked again (a model of many blocks of one class)."""
    own = None
    if scans is not None and not root:
        klass = type(module)
        own = _own_nothing(module, klass)
        if own is not None and scans.references.get(("passed", klass)) is own[0]:
            return
    _check_calibrated(module, path)
    sealed = sealed_reason(module)
    if sealed is not None:
        raise TraceError(f"torch.fx cannot trace submodule '{path}' ({type(module).__name__}): it is {sealed}",
                         module_path=path, module_type=type(module).__name__, reason=sealed)
    read, entered = mode_scan(module, scans)
    what = behaviour_of(module, root=root, scans=scans, modes=read)
    if what:
        raise _behaviour_failure(module, path, what)
    if entered:  # (a block that turns autocast off, or grad on, changes nothing the trace sees as it runs)
        raise _AutocastRegion() if entered[0] == "torch.autocast" else _ModeBlock(entered[0])
    fn = autograd_function_used(module, scans)
    if fn is not None:
        raise _AutogradFunctionCall(fn)
    if own is not None:
        scans.references[("passed", klass)] = own[0]


def _check_calibrated(module: nn.Module, path: str) -> None:
    """Refuse to trace into a ``linearize_module(eps="auto")`` result that has not calibrated yet: the
    graph would keep its placeholder eps and drop the hook that calibrates them."""
    from .calibration import is_calibrating

    if is_calibrating(module):
        where = f"submodule '{path}'" if path else "the model"
        raise EpsError(f"cannot trace {where}: it is a linearize_module(eps=\"auto\") result that has not "
                       "calibrated its eps yet (a trace would keep its placeholder eps and drop the hook that "
                       "calibrates them)\nFix: run one batch through it first, or sll_fx.calibrate(module, x), or "
                       "linearize it with a fixed eps")


def _depends_on(node: fx.Node, sources: set, limit: int = 64) -> bool:
    """Is one of ``sources`` ``node`` or among its inputs (transitively; the first ``limit`` nodes looked at)?"""
    seen, stack = set(), [node]
    while stack and len(seen) < limit:
        n = stack.pop()
        if n in sources:
            return True
        if n not in seen:
            seen.add(n)
            stack.extend(n.all_input_nodes)
    return False


def _behaviour_failure(module: nn.Module, path: str, what: str) -> TraceError:
    """The TraceError for a module that does something around its forward (``behaviour_of``) that the
    trace would lose."""
    kind = original_class(module).__name__
    where = f"submodule '{path}' ({kind})" if path else f"the forward of {kind}"
    return TraceError(
        f"torch.fx would trace {where} without what it does around its forward: {what}. A trace runs a "
        "submodule's forward hooks once, on proxies (their side effects, such as appending the output to a list, "
        "happen then and never again), keeps no backward hook, never runs the model's own hooks or __call__, and "
        "the result's train() is nn.Module's\nFix: linearize_module keeps it opaque, so it runs as written and "
        "its child modules are still rewritten; for its own discrete ops to be rewritten, remove the hooks "
        "before linearizing (register the model's own on the result) or the override",
        module_path=path, module_type=kind, reason=f"{what}: kept opaque so it runs as written")


class _Proxy(fx.Proxy):
    """fx's Proxy, whose attribute reads (``h.T``) remember the grad mode they were written in.  (Not its ``len()``
    failure: torch's indexing tries ``len`` on an index and catches what it raises, from no frame of its own.)"""

    def __init__(self, node: fx.Node, tracer=None) -> None:
        if tracer is None:  # (fx's own default: a tracer that appends to the node's graph)
            super().__init__(node, tracer)
            return
        state = self.__dict__  # what fx's __init__ sets, without a __setattr__ call per attribute (two per node)
        state["tracer"], state["node"] = tracer, node

    def __getattr__(self, k: str) -> "_Attribute":
        return _Attribute(self, k)

    def __setattr__(self, k: str, value) -> None:
        """A write to a traced tensor's attribute (``self.scale.data = v``, a buffer read as a Proxy) would land on
        the Proxy, not in the graph: it fails, as torch's own ``.data =`` with a Proxy does, and the module is kept
        opaque (its forward runs as written)."""
        if k in ("tracer", "node") or k.startswith("_"):  # (fx's own; not h.tag = 2.0, which Python code outside the
            return object.__setattr__(self, k, value)     # graph, an opaque child, may read)
        fix = {"data": "write the tensor in place instead: .copy_(value)",
               "requires_grad": "call .requires_grad_(flag) instead"}.get(
            k, "leave it to code outside forward" if hasattr(torch.Tensor, k) else "keep the value in a Python variable")
        raise TypeError(f"cannot trace setting .{k} of the traced tensor '{self.node.name}': a graph records no "
                        f"attribute writes ({fix})")


class _Flag(fx.Proxy):
    """A traced module's ``training`` while tracing: a ``get_attr("<path>.training")`` node, made when the flag is
    first used (most forwards never read it: no node for them).  ``module``, ``flag``: the module whose ``training``
    it is meanwhile, and the flag to put back when the trace ends."""

    def __init__(self, tracer: "SLLTracer", target: str, module: nn.Module, flag) -> None:
        self.tracer, self._sll_target, self._sll_node = tracer, target, None
        self._sll_module, self._sll_flag = module, flag

    @property
    def node(self) -> fx.Node:
        if self._sll_node is None:
            self._sll_node = self.tracer.create_proxy("get_attr", self._sll_target, (), {}).node
            self.tracer._sll_flag_nodes.add(self._sll_node)
        return self._sll_node

    def __repr__(self) -> str:
        return f"Proxy({self._sll_target})"


class _Attribute(fx.proxy.Attribute):
    """fx makes an attribute read's node when it is first used, which may be after the ``torch.no_grad()``
    block that read it, or inside a block after it was read: the node gets the grad mode of the read."""

    def __init__(self, root: fx.Proxy, attr: str) -> None:
        super().__init__(root, attr)
        self._sll_grad = torch.is_grad_enabled()

    @property
    def node(self) -> fx.Node:
        if self._node is None:
            tracer = self.tracer
            outer, tracer._sll_attribute_grad = tracer._sll_attribute_grad, self._sll_grad
            try:
                self._node = self.tracer.create_proxy("call_function", getattr, (self.root, self.attr), {}).node
            finally:
                tracer._sll_attribute_grad = outer
        return self._node


def _names_training(module: nn.Module, memo: dict) -> bool:
    """Does the module's ``forward`` (nested code included) name an attribute ``training``: a read of a child's
    flag, ``self.bn.training``, maybe (a name test, cheap: the flags it leads to are made only when used).
    ``memo``: forward function -> the answer (one test per function of the modules flagged, not per module)."""
    fn = forward_of(module)
    if fn is None:
        return False
    found = memo.get(fn)
    if found is None:
        found = memo[fn] = any("training" in c.co_names for c in code_objects(fn.__code__))
    return found


class SLLTracer(fx.Tracer):
    """``fx.Tracer`` with source lines recorded, a record of the submodule being traced, the modules
    in ``opaque`` kept as leaves, and no tracing through an ``autograd.Function``.

    Source lines: instead of fx's ``record_stack_traces`` (a symbolized traceback of the whole
    stack per node, formatted as text), :meth:`create_node` walks the Python frames once (it walks
    them anyway, looking for ``Function.apply``) and records, as the node's ``stack_trace``, the
    one frame that :func:`source_of` reads from fx's: the innermost frame outside torch and sll_fx
    (and outside the files fx filters out), when a frame named ``forward`` encloses it.  The text
    has fx's format (``File "<path>", line <n>, in <function>`` and the code line).
    """

    def __init__(self, opaque=(), shadows: ShadowTree | None = None, each_call: bool = True):
        super().__init__()
        # (compare the CPU generator's state around each traced module's call; without, around the whole trace only,
        # raising _DrawnSomewhere when it changed: two reads of it per module call measured ~2% of a many-module trace)
        self.sll_each_call = each_call
        self.proxy_buffer_attributes = True  # buffers are graph inputs: never folded into constants
        self.sll_scope: list[tuple[str, str]] = []  # (qualified name of the call, class name) of the modules entered
        self._sll_parents: list[nn.Module] = []      # those modules
        self._sll_path: tuple | None = None          # (module, the name of the call fx's call_module is about to make)
        self._sll_leaf: tuple | None = None          # (module, whether it is a leaf: what fx's call_module asks next)
        self.sll_opaque = {id(m) for m in opaque}
        self.sll_shadows = shadows               # the private copies traced instead of the user's modules
        self.sll_entered: set[int] = set()       # ids of the modules whose forward the trace ran
        self.sll_constants: set[str] = set()     # attribute names fx gave its constants on the root
        self.sll_paths: dict[int, str] = {}      # id(module of the root) -> its first qualified name (fx's walk)
        self._sll_base = None
        self._sll_users: dict = {}               # file name -> is it user code (not torch, sll_fx, ...)
        self._sll_texts: dict = {}               # (file, line, function) -> stack_trace text
        self._sll_positions: dict = {}           # code -> {instruction offset -> stack_trace text}
        self._sll_hidden = _hidden_files()
        self._sll_outside: tuple[bool, str | None] = (False, None)
        self._sll_flags: list[_Flag] = []        # the _Flags the modules' .training are meanwhile
        self._sll_flag_nodes: set = set()        # the get_attr("<path>.training") nodes made
        self._sll_autocast = (False, 0)          # the autocast state when the trace began (_autocast_state)
        self._sll_no_grad: list[fx.Node] = []    # the nodes created while grad mode was off
        self._sll_attribute_grad: bool | None = None  # the grad mode of the attribute read being made
        self.sll_scans = Scans()                 # the code scans of the modules traced into, memoized
        self._sll_last: tuple | None = None      # (a user frame, a forward frame outside it, _sll_positions of its
        #                                          code): see _frames
        self._sll_beyond = None                  # the frame that called trace(), while it runs
        self._sll_pending: Exception | None = None  # the last failure raised inside the trace (_note)
        self._sll_noted = 0                      # how many _note has seen (a failure raised inside a call: changed)
        self._sll_caught: Exception | None = None  # the TraceError of the module that caught _sll_pending
        self._sll_carried: dict = {}             # id(a child's exception raised on as it is) -> (it, its TraceError)

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        known = self._sll_leaf
        if known is not None and known[0] is m:  # (call_module's answer for the call fx's call_module is making)
            self._sll_leaf = None
            return known[1]
        return id(m) in self.sll_opaque or torch_leaf(m)  # (fx's default, by the original class)

    def trace(self, root, concrete_args=None):
        self._sll_base = sys._getframe()  # (not held in a local: this frame would then hold itself, a cycle
        # keeping the caller's frames, the shadow tree among their locals, until the collector's next full pass)
        self._sll_beyond = self._sll_base.f_back  # (the caller's frame: a walk that reaches it is outside the trace)
        self._sll_outside = self._outside(self._sll_base)
        self.sll_entered = {id(root)}
        self._sll_autocast = _autocast_state()
        self._sll_pending = self._sll_caught = None
        self._sll_no_grad: list[fx.Node] = []
        rng = torch.get_rng_state()
        traced = dynamic.TRACED.set(True)  # (a sll_fx.linearize block entered now raises: see _failure)
        try:
            try:
                with torch.enable_grad():  # (a forward's no_grad blocks are told from the rest by the grad mode)
                    graph = super().trace(root, concrete_args)
            except Exception as e:  # (a draw before the failure: the trace comparing around each call raises first)
                if not self.sll_each_call and not torch.equal(rng, torch.get_rng_state()):
                    raise _DrawnSomewhere() from e
                raise
            if not self.sll_each_call and not torch.equal(rng, torch.get_rng_state()):
                raise _DrawnSomewhere()
            if self._sll_pending is not None:  # (a forward caught it and went on: see _note)
                raise self._sll_caught or _caught(self._sll_pending, "", root)
            if not torch.equal(rng, torch.get_rng_state()):
                raise _RandomDraw()
        finally:
            dynamic.TRACED.reset(traced)
            torch.set_rng_state(rng)  # (tracing never moves the caller's random stream)
            self._sll_base = self._sll_beyond = self._sll_last = None
            for proxy in self._sll_flags:  # (a bool again, unless the forward assigned it: then state)
                state = proxy._sll_module.__dict__
                if state.get("training") is proxy:
                    state["training"] = proxy._sll_flag
            self._sll_flags = []
        for node in self._sll_flag_nodes:
            if not node.users:  # (read, but only to be branched on or assigned: not in the graph)
                graph.erase_node(node)
        self._sll_flag_nodes = set()
        grad_regions.cut(graph, self._sll_no_grad)
        return graph

    def proxy(self, node: fx.Node) -> fx.Proxy:
        return _Proxy(node, self)

    def create_args_for_root(self, root_fn, is_module, concrete_args=None):
        out = super().create_args_for_root(root_fn, is_module, concrete_args)
        if is_module:
            # every traced module's .training reads, when the graph runs, the flag of the result's module at the
            # same path (F.dropout(x, training=self.training) follows train()/eval(), also a submodule's own:
            # model.backbone.eval()); a branch on it is refused (to_bool).  The modules: the trace's private
            # copies, or the root's (fx's retrace when a GraphModule unpickles)
            # (fx's walk, which fx drops when the trace ends: each module's first name; kept for _trace)
            self.sll_paths = paths = {id(m): path for m, path in self.submodule_paths.items()}
            shadows = self.sll_shadows is not None
            modules = self.sll_shadows.copies if shadows else list(self.root.modules())
            flagged: set[int] = set()
            names: dict = {}  # (_names_training's memo)

            def flag(m: nn.Module) -> None:
                path = paths.get(id(m))
                if path is not None and "training" in m.__dict__ and id(m) not in flagged:
                    flagged.add(id(m))
                    proxy = _Flag(self, f"{path}.training" if path else "training", m, m.__dict__["training"])
                    self._sll_flags.append(proxy)
                    m.__dict__["training"] = proxy

            for m in modules:  # (not a torch.nn leaf: the graph calls it, and it reads its own flag then; a flag
                # each on thousands of leaves measured +0.1x of the pass in many-module models.  A retrace
                # (unpickling) meets fx's containers only, of class nn.Module: each gets its flag)
                if not (shadows and torch_leaf(m)):
                    flag(m)
                    if shadows and _names_training(m, names):  # (self.drop.training, self.bn.training: its leaves' too)
                        for child in m._modules.values():
                            if child is not None and torch_leaf(child):
                                flag(child)
        return out

    def to_bool(self, obj):
        node = obj.node  # (a _Flag makes its node now)
        if self._sll_flag_nodes and _depends_on(node, self._sll_flag_nodes):
            raise self._note(_TrainingBranch())
        try:
            return super().to_bool(obj)
        except Exception as e:  # (fx's "cannot be used as inputs to control flow": a forward may catch it)
            raise self._note(e)

    def iter(self, obj):
        try:
            return super().iter(obj)
        except Exception as e:
            raise self._note(e)

    def keys(self, obj):
        try:
            return super().keys(obj)
        except Exception as e:
            raise self._note(e)

    def get_fresh_qualname(self, prefix: str) -> str:
        name = super().get_fresh_qualname(prefix)
        self.sll_constants.add(name)  # (fx sets it on the root: not the model's state)
        return name

    def _is_user(self, file: str) -> bool:
        user = self._sll_users[file] = not file.startswith(_LIBRARY_DIRS) and file not in self._sll_hidden
        return user

    def _text(self, file: str, line, function: str) -> str:
        """fx's stack-trace text for one frame (cached: a line of a loop makes many nodes)."""
        text = f'File "{file}", line {line}, in {function}'
        source = linecache.getline(file, line).strip() if isinstance(line, int) else ""
        if source:
            text += f"\n    {source}"
        self._sll_texts[(file, line, function)] = text
        return text

    def _outside(self, frame) -> tuple[bool, str | None]:
        """(is there a ``forward`` frame from ``frame`` outwards, the text of the innermost user frame
        there when a ``forward`` frame encloses it)."""
        user, forward, any_forward = None, False, False
        while frame is not None:
            code = frame.f_code
            is_forward = code.co_name == "forward"
            any_forward = any_forward or is_forward
            if user is None and self._is_user(code.co_filename):
                user = frame
            if user is not None and is_forward:
                forward = True
            frame = frame.f_back
        if user is None or not forward:
            return any_forward, None
        return any_forward, self._text(user.f_code.co_filename, user.f_lineno, user.f_code.co_name)

    def create_node(self, kind, target, args, kwargs, name=None, type_expr=None):
        # one walk to trace(): an autograd.Function.apply frame, and the innermost user frame with whether a
        # ``forward`` frame encloses it.  From the third frame out: the first two are fx's (create_proxy and
        # what called it: a Proxy operator, __torch_function__, call_module), and a frame looked at is a
        # frame object made, two per node (their collection costs more than the walk); the whole way
        # when that walk does not meet trace() (the output node, made by trace() itself)
        try:
            frame = sys._getframe(3)
        except ValueError:  # (a shallower stack)
            frame = None
        last = self._sll_last
        if last is not None and frame is last[0]:  # (the user frame of the node before, met first: the walk's
            user, forward = frame, frame.f_code.co_name == "forward" or last[1]  # answer, without the walk)
        else:
            found = self._frames(frame) if frame is not None else None
            user, forward = found if found is not None else self._frames(sys._getframe(1)) or (None, False)
        node = super().create_node(kind, target, args, kwargs, name, type_expr)
        meta = node.meta
        made = self._sll_attribute_grad  # (an attribute read made now: the grad mode where it was written)
        if not (torch.is_grad_enabled() if made is None else made):
            self._sll_no_grad.append(node)  # (a torch.no_grad() block: grad_regions.cut)
        level = _NESTING_UP()  # (_autocast_state, inline: a call and a tuple less per node)
        _NESTING_DOWN()
        began = self._sll_autocast
        if level != began[1] or _AUTOCAST_ON() != began[0]:
            raise self._note(_AutocastRegion())
        if not meta.get("stack_trace"):  # (fx may have set one from preserved node metadata)
            if user is None:
                text = self._sll_outside[1]
            elif forward or self._sll_outside[0]:
                last = self._sll_last  # (the user frame's code's texts, by instruction offset: no (code, offset) tuple
                # hashed per node, a code object's hash reads its names and constants)
                texts = last[2] if last is not None and last[0] is user else \
                    self._sll_positions.setdefault(user.f_code, {})
                text = texts.get(user.f_lasti)  # (its line, not worked out again: a line makes many nodes)
                if text is None:
                    code = user.f_code
                    key = (code.co_filename, user.f_lineno, code.co_name)
                    text = texts[user.f_lasti] = self._sll_texts.get(key) or self._text(*key)
            else:
                text = None
            if text:
                meta["stack_trace"] = text  # what the node.stack_trace setter does
        return node

    def _frames(self, frame) -> tuple | None:
        """(the innermost user frame from ``frame`` out to trace(), or None; whether a ``forward`` frame is it or
        encloses it), None when the walk ends without meeting trace().  Raises for an autograd.Function.apply
        frame on the way.  What is outside a user frame does not change while it runs: the walk from the user
        frame of the node before (a forward making many nodes) is not made again."""
        base, beyond, users, user, outer_forward = self._sll_base, self._sll_beyond, self._sll_users, None, False
        while frame is not None and frame is not base:
            if frame is beyond:  # (outside trace() already: the caller's frames, an apply frame among them, are not
                return None      #  the trace's; the whole walk is made then)
            code = frame.f_code
            if code is _APPLY_CODE:
                fn = autograd_function_class(frame.f_locals.get("cls"))
                if fn is not None:
                    raise self._note(_AutogradFunctionCall(fn, frame))
            elif code is _CHECKPOINT_CODE:
                raise self._note(_CheckpointCall(frame))
            if user is None:
                is_user = users.get(code.co_filename)
                if is_user is None:
                    is_user = self._is_user(code.co_filename)
                if is_user:
                    user = frame
                    last = self._sll_last
                    if last is not None and last[0] is frame:
                        return frame, code.co_name == "forward" or last[1]
            elif code.co_name == "forward":
                outer_forward = True
            frame = frame.f_back
        if frame is None:
            return None
        if user is None:
            return None, False
        # (held: the frame's id cannot be another's meanwhile)
        self._sll_last = (user, outer_forward, self._sll_positions.setdefault(user.f_code, {}))
        return user, user.f_code.co_name == "forward" or outer_forward

    def call_module(self, m, forward, args, kwargs):
        shadow = self.sll_shadows.shadow(m) if self.sll_shadows is not None else None
        if shadow is not None and shadow is not m:  # the user's module, reached other than as a child (a list)
            m, forward = shadow, functools.partial(_MODULE_CALL, shadow)
        try:
            path = self.path_of_module(m)
        except NameError as e:
            err = TraceError(f"cannot trace a {type(m).__name__} that is not a registered submodule: {e}. "
                             "Register it with add_module (or nn.ModuleList/ModuleDict)",
                             module_type=type(m).__name__, reason=f"calls an unregistered {type(m).__name__}")
            err.sll_fallback_path = self.sll_scope[-1][0] if self.sll_scope else ""  # the caller goes opaque
            raise err from e
        parent_path = self.sll_scope[-1][0] if self.sll_scope else ""
        if path.rpartition(".")[0] != parent_path:  # (a module shared with another parent, called through this one:
            parent = self._sll_parents[-1] if self._sll_parents else self.root  # named by the path of this call)
            name = next((n for n, c in parent._modules.items() if c is m), None)
            if name is not None:
                path = f"{parent_path}.{name}" if parent_path else name
        self.sll_scope.append((path, type(m).__name__))
        self._sll_parents.append(m)
        stack = len(self.module_stack)  # (fx pops its entry only when the call returns: see finally)
        try:
            leaf = self.is_leaf_module(m, path)
            self._sll_leaf = (m, leaf)  # (fx's call_module asks again, right away: not worked out twice)
            if not leaf:
                if _autocast_state() != self._sll_autocast:
                    raise self._note(_AutocastRegion(outer=True))  # (entered by the caller's forward: the caller is
                    # opaque)
                self.sll_entered.add(id(m))
                _check_traceable(m, path, scans=self.sll_scans)
                rng = _rng_state() if self.sll_each_call else None
                self._sll_path = (m, path)  # (what fx's call_module asks path_of_module first: its nodes' scope)
                noted = self._sll_noted
                out = super().call_module(m, forward, args, kwargs)
                if self._sll_noted != noted and self._sll_caught is None:  # (raised inside, caught by its forward)
                    self._sll_caught = _caught(self._sll_pending, path, m)
                if rng is not None and rng != _rng_state():
                    raise _RandomDraw()
                return out
            return super().call_module(m, forward, args, kwargs)
        except (TraceError, EpsError) as e:
            raise self._note(e)
        except _AutocastRegion as e:
            if e.outer or self.is_leaf_module(m, path):  # (a block around this module's call: the caller's)
                raise self._note(_AutocastRegion()) from None
            raise self._note(_failure(_AutocastRegion(), path, m)) from None
        except (_AutogradFunctionCall, _CheckpointCall) as e:
            if e.frame is not None and not _encloses(sys._getframe(), e.frame):
                raise self._note(e)  # (entered outside this module's call: by a caller's forward, which goes
                # opaque)
            raise self._note(_failure(e, path, m)) from e
        except Exception as e:
            if self.carried(e) is not None:  # (a child's exception raised on as it is: see _keeping_type)
                raise self._note(e)
            if self.is_leaf_module(m, path):  # (its forward does not run: the call's node failed, on what the caller
                raise self._note(_leaf_call_failure(e, path, m, parent_path)) from e  # passes: the caller goes opaque)
            err = _failure(e, path, m)
            kept = _keeping_type(err, e)
            if kept is e:
                self._sll_carried[id(e)] = (e, err)
                raise self._note(e)
            raise self._note(kept) from e
        finally:
            self._sll_leaf = None  # (not left for a later question: a call that raised before fx asked)
            self.sll_scope.pop()
            self._sll_parents.pop()
            while len(self.module_stack) > stack:  # (a call that raised: a forward may catch it and go on)
                self.module_stack.popitem(last=True)

    def release(self) -> None:
        """Let go of the modules the trace ran on (the shadow tree): fx's own closures of a trace keep the tracer
        alive until the collector's next full pass, and the tree with it (tens of objects per module)."""
        self.root = self.sll_shadows = None
        self.tensor_attrs = {}

    def carried(self, e: BaseException) -> TraceError | None:
        """The TraceError of a child's exception ``e`` that this trace raised on as it is (:func:`_keeping_type`)."""
        found = self._sll_carried.get(id(e))
        return found[1] if found is not None and found[0] is e else None

    def _note(self, exc: Exception) -> Exception:
        """``exc``, remembered as the trace's last failure: a forward that catches it (``try: y = self.child(x)
        except Exception: ...``) would have the trace go on along its fallback, a graph of what the model does not
        run.  The module whose forward caught it (the innermost whose call then returned; the model itself when
        fx's trace returns) is kept opaque (:func:`_caught`): its ``try`` runs as written, whether the failure
        was tracing's alone or also happens at run time (a fast path that raises ``NotImplementedError``)."""
        self._sll_pending, self._sll_caught = exc, None
        self._sll_noted += 1
        return exc

    def path_of_module(self, mod: nn.Module) -> str:
        """fx's first qualified name of ``mod``, except for the module whose call is being traced into: the name of
        that call (``dec.blk`` for a block shared as ``encoder.blk`` too), which names its nodes' submodule (the
        report's, SLLConfig's, set_eps's); the targets of a graph keep the first names."""
        current = self._sll_path
        if current is not None and current[0] is mod:
            self._sll_path = None
            return current[1]
        return super().path_of_module(mod)


def _sealed_modules(model: nn.Module) -> list[tuple[str, nn.Module, str]]:
    """``(path, module, reason)`` of the :func:`sealed_reason` submodules of ``model``, not those inside one."""
    modules = list(model._modules.values())
    while modules:  # (most models have none: found without naming every module)
        m = modules.pop()
        if m is not None:
            if sealed_reason(m) is not None:
                break
            modules.extend(m._modules.values())
    else:
        return []
    found, todo = [], [("", model)]
    while todo:
        path, m = todo.pop()
        reason = sealed_reason(m) if path else None
        if reason is not None:
            found.append((path, m, reason))
            continue
        todo += [(f"{path}.{n}" if path else n, c) for n, c in reversed(m._modules.items()) if c is not None]
    return found


def not_a_module(model, caller: str | None = None) -> TypeError:
    """The error for a model that is no ``nn.Module`` (a plain function, as the seed's examples write them);
    ``caller``: a function that takes a linearized model (``set_eps``, ``calibrate``, ...), named first."""
    name = getattr(model, "__qualname__", None)
    what = f"{type(model).__name__} {name}" if callable(model) and name else f"a {type(model).__name__}"
    if caller is not None:
        return TypeError(f"{caller}: sll_fx expects an nn.Module (the model sll_fx.linearize_module returned), got "
                         f"{what}\nFix: pass the linearized model, gm = sll_fx.linearize_module(model, ...)")
    return TypeError(f"sll_fx expects an nn.Module (or a torch.export.ExportedProgram), got {what}\nFix: put the code in the forward of an nn.Module "
                     "(class M(nn.Module): def forward(self, x): return fn(x)), or run the function inside "
                     "`with sll_fx.linearize(eps):`, which linearizes calls as they run")


def _check_module(model) -> None:
    if not isinstance(model, nn.Module):
        raise not_a_module(model)
    reason = sealed_reason(model)
    if reason is not None:
        kind = "a torch.compile wrapper" if isinstance(model, torch._dynamo.eval_frame.OptimizedModule) else \
            "a TorchScript module"
        raise TraceError(
            f"cannot linearize {kind} ({type(model).__name__}): its forward is not Python code torch.fx can trace\n"
            "Fix: linearize the model itself, then compile or script the result: "
            "torch.compile(sll_fx.linearize_module(model)) (for a compiled model: model._orig_mod)",
            module_path="", module_type=type(model).__name__, reason=reason)
    if parametrize._cache_enabled:
        found = next((p for p, m in model.named_modules() if parametrize.is_parametrized(m)), None)
        if found is not None:
            where = f"submodule '{found}'" if found else "the model"
            raise TraceError(
                f"cannot trace {where} inside torch.nn.utils.parametrize.cached(): a traced forward would read "
                "the parametrized tensor from torch's cache, a constant to the graph (no gradient reaches the "
                "parametrization, and it is not recomputed when its parameters change), and tracing would leave "
                "a proxy in that cache\nFix: call linearize_module outside the cached() block (the linearized "
                "model may be called inside one)", module_path=found, module_type=type(model.get_submodule(found)).__name__,
                reason="parametrize.cached() is on")


def _trace(model: nn.Module, concrete_args=None, opaque=(), codegen: bool = True,
           none_probe: bool = True, nested: bool = False) -> SLLGraphModule:
    # fx runs the forwards on private copies of the modules (what they assign lands there), which share the
    # parameters and buffers; fx's tensor-constant attributes land on the root's copy
    for each_call in (False, True):  # (the generator's state compared around the whole trace; when it changed, the
        # trace is made again comparing it around each module's call, and fails as that one does: see SLLTracer)
        tree = ShadowTree(model)
        root = tree.root
        tracer = SLLTracer([c for c in map(tree.shadow, opaque) if c is not None], tree, each_call=each_call)
        try:
            _check_traceable(model, "", root=True, scans=tracer.sll_scans)
            graph = tracer.trace(root, concrete_args)
            stateful = _stateful(model, tree, tracer)  # (before the deeper state is put back: it is read there)
        except _DrawnSomewhere:
            continue
        except (TraceError, EpsError):  # (EpsError: _check_calibrated)
            raise
        except Exception as e:
            carried = tracer.carried(e)
            if carried is not None:
                raise carried from e
            raise _failure(e, "", model) from e
        finally:
            tree.restore_nested()  # what the trace changed in state the copies share with the user's modules
        break
    if stateful:
        raise _state_failure(model, stateful)
    if concrete_args:
        inputs.name_concrete_inputs(graph, concrete_args)
    frozen.mark_none_tested(graph, model, concrete_args)  # (before the GraphModule records its None inputs)
    kind = original_class(model).__name__
    if none_probe:
        inputs.mark_none_branches(graph, concrete_args, lambda fixed: _trace(model, fixed, opaque, codegen=False,
                                                                            none_probe=False).graph)
    if nested:  # (called by an opaque module's Python code: no concrete_args reach it)
        inputs.refuse_none_tested(graph, kind)
    inputs.refuse_keyword_reads(graph, kind)
    inputs.refuse_reordered(graph, kind, forward_of(model))
    gm = SLLGraphModule(root, graph, class_name=original_class(model).__name__, codegen=codegen)
    tree.restore(gm)  # the leaves fx calls and the tensor attributes it reads: the user's own
    mirror_state(gm, model, frozenset(id(m) for m, c in tree.pairs if id(c) in tracer.sll_entered and m is not model))
    paths = tracer.sll_paths  # (each copy's first name, the model's module's: the walk of the trace)
    reads: dict = {}  # (what each forward's code reads: scanned once per function and class)
    frozen.record(gm, [(paths[id(c)], m, name, value) for m, c in tree.pairs
                       if id(c) in tracer.sll_entered and id(c) in paths
                       for name, value in frozen.values_read(m, reads).items()])
    tracer.release()
    return gm


_STATE_REASON = "module state a graph cannot keep"


def _stateful(model: nn.Module, tree: ShadowTree, tracer: SLLTracer) -> list[tuple[str, str]]:
    """``[(path, reason)]`` of the modules whose forward the trace ran and which changed module state.

    A change is put on the module whose copy changed when the trace ran its forward, else on its
    nearest enclosing module whose forward ran (``self.lif.v = ...`` in a parent's forward assigns
    ``self.lif.v`` there).  A parent whose forward reads the state of such a module
    (``self.lif.v``, which the graph would hold as the value it had while tracing) is stateful too.
    Parents before children."""
    found: dict[str, dict[str, list[str]]] = {}
    paths = None
    for m, c in tree.pairs:
        changed = tree.changes(c, tracer.sll_constants if c is tree.root else ())
        if not changed:
            continue
        if paths is None:
            paths = {id(x): p for p, x in model.named_modules()}
        path, prefix = paths.get(id(m), ""), ""
        while path and id(tree.shadow(model.get_submodule(path))) not in tracer.sll_entered:
            path, _, name = path.rpartition(".")
            prefix = f"{name}.{prefix}"
        kinds = found.setdefault(path, {})
        for name, how in changed:
            kinds.setdefault(how, []).append(name if name.startswith(OUTSIDE) else f"self.{prefix}{name}")
        if path and not prefix:  # its own state: does its parent's forward read it?
            parent_path, _, child = path.rpartition(".")
            parent = model.get_submodule(parent_path)
            if id(tree.shadow(parent)) in tracer.sll_entered:
                attrs = child_attributes_read(parent, only="load").get(child, set())
                read = attrs & {n for n, _ in changed}
                if read:
                    found.setdefault(parent_path, {}).setdefault("reads", []).extend(
                        f"self.{child}.{name}" for name in sorted(read))
                called = sorted(a for a in attrs - read if _own_method(m, a))
                if called:  # (self.lif.reset(): run once while tracing, never by the graph)
                    found.setdefault(parent_path, {}).setdefault("calls", []).extend(
                        f"self.{child}.{name}" + ("" if isinstance(getattr(type(m), name, None), property) else "()")
                        for name in called)
        if path and not prefix and not any(f"self.{path}." in c for c in found.get(path.rpartition(".")[0], {})
                                           .get("calls", ())):
            _calls_by_name(model, tree, tracer, path, m, found)
    out = []
    for path in sorted(found, key=lambda p: (p.count("."), p)):
        kinds = found[path]
        what = " and ".join(f"{how} {', '.join(names)}" for how, names in kinds.items())
        out.append((path, f"{what} in forward: {_STATE_REASON}"))
    return out


def _calls_by_name(model: nn.Module, tree: ShadowTree, tracer: SLLTracer, path: str, m: nn.Module,
                   found: dict) -> None:
    """Put a call of a method of the stateful ``m`` (at ``path``) that a traced ancestor's forward names other than as
    ``self.child.method()`` (``for n in self.lifs: n.reset()``, ``self.lifs[0].reset()``, ``getattr(self.lif,
    "reset")()``, a helper function or method it calls, SpikingJelly's ``functional.reset_net(self)``) on the nearest
    such ancestor, in ``found``: the call ran once while tracing, and the graph would never make it.  Not counted:
    the ancestor's own attributes (``self.step``; its own methods and properties count by what they name), names
    in torch's own functions."""
    ancestor = path
    while ancestor:
        ancestor = ancestor.rpartition(".")[0]
        owner = model.get_submodule(ancestor)
        if id(tree.shadow(owner)) not in tracer.sll_entered:
            continue
        fn = forward_of(owner)
        if fn is None:
            continue
        names, functions, methods = set(), [], [fn]
        while methods:  # (the ancestor's own methods and properties it names, self.start(): what they name, in turn)
            method = methods.pop()
            functions.append(method)
            names |= _names_read(method)
            methods += [f for n in _names_read(method, on_self=True) if (f := _user_function(owner, n)) is not None
                        and f not in functions and f not in methods]
        frontier = functions
        for _ in range(3):  # (helpers they call, reset_net(self), reset_one(self.lif), and the helpers those call)
            frontier = [o for o in {id(o): o for f in frontier for o in _referenced(f)}.values()
                        if isinstance(o, types.FunctionType) and o not in functions
                        and (o.__module__ or "").split(".")[0] != "torch"]
            for helper in frontier:
                names |= _names_read(helper, on_self=None)
            functions += frontier
        own = set(vars(owner)) | set(owner._parameters) | set(owner._buffers) | set(owner._modules)
        called = sorted(n for n in names - _MODULE_API - own if _own_method(m, n))
        if called:
            child = path[len(ancestor):].lstrip(".")
            found.setdefault(ancestor, {}).setdefault("calls", []).extend(f"{n}() of self.{child}" for n in called)
            return


def _user_function(owner: nn.Module, name: str) -> types.FunctionType | None:
    """The function of the method or property ``name`` that a user's class of ``owner`` defines, or None."""
    for klass in type(owner).__mro__:
        if name in vars(klass):
            fn = vars(klass)[name]
            fn = fn.fget if isinstance(fn, property) else fn
            return fn if _user_class(klass) and isinstance(fn, types.FunctionType) else None
    return None


def _names_read(fn: types.FunctionType, on_self: bool | None = False) -> set[str]:
    """The attribute names a method's code ``fn`` reads (nested code included) on other values than its first
    argument, ``self`` (``n.reset()``, ``self.lifs[0].reset()``; not ``self.scale()``, the module's own), and its
    string constants where it calls ``getattr`` (``getattr(m, "reset")``); ``on_self``: those it reads on ``self``
    instead (also where a comprehension or a lambda holds ``self`` in a cell); None: every name (a helper function,
    whose first argument may be the neuron: ``def reset_one(n): n.reset()``)."""
    names: set[str] = set()
    this = fn.__code__.co_varnames[0] if fn.__code__.co_argcount and on_self is not None else None
    for code in code_objects(fn.__code__):
        ins = [i for i in dis.get_instructions(code) if i.opname not in ("CACHE", "EXTENDED_ARG")]
        for before, i in zip([None, *ins], ins):
            if i.opname in ("LOAD_ATTR", "LOAD_METHOD"):
                own = this is not None and before is not None and before.argval == this and \
                    (before.opname.startswith("LOAD_FAST") or before.opname in ("LOAD_DEREF", "LOAD_CLOSURE"))
                if own == bool(on_self):
                    names.add(i.argval)
        if not on_self and any(i.argval == "getattr" for i in ins if i.opname in ("LOAD_GLOBAL", "LOAD_NAME")):
            names.update(c for c in code.co_consts if isinstance(c, str) and c.isidentifier())
    return names


def _own_method(m: nn.Module, name: str) -> bool:
    """Is ``name`` a method or property the user's class of ``m`` defines (``reset``; not torch's own, not a static
    method) whose code uses ``self`` (it may read or change the module's state: ``self.v = 0``, ``setattr(self,
    n, 0)``, ``return self.v``; ``def gain(self): return 2.0`` does not)?"""
    fn = _user_function(m, name)  # (a property's getter too: reading self.v is a read of the state)
    return fn is not None and _uses_self(fn)


def _uses_self(fn: types.FunctionType) -> bool:
    code = fn.__code__
    if not code.co_argcount:
        return False
    this = code.co_varnames[0]
    for c in code_objects(code):
        for i in dis.get_instructions(c):  # (LOAD_FAST, LOAD_FAST_CHECK; 3.13's LOAD_FAST_LOAD_FAST with a pair,
            if i.opname.startswith("LOAD_FAST") or i.opname in ("LOAD_DEREF", "LOAD_CLOSURE"):  # 3.14's _BORROW)
                if i.argval == this or (isinstance(i.argval, tuple) and this in i.argval):
                    return True
    return False


def _state_failure(model: nn.Module, stateful: list[tuple[str, str]]) -> TraceError:
    """The TraceError for the stateful modules (the first named; all of them in ``sll_stateful``)."""
    path, reason = stateful[0]
    kind = original_class(model.get_submodule(path)).__name__
    where = f"submodule '{path}' ({kind})" if path else f"the forward of {kind}"
    err = TraceError(f"torch.fx cannot trace {where}: it {reason} (a graph would drop the update)\n"
                     "Fix: pass the state in and return it (forward(x, v) -> (y, v)); linearize_module keeps it "
                     "opaque: its Python forward runs as written, with its own state, and the discrete ops of its "
                     "child modules (a spike function module) are rewritten", module_path=path,
                     module_type=kind, reason=reason)
    err.sll_stateful = stateful
    return err


def trace(model: torch.nn.Module, *, concrete_args: dict | None = None) -> SLLGraphModule:
    """Trace ``model`` into a new GraphModule with the same parameters, buffers and state_dict keys.

    Raises :class:`TraceError` (naming the innermost failing submodule) when any part of it
    cannot be traced, an ``autograd.Function`` included; see :func:`trace_with_fallback`.
    """
    _check_module(model)
    return _trace(model, concrete_args)


@dataclass
class _Walk:
    """What the fallback's recursion shares: the opaque records, the modules kept as they are, codegen."""
    records: list[OpaqueModule]
    keep: dict[int, nn.Module]
    codegen: bool = True
    values: dict = field(default_factory=dict)  # the lists/dicts/... the opaque copies own, one copy each


def trace_with_fallback(model: torch.nn.Module, *, concrete_args: dict | None = None, keep=(),
                        codegen: bool = True) -> tuple[nn.Module, list[OpaqueModule]]:
    """Trace ``model``, keeping the parts that cannot be traced opaque (see the module docstring).

    Returns ``(result, opaque)``: ``result`` is an ``SLLGraphModule`` (or, when the model's own
    ``forward`` cannot be traced, a private copy of the model whose children are traced), with
    the model's parameters, buffers and ``state_dict()`` keys; ``opaque`` lists every opaque
    module, parents before their children.  ``model`` is never modified.  The modules in
    ``keep`` (a config's skipped submodules) stay leaves, exactly as they are, and are not listed.
    ``codegen=False``: the GraphModules' code is generated on first use (for a pass that edits them
    at once; see :class:`~sll_fx.graph_module.SLLGraphModule`).
    """
    _check_module(model)
    walk = _Walk(records=[], keep={id(m): m for m in keep}, codegen=codegen)
    sealed = _sealed_modules(model)  # (kept as they are, like ``keep``, and listed)
    walk.keep.update((id(m), m) for _, m, _ in sealed)
    result = _trace_tree(model, concrete_args, "", [], walk)
    if not walk.records and not sealed:  # (most models: nothing opaque, the modules not walked again to order it)
        return result, []
    order = {p: i for i, (p, _) in enumerate(model.named_modules(remove_duplicate=False))}
    records = sorted([*walk.records, *(OpaqueModule(p, type(m).__name__, r) for p, m, r in sealed)],
                     key=lambda o: order.get(o.path, len(order)))
    return result, records


def _trace_tree(model: nn.Module, concrete_args, prefix: str, ancestry: list, walk: _Walk) -> nn.Module:
    """``model`` (at ``prefix`` in the top model, under the modules ``ancestry``) traced with fallback."""
    leaves: dict[int, tuple[nn.Module, str, str]] = {}
    while True:
        try:
            gm = _trace(model, concrete_args, [*walk.keep.values(), *(m for m, _, _ in leaves.values())],
                        walk.codegen, nested=bool(prefix))
            break
        except TraceError as e:
            stateful = getattr(e, "sll_stateful", None)
            if stateful:  # all of them at once (one retrace, not one per stateful module)
                if stateful[0][0] == "":
                    return _opaque(model, prefix, ancestry, stateful[0][1], walk)
                done: list[str] = []
                for path, reason in stateful:  # (parents first: a child of an opaque one is handled there)
                    if any(path.startswith(p + ".") for p in done):
                        continue
                    m = model.get_submodule(path)
                    if id(m) in leaves:  # (cannot happen: a leaf's forward does not run)
                        raise
                    leaves[id(m)] = (m, path, reason)
                    done.append(path)
                continue
            path = getattr(e, "sll_fallback_path", e.module_path)
            if path is None:
                raise
            if path == "":
                return _opaque(model, prefix, ancestry, e.reason, walk)
            m = model.get_submodule(path)
            if id(m) in leaves:  # a leaf that fails cannot be made more opaque
                raise
            leaves[id(m)] = (m, path, e.reason)
    if prefix:
        _relabel(gm, ancestry)
    if not leaves:  # (most traces: nothing kept opaque inside, the model's modules not walked again)
        return gm
    order = {id(m): i for i, m in enumerate(model.modules())}
    user = {id(m) for _, m in model.named_modules(remove_duplicate=False)}
    for m, path, reason in sorted(leaves.values(), key=lambda t: order.get(id(t[0]), 0)):
        full = join(prefix, path)
        replacement = _opaque(m, full, ancestry + _chain(model, path, prefix), reason, walk)
        _install(gm, m, replacement, user)
    return gm


def _opaque(m: nn.Module, path: str, ancestry: list, reason: str, walk: _Walk, as_value: bool = False) -> nn.Module:
    """A marked private copy of the opaque ``m`` whose children are traced (with fallback).  ``as_value``: ``m`` is
    kept because the code above it iterates or indexes it, and may index its children too (``self.seq[0][1]``)."""
    walk.records.append(OpaqueModule(path, original_class(m).__name__, reason))
    new = mark_opaque(private_copy(m, own=True, memo=walk.values), reason)
    read = child_attributes_read(m)
    written = child_attributes_read(m, only="store") if read else {}
    used = children_used_as_values(m)
    for name, child in list(m._modules.items()):
        if child is None:
            continue
        child_path = join(path, name)
        child_ancestry = ancestry + [(child_path, type(child))]
        value = (as_value or name in used) and sequence_like(child)
        if name in read and _traceable(child):
            attrs = ", ".join(sorted(read[name]))
            how = "assigns" if name in written else "reads"
            new._modules[name] = _opaque(child, child_path, child_ancestry,
                                         f"its opaque parent {type(m).__name__} {how} .{attrs} of it, which a "
                                         "traced GraphModule would not have", walk)
        elif value and _traceable(child) and id(child) not in walk.keep:
            new._modules[name] = _opaque(child, child_path, child_ancestry,
                                         _value_reason(child, m, path, name in used and not as_value), walk, True)
        elif name in written and id(child) not in walk.keep and not _traceable(child):
            # (self.fc.last = x: a torch.nn child the opaque parent assigns to; the copy's, not the user's)
            new._modules[name] = private_copy(child, own=True, memo=walk.values)
        else:
            new._modules[name] = _rewrite_child(child, child_path, child_ancestry, walk, value)
    return new


def _value_reason(child: nn.Module, parent: nn.Module, parent_path: str, direct: bool) -> str:
    """Why a :func:`~sll_fx.scans.sequence_like` ``child`` of ``parent`` is kept as it is (``direct``: the opaque
    ``parent`` iterates or indexes it itself; else it is an item of a module the code above iterates or indexes)."""
    kind = original_class(child).__name__
    if direct:
        how = (f"its opaque parent {original_class(parent).__name__} iterates, indexes, slices or takes len() of it, "
               "which a traced GraphModule would not support")
    else:
        how = (f"an item of {parent_path or '(model)'} ({original_class(parent).__name__}), which the opaque code "
               "above it iterates or indexes: its items may be indexed too, which a traced GraphModule would not "
               "support")
    return f"{how}: kept as a {kind} so that works (its children are still rewritten)"


def _traceable(m: nn.Module) -> bool:
    """Would the fallback trace ``m`` (not a torch.nn leaf, has a forward)?"""
    return type(m).forward is not nn.Module.forward and not torch_leaf(m)


def _rewrite_child(child: nn.Module, path: str, ancestry: list, walk: _Walk, as_value: bool = False) -> nn.Module:
    """``child`` of an opaque module, with its discrete ops made traceable-and-rewritable.  ``as_value``: the opaque
    code iterates or indexes ``child``: an item of it that can be iterated or indexed itself (an ``nn.Sequential``
    in an ``nn.ModuleList``) is kept as it is, opaque (``blk[0]`` would fail on a GraphModule)."""
    if id(child) in walk.keep:
        return child
    if type(child).forward is nn.Module.forward:  # a container (ModuleList, ModuleDict, ...): rewrite its items
        changed = {}
        for name, item in child._modules.items():
            if item is not None:
                item_path = join(path, name)
                item_ancestry = ancestry + [(item_path, type(item))]
                value = as_value and sequence_like(item)
                if value and _traceable(item) and id(item) not in walk.keep:
                    new = _opaque(item, item_path, item_ancestry, _value_reason(item, child, path, False), walk, True)
                else:
                    new = _rewrite_child(item, item_path, item_ancestry, walk, value)
                if new is not item:
                    changed[name] = new
        if not changed:
            return child
        new = private_copy(child)
        new._modules.update(changed)
        return new
    if not _traceable(child):  # torch.nn leaves: never traced into
        return child
    return _trace_tree(child, None, path, ancestry, walk)


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


def copy_graph_module(gm: fx.GraphModule, codegen: bool = True) -> SLLGraphModule:
    """A GraphModule with a copy of ``gm``'s graph and the same parameters and buffers
    (``codegen=False``: its code is generated on first use)."""
    new = SLLGraphModule(gm, copy.deepcopy(gm.graph), class_name=type(gm).__name__, codegen=codegen)
    mirror_state(new, gm)
    return new


def source_of(node: fx.Node) -> str:
    """``file:line`` of the user code that created ``node`` (its innermost frame outside torch and sll_fx)."""
    frames = _FRAME.findall(node.stack_trace or "")
    for path, line in reversed(frames):
        if not path.startswith((_TORCH_DIR, _SLL_DIR)):
            return f"{os.path.basename(path)}:{line}"
    return ""


def module_paths(gm: fx.GraphModule) -> set[str]:
    """The submodule names an exported graph's nodes were made in (``nn_module_stack``), and their prefixes:
    ``ep.module()`` keeps only the submodules that hold parameters or buffers, the rest are named here only."""
    paths = set()
    for node in gm.graph.nodes:
        for path, _ in (node.meta.get("nn_module_stack") or {}).values():
            parts = path.split(".")
            paths.update(".".join(parts[:i]) for i in range(1, len(parts) + 1))
    return paths


def module_of(node: fx.Node) -> str:
    """Qualified name of the submodule whose forward created ``node`` ("" for the top level)."""
    stack = node.meta.get("nn_module_stack") or {}
    if not stack:
        return ""
    path, _ = list(stack.values())[-1]
    return path

"""Python values a traced graph froze: ``self.bits``, ``self.enabled`` read in a forward.

fx runs a forward once; a plain Python attribute it reads (``n = 2 ** self.bits - 1``, ``if not
self.enabled: return x``) becomes a constant of the graph, or decides which ops the graph has.
Changing it afterwards (a bit-width schedule, quantization switched on after a warm-up) changes
the model but not the linearized one, silently.  The tracer records, for each module whose
forward it ran, the plain values (bool, int, float, str, None, dtypes, devices, tuples of them)
that the module's own methods read as ``self.<name>`` (:func:`values_read`); the result checks
them when it is called (:func:`check`) and raises :class:`~sll_fx.errors.TraceError` naming the
attribute, both values and the fix when one changed, on the model's module or on the result's.

Likewise an input whose default is ``None`` (``forward(self, x, mask=None)``) is traced as a tensor when
no ``concrete_args`` says otherwise (``if mask is not None:`` is true for a proxy); when a call
without it fails with a ``TypeError`` about ``NoneType``, the result raises a ``TraceError``
naming the input and the ``concrete_args`` fix instead (a graph that takes None there, as
``F.linear``'s bias does, runs as before).
"""

from __future__ import annotations

import dis
import functools
import weakref

import torch
from torch import nn

from .errors import TraceError
from .opaque import code_objects, forward_of, function_of

#: ``__dict__`` key of a GraphModule's records: ``[(path, weakref to the model's module, name, value)]``
RECORDS = "_sll_frozen_values"
#: ``__dict__`` key of a GraphModule's inputs whose default is None but that the graph uses: ``[(position, name)]``
NONE_INPUTS = "_sll_none_inputs"
_PLAIN = (bool, int, float, str, type(None), torch.dtype, torch.device)
_MISSING = object()
#: attributes sll_fx keeps in the graph or that nn.Module manages itself
_SKIP = frozenset({"training", "forward"})


def _plain(value) -> bool:
    if isinstance(value, tuple):
        return all(_plain(v) for v in value)
    return isinstance(value, _PLAIN)


def values_read(module: nn.Module) -> dict[str, object]:
    """``{name: value}`` for each ``self.<name>`` that ``forward``, and the methods of the module's own
    class it calls (``self._quantize(x)``, transitively), read whose value in the module's ``__dict__``
    is a plain Python value (not a parameter, buffer, submodule, tensor or method)."""
    state, klass = module.__dict__, type(module)
    names: set[str] = set()
    todo = [forward_of(module)]
    done: set = set()
    while todo:
        fn = function_of(todo.pop())
        if fn is None or fn in done or (fn.__module__ or "").split(".")[0] == "torch":
            continue
        done.add(fn)
        for name in _self_attributes(fn):
            names.add(name)
            member = getattr(klass, name, None)
            todo.append(member.fget if isinstance(member, property) else member)
    out = {}
    for n in sorted(names - _SKIP):
        value = state[n] if n in state else getattr(klass, n, _MISSING)  # (a class-level default too)
        if value is not _MISSING and not isinstance(getattr(klass, n, None), property) and _plain(value):
            out[n] = value
    return out


def _self_attributes(fn) -> frozenset[str]:
    """The names ``x`` of every ``self.x`` that ``fn`` (nested code included) reads or calls."""
    return _attributes_of_first_argument(fn.__code__)


@functools.lru_cache(maxsize=4096)  # (code objects do not change: one scan per method, not per module)
def _attributes_of_first_argument(code) -> frozenset[str]:
    if not code.co_varnames or code.co_argcount == 0:
        return frozenset()
    this, names = code.co_varnames[0], set()
    for c in code_objects(code):
        previous = None
        for ins in dis.get_instructions(c):
            if ins.opname in ("CACHE", "EXTENDED_ARG"):
                continue
            if ins.opname in ("LOAD_ATTR", "LOAD_METHOD") and previous is not None and previous.argval == this \
                    and previous.opname in ("LOAD_FAST", "LOAD_DEREF"):
                names.add(ins.argval)
            previous = ins
    return frozenset(names)


def record(gm: nn.Module, entries: list[tuple[str, nn.Module, str, object]]) -> None:
    """Give ``gm`` the values to check: ``(path, the model's module, name, value)``; the result's own module
    at ``path`` is looked up once (None where the graph inlined it)."""
    if entries:
        gm.__dict__[RECORDS] = [(path, weakref.ref(m), _own(gm, path, m), name, value)
                                for path, m, name, value in entries]


def _own(gm: nn.Module, path: str, model_module: nn.Module):
    try:
        own = gm.get_submodule(path)
    except AttributeError:
        return None
    return None if own is model_module else weakref.ref(own)


def check(gm: nn.Module) -> None:
    """Raise when a recorded value changed, on the model's module or on ``gm``'s module at that path."""
    for path, ref, own, name, value in gm.__dict__.get(RECORDS, ()):
        for m in (ref(), own() if own is not None else None):
            if m is None:
                continue
            now = getattr(m, name, _MISSING)
            if now is _MISSING or now is value or (type(now) is type(value) and now == value):
                continue
            where = f"{path}.{name}" if path else name
            raise TraceError(
                f"'{where}' is {now!r} now, {value!r} when linearize_module traced it: the graph holds the value "
                "it was traced with (a Python value read in forward), so the change has no effect\n"
                "Fix: linearize the model again after changing it, or make it a tensor (a buffer) or a forward "
                "argument", module_path=path, module_type=type(m).__name__,
                reason=f"{where} changed since tracing")


def record_none_inputs(gm) -> None:
    """Record ``gm``'s inputs whose default is None and that its graph uses (see the module docstring)."""
    found = []
    for i, node in enumerate(gm.graph.nodes):
        if node.op != "placeholder":
            break
        if node.args == (None,) and node.users and not node.target.startswith("*"):
            found.append((i, node.target))
    gm.__dict__[NONE_INPUTS] = found


def check_inputs(gm, args: tuple, kwargs: dict, error: TypeError) -> None:
    """After ``error`` from a call of ``gm``: raise a TraceError when an input recorded by
    :func:`record_none_inputs` was None in that call."""
    if "NoneType" not in str(error):
        return
    for i, name in gm.__dict__.get(NONE_INPUTS, ()):
        value = args[i] if i < len(args) else kwargs.get(name)
        if value is None:
            raise TraceError(
                f"input '{name}' is None here, but linearize_module traced it as a tensor (its default is None and "
                "the trace had no value for it), and the graph uses it\nFix: pass it, or linearize with "
                f"concrete_args={{'{name}': None}} for the calls without it (one linearized model per case)",
                reason=f"input {name} traced as a tensor") from error

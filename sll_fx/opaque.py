"""Opaque modules: the parts of a model that run as the user's own Python code.

When ``torch.fx`` cannot trace a submodule (Python control flow on tensor values, an
``autograd.Function`` whose backward must survive, ...), the fallback tracer
(:func:`sll_fx.tracer.trace_with_fallback`) keeps it out of the graph: the graph calls it as
one ``call_module`` leaf.  Its own traceable children are still traced and rewritten:
the graph calls a *private copy* of the opaque module, made by :func:`private_copy`, whose
children are replaced by their traced GraphModules.  The copy is a new instance of the
user's class with a shallow copy of its ``__dict__`` and of every container ``nn.Module``
keeps there (``_parameters``, ``_buffers``, ``_modules``, ``_non_persistent_buffers_set``,
the hook dicts), so replacing a child in the copy never touches the user's module, while
parameters and buffers stay the same objects (training the result trains the model) at the
same qualified names (the same ``state_dict()`` keys, in the same order).  A copy carries
its reason under the ``__dict__`` key ``_sll_fx_opaque``; that is how the passes recognise
it again, also after ``copy.deepcopy`` or ``pickle``.

:func:`map_graphs` runs a graph pass on every GraphModule of such a tree (the top one and
those inside opaque copies, at any depth), on copies, and merges their reports.

This module also holds the static code scans the tracer and ``export_hard`` use: which
``autograd.Function`` a ``forward`` references, which sll ops a method references, and
which attributes of a child an opaque module reads (a child that is replaced by a
GraphModule keeps its parameters, buffers and submodules, but not its other attributes or
methods, so such a child is kept opaque too).
"""

from __future__ import annotations

import builtins
import dataclasses
import dis
import inspect
import types
from typing import Callable, Iterator

import torch
from torch import fx, nn

from .report import OpaqueModule

MARK = "_sll_fx_opaque"

#: the dict/set containers every nn.Module keeps in its __dict__ (copied by private_copy)
_CONTAINERS = tuple(k for k, v in nn.Module().__dict__.items() if isinstance(v, (dict, set)))
_MODULE_API = frozenset(dir(nn.Module)) | {"training", "forward", "__call__"}


def join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix and name else prefix or name


# ----------------------------------------------------------------------------------------
# private copies and their marker
# ----------------------------------------------------------------------------------------

def private_copy(module: nn.Module) -> nn.Module:
    """A new instance of ``type(module)`` sharing every value, with its own module containers."""
    new = object.__new__(type(module))
    state = dict(module.__dict__)
    for key in _CONTAINERS:
        if key in state and isinstance(state[key], (dict, set)):
            state[key] = state[key].copy()
    new.__dict__.update(state)
    return new


def mark_opaque(module: nn.Module, reason: str) -> nn.Module:
    """Mark a private copy as opaque (never call this on a user's module)."""
    module.__dict__[MARK] = reason
    return module


def opaque_reason(module: nn.Module) -> str | None:
    """The reason an opaque copy was kept opaque, or None for any other module."""
    return module.__dict__.get(MARK)


def is_opaque(module) -> bool:
    return isinstance(module, nn.Module) and opaque_reason(module) is not None


# ----------------------------------------------------------------------------------------
# static code scans
# ----------------------------------------------------------------------------------------

def _codes(code: types.CodeType) -> Iterator[types.CodeType]:
    yield code
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            yield from _codes(const)


def _function(obj):
    obj = getattr(obj, "__func__", obj)  # bound methods, staticmethod/classmethod objects
    return obj if isinstance(obj, types.FunctionType) else None


def _referenced(fn: types.FunctionType, owner: nn.Module | None = None, depth: int = 3) -> list:
    """Objects that names in ``fn``'s code (nested code included) resolve to: its closure, its
    globals, builtins, attributes of ``owner`` and of its class, and attributes of modules and
    classes reached that way (``lib.STE``, ``torch.ops.sll.sign``), read from ``__dict__`` only."""
    names: set[str] = set()
    for code in _codes(fn.__code__):
        names.update(code.co_names)
        names.update(code.co_freevars)
    spaces = []
    if fn.__closure__:
        cells = {}
        for name, cell in zip(fn.__code__.co_freevars, fn.__closure__):
            try:
                cells[name] = cell.cell_contents
            except ValueError:
                pass
        spaces.append(cells)
    spaces += [fn.__globals__, vars(builtins)]
    if owner is not None:
        spaces.append(owner.__dict__)
        spaces += [vars(k) for k in type(owner).__mro__]
    found, frontier = [], [space[n] for space in spaces for n in names if n in space]
    for _ in range(depth):
        found += frontier
        nxt = []
        for obj in frontier:
            if isinstance(obj, (types.ModuleType, type)):
                d = vars(obj)
                nxt += [d[n] for n in names if n in d]
        frontier = nxt
    return found + frontier


def autograd_function_class(obj):
    """The ``torch.autograd.Function`` subclass ``obj`` is (or whose ``apply`` it is), else None."""
    if inspect.ismethod(obj):
        obj = obj.__self__
    if isinstance(obj, type) and issubclass(obj, torch.autograd.Function) and obj is not torch.autograd.Function:
        return obj
    return None


def autograd_function_used(module: nn.Module):
    """The first autograd.Function subclass that ``module``'s ``forward`` references, or None."""
    fn = _function(module.__dict__.get("forward")) or _function(getattr(type(module), "forward", None))
    if fn is None:
        return None
    for obj in _referenced(fn, module):
        cls = autograd_function_class(obj)
        if cls is not None:
            return cls
    return None


def _user_functions(module: nn.Module) -> Iterator[types.FunctionType]:
    """``forward`` (also one set on the instance) and every method of the module's own classes."""
    fn = _function(module.__dict__.get("forward"))
    if fn is not None:
        yield fn
    for klass in type(module).__mro__:
        if klass.__module__.split(".")[0] == "torch" or klass is object:
            continue
        for value in vars(klass).values():
            if isinstance(value, property):
                value = value.fget
            fn = _function(value)
            if fn is not None:
                yield fn


def _is_sll(obj) -> bool:
    from .ops import is_sll_target

    if isinstance(obj, torch._ops._OpNamespace):
        return obj.__dict__.get("name") == "sll" or getattr(obj, "__name__", "") == "torch.ops.sll"
    if isinstance(obj, types.FunctionType):
        return obj.__module__ == "sll_fx.ops" and "sll" in obj.__code__.co_names
    try:
        return is_sll_target(obj)
    except Exception:
        return False


def sll_ops_used(module: nn.Module) -> list[str]:
    """Names of sll ops (``torch.ops.sll.*`` or ``sll_fx.sign``, ...) that ``module``'s own Python
    methods reference: code that no graph pass can strip."""
    out = []
    for fn in _user_functions(module):
        for obj in _referenced(fn, module):
            if _is_sll(obj):
                out.append(f"{fn.__qualname__} uses {getattr(obj, '__name__', obj)}")
                break
    return out


def child_attributes_read(module: nn.Module) -> dict[str, set[str]]:
    """``{child: {attr, ...}}`` for each ``self.child.attr`` in the module's own methods, where
    ``attr`` is something a GraphModule standing in for the child would not have."""
    children = {n: c for n, c in module._modules.items() if c is not None}
    out: dict[str, set[str]] = {}
    if not children:
        return out
    for fn in _user_functions(module):
        code = fn.__code__
        if not code.co_varnames or code.co_argcount == 0:
            continue
        this = code.co_varnames[0]
        for c in _codes(code):
            ins = [i for i in dis.get_instructions(c) if i.opname not in ("CACHE", "EXTENDED_ARG")]
            for a, b, d in zip(ins, ins[1:], ins[2:]):
                if (a.opname == "LOAD_FAST" and a.argval == this and b.opname == "LOAD_ATTR" and b.argval in children
                        and d.opname in ("LOAD_ATTR", "LOAD_METHOD", "STORE_ATTR", "DELETE_ATTR")):
                    child, attr = children[b.argval], d.argval
                    if d.opname == "LOAD_ATTR" or d.opname == "LOAD_METHOD":
                        if attr in _MODULE_API or attr in child._parameters or attr in child._buffers \
                                or attr in child._modules:
                            continue
                    out.setdefault(b.argval, set()).add(attr)
    return out


# ----------------------------------------------------------------------------------------
# running a pass on every graph of a fallback result
# ----------------------------------------------------------------------------------------

def map_graphs(top: nn.Module, fn: Callable[[fx.GraphModule, str], fx.GraphModule], empty_report,
               check_opaque: Callable[[nn.Module, str], None] | None = None) -> nn.Module:
    """A new tree in which every GraphModule ``g`` at qualified name ``path`` is
    ``fn(copy of g, path)`` (``fn`` may edit its argument in place and must return a
    GraphModule carrying ``sll_report``) and every opaque copy is a fresh copy; ``top`` and
    everything in it is left as it is, except GraphModules whose code was never generated
    (``SLLGraphModule(..., codegen=False)``: private ones, traced for this call), which ``fn``
    gets as they are.  The copies are made without code; the code of each GraphModule ``fn``
    returns is generated once, after ``fn``.  The merged report (entries of every graph, top
    first; the opaque modules with their paths) is attached to the result as ``sll_report``.

    ``check_opaque(module, path)`` is called on each opaque module and may raise.
    """
    from .graph_module import generate_code, is_deferred
    from .tracer import copy_graph_module, original_class

    memo: dict[int, nn.Module] = {}
    reports: list = []
    opaque: list[OpaqueModule] = []

    def rebuild_children(new: nn.Module, path: str) -> None:
        for name, child in list(new._modules.items()):
            if child is not None:
                replaced = rebuild(child, join(path, name))
                if replaced is not child:
                    new._modules[name] = replaced

    def rebuild(m: nn.Module, path: str) -> nn.Module:
        if id(m) in memo:
            return memo[id(m)]
        reason = opaque_reason(m)
        if reason is not None:
            opaque.append(OpaqueModule(path, original_class(m).__name__, reason))
            if check_opaque is not None:
                check_opaque(m, path)
            new = private_copy(m)
            rebuild_children(new, path)
        elif isinstance(m, fx.GraphModule):
            # a GraphModule whose code was never generated is a private one, just traced for this call
            # (trace_with_fallback(codegen=False)): edited in place; any other is copied
            new = fn(m if is_deferred(m) else copy_graph_module(m, codegen=False), path)
            generate_code(new)  # once, for the final graph
            reports.append(new.sll_report)
            rebuild_children(new, path)
        else:
            changed = {}
            for name, child in m._modules.items():
                if child is not None:
                    replaced = rebuild(child, join(path, name))
                    if replaced is not child:
                        changed[name] = replaced
            if changed:
                new = private_copy(m)
                new._modules.update(changed)
            else:
                new = m
        memo[id(m)] = new
        return new

    result = rebuild(top, "")
    base = reports[0] if isinstance(result, fx.GraphModule) else empty_report
    fields = {"entries": [e for r in reports for e in r.entries], "opaque": opaque}
    if hasattr(base, "remaining"):
        fields["remaining"] = sum(getattr(r, "remaining", 0) for r in reports)
    report = dataclasses.replace(base, **fields)
    if isinstance(result, fx.GraphModule):
        result.sll_report = report
    else:
        result.__dict__["sll_report"] = report  # an opaque copy of the model itself
    return result


def refuse_sll_code(module: nn.Module, path: str) -> None:
    """``export_hard``'s check of an opaque module: sll ops in its own Python code cannot be stripped."""
    from .errors import RewriteError

    used = sll_ops_used(module)
    if used:
        raise RewriteError(f"export_hard: opaque module '{path or '(model)'}' ({type(module).__name__}) calls sll ops "
                           f"in its own Python code, which no graph pass can strip ({'; '.join(used)}). "
                           "Fix: make it traceable, or call the hard ops there")


def assert_no_sll(result: nn.Module) -> None:
    """No ``torch.ops.sll`` node in any graph of ``result``, no sll op in the code of its opaque modules."""
    from .errors import RewriteError
    from .ops import is_sll_target

    for path, m in result.named_modules(remove_duplicate=False):
        if isinstance(m, fx.GraphModule):
            left = [n.name for n in m.graph.nodes if n.op == "call_function" and is_sll_target(n.target)]
            if left:
                raise RewriteError(f"export_hard: sll op(s) survived in node(s) {left} of '{path or '(model)'}'")
        elif is_opaque(m):
            refuse_sll_code(m, path)

"""Static code scans: what a module's Python code references, and how it uses ``self``.

The tracer (:mod:`sll_fx.tracer`), ``export_hard`` and :class:`~sll_fx.config.SLLConfig` read a module's code
before or instead of running it:

- :func:`behaviour_of`, :func:`hooks_of`: hooks and overrides that a graph would drop;
- :func:`autograd_function_used`, :func:`sll_ops_used`: the ``autograd.Function`` a ``forward`` references (never
  traced through: its backward would be lost), the sll ops a method references;
- :func:`mode_scan`: the grad-mode blocks (``torch.enable_grad``, ``inference_mode``, ``set_grad_enabled``) a
  ``forward`` or the methods it calls enter, and the mode readers (``torch.is_grad_enabled()``) it calls (autocast
  blocks are found by the trace itself: ``tracer._autocast_state``);
- :func:`called_by_parent`: may a shared submodule be called through a parent (``SLLConfig`` settings per parent);
- :func:`child_attributes_read`, :func:`children_used_as_values`, :func:`sequence_like`: what an opaque module
  reads of its children (a child replaced by a GraphModule keeps only its parameters, buffers and submodules);
- :func:`state_written`: which tensor attributes an opaque module's call may change (the tie check reads the
  others at their value now).

The bytecode walk behind most of them is :func:`_code_uses` (one walk per code object, cached): the attributes a
function reads off ``self`` (also through ``super()``, stored or not), whether it hands ``self`` on whole, the global
names and other attributes it loads.  Names resolve through a function's closure, globals and builtins
(:func:`_referenced`); :class:`Scans` memoizes one trace's scans.
"""

from __future__ import annotations

import builtins
import collections
import dis
import functools
import inspect
import sys
import types
import typing
from typing import Iterator

import torch
from torch import fx, nn

#: packages whose objects are not model state (a logging.Logger fills its cache on first use)
_FOREIGN = frozenset(sys.stdlib_module_names) | {"torch", "numpy", "builtins"}
_MODULE_API = frozenset(dir(nn.Module)) | {"training", "forward", "__call__"}


def _user_class(klass: type) -> bool:
    return klass is not object and (klass.__module__ or "").split(".")[0] not in _FOREIGN



def code_objects(code: types.CodeType) -> Iterator[types.CodeType]:
    yield code
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            yield from code_objects(const)


def function_of(obj):
    if type(obj) is types.FunctionType and "__func__" not in obj.__dict__:  # (most: a class's method)
        return obj
    obj = getattr(obj, "__func__", obj)  # bound methods, staticmethod/classmethod objects
    return obj if isinstance(obj, types.FunctionType) else None


def forward_of(module: nn.Module):
    """The Python function of ``module``'s ``forward`` (one set on the instance first), or None."""
    own = module.__dict__.get("forward")  # (called per module, several times: most modules set none)
    return (own is not None and function_of(own)) or function_of(getattr(type(module), "forward", None))


def _referenced(fn: types.FunctionType, owner: nn.Module | None = None, depth: int = 3, memo: dict | None = None) -> list:
    """Objects that names in ``fn``'s code (nested code included) resolve to: its closure, its
    globals, builtins, attributes of ``owner`` and of its class, and attributes of modules and
    classes reached that way (``lib.STE``, ``torch.ops.sll.sign``), read from ``__dict__`` only.

    ``memo`` (one trace's, see :class:`Scans`): what does not depend on ``owner`` itself (all but its
    instance attributes) is resolved once per function and class."""
    names = _names_in(fn.__code__)
    key = (fn, type(owner))
    shared = memo.get(key) if memo is not None else None
    if shared is None:
        spaces = []
        if fn.__closure__:
            spaces.append(closure_values(fn))
        spaces += [fn.__globals__, vars(builtins)]
        if owner is not None:
            spaces += [vars(k) for k in type(owner).__mro__]
        shared = _expand([space[n] for space in spaces for n in names if n in space], names, depth)
        if memo is not None:
            memo[key] = shared
    if owner is None:
        return shared
    own = _own_referenced(fn, owner, depth)
    return shared + own if own else shared


def _own_referenced(fn: types.FunctionType, owner: nn.Module, depth: int = 3) -> list:
    """The part of :func:`_referenced` that depends on ``owner`` itself: its instance attributes ``fn`` names."""
    names, state = _names_in(fn.__code__), owner.__dict__
    own = [state[n] for n in names if n in state]
    return _expand(own, names, depth) if own else []


#: the exact types of values that name no code (a flag, a size, a name): no scan finds a mode block, a mode reader or
#: an autograd.Function in one, nor anything further by its attributes (:func:`_expand` walks modules and classes only)
_PLAIN = frozenset((bool, int, float, complex, str, bytes, type(None)))


def _own_scanned(fn: types.FunctionType, owner: nn.Module) -> list:
    """:func:`_own_referenced` less the instance attributes of :data:`_PLAIN` types (``self.bits``, ``self.kind``):
    what :func:`mode_scan` and :func:`autograd_function_used` look through per instance, the same answer for both
    (those values are none of what they look for), without a walk for most modules (plain values only)."""
    names, state = _names_in(fn.__code__), owner.__dict__
    own = [state[n] for n in names if n in state and type(state[n]) not in _PLAIN]
    return _expand(own, names, 3) if own else []


@functools.lru_cache(maxsize=4096)  # (code objects do not change)
def _names_in(code: types.CodeType) -> tuple[str, ...]:
    """The global, attribute and free-variable names of ``code``, nested code included."""
    names: dict[str, None] = {}
    for c in code_objects(code):
        names.update(dict.fromkeys(c.co_names))
        names.update(dict.fromkeys(c.co_freevars))
    return tuple(names)


def _expand(frontier: list, names, depth: int) -> list:
    """``frontier``, and the attributes named ``names`` of the modules and classes in it, ``depth`` levels deep."""
    found = []
    for _ in range(depth):
        found += frontier
        nxt = []
        for obj in frontier:
            if isinstance(obj, (types.ModuleType, type)):
                d = vars(obj)
                nxt += [d[n] for n in names if n in d]
        frontier = nxt
    return found + frontier


class Scans:
    """The static code scans of one trace, memoized: a model of many modules of one class
    (``nn.ModuleList`` of blocks) resolves the names in that class's ``forward`` once, not once per module.
    Only for the time of one trace: globals may change between traces."""

    def __init__(self):
        self.references: dict = {}   # (function, class) -> what _referenced resolves without the instance

def autograd_function_class(obj):
    """The ``torch.autograd.Function`` subclass ``obj`` is (or whose ``apply`` it is), else None."""
    if inspect.ismethod(obj):
        obj = obj.__self__
    if isinstance(obj, type) and issubclass(obj, torch.autograd.Function) and obj is not torch.autograd.Function:
        return obj
    return None


#: a module's hook dicts that run around its forward, with the words a reason uses for them
_HOOK_DICTS = (("_forward_pre_hooks", "forward pre-hook"), ("_forward_hooks", "forward hook"),
               ("_backward_pre_hooks", "backward pre-hook"), ("_backward_hooks", "backward hook"))


def _own_hook(hook) -> bool:
    """A hook ``torch.export`` or sll_fx registered itself (``ep.module()``'s input checks, eps="auto"
    calibration).  Not torch's other hooks: ``weight_norm``, ``spectral_norm`` and ``prune`` recompute a
    weight before each forward, which a graph would not do."""
    where = getattr(hook, "__module__", None) or type(hook).__module__
    return where.startswith("torch.export.") or where == "sll_fx.calibration"


def hooks_of(module: nn.Module) -> str:
    """The hooks registered on ``module`` that run around its forward, in words ("1 forward hook,
    2 backward hooks"), or "" for none.  Hooks torch.export registers itself (``ep.module()``'s input checks) and
    sll_fx's own (the ``eps="auto"`` calibration hook of a linearized model) are left out: the tracer
    refuses to trace such a model before it calibrated.

    fx traces a module's forward with its hooks (``Module.__call__``) once, on proxies: a forward hook's
    side effects (``features.append(out)``) happen then, not when the graph runs, and a backward hook is
    dropped; the model's own hooks are not traced at all.  The tracer keeps such a module opaque."""
    parts = []
    for attr, words in _HOOK_DICTS:
        hooks = getattr(module, attr, None)
        if not hooks:  # (most modules: none registered)
            continue
        n = sum(1 for h in hooks.values() if not _own_hook(h))
        if n:
            parts.append(f"{n} {words}{'s' if n > 1 else ''}")
    return ", ".join(parts)


def behaviour_of(module: nn.Module, root: bool = False, scans: Scans | None = None,
                 modes: list[str] | None = None) -> str:
    """What ``module`` does around its forward that a traced graph would not do, in words, or "": hooks
    (:func:`hooks_of`), an overridden ``train()`` (a frozen BatchNorm: the result's ``train()`` would be
    ``nn.Module``'s), for the model itself (``root``) an overridden ``__call__`` (fx traces ``forward``),
    and a forward that reads a mode (:func:`modes_read`: ``if torch.is_grad_enabled():``; ``modes``: those,
    found already by :func:`mode_scan`)."""
    parts = []
    hooks = hooks_of(module)
    if hooks:
        parts.append(f"hooks registered ({hooks})")
    if type(module).train is not nn.Module.train:
        parts.append(f"overrides train() ({type(module).train.__qualname__})")
    if root and not isinstance(module, fx.GraphModule) and type(module).__call__ is not nn.Module.__call__:
        parts.append(f"overrides __call__() ({type(module).__call__.__qualname__})")
    if modes is None:
        modes = modes_read(module, scans)
    if modes:
        parts.append(f"reads {', '.join(modes)} in forward (a graph would keep the value it had while tracing)")
    return "; ".join(parts)


#: functions that read a mode a graph would hold as the value it had while tracing
_MODE_READERS = {torch.is_grad_enabled: "torch.is_grad_enabled()",
                 torch.is_inference_mode_enabled: "torch.is_inference_mode_enabled()",
                 torch.get_default_dtype: "torch.get_default_dtype()",
                 torch.is_autocast_enabled: "torch.is_autocast_enabled()"}


#: the blocks (context managers, decorators) that set a mode for the code inside them, which a graph records the ops
#: of but not the mode, and whose entry the trace cannot see when the mode is already the one they set: the grad
#: modes other than ``torch.no_grad`` (whose blocks the tracer finds as they run: see sll_fx.grad_regions).  Not
#: ``torch.autocast``: every entry of one raises the autocast nesting, which the trace watches (tracer._autocast_state)
_MODE_BLOCKS = {torch.enable_grad: "torch.enable_grad", torch.inference_mode: "torch.inference_mode",
                torch.set_grad_enabled: "torch.set_grad_enabled"}
_MODE_BLOCK_TYPES = tuple(_MODE_BLOCKS)


def _mode_block(obj) -> str | None:
    """The name of the mode block ``obj`` is: its class (``with torch.enable_grad():``), an instance (what a
    decorator's wrapper holds, ``@torch.inference_mode()``) or an instance's bound method
    (``@torch.enable_grad()`` holds its ``clone``), or a function such a decorator made (a decorated method
    forward calls, ``self.part(x)``), else None."""
    if isinstance(obj, types.FunctionType):
        if obj.__closure__ is None or not hasattr(obj, "__wrapped__"):
            return None
        return next((name for v in closure_values(obj).values() if (name := _mode_block(v)) is not None), None)
    if inspect.ismethod(obj):
        obj = obj.__self__
    klass = obj if isinstance(obj, type) else type(obj)
    if issubclass(klass, _MODE_BLOCK_TYPES):
        return next(name for k, name in _MODE_BLOCKS.items() if issubclass(klass, k))
    return None


def mode_scan(module: nn.Module, scans: Scans | None = None) -> tuple[list[str], list[str]]:
    """``(read, entered)``: the mode readers (``torch.is_grad_enabled()``, ...) and the mode blocks
    (``torch.enable_grad``, ``torch.inference_mode``, ``torch.set_grad_enabled``: a ``with``
    block or a decorator of ``forward``) that ``module``'s ``forward`` references; one walk for both."""
    fn = forward_of(module)
    if fn is None:
        return [], []
    memo = scans.references if scans is not None else None
    if memo is None:
        return _modes_of(fn, _referenced(fn, module))
    key = ("modes", fn, type(module))  # (what does not depend on the instance: once per function and class)
    shared = memo.get(key)
    if shared is None:
        _referenced(fn, module, memo=memo)  # (fills memo[(fn, class)]: the objects resolved without the instance)
        objects = memo[(fn, type(module))]
        read, entered = _modes_of(fn, objects)
        inner = _unwrapped(fn)  # (a user's functools.wraps decorator of forward: its wrapper names only the function)
        methods = _methods_called(fn, module)
        if inner is not None:
            more = _modes_of(inner, _referenced(inner, module, memo=memo))
            read += [r for r in more[0] if r not in read]
            entered += [b for b in more[1] if b not in entered]
            methods += [m for m in _methods_called(inner, module) if m not in methods]
        for method in methods:  # (a block in a method it calls: self.part(x))
            entered += [b for b in _modes_of(method, _referenced(method, module, memo=memo), own=False)[1]
                        if b not in entered]
        shared = memo[key] = (read, entered)
    own = _modes_of(fn, _own_scanned(fn, module), own=True)
    if not own[0] and not own[1]:
        return list(shared[0]), list(shared[1])
    return list(dict.fromkeys([*shared[0], *own[0]])), list(dict.fromkeys([*shared[1], *own[1]]))


def _unwrapped(fn: types.FunctionType) -> types.FunctionType | None:
    """The function a ``functools.wraps`` decorator wraps (``fn.__wrapped__``, unwrapped all the way), else None."""
    return function_of(inspect.unwrap(fn)) if hasattr(fn, "__wrapped__") else None


def _methods_called(fn: types.FunctionType, module: nn.Module, depth: int = 6) -> list[types.FunctionType]:
    """The functions behind the attributes ``fn`` reads on ``self`` that ``module``'s own classes define: methods,
    static and class methods, property getters (``self.part(x)``, ``with self.fp32:``), and theirs in turn, ``depth``
    calls deep.  Not ``self.enc.encode``: an attribute of another object."""
    klasses = [k for k in type(module).__mro__ if _user_class(k) and not issubclass(nn.Module, k)]
    found, todo = [], [(fn, 0)]
    while todo:
        f, level = todo.pop()
        if level >= depth:
            continue
        for name in _code_uses(f.__code__).self_attrs:
            for raw in [vars(k)[name] for k in klasses if name in vars(k)]:  # (the bases' too: super().part(x))
                g = raw.fget if isinstance(raw, property) else getattr(raw, "__func__", raw)
                if isinstance(g, types.FunctionType) and hasattr(g, "__wrapped__"):  # (its decorator is seen as
                    g = inspect.unwrap(g)                                            #  an object forward references)
                if isinstance(g, types.FunctionType) and g is not fn and g not in found:
                    found.append(g)
                    todo.append((g, level + 1))
    return found


def called_by_parent(model: nn.Module, path: str) -> bool:
    """May the submodule at ``path`` of ``model`` be called through that path?  No only when its parent's forward
    (and the methods that forward reads on ``self`` or on ``super()``, also stored, ``s = super(); s.forward(x)``)
    never reaches it: never reads ``self.<name>`` nor a container attribute holding it, and never hands ``self`` on
    whole (``getattr(self, n)``, ``helper(self, x)``, ``self.children()``; not ``type(self)``, ``isinstance(self,
    ...)``, ``self is x`` or another builtin that cannot call a module, :data:`_INERT`): an alias no forward calls,
    ``self.last = self.layers[-1]``.  A container (``nn.Sequential``, ``nn.ModuleList``, ``nn.ModuleDict``) calls
    all its own."""
    if not path:
        return True
    parent_path, _, name = path.rpartition(".")
    parent = model.get_submodule(parent_path)
    fn = forward_of(parent)
    if fn is None or isinstance(parent, (nn.Sequential, nn.ModuleList, nn.ModuleDict)):
        return True
    child = parent._modules.get(name)
    start = [fn]
    if (inner := _unwrapped(fn)) is not None:
        start.append(inner)  # (a user's functools.wraps decorator of forward: its wrapper reads nothing off self)
    for f in dict.fromkeys([*start, *(g for f in start for g in _methods_called(f, parent))]):
        uses = _code_uses(f.__code__)
        read = uses.self_attrs
        if uses.escapes or name in read or read & _WALKS or not _inert(f, uses.passed_to):
            return True
        for attr in read:  # (self.stages = [[blk]], [("b", blk)], a namespace, functools.partial(f, blk))
            held = parent.__dict__.get(attr)
            if held is not None and _holds(held, child, [_HELD_ITEMS]):
                return True
    return False


#: how deep, and over how many values, :func:`_holds` looks into what an attribute holds
_HELD_DEPTH, _HELD_ITEMS = 4, 1000


def _holds(v, target, budget: list, depth: int = 0) -> bool:
    """Is ``target`` in what ``v`` holds, a few levels deep: items of lists, tuples, sets and dicts, the attributes
    of a plain object (``types.SimpleNamespace``), the function and arguments of a ``functools.partial``, the object
    of a bound method, a function's closure?  Not inside modules, tensors, classes or module objects.  ``budget``:
    ``[values left to look at]``, shared by the whole walk."""
    if v is target:
        return True
    budget[0] -= 1
    if depth >= _HELD_DEPTH or budget[0] < 0 or isinstance(v, (nn.Module, torch.Tensor, type, types.ModuleType,
                                                                 str, bytes, int, float, bool)):
        return False
    if isinstance(v, dict):
        items = v.values()
    elif isinstance(v, (list, tuple, set, frozenset, collections.deque)):
        items = v
    elif isinstance(v, functools.partial):
        items = (v.func, *v.args, *v.keywords.values())
    elif isinstance(v, types.MethodType):
        items = (v.__self__, v.__func__)
    elif isinstance(v, types.FunctionType):
        items = closure_values(v).values()
    elif hasattr(v, "__dict__"):
        items = vars(v).values()
    else:
        return False
    return any(_holds(x, target, budget, depth + 1) for x in items)


#: methods of self through which a forward may reach any child
_WALKS = frozenset(("children", "named_children", "modules", "named_modules", "_modules", "__getattr__",
                    "get_submodule", "__dict__", "__getattribute__"))

#: builtins that cannot call a module handed to them (``type(self).__name__``, ``isinstance(self, nn.Module)``)
_INERT = frozenset((type, isinstance, issubclass, id, repr, str, hash, print, len, callable, hasattr, format, ascii,
                    bool))


def _inert(fn: types.FunctionType, names: frozenset) -> bool:
    """Are the global names ``names`` of ``fn``'s code all builtins of :data:`_INERT` (not rebound in its module)?"""
    space, default = fn.__globals__, vars(builtins)
    for n in names:
        v = space[n] if n in space else default.get(n)
        try:
            if v not in _INERT:
                return False
        except TypeError:  # (unhashable)
            return False
    return True


class _CodeUses(typing.NamedTuple):
    """How a function's code (nested code included) uses ``self``, its first argument, and other names."""
    self_attrs: frozenset   # attribute names it loads from self, or from super() (super().forward(x), s.forward(x))
    escapes: bool           # self goes elsewhere too: an argument of a call, getattr(self, n), returned
    names: frozenset        # names it loads as globals or free variables (self aside)
    other_attrs: frozenset  # attribute names it loads from anything else (torch.enable_grad)
    passed_to: frozenset    # global names of the calls self is otherwise a plain argument of (type(self))


_SKIPPED = frozenset(("CACHE", "EXTENDED_ARG", "NOP"))
#: instructions that push one value and pop none
_PUSHES = frozenset(("LOAD_CONST", "LOAD_FAST", "LOAD_FAST_CHECK", "LOAD_DEREF", "LOAD_GLOBAL", "LOAD_NAME",
                     "LOAD_CLASSDEREF"))
_CALLS = {"CALL": 0, "CALL_FUNCTION": 0, "CALL_FUNCTION_KW": 1, "CALL_KW": 1}  # (1: a tuple of names pushed too)
_NULL_FLAG = sys.version_info >= (3, 11)  # (LOAD_GLOBAL's low bit: a NULL pushed, the global is called)
_METHOD_FLAG = sys.version_info >= (3, 12)  # (LOAD_ATTR's low bit: a method load, pushes two)
_SELF_LOADS = ("LOAD_FAST", "LOAD_DEREF", "LOAD_CLOSURE")


def _single_push(ins: dis.Instruction) -> bool:
    return ins.opname in _PUSHES and not (_NULL_FLAG and ins.opname == "LOAD_GLOBAL" and ins.arg & 1)


def _consumer(ins: list, i: int) -> tuple[int, int]:
    """``(j, n)``: the first instruction ``ins[j]`` after ``ins[i]`` that takes the value ``ins[i]`` pushed, or
    something else than plain loads (a constant, a name, an attribute of one, a tuple of those) pushed after it;
    ``n`` values were pushed after it and are still on the stack there."""
    n = 0
    for j in range(i + 1, len(ins)):
        x = ins[j]
        op = x.opname
        if _single_push(x):
            n += 1
        elif op == "LOAD_ATTR" and n and not (_METHOD_FLAG and x.arg & 1):
            continue
        elif op == "BUILD_TUPLE" and x.arg <= n:
            n += 1 - x.arg
        elif op not in ("PRECALL", "KW_NAMES"):
            return j, n
    return len(ins), n


def _call_target(ins: list, i: int, j: int, after: int) -> str | None:
    """The global name called by the call ``ins[j]`` (``after`` values pushed after ``ins[i]`` before it) when the
    value ``ins[i]`` pushed is one of its plain arguments, the others plain loads (``isinstance(self, nn.Module)``,
    ``print("%s", self)``), else None."""
    argc = ins[j].arg + _CALLS[ins[j].opname]
    before = 0
    for k in range(i - 1, -1, -1):
        x = ins[k]
        if x.opname == "LOAD_GLOBAL" and (not _NULL_FLAG or x.arg & 1):
            if before + 1 + after == argc:
                return x.argval
            if _NULL_FLAG:
                return None
        if _single_push(x):
            before += 1
        elif not (x.opname == "LOAD_ATTR" and not (_METHOD_FLAG and x.arg & 1)):
            return None
        if before + 1 + after > argc:
            return None
    return None


def _super_calls(ins: list) -> Iterator[tuple[int, int, str | None]]:
    """``(start, end, attr)`` of each ``super()`` in ``ins``: ``ins[start:end]`` is the call, ``super(Cls, self)``
    included, and ``attr`` the name read off it (3.12's ``LOAD_SUPER_ATTR``), else ``ins[end]`` uses its result;
    ``end`` is None where ``super`` is not called so."""
    for s, x in enumerate(ins):
        if x.opname not in ("LOAD_GLOBAL", "LOAD_NAME") or x.argval != "super":
            continue
        n, end, attr = 0, None, None
        for j in range(s + 1, len(ins)):
            op = ins[j].opname
            if op == "LOAD_SUPER_ATTR":
                end, attr = j + 1, ins[j].argval
                break
            if op in _CALLS and ins[j].arg + _CALLS[op] == n:
                end = j + 1
                break
            if _single_push(ins[j]):
                n += 1
            elif op not in ("PRECALL", "PUSH_NULL"):
                break
        yield s, end, attr


@functools.lru_cache(maxsize=1024)  # (code objects do not change)
def _code_uses(code: types.CodeType) -> _CodeUses:
    """:class:`_CodeUses` of ``code``, in one walk of its instructions (two where it calls ``super()``)."""
    found, names, attrs, passed, escapes = set(), set(), set(), set(), False
    this = code.co_varnames[0] if code.co_argcount else None  # (a closure over it loads it with LOAD_DEREF)
    codes = list(code_objects(code))
    listed = [[i for i in dis.get_instructions(c) if i.opname not in _SKIPPED] for c in codes]
    selves = {this} if this is not None else set()  # (self, and where super()'s result is stored: s = super())
    taken = set()  # (ids of self loaded as super()'s argument and of the attribute read off super())
    for c, ins in zip(codes, listed):
        if "super" not in c.co_names:
            continue
        for start, end, attr in _super_calls(ins):
            if end is None:
                escapes = True  # (super itself handed on)
                continue
            taken.update(id(x) for x in ins[start:end] if x.opname in _SELF_LOADS and x.argval == this)  # (super's
            # own argument: super(Cls, self))
            if attr is not None:
                found.add(attr)
                continue
            after = ins[end] if end < len(ins) else None
            if after is not None and after.opname in ("LOAD_ATTR", "LOAD_METHOD"):
                found.add(after.argval)  # (super().forward(x))
                taken.add(id(after))
            elif after is not None and after.opname in ("STORE_FAST", "STORE_DEREF"):
                selves.add(after.argval)  # (s = super(): s.forward(x) reads the bases' forward)
            else:
                escapes = True
    for ins in listed:
        for k, x in enumerate(ins):
            if id(x) in taken:
                continue
            op = x.opname
            if op in _SELF_LOADS and x.argval in selves:
                if op == "LOAD_CLOSURE":  # (making a closure over self is no use of it)
                    continue
                nxt = ins[k + 1] if k + 1 < len(ins) else None
                if nxt is not None and nxt.opname in ("LOAD_ATTR", "LOAD_METHOD"):
                    found.add(nxt.argval)
                    taken.add(id(nxt))
                elif nxt is None or nxt.opname not in ("STORE_ATTR", "DELETE_ATTR"):
                    use = _self_use(ins, k)
                    if use is None:
                        escapes = True
                    elif use:
                        passed.add(use)
                continue
            if op in ("LOAD_GLOBAL", "LOAD_NAME", "LOAD_DEREF", "LOAD_CLASSDEREF"):
                names.add(x.argval)
            elif op in ("LOAD_ATTR", "LOAD_METHOD"):
                attrs.add(x.argval)
    return _CodeUses(frozenset(found), escapes, frozenset(names), frozenset(attrs), frozenset(passed))


def _self_use(ins: list, k: int) -> str | None:
    """How the value loaded by ``ins[k]`` (self) is used, other than reading its attributes: "" in an identity
    test ``self is x``, or formatted ``f"{self}"``; the global name of a call it is a plain argument of
    (``type(self)``, ``isinstance(self, nn.Module)``, ``print("%s", self)``); else None (handed on)."""
    j, n = _consumer(ins, k)
    if j >= len(ins):
        return None
    use = ins[j]
    op = use.opname
    if op == "IS_OP":  # (not ==: a class's __eq__ may call a child, self.blk(other))
        return "" if n <= 1 else None
    if op == "FORMAT_VALUE":
        return "" if n == (1 if use.arg & 4 else 0) else None
    if op in ("FORMAT_SIMPLE", "CONVERT_VALUE"):
        return "" if n == 0 else None
    if op in _CALLS:
        return _call_target(ins, k, j, n)
    return None


def _modes_of(fn: types.FunctionType, objects: list, own: bool = False) -> tuple[list[str], list[str]]:
    """:func:`mode_scan`'s answer for the objects ``objects`` that ``fn`` references (``own``: the instance's
    attributes, ``self.g = torch.enable_grad``: a block class found there is one, whatever name loads it)."""
    read, entered = [], []
    for obj in objects:
        try:
            name = _MODE_READERS.get(obj)
        except TypeError:  # (unhashable)
            name = None
        if name is not None:
            if name not in read:
                read.append(name)
            continue
        name = _mode_block(obj)
        if name is not None and name not in entered and (own or not isinstance(obj, type) or _loaded_as(fn, obj)):
            entered.append(name)
    return read, entered


def _loaded_as(fn: types.FunctionType, klass: type) -> bool:
    """Does ``fn``'s code load ``klass`` itself: by a global or free name bound to it (``enable_grad``, imported), or as
    an attribute of something other than ``self`` (``torch.enable_grad``)?  Not when the name is only an attribute of
    ``self`` (``self.enable_grad``, a flag named like the block)."""
    uses, cells = _code_uses(fn.__code__), closure_values(fn)
    return any(fn.__globals__.get(n) is klass or cells.get(n) is klass for n in uses.names) or \
        klass.__name__ in uses.other_attrs


def closure_values(fn: types.FunctionType) -> dict:
    """``{name: value}`` of ``fn``'s closure (its empty cells left out)."""
    out = {}
    for name, cell in zip(fn.__code__.co_freevars, fn.__closure__ or ()):
        try:
            out[name] = cell.cell_contents
        except ValueError:  # (an empty cell)
            pass
    return out


def modes_read(module: nn.Module, scans: Scans | None = None) -> list[str]:
    """The mode readers (``torch.is_grad_enabled()``, ...) that ``module``'s ``forward`` references."""
    return mode_scan(module, scans)[0]


def autograd_function_used(module: nn.Module, scans: Scans | None = None):
    """The first autograd.Function subclass that ``module``'s ``forward`` references, or None."""
    fn = forward_of(module)
    if fn is None:
        return None
    if scans is None:
        return _first_autograd_function(_referenced(fn, module))
    memo = scans.references
    key = ("autograd", fn, type(module))  # (what does not depend on the instance: once per function and class)
    if key not in memo:
        _referenced(fn, module, memo=memo)  # (fills memo[(fn, class)]: the objects resolved without the instance)
        memo[key] = _first_autograd_function(memo[(fn, type(module))])
    # (the objects resolved without the instance come first in _referenced's list: the first found there wins)
    return memo[key] or _first_autograd_function(_own_scanned(fn, module))


def _first_autograd_function(objects: list):
    """The first ``autograd.Function`` subclass among ``objects`` (or whose ``apply`` one is), else None."""
    return next((cls for obj in objects if (cls := autograd_function_class(obj)) is not None), None)


def _user_functions(module: nn.Module) -> Iterator[types.FunctionType]:
    """``forward`` (also one set on the instance) and every method of the module's own classes."""
    fn = function_of(module.__dict__.get("forward"))
    if fn is not None:
        yield fn
    for klass in type(module).__mro__:
        if klass.__module__.split(".")[0] == "torch" or klass is object:
            continue
        for value in vars(klass).values():
            if isinstance(value, property):
                value = value.fget
            fn = function_of(value)
            if fn is not None:
                yield fn


#: keyword arguments by which a call writes in place (``torch.add(a, b, out=c)``, ``F.relu(h, inplace=True)``)
_WRITING_KEYWORDS = frozenset(("out", "inplace"))
#: names by which code writes what it reaches, besides in-place ops (a name ending in one ``_``)
_WRITING_NAMES = frozenset(("data", "setattr", "delattr", "register_buffer", "register_parameter", "__setattr__",
                            "__setitem__", "__delitem__", "__iadd__", "__isub__", "__imul__", "__itruediv__", "iadd",
                            "isub", "imul", "itruediv", "ifloordiv", "imod", "ipow", "iand", "ior", "ixor"))


def _in_place_name(name) -> bool:
    return isinstance(name, str) and name.endswith("_") and not name.startswith("_") and name.isidentifier()


@functools.lru_cache(maxsize=1024)  # (code objects do not change)
def _writes_in(code: types.CodeType) -> bool:
    """May ``code`` (nested code included) write a tensor it reaches: an attribute or item assignment
    (``self.n = ...``, ``t[0] = v``, ``self.count += 1``, ``setattr``, ``register_buffer``), an in-place method or
    function (a name ending in one ``_``: ``fill_``, ``copy_``, ``torch.relu_``, also as a string:
    ``getattr(t, "add_")``), ``.data``, an ``out=`` or ``inplace=`` keyword?  A name scan, so a yes may be for
    anything else (a local list's item); a no is certain for the code itself."""
    for c in code_objects(code):
        if any(n in _WRITING_NAMES or _in_place_name(n) for n in c.co_names):
            return True
        if any(_in_place_name(k) or isinstance(k, tuple) and _WRITING_KEYWORDS.intersection(k) for k in c.co_consts):
            return True
        if any(i.opname in ("STORE_ATTR", "DELETE_ATTR", "STORE_SUBSCR", "DELETE_SUBSCR", "STORE_SLICE") or
               i.opname.startswith("INPLACE_") or i.opname == "BINARY_OP" and str(i.argrepr).endswith("=")
               for i in dis.get_instructions(c)):  # (t = self.thr; t += 0.5)
            return True
    return False


def state_written(module: nn.Module) -> list[str]:
    """The submodules of ``module`` (qualified names relative to it, ``""`` for itself) whose tensor attributes, and
    those of the modules under them, a call of ``module`` (kept opaque, or a torch.nn leaf) may change: a torch
    module holding buffers (BatchNorm's running statistics, an observer's: only its own), or a module whose code of
    the user's may write (:func:`_writes_in`): ``forward``, the methods it calls, and what they name, three levels
    deep (functions, the methods of the user's objects and classes they reach: ``self.tracker.update(x)``).  A parent
    reading such an attribute in its graph (``self.child.zp`` as a zero point) reads a value the call may change."""
    found: list[str] = []
    for path, m in module.named_modules():
        if any(p == "" or path == p or path.startswith(p + ".") for p in found):
            continue
        forward = forward_of(m)
        if not _user_class(type(m)) and (forward is None or not _user_code(forward)):
            if any(b is not None for b in m._buffers.values()):
                found.append(path)
        elif forward is not None and any(_may_write(fn, m, 3, set()) for fn in (forward, *_methods_called(forward, m))):
            found.append(path)
    return found


def _may_write(fn: types.FunctionType, owner, depth: int, seen: set) -> bool:
    """May ``fn``, or what it names (functions; the methods of the user's objects and classes), ``depth`` levels
    deep, write (:func:`_writes_in`)?"""
    if fn in seen:
        return False
    seen.add(fn)
    if _writes_in(fn.__code__):
        return True
    if depth == 0:
        return False
    for obj in _referenced(fn, owner if isinstance(owner, nn.Module) else None):
        f = function_of(obj)
        if f is not None:
            if _user_code(f) and _may_write(f, None, depth - 1, seen):
                return True
            continue
        klass = obj if isinstance(obj, type) else type(obj)
        if isinstance(obj, (nn.Module, types.ModuleType)) or not _user_class(klass):
            continue
        for value in vars(klass).values():  # (a helper object's methods: self.tracker.update(x))
            g = function_of(value.fget if isinstance(value, property) else value)
            if g is not None and _may_write(g, None, depth - 1, seen):
                return True
    return False


def _user_code(fn: types.FunctionType) -> bool:
    return (fn.__module__ or "").split(".")[0] not in _FOREIGN


def _is_sll(obj) -> bool:
    """An sll op, the ``torch.ops.sll`` namespace, an explicit op, or a ``sll_fx.linearize`` block (the object a
    ``with`` enters or a decorator holds, a function it decorates): what makes code run sll ops.  (Not the name
    ``linearize`` itself, which code may read as anything else: a block entered in forward keeps the module opaque
    with its own reason, see :func:`refuse_sll_code`.)"""
    from .dynamic import Linearize
    from .ops import is_sll_target

    if isinstance(obj, Linearize) or (callable(obj) and isinstance(getattr(obj, "sll_linearize", None), Linearize)):
        return True
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


def child_attributes_read(module: nn.Module, only: str | None = None) -> dict[str, set[str]]:
    """``{child: {attr, ...}}`` for each ``self.child.attr`` in the module's own methods, where
    ``attr`` is something a GraphModule standing in for the child would not have (``only="store"``:
    only those assigned or deleted, ``self.child.attr = ...``; ``only="load"``: only those read)."""
    children = {n: c for n, c in module._modules.items() if c is not None}
    out: dict[str, set[str]] = {}
    if not children:
        return out
    for fn in _user_functions(module):
        code = fn.__code__
        if not code.co_varnames or code.co_argcount == 0:
            continue
        this = code.co_varnames[0]
        for c in code_objects(code):
            ins = [i for i in dis.get_instructions(c) if i.opname not in ("CACHE", "EXTENDED_ARG")]
            for a, b, d in zip(ins, ins[1:], ins[2:]):
                if (a.opname == "LOAD_FAST" and a.argval == this and b.opname == "LOAD_ATTR" and b.argval in children
                        and d.opname in ("LOAD_ATTR", "LOAD_METHOD", "STORE_ATTR", "DELETE_ATTR")):
                    child, attr = children[b.argval], d.argval
                    if d.opname == "LOAD_ATTR" or d.opname == "LOAD_METHOD":
                        if only == "store" or attr in _MODULE_API or attr in child._parameters \
                                or attr in child._buffers or attr in child._modules:
                            continue
                    elif only == "load":
                        continue
                    out.setdefault(b.argval, set()).add(attr)
    return out


#: what a module class defines to be iterated, indexed, sliced or measured (``nn.Sequential``, ``nn.ModuleList``)
_SEQUENCE_API = ("__iter__", "__getitem__", "__len__")


def sequence_like(m: nn.Module) -> bool:
    """Can ``m`` be iterated, indexed, sliced or measured with ``len()`` (``nn.Sequential``, ``nn.ModuleList``,
    a user's container module), which a GraphModule standing in for it cannot?"""
    return any(getattr(type(m), n, None) is not None for n in _SEQUENCE_API)


def children_used_as_values(module: nn.Module) -> set[str]:
    """The children ``module``'s own methods (not ``__init__``: an opaque copy never runs it) use as values, other
    than calling them or reading their attributes: ``for layer in self.seq``, ``self.seq[0]``, ``self.seq[:2]``,
    ``len(self.seq)``, ``enumerate(self.seq)``, ``seq = self.seq``; only the :func:`sequence_like` ones (what
    else a parent does with a child, passing it to ``checkpoint(self.block, x)`` say, a GraphModule does too)."""
    children = {n for n, c in module._modules.items() if c is not None and sequence_like(c)}
    out: set[str] = set()
    if not children:
        return out
    flagged = sys.version_info >= (3, 12)  # (LOAD_ATTR's low bit: a method load, ``self.seq(x)``)
    for fn in _user_functions(module):
        code = fn.__code__
        if fn.__name__ == "__init__" or not code.co_varnames or code.co_argcount == 0:
            continue
        this = code.co_varnames[0]
        for c in code_objects(code):
            ins = [i for i in dis.get_instructions(c) if i.opname not in ("CACHE", "EXTENDED_ARG")]
            for a, b, d in zip(ins, ins[1:], ins[2:]):
                if (a.opname.startswith("LOAD_FAST") and a.argval == this and b.opname == "LOAD_ATTR"
                        and b.argval in children and not (flagged and b.arg & 1)
                        and d.opname not in ("LOAD_ATTR", "LOAD_METHOD", "STORE_ATTR", "DELETE_ATTR")):
                    out.add(b.argval)
    return out


#: the method names that turn a tensor into bools or integers (``spike.bool()``, ``.long()``)
_CONVERSIONS = frozenset(("bool", "long", "int", "short", "byte"))


def conversions_read(module: nn.Module) -> list[str]:
    """The integer or bool conversions (``.bool()``, ``.long()``, ...) that the module's ``forward`` spells, by name
    (``[".bool()"]``): an opaque module's Python code reads a traced child's result so, which the graph's planner
    never sees (in a graph such a use reads the hard result)."""
    found: set[str] = set()
    fn = forward_of(module)
    for c in code_objects(fn.__code__) if fn is not None else ():
        found.update(i.argval for i in dis.get_instructions(c)
                     if i.opname in ("LOAD_ATTR", "LOAD_METHOD") and i.argval in _CONVERSIONS)
    return [f".{n}()" for n in sorted(found)]

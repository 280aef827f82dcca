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
it again, also after ``copy.deepcopy`` or ``pickle``.  An opaque copy also has its own shallow
copies of the module's plain list/dict/set/deque attributes: what its forward assigns or changes
there (``self.v = ...``, ``self.history.append(...)``, SpikingJelly's ``self._memories``) is the
copy's state, not the user's module's; tensors stay shared.

:class:`ShadowTree` holds the private copies of a whole module tree that a trace runs on (fx runs
each traced forward, which may assign module state), and finds what a trace changed there: a
module whose forward changes module state is kept opaque (see :mod:`sll_fx.tracer`).

:func:`map_graphs` runs a graph pass on every GraphModule of such a tree (the top one and
those inside opaque copies, at any depth), on copies, and merges their reports.

The static code scans the tracer and ``export_hard`` use (which ``autograd.Function`` or mode block a
``forward`` references, what an opaque module reads of its children, which parents call a shared submodule) are
in :mod:`sll_fx.scans`.
"""

from __future__ import annotations

import argparse
import collections
import copy
import dataclasses
import itertools
import operator
import types
from typing import Callable

import torch
from torch import fx, nn

from .report import OpaqueModule, RewriteReport
from .scans import (_FOREIGN, _names_in, _referenced, _user_class, closure_values, conversions_read, forward_of,
                    sll_ops_used)

MARK = "_sll_fx_opaque"

#: the dict/set containers every nn.Module keeps in its __dict__ (copied by private_copy)
_CONTAINERS = tuple(k for k, v in nn.Module().__dict__.items() if isinstance(v, (dict, set)))
_CONTAINERS_SET = frozenset(_CONTAINERS)
_CONTAINER_VALUES = operator.itemgetter(*_CONTAINERS)  # (a module's __dict__ -> their values, in that order)
#: the containers of hooks (and of their flags) among them
_HOOK_CONTAINERS = tuple(k for k in _CONTAINERS if "hooks" in k)
#: module attributes of these exact types are copied for a trace (and for an opaque copy): state a forward may change
_MUTABLE = (list, dict, set, collections.OrderedDict, collections.defaultdict, collections.deque)
#: the containers whose items are a module's parameters, buffers and children (named by the item in a report)
_SLOTS = ("_parameters", "_buffers", "_modules")


def join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix and name else prefix or name


# ----------------------------------------------------------------------------------------
# private copies and their marker
# ----------------------------------------------------------------------------------------

def private_copy(module: nn.Module, own: bool = False, memo: dict | None = None) -> nn.Module:
    """A new instance of ``type(module)`` sharing every value, with its own module containers.

    ``own=True``, or ``module`` an opaque copy: the copy also has its own shallow copy of each plain
    list, dict, set or deque attribute (:func:`owned_values`), so that an opaque module's forward
    changing ``self.history`` or SpikingJelly's ``self._memories`` changes the copy's state, as
    rebinding ``self.v`` does; the items in them, and every tensor, stay shared.  ``memo`` (one per
    tree of copies) keeps a container that several modules share one object among their copies."""
    new = _shallow_copy(module)
    if own or MARK in new.__dict__:
        state = new.__dict__
        for key in owned_values(state):
            v = state[key]
            held = memo.get(id(v)) if memo is not None else None
            if held is None:
                held = (v, copy.copy(v))  # (the original is held: its id stays its own)
                if memo is not None:
                    memo[id(v)] = held
            state[key] = held[1]
    return new


def own_leaves(result: nn.Module, source: nn.Module, is_leaf: Callable[[nn.Module], bool]) -> None:
    """Give ``result`` a private copy (:func:`private_copy`, children copied too) of every module it shares
    with ``source`` for which ``is_leaf`` holds (the torch.nn leaves a graph calls), so that the two have
    their own ``train()``/``eval()`` flags while sharing every parameter and buffer tensor and the hooks
    (the same hook dicts: a hook removed from the model's module is gone from the copy too).  One copy per
    module object (tied modules stay tied).  Only containers of ``result``'s own are edited: a module it
    shares with ``source`` otherwise (a skipped submodule) is left as it is, children and all.  A lazy
    module not initialized yet stays shared (a copy would initialize parameters of its own)."""
    shared = {id(m) for m in source.modules()}
    memo: dict[int, nn.Module] = {}

    def copy_tree(m: nn.Module) -> nn.Module:
        new = memo.get(id(m))
        if new is None:
            new = memo[id(m)] = private_copy(m)
            for key in _HOOK_CONTAINERS:  # (hooks added to or removed from the model's module apply here too)
                if key in m.__dict__:
                    new.__dict__[key] = m.__dict__[key]
            for name, child in list(new._modules.items()):
                if child is not None:
                    new._modules[name] = copy_tree(child)
        return new

    def visit(m: nn.Module) -> None:
        for name, child in list(m._modules.items()):
            if child is None:
                continue
            if id(child) not in shared:
                visit(child)
            elif is_leaf(child) and not _uninitialized(child):
                m._modules[name] = copy_tree(child)

    if id(result) not in shared:
        visit(result)


def _uninitialized(m: nn.Module) -> bool:
    return any(isinstance(x, torch.nn.modules.lazy.LazyModuleMixin) and x.has_uninitialized_params()
               for x in m.modules())


def _shallow_copy(module: nn.Module) -> nn.Module:
    new = object.__new__(type(module))
    state = dict(module.__dict__)
    for key in _CONTAINERS:
        if key in state and isinstance(state[key], (dict, set)):
            state[key] = state[key].copy()
    new.__dict__.update(state)
    return new


def _shadow_copy(module: nn.Module, shared: list) -> tuple[nn.Module, bool]:
    """:class:`ShadowTree`'s copy of ``module``: a new instance of its class with a copy of its ``__dict__``, in which
    each module container (:data:`_CONTAINERS`) that holds something is copied and each empty one is ``module``'s
    own, appended to ``shared`` (most of them: the hook dicts).  Also returns whether the ``__dict__`` holds a value
    other than a container or a scalar (:data:`_SCALARS`), which the tree copies, records or relinks."""
    state = dict(module.__dict__)
    try:
        held = _CONTAINER_VALUES(state)
    except KeyError:  # (a module without one of them: made by an older torch, unpickled)
        held = None
    if held is not None:  # (C-level passes where a loop over the ~20 keys was one of the tree's largest costs)
        for key in itertools.compress(_CONTAINERS, held):  # (those holding something: one or two)
            v = state[key]
            if isinstance(v, (dict, set)):
                state[key] = v.copy()
        shared.extend(itertools.filterfalse(None, held))  # (the empty ones: a None there too, never written)
        other = not _SCALARS.issuperset(map(type, map(state.__getitem__, state.keys() - _CONTAINERS_SET)))
    else:
        other = False
        for key, v in state.items():  # (values replaced in place: the dict's size does not change)
            if type(v) in _SCALARS:
                continue
            if key not in _CONTAINERS_SET:
                other = True
            elif not v:
                shared.append(v)
            elif isinstance(v, (dict, set)):
                state[key] = v.copy()
    new = object.__new__(type(module))
    object.__setattr__(new, "__dict__", state)
    return new, other


def owned_values(state: dict) -> list[str]:
    """The keys of ``state`` (a module's ``__dict__``) holding a plain mutable container that
    :func:`private_copy` copies for an opaque copy and :class:`ShadowTree` for a trace."""
    return [k for k, v in state.items() if type(v) in _MUTABLE and k not in _CONTAINERS_SET]


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
# shadow trees: what a trace runs on, and what it changed
# ----------------------------------------------------------------------------------------

#: ``__dict__`` keys of sll_fx's own bookkeeping on a module (not the model's state)
_OWN_KEYS = "_sll_"


def sealed_reason(m: nn.Module) -> str | None:
    """Why ``m`` runs only as it is (a ``torch.compile`` wrapper, a TorchScript module), else None: its forward
    is not Python code fx can trace, nor code that would call a rewritten copy of its children."""
    if isinstance(m, torch._dynamo.eval_frame.OptimizedModule):
        return ("compiled with torch.compile: runs as compiled, its discrete ops stay hard (compile after "
                "linearizing: torch.compile(sll_fx.linearize_module(model)))")
    if isinstance(m, torch.jit.ScriptModule):
        return ("a TorchScript module: runs as scripted, its discrete ops stay hard (linearize the module "
                "before scripting it)")
    return None


class ShadowTree:
    """Private copies of a module and of every submodule in it, for one trace.

    ``torch.fx`` runs the ``forward`` of each module it traces into, so whatever a forward assigns
    (``self.v = self.v * decay + x``, ``self.calls += 1``, ``self.firing_rate = spike.mean()``) would
    land on the user's module, a Proxy at that.  The tracer therefore traces :attr:`root`: a private
    copy of each module (one per module object, so tied modules stay tied), whose children are the
    copies, with its own copy of each module container that holds something (``_parameters``,
    ``_modules``, ...; an empty one, most hook dicts, is the user's module's own: what the trace
    registers there, a hook or a buffer, is seen by :meth:`changes` and removed by
    :meth:`restore_nested`), with its own shallow copy of each plain list/dict/set/deque
    attribute (one per container object, modules in it and in tuples replaced by their copies) and
    a clone of each tensor attribute that is neither a parameter nor a buffer (fx runs an in-place op
    on one for real).  Parameters and buffers are the user's tensors: fx reads them as graph inputs
    and never runs an op on them.

    :meth:`changes` lists what the trace changed on a copy (a graph cannot keep that state) and
    :meth:`restore` puts the user's modules and tensors back where fx put a copy into the
    GraphModule it built (the leaves it calls, the tensor attributes it reads).
    """

    def __init__(self, model: nn.Module):
        self.copy_of: dict[int, nn.Module] = {}     # id(user's module) -> its copy
        self.original: dict[int, object] = {}       # id(copy) -> the user's module, tensor or container
        self.modules: list[nn.Module] = []          # the user's modules copied, parents first
        self.copies: list[nn.Module] = []           # their copies, in the same order
        self._values: dict[int, object] = {}        # id(user's container or tensor) -> its copy
        self._versions: dict[int, int] = {}         # id(tensor clone) -> its version counter when made
        self._nested: dict[int, dict[str, list]] = {}  # id(copy) -> {key: ids of the snapshots under it}
        self._snapshots: dict[int, tuple] = {}      # id(object) -> (object, its contents before the trace)
        self._subtrees: dict[int, list] = {}        # id(object) -> the snapshot ids recorded under it
        self._changed: set[int] | None = None       # the snapshot ids whose object the trace changed
        self._globals: dict = {}                    # forward function -> its module-level containers
        self._shared: list = []                     # the user's empty module containers the copies share
        self._written: bool | None = None           # whether the trace wrote into one of them (after the trace)
        relink: list[nn.Module] = []                # the copies holding other values than containers and scalars
        self.root = self._copy(model, relink)
        for c in relink:
            self._relink(c)

    def _copy(self, m: nn.Module, relink: list) -> nn.Module:
        c = self.copy_of.get(id(m))
        if c is not None:
            return c
        if sealed_reason(m) is not None:  # (never traced into nor run by the trace: the user's own, shared)
            self.copy_of[id(m)] = m
            return m
        c, other = _shadow_copy(m, self._shared)
        self.copy_of[id(m)] = c
        self.original[id(c)] = m
        self.modules.append(m)
        self.copies.append(c)
        if other:  # (else only containers and scalars, a flag, a size: nothing to copy, record or relink)
            relink.append(c)
            state = c.__dict__
            for key, v in state.items():  # (values replaced in place: the dict's size does not change)
                if key in _CONTAINERS_SET or type(v) in _SCALARS:
                    continue
                if type(v) in _MUTABLE:  # (owned_values)
                    state[key] = self._value(v, copy.copy)
                elif isinstance(v, torch.Tensor) and not isinstance(v, nn.Parameter):
                    state[key] = self._value(v, _clone)
                    continue
                found = self._snapshot(v, False, [])  # what the copy shares deeper down: lists in a dict, an object
                if found:
                    self._nested.setdefault(id(c), {})[key] = found
        for label, v in self._global_containers(m):  # (a module-level cache or counter its forward writes into)
            self._nested.setdefault(id(c), {})[label] = self._snapshot(v, False, [])
        children = c._modules
        if children is not m._modules:  # (else empty: shared, nothing to copy)
            for name, child in children.items():  # (values replaced in place)
                if child is not None:
                    children[name] = self._copy(child, relink)
        return c

    @property
    def pairs(self):
        """``(the user's module, its copy)`` for each module of the tree, parents first."""
        return zip(self.modules, self.copies)

    def _global_containers(self, m: nn.Module) -> list[tuple[str, object]]:
        """:func:`_global_containers`, once per forward function and class of the tree."""
        key = (forward_of(m), type(m)) if "forward" in m.__dict__ else type(m)  # (most: the class's forward)
        found = self._globals.get(key)
        if found is None:
            found = self._globals[key] = _global_containers(m)
        return found

    def _snapshot(self, v, copied: bool, found: list, depth: int = 0) -> list:
        """Record the contents of the mutable state reachable from the user's value ``v`` that the trace's
        copy shares with it (``copied``: ``v`` itself was copied, its items are shared): lists, dicts,
        sets, deques, plain objects' ``__dict__`` and tensors (not modules, functions or classes).  Appends
        the ids of the objects recorded to ``found``; an object reached again (shared by several modules, a
        config) adds what was recorded under it the first time, without a second walk.  A tensor there (not a
        Parameter) is recorded with its version counter and a backup of its value (an in-place update,
        ``self.meter.total.add_(1)``, runs for real while tracing)."""
        if type(v) in _SCALARS:  # (most values of a module's __dict__: a flag, a size; nothing to record)
            return found
        if isinstance(v, torch.Tensor):
            if not isinstance(v, nn.Parameter):
                if id(v) not in self._snapshots:
                    backup = _TensorBackup.of(v)
                    if backup is None:
                        return found
                    self._snapshots[id(v)] = (v, backup)
                found.append(id(v))
            return found
        if depth > _SNAPSHOT_DEPTH or isinstance(v, (nn.Module, type)) or callable(v) and \
                not hasattr(v, "__dict__"):
            return found
        if not copied and id(v) in self._subtrees:
            found.extend(self._subtrees[id(v)])
            return found
        if type(v) in _MUTABLE:
            items = list(v.values()) if isinstance(v, dict) else list(v)
        elif type(v) is tuple:
            items = list(v)
        elif _plain_object(v):
            items = list(vars(v).values())
        else:
            return found
        first = len(found)
        if not copied:
            self._subtrees[id(v)] = []  # (a cycle back to it adds nothing)
            if type(v) is not tuple:
                if id(v) not in self._snapshots:
                    contents = dict(vars(v)) if _plain_object(v) else (dict(v) if isinstance(v, dict) else list(v))
                    self._snapshots[id(v)] = (v, contents)
                found.append(id(v))
        for item in items:
            self._snapshot(item, False, found, depth + 1)
        if not copied:
            self._subtrees[id(v)] = found[first:]
        return found

    def restore_nested(self) -> None:
        """Put back the contents of the shared deeper state that the trace changed (a Proxy appended to
        ``self.log["spikes"]``, ``self.meter.n += 1``): the user's objects end as they began."""
        for i, (v, before) in self._snapshots.items():
            if (i in self._changed) if self._changed is not None else not _same_contents(v, before):
                _put_back(v, before)
        for v in filter(None, self._shared):  # (the user's empty module containers the copies share, which the
            v.clear()                          # trace wrote into: a hook or buffer a forward registered)

    def _changed_nested(self, c: nn.Module, key: str) -> bool:
        if self._changed is None:  # (after the trace: each object compared once)
            self._changed = {i for i, (v, before) in self._snapshots.items() if not _same_contents(v, before)}
        return any(i in self._changed for i in self._nested.get(id(c), {}).get(key, ()))

    def _value(self, v, make):
        new = self._values.get(id(v))
        if new is None:
            new = self._values[id(v)] = make(v)
            self.original[id(new)] = v
            if isinstance(new, torch.Tensor):
                self._versions[id(new)] = new._version
        return new

    def _relink(self, c: nn.Module) -> None:
        """Modules held in ``c``'s copied containers (and tuples) are the copies."""
        state, copy_of = c.__dict__, self.copy_of
        for key, v in list(state.items()):
            if key in _CONTAINERS_SET or type(v) in _SCALARS:
                continue
            if isinstance(v, nn.Module) and id(v) in copy_of:  # (set with object.__setattr__: not a child)
                state[key] = copy_of[id(v)]
            elif type(v) is tuple and any(id(x) in copy_of for x in v if isinstance(x, nn.Module)):
                state[key] = self._value(v, lambda t: tuple(copy_of.get(id(x), x) for x in t))
            elif self.original.get(id(v)) is not None and isinstance(v, (dict, list, collections.deque)):
                items = v.items() if isinstance(v, dict) else enumerate(v)
                for k, x in list(items):
                    if isinstance(x, nn.Module) and id(x) in copy_of:
                        v[k] = copy_of[id(x)]

    def shadow(self, m: nn.Module) -> nn.Module | None:
        """The copy of the user's module ``m`` (None when ``m`` is not in the tree)."""
        return self.copy_of.get(id(m))

    def _same(self, x, y) -> bool:
        return x is y or self.copy_of.get(id(x)) is y

    def _same_items(self, x, y) -> bool:
        if len(x) != len(y):
            return False
        if isinstance(x, dict):
            return all(k1 is k2 and self._same(v1, v2) for (k1, v1), (k2, v2) in zip(x.items(), y.items()))
        if isinstance(x, (set, frozenset)):
            return {id(v) for v in x} == {id(v) for v in y}
        return all(self._same(u, v) for u, v in zip(x, y))

    def changes(self, c: nn.Module, ignore=()) -> list[tuple[str, str]]:
        """What the trace changed on the copy ``c``: ``[(name, how)]``, ``how`` "assigns" (an attribute,
        parameter, buffer or child rebound, added or deleted) or "changes" (a list, dict, set, deque
        or tensor attribute changed in place, a hook registered).  Keys in ``ignore`` (fx's own
        constants on the root) and sll_fx's own bookkeeping (``_sll_*``) are left out."""
        a, b = self.original[id(c)].__dict__, c.__dict__
        nested = self._nested.get(id(c), _NOTHING)
        if self._written is None:  # (after the trace: the shared containers looked at once)
            self._written = any(self._shared)
        if not nested and not self._written and len(a) == len(b) and all(map(operator.is_, a, b)):
            # (most modules: the keys as they were, in their order, nothing deeper recorded and no shared container
            # written: only the values that are not the user's are looked at, found by one C-level pass; the same
            # answers as the walk below, which looks at these keys alone then)
            out = []
            for key in itertools.compress(a, map(operator.is_not, a.values(), b.values())):
                x, y = a[key], b[key]
                if key in _CONTAINERS_SET and not x and not y:  # (copied, both empty)
                    continue
                self._change(c, key, x, y, nested, ignore, out)
            return out
        out = [(key, "changes") for key in nested if key.startswith(OUTSIDE) and self._changed_nested(c, key)] \
            if nested else []
        if a.keys() == b.keys():  # (most modules: no key added or deleted; read without a lookup call per key)
            for key, x in a.items():
                y = b[key]
                if x is y:  # (most keys: the same value, nothing deeper recorded under it; most module containers:
                    if key in nested or key in _CONTAINERS_SET and x and _written(key, x):  # shared, empty)
                        self._change(c, key, x, y, nested, ignore, out)
                    continue
                if key in _CONTAINERS_SET and not x and not y:  # (copied, both empty)
                    continue
                self._change(c, key, x, y, nested, ignore, out)
            return out
        for key in dict.fromkeys([*a, *b]):
            x, y = a.get(key, _ABSENT), b.get(key, _ABSENT)
            if x is not y or key in nested or _written(key, x):
                self._change(c, key, x, y, nested, ignore, out)
        return out

    def _change(self, c: nn.Module, key: str, x, y, nested: dict, ignore, out: list) -> None:
        """:meth:`changes` of one key of the copy ``c``, whose value was ``x`` and is ``y`` (``_ABSENT``: no such
        key), when they differ or something deeper is recorded under it (``nested``): appended to ``out``."""
        if key in ignore or key.startswith(_OWN_KEYS):
            return
        if key in nested and self._changed_nested(c, key):
            out.append((key, "changes"))
            return
        if x is _ABSENT or y is _ABSENT:
            out.append((key, "assigns"))
            return
        if x is y and _written(key, x):  # (a container shared with the user's module, empty before the trace)
            out += [(n, "assigns") for n in x] if key in _SLOTS else [(key, "changes")]
            return
        if key in _SLOTS:
            if x.keys() == y.keys() and all(map(self._same, x.values(), y.values())):  # (most: as they were)
                return
            out += [(n, "assigns") for n in dict.fromkeys([*x, *y])
                    if n not in x or n not in y or not self._same(x[n], y[n])]
        elif key in _CONTAINERS_SET:
            if (x or y) and not self._same_items(x, y):  # (most hook containers: both empty)
                out.append((key, "changes"))
        elif self._same(x, y):
            return
        elif self._values.get(id(x)) is y:  # a copy: changed in place?
            if isinstance(y, torch.Tensor):
                if y._version != self._versions[id(y)]:
                    out.append((key, "changes"))
            elif not self._same_items(x, y):
                out.append((key, "changes"))
        else:
            out.append((key, "assigns"))

    def restore(self, gm: nn.Module) -> None:
        """Put the user's module or tensor wherever fx put a copy into ``gm`` (built from :attr:`root`)."""
        stack = [gm]
        while stack:
            m = stack.pop()
            for name, child in list(m._modules.items()):
                if child is None:
                    continue
                original = self.original.get(id(child))
                if isinstance(original, nn.Module):
                    m._modules[name] = original  # a leaf fx called: the user's module, as it is
                else:
                    stack.append(child)          # a container fx made
            for name, t in list(m._buffers.items()):
                original = self.original.get(id(t)) if t is not None else None
                if isinstance(original, torch.Tensor):
                    m._buffers[name] = original  # a tensor attribute the graph reads: the user's tensor


_ABSENT = object()  # (a key a module's __dict__ does not have)
_NOTHING: dict = {}  # (what ShadowTree._nested holds for most copies: nothing; never written)


def _written(key: str, x) -> bool:
    """Is ``x``, the value at ``key`` of both a user's module's ``__dict__`` and its :class:`ShadowTree` copy's, a
    module container the two share (empty when the copy was made: :func:`_shadow_copy`) that is not empty now?"""
    return key in _CONTAINERS_SET and isinstance(x, (dict, set)) and bool(x)

#: key prefixes of the state outside a module's instance that its forward names, in ShadowTree's records (``changes``
#: names it so: "global FEATURES", "class attribute M.counter", "closure variable counts")
OUTSIDE = ("global ", "class attribute ", "closure variable ")


def _state_value(v) -> bool:
    """Could ``v`` be state a forward changes in place: a plain list/dict/set/deque, a tensor (not a Parameter)?"""
    return type(v) in _MUTABLE or isinstance(v, torch.Tensor) and not isinstance(v, nn.Parameter)


def _global_containers(module: nn.Module) -> list[tuple[str, object]]:
    """``(label, value)`` of the state outside the module's instance that its ``forward`` names (nested code
    included): module-level and closure lists, dicts, sets, deques and tensors, and those that are class
    attributes of the user's classes it names there or of the module's own class (``self.counter``,
    ``M.counter``); labelled with a prefix of :data:`OUTSIDE`."""
    fn = forward_of(module)
    if fn is None or (fn.__module__ or "").split(".")[0] == "torch":
        return []
    names = _names_in(fn.__code__)
    spaces = [("global ", fn.__globals__)]
    if fn.__closure__:
        spaces.insert(0, ("closure variable ", closure_values(fn)))
    out, classes = {}, []
    for prefix, space in spaces:
        for name in names:
            v = space.get(name)
            if v is None:
                continue
            if _state_value(v):
                out.setdefault(f"{prefix}{name}", v)
            elif isinstance(v, type) and _user_class(v):
                classes.append(v)
    state = module.__dict__
    for klass in dict.fromkeys([*classes, *type(module).__mro__]):
        if not _user_class(klass):
            continue
        d = vars(klass)
        for name in names:
            v = d.get(name)
            if v is not None and _state_value(v) and (name not in state or klass in classes):
                out.setdefault(f"class attribute {klass.__name__}.{name}", v)
    return list(out.items())


_SNAPSHOT_DEPTH = 4
#: the types of the values :meth:`ShadowTree._snapshot` records nothing of (immutable, no ``__dict__``)
_SCALARS = frozenset((bool, int, float, complex, str, bytes, type(None)))


def _plain_object(v) -> bool:
    """An instance of a user's class holding state in its ``__dict__`` (a meter, a record), or a namespace
    (``types.SimpleNamespace``, ``argparse.Namespace``), not a module, tensor, function, class or module object."""
    return hasattr(v, "__dict__") and not isinstance(v, (nn.Module, torch.Tensor, type, types.ModuleType,
                                                          types.FunctionType, types.MethodType)) \
        and (type(v).__module__.split(".")[0] not in _FOREIGN or type(v) in _NAMESPACES)


#: the standard library's plain attribute holders, state as a user's own object is
_NAMESPACES = (types.SimpleNamespace, argparse.Namespace)


class _TensorBackup:
    """A tensor's version counter and a copy of its value, taken before a trace."""

    __slots__ = ("version", "value")

    @staticmethod
    def of(t: torch.Tensor):
        try:
            backup = _TensorBackup()
            backup.version, backup.value = t._version, t.detach().clone()
        except Exception:  # (an inference tensor has no version counter; a tensor type that cannot be cloned)
            return None
        return backup

    def put_back(self, t: torch.Tensor) -> None:
        with torch.no_grad():
            if t.shape != self.value.shape:
                t.resize_(self.value.shape)
            t.copy_(self.value)


def _same_contents(v, before) -> bool:
    if isinstance(before, _TensorBackup):
        return v._version == before.version
    now = vars(v) if isinstance(before, dict) and _plain_object(v) else v
    if isinstance(before, dict):
        return len(now) == len(before) and all(k in now and now[k] is x for k, x in before.items())
    now = list(now)
    return len(now) == len(before) and all(x is y for x, y in zip(now, before))


def _put_back(v, before) -> None:
    if isinstance(before, _TensorBackup):
        before.put_back(v)
    elif _plain_object(v):
        vars(v).clear()
        vars(v).update(before)
    elif isinstance(v, dict):
        v.clear()
        v.update(before)
    elif isinstance(v, list):
        v[:] = before
    else:  # set, deque
        v.clear()
        (v.update if isinstance(v, set) else v.extend)(before)


def _clone(t: torch.Tensor) -> torch.Tensor:
    try:
        return t.clone()
    except Exception:  # (a tensor type that cannot be cloned: traced as it is)
        return t


# ----------------------------------------------------------------------------------------
# running a pass on every graph of a fallback result
# ----------------------------------------------------------------------------------------

NESTED = "sll_nested"  # a GraphModule's meta key: its qualified name in the tree map_graphs made, when not the top


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
    values: dict = {}  # the lists/dicts/... of opaque copies, copied once each
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
            new = private_copy(m, memo=values)
            rebuild_children(new, path)
            _note_conversions(m, new)
        elif isinstance(m, fx.GraphModule):
            # a GraphModule whose code was never generated is a private one, just traced for this call
            # (trace_with_fallback(codegen=False)): edited in place; any other is copied
            new = fn(m if is_deferred(m) else copy_graph_module(m, codegen=False), path)
            if path:  # (a nested part: set_eps on it alone is refused, see annealing.nested_path)
                new.meta[NESTED] = path
            else:
                new.meta.pop(NESTED, None)
            generate_code(new)  # once, for the final graph
            reports.append(new.sll_report)
            rebuild_children(new, path)
        elif (sealed := sealed_reason(m)) is not None:  # (a compiled or scripted module: the user's own, as it is)
            opaque.append(OpaqueModule(path, type(m).__name__, sealed))
            new = m
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
    base = reports[0] if isinstance(result, fx.GraphModule) and not is_opaque(result) else empty_report
    fields = {"entries": [e for r in reports for e in r.entries], "opaque": opaque}
    if hasattr(base, "remaining"):
        fields["remaining"] = sum(getattr(r, "remaining", 0) for r in reports)
    report = dataclasses.replace(base, **fields)
    if isinstance(result, fx.GraphModule) and not is_opaque(result):
        result.sll_report = report
    else:
        result.__dict__["sll_report"] = report  # an opaque copy of the model itself
    return result


def _note_conversions(module: nn.Module, copy_: nn.Module) -> None:
    """Note on the rewritten entries of each traced child of the opaque ``module`` that returns an sll op's result
    that ``module``'s Python code converts to bools or integers (``torch.where(spike.bool(), 0, v)``): there the
    conversion reads the linearized value (0.25 inside the band is True), where in a graph it reads the hard one."""
    from .tracer import original_class
    conversions = None
    for child in copy_._modules.values():
        report = getattr(child, "sll_report", None) if isinstance(child, fx.GraphModule) else None
        if not isinstance(report, RewriteReport) or not report.rewritten or not _returns_sll(child):
            continue
        if conversions is None:
            conversions = conversions_read(module)
        if not conversions:
            return
        note = (f"returned to the Python code of opaque {original_class(module).__name__}, whose "
                f"{', '.join(conversions)} reads the linearized value, not the hard one (for the hard value there "
                "compare a 0/1 result with 0.5, spike > 0.5, and round others first, q.round().long())")
        report.entries[:] = [dataclasses.replace(e, reason="; ".join(filter(None, (e.reason, note))))
                             if e.rewritten else e for e in report.entries]


def _returns_sll(gm: fx.GraphModule) -> bool:
    """Does ``gm`` return the result of an sll op, or of a cast or view of one (``compare(...).float()``)?"""
    from .ops import is_sll_target
    out = next((n for n in reversed(gm.graph.nodes) if n.op == "output"), None)
    todo = list(out.all_input_nodes) if out is not None else []
    for _ in range(4):
        if any(n.op == "call_function" and is_sll_target(n.target) for n in todo):
            return True
        todo = [a for n in todo if n.op in ("call_method", "call_function") for a in n.all_input_nodes]
    return False


def refuse_sll_code(module: nn.Module, path: str) -> None:
    """``export_hard``'s check of an opaque module: sll ops in its own Python code cannot be stripped."""
    from .dynamic import BLOCK_KEPT, linearize
    from .errors import RewriteError

    used = sll_ops_used(module)
    reason = opaque_reason(module) or ""
    if reason.endswith(BLOCK_KEPT):  # (a block the static scan cannot see: a decorated function forward calls)
        used = [*used, reason.split(":")[0]]
    forward = forward_of(module)  # (a block entered in forward after what kept it opaque: the trace never met it)
    if not used and forward is not None and any(obj is linearize for obj in _referenced(forward, module)):
        used = [f"{forward.__qualname__} uses sll_fx.linearize"]
    if used:
        raise RewriteError(f"export_hard: opaque module '{path or '(model)'}' ({type(module).__name__}) calls sll ops "
                           f"in its own Python code, which no graph pass can strip ({'; '.join(used)}). "
                           "Fix: make it traceable, or call the hard ops there (a sll_fx.linearize block or "
                           "decorator: remove it, and linearize_module rewrites the ops of a traceable module)")


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

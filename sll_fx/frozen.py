"""Python values a traced graph froze: ``self.bits``, ``self.enabled`` read in a forward.

fx runs a forward once; a plain Python attribute it reads (``n = 2 ** self.bits - 1``, ``if not
self.enabled: return x``) becomes a constant of the graph, or decides which ops the graph has.
Changing it afterwards (a bit-width schedule, quantization switched on after a warm-up) changes
the model but not the linearized one, silently.  The tracer records, for each module whose
forward it ran, the plain values (bool, int, float, str, None, dtypes, devices, tuples of them)
that the module's own methods read as ``self.<name>`` (:func:`values_read`); the result checks
them when it is called (:func:`check`) and raises :class:`~sll_fx.errors.TraceError` naming the
attribute, both values and the fix when one changed, on the model's module or on the result's.
A ``copy.copy`` of the result checks the same; a deep copy, a pickle or a ``torch.save``/``torch.load``
checks its own module at each path (:func:`record_own`: it shares none with the model).  Under
``torch.compile`` the values are guarded, and a changed one raises while the call is retraced: the
TraceError without ``fullgraph=True`` (the call falls back to eager), with it dynamo's ``Unsupported``
error quoting the TraceError (:class:`_CompiledTraceError`).

The plain items those methods read through a container attribute with constant keys, written
straight off ``self``, are recorded and checked too: ``self.cfg["bits"]``, ``self.cfg[0]``,
``self.cfg["q"]["bits"]`` (dicts, lists, tuples) and ``self.cfg.bits`` (a ``types.SimpleNamespace``
or dataclass instance, its fields only).  Only the item read is checked (another key may change),
found the same way, in the methods' bytecode, not by running them: also ``self.cfg.get("bits")`` (a constant
key; the default, if any, a constant), and through a local name bound once to such a chain (``cfg =
self.cfg``, then ``cfg["bits"]``).  A key removed since is a change too.  A container read otherwise (indexed
with a variable key, ``self.cfg[key]``; iterated, ``for s in self.scales``, ``self.cfg.items()``; unpacked;
passed to a function; read through a name bound more than once, or through ``.get`` of a key it does not have)
is checked whole, as a copy taken at trace time: any change of its keys, their order, its length or a value (of
another type too) raises, whether or not the graph used that part.  An ``is None``/``is not None`` test does not
read it.  What is checked whole is a dict with plain keys, a list, a tuple, a namespace or a dataclass instance
whose values are plain or such containers, nested; one holding anything else (a tensor, a module, an object of
another class) is not checked, nor are the attributes of an object of another class (``self.meter.scale``).
Not seen either: a value read other than as ``self.<name>`` in the forward or a method of the module's class
it calls (``getattr(self, name)``, a module-level function given ``self``, a global).

Likewise an input whose default is ``None`` (``forward(self, x, mask=None)``) is traced as a tensor when
no ``concrete_args`` says otherwise (``if mask is not None:`` is true for a proxy); when a call
without it fails with a ``TypeError`` or an ``AttributeError`` (an sll op given None) about ``NoneType``, the
result raises a ``TraceError`` naming the input and the ``concrete_args`` fix instead (a graph that takes None there,
as ``F.linear``'s bias does, runs as before).  An input the graph does not use, which the traced forward's
own code tests against None (``if b is not None: y = y + 1``: the graph has the branch for a tensor), is
marked on its placeholder (:func:`mark_none_tested`), and a call passing None for it raises the same
``TraceError`` before running the graph (a call passing a tensor computes what the model does).
"""

from __future__ import annotations

import dis
import functools
import types
import weakref

import torch
from torch import nn

from .errors import TraceError
from .scans import code_objects, forward_of, function_of

#: ``__dict__`` key of a GraphModule's records: ``[(path, weakref to the model's module, weakref to the
#: result's own module or None, name, value)]``; ``name`` is an attribute name, or an item's :data:`Item`
RECORDS = "_sll_frozen_values"
#: ``__dict__`` key of a GraphModule's inputs whose default is None but that the graph uses: ``[(position, name)]``
NONE_INPUTS = "_sll_none_inputs"
#: ``__dict__`` key of a GraphModule's inputs whose default is None, that the traced forward tests against None and
#: that the graph does not use: ``[(position, name)]`` (present only when there is one); also the key of the
#: placeholder's ``meta`` that marks such an input (:func:`mark_none_tested`)
NONE_TESTED = "_sll_none_tested"
_PLAIN = (bool, int, float, str, type(None), torch.dtype, torch.device)
_MISSING = object()
_UNSEEN = object()  # (a name not looked up yet)
#: attributes sll_fx keeps in the graph or that nn.Module manages itself
_SKIP = frozenset({"training", "forward"})
#: an item read through a container attribute: ``(attribute, step, ...)``, each step ``("[", key)`` for
#: ``[key]`` or ``(".", name)`` for ``.name``: ``("cfg", ("[", "q"), ("[", "bits"))`` is ``cfg["q"]["bits"]``
Item = tuple
_KEYS = (str, int)  # (constant subscripts recorded)


def _plain(value) -> bool:
    if isinstance(value, tuple):
        return all(_plain(v) for v in value)
    return isinstance(value, _PLAIN)


def values_read(module: nn.Module, memo: dict | None = None) -> dict[str | Item, object]:
    """``{name: value}`` for each ``self.<name>`` that ``forward``, and the methods of the module's own
    class it calls (``self._quantize(x)``, transitively), read whose value in the module's ``__dict__``
    is a plain Python value (not a parameter, buffer, submodule, tensor or method); then
    ``{item: value}`` for each plain item they read through a container attribute that is not plain
    itself (``self.cfg["bits"]``: see :data:`Item`).  A container of plain values read whole (``for s in
    self.sizes``, ``self.cfg[key]``, ``self.cfg.items()``, ``self.cfg["q"]`` passed on) is recorded whole,
    under its name or item, as a copy (:func:`_snapshot`).

    ``memo``: a dict owned by the caller (one trace's), in which what the code reads is kept per ``forward`` function
    and class: a model of many modules of one class (``nn.ModuleList`` of blocks) scans that code once."""
    key = (forward_of(module), type(module))
    found = memo.get(key) if memo is not None else None
    if found is None:
        found = (*_code_reads(*key), {})  # (and the class's value of each name, looked up once: a name the class
        if memo is not None:              # does not have is an AttributeError made and caught, message and all)
            memo[key] = found
    names, items, read, at_class = found
    out: dict[str | Item, object] = {}
    for n in names:
        value = _attribute(module, n, at_class)
        if value is not _MISSING and _plain(value):
            out[n] = value
    for item in read:
        root = _attribute(module, item[0], at_class) if item[0] not in _SKIP else _MISSING
        if root is _MISSING or _plain(root):  # (a plain attribute is checked whole)
            continue
        value, reached = _reach(root, item)
        if item not in items:  # (only bound to a local name: its uses are read, and recorded as such)
            if reached == item and _plain(value):
                out[item] = value
            continue
        snapshot = _snapshot(value)  # (where a step finds nothing, what it was taken on is read whole)
        if snapshot is not _MISSING:
            out[reached if len(reached) > 1 else reached[0]] = snapshot
    return out


def _code_reads(forward, klass: type) -> tuple[list[str], set[Item], list[Item]]:
    """What :func:`values_read` reads off a module of class ``klass`` whose ``forward`` is ``forward``: the names of
    ``self.<name>`` read (sorted, not :data:`_SKIP`), the items read through container attributes, and those with the
    items only bound to a local name (sorted by :func:`_describe`)."""
    names: set[str] = set()
    items: set[Item] = set()
    bound: set[Item] = set()
    todo = [forward]
    done: set = set()
    while todo:
        fn = function_of(todo.pop())
        if fn is None or fn in done or (fn.__module__ or "").split(".")[0] == "torch":
            continue
        done.add(fn)
        read, chains, aliased = _reads_of_first_argument(fn.__code__)
        items |= chains
        bound |= aliased
        for name in read:
            names.add(name)
            member = getattr(klass, name, None)
            todo.append(member.fget if isinstance(member, property) else member)
    return sorted(names - _SKIP), items, sorted(items | bound, key=_describe)


def _attribute(module: nn.Module, name: str, at_class: dict):
    """``module``'s value for ``name`` in its ``__dict__``, else its class's (not a property), else _MISSING.
    ``at_class``: the class's values looked up so far, by name (one dict per class)."""
    value = at_class.get(name, _UNSEEN)
    if value is _UNSEEN:
        value = at_class[name] = getattr(type(module), name, _MISSING)
    if isinstance(value, property):
        return _MISSING
    state = module.__dict__
    return state[name] if name in state else value


def _item(value, item: Item):
    """The value at ``item``'s steps from its attribute's ``value``, or _MISSING where a step finds none."""
    value, reached = _reach(value, item)
    return value if reached == item else _MISSING


def _reach(value, item: Item) -> tuple[object, Item]:
    """``(value, prefix)``: the value at the longest prefix of ``item``'s steps that finds one, from its
    attribute's ``value`` (``cfg.items`` of a dict, ``cfg["x"]`` where ``"x"`` is not a key: ``cfg``)."""
    for n, (kind, key) in enumerate(item[1:], 1):
        if kind == "[":
            if not isinstance(value, (dict, list, tuple)):
                return value, item[:n]
            try:
                found = value[key]
            except (KeyError, IndexError, TypeError):
                return value, item[:n]
        elif isinstance(value, types.SimpleNamespace):
            found = value.__dict__.get(key, _MISSING)
        elif key in getattr(type(value), "__dataclass_fields__", ()) and not isinstance(value, nn.Module):
            found = getattr(value, key, _MISSING)
        else:
            found = _MISSING
        if found is _MISSING:
            return value, item[:n]
        value = found
    return value, item


class _Fields:
    """What :func:`_snapshot` keeps of a ``types.SimpleNamespace`` or a dataclass instance: its class, by name (a
    copy pickles without it), and a snapshot of each field."""

    def __init__(self, kind: str, fields: dict):
        self.kind, self.fields = kind, fields

    def __repr__(self) -> str:
        return f"{self.kind.rpartition('.')[2]}({', '.join(f'{k}={v!r}' for k, v in self.fields.items())})"


def _kind(value) -> str:
    return f"{type(value).__module__}.{type(value).__qualname__}"


def _fields(value) -> dict | None:
    """The fields of a namespace or a dataclass instance, else None."""
    if isinstance(value, types.SimpleNamespace):
        return vars(value)
    names = getattr(type(value), "__dataclass_fields__", None)
    if names is None or isinstance(value, (nn.Module, type)):
        return None
    return {n: getattr(value, n, _MISSING) for n in names}


def _snapshot(value):
    """``value`` when it is plain; a copy of it when it is a container of plain values (a dict with plain keys,
    a list, a tuple, a namespace or a dataclass instance, nested), to compare later (:func:`_same`); else
    _MISSING (a container holding a tensor, a module, another object)."""
    if _plain(value):
        return value
    if type(value) in (list, tuple):
        copied = [_snapshot(v) for v in value]
        return _MISSING if any(v is _MISSING for v in copied) else type(value)(copied)
    if type(value) is dict:
        copied = {k: _snapshot(v) for k, v in value.items()}
        plain = all(_plain(k) for k in value) and all(v is not _MISSING for v in copied.values())
        return copied if plain else _MISSING
    fields = _fields(value)
    if fields is not None:
        copied = {k: _snapshot(v) for k, v in fields.items()}
        return _Fields(_kind(value), copied) if all(v is not _MISSING for v in copied.values()) else _MISSING
    return _MISSING


def _same(now, then) -> bool:
    """Is ``now`` what :func:`_snapshot` made ``then`` of: the same types, keys (in order), lengths and values?"""
    if now is then:
        return True
    if isinstance(then, _Fields):
        fields = _fields(now)
        return fields is not None and _kind(now) == then.kind and _same(fields, then.fields)
    if type(now) is not type(then):
        return False
    if isinstance(then, dict):
        return len(now) == len(then) and all(_same(a, b) and _same(now[a], then[b]) for a, b in zip(now, then))
    if isinstance(then, (list, tuple)):
        return len(now) == len(then) and all(_same(a, b) for a, b in zip(now, then))
    return now == then or (isinstance(then, float) and then != then and now != now)  # (NaN is NaN)


def _describe(name: str | Item) -> str:
    """``bits``; ``cfg["q"]["bits"]``, ``cfg[0]``, ``cfg.bits`` for an :data:`Item`."""
    if isinstance(name, str):
        return name
    return name[0] + "".join((f'["{key}"]' if isinstance(key, str) else f"[{key}]") if kind == "[" else f".{key}"
                             for kind, key in name[1:])


#: the instructions that load a local (3.12+ adds the borrowing and checking spellings)
_LOAD_LOCAL = frozenset({"LOAD_FAST", "LOAD_FAST_CHECK", "LOAD_FAST_BORROW", "LOAD_DEREF"})
_CALLS = frozenset({"PRECALL", "CALL"})


@functools.lru_cache(maxsize=4096)  # (code objects do not change: one scan per method, not per module)
def _reads_of_first_argument(code) -> tuple[frozenset[str], frozenset[Item], frozenset[Item]]:
    """The names ``x`` of every ``self.x`` that ``code`` (nested code included) reads or calls; the :data:`Item`
    of every ``self.x[k]...``/``self.x.y...``/``self.x.get(k)`` chain of constant subscripts and attributes that
    is read, also where a local name bound once to such a chain continues it (``cfg = self.cfg``, then
    ``cfg["bits"]``; ``q = cfg["q"]``, then ``q.get("bits")``), a chain of one, ``("x",)``, where ``self.x``
    itself is read (iterated, indexed with a variable key, passed on, bound to a name bound more than once: not
    an ``is None`` test); and the chains bound to such a local name (read where the name is used)."""
    if not code.co_varnames or code.co_argcount == 0:
        return frozenset(), frozenset(), frozenset()
    this, names, items, bound = code.co_varnames[0], set(), set(), set()
    for c in code_objects(code):
        instructions = [ins for ins in dis.get_instructions(c) if ins.opname not in ("CACHE", "EXTENDED_ARG")]
        once = _bound_once(c, instructions)
        aliases: dict = {}  # local name -> the chain it was bound to
        for _ in range(2):  # (twice: a loop may use a name before, in the bytecode, the one store that binds it)
            _scan(instructions, this, once, aliases, names, items, bound)
    return frozenset(names), frozenset(items), frozenset(bound)


def _scan(instructions, this: str, once: frozenset[str], aliases: dict, names: set, items: set, bound: set) -> None:
    """One pass of :func:`_reads_of_first_argument` over one code object's ``instructions``."""
    previous, chain, key, get = None, None, _MISSING, 0
    for i, ins in enumerate(instructions):
        if chain is not None:  # (extend ``self.x`` while the next instructions index it or read its attributes)
            if get:  # (``.get(key)`` or ``.get(key, constant)``: 1 after ``get``, 2 after the key, 3 after a default)
                if get == 1 and ins.opname in ("LOAD_CONST", "LOAD_SMALL_INT") and type(ins.argval) in _KEYS:
                    key, get, step = ins.argval, 2, "key"
                elif get == 2 and ins.opname in ("LOAD_CONST", "LOAD_SMALL_INT"):
                    get, step = 3, "key"
                elif get in (2, 3) and ins.opname in _CALLS and ins.arg == get - 1:
                    step, get = ("[", key), (4 if ins.opname == "PRECALL" else 0)
                    key = _MISSING
                elif get == 4 and ins.opname == "CALL":
                    step, get = "key", 0
                else:
                    step, get, key = None, 0, _MISSING
            elif key is not _MISSING:  # (a constant just loaded: a subscript takes it, else the chain ends)
                subscript = ins.opname == "BINARY_SUBSCR" or (ins.opname == "BINARY_OP" and ins.argrepr == "[]")
                step, key = (("[", key) if subscript else None), _MISSING
            elif ins.opname in ("LOAD_CONST", "LOAD_SMALL_INT") and type(ins.argval) in _KEYS:
                key, step = ins.argval, "key"
            elif ins.opname in ("LOAD_ATTR", "LOAD_METHOD") and ins.argval == "get" and \
                    (ins.opname == "LOAD_METHOD" or "NULL" in ins.argrepr):
                get, step = 1, "key"
            else:
                step = (".", ins.argval) if ins.opname == "LOAD_ATTR" else None
            if step is None:
                if ins.opname == "STORE_FAST" and ins.argval in once and not ins.is_jump_target:
                    aliases[ins.argval] = chain  # (read where the name is used)
                    bound.add(chain)
                elif not _is_none_test(instructions, i):
                    items.add(chain)
                chain = None
            elif step != "key":
                chain += (step,)
        if ins.opname in ("LOAD_ATTR", "LOAD_METHOD") and previous is not None and previous.argval == this \
                and previous.opname in _LOAD_LOCAL:
            names.add(ins.argval)
            chain = (ins.argval,) if ins.argval != "get" or ins.opname == "LOAD_ATTR" and "NULL" not in ins.argrepr \
                else None
        elif ins.opname in _LOAD_LOCAL and ins.argval in aliases and chain is None:
            chain = aliases[ins.argval]
        previous = ins
    if chain is not None:
        items.add(chain)


def _is_none_test(instructions, i: int) -> bool:
    """Does the chain that ``instructions[i]`` ends only take part in an ``is None``/``is not None`` test?"""
    ins = instructions[i]
    if ins.opname.endswith(("_IF_NONE", "_IF_NOT_NONE")):
        return True
    return ins.opname == "LOAD_CONST" and ins.argval is None and i + 1 < len(instructions) and \
        instructions[i + 1].opname == "IS_OP"


def _bound_once(code, instructions) -> frozenset[str]:
    """The local names of ``code`` that one ``STORE_FAST`` binds and nothing else (not an argument, not
    deleted, not bound again)."""
    arguments = code.co_argcount + code.co_kwonlyargcount + bool(code.co_flags & 0x04) + bool(code.co_flags & 0x08)
    counts: dict[str, int] = {}
    for ins in instructions:
        if ins.opname.startswith(("STORE_FAST", "DELETE_FAST")):
            for name in (ins.argval if isinstance(ins.argval, tuple) else (ins.argval,)):
                counts[name] = counts.get(name, 0) + (1 if ins.opname == "STORE_FAST" else 2)
    return frozenset(n for n, k in counts.items() if k == 1 and n not in code.co_varnames[:arguments])


def record(gm: nn.Module, entries: list[tuple[str, nn.Module, str | Item, object]]) -> None:
    """Give ``gm`` the values to check: ``(path, the model's module, name or item, value)`` (the keys and values
    of :func:`values_read`); the result's own module at ``path`` is looked up once (None where the graph
    inlined it)."""
    if entries:
        found: dict = {}  # (the modules looked up, at each prefix: a model of many blocks looks up blocks.i for each)
        gm.__dict__[RECORDS] = [(path, weakref.ref(m), _own(gm, path, m, found), name, value)
                                for path, m, name, value in entries]


def portable(module: nn.Module) -> list[tuple[str, str | Item, object]]:
    """``module``'s records as ``(path, name or item, value)``, picklable: what a deep copy or an unpickled
    copy of it checks (:func:`record_own`)."""
    return [(path, name, value) for path, _, _, name, value in module.__dict__.get(RECORDS, ())]


def record_own(gm: nn.Module, kept) -> None:
    """Give ``gm``, a deep copy or an unpickled copy of a GraphModule, the checks :func:`portable` kept, on its own
    module at each path: it shares no module with the model (changing the model does not change the copy), and a
    value changed on the copy's module is a change of the copy."""
    record(gm, [(path, m, name, value) for path, name, value in kept if (m := _module_at(gm, path)) is not None])


def record_shared(gm: nn.Module, original: nn.Module) -> None:
    """Give ``gm``, a shallow copy of ``original`` (``copy.copy``: it shares ``original``'s modules, and so the
    model's), ``original``'s checks: on the model's module and on ``gm``'s own at each path."""
    entries = []
    for path, ref, _, name, value in original.__dict__.get(RECORDS, ()):
        m = ref()
        m = m if m is not None else _module_at(gm, path)
        if m is not None:
            entries.append((path, m, name, value))
    record(gm, entries)


def _module_at(gm: nn.Module, path: str, found: dict | None = None) -> nn.Module | None:
    """``gm.get_submodule(path)``, None where there is none; ``found``: the modules looked up so far, by path (each
    prefix of ``path`` is looked up once)."""
    if found is None or not path:
        try:
            return gm.get_submodule(path)
        except AttributeError:
            return None
    if path in found:
        return found[path]
    parent_path, _, name = path.rpartition(".")
    parent = _module_at(gm, parent_path, found) if parent_path else gm
    own = parent._modules.get(name) if parent is not None else None  # (one lookup; get_submodule's answer where
    if own is None and parent is not None:                            # it is not there)
        own = _module_at(parent, name)
    found[path] = own
    return own


def _own(gm: nn.Module, path: str, model_module: nn.Module, found: dict | None = None):
    own = _module_at(gm, path, found)
    return None if own is None or own is model_module else weakref.ref(own)


def check(gm: nn.Module) -> None:
    """Raise when a recorded value changed, on the model's module or on ``gm``'s module at that path."""
    for path, ref, own, name, value in gm.__dict__.get(RECORDS, ()):
        for m in (ref(), own() if own is not None else None):
            if m is None:
                continue
            if isinstance(name, str):
                now = getattr(m, name, _MISSING)
                if now is _MISSING:
                    continue
            else:  # (an item: a key removed since is a change; the attribute removed is not looked at)
                root = getattr(m, name[0], _MISSING)
                if root is _MISSING:
                    continue
                now = _item(root, name)
            if _same(now, value):
                continue
            where = f"{path}.{_describe(name)}" if path else _describe(name)
            compiling = torch.compiler.is_compiling()
            error = _CompiledTraceError if compiling else TraceError
            # (under torch.compile a float read from a module is a symbolic one, whose repr dynamo cannot trace: the
            # values are left out there)
            what = "changed since linearize_module traced it" if compiling and isinstance(now, float) else \
                f"is {'missing' if now is _MISSING else repr(now)} now, {value!r} when linearize_module traced it"
            raise error(
                f"'{where}' {what}: the graph holds the value it was traced with (a Python value read in forward), "
                "so the change has no effect\nFix: linearize the model again after changing it, or make it a tensor (a "
                "buffer) or a forward argument", module_path=path, module_type=type(m).__name__,
                reason=f"{where} changed since tracing")


class _CompiledTraceError(TraceError):
    """The TraceError :func:`check` raises while ``torch.compile`` traces the call (the values are guarded: a
    changed one retraces).  Dynamo cannot trace ``TraceError.__init__`` (its ``super().__init__()`` call), and
    would stop on that with an error that does not say why; this ``__init__`` sets the same attributes without
    it (``BaseException.__new__`` already holds the message).  Without ``fullgraph=True`` the call then runs
    eagerly and raises the TraceError itself; with it, dynamo's ``Unsupported`` error ("Observed exception")
    quotes this one, message and fix included."""

    def __init__(self, message: str, *, module_path: str | None = None, module_type: str | None = None,
                 reason: str | None = None):
        self.module_path, self.module_type = module_path, module_type
        self.reason = reason if reason is not None else message


#: ``__dict__`` key of a GraphModule's tensors shared with the model: ``[[path, slot, name, weakref to the model's
#: module, weakref to the result's own module, weakref to the model's tensor when last looked at]]``
#: (see :func:`record_tensors`)
TENSORS = "_sll_shared_tensors"
_SLOTS = ("_parameters", "_buffers")


def record_tensors(gm: nn.Module, model: nn.Module) -> None:
    """Record the parameters and buffers that ``gm``'s own modules (the ones fx made to hold what the graph
    reads: ``gm.q`` for ``self.q.scale`` read in a forward) share with the model's modules at the same path.
    Modules ``gm`` shares with the model (the leaves it calls) are the model's: nothing to record there."""
    found = []
    todo = [("", gm, model)]  # (gm's modules, each with the model's at the same path, in gm.named_modules' order)
    while todo:
        path, own, m = todo.pop()
        for slot in _SLOTS:
            held = m.__dict__.get(slot, {})
            for name, t in own.__dict__.get(slot, {}).items():
                if t is not None and held.get(name) is t:
                    found.append([path, slot, name, weakref.ref(m), weakref.ref(own), weakref.ref(t)])
        children = m._modules
        for name, child in reversed(own._modules.items()):
            theirs = children.get(name)
            if child is not None and theirs is not None and theirs is not child:  # (one the model shares: all under
                todo.append((f"{path}.{name}" if path else name, child, theirs))  # it is the model's too)
    if found:
        gm.__dict__[TENSORS] = found


def refresh_tensors(gm: nn.Module) -> None:
    """After ``gm`` moved and the model's buffers followed it: the tensors the two share now are the ones seen."""
    for record in gm.__dict__.get(TENSORS, ()):
        _, slot, name, ref, own_ref, _ = record
        m, own = ref(), own_ref()
        now = m.__dict__[slot].get(name) if m is not None and own is not None else None
        if now is not None and now is own.__dict__[slot].get(name):
            record[5] = weakref.ref(now)


def check_tensors(gm: nn.Module) -> None:
    """Raise when the model's module holds another tensor than the one the result shares with it, and the
    result's does not hold that one too: it was replaced on the model (``model.half()``, ``model.cuda()``,
    ``model.q.scale = t``), and the result would go on reading the old tensor.  (Moving the result moves the
    model's buffers with it, and a tensor replaced on the result alone, as FSDP does, is the result's own.)"""
    for record in gm.__dict__.get(TENSORS, ()):
        path, slot, name, ref, own_ref, tensor_ref = record
        m, own = ref(), own_ref()
        if m is None or own is None:
            continue
        now = m.__dict__[slot].get(name)
        if now is tensor_ref():  # (the model's is the one it held when last looked at)
            continue
        if now is own.__dict__[slot].get(name):  # (both moved: the result was, and the model's buffer followed)
            record[5] = weakref.ref(now)
            continue
        where = f"{path}.{name}" if path else name
        what = "parameter" if slot == "_parameters" else "buffer"
        raise TraceError(
            f"the model's {what} '{where}' was replaced since linearize_module (by an assignment, or by model.to(), "
            f".half(), .cuda(), which replace buffers): the linearized model still reads the {what} it shares with "
            "the model, the old one\nFix: move or cast the linearized model, not the model (it moves the model's "
            "buffers too), change the tensor in place (load_state_dict, copy_), or linearize again",
            module_path=path, module_type=type(m).__name__, reason=f"{where} replaced on the model")


def record_none_inputs(gm) -> None:
    """Record ``gm``'s inputs whose default is None and that its graph uses, and those that it does not use but
    that the traced forward tested against None (:func:`mark_none_tested`; see the module docstring)."""
    found, tested = [], []
    for i, node in enumerate(gm.graph.nodes):
        if node.op != "placeholder":
            break
        if node.args == (None,) and not node.target.startswith("*"):
            if node.meta.get(NONE_TESTED):  # (used or not: the graph has the branch for a tensor only)
                tested.append((i, node.target))
            elif node.users:
                found.append((i, node.target))
    gm.__dict__[NONE_INPUTS] = found
    if tested:
        gm.__dict__[NONE_TESTED] = tested
    else:
        gm.__dict__.pop(NONE_TESTED, None)


@functools.lru_cache(maxsize=1024)  # (code objects do not change)
def _none_tested(code) -> frozenset[str]:
    """The arguments of ``code`` that it tests against None (``if b is None:``, ``b is not None``, ``b == None``)."""
    arguments = set(code.co_varnames[:code.co_argcount + code.co_kwonlyargcount])
    found = set()
    instructions = [i for i in dis.get_instructions(code) if i.opname not in ("CACHE", "EXTENDED_ARG", "NOP")]
    for i, ins in enumerate(instructions[:-1]):
        if ins.opname in _LOAD_LOCAL and ins.argval in arguments:
            nxt = instructions[i + 1]
            if nxt.opname.endswith(("_IF_NONE", "_IF_NOT_NONE")) or (
                    nxt.opname == "LOAD_CONST" and nxt.argval is None and i + 2 < len(instructions)
                    and instructions[i + 2].opname in ("IS_OP", "COMPARE_OP")):
                found.add(ins.argval)
    return frozenset(found)


def mark_none_tested(graph, module: nn.Module, concrete_args) -> None:
    """Mark the placeholders of ``graph`` (just traced from ``module``) whose default is None, that the graph does
    not use and that ``module``'s forward tests against None: the trace took the branch for a value (a proxy is not
    None), so a call passing None would silently compute the other branch's result."""
    fn = forward_of(module)
    if fn is None:
        return
    tested = None
    for node in graph.nodes:
        if node.op != "placeholder":
            break
        if node.args == (None,) and not (concrete_args and node.target in concrete_args):
            if tested is None:
                tested = _none_tested(fn.__code__)
            if node.target in tested:
                node.meta[NONE_TESTED] = True


def _none_input_error(name: str, why: str) -> TraceError:
    return TraceError(
        f"input '{name}' is None here, but linearize_module traced it as a tensor (its default is None and the trace "
        f"had no value for it), and {why}\nFix: pass it, or linearize with concrete_args={{'{name}': None}} for the "
        "calls without it (one linearized model per case)", reason=f"input {name} traced as a tensor")


def check_none_tested(gm, args: tuple, kwargs: dict) -> None:
    """Before a call of ``gm``: raise a TraceError when an input recorded as tested against None
    (:func:`record_none_inputs`) is None in that call."""
    for i, name in gm.__dict__[NONE_TESTED]:
        value = args[i] if i < len(args) else kwargs.get(name)
        if value is None:
            raise _none_input_error(name, "the forward tests it against None (in its own code or in code it calls): "
                                          "the graph has only the branch for a tensor")


def check_inputs(gm, args: tuple, kwargs: dict, error: Exception) -> None:
    """After ``error`` from a call of ``gm``: raise a TraceError when an input recorded by
    :func:`record_none_inputs` was None in that call."""
    if "NoneType" not in str(error):
        return
    for i, name in gm.__dict__.get(NONE_INPUTS, ()):
        value = args[i] if i < len(args) else kwargs.get(name)
        if value is None:
            raise _none_input_error(name, "the graph uses it") from error

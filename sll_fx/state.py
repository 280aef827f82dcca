"""Keeping a GraphModule's parameters, buffers and state_dict keys identical to its model's.

``fx.GraphModule(root, graph)`` copies only what the graph touches, registers every
copied tensor as a *persistent* buffer (so non-persistent buffers and ``torch.tensor``
literals in ``forward`` grow new state_dict keys) and orders attributes by first use.
``mirror_state(gm, model)`` repairs all of that without copying a tensor: afterwards
every parameter, buffer and submodule of ``model`` is reachable in ``gm`` at the same
qualified name, as the same object, with the same persistence and in the same order,
and fx's own constants are non-persistent buffers.  The user's modules are never
modified: only containers that fx created fresh are edited.

Tied (aliased) submodules stay tied: where ``model`` holds one module object at several
names (``self.decoder = self.encoder``), ``gm`` holds one object at all of them (the
container fx made for the first name, which is the one fx's graph uses), so
``state_dict()`` has both keys, as the model's has, and loading or training either name
changes both.

Extra state (``get_extra_state``/``set_extra_state``, the ``<prefix>_extra_state`` key) is mirrored
too.  ``nn.Module.state_dict`` asks the *class* whether a module has any, so a container fx
made for a traced-through submodule with extra state becomes an :class:`ExtraStateContainer`,
and a GraphModule standing for such a model gets the two methods on its own class (fx gives
every GraphModule instance a class of its own).  The value is not copied: the GraphModule reads
and writes it through the user's module (:class:`_Live`), as it shares its tensors; a deep copy
or a pickle holds a copy of the value instead (:class:`_Stored`).

A traced-through submodule that saves or loads itself otherwise than ``nn.Module`` does (its class overrides
``_save_to_state_dict`` or ``_load_from_state_dict``, say to rename the key of an old checkpoint; or state_dict
hooks: ``register_state_dict_pre_hook``, ``(_)register_state_dict_(post_)hook``,
``register_load_state_dict_pre_hook``/``_post_hook``) does so through the GraphModule too: its container becomes a
:class:`StateModuleContainer` (the model itself: the GraphModule's own class gets the two methods), whose
``state_dict()``/``load_state_dict()`` run the user's module's methods and hooks, with the user's module (which
shares its tensors; ``load_state_dict(assign=True)`` gives both the new ones).  Its hooks are read when they run
(one registered on it later runs too), but a module with none of this when ``linearize_module`` traced it gets a
plain container.  A deep copy or a pickle holds a copy of the user's module (:class:`_OwnModule`: the class must
pickle, and its hooks) and runs it on the copy's own tensors.  An override of ``state_dict``/``load_state_dict``
themselves is not run (``nn.Module`` calls neither on submodules): override the two methods above, or use hooks.

Every container fx made for a traced-through submodule (and one made here for such a submodule the graph touches
nothing of, a parameterless ``Quant``, which would otherwise be the user's module itself) is an :class:`InlinedModule`
(or one of the two subclasses above): its forward is inlined into the graph, so a forward or backward hook on it
would never run and warns (:class:`~sll_fx.errors.InlinedModuleWarning`), and adding a parameter to it
(``torch.nn.utils.prune``) or calling it raises :class:`~sll_fx.errors.InlinedModuleError`, each naming the module
and the fix, where it would silently do nothing.

:data:`CONSTANTS` names the buffers a GraphModule holds that are no state of its model (fx's constants, a plain
tensor attribute the graph reads), so that a dtype cast leaves them alone, as ``model.half()`` does.
"""

from __future__ import annotations

import copy
import warnings
from collections import OrderedDict

from torch import fx, nn
from torch.fx.graph_module import _CodeOnlyModule
from torch.nn.modules.module import _WrappedHook

from .errors import InlinedModuleError, InlinedModuleWarning

#: ``__dict__`` key of the extra state a GraphModule or a container holds for its model's module
EXTRA_STATE = "_sll_extra_state"
#: ``__dict__`` key of the names of a GraphModule's (or a container's) buffers that are no state of its model: fx's
#: constants, a plain tensor attribute the graph reads (``self.table = torch.arange(4.)``), which ``model.half()``
#: does not cast (:meth:`~sll_fx.graph_module.SLLGraphModule._apply` keeps their dtype)
CONSTANTS = "_sll_constants"


_NONE: frozenset[str] = frozenset()  # (what most modules have: no constants, no parameter of an InlinedModule's own)


def constants_of(module: nn.Module) -> frozenset[str]:
    """The names of ``module``'s own buffers that stand for no buffer of its model (see :data:`CONSTANTS`)."""
    return module.__dict__.get(CONSTANTS, _NONE)


class _Live:
    """Extra state read and written through the user's module (the GraphModule shares it)."""

    def __init__(self, module: nn.Module):
        self.module = module

    def get(self):
        return self.module.get_extra_state()

    def set(self, state) -> None:
        self.module.set_extra_state(state)

    def __deepcopy__(self, memo) -> "_Stored":  # a copy owns its state, without a copy of the user's module
        return _Stored(copy.deepcopy(self.get(), memo))

    def __reduce__(self):
        return _Stored, (self.get(),)


class _Stored:
    """Extra state held as a value (in a deep copy or an unpickled GraphModule)."""

    def __init__(self, state):
        self.state = state

    def get(self):
        return self.state

    def set(self, state) -> None:
        self.state = state


def _get_extra_state(self):
    return self.__dict__[EXTRA_STATE].get()


def _set_extra_state(self, state) -> None:
    self.__dict__[EXTRA_STATE].set(state)


#: ``__dict__`` key of an :class:`InlinedModule`'s (qualified name in the GraphModule holding it, class name of the
#: model's module), for its errors
INLINED = "_sll_inlined"


class InlinedModule(nn.Module):
    """A container fx made for a traced-through submodule of the model (``gm.block``): it holds the module's
    parameters, buffers and children, but the module's forward is inlined into the graph of the GraphModule holding
    it (as ``torch.fx`` does), so nothing calls it.  A forward or backward hook registered on it would never run:
    registering one warns (:class:`~sll_fx.errors.InlinedModuleWarning`, not an error, so that tools hooking every
    module still run); calling it has nothing to run, and a new parameter (``torch.nn.utils.prune``'s first step)
    would never be read: both raise :class:`~sll_fx.errors.InlinedModuleError`.  Each names the module and the fix.
    State-dict hooks work as on any module (``state_dict()`` runs them)."""

    def __call__(self, *args, **kwargs):
        raise InlinedModuleError(
            f"sll_fx: {_inlined_name(self)} cannot be called: {_INLINED_WHY}\nFix: call the linearized model; for "
            "this module's output, linearize it on its own (sll_fx.linearize_module(model.<path>)), or register a "
            "forward hook on the model's module before linearize_module (the module is then kept opaque and runs "
            "as written, hooks included; its child modules are still rewritten)")

    def register_forward_hook(self, hook, *args, **kwargs):
        _warn_hook(self, "a forward hook")
        return super().register_forward_hook(hook, *args, **kwargs)

    def register_forward_pre_hook(self, hook, *args, **kwargs):
        _warn_hook(self, "a forward pre-hook")
        return super().register_forward_pre_hook(hook, *args, **kwargs)

    def register_full_backward_hook(self, hook, *args, **kwargs):
        _warn_hook(self, "a backward hook")
        return super().register_full_backward_hook(hook, *args, **kwargs)

    def register_full_backward_pre_hook(self, hook, *args, **kwargs):
        _warn_hook(self, "a backward pre-hook")
        return super().register_full_backward_pre_hook(hook, *args, **kwargs)

    def register_backward_hook(self, hook, *args, **kwargs):
        _warn_hook(self, "a backward hook")
        return super().register_backward_hook(hook, *args, **kwargs)

    def register_parameter(self, name: str, param) -> None:
        # a new name (torch.nn.utils.prune's first step); one of its own, deleted and set again (FSDP1 does that to
        # each parameter, a view of its flat one in their place), is what the graph reads
        if INLINED in self.__dict__ and name not in self._parameters and name not in self.__dict__.get(_OWN, ()):
            raise InlinedModuleError(
                f"sll_fx: cannot add parameter '{name}' to {_inlined_name(self)}: {_INLINED_WHY}; the graph reads the "
                "parameters the model had when it was linearized, so a new one would never be used\nFix: apply "
                "torch.nn.utils.prune, weight_norm or spectral_norm (or add the parameter) to the model before "
                "linearize_module")
        super().register_parameter(name, param)


_INLINED_WHY = ("its forward is inlined into the graph of the GraphModule holding it (as torch.fx does for a "
                "traced-through module), which keeps only its parameters, buffers and submodules here")


def _inlined_name(module: InlinedModule) -> str:
    path, kind = module.__dict__.get(INLINED, ("", None))
    return f"submodule '{path}' ({kind}) of a linearized model" if path else "a submodule of a linearized model"


def _warn_hook(module: InlinedModule, what: str) -> None:
    warnings.warn(
        f"sll_fx: {what} registered on {_inlined_name(module)} will never run: {_INLINED_WHY}\n"
        "Fix: register it on the model's module before linearize_module (the module is then kept opaque and runs "
        "as written, hooks included; its child modules are still rewritten), or on the linearized model itself, "
        "or on a torch.nn leaf inside it (an nn.Linear); apply torch.nn.utils.prune, weight_norm or spectral_norm "
        "to the model before linearize_module", InlinedModuleWarning, stacklevel=3)


#: ``__dict__`` key of the names of an :class:`InlinedModule`'s parameters when it was made (the ones the graph reads)
_OWN = "_sll_inlined_parameters"


def _inline(dst: nn.Module, src: nn.Module, path: str) -> None:
    """Make the plain container ``dst`` that fx made for ``src`` (at ``path``) an :class:`InlinedModule`."""
    if type(dst) is nn.Module:  # (object's __setattr__, which nn.Module's calls after testing the class for a
        object.__setattr__(dst, "__class__", InlinedModule)  # Parameter, Module, Buffer: ~16k instructions a module)
    if isinstance(dst, InlinedModule):
        dst.__dict__[INLINED] = (path, src.__dict__.get(INLINED, (path, type(src).__name__))[1])
        dst.__dict__[_OWN] = frozenset(dst._parameters) if dst._parameters else _NONE


class ExtraStateContainer(InlinedModule):
    """A container fx made for a traced-through submodule that has extra state."""
    get_extra_state = _get_extra_state
    set_extra_state = _set_extra_state


def _extra_state(module: nn.Module):
    """What holds ``module``'s extra state (``_Live``/``_Stored``), or None when it has none."""
    held = module.__dict__.get(EXTRA_STATE)
    if held is None and type(module).get_extra_state is not nn.Module.get_extra_state:
        held = _Live(module)
    return held


def _hold_extra_state(dst: nn.Module, held) -> None:
    """Give the fx-made ``dst`` (a plain container or a GraphModule) the extra state ``held``."""
    cls = type(dst)
    if cls in (nn.Module, InlinedModule):
        dst.__class__ = ExtraStateContainer
    elif isinstance(dst, fx.GraphModule) and cls.__qualname__.endswith("GraphModuleImpl"):  # its own class
        cls.get_extra_state, cls.set_extra_state = _get_extra_state, _set_extra_state
    elif not isinstance(dst, ExtraStateContainer):
        raise TypeError(f"sll_fx: cannot give a {cls.__name__} the extra state of its model's module")
    dst.__dict__[EXTRA_STATE] = held


#: ``__dict__`` key of the model's module whose ``state_dict`` behaviour a container or a GraphModule runs
STATE_MODULE = "_sll_state_module"
#: what a class may override to change its ``state_dict()`` and ``load_state_dict()``
_STATE_METHODS = ("_save_to_state_dict", "_load_from_state_dict")
#: the hooks ``state_dict()``/``load_state_dict()`` call with the module they are called on
_MODULE_HOOKS = ("_state_dict_pre_hooks", "_state_dict_hooks", "_load_state_dict_post_hooks")
#: ... and the pre-hooks its ``_load_from_state_dict`` calls
_STATE_HOOKS = (*_MODULE_HOOKS, "_load_state_dict_pre_hooks")


def _own_state_dict(module: nn.Module) -> bool:
    """Does ``module`` save or load itself otherwise than ``nn.Module`` does: a ``_save_to_state_dict`` or
    ``_load_from_state_dict`` of its class (a key renamed for old checkpoints), or state_dict hooks?"""
    cls, state = type(module), module.__dict__
    for n in _STATE_METHODS:  # (loops, not any() of a generator: called for every module traced through)
        if getattr(cls, n) is not getattr(nn.Module, n):
            return True
    for h in _STATE_HOOKS:
        if state.get(h):
            return True
    return False


class _LiveModule:
    """The user's module whose ``state_dict`` behaviour a container or a GraphModule runs: on the tensors it shares
    with it, and on its extra state (the GraphModule reads and writes it through the user's module)."""

    def __init__(self, module: nn.Module):
        self.module = module

    def __deepcopy__(self, memo) -> "_OwnModule":  # a copy holds a copy of it, with the copy's tensors (the memo)
        return _OwnModule(copy.deepcopy(self.module, memo))

    def __reduce__(self):
        return _OwnModule, (self.module,)


class _OwnModule:
    """A private copy of the user's module (in a deep copy or an unpickled GraphModule), which runs on the tensors
    of the container it is given to (:func:`_hold_state_module`)."""

    def __init__(self, module: nn.Module):
        self.module = module

    def bound_to(self, dst: nn.Module) -> "_OwnModule":
        """A shallow twin of the module, for ``dst``: the same class and attributes, ``dst``'s parameters,
        buffers and children (so a move or a cast of ``dst`` is the twin's)."""
        twin = type(self.module).__new__(type(self.module))
        twin.__dict__.update(self.module.__dict__)
        for key in ("_parameters", "_buffers", "_non_persistent_buffers_set", "_modules"):
            twin.__dict__[key] = dst.__dict__[key]
        # (its load pre-hooks registered with the module, which they hold weakly: with the twin instead)
        twin.__dict__["_load_state_dict_pre_hooks"] = OrderedDict(
            (key, _WrappedHook(hook.hook, twin) if isinstance(hook, _WrappedHook) and hook.with_module and
             hook.module() is self.module else hook)
            for key, hook in self.module._load_state_dict_pre_hooks.items())
        return _OwnModule(twin)


class _WithModule:
    """A hook of the user's module, called with that module where ``nn.Module`` passes the container."""

    def __init__(self, hook, module: nn.Module):
        self.hook, self.module = hook, module

    def __call__(self, _container, *args):
        return self.hook(self.module, *args)

    @property
    def _from_public_api(self) -> bool:  # (read by nn.Module.state_dict)
        return getattr(self.hook, "_from_public_api", False)


class _Hooks(OrderedDict):
    """A hook dict of a container that stands for a user's module (``_state_dict_hooks``, ...): the hooks registered
    on the container itself, then the user's module's (those registered later too), called with that module."""

    def __init__(self, held=None, attr: str = ""):
        super().__init__()
        self.held, self.attr = held, attr

    def values(self):
        module = self.held.module
        return [*super().values(), *(_WithModule(h, module) for h in getattr(module, self.attr).values())]


def _delegated_save(self, destination, prefix, keep_vars) -> None:
    self.__dict__[STATE_MODULE].module._save_to_state_dict(destination, prefix, keep_vars)


def _delegated_load(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                    error_msgs) -> None:
    args = (state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs)
    for hook in self._load_state_dict_pre_hooks.values():  # (registered on the container itself)
        hook(*args)
    module = self.__dict__[STATE_MODULE].module
    module._load_from_state_dict(*args)  # (its own pre-hooks included)
    for slot in ("_parameters", "_buffers"):  # (``assign=True`` gave the user's module new tensors: ours too)
        mine = self.__dict__[slot]
        for name, tensor in module.__dict__[slot].items():
            if mine.get(name, tensor) is not tensor:
                mine[name] = tensor


def _delegated_get_extra_state(self):
    return self.__dict__[STATE_MODULE].module.get_extra_state()


def _delegated_set_extra_state(self, state) -> None:
    self.__dict__[STATE_MODULE].module.set_extra_state(state)


class StateModuleContainer(InlinedModule):
    """A container fx made for a traced-through submodule that saves or loads itself otherwise than ``nn.Module``
    does (:func:`_own_state_dict`): ``state_dict()`` and ``load_state_dict()`` run the user's module's own."""
    _save_to_state_dict = _delegated_save
    _load_from_state_dict = _delegated_load
    get_extra_state = _delegated_get_extra_state
    set_extra_state = _delegated_set_extra_state


def _bind_copies(module: nn.Module) -> None:
    """Have the containers of a deep copy (which ``fx.GraphModule`` keeps as they were copied) under ``module``
    run their copy of the user's module on their own tensors (:meth:`_OwnModule.bound_to`, in place)."""
    for m in module.modules() if module._modules else (module,):  # (a leaf without children: itself)
        held = m.__dict__.get(STATE_MODULE)
        if isinstance(held, _OwnModule) and held.module.__dict__["_parameters"] is not m.__dict__["_parameters"]:
            held.module = held.bound_to(m).module


def _state_module(module: nn.Module):
    """What ``module``'s ``state_dict`` behaviour is run by (``_LiveModule``/``_OwnModule``), or None when it is
    ``nn.Module``'s."""
    held = module.__dict__.get(STATE_MODULE)
    if held is None and not _fx_made(module) and _own_state_dict(module):
        held = _LiveModule(module)
    return held


def _fx_made(module: nn.Module) -> bool:
    """Is ``module`` a GraphModule or a container fx or sll_fx made (hooks registered on it are its own: fx's
    ``__deepcopy__`` copies them), not a user's module?"""
    return type(module) in (nn.Module, _CodeOnlyModule) or isinstance(module, (InlinedModule, fx.GraphModule))


def _hold_state_module(dst: nn.Module, held) -> None:
    """Have the fx-made ``dst`` (a plain container or a GraphModule) save and load itself through ``held``."""
    cls = type(dst)
    if isinstance(held, _OwnModule):
        held = held.bound_to(dst)
    if cls in (nn.Module, InlinedModule):
        dst.__class__ = StateModuleContainer
    elif isinstance(dst, fx.GraphModule) and cls.__qualname__.endswith("GraphModuleImpl"):  # its own class
        cls._save_to_state_dict = _delegated_save
        if not hasattr(cls, "_sll_delegates_load"):  # (an SLLGraphModule's own load delegates, after assign's records)
            cls._load_from_state_dict = _delegated_load
        if type(held.module).get_extra_state is not nn.Module.get_extra_state:
            cls.get_extra_state, cls.set_extra_state = _delegated_get_extra_state, _delegated_set_extra_state
    elif not isinstance(dst, StateModuleContainer):
        raise TypeError(f"sll_fx: cannot give a {cls.__name__} the state_dict behaviour of its model's module")
    dst.__dict__[STATE_MODULE] = held
    hold_hooks(dst)


def hold_hooks(dst: nn.Module) -> None:
    """(Re)make the hook dicts of ``dst``, which stands for a user's module (``fx.GraphModule.__deepcopy__`` sets
    copies of the original's), keeping the hooks registered on ``dst`` itself."""
    held = dst.__dict__.get(STATE_MODULE)
    if held is None:
        return
    for attr in _MODULE_HOOKS:
        hooks = _Hooks(held, attr)
        current = dst.__dict__.get(attr)
        if current is not None:
            hooks.update(OrderedDict.items(current) if isinstance(current, _Hooks) else current.items())
        dst.__dict__[attr] = hooks


def _persistent(module: nn.Module, name: str) -> bool:
    return name not in module._non_persistent_buffers_set


def mirror_state(gm: nn.Module, model: nn.Module, inlined: frozenset[int] = frozenset()) -> None:
    """``inlined``: the ids of ``model``'s submodules whose forward ``gm``'s graph inlines (traced through): one the
    graph touches nothing of (no parameter, buffer or flag) gets an :class:`InlinedModule` too, with the model's
    children, instead of being shared as it is (a hook registered on it would never run, and land on the model's)."""
    shared, todo = set(), [model]  # (model.modules()'s ids, walked off the _modules dicts: its nested generators
    while todo:                     # measured ~a fifth of this function on a model of many modules)
        for child in todo.pop()._modules.values():
            if child is not None and id(child) not in shared:
                shared.add(id(child))
                todo.append(child)
    shared.discard(id(model))
    _mirror(gm, model, shared, {id(model): gm}, "", inlined)
    # whatever gm holds beyond the model (fx's _tensor_constant*) is a constant, not state: gm's own modules, each at
    # every name it has (the model's modules, and all under them, are the model's)
    model_buffers = None
    todo = [("", gm)]
    while todo:
        path, module = todo.pop()
        for name, buf in list(module._buffers.items()):
            full = f"{path}.{name}" if path else name
            if buf is not None:
                if model_buffers is None:  # (most GraphModules hold no buffer of their own: no walk for it)
                    model_buffers = {name for name, _ in model.named_buffers(remove_duplicate=False)}
                if full in model_buffers:
                    continue
                if _persistent(module, name):
                    module.register_buffer(name, buf, persistent=False)
                module.__dict__[CONSTANTS] = constants_of(module) | {name}
        todo += [(f"{path}.{name}" if path else name, child) for name, child in module._modules.items()
                 if child is not None and id(child) not in shared]  # (the model's own: its leaves, not walked)


def _mirror(dst: nn.Module, src: nn.Module, shared: set[int], done: dict[int, nn.Module], path: str,
            inlined: frozenset[int]) -> None:
    """Give the fx-made container ``dst`` (at ``path``) exactly ``src``'s parameters, buffers and children, in order.

    ``done`` maps each ``src`` module already placed to its counterpart in ``gm`` (tied submodules).
    """
    delegate = _state_module(src)
    held = _extra_state(src) if delegate is None else None  # (else the user's module saves its own extra state)
    if delegate is not None:
        _hold_state_module(dst, delegate)
    if held is not None:
        _hold_extra_state(dst, held)
    if constants_of(src):  # (a copy of a GraphModule: its constants are buffers of the module it copies)
        dst.__dict__[CONSTANTS] = constants_of(dst) | constants_of(src)
    for name, p in list(src._parameters.items()):
        if name in dst._parameters or hasattr(dst, name):
            delattr(dst, name)
        dst.register_parameter(name, p)
    for name, b in list(src._buffers.items()):
        if name in dst._buffers or hasattr(dst, name):
            delattr(dst, name)
        dst.register_buffer(name, b, persistent=_persistent(src, name))
    for name, child in list(src._modules.items()):
        current = dst._modules.get(name)
        if name in dst._modules:
            del dst._modules[name]  # re-inserted below: the model's order
        if current is None and child is not None and inlined and id(child) not in done and \
                any(id(m) in inlined for m in child.modules()):
            current = nn.Module()  # (traced through, or holds a module that is, with nothing the graph touches)
            current.training = child.training
        if child is not None and id(child) in done:
            dst._modules[name] = done[id(child)]  # a second name of a tied submodule: the same object
        elif child is None or current is None or current is child:
            # the same object (a leaf fx called, a container of a deep copy), or a submodule the graph never
            # touched: share it as is
            dst._modules[name] = child
            if current is child:
                _bind_copies(child)
        else:
            dst._modules[name] = current  # a container fx made for a traced-through submodule
            done[id(child)] = current
            _mirror(current, child, shared, done, f"{path}.{name}" if path else name, inlined)
        if child is not None:
            done.setdefault(id(child), dst._modules[name])
    if path:  # (last: from now on it refuses a new parameter)
        _inline(dst, src, path)

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
"""

from __future__ import annotations

import copy

from torch import fx, nn

#: ``__dict__`` key of the extra state a GraphModule or a container holds for its model's module
EXTRA_STATE = "_sll_extra_state"


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


class ExtraStateContainer(nn.Module):
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
    if cls is nn.Module:
        dst.__class__ = ExtraStateContainer
    elif isinstance(dst, fx.GraphModule) and cls.__qualname__.endswith("GraphModuleImpl"):  # its own class
        cls.get_extra_state, cls.set_extra_state = _get_extra_state, _set_extra_state
    elif not isinstance(dst, ExtraStateContainer):
        raise TypeError(f"sll_fx: cannot give a {cls.__name__} the extra state of its model's module")
    dst.__dict__[EXTRA_STATE] = held


def _persistent(module: nn.Module, name: str) -> bool:
    return name not in module._non_persistent_buffers_set


def mirror_state(gm: nn.Module, model: nn.Module) -> None:
    shared = {id(m) for _, m in model.named_modules(remove_duplicate=False)} - {id(model)}
    _mirror(gm, model, shared, {id(model): gm})
    # whatever gm holds beyond the model (fx's _tensor_constant*) is a constant, not state
    model_buffers = {name for name, _ in model.named_buffers(remove_duplicate=False)}
    for path, module in list(gm.named_modules(remove_duplicate=False)):
        if id(module) in shared:
            continue
        for name, buf in list(module._buffers.items()):
            full = f"{path}.{name}" if path else name
            if buf is not None and full not in model_buffers and _persistent(module, name):
                module.register_buffer(name, buf, persistent=False)


def _mirror(dst: nn.Module, src: nn.Module, shared: set[int], done: dict[int, nn.Module]) -> None:
    """Give the fx-made container ``dst`` exactly ``src``'s parameters, buffers and children, in order.

    ``done`` maps each ``src`` module already placed to its counterpart in ``gm`` (tied submodules).
    """
    held = _extra_state(src)
    if held is not None:
        _hold_extra_state(dst, held)
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
        if child is not None and id(child) in done:
            dst._modules[name] = done[id(child)]  # a second name of a tied submodule: the same object
        elif child is None or current is None or current is child:
            # the same object (a leaf fx called), or a submodule the graph never touched: share it as is
            dst._modules[name] = child
        else:
            dst._modules[name] = current  # a container fx made for a traced-through submodule
            done[id(child)] = current
            _mirror(current, child, shared, done)
        if child is not None:
            done.setdefault(id(child), dst._modules[name])

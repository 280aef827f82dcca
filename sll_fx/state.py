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
"""

from __future__ import annotations

import torch
from torch import nn


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

"""Symbolic tracing for sll_fx: source lines recorded, failures pinned to a submodule.

``trace(model)`` returns a fresh ``GraphModule`` that shares every parameter and buffer
with ``model`` and leaves ``model`` itself untouched (``torch.fx`` would otherwise store
tensor literals as ``_tensor_constant*`` attributes on the model it traces).  A model that
cannot be traced raises :class:`~sll_fx.errors.TraceError` naming the innermost
submodule being traced when it failed, the reason and what to do.
"""

from __future__ import annotations

import copy
import os
import re

import torch
from torch import fx

from .errors import TraceError
from .graph_module import SLLGraphModule
from .state import mirror_state

_TORCH_DIR = os.path.dirname(torch.__file__)
_SLL_DIR = os.path.dirname(__file__)
_FRAME = re.compile(r'File "([^"]+)", line (\d+)')


class SLLTracer(fx.Tracer):
    """``fx.Tracer`` with stack traces on and a record of the submodule being traced."""

    def __init__(self):
        super().__init__()
        self.record_stack_traces = True
        self.sll_scope: list[tuple[str, str]] = []

    def call_module(self, m, forward, args, kwargs):
        try:
            path = self.path_of_module(m)
        except NameError as e:
            raise TraceError(f"cannot trace a {type(m).__name__} that is not a registered submodule: {e}. "
                             "Register it with add_module (or nn.ModuleList/ModuleDict)",
                             module_type=type(m).__name__) from e
        self.sll_scope.append((path, type(m).__name__))
        try:
            return super().call_module(m, forward, args, kwargs)
        except TraceError:
            raise
        except Exception as e:
            raise TraceError(
                f"torch.fx cannot trace submodule '{path}' ({type(m).__name__}): {type(e).__name__}: {e}\n"
                "Fix: make its forward traceable (no Python control flow on tensor values, no .item()/.tolist()),"
                " or use the explicit ops (sll_fx.sign, ...) inside it",
                module_path=path, module_type=type(m).__name__) from e
        finally:
            self.sll_scope.pop()


def trace(model: torch.nn.Module) -> SLLGraphModule:
    """Trace ``model`` into a new GraphModule with the same parameters, buffers and state_dict keys."""
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"sll_fx expects an nn.Module, got {type(model).__name__}")
    root = copy.copy(model)  # shares parameters/submodules; fx's tensor-constant attributes land on the copy
    tracer = SLLTracer()
    try:
        graph = tracer.trace(root)
    except TraceError:
        raise
    except Exception as e:
        raise TraceError(
            f"torch.fx cannot trace the forward of {type(model).__name__}: {type(e).__name__}: {e}\n"
            "Fix: make forward traceable (no Python control flow on tensor values, no .item()/.tolist())",
            module_path="", module_type=type(model).__name__) from e
    gm = SLLGraphModule(root, graph, class_name=type(model).__name__)
    mirror_state(gm, model)
    return gm


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

"""Typed exceptions raised by sll_fx.

Every error says which node, which op and what to do about it; none of them is
raised after the user's model has been touched (the passes work on copies).
"""

from __future__ import annotations


class SLLError(Exception):
    """Base class of every sll_fx error."""


class EpsError(SLLError, ValueError):
    """An eps that is not positive, not finite, or too wide for the op's boundary spacing."""


class ModeError(SLLError, ValueError):
    """A forward mode other than ``"linear"`` or ``"hard"``."""


class TraceError(SLLError, RuntimeError):
    """``torch.fx`` could not trace the model; names the failing submodule and the reason.

    ``reason`` is the short form that the fallback tracer lists in a report's opaque table
    (the fx error as ``"Type: text"``, or the autograd.Function kept whole).
    """

    def __init__(self, message: str, *, module_path: str | None = None, module_type: str | None = None,
                 reason: str | None = None):
        super().__init__(message)
        self.module_path = module_path
        self.module_type = module_type
        self.reason = reason if reason is not None else message


class RewriteError(SLLError, RuntimeError):
    """A graph pass could not keep one of its guarantees (e.g. an sll op survived export_hard)."""


class InlinedModuleError(SLLError, RuntimeError):
    """A call of, or a new parameter on, a submodule of a linearized model whose forward is inlined into the
    graph (a traced-through module: the result holds only its parameters, buffers and children); names the
    module and the fix."""


class InlinedModuleWarning(UserWarning):
    """A forward or backward hook registered on a submodule of a linearized model whose forward is inlined into
    the graph: the hook will never run.  A warning, not an error, so that tools hooking every module (model
    summaries, FLOP counters) still run; ``warnings.simplefilter("error", InlinedModuleWarning)`` makes it one."""


class OpaqueModelWarning(UserWarning):
    """``linearize_module`` of a model whose own ``forward`` torch.fx cannot trace (an autograd.Function it calls,
    ``int()`` of a tensor, hooks on the model): that forward runs as written, so the discrete ops in it stay hard and
    pass no gradient; only its traceable children are rewritten.  Names the reason and the fix."""

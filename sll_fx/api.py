"""The two user-facing calls: ``linearize_module`` and ``export_hard``.

Both trace (or copy) first and run their pass on that private GraphModule, so the
user's model is never changed, even when a pass raises.  The result shares every
parameter and buffer with the input and has the same ``state_dict()`` keys.
"""

from __future__ import annotations

import torch
from torch import fx

from .config import SLLConfig
from .opaque import assert_no_sll, is_opaque, map_graphs, refuse_sll_code
from .ops import DEFAULT_EPS, check_mode
from .report import RewriteReport, StripReport
from .tracer import trace_with_fallback


def linearize_module(model: torch.nn.Module, eps: float | SLLConfig = DEFAULT_EPS, *, mode: str = "linear",
                     verbose: bool = True, example_inputs: tuple | None = None,
                     concrete_args: dict | None = None) -> fx.GraphModule:
    """Trace ``model`` and rewrite its discrete ops into SLL ops of half-width ``eps``.

    Args:
        model: any traceable ``nn.Module`` (a GraphModule too). It is not modified.
        eps: band half-width, in the units of each op's own input; or an :class:`SLLConfig`
            (eps and mode per rule kind and per submodule, rules off, submodules skipped).
        mode: ``"linear"`` (forward is the SLL surrogate) or ``"hard"`` (forward is the hard
            op exactly, backward the surrogate's slope); a config's own mode wins.
        verbose: print the rewrite report.
        example_inputs: optional inputs; when given, node dtypes come from a fake-tensor run,
            so integer inputs are recognised (and left hard) even where the graph cannot tell.
            They describe the top-level graph (not the graphs traced inside opaque modules).
        concrete_args: passed to ``torch.fx`` for the top-level trace (``{"flag": True}``).

    Parts that ``torch.fx`` cannot trace (control flow on tensor values, an autograd.Function)
    are kept opaque and their traceable children are still rewritten; the report lists them
    (``report.opaque``). See :func:`sll_fx.tracer.trace_with_fallback`.

    Returns:
        A ``GraphModule`` sharing ``model``'s parameters, with the report as ``.sll_report``
        (when the model's own forward cannot be traced: a private copy of the model, of its
        own class, whose children are those GraphModules).
    """
    from sll_fx.passes import linearize_pass

    check_mode("linearize_module", mode)
    config = SLLConfig.of(eps, mode)
    config.check_against(model)
    top, _ = trace_with_fallback(model, concrete_args=concrete_args, keep=config.skipped_modules(model))
    gm = map_graphs(top, lambda g, path: linearize_pass(g, config=config, example_inputs=None if path else
                                                        example_inputs).graph_module, RewriteReport(mode=config.mode))
    if verbose:
        print(gm.sll_report)
    return gm


def export_hard(model: torch.nn.Module, verbose: bool = True) -> fx.GraphModule:
    """A clean GraphModule with every sll op replaced by the exact hard op it came from.

    Accepts a linearized GraphModule (its graph is copied; the input keeps working) or any
    traceable module (explicit ``sll_fx.sign(...)`` calls in it are stripped too). The result
    computes bit for bit what the original model computes, and holds no ``torch.ops.sll`` node.
    Graphs inside opaque modules (see ``linearize_module``) are stripped too, on copies; an
    opaque module whose own Python code calls sll ops cannot be stripped: ``RewriteError``.
    """
    from sll_fx.passes import strip_pass

    top = model if isinstance(model, fx.GraphModule) or is_opaque(model) else trace_with_fallback(model)[0]
    gm = map_graphs(top, lambda g, path: strip_pass(g).graph_module, StripReport(), check_opaque=refuse_sll_code)
    assert_no_sll(gm)
    if verbose:
        print(gm.sll_report)
    return gm

"""The two user-facing calls: ``linearize_module`` and ``export_hard``.

Both trace (or copy) first and run their pass on that private GraphModule, so the
user's model is never changed, even when a pass raises.  The result shares every
parameter and buffer with the input and has the same ``state_dict()`` keys.
"""

from __future__ import annotations

import torch
from torch import fx

from .config import SLLConfig
from .ops import DEFAULT_EPS, check_mode
from .tracer import copy_graph_module, trace


def linearize_module(model: torch.nn.Module, eps: float | SLLConfig = DEFAULT_EPS, *, mode: str = "linear",
                     verbose: bool = True, example_inputs: tuple | None = None) -> fx.GraphModule:
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

    Returns:
        A ``GraphModule`` sharing ``model``'s parameters, with the report as ``.sll_report``.
    """
    from sll_fx.passes import linearize_pass

    check_mode("linearize_module", mode)
    config = SLLConfig.of(eps, mode)
    config.check_against(model)
    gm = trace(model)
    gm = linearize_pass(gm, config=config, example_inputs=example_inputs).graph_module
    if verbose:
        print(gm.sll_report)
    return gm


def export_hard(model: torch.nn.Module, verbose: bool = True) -> fx.GraphModule:
    """A clean GraphModule with every sll op replaced by the exact hard op it came from.

    Accepts a linearized GraphModule (its graph is copied; the input keeps working) or any
    traceable module (explicit ``sll_fx.sign(...)`` calls in it are stripped too). The result
    computes bit for bit what the original model computes, and holds no ``torch.ops.sll`` node.
    """
    from sll_fx.passes import strip_pass

    gm = copy_graph_module(model) if isinstance(model, fx.GraphModule) else trace(model)
    gm = strip_pass(gm).graph_module
    if verbose:
        print(gm.sll_report)
    return gm

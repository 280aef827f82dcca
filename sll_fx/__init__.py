"""sll_fx: make discrete PyTorch programs trainable with Static Local Linearization.

Where things are:

- ``kernels.py``  the surrogate arithmetic (forward and backward), SLL_MATH.md in code
- ``ops.py``      the ``torch.ops.sll`` namespace and the explicit ops (``sll_fx.sign`` ...)
- ``rules.py``    the one rule table: graph spellings -> sll op -> hard op
- ``dtypes.py``   what dtype a node has, as far as the graph alone tells
- ``tracer.py``   symbolic tracing with source lines and submodule names in errors, and the fallback
- ``opaque.py``   the fallback's opaque modules: private copies of the parts that run as Python code
- ``scans.py``    static scans of a module's code (hooks, autograd.Functions, mode blocks, state it writes)
- ``inputs.py``   what a trace makes of the forward's inputs (``concrete_args``, None defaults, ``**kwargs``)
- ``grad_regions.py`` ``torch.no_grad()`` blocks in a traced forward, cut from the graph's gradient
- ``frozen.py``   Python values a traced forward read, checked when the result is called
- ``state.py``    keeping a GraphModule's parameters/buffers identical to the model's
- ``graph_module.py`` ``SLLGraphModule``, the returned GraphModule type, whose copies keep the model's state
- ``exported.py`` ``torch.export`` graphs (``ExportedProgram``, ``ep.module()``) as input to both calls
- ``precision.py`` the run-time check of eps against the spacing of the dtype an op runs in
- ``report.py``   the rewrite and strip reports (records first, tabulate text second)
- ``errors.py``   the typed exceptions (``SLLError`` and its subclasses) and the two tracing warnings
- ``config.py``   ``SLLConfig``: eps/mode per rule kind and per submodule, rules off, submodules skipped
- ``annealing.py`` ``set_eps``: change eps in place (schedules) without retracing; ``eps_state``/``load_eps``
- ``calibration.py`` ``eps="auto"``: eps from the data (``calibrate``, ``freeze_eps``)
- ``diagnostics.py`` ``band_stats``: how much of each op's input lies in its band, step by step
- ``dynamic.py``  ``sll_fx.linearize``: dynamic mode (a context manager or decorator) for untraceable code
- ``api.py``      ``linearize_module`` and ``export_hard``
- ``sll_fx.passes`` (the ``passes/`` folder): the two graph passes, ``linearize.py`` and ``strip.py``, and the
  linearize pass's planning (``_plan.py`` and the files it reads); its docstring says which file holds what
"""

from .errors import (EpsError, InlinedModuleError, InlinedModuleWarning, ModeError, OpaqueModelWarning, RewriteError,
                     SLLError, TraceError)
from .ops import DEFAULT_EPS, ceil, floor, heaviside, round, sign, threshold, trunc  # noqa: A004
from .report import OpaqueModule, RewriteReport, StripReport
from .api import export_hard, linearize_module
from .annealing import eps_state, load_eps, set_eps
from .config import SLLConfig
from .diagnostics import BandWarning, band_stats
from .precision import PrecisionWarning
from .dynamic import linearize
from .calibration import calibrate, freeze_eps, is_calibrating
from .kernels import METHODS

__version__ = "0.1.0"

__all__ = [
    "linearize_module", "export_hard", "set_eps", "eps_state", "load_eps", "SLLConfig",
    "linearize",
    "sign", "heaviside", "round", "floor", "ceil", "trunc", "threshold", "DEFAULT_EPS",
    "RewriteReport", "StripReport", "OpaqueModule",
    "band_stats", "BandWarning", "PrecisionWarning",
    "calibrate", "freeze_eps", "is_calibrating", "METHODS",
    "SLLError", "EpsError", "ModeError", "TraceError", "RewriteError", "InlinedModuleError", "InlinedModuleWarning",
    "OpaqueModelWarning",
]

"""sll_fx: make discrete PyTorch programs trainable with Static Local Linearization.

Where things are:

- ``kernels.py``  the surrogate arithmetic (forward and backward), SLL_MATH.md in code
- ``ops.py``      the ``torch.ops.sll`` namespace and the explicit ops (``sll_fx.sign`` ...)
- ``rules.py``    the one rule table: graph spellings -> sll op -> hard op
- ``dtypes.py``   what dtype a node has, as far as the graph alone tells
- ``tracer.py``   symbolic tracing with source lines and submodule names in errors
- ``grad_regions.py`` ``torch.no_grad()`` blocks in a traced forward, cut from the graph's gradient
- ``frozen.py``   Python values a traced forward read, checked when the result is called
- ``state.py``    keeping a GraphModule's parameters/buffers identical to the model's
- ``precision.py`` the run-time check of eps against the spacing of the dtype an op runs in
- ``report.py``   the rewrite and strip reports (records first, tabulate text second)
- ``config.py``   ``SLLConfig``: eps/mode per rule kind and per submodule, rules off, submodules skipped
- ``annealing.py`` ``set_eps``: change eps in place (schedules) without retracing; ``eps_state``/``load_eps``
- ``api.py``      ``linearize_module`` and ``export_hard``
- ``sll_fx.passes`` (the ``passes/`` folder): the graph passes, one per file
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
    "SLLError", "EpsError", "ModeError", "TraceError", "RewriteError", "InlinedModuleError", "InlinedModuleWarning",
    "OpaqueModelWarning",
]

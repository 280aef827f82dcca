"""Precision checks: an eps narrower than the dtype's spacing at the boundary is a :class:`PrecisionWarning`.

A band of half-width ``eps`` around a boundary ``b`` only gives gradient if the input's
dtype can represent values inside it.  Near ``b`` a floating dtype has the spacing
(``ulp``) ``s(b)``; when ``eps <= s(b)`` the band holds no representable value but ``b``
itself (its edges ``b +- eps`` have slope 0), so the op is hard there and passes no
gradient.  This bites in half precision: ``float16`` has ``s(1) = 2**-10``, ``bfloat16``
has ``s(1) = 2**-7`` and ``s(100) = 0.5``, so ``round`` under ``torch.autocast`` with
``eps = 0.005`` trains nothing.

**Where the check lives.**  The dtype an op sees is only known at run time (autocast,
``model.half()``, mixed inputs), and for ops with many boundaries (round, floor, ...) the
boundaries that matter are the ones the data sit at.  So the check runs inside
:class:`~sll_fx.graph_module.SLLGraphModule` (the module type ``linearize_module`` returns,
nested GraphModules of opaque modules included): the **first call with gradients enabled for
each new signature** (the dtypes and devices of the tensor arguments, the autocast state,
the generated code, the count of the module's casts and moves (:data:`CAST_GENERATION`: ``gm.half()``
changes the dtype its ops run in also when its inputs stay what they were, token ids), and the eps
values, each as its power-of-two octave ``floor(log2(eps))``: an eps schedule is checked again
when an eps reaches a new octave, not on every step; the values are read only after ``set_eps`` replaced a
buffer or one changed in place) runs under a
:class:`~torch.overrides.TorchFunctionMode` that sees every ``torch.ops.sll`` call, runs it
unchanged and then measures its input (a few elementwise passes and a reduction per sll node,
once; on an accelerator, one sync per node).  Later
calls with a seen signature cost the signature (5-10 microseconds on a CPU) and nothing
else (the last :data:`_MAX_SEEN` signatures are remembered); calls under ``torch.no_grad()``/``inference_mode``
(evaluation: no gradient to lose) are not checked.  The
node is named from the generated code's frame (fx writes one ``name = op(...)`` line per
node, and its source line comes from the node's stack trace); an explicit
``sll_fx.sign(...)`` in user code is named by its ``file:line``.  Each (node, dtype, eps)
is warned about once per module object (a copy warns again).

**The test.**  For a dtype and an eps, the spacing is ``>= eps`` exactly from some
magnitude on (:func:`starved_from`, a power of two); a boundary above it has an empty band (the
power of two itself does not: below it the spacing is half as wide, smaller than eps).  Each
element of the op's input is nearest to one boundary:

==========================  =====================================================
sign, heaviside             ``0`` (spacing: the dtype's smallest subnormal)
compare                     the threshold ``t`` (a tensor threshold: each element)
round(decimals=d)           ``(floor(x / q) + 1/2) q``, ``q = 10**-d``
floor, ceil                 ``round(x)`` (0 too: near 0 the spacing is fine)
trunc                       ``max(round(|x|), 1)`` (no boundary at 0)
argmax_onehot, topk_mask    ``|x|`` (margins are differences of values of that size)
select                      none (its band is its comparison's)
==========================  =====================================================

The warning fires when at least :data:`MIN_FRACTION` (half) of the finite elements sit at
such starved boundaries (a few outliers do not warn); it reports a typical one (their
median), its spacing and the share.  The spacing is taken in the dtype of the op's input
``x`` (the values that cannot fall inside the band are ``x``'s).  Tensors without data
(``meta``) use the op's first nonzero boundary (none for argmax_onehot/topk_mask or a
tensor threshold).  Nothing is checked while tracing (fx, ``torch.compile``,
``torch.export``, ``torch.jit``), on tensor subclasses (fake tensors) or under a dispatch
mode.  ``set_checks(False)`` turns the checks off (``SLL_FX_PRECISION_CHECKS=0`` in the
environment).  :func:`findings` gives the same information without warnings, for an
explicit check of any module.
"""

from __future__ import annotations

import contextvars
import linecache
import math
import os
import re
import sys
import warnings
import weakref
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import is_in_torch_dispatch_mode

from .errors import EpsError

__all__ = ["PrecisionWarning", "PrecisionFinding", "spacing", "set_checks", "checks_enabled", "findings"]

_TORCH_DIR = os.path.dirname(torch.__file__)
_SLL_DIR = os.path.dirname(os.path.abspath(__file__))
_GENERATED = "<eval_with_key>"
_ASSIGN = re.compile(r"\s*([A-Za-z_][A-Za-z_0-9]*)\s*=")

_enabled = os.environ.get("SLL_FX_PRECISION_CHECKS", "1").strip().lower() not in ("0", "false", "no", "off")
_active: contextvars.ContextVar = contextvars.ContextVar("sll_fx_precision_active", default=None)
_warned: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()   # module -> {(node, dtype, eps)}
_warned_code: set = set()                                           # (file, line, op, dtype, eps) of explicit ops


class PrecisionWarning(UserWarning):
    """An sll node runs in a dtype whose spacing at its boundary is not smaller than its eps.

    Attributes (also in the message): ``node`` (``"path.name"`` in the linearized module, or
    ``file:line`` of an explicit op), ``op``, ``eps``, ``dtype``, ``boundary``, ``spacing``,
    ``starved``/``total`` (elements at such boundaries / elements looked at), ``source``
    (``file:line`` of the user code that made the node, when known); ``finding`` holds them all.
    """

    def __init__(self, message: str, finding: "PrecisionFinding | None" = None):
        super().__init__(message)
        self.finding = finding
        for name in ("node", "op", "eps", "dtype", "boundary", "spacing", "starved", "total", "source"):
            setattr(self, name, getattr(finding, name, None))


@dataclass(frozen=True)
class PrecisionFinding:
    node: str              # "name" / "sub.name" in the module checked; "file:line" for an explicit op
    op: str                # sll op name: "round", "compare", ...
    eps: float
    dtype: torch.dtype     # the dtype of the op's input x
    boundary: float        # the boundary whose spacing was compared with eps
    spacing: float         # the dtype's spacing at that boundary
    starved: int = 1       # elements (of x; of the threshold for compare) at boundaries with spacing >= eps
    total: int = 1         # finite elements looked at
    source: str = ""       # file:line of the user code (graph nodes)
    in_graph: bool = False  # a node of a GraphModule (set_eps can reach it), not an explicit op call
    decimals: int = 0      # round(decimals=d): its eps limit is 10**-d / 2

    def message(self) -> str:
        from .ops import eps_limit

        where = f"node {self.node!r}" + (f" ({self.source})" if self.source else "")
        limit = eps_limit(self.op, self.decimals)
        target = min(2.0 * self.spacing, limit)  # (any eps in (spacing, limit] gives the band a value)
        if self.spacing < limit:
            how = (f" (e.g. sll_fx.set_eps(gm, {target:g}, where={self.node.rsplit('.', 1)[-1]!r}))"
                   if self.in_graph else "")
            fix = (f"Fix: raise this node's eps above {self.spacing:g}{how}, or run the op in a wider dtype "
                   "(float32: outside torch.autocast, or cast its input with .float())")
        else:
            fix = (f"Fix: no valid eps is that wide for sll.{self.op} (limit {limit:g}); run the op in a wider "
                   "dtype (float32: outside torch.autocast, or cast its input with .float())")
        share = "" if self.total <= 1 else \
            f" ({self.starved} of {self.total} elements sit at boundaries like it, {self.starved / self.total:.0%})"
        return (f"sll_fx: {where}, sll.{self.op} with eps={self.eps:g}, runs in {self.dtype}, whose spacing at "
                f"the boundary {self.boundary:g} is {self.spacing:g} >= eps{share}: no representable value but "
                f"the boundary lies inside the band, so the op is hard there and passes no gradient. {fix}")


def set_checks(enabled: bool) -> bool:
    """Turn the run-time precision checks of linearized modules on or off; returns the previous setting."""
    global _enabled
    previous, _enabled = _enabled, bool(enabled)
    return previous


def checks_enabled() -> bool:
    return _enabled


def spacing(dtype: torch.dtype, at: float) -> float:
    """The distance from ``|at|`` to the next representable value of ``dtype`` away from zero (its ulp)."""
    info = torch.finfo(dtype)
    a = abs(float(at))
    if not math.isfinite(a) or a > info.max:
        return math.inf
    if a < info.smallest_normal:
        return info.smallest_normal * info.eps  # the subnormal spacing (also at 0)
    _, e = math.frexp(a)                       # a = m * 2**e with 0.5 <= m < 1
    return math.ldexp(info.eps, e - 1)


# --- what to measure per op -------------------------------------------------------------------------

#: warn when at least this fraction of an op's input (of its threshold's elements, for compare)
#: sits at boundaries whose band holds no representable value: a few outliers do not warn
MIN_FRACTION = 0.5

_SINGLE = ("sign", "heaviside")
_INTEGER = ("floor", "ceil", "trunc")
_MARGIN = ("argmax_onehot", "topk_mask")


def _has_data(t: Tensor) -> bool:
    return type(t) in (Tensor, torch.nn.Parameter) and t.device.type != "meta"


def _op_name(func) -> str:
    packet = getattr(func, "overloadpacket", func)
    return packet._qualified_op_name.split("::", 1)[1]


def starved_from(dtype: torch.dtype, eps: float) -> float:
    """The smallest boundary magnitude at which ``dtype``'s spacing is ``>= eps`` (0: everywhere; inf: nowhere)."""
    info = torch.finfo(dtype)
    if spacing(dtype, 0.0) >= eps:
        return 0.0
    k = max(math.ceil(math.log2(eps / info.eps)), math.frexp(info.smallest_normal)[1] - 1)
    while spacing(dtype, math.ldexp(1.0, k)) < eps:
        k += 1
    while spacing(dtype, math.ldexp(1.0, k - 1)) >= eps and math.ldexp(1.0, k - 1) >= info.smallest_normal:
        k -= 1
    top = math.ldexp(1.0, k)
    return top if top <= info.max else math.inf


def _magnitudes(op: str, x: Tensor, args: tuple, kwargs: dict) -> Tensor | float | None:
    """|boundary| per element of the input (the boundary each element is nearest to), or one number
    for ops whose boundary does not depend on the data; None when unknown (no data)."""
    if op in _SINGLE:
        return 0.0
    if op == "compare":
        t = args[1] if len(args) > 1 else kwargs.get("threshold")
        if isinstance(t, Tensor):
            return t.detach().abs() if _has_data(t) else None
        return abs(float(t)) if isinstance(t, (int, float)) else None
    first = {"round": 0.5 * 10.0 ** -int(kwargs.get("decimals", 0)), "floor": 1.0, "ceil": 1.0, "trunc": 1.0}
    if not _has_data(x):
        return first.get(op)  # the op's first nonzero boundary: if it starves, all of them do
    xf = x.detach().float() if x.dtype in (torch.float16, torch.bfloat16) else x.detach()
    if op == "round":
        q = 2 * first["round"]
        return (torch.floor(xf / q) + 0.5).abs_() * q
    if op in ("floor", "ceil"):
        return torch.round(xf).abs_()
    if op == "trunc":
        return torch.round(xf.abs()).clamp_min_(1.0)
    if op in _MARGIN:
        return xf.abs()
    return None  # select: the band is its comparison's


def inspect_call(func, args: tuple, kwargs: dict) -> PrecisionFinding | None:
    """The finding for one ``torch.ops.sll`` call (node name left empty), or None when its eps is fine."""
    op = _op_name(func)
    if op == "select" or not args or not isinstance(args[0], Tensor):
        return None
    x = args[0]
    if not x.is_floating_point() or type(x) not in (Tensor, torch.nn.Parameter):
        return None
    eps = kwargs.get("eps")
    if isinstance(eps, Tensor):
        if not _has_data(eps) or eps.numel() != 1:
            return None
        eps = float(eps)
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not eps > 0:
        return None
    eps = float(eps)
    limit = starved_from(x.dtype, eps)
    if limit == math.inf:
        return None
    with torch.no_grad():
        mags = _magnitudes(op, x, args, kwargs)
        if mags is None:
            return None
        decimals = int(kwargs.get("decimals", 0)) if op == "round" else 0
        if not isinstance(mags, Tensor):
            if not (math.isfinite(mags) and _starved(mags, limit)):
                return None
            return PrecisionFinding("", op, eps, x.dtype, mags, spacing(x.dtype, mags), 1, 1, decimals=decimals)
        finite = torch.isfinite(mags)
        starved = finite & (mags > limit) if limit else finite
        total, count = int(finite.sum()), int(starved.sum())
        if total == 0 or count < MIN_FRACTION * total:
            return None
        b = float(mags[starved].float().median())  # a typical starved boundary
    return PrecisionFinding("", op, eps, x.dtype, b, spacing(x.dtype, b), count, total, decimals=decimals)


def _starved(magnitude: float, limit: float) -> bool:
    """Is a boundary of this magnitude starved, ``limit`` being :func:`starved_from`'s power of two?  The
    boundary ``limit`` itself is not: the spacing just below a power of two is half the spacing above it,
    smaller than eps there (the band holds the values below it)."""
    return magnitude >= limit if limit == 0 else magnitude > limit


# --- naming the node: the frame of the generated forward that called the op ---------------------------

def _caller_frame(start):
    """The first frame outside torch and sll_fx (the generated forward, or the user's code)."""
    frame = start
    while frame is not None:
        name = frame.f_code.co_filename
        if name.startswith(_GENERATED) or not (name.startswith(_TORCH_DIR) or name.startswith(_SLL_DIR)):
            return frame
        frame = frame.f_back
    return None


def _node_of(frame, root, lineno: int | None = None) -> tuple[object, str, str] | None:
    """(owner module, qualified node name, source) for a call from a generated forward, else None; for a
    hard-mode selection's soft mask (``is_soft_mask``: the linear-mode copy of a comparison, same input and
    eps), ``(None, "", "")``: its comparison's own call is the one checked and named.  ``lineno``: the line
    the frame is at (a traceback's; default the frame's own)."""
    if not frame.f_code.co_filename.startswith(_GENERATED):
        return None
    gm = frame.f_locals.get("self")
    if not isinstance(gm, torch.fx.GraphModule):
        return None
    match = _ASSIGN.match(linecache.getline(frame.f_code.co_filename, frame.f_lineno if lineno is None else lineno))
    if match is None:
        return None
    name = match.group(1)
    node = next((n for n in gm.graph.nodes if n.name == name), None)
    if node is None:
        return None
    from .diagnostics import is_soft_mask, sll_node_names
    from .tracer import source_of

    if is_soft_mask(node):
        return None, "", ""

    path = ""
    if root is not None and gm is not root:
        path = next((p for p, m in root.named_modules() if m is gm), "")
    named = sll_node_names(gm.graph, path).get(node)  # (the report's and eps_state's name: gt, not its compare node)
    return gm, named or (f"{path}.{name}" if path else name), source_of(node)


class _CheckMode(TorchFunctionMode):
    """Runs every call unchanged; after each ``torch.ops.sll`` call, checks its eps against the dtype."""

    def __init__(self, root, warn: bool = True):
        super().__init__()
        self.root, self.warn, self.found = root, warn, []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)  # (an EpsError: :func:`call` names the node, with or without this mode)
        if _is_sll(func):
            try:
                finding = inspect_call(func, args, kwargs)
                if finding is not None:
                    finding = self._name(finding, sys._getframe(1))  # (None: a soft mask, see _node_of)
            except Exception:  # a check must never break the forward
                finding = None
            if finding is not None:
                self._report(*finding)
        return out

    def _name(self, finding: PrecisionFinding, frame):
        import dataclasses

        caller = _caller_frame(frame)
        located = _node_of(caller, self.root) if caller is not None else None
        if located is not None:
            owner, node, source = located
            if owner is None:  # a hard-mode selection's soft mask: its comparison's call reports it
                return None
            key = (owner, (node, finding.dtype, finding.eps))
            return dataclasses.replace(finding, node=node, source=source, in_graph=True), key
        where = f"{os.path.basename(caller.f_code.co_filename)}:{caller.f_lineno}" if caller is not None else "?"
        key = (None, (where, finding.op, finding.dtype, finding.eps))
        return dataclasses.replace(finding, node=where), key

    def _report(self, finding: PrecisionFinding, key) -> None:
        self.found.append(finding)
        if not self.warn:
            return
        owner, ident = key
        seen = _warned_code if owner is None else _warned.setdefault(owner, set())
        if ident in seen:
            return
        seen.add(ident)
        warnings.warn(PrecisionWarning(finding.message(), finding), stacklevel=_user_level())


def _is_sll(func) -> bool:
    from .ops import is_sll_target

    try:
        return is_sll_target(func)
    except Exception:
        return False


def _user_level() -> int:
    """``stacklevel`` of the first frame outside torch, sll_fx and generated code (the user's ``gm(x)``)."""
    frame, level = sys._getframe(1), 1
    while frame is not None:
        name = frame.f_code.co_filename
        if not (name.startswith(_TORCH_DIR) or name.startswith(_SLL_DIR) or name.startswith(_GENERATED)):
            break
        frame, level = frame.f_back, level + 1
    return level


# --- when to check: the first call of each signature ----------------------------------------------

def _tracing(args, kwargs) -> bool:
    if torch.compiler.is_compiling() or torch.jit.is_tracing() or torch.jit.is_scripting():
        return True
    if getattr(torch.compiler, "is_exporting", lambda: False)():
        return True
    if getattr(torch.fx._symbolic_trace, "_is_fx_tracing_flag", False):  # fx.symbolic_trace (no log line)
        return True
    if is_in_torch_dispatch_mode():  # fake/proxy tracing (make_fx, export) and the like
        return True
    for a in (*args, *kwargs.values()):
        if isinstance(a, torch.fx.Proxy) or (isinstance(a, Tensor) and type(a) not in (Tensor, torch.nn.Parameter)):
            return True
    return False


def _tensors(values):
    for a in values:
        if isinstance(a, Tensor):
            yield a
        elif isinstance(a, (list, tuple)):
            yield from (t for t in a if isinstance(t, Tensor))
        elif isinstance(a, dict):
            yield from (t for t in a.values() if isinstance(t, Tensor))


def _autocast_state(device_types) -> tuple:
    out = []
    for kind in sorted(device_types):
        try:
            on = torch.is_autocast_enabled(kind)
            out.append((kind, on, torch.get_autocast_dtype(kind) if on else None))
        except Exception:  # a device type without autocast
            pass
    return tuple(out)


#: ``__dict__`` key of a module's count of eps buffers that ``set_eps`` replaced (``sll_fx.annealing``)
EPS_GENERATION = "_sll_eps_generation"
#: ``__dict__`` key of a module's count of ``_apply`` calls (``.half()``, ``.to(...)``, ``.cuda()``, ``to_empty``:
#: ``SLLGraphModule._apply``), part of the signature.  A cast of a part alone (``gm.emb.half()``) or of the model
#: whose parameters it shares (``model.half()`` converts them in place) is not counted: cast the linearized
#: model itself, or check explicitly with :func:`findings`
CAST_GENERATION = "_sll_cast_generation"


def _eps_octaves(gm) -> tuple:
    """The power-of-two octave of each eps buffer (the 0-dim tensors get_attr nodes feed into sll nodes), read
    again only when one changed: per owner the count of buffers ``set_eps`` replaced, and each tensor's
    version counter (a change in place, not by ``set_eps``)."""
    cached = gm.__dict__.get("_sll_eps_targets")
    code = gm.__dict__.get("_code")
    if cached is None or cached[0] is not code:
        places = []
        for node in gm.graph.nodes:
            if node.op == "get_attr" and any(u.op == "call_function" and _is_sll(u.target) for u in node.users):
                prefix, _, field = node.target.rpartition(".")
                try:
                    places.append((gm.get_submodule(prefix) if prefix else gm, field))
                except AttributeError:
                    pass
        cached = gm.__dict__["_sll_eps_targets"] = (code, tuple(places))
    out, tensors = [], []
    for owner, field in cached[1]:
        t = owner._buffers.get(field)
        if t is None:
            t = getattr(owner, field, None)
        if isinstance(t, Tensor) and t.dim() == 0:
            out.append((owner.__dict__.get(EPS_GENERATION, 0), 0 if t.is_inference() else t._version))
            tensors.append(t)
    versions = tuple(out)
    octaves = gm.__dict__.get("_sll_eps_octaves")
    if octaves is None or octaves[0] != versions:  # (an eps changed: read the values once)
        octaves = gm.__dict__["_sll_eps_octaves"] = (versions, tuple(_octave(t) for t in tensors))
    return octaves[1]


def _octave(t: Tensor) -> int:
    """``floor(log2(eps))``: the power-of-two octave of an eps value (0 for a value that is not positive)."""
    value = float(t.detach())
    return math.floor(math.log2(value)) if value > 0 and math.isfinite(value) else 0


def _signature(gm, args, kwargs) -> tuple:
    tensors = tuple((t.dtype, t.device) for t in _tensors((*args, *kwargs.values()) if kwargs else args))
    kinds = {"cpu", *(d.type for _, d in tensors)}
    return (tensors, _autocast_state(kinds), gm.__dict__.get("_code"), gm.__dict__.get(CAST_GENERATION, 0),
            _eps_octaves(gm))


#: attribute of an EpsError that :func:`call` named: (the GraphModule that holds the node, its name there,
#: source, the message without the node), so that an enclosing module names it again by its own path
_NAMED = "_sll_node"


def _name_eps_error(error: EpsError, root) -> EpsError | None:
    """``error`` (raised by an sll op of ``root``'s forward, or of a GraphModule nested in it) with the node's
    qualified name in ``root`` and its source line in front, or None when no sll node of a generated forward
    raised it (an explicit op in user code, compiled code).  The node is the one whose line the innermost
    generated forward of the traceback was at, when only torch and sll_fx frames lie below it."""
    named = getattr(error, _NAMED, None)
    if named is None:
        frame, lineno = _raising_frame(error)
        located = _node_of(frame, None, lineno) if frame is not None else None
        if located is None or not located[1]:
            return None
        owner, node = located[0], next((n for n in located[0].graph.nodes if n.name == located[1]), None)
        if node is None or node.op != "call_function" or not _is_sll(node.target):
            return None
        named = (owner, located[1], located[2], str(error))
    owner, name, source, message = named
    if owner is not root:
        path = next((p for p, m in root.named_modules() if m is owner), None)
        if path is None:  # (not one of root's modules: named by the module that holds it)
            return None
        name = f"{path}.{name}" if path else name
    out = EpsError(f"node '{name}' ({source or 'no source'}): {message}")
    setattr(out, _NAMED, named)
    return out


def _raising_frame(error: BaseException) -> tuple:
    """(frame, line) of the innermost frame of ``error``'s traceback outside torch and sll_fx, generated forwards
    counted in (the call of the sll op that raised, where one did); (None, None) without one."""
    tb, frame, lineno = error.__traceback__, None, None
    while tb is not None:  # (outermost first: keep the innermost frame outside torch and sll_fx)
        name = tb.tb_frame.f_code.co_filename
        if name.startswith(_GENERATED) or not (name.startswith(_TORCH_DIR) or name.startswith(_SLL_DIR)):
            frame, lineno = tb.tb_frame, tb.tb_lineno
        tb = tb.tb_next
    return frame, lineno


#: attribute of an error :func:`_note_node` gave a note: the note (an enclosing module words it again)
_NOTE = "_sll_node_note"


def _note_node(error: Exception, root) -> None:
    """Add a note to ``error`` (any but an EpsError, raised by an sll op of ``root``'s forward or of a GraphModule
    nested in it, given inputs it cannot take: a threshold of a shape that does not broadcast, an integer tensor)
    that names the node, as the report does, the op it was rewritten from and its source line; torch's type and
    message stay.  Nothing where no sll node of a generated forward raised it (the op's line is the innermost
    frame outside torch and sll_fx)."""
    frame, lineno = _raising_frame(error)
    if frame is None or not frame.f_code.co_filename.startswith(_GENERATED) or \
            not isinstance(owner := frame.f_locals.get("self"), torch.fx.GraphModule):
        return
    match = _ASSIGN.match(linecache.getline(frame.f_code.co_filename, lineno))
    node = next((n for n in owner.graph.nodes if match is not None and n.name == match.group(1)), None)
    if node is None or node.op != "call_function" or not _is_sll(node.target):
        return
    path = "" if owner is root else next((p for p, m in root.named_modules() if m is owner), None)
    if path is None:  # (not one of root's modules: named by the module that holds it)
        return
    note = _node_note(owner, node, path)
    old = getattr(error, _NOTE, None)  # (named by a nested module first: once, by the outermost's path)
    notes = getattr(error, "__notes__", [])
    if old is not None and old in notes:
        notes.remove(old)
    error.add_note(note)
    setattr(error, _NOTE, note)


def _node_note(owner, node, path: str) -> str:
    """The note :func:`_note_node` adds: the node's report name, its op, the op it came from, source, fix."""
    from .diagnostics import sll_node_names
    from .rules import sll_op_name
    from .tracer import module_of, source_of

    name = sll_node_names(owner.graph, path).get(node) or node.name
    report = getattr(owner, "sll_report", None)
    entry = next((e for e in getattr(report, "entries", ()) if e.node == node.meta.get("sll_entry")
                  and e.module == module_of(node)), None)
    made = f", rewritten from {entry.op}" if entry is not None else ""
    where = ", ".join(w for w in (f"graph node '{node.name}'" if name.rpartition(".")[2] != node.name else "",
                                  f"submodule '{module_of(node)}'" if module_of(node) else "",
                                  source_of(node)) if w)
    return (f"sll_fx: raised by node '{name}' of the linearized module (sll.{sll_op_name(node.target)}{made}"
            f"{'; ' + where if where else ''}); check the shapes and dtypes of the inputs it read against the "
            "model's (a threshold or buffer set by hand, an input of another shape, an integer tensor where the op "
            "takes floats)")


def call(gm, call_next, args, kwargs):
    """``SLLGraphModule.__call__``: ``call_next(*args, **kwargs)``, checked on a new signature; an EpsError of one
    of its sll nodes (an eps too wide for its op, too small for the dtype it runs in) names the node, also when
    no check runs (under ``torch.no_grad()``, a signature seen before); any other error an sll node raises gets a
    note naming it (:func:`_note_node`)."""
    if torch.compiler.is_compiling():  # first: dynamo folds it and traces nothing else here
        return call_next(*args, **kwargs)
    try:
        return _call(gm, call_next, args, kwargs)
    except EpsError as e:
        named = _name_eps_error(e, gm)
        if named is None:
            raise
        raise named from None
    except Exception as e:  # (no cost until one is raised)
        _note_node(e, gm)
        raise


def _call(gm, call_next, args, kwargs):
    if not _enabled:
        return call_next(*args, **kwargs)
    if gm.__dict__.get("_compiled_call_impl") is not None:  # (gm.compile(): the call runs compiled code, which
        return call_next(*args, **kwargs)                   #  dynamo would trace under the check's mode)
    if not torch.is_grad_enabled() or _active.get() is not None or _tracing(args, kwargs):
        return call_next(*args, **kwargs)  # no gradient to lose (evaluation), or checked by an outer module
    try:
        sig = _signature(gm, args, kwargs)
        seen = gm.__dict__.setdefault("_sll_precision_seen", {})  # (insertion-ordered: the oldest go first)
        fresh = sig not in seen
    except Exception:
        fresh = False
    if not fresh:
        return call_next(*args, **kwargs)
    token = _active.set(gm)
    try:
        with _CheckMode(gm):
            out = call_next(*args, **kwargs)
    finally:
        _active.reset(token)
    seen[sig] = None
    if len(seen) > _MAX_SEEN:
        del seen[next(iter(seen))]
    return out


#: signatures remembered per module (a few dtypes and autocast states, times the eps octaves of a schedule)
_MAX_SEEN = 64


def findings(gm: torch.nn.Module, *args, **kwargs) -> list[PrecisionFinding]:
    """Run ``gm(*args, **kwargs)`` without gradient and return every precision finding, without warnings.

    For an explicit check (a test, a script before training). Every sll call is reported,
    also those in modules that are not ``SLLGraphModule`` (explicit ops, dynamic mode).
    It is a real forward in the module's current mode (``gm.eval()`` first leaves BatchNorm
    statistics alone).
    """
    mode = _CheckMode(gm, warn=False)
    token = _active.set(gm)
    try:
        with torch.no_grad(), mode:
            gm(*args, **kwargs)
    finally:
        _active.reset(token)
    return mode.found

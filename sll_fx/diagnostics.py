"""Band diagnostics: how much of each sll op's input lies inside its band, step by step.

The most common failure of SLL training is an ``eps`` so small that almost no element
falls inside any band: the gradient through that op is then zero almost everywhere (or
carried by so few elements that it explodes).  :func:`band_stats` measures it::

    with sll_fx.band_stats(gm, threshold=0.01, window=20) as stats:
        for x, y in data:
            loss_fn(gm(x), y).backward()
            opt.step(); opt.zero_grad()
    print(stats)                 # one row per sll node: band fraction, mean |gradient|
    stats.records                # one BandRecord per sll node per step (a step = one forward of gm)

For every ``torch.ops.sll`` node it records, per step:

- ``band_fraction``: the fraction of the op's input elements inside a band,
  :func:`sll_fx.ops.in_band` on the node's run-time arguments (for ops that broadcast,
  ``heaviside`` against ``values`` and ``compare`` against a tensor threshold, the
  fraction of the broadcast input);
- ``mean_abs_grad``: the mean, over the elements of the op's input ``x``, of ``|dL/dx|``
  through this node alone, ``|(grad_output * slope * in_band).sum_to_size(x.shape)|``,
  with ``slope`` the op's :attr:`~sll_fx.kernels.Jump.slope`.  It is read from the
  gradient of the node's output by a hook on the output's ``grad_fn`` and is ``None``
  until a backward pass reaches that node (or when ``x`` does not require grad).  It is
  the gradient the op's backward computes, except for elements within rounding of a band
  edge, where the kernel's own ``linear``-mode test on the clamped ramp may disagree with
  ``in_band`` by one element.

A node whose band fraction stays below ``threshold`` for ``window`` consecutive steps gets
one :class:`BandWarning` naming the node, the op, the fraction, the threshold and the fix.
Nodes of ops that ``in_band`` does not support (it raises ``KeyError``) and nodes whose
input is not floating point (no band: the op is hard there) are listed in ``skipped``.

How it observes the nodes: while active, the recorder gives ``gm`` (and every nested
GraphModule holding sll nodes) an instance-level ``forward`` that runs a *shadow*
GraphModule: a copy of the module's graph in which each sll node calls a probe (the sll
op itself, then the measurements) and which shares every parameter, buffer and submodule
with ``gm`` (the eps buffers of ``linearize_module`` included; a ``set_eps`` while recording puts
new tensors in them, and the shadow is rebuilt for it, so the new eps is seen at the next step).  Same generated code, same ops in the
same order, so outputs and gradients are exactly those without recording.  The shadow is
rebuilt when ``gm`` is recompiled (a graph edit) and after a ``set_eps``.  Records report eps as a float (a node's
eps buffer is read once per call: on an accelerator that is one sync per node per step, as
the band count already is).  On exit (also on an exception) the original
``forward`` is put back.  No torch function is patched and no global state is used.
"""

from __future__ import annotations

import copy
import math
import os
import sys
import warnings
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable

import torch
from tabulate import tabulate
from torch import Tensor, fx

from . import ops
from .precision import EPS_GENERATION

__all__ = ["BandWarning", "BandRecord", "NodeSummary", "BandStats", "band_stats"]

FIX = "raise eps (e.g. set_eps) or use eps='auto'"

_MISSING = object()
_TORCH_DIR = os.path.dirname(torch.__file__)


class BandWarning(UserWarning):
    """An sll node's band fraction stayed below the threshold over the whole window."""


@dataclass(frozen=True)
class BandRecord:
    """One sll node in one step (one forward of the recorded module)."""
    node: str                     # fx node name; "sub.name" for a node of a nested GraphModule at "sub"
    op: str                       # the sll op's name: "sign", "round", "compare", ...
    step: int                     # 0 for the first forward while recording
    band_fraction: float          # in_band / numel (NaN for an empty input)
    mean_abs_grad: float | None   # mean |dL/dx| through this node; None until a backward reached it
    in_band: int                  # elements inside a band (summed over calls, if the node ran more than once)
    numel: int                    # elements tested
    eps: float                    # the node's eps at that step


@dataclass(frozen=True)
class NodeSummary:
    """One sll node over the recording: see :meth:`BandStats.summary`."""
    node: str
    op: str
    eps: float                    # at the last step
    steps: int                    # steps in which the node ran
    band_fraction: float          # mean over the node's last ``window`` steps
    last_band_fraction: float
    mean_abs_grad: float | None   # of the latest step a backward pass reached
    low_steps: int                # current run of consecutive steps below the threshold
    warned: bool


class _Call:
    """One execution of an sll node (a node runs more than once per step when its module does)."""
    __slots__ = ("in_band", "numel", "x_numel", "grad_abs_sum")

    def __init__(self, in_band: int, numel: int, x_numel: int):
        self.in_band, self.numel, self.x_numel = in_band, numel, x_numel
        self.grad_abs_sum: float | None = None


class _NodeStep:
    __slots__ = ("op", "eps", "calls", "step")

    def __init__(self, op: str, eps: float):
        self.op, self.eps, self.calls, self.step = op, eps, [], -1

    @property
    def in_band(self) -> int:
        return sum(c.in_band for c in self.calls)

    @property
    def numel(self) -> int:
        return sum(c.numel for c in self.calls)

    @property
    def fraction(self) -> float:
        n = self.numel
        return self.in_band / n if n else math.nan

    @property
    def mean_abs_grad(self) -> float | None:
        done = [c for c in self.calls if c.grad_abs_sum is not None]
        if not done:
            return None
        n = sum(c.x_numel for c in done)
        return sum(c.grad_abs_sum for c in done) / n if n else 0.0


def _op_name(target) -> str:
    """``"compare"`` for ``torch.ops.sll.compare`` and for its overload ``torch.ops.sll.compare.Scalar``."""
    packet = target.overloadpacket if isinstance(target, torch._ops.OpOverload) else target
    return packet._qualified_op_name.split("::", 1)[1]


def _positional_names(target) -> list[str]:
    overload = target if isinstance(target, torch._ops.OpOverload) else getattr(target, "default", None)
    if overload is None:
        return []
    return [a.name for a in overload._schema.arguments if not a.kwarg_only]


def _sll_nodes(graph: fx.Graph) -> list[fx.Node]:
    return [n for n in graph.nodes if n.op == "call_function" and ops.is_sll_target(n.target)]


class BandStats:
    """Recorder returned by :func:`band_stats`; a context manager (or ``start()`` / ``stop()``)."""

    def __init__(self, gm: torch.nn.Module, *, threshold: float = 0.01, window: int = 20,
                 max_steps: int | None = None):
        if not isinstance(gm, torch.nn.Module):
            raise TypeError(f"band_stats: expected an nn.Module (a GraphModule), got {type(gm).__name__}")
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0 <= threshold <= 1:
            raise ValueError(f"band_stats: threshold={threshold!r} must be a fraction in [0, 1]")
        if isinstance(window, bool) or not isinstance(window, int) or window < 1:
            raise ValueError(f"band_stats: window={window!r} must be a positive int")
        if max_steps is not None and (isinstance(max_steps, bool) or not isinstance(max_steps, int)
                                      or max_steps < 1):
            raise ValueError(f"band_stats: max_steps={max_steps!r} must be a positive int or None")
        self.gm = gm
        self.threshold = float(threshold)
        self.window = window
        self.max_steps = max_steps
        self.steps = 0                                   # completed forwards while recording
        self.skipped: dict[str, str] = {}                # node -> why it is not measured
        self._history: deque[tuple[int, dict[str, _NodeStep]]] = deque(maxlen=max_steps)
        self._recent: dict[str, deque[float]] = {}       # node -> last `window` fractions
        self._last: dict[str, _NodeStep] = {}            # node -> its latest step
        self._counts: dict[str, int] = {}                # node -> steps it ran in
        self._low: dict[str, int] = {}                   # node -> consecutive steps below threshold
        self._warned: list[str] = []
        self._grad_step: dict[str, _NodeStep] = {}       # node -> latest step a backward reached
        self._current: dict[str, _NodeStep] | None = None
        self._installed: list[tuple[torch.nn.Module, Any, Callable]] = []
        self._active = False

    # --- the records ------------------------------------------------------------------

    @property
    def records(self) -> list[BandRecord]:
        """One :class:`BandRecord` per sll node per step, in step order then execution order."""
        return [BandRecord(name, ns.op, step, ns.fraction, ns.mean_abs_grad, ns.in_band, ns.numel, ns.eps)
                for step, nodes in self._history for name, ns in nodes.items()]

    @property
    def warned(self) -> tuple[str, ...]:
        """Nodes a :class:`BandWarning` was issued for, in order."""
        return tuple(self._warned)

    def summary(self) -> list[NodeSummary]:
        """Per node: the mean band fraction over its last ``window`` steps and the latest mean |grad|."""
        out = []
        for name, last in self._last.items():
            recent = self._recent[name]
            grad = self._grad_step.get(name)
            out.append(NodeSummary(
                node=name, op=last.op, eps=last.eps, steps=self._counts[name],
                band_fraction=sum(recent) / len(recent), last_band_fraction=recent[-1],
                mean_abs_grad=None if grad is None else grad.mean_abs_grad,
                low_steps=self._low.get(name, 0), warned=name in self._warned))
        return out

    def __str__(self) -> str:
        rows = self.summary()
        head = (f"sll_fx.band_stats: {self.steps} step(s), {len(rows)} sll node(s) measured "
                f"(threshold={self.threshold:g}, window={self.window}), {len(self._warned)} warned, "
                f"{len(self.skipped)} skipped")
        parts = [head]
        if rows:
            table = [(s.node, f"sll.{s.op}", f"{s.eps:g}", s.steps, f"{s.band_fraction:.4g}",
                      f"{s.last_band_fraction:.4g}", "-" if s.mean_abs_grad is None else f"{s.mean_abs_grad:.4g}",
                      "yes" if s.warned else "") for s in rows]
            parts.append(tabulate(table, headers=["node", "op", "eps", "steps",
                                                  f"band fraction (last {self.window})", "last band fraction",
                                                  "mean |grad|", "warned"]))
        parts += [f"skipped: {name} ({why})" for name, why in self.skipped.items()]
        return "\n".join(parts)

    def __repr__(self) -> str:
        return (f"<BandStats {type(self.gm).__name__} steps={self.steps} nodes={len(self._last)} "
                f"active={self._active}>")

    # --- activation -------------------------------------------------------------------

    def start(self) -> BandStats:
        """Begin recording: install the recording ``forward`` on the module (and nested GraphModules)."""
        if self._active:
            raise RuntimeError("band_stats: this recorder is already recording")
        modules = [("", self.gm)] + [(path, m) for path, m in self.gm.named_modules()
                                      if path and isinstance(m, fx.GraphModule) and _sll_nodes(m.graph)]
        try:
            for path, mod in modules:
                previous = mod.__dict__.get("forward", _MISSING)
                forward = self._recording_forward(path, mod, previous)
                mod.__dict__["forward"] = forward
                self._installed.append((mod, previous, forward))
        except BaseException:
            self._uninstall()
            raise
        self._active = True
        return self

    def stop(self) -> None:
        """Stop recording and give every module its own ``forward`` back; the records stay."""
        self._active = False
        self._current = None
        self._uninstall()

    def _uninstall(self) -> None:
        while self._installed:
            mod, previous, forward = self._installed.pop()
            if mod.__dict__.get("forward") is not forward:
                continue  # replaced meanwhile (a recorder entered later and not yet stopped): leave it
            if previous is _MISSING:
                del mod.__dict__["forward"]
            else:
                mod.__dict__["forward"] = previous

    def __enter__(self) -> BandStats:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # --- running ----------------------------------------------------------------------

    def _recording_forward(self, path: str, mod: torch.nn.Module, previous) -> Callable:
        top = path == ""
        if isinstance(mod, fx.GraphModule):
            cache: list = [None, None]  # [(mod's code, its eps generation) the shadow was built from, shadow]

            def inner() -> Callable:
                # a new code string at every recompile (graph edits); a new generation whenever set_eps
                # puts new tensors in mod's eps buffers (the shadow holds the tensors it was built with)
                key = (mod.code, mod.__dict__.get(EPS_GENERATION, 0))
                if cache[0] is None or cache[0][0] is not key[0] or cache[0][1] != key[1]:
                    cache[0], cache[1] = key, self._shadow(path, mod)
                return cache[1].forward
        else:  # a plain module: its own forward (nested GraphModules are instrumented themselves)
            own = previous if previous is not _MISSING else type(mod).forward.__get__(mod)

            def inner() -> Callable:
                return own

        def forward(*args, **kwargs):
            run = inner()
            if not (top and self._active) or self._current is not None:
                return run(*args, **kwargs)
            step = self._current = {}
            try:
                out = run(*args, **kwargs)
            finally:  # a forward that raised is no step: its partial records are dropped
                self._current = None
            self._finish_step(step)
            return out

        return forward

    def _shadow(self, path: str, mod: fx.GraphModule) -> fx.GraphModule:
        """A GraphModule running ``mod``'s graph, each sll node through a probe, sharing ``mod``'s state."""
        graph = copy.deepcopy(mod.graph)
        for node in _sll_nodes(graph):
            node.target = self._probe(f"{path}.{node.name}" if path else node.name, node.target)
        return fx.GraphModule(mod, graph, class_name=f"{type(mod).__name__}BandStats")

    def _probe(self, name: str, target) -> Callable:
        op = _op_name(target)
        positional = _positional_names(target)

        def probe(*args, **kwargs):
            out = target(*args, **kwargs)
            if self._current is not None and name not in self.skipped:
                self._observe(name, op, positional, args, kwargs, out)
            return out

        probe.__name__ = probe.__qualname__ = f"sll_band_probe_{op}"
        return probe

    def _observe(self, name: str, op: str, positional: list[str], args: tuple, kwargs: dict, out) -> None:
        if len(args) < len(positional) and any(p in kwargs for p in positional[len(args):]):
            kwargs = dict(kwargs)
            args = tuple(args) + tuple(kwargs.pop(p) for p in positional[len(args):] if p in kwargs)
        if isinstance(kwargs.get("eps"), Tensor):  # an eps buffer (linearize_module): its value now
            kwargs = {**kwargs, "eps": float(kwargs["eps"])}
        x = args[0]
        if not isinstance(x, Tensor) or not x.is_floating_point():
            self.skipped[name] = f"sll.{op} input is {getattr(x, 'dtype', type(x).__name__)}, not floating: no band"
            return
        try:
            mask = ops.in_band(op, args, kwargs)
            slope = ops.jump_of(op, args, kwargs).slope
        except KeyError:
            self.skipped[name] = f"in_band does not support sll.{op} yet"
            return
        numel = mask.numel()
        call = _Call(int(mask.sum()) if numel else 0, numel, x.numel())
        step = self._current
        node_step = step.get(name)
        if node_step is None:
            node_step = step[name] = _NodeStep(op, float(kwargs["eps"]))
        node_step.calls.append(call)
        if x.requires_grad and isinstance(out, Tensor) and out.grad_fn is not None:
            out.grad_fn.register_prehook(self._grad_hook(name, node_step, call, mask, slope, x.shape))

    def _grad_hook(self, name: str, node_step: _NodeStep, call: _Call, mask: Tensor, slope: float,
                   x_shape: torch.Size) -> Callable:
        def hook(grad_outputs):
            grad = grad_outputs[0]
            if grad is None:
                return None
            with torch.no_grad():
                g = (grad.detach() * mask).mul_(slope)
                if g.shape != x_shape:
                    g = g.sum_to_size(x_shape)
                call.grad_abs_sum = float(g.abs().sum(dtype=torch.float64))
            latest = self._grad_step.get(name)
            if latest is None or latest.step <= node_step.step:
                self._grad_step[name] = node_step
            return None
        return hook

    def _finish_step(self, nodes: dict[str, _NodeStep]) -> None:
        index = self.steps
        self.steps += 1
        self._history.append((index, nodes))
        for name, ns in nodes.items():
            ns.step = index
            fraction = ns.fraction
            self._last[name] = ns
            self._counts[name] = self._counts.get(name, 0) + 1
            self._recent.setdefault(name, deque(maxlen=self.window)).append(fraction)
            self._low[name] = self._low.get(name, 0) + 1 if fraction < self.threshold else 0
            if self._low[name] >= self.window and name not in self._warned:
                self._warned.append(name)
                self._warn(name, ns)

    def _warn(self, name: str, ns: _NodeStep) -> None:
        recent = self._recent[name]
        mean = sum(recent) / len(recent)
        msg = (f"sll_fx.band_stats: node {name!r} (sll.{ns.op}, eps={ns.eps:g}) had a band fraction below "
               f"threshold={self.threshold:g} for {self.window} consecutive steps (mean {mean:.4g}, last "
               f"{recent[-1]:.4g}, {ns.in_band} of {ns.numel} elements): its gradient is zero almost everywhere; "
               f"{FIX}")
        warnings.warn(msg, BandWarning, stacklevel=_caller_level())


def _caller_level() -> int:
    """``stacklevel`` pointing at the first frame outside sll_fx and torch (the user's ``gm(x)``)."""
    frame, level = sys._getframe(1), 1  # the frame calling warnings.warn is level 1
    while frame is not None and (frame.f_code.co_filename.startswith(os.path.dirname(__file__))  # sll_fx
                                 or frame.f_code.co_filename.startswith(_TORCH_DIR)):
        frame, level = frame.f_back, level + 1
    return level


def band_stats(gm: torch.nn.Module, *, threshold: float = 0.01, window: int = 20,
               max_steps: int | None = None) -> BandStats:
    """Record, per sll node and per forward of ``gm``, the band fraction and the mean |gradient| passed back.

    Use it as a context manager (``with band_stats(gm) as stats: ...``) or call
    ``stats.start()`` / ``stats.stop()``.  While active, every forward of ``gm`` is a step;
    ``stats.records`` has one :class:`BandRecord` per sll node per step, ``stats.summary()``
    one :class:`NodeSummary` per node, ``str(stats)`` is a table.  A node whose band fraction
    is below ``threshold`` for ``window`` consecutive steps gets one :class:`BandWarning`.
    Outputs and gradients are exactly those without recording.

    Args:
        gm: the module to watch, normally the result of ``linearize_module`` (any module works;
            nested GraphModules holding sll nodes are measured too, their nodes named ``"path.node"``).
        threshold: the band fraction below which a step counts as starved.
        window: consecutive starved steps before the warning.
        max_steps: keep the records of at most this many recent steps (``None``: all).
    """
    return BandStats(gm, threshold=threshold, window=window, max_steps=max_steps)

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
  with ``slope`` the op's :attr:`~sll_fx.kernels.Jump.slope` (for a selection, ``one_hot(argmax)`` or a
  top-k mask, whose elements compete, the op's own vector-Jacobian product at ``x``, recomputed).  It is read from the
  gradient of the node's output by a hook on the output's ``grad_fn`` and is ``None``
  until a backward pass reaches that node (or when ``x`` does not require grad).  It is
  the gradient the op's backward computes, except for elements within rounding of a band
  edge, where the kernel's own ``linear``-mode test on the clamped ramp may disagree with
  ``in_band`` by one element.

A node whose band fraction stays below ``threshold`` for ``window`` consecutive steps gets
one :class:`BandWarning` naming the node, the op, the fraction, the threshold and the fix.
Nodes of ops that ``in_band`` does not support (it raises ``KeyError``) and nodes whose
input is not floating point (no band: the op is hard there) are listed in ``skipped``.

**Estimators.**  Each record carries the node's ``mode`` (its sll op's ``mode`` argument).
``"linear"`` and ``"hard"`` (the SLL backward) are measured as above.  A node of
``linearize_module(method="ste")`` or ``method="sigmoid"`` (mode ``"ste"`` / ``"sigmoid"``: a hard
forward, another backward) gets its ``mean_abs_grad`` from that estimator's backward
(:func:`sll_fx.kernels.estimator_grad`: 1 on every element of a round for ``ste``, the sigmoid's
derivative, tails included, for ``sigmoid``); its ``band_fraction`` is still the fraction
within eps of a boundary (for ``sigmoid`` eps is the temperature; ``ste`` does not use eps), and
it never gets a :class:`BandWarning`: those gradients are not confined to the band.  The table
shows such a node's op as ``sll.round [ste]``.

**Names.**  A node is named as the report (``gm.sll_report``) names it: its entry's ``node``
(``gt`` for the ``sll.compare`` that rewrote ``x > t``; an explicit op, or a node of a graph
``linearize_module`` did not make, by its fx name), and ``"<path>.<node>"`` for a node of a
nested GraphModule at ``path`` (the traced child ``b.g`` of an opaque module: ``b.g.sign``; its
report entry has ``node="sign"``, ``module`` starting with ``"b.g"``).  See :func:`sll_node_names`;
:func:`sll_fx.calibrate` returns the same names.

How it observes the nodes: while active, the recorder gives ``gm`` (and every nested
GraphModule holding sll nodes) an instance-level ``forward`` that runs a *shadow* forward:
the code fx generates for a copy of the module's graph in which each sll node calls a probe
(the sll op itself, then the measurements), bound to the module itself.  Every attribute it
reads (parameters, buffers, the eps buffers ``set_eps`` replaces, submodules, the ``training``
flags that a traced ``F.dropout(x, p, training=self.training)`` reads, constants) is the
module's own at call time: ``gm.train()`` / ``gm.eval()`` and ``set_eps`` inside the recording
take effect at the next call, as without recording.  Same generated code, same ops in the
same order, so outputs and gradients are exactly those without recording.  The shadow
forward is regenerated only when the module is recompiled (a graph edit).  Records report eps as a float (a node's
eps buffer is read once per call: on an accelerator that is one sync per node per step, as
the band count already is).  On exit (also on an exception) the original
``forward`` is put back.  No torch function is patched and no global state is used.
A calibration (``eps="auto"``'s first calls, :func:`sll_fx.calibrate`) while recording runs
its own forward, which is not a step, and leaves the recording in place.
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

from . import kernels, ops

__all__ = ["BandWarning", "BandRecord", "NodeSummary", "BandStats", "band_stats", "sll_node_names"]

FIX = "raise eps (e.g. set_eps) or use eps='auto'"

_MISSING = object()
_SELECTIONS = ("argmax_onehot", "topk_mask")  # in_band measures them; no one slope: mean_abs_grad from the op's VJP
_TORCH_DIR = os.path.dirname(torch.__file__)


class BandWarning(UserWarning):
    """An sll node's band fraction stayed below the threshold over the whole window."""


@dataclass(frozen=True)
class BandRecord:
    """One sll node in one step (one forward of the recorded module)."""
    node: str                     # the report entry's name ("path.name" in a nested GraphModule): sll_node_names
    op: str                       # the sll op's name: "sign", "round", "compare", ...
    step: int                     # 0 for the first forward while recording
    band_fraction: float          # in_band / numel (NaN for an empty input)
    mean_abs_grad: float | None   # mean |dL/dx| through this node; None until a backward reached it
    in_band: int                  # elements inside a band (summed over calls, if the node ran more than once)
    numel: int                    # elements tested
    eps: float                    # the node's eps at that step
    mode: str = "linear"          # the node's mode: "linear", "hard", or an estimator's "ste" / "sigmoid"


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
    low_steps: int                # current run of consecutive steps below the threshold (0 for an estimator)
    warned: bool
    mode: str = "linear"          # as BandRecord.mode


class _Call:
    """One execution of an sll node (a node runs more than once per step when its module does)."""
    __slots__ = ("in_band", "numel", "x_numel", "grad_abs_sum")

    def __init__(self, in_band: int, numel: int, x_numel: int):
        self.in_band, self.numel, self.x_numel = in_band, numel, x_numel
        self.grad_abs_sum: float | None = None


class _NodeStep:
    __slots__ = ("op", "eps", "mode", "calls", "step")

    def __init__(self, op: str, eps: float, mode: str):
        self.op, self.eps, self.mode, self.calls, self.step = op, eps, mode, [], -1

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
    return [n for n in graph.nodes if n.op == "call_function" and ops.is_sll_target(n.target) and not is_soft_mask(n)]


def is_soft_mask(node: fx.Node) -> bool:
    """Is ``node`` a selection's ``soft`` mask: an ``sll.compare`` read only as the ``soft`` input of
    ``sll.select`` nodes?  In hard mode ``linearize_module`` gives a where/masked_fill, next to its hard
    mask's comparison, a linear-mode copy of it (same inputs, same eps buffer) whose surrogate weighs the
    branches' gradients (SLL_MATH.md, forward modes).  It is part of that selection, not a node of its own:
    no report entry, no name in ``band_stats``/``eps_state``/``calibrate``, no eps of its own for ``set_eps``
    (it reads its comparison's buffer), no second precision warning; ``export_hard`` drops it with its
    selection.  Read from the graph's structure, which pickling, copies and ``torch.export`` keep (node meta
    they do not all keep)."""
    if node.op != "call_function" or not ops.is_sll_target(node.target) or _op_name(node.target) != "compare" \
            or not node.users:
        return False
    return all(u.op == "call_function" and ops.is_sll_target(u.target) and _op_name(u.target) == "select"
               and u.kwargs.get("soft") is node and node not in u.args for u in node.users)


def sll_node_names(graph: fx.Graph, path: str = "") -> dict[fx.Node, str]:
    """The name :func:`band_stats` and :func:`sll_fx.calibrate` give each sll node of ``graph``.

    The report's name for it: its entry's ``node`` (``node.meta["sll_entry"]``: ``gt`` for the
    ``sll.compare`` node that rewrote ``x > t``), else (an explicit op, a hand-made graph) the fx
    node name; for a graph of a nested GraphModule at ``path`` (the traced child of an opaque
    module, e.g. ``"b.g"``), ``"<path>.<name>"`` (``"b.g.sign"``).  Unique within the graph (a
    name taken twice falls back to the fx node name).
    """
    out: dict[fx.Node, str] = {}
    taken: set[str] = set()
    for node in _sll_nodes(graph):
        name = node.meta.get("sll_entry") or node.name
        if name in taken:
            name = node.name
        taken.add(name)
        out[node] = f"{path}.{name}" if path else name
    return out


#: attribute of a recording ``forward`` that :meth:`BandStats.start` installs: its recorder
_RECORDER = "_sll_band_stats"


class BandStats:
    """Recorder returned by :func:`band_stats`; a context manager (or ``start()`` / ``stop()``)."""

    def __init__(self, gm: torch.nn.Module, *, threshold: float = 0.01, window: int = 20,
                 max_steps: int | None = None):
        if not isinstance(gm, torch.nn.Module):
            raise TypeError(f"band_stats: expected an nn.Module (a GraphModule), got {type(gm).__name__}")
        from .annealing import _root, require_sll_node  # (annealing imports this module)
        require_sll_node(_root(gm, "band_stats"), "band_stats")  # (the original model: nothing to record, a58)
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
        return [BandRecord(name, ns.op, step, ns.fraction, ns.mean_abs_grad, ns.in_band, ns.numel, ns.eps, ns.mode)
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
                low_steps=self._low.get(name, 0), warned=name in self._warned, mode=last.mode))
        return out

    def __str__(self) -> str:
        rows = self.summary()
        head = (f"sll_fx.band_stats: {self.steps} step(s), {len(rows)} sll node(s) measured "
                f"(threshold={self.threshold:g}, window={self.window}), {len(self._warned)} warned, "
                f"{len(self.skipped)} skipped")
        parts = [head]
        if rows:
            table = [(s.node, f"sll.{s.op} [{s.mode}]" if s.mode in ops.ESTIMATOR_MODES else f"sll.{s.op}",
                      f"{s.eps:g}", s.steps, f"{s.band_fraction:.4g}", f"{s.last_band_fraction:.4g}",
                      "-" if s.mean_abs_grad is None else f"{s.mean_abs_grad:.4g}", "yes" if s.warned else "")
                     for s in rows]
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
        for path, mod in modules:  # (the later recorder's forward would replace the earlier's: it recorded nothing)
            other = getattr(mod.__dict__.get("forward"), _RECORDER, None)
            if other is not None and other is not self and other._active:
                where = f" (its submodule '{path}')" if path else ""
                raise RuntimeError(
                    f"band_stats: another band_stats recorder is recording {type(self.gm).__name__}{where}: "
                    "two recorders on one model cannot both see its steps, and the one started later would take "
                    "every step from the other\nFix: stop the other recorder first (leave its `with` block, or "
                    "call its stop()), or read the steps you want from its records")
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
            cache: list = [None, None]  # [mod's code the shadow forward was generated from, that forward]

            def inner() -> Callable:
                # a new code string at every recompile (graph edits); everything else (eps buffers that
                # set_eps replaces, training flags, submodules) the shadow forward reads from mod each call
                code = mod.code
                if cache[0] is not code:
                    cache[0], cache[1] = code, self._shadow(path, mod)
                return cache[1]
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

        setattr(forward, _RECORDER, self)
        return forward

    def _shadow(self, path: str, mod: fx.GraphModule) -> Callable:
        """``mod``'s forward with each sll node through a probe: the code fx generates for a copy of
        ``mod``'s graph, bound to ``mod`` itself, so that every ``self.<attr>`` it reads (parameters,
        buffers, eps buffers, submodules, ``training`` flags, constants) is ``mod``'s at call time.
        (A GraphModule built around the copy would hold copies of the plain attributes, ``training``
        among them, taken once.)"""
        graph = copy.deepcopy(mod.graph)
        for node, name in sll_node_names(graph, path).items():
            node.target = self._probe(name, node.target)
        shadow = fx.GraphModule(mod, graph, class_name=f"{type(mod).__name__}BandStats")
        return type(shadow).forward.__get__(mod)  # (the generated function; the shadow module is dropped)

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
            slope = None if op in _SELECTIONS else ops.jump_of(op, args, kwargs).slope
        except KeyError:
            self.skipped[name] = f"in_band does not support sll.{op} yet"
            return
        numel = mask.numel()
        call = _Call(int(mask.sum()) if numel else 0, numel, x.numel())
        mode = kwargs.get("mode", "linear")
        step = self._current
        node_step = step.get(name)
        if node_step is None:
            node_step = step[name] = _NodeStep(op, float(kwargs["eps"]), mode)
        node_step.calls.append(call)
        if x.requires_grad and isinstance(out, Tensor) and out.grad_fn is not None:
            if mode in ops.ESTIMATOR_MODES:  # a hard forward whose backward is not the band's: its own formula
                factor = self._estimator_factor(op, mode, args, kwargs)
            elif slope is None:  # a selection: its elements compete, no one slope; the op's own vector-Jacobian product
                factor = self._selection_factor(op, args, kwargs)
            else:
                factor = lambda grad: (grad * mask).mul_(slope)  # noqa: E731
            out.grad_fn.register_prehook(self._grad_hook(name, node_step, call, factor, x.shape))

    @staticmethod
    def _estimator_factor(op: str, mode: str, args: tuple, kwargs: dict) -> Callable[[Tensor], Tensor]:
        """grad -> d(node)/dx * grad as the estimator's backward computes it (``kernels.estimator_grad``)."""
        args = tuple(a.detach() if isinstance(a, Tensor) else a for a in args)
        jump = ops.jump_of(op, args, kwargs)
        x = args[0]
        if op == "heaviside":
            x = x.expand(torch.broadcast_shapes(x.shape, args[1].shape))
        return lambda grad: kernels.estimator_grad(grad, x, jump, mode)

    @staticmethod
    def _selection_factor(op: str, args: tuple, kwargs: dict) -> Callable[[Tensor], Tensor]:
        """grad -> the vector-Jacobian product of ``sll.<op>`` at the node's input (recomputed on a detached copy:
        one more forward and backward of the op per step, a diagnostic's cost)."""
        x, rest = args[0].detach(), args[1:]
        fn = getattr(torch.ops.sll, op)

        def factor(grad: Tensor) -> Tensor:
            with torch.enable_grad():
                xd = x.requires_grad_()
                return torch.autograd.grad(fn(xd, *rest, **kwargs), xd, grad)[0]
        return factor

    def _grad_hook(self, name: str, node_step: _NodeStep, call: _Call, factor: Callable[[Tensor], Tensor],
                   x_shape: torch.Size) -> Callable:
        def hook(grad_outputs):
            grad = grad_outputs[0]
            if grad is None:
                return None
            with torch.no_grad():
                g = factor(grad.detach())
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
            # an estimator's gradient is not confined to the band (ste: 1 everywhere; sigmoid: tails): no warning
            starved = fraction < self.threshold and ns.mode not in ops.ESTIMATOR_MODES
            self._low[name] = self._low.get(name, 0) + 1 if starved else 0
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
    Outputs and gradients are exactly those without recording, in training and in eval mode
    (``gm.train()`` / ``gm.eval()`` inside the recording take effect at once).  Nodes are named as
    in ``gm.sll_report`` (see the module docstring, "Names"); nodes running an estimator
    (``method="ste"`` / ``"sigmoid"``) get that estimator's gradient and no warning ("Estimators").

    Args:
        gm: the module to watch, normally the result of ``linearize_module`` (any module holding sll nodes works;
            nested GraphModules holding sll nodes are measured too, their nodes named ``"path.node"``); one
            holding none that is no ``linearize_module`` result (the original model, an ``export_hard`` result) is
            a ``ValueError`` naming the fix.
        threshold: the band fraction below which a step counts as starved.
        window: consecutive starved steps before the warning.
        max_steps: keep the records of at most this many recent steps (``None``: all).
    """
    return BandStats(gm, threshold=threshold, window=window, max_steps=max_steps)

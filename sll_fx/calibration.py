"""``eps="auto"``: calibrate each rewritten node's eps from the data it sees.

``linearize_module(model, eps="auto", target=0.25, calibrate_steps=1)`` (``eps="auto"`` is
``linearize_module``'s default) gives every node whose eps is left to calibration (below) a
placeholder eps (``min(DEFAULT_EPS, limit / 2)``) and calibrates on the first
``calibrate_steps`` forward calls (a forward pre-hook); ``calibrate(gm, *inputs, target=...)``
does it explicitly, on any linearized module, as often as wanted (and ends a pending automatic
calibration); ``freeze_eps(gm)`` stops the automatic calibration.

Per node: the distance of each input element to its nearest boundary, in units of eps
(``kernels.Jump.distance / half``; the margin for ``argmax_onehot``, the distance to the top-k
threshold for ``topk_mask``), and eps = the ``target`` quantile of ``|distance|`` (the midpoint
between neighbouring order statistics, so that a fraction ``target`` lies strictly inside the
band), clamped to ``[floor, ops.eps_limit]`` (``floor``: ``FLOOR`` or 4 spacings of the input's dtype
at its largest magnitude, below which the band holds no representable value).  A node whose
inputs depend on no input of the graph (parameters and buffers only: weight masks, quantized
weights, decision logits) sees the same values on every batch, and an element outside its band
would never get a gradient: its band covers all of them (target 1, eps 1.5 times the largest
distance, up to the limit).  ``DEFAULT_TARGET`` and this rule come from ``benchmarks/efficacy.py``
(README, "Does it train?").  Nodes are calibrated in graph order, each just
before it runs, so a node downstream sees its inputs computed with the calibrated eps upstream.
Calibration is a real forward (under ``torch.no_grad``) of the module in its current mode; the module state it
changes is put back after it (:class:`_SavedState`: BatchNorm statistics, running maxima, an opaque neuron's
``self.v``, counters), so the call it calibrates finds the state as it was.  It leaves the random
generators as it found them (the CPU's and those of the CUDA devices the inputs and the module are on):
a Dropout draws its masks in it, and the training step after it draws the same ones as without it.  The automatic
calibration pools the samples of its ``calibrate_steps`` calls; ``calibrate`` starts afresh.
Copies (``copy.copy``, ``copy.deepcopy``, pickling, ``torch.save``/``torch.load``) keep the current eps,
the ``target`` and a pending automatic calibration (its remaining calls and pooled samples): a copy made
before the first call calibrates on its own first call.

**Atoms.**  Elements exactly on a boundary (distance 0: relu's zeros under a sign or a heaviside, integer-valued
data under a round, two equal maxima) lie inside every band, so they say nothing about its width: the quantile is
taken over the other elements (a fraction ``target`` of those in the band, and the atoms), so that a node whose
input sits on its jump on whole ranges (left hard, or rewritten in mode "hard", by the tie check) still passes a
gradient to the rest.  A node whose every element is an atom gets the floor.

**No data.**  A node that has seen no input element yet (an empty batch, only non-finite values, a path
the input did not take) keeps its eps: nothing to choose it from.  A forward call that gives no node any
element (an empty first batch) does not count as one of the ``calibrate_steps``: the next call calibrates.
When the automatic calibration ends with nodes that never saw an element, or ``calibrate`` gave some none,
a ``UserWarning`` names them (their eps stay as they were: the placeholders, before any calibration).
``calibrate`` on a call that gives no node an element leaves a pending automatic calibration pending.  A calibrating
call that raises changes nothing (:class:`_Undo`: the eps set before the failing node, the samples pooled, the
reports' eps column); a pending automatic calibration stays pending.

eps is written with :func:`sll_fx.set_eps` into the nodes' eps buffers: the graph and the code do
not change (compiled code keeps running with the new values), and the report's eps column
shows the chosen values.

**Which nodes.**  Calibration (the automatic one and ``calibrate``) sets the eps of the nodes that
``linearize_module`` rewrote, the report's rewritten entries (:func:`calibrated_nodes`):

- with ``eps="auto"`` as the default (``linearize_module(model)``, ``SLLConfig(eps="auto", ...)``),
  those whose eps is left to it (``Entry.auto``); a node that ``SLLConfig.kind_eps`` or
  ``module_eps`` gives a number keeps that number;
- with a fixed eps (``linearize_module(model, 0.1)``, then ``calibrate``), all of them.

An explicit op written in the model (``sll_fx.round(h, 0.05)``) is not an entry: its eps is the
user's and calibration never changes it (``set_eps`` still does).  A GraphModule that
``linearize_module`` did not make (no report: a hand-made graph) has every sll node calibrated by
``calibrate``.  When no node is left to calibrate, ``linearize_module`` starts no automatic
calibration and ``calibrate`` runs no forward (returns ``{}``).

``calibrate``, ``freeze_eps`` and ``is_calibrating`` also take the ``torch.compile`` wrapper
(``torch.compile(gm)``, an ``OptimizedModule``): they act on the module it compiles, and
``calibrate`` runs it eagerly.  Compiled code keeps running (eps is a graph input).
"""

from __future__ import annotations

import functools
import math
import numbers
import warnings

import torch
from torch import fx, nn

from . import kernels, rules
from .annealing import _eps_nodes, _root, require_sll, set_eps, unwrap_compiled
from .diagnostics import sll_node_names
from .errors import EpsError
from .opaque import _CONTAINERS_SET, _MUTABLE, _global_containers, _plain_object, is_opaque
from .ops import DEFAULT_EPS, eps_limit, jump_of
from .report import RewriteReport
from .tracer import _CALIBRATION_STATE, module_of

#: the smallest eps calibration chooses
FLOOR = 1e-7
#: the default fraction of a data-dependent node's inputs inside its band: the best of 0.1 / 0.25 / 0.5
#: on the six digits tasks of ``benchmarks/efficacy.py`` (mean test accuracy 96.8 / 97.1 / 96.9 %)
DEFAULT_TARGET = 0.25
#: samples kept per node and call (a strided subset of larger inputs)
MAX_SAMPLES = 200_000
_STATE = _CALIBRATION_STATE  # (the instance attribute holding it: the tracer reads it too)
_MISSING = object()


def _distances(op: str, args: tuple, kwargs: dict) -> tuple[torch.Tensor, float] | None:
    """(|distance to the nearest boundary| of each input element in units of eps, flat float64 and finite;
    the floor for eps: ``FLOOR`` or 4 spacings of the input's dtype at its largest finite magnitude)."""
    x = args[0]
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        return None
    x = x.detach()
    largest = kwargs.get("largest", True)
    if op == "argmax_onehot":
        d = kernels.argmax_margin(x, args[1], largest)
    elif op == "topk_mask":
        d = kernels.topk_distance(x, args[1], args[2], largest)
    else:
        args = tuple(a.detach() if isinstance(a, torch.Tensor) else a for a in args)
        jump = jump_of(op, args, dict(kwargs, eps=1.0))
        if op == "heaviside":
            x = x.expand(torch.broadcast_shapes(x.shape, args[1].shape))
        d = jump.distance(x) / float(jump.half)
    if d is None:
        return None
    ax = x.abs()
    ax = ax[torch.isfinite(ax)]
    floor = max(FLOOR, 4 * torch.finfo(x.dtype).eps * max(1.0, float(ax.max()) if ax.numel() else 1.0))
    d = d.abs().double().flatten()
    d = d[torch.isfinite(d)]
    if d.numel() > MAX_SAMPLES:
        d = d[:: d.numel() // MAX_SAMPLES + 1]
    return d, floor


def choose_eps(distances: torch.Tensor, target: float, limit: float, floor: float = FLOOR) -> float:
    """eps such that a fraction ``target`` of ``distances`` lies strictly below it, in ``[floor, limit]``.

    ``target = 1``: all of them, with a margin (1.5 times the largest distance).  No distances: ``ValueError``
    (there is nothing to choose eps from; calibration keeps the node's eps)."""
    n = distances.numel()
    if n == 0:
        raise ValueError("choose_eps: no distances to choose eps from (an empty input)")
    s = distances.sort().values
    m = min(max(math.ceil(target * n), 1), n)
    lo = float(s[m - 1])
    hi = float(s[m]) if m < n else 2 * lo + FLOOR
    eps = 0.5 * (lo + hi) if hi > lo else lo * (1 + 1e-9) + FLOOR
    return min(max(eps, floor), limit)


def _bind(gm: fx.GraphModule, args: tuple, kwargs: dict) -> tuple:
    """The values of ``gm``'s inputs for a call ``(args, kwargs)``, in placeholder order: a ``*args`` input takes the
    positional values left, as one tuple, and a ``**kwargs`` input the keywords no named input takes, as one dict
    (:meth:`_Calibrator.placeholder` takes each as one value)."""
    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    if not kwargs and not any(str(p.target).startswith("*") for p in placeholders):
        return args
    named = {str(p.target) for p in placeholders if not str(p.target).startswith("*")}
    out, rest = [], list(args)
    for p in placeholders:
        target = str(p.target)
        if target.startswith("**"):
            out.append({k: v for k, v in kwargs.items() if k not in named})
        elif target.startswith("*"):
            out.append(tuple(rest))  # (as the generated forward gets it: (x,) + args works)
            rest = []
        elif rest:
            out.append(rest.pop(0))
        elif target in kwargs:
            out.append(kwargs[target])
        elif p.args:
            out.append(p.args[0])
        else:
            raise TypeError(f"calibrate: no value for input '{target}'")
    return tuple(out)


def _rewrite_report(mod: nn.Module) -> RewriteReport | None:
    report = getattr(mod, "sll_report", None)
    return report if isinstance(report, RewriteReport) else None


def calibrated_nodes(gm: nn.Module) -> list[tuple[fx.GraphModule, fx.Node]]:
    """(graph module, node) for every sll node whose eps calibration sets (see "Which nodes" above).

    A node is looked up, by its report entry's name (``node.meta["sll_entry"]``) and submodule, in
    the report of the GraphModule owning it (for the top one: the merged report).  A hard-mode selection's
    soft mask is not one (``annealing._eps_nodes``): it reads its comparison's eps buffer, set with it."""
    gm = unwrap_compiled(gm)
    out = []
    entries: dict[int, tuple[RewriteReport, dict]] = {}
    for mod, node in _eps_nodes(gm):
        report = _rewrite_report(mod)
        if report is None:   # a graph linearize_module did not make: calibrate asked for every node
            out.append((mod, node))
            continue
        if id(mod) not in entries:
            entries[id(mod)] = (report, {(e.node, e.module): e for e in report.rewritten})
        report, by_key = entries[id(mod)]
        entry = by_key.get((node.meta.get("sll_entry"), module_of(node)))
        if entry is None:    # not rewritten by linearize_module: an explicit op, its eps is the user's
            continue
        if report.auto and not entry.auto:   # a number from kind_eps/module_eps next to eps="auto"
            continue
        out.append((mod, node))
    return out


class _Calibrator(fx.Interpreter):
    def __init__(self, gm: fx.GraphModule, top: nn.Module, pool: dict, target: float, chosen: dict,
                 nodes: dict):
        super().__init__(gm)
        self.top, self.pool, self.target, self.chosen, self.nodes = top, pool, target, chosen, nodes
        self.data: set[fx.Node] = set()   # nodes that depend on the graph's inputs

    def placeholder(self, target, args, kwargs):
        if str(target).startswith("*"):  # (fx's Interpreter takes a *args or **kwargs input as the list of what is
            return next(self.args_iter)  # left: the tuple or dict _bind made)
        return super().placeholder(target, args, kwargs)

    def run_node(self, n):
        if n.op == "placeholder" or any(a in self.data for a in n.all_input_nodes):
            self.data.add(n)
        if n in self.nodes:
            args, kwargs = self.fetch_args_kwargs_from_env(n)
            op = rules.sll_op_name(n.target)
            found = _distances(op, args, kwargs)
            if found is not None:
                d, floor = found
                samples, floors = self.pool.setdefault(self.nodes[n], ([], []))  # (by name: copies keep it)
                samples.append(d)
                floors.append(floor)
                d = torch.cat(samples)
                if (off := d[d > 0]).numel():  # (elements exactly on a boundary lie in every band: the others set
                    d = off                    # its width, see "Atoms")
                if d.numel():  # (no element yet: its eps stays, see "No data")
                    # a node of parameters alone (weights, masks, decision logits) sees the same values on
                    # every batch: a fraction of them outside the band would never get a gradient, so the
                    # band covers them all
                    target = self.target if n in self.data else 1.0
                    eps = choose_eps(d, target, eps_limit(op, n.kwargs.get("decimals", 0)), max(floors))
                    set_eps(self.top, eps, where=lambda node, n=n: node is n)
                    self.chosen[self.nodes[n]] = eps
                    attr = n.kwargs.get("eps")  # (its get_attr node ran before set_eps put a new tensor in the
                    if isinstance(attr, fx.Node) and attr.op == "get_attr":  # buffer: the node runs with the new
                        self.env[attr] = self.fetch_attr(attr.target)  # eps, and so do the nodes after it)
        return super().run_node(n)


def _run(gm: nn.Module, args: tuple, kwargs: dict, target: float,
         pool: dict) -> tuple[dict[str, float], list[str]]:
    """Calibrate on ``gm(*args, **kwargs)``, pooling samples in ``pool`` ({node name: (samples, floors)}):
    ({node name: eps} of the nodes calibrated, [names of the nodes to calibrate that have no sample yet])."""
    check_target(target, "calibrate")
    chosen: dict[str, float] = {}
    todo = calibrated_nodes(gm)
    graphs = {id(m): m for m, _ in todo}
    state = gm.__dict__.get(_STATE)
    if not todo:   # nothing to calibrate (explicit ops only, or every eps given by the config)
        report = getattr(gm, "sll_report", None)
        if getattr(report, "calibrating", False):
            report.calibrating = False
        if state is not None:
            state["ran"] = True
        return chosen, []
    paths = {id(m): path for path, m in gm.named_modules() if id(m) in graphs}
    names = {id(m): sll_node_names(m.graph, paths.get(id(m), "")) for m in graphs.values()}
    nodes = {node: names[id(m)].get(node, node.name) for m, node in todo}  # node -> its name (the report's)
    if isinstance(gm, fx.GraphModule):  # the top one too: an instance forward there (band_stats' recording)
        graphs.setdefault(id(gm), gm)   # must not see this forward (it is no training step)
    saved, undo = _SavedState(gm), _Undo(gm, todo, pool)
    installed = []
    for m in graphs.values():  # each graph runs through the calibrating interpreter for this call, in place of
        # its forward, the class's or an instance one (band_stats' recording: put back afterwards)
        calibrator = (lambda m: lambda *a, **k: _Calibrator(m, gm, pool, target, chosen, nodes).run(
            *_bind(m, a, k)))(m)
        installed.append((m, m.__dict__.get("forward", _MISSING), calibrator))
        m.__dict__["forward"] = calibrator
    if state is not None:
        state["running"] = True
    ran = False
    try:
        with torch.no_grad(), torch.random.fork_rng(devices=_cuda_devices(gm, args, kwargs)):
            gm(*args, **kwargs)
        ran = True
    finally:
        try:
            saved.restore()
        finally:
            _uninstall(installed)
        if not ran:  # (a call that raises changes nothing: the eps set before the failing node, the samples)
            undo.restore()
            chosen.clear()
        report = getattr(gm, "sll_report", None)
        if chosen and getattr(report, "calibrating", False):
            report.calibrating = False   # its eps column now shows the chosen values
        if state is not None:
            state["running"] = False
            state["ran"] = state.get("ran", False) or bool(chosen)
    changed = saved.changed_parameters()
    if changed:
        warnings.warn(f"sll_fx calibration: the calibrating forward wrote parameter(s) {_names(changed)} in place, "
                      "and so did the call it calibrated: the update ran twice (a parameter of a traced part is not "
                      "copied back)\nFix: calibrate once on a batch whose update you can afford "
                      "(sll_fx.calibrate(gm, x)) or linearize with a fixed eps", UserWarning, stacklevel=4)
    missing = [name for name in dict.fromkeys(nodes.values())
               if name not in chosen and not any(d.numel() for d in pool.get(name, ((), ()))[0])]
    return chosen, missing


class _Undo:
    """What a calibrating call changes as it goes, to put back when it raises: the eps buffers of the nodes it
    calibrates (``set_eps`` puts a new tensor in each), the reports' entries (their eps column) and the samples it
    pooled."""

    def __init__(self, gm: nn.Module, todo: list, pool: dict):
        self.buffers = []
        for m, node in todo:
            attr = node.kwargs.get("eps")
            if isinstance(attr, fx.Node) and attr.op == "get_attr":
                prefix, _, name = attr.target.rpartition(".")
                owner = m.get_submodule(prefix) if prefix else m
                self.buffers.append((owner, name, owner._buffers.get(name, _MISSING)))
        reports = (getattr(m, "sll_report", None) for m in (unwrap_compiled(gm), *(m for m, _ in todo)))
        self.reports = {id(r): (r, list(r.entries)) for r in reports if isinstance(r, RewriteReport)}
        self.pool, self.sizes = pool, {name: (len(samples), len(floors)) for name, (samples, floors) in pool.items()}

    def restore(self) -> None:
        for owner, name, t in self.buffers:
            if t is not _MISSING:
                owner._buffers[name] = t
        for report, entries in self.reports.values():
            report.entries[:] = entries
        for name in [n for n in self.pool if n not in self.sizes]:
            del self.pool[name]
        for name, (n_samples, n_floors) in self.sizes.items():
            samples, floors = self.pool[name]
            del samples[n_samples:], floors[n_floors:]


def _uninstall(installed: list) -> None:
    """Put back the forwards the calibrating interpreters took the place of (one replaced meanwhile: left)."""
    for m, previous, calibrator in reversed(installed):
        if m.__dict__.get("forward") is not calibrator:
            continue   # replaced meanwhile: leave it
        if previous is _MISSING:
            del m.__dict__["forward"]
        else:
            m.__dict__["forward"] = previous


def _saved(key: str) -> bool:
    """Is the ``__dict__`` (or ``_buffers``/``_parameters``) key ``key`` state :class:`_SavedState` saves: not
    nn.Module's own containers (saved item by item), the calibrating ``forward`` or sll_fx's own state?"""
    return key not in _CONTAINERS_SET and key != "forward" and not key.startswith("_sll")


@functools.cache
def _fx_keys() -> frozenset:
    """The ``__dict__`` keys a GraphModule has beyond a Module's: its graph and generated code (``calibrate`` may
    regenerate it, giving a literal eps a buffer), which :class:`_SavedState` leaves alone."""
    return frozenset(fx.GraphModule(nn.Module(), fx.Graph()).__dict__) - frozenset(nn.Module().__dict__)


def _copyable(t: torch.Tensor) -> bool:
    """Can :class:`_SavedState` keep a copy of ``t``'s value and compare it later (a dense tensor with data: not a
    sparse one, an inference tensor, a lazy module's uninitialized buffer or a meta tensor)?"""
    return not isinstance(t, nn.parameter.UninitializedTensorMixin) and t.layout == torch.strided and \
        not t.is_inference() and t.device.type != "meta"


#: how deep :class:`_SavedState` saves what a module's attributes hold (``self.log["spikes"]``: 2), and how many
#: items of one container it looks into
_DEPTH, _ITEMS = 3, 1000


class _SavedState:
    """The module state a calibrating forward may change, to put back after it: the calibration is no step of the
    model, whose next forward (the call it calibrates, on the first call) must find the state as it was (a running
    maximum or a BatchNorm's statistics updated in place, an opaque neuron's membrane potential ``self.v``, a
    counter ``self.steps += 1``, SpikingJelly's ``_memories``).  Per module of ``gm`` (opaque copies included): the
    bindings of its plain attributes, buffers and parameters, the items of its plain lists/dicts/sets/deques, and a
    copy of the value of each buffer, tensor attribute and parameter of an opaque module (Python code that may write
    them in place, ``self.codebook.weight.data.mul_(decay)``), put back where the forward changed them.  Not saved:
    sll_fx's own state (``_sll_*``: the eps buffers calibration sets), a GraphModule's graph and code, state outside
    the model (what hooks collect; module-level state only where an opaque module's forward names it), objects
    more than :data:`_DEPTH` levels down, tensors it cannot copy (sparse, inference, uninitialized); the parameters
    of traced parts are only watched (:meth:`changed_parameters`).  Also saved: what the module's attributes hold,
    :data:`_DEPTH` levels down (a helper object's attributes ``self.meter.n``, lists inside dicts)."""

    def __init__(self, gm: nn.Module):
        self.bindings: list[tuple] = []  # (a __dict__, _buffers or _parameters, its items before, keys left alone)
        self.items: list[tuple[object, object]] = []  # (a list/dict/set/deque, its items before)
        self.values: dict[int, tuple] = {}            # id(tensor) -> (tensor, a copy of its value)
        self.watched: dict[int, tuple] = {}           # id(parameter) -> (name, parameter, its version)
        self.seen: set[int] = set()                   # ids of the containers and objects saved
        fx_keys = _fx_keys()
        opaque = [m for m in gm.modules() if is_opaque(m)]
        opaque_params = {id(p) for m in opaque for p in m.parameters()}
        for path, m in gm.named_modules(remove_duplicate=False):
            skip = fx_keys if isinstance(m, fx.GraphModule) else ()
            state = {k: v for k, v in m.__dict__.items() if _saved(k) and k not in skip}
            buffers = {k: t for k, t in m._buffers.items() if _saved(k)}
            params = {k: t for k, t in m._parameters.items() if _saved(k)}
            self.bindings += [(m.__dict__, state, skip), (m._buffers, buffers, ()), (m._parameters, params, ()),
                              (m._modules, dict(m._modules), ())]
            for v in (*state.values(), *buffers.values()):
                self._save(v, _DEPTH)
            for name, p in params.items():
                if p is None or id(p) in self.values or id(p) in self.watched:
                    continue
                if id(p) in opaque_params:
                    self._keep(p)
                elif _copyable(p):
                    self.watched[id(p)] = (f"{path}.{name}" if path else name, p, p._version)

        for m in opaque:  # (module-level and class-level state its Python forward names: a global tensor, a cache)
            for _, v in _global_containers(m):
                self._save(v, _DEPTH)

    def _save(self, v, depth: int) -> None:
        """Save ``v`` (a tensor: its value; a list/dict/set/deque: its items; a user's plain object: its attributes)
        and, ``depth`` levels down, what it holds."""
        if isinstance(v, torch.Tensor):
            if not isinstance(v, nn.Parameter):
                self._keep(v)
            return
        if depth == 0 or id(v) in self.seen:
            return
        if type(v) in _MUTABLE:
            self.seen.add(id(v))
            self.items.append((v, dict(v) if isinstance(v, dict) else list(v)))
            held = list(v.values()) if isinstance(v, dict) else list(v)
        elif _plain_object(v):
            self.seen.add(id(v))
            self.bindings.append((vars(v), dict(vars(v)), ()))
            held = list(vars(v).values())
        else:
            return
        for item in held[:_ITEMS]:
            self._save(item, depth - 1)

    def _keep(self, t: torch.Tensor) -> None:
        if id(t) not in self.values and _copyable(t):
            self.values[id(t)] = (t, t.detach().clone())

    def restore(self) -> None:
        for where, before, skip in self.bindings:
            for k in [k for k in where if k not in before and _saved(k) and k not in skip]:
                del where[k]  # (added by the forward)
            where.update(before)
        for v, before in self.items:
            v.clear()
            (v.extend if hasattr(v, "extend") else v.update)(before)  # (a list or deque; a dict or set)
        with torch.no_grad():
            for t, value in self.values.values():
                if not torch.equal(t, value):  # (batch_norm's in-place update of its statistics, a .data write:
                    t.data.copy_(value)        # no version counter tells)

    def changed_parameters(self) -> list[str]:
        """The parameters of traced parts whose version counter the calibrating forward moved (written in place)."""
        return [name for name, p, version in self.watched.values() if p._version != version]


def _cuda_devices(gm: nn.Module, args, kwargs) -> list[int]:
    """The CUDA devices of the inputs and of the module's tensors, whose generators the calibrating forward must
    leave as it found them (with the CPU's: ``torch.random.fork_rng``)."""
    tensors = [*torch.utils._pytree.tree_leaves((args, kwargs)), *gm.parameters(), *gm.buffers()]
    return sorted({t.device.index or 0 for t in tensors if isinstance(t, torch.Tensor) and t.device.type == "cuda"})


def _names(missing: list[str]) -> str:
    return ", ".join(missing[:8]) + (f" and {len(missing) - 8} more" if len(missing) > 8 else "")


def calibrate(gm: nn.Module, *args, target: float | None = None, **kwargs) -> dict[str, float]:
    """Calibrate the eps of ``gm``'s rewritten sll nodes on ``gm(*args, **kwargs)``; returns {node name: eps}.

    Node names are the report's (``gm.sll_report``): a rewritten node's entry ``node`` (``gt``, not the
    ``compare`` it became), ``"<path>.<node>"`` in a nested GraphModule at ``path`` (``"b.g.sign"``);
    the names :func:`sll_fx.band_stats` uses (``sll_fx.diagnostics.sll_node_names``).

    The nodes: see "Which nodes" in the module docstring (with eps="auto", those whose eps is left to
    calibration; with a fixed eps, every rewritten node; never an explicit op of the model's).
    ``target`` (fraction of each node's inputs inside its band): default the one given to
    ``linearize_module(eps="auto", target=...)``, else ``DEFAULT_TARGET``.  Works on any linearized module (not only
    ``eps="auto"``), any number of times (each call starts afresh), frozen or not; also on its
    ``torch.compile`` wrapper (the forward runs eagerly, on the module it compiles).  It takes the place
    of a pending automatic calibration (which it ends, as :func:`freeze_eps`): the next forward calls,
    ``torch.compile(gm, fullgraph=True)`` included, run without calibrating.  Its forward is no step of a
    :func:`sll_fx.band_stats` recording, which stays in place.  A node that sees no input element keeps its
    eps, and a ``UserWarning`` names it; a call that gives no node an element (an empty batch) leaves a
    pending automatic calibration pending (see "No data" in the module docstring).  On a ``DistributedDataParallel``
    wrapper it runs the model inside (no gradient sync to make), with the model's node names.
    """
    gm = _root(gm, "calibrate")
    require_sll(gm, "calibrate")
    state = gm.__dict__.get(_STATE)
    if target is None:
        target = state["target"] if state is not None else gm.__dict__.get(_TARGET, DEFAULT_TARGET)
    chosen, missing = _run(gm, args, kwargs, target, {})
    if missing:
        warnings.warn(f"sll_fx.calibrate: node(s) {_names(missing)} saw no input element in this call (an empty "
                      "batch, only non-finite values, or a path this input does not take): their eps stay as they "
                      "were" + (" (the eps=\"auto\" placeholders: the automatic calibration stays pending)"
                                if is_calibrating(gm) and not chosen else "")
                      + "; calibrate on a batch that reaches them", UserWarning, stacklevel=2)
    if is_calibrating(gm) and (chosen or not missing):   # it replaces the pending automatic calibration: later
        freeze_eps(gm)                                  # calls (fullgraph too) just run
    return chosen


_EAGER_FIX = ("run one batch eagerly first (gm(x)), or sll_fx.calibrate(gm, x), or pass a fixed eps "
              "to linearize_module")


def _auto_hook(module, args, kwargs):
    state = module.__dict__.get(_STATE)
    if state is None or state["running"] or state["frozen"] or state["steps"] <= 0:
        return None
    if torch.compiler.is_exporting():   # the program would keep the placeholder eps
        raise EpsError('torch.export of a linearize_module(eps="auto") model that has not calibrated its eps '
                       f"yet (its eps are placeholders): {_EAGER_FIX}")
    _auto_step(module, args, kwargs, state)
    return None


@torch.compiler.disable(reason='sll_fx eps="auto" calibrates eps eagerly on the first forward call; before '
                               f"torch.compile(..., fullgraph=True), {_EAGER_FIX}")
def _auto_step(module, args, kwargs, state) -> None:
    if torch._C._current_graph_task_id() != -1:  # a backward recomputing the forward (activation checkpointing):
        return                                     # the batch was calibrated on when the forward ran
    if torch._C._are_functorch_transforms_active():  # (a batch of wrapped tensors: values cannot be read)
        raise EpsError('a linearize_module(eps="auto") model that has not calibrated its eps yet, called under a '
                       f"torch.func transform (vmap, grad, jacrev, ...), which cannot calibrate: {_EAGER_FIX}")
    chosen, missing = _run(module, args, kwargs, state["target"], state["pool"])
    if missing and not chosen:   # no node saw an element (an empty batch): the next call calibrates
        return
    state["steps"] -= 1
    if state["steps"] <= 0:
        if missing:
            warnings.warn(f'sll_fx: the eps="auto" calibration of {type(module).__name__} ended, but node(s) '
                          f"{_names(missing)} saw no input element in its calls (an empty input, only non-finite "
                          "values, or a path the inputs did not take): they keep their placeholder eps "
                          f"(min(DEFAULT_EPS={DEFAULT_EPS:g}, limit / 2)), not chosen from data; calibrate them with "
                          "sll_fx.calibrate(gm, x) on a batch that reaches them, or set them with sll_fx.set_eps",
                          UserWarning, stacklevel=2)
        freeze_eps(module)


def check_target(target, what: str) -> None:
    """``target`` must be a number in (0, 1): the fraction of each node's inputs inside its band.  ``what``: the
    function given it (a string was compared with a float: "'<' not supported between instances")."""
    if isinstance(target, bool) or not isinstance(target, (numbers.Real, torch.Tensor)) or \
            isinstance(target, torch.Tensor) and target.numel() != 1:
        raise TypeError(f"{what}: target={target!r} must be a number, the fraction of each node's inputs inside its "
                        f"band, got {_kind(target)}\nFix: pass a float in (0, 1), e.g. target=0.25")
    if not 0.0 < target < 1.0:
        raise ValueError(f"{what}: target={target!r} must be a fraction in (0, 1)")


def _kind(value) -> str:
    return f"a tensor of {value.numel()} elements" if isinstance(value, torch.Tensor) else type(value).__name__


def check_steps(steps) -> int:
    """``calibrate_steps`` must be a positive integral number (an int, ``np.int64``; not a bool): the number of
    forward calls ``eps="auto"`` calibrates on.  Returns it as an int."""
    if isinstance(steps, bool) or not isinstance(steps, numbers.Integral) or steps < 1:
        raise ValueError(f"linearize_module: calibrate_steps={steps!r} must be a positive int, the number of forward "
                         'calls eps="auto" calibrates on (0 would leave the placeholder eps in use)\nFix: '
                         "calibrate_steps=1 (the default); to calibrate explicitly instead, call "
                         "sll_fx.calibrate(gm, x) before the first forward call (it replaces the automatic "
                         "calibration), or pass a fixed eps to linearize_module")
    return int(steps)


def start_auto(gm: nn.Module, *, target: float = DEFAULT_TARGET, steps: int = 1) -> None:
    """Mark ``gm`` uncalibrated: its next ``steps`` forward calls calibrate eps (``linearize_module(eps="auto")``)."""
    check_target(target, "linearize_module")
    steps = check_steps(steps)
    report = getattr(gm, "sll_report", None)
    if hasattr(report, "calibrating"):
        report.calibrating = True   # the report shows "auto" until the first calibration
    restore(gm, {_STATE: {"target": float(target), "steps": steps, "frozen": False, "pool": {}, "ran": False}})


def portable(gm: nn.Module) -> dict:
    """What a copy of ``gm`` keeps of its calibration, picklable: calibrate's default ``target`` and the automatic
    calibration's state (its target, remaining calls, pooled samples; :func:`restore` gives them to the copy)."""
    out = {}
    if _TARGET in gm.__dict__:
        out[_TARGET] = gm.__dict__[_TARGET]
    state = gm.__dict__.get(_STATE)
    if state is not None:
        out[_STATE] = {key: state[key] for key in ("target", "steps", "frozen")}
        out[_STATE]["ran"] = state.get("ran", True)
        out[_STATE]["pool"] = {name: (list(samples), list(floors)) for name, (samples, floors) in state["pool"].items()}
    return out


def restore(gm: nn.Module, kept: dict | None) -> None:
    """Give ``gm`` (a copy) what :func:`portable` kept: a pending automatic calibration calibrates on its next
    forward calls, as the original's would."""
    if not kept:
        return
    if _TARGET in kept:
        gm.__dict__[_TARGET] = kept[_TARGET]
    state = kept.get(_STATE)
    if state is None:
        return
    state = dict(state, running=False, hook=None,
                 pool={name: (list(samples), list(floors)) for name, (samples, floors) in state["pool"].items()})
    if not state["frozen"]:
        state["hook"] = gm.register_forward_pre_hook(_auto_hook, with_kwargs=True).id
    gm.__dict__[_STATE] = state


def freeze_eps(gm: nn.Module) -> None:
    """Stop the automatic calibration of ``gm`` (``eps="auto"``): eps stays as it is now.

    ``calibrate`` still works when called explicitly.  The report stops saying ``eps="auto"``
    and shows the eps in use.  Frozen before any calibration ran (before the first forward call),
    the eps in use are the placeholders (``min(DEFAULT_EPS, limit / 2)``, not chosen from data):
    a ``UserWarning`` says so; ``sll_fx.calibrate(gm, x)`` or ``sll_fx.set_eps`` then
    sets them."""
    gm = _root(gm, "freeze_eps")
    state = gm.__dict__.get(_STATE)
    if state is None:
        require_sll(gm, "freeze_eps")  # (a fixed eps: nothing to stop; the original model: the wrong module)
        return
    report = getattr(gm, "sll_report", None)
    if getattr(report, "calibrating", False):
        report.calibrating = False   # its eps column shows the eps in use
    if not state["frozen"] and not state.get("ran", True):
        warnings.warn(f'sll_fx.freeze_eps: the eps="auto" calibration of {type(gm).__name__} ended before it ran '
                      "(no forward call yet): its rewritten nodes keep their placeholder eps "
                      f"(min(DEFAULT_EPS={DEFAULT_EPS:g}, limit / 2)), not chosen from data; calibrate them with "
                      "sll_fx.calibrate(gm, x) on a batch, or set them with sll_fx.set_eps(gm, eps)",
                      UserWarning, stacklevel=2)
    state["frozen"] = True
    state["pool"] = {}
    gm._forward_pre_hooks.pop(state["hook"], None)
    gm._forward_pre_hooks_with_kwargs.pop(state["hook"], None)


#: ``__dict__`` key of the ``target`` given to ``linearize_module`` with a fixed eps (``calibrate``'s default)
_TARGET = "_sll_calibration_target"


def set_target(gm: nn.Module, target: float) -> None:
    """Make ``target`` the default of :func:`calibrate` on ``gm`` (``linearize_module(target=...)`` with a fixed
    eps)."""
    check_target(target, "linearize_module")
    gm.__dict__[_TARGET] = float(target)


def awaits_calibration(gm: nn.Module) -> bool:
    """Is ``gm``'s automatic calibration still to come (not running now)?  ``set_eps`` then takes the nodes it
    sets out of it: the user's number, which the calibration must not overwrite."""
    return is_calibrating(gm) and not unwrap_compiled(gm).__dict__[_STATE]["running"]


def is_calibrating(gm: nn.Module) -> bool:
    """True while ``gm``'s automatic calibration still has forward calls to calibrate on."""
    state = unwrap_compiled(gm).__dict__.get(_STATE)
    return state is not None and not state["frozen"] and state["steps"] > 0

"""The two user-facing calls: ``linearize_module`` and ``export_hard``.

Both trace (or copy) first and run their pass on that private GraphModule, so the
user's model is never changed, even when a pass raises.  The result shares every
parameter and buffer with the input and has the same ``state_dict()`` keys.
"""

from __future__ import annotations

import warnings

import torch
from torch import fx

from . import exported, frozen, grad_regions
from .annealing import buffer_literal_eps, unwrap_compiled
from .config import SLLConfig
from .errors import OpaqueModelWarning
from .graph_module import SLLGraphModule, share_buffers_with
from .inputs import check_concrete_args, check_example_inputs
from .opaque import assert_no_sll, is_opaque, map_graphs, own_leaves, refuse_sll_code
from .calibration import DEFAULT_TARGET, check_steps, is_calibrating
from .ops import check_mode
from .report import RewriteReport, StripReport
from .tracer import module_paths, not_a_module, torch_leaf, trace_with_fallback


def linearize_module(model: torch.nn.Module, eps: float | str | SLLConfig | None = "auto", *,
                     mode: str = "linear", method: str | None = None, target: float = DEFAULT_TARGET,
                     calibrate_steps: int = 1, verbose: bool = True, example_inputs: tuple | None = None,
                     concrete_args: dict | None = None) -> fx.GraphModule:
    """Trace ``model`` and rewrite its discrete ops into SLL ops of half-width ``eps``.

    Args:
        model: any traceable ``nn.Module`` (a GraphModule too). It is not modified. Also a
            ``torch.export.ExportedProgram``, its ``ep.module()`` or its ``ep.graph_module``: see below.
        eps: ``"auto"`` (the default: calibrated per node on the first forward call, see ``target``),
            a band half-width in the units of each op's own input, or an :class:`SLLConfig`
            (eps and mode per rule kind and per submodule, rules off, submodules skipped).
            A fixed eps must suit the scale of each op's input: ``benchmarks/efficacy.py`` measured
            0.01 as the worst of 0.01-0.25 for unit-scale activations (README, "Does it train?").
        mode: ``"linear"`` (forward is the SLL surrogate) or ``"hard"`` (forward is the hard
            op exactly, backward the surrogate's slope); a config's own mode wins.
        method: the estimator, for every rewritten node: ``"sll"`` (the default: SLL_MATH.md, forward
            per ``mode``), ``"ste"`` (hard forward, straight-through backward: identity for round/floor/
            ceil/trunc, ``1{|x| <= 1}`` for sign, ``±1{|x - t| <= 1/2}`` for heaviside/comparisons; eps
            unused, may be None) or ``"sigmoid"`` (hard forward, backward the derivative of
            ``h * sigmoid((x - b) / tau)`` at the nearest boundary, ``tau = eps``).  See
            ``kernels.estimator_grad``.  Selections (one_hot(argmax), top-k masks) support only "sll".
            ``None``: the config's (``SLLConfig.method``), else "sll".
        target, calibrate_steps: for ``eps="auto"``: each node's eps is calibrated so that a fraction
            ``target`` of its inputs lies in its band (all of them for a node of parameters alone),
            on the first ``calibrate_steps`` forward calls (a positive int, ``np.int64`` too; or by ``sll_fx.calibrate``); see
            :mod:`sll_fx.calibration`.  Until then the nodes run with a placeholder eps.  With a fixed
            eps, ``target`` is the default of a later ``sll_fx.calibrate(gm, x)``, and a
            ``calibrate_steps`` other than 1 is a ``ValueError`` (it would be ignored).
        verbose: print the rewrite report (a bool; another value is a ``TypeError``).
        example_inputs: optional inputs; when given, node dtypes come from a fake-tensor run,
            so integer inputs are recognised (and left hard) even where the graph cannot tell.
            They describe the top-level graph (not the graphs traced inside opaque modules).  Inputs a torch op of
            the model refuses in that run (a wrong shape) are a ``ValueError`` naming the node
            (:func:`sll_fx.dtypes.infer_kinds`).
            For an exported program, inputs like export's own placeholder values are used when
            none are given.
        concrete_args: passed to ``torch.fx`` for the top-level trace (``{"flag": True}``): a dict of the
            forward's input names (another key, or another type, is an error: fx would ignore it); an error for an
            exported program (nothing is traced).

    ``torch.export`` (see :mod:`sll_fx.exported`): an ``ExportedProgram`` stands for ``ep.module()``.
    That module, and any GraphModule whose nodes carry fake values (``ep.module()``, ``ep.graph_module``),
    is not retraced: the pass rewrites a copy of its own aten-level graph (``aten.sign.default``,
    ``aten.gt.Scalar`` + ``aten.to.dtype``, ``aten.where.self``, ``aten.one_hot.default(aten.argmax...)``,
    ...), keeping export's source lines and submodule names. The result shares the parameters and
    buffers of ``ep.module()``, which are the tensors of ``ep.state_dict`` (for a program exported from
    a live model, that model's own parameters: training the result trains them), has its
    ``state_dict()`` keys, and is called like ``ep.module()`` (with the shapes it was exported for;
    ``ep.graph_module``'s result takes the lifted parameters as inputs, as it does). The
    ``ExportedProgram`` itself is not changed. The result exports again with ``torch.export``, the
    sll ops as single nodes.

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
    _check_verbose("linearize_module", verbose)
    model = exported.as_module(model)
    if not isinstance(model, torch.nn.Module):
        raise not_a_module(model)
    _refuse_linearized(model)
    config = SLLConfig.of(eps, mode, method)
    from .calibration import check_target
    check_target(target, "linearize_module")  # (before tracing, as the other arguments)
    if not config.auto and calibrate_steps != 1:  # (before anything runs: it would be ignored)
        raise ValueError(f"linearize_module: calibrate_steps={calibrate_steps!r} applies to eps=\"auto\" only, and "
                         f"eps is fixed here\nFix: drop calibrate_steps, or calibrate explicitly with "
                         "sll_fx.calibrate(gm, x) on a batch")
    if config.auto:
        calibrate_steps = check_steps(calibrate_steps)
    exported_graph = exported.is_exported_graph(model)
    if concrete_args is not None:
        if exported_graph:
            raise ValueError("linearize_module: concrete_args fix inputs of a trace, and an exported program is not "
                             "traced again (export fixed its inputs)\nFix: drop concrete_args, or export with the "
                             "values fixed")
        check_concrete_args(model, concrete_args)
    if example_inputs is not None:
        check_example_inputs(model, example_inputs, concrete_args)
    other_names = config.check_against(model, also=module_paths(model) if exported_graph else (),
                                       also_types=exported.module_types(model) if exported_graph else ())
    if exported_graph:
        top = model  # not retraced: map_graphs rewrites a copy of export's own graph
    else:
        top, _ = trace_with_fallback(model, concrete_args=concrete_args, keep=config.skipped_modules(model),
                                     codegen=False)  # edited in place by map_graphs, code generated once

    # (torch.no_grad() blocks; torch.cond branches, which torch.cond traces when it runs)
    no_grad, traced = grad_regions.nested_bodies(top) if exported_graph else (set(), {})

    def linearize(g: fx.GraphModule, path: str) -> fx.GraphModule:
        exported.canonicalize(g)  # aten spellings around the matches (casts, argmax, topk): torch-level ones
        inputs = None if path else example_inputs
        if inputs is None and not path and exported_graph:  # (g: a copy of export's graph)
            inputs = exported.example_inputs(g)  # export's own input dtypes
        held = traced.get(path)
        held = held and (f"inside {held}'s nested graph '{path}', which {held} traces with fake tensors when it runs: "
                         "an sll op there cannot read its eps, left hard; compute the branches and select with "
                         "torch.where (linearized) to linearize it")
        g = linearize_pass(g, config=config, example_inputs=inputs, no_grad=path in no_grad, held=held,
                           refuse_inputs=inputs is not None and inputs is example_inputs).graph_module
        buffer_literal_eps(g)  # explicit sll ops of the model: their literal eps in a buffer, same value
        return g

    gm = map_graphs(top, linearize, RewriteReport(mode=config.mode, method=config.method, auto=config.auto))
    if other_names:
        config.check_reached(model, gm, other_names)
    if not exported_graph:
        config.check_opaque_shared(model, [o.path for o in gm.sll_report.opaque if o.path])
    skipped = {id(m) for m in config.skipped_modules(model)}
    if skipped:  # (listed in the report, outermost only: what is inside them is not looked into)
        paths = [p for p, m in model.named_modules() if id(m) in skipped]
        gm.sll_report.skipped = [p for p in paths if not any(p.startswith(q + ".") for q in paths)]
    _warn_opaque_model(model, gm.sll_report)
    share_buffers_with(gm, model)  # gm.cuda() moves the model's buffers too, as it moves its parameters
    if isinstance(gm, SLLGraphModule):  # model.cuda() does not move gm's own: a call then says so
        frozen.record_tensors(gm, model)
    if config.auto and any(e.auto for e in gm.sll_report.rewritten):
        from .calibration import start_auto
        start_auto(gm, target=target, steps=calibrate_steps)
    elif target != DEFAULT_TARGET:  # (a fixed eps: the default of a later sll_fx.calibrate(gm, x))
        from .calibration import set_target
        set_target(gm, target)
    if verbose:
        print(gm.sll_report)
    return gm


def _check_verbose(what: str, verbose) -> None:
    """``verbose`` is a bool: another value was read as true or false (``verbose="no"`` printed the report)."""
    if not isinstance(verbose, bool):
        raise TypeError(f"{what}: verbose={verbose!r} must be a bool (True prints the report), got "
                        f"{type(verbose).__name__}\nFix: verbose=False (or True)")


def _warn_opaque_model(model: torch.nn.Module, report: RewriteReport) -> None:
    """Warn where the model's own forward was kept opaque: the report's "0 discrete node(s) found" counts traced
    graphs only, and the discrete ops of that forward stay hard with no word of them (a71: an STE autograd.Function
    next to a ``torch.round`` left every layer before the round with a zero gradient)."""
    top = next((o for o in report.opaque if not o.path), None)
    reason = (top.reason.splitlines() or [""])[0] if top is not None else ""
    if top is None or reason.startswith("enters sll_fx.linearize"):  # (a block: its ops are linearized, by it)
        return
    if reason.startswith("autograd.Function "):
        name = reason[len("autograd.Function "):].split(":")[0]
        fix = (f"call {name}.apply from a child module (an nn.Module whose forward calls it): the rest of the forward "
               "is then traced and its discrete ops rewritten")
    else:  # (a child module's forward is traced on its own: its ops are rewritten)
        fix = ("move what torch.fx cannot trace (the reason above) into a child module, or the discrete ops into one: "
               "a child's forward is traced and rewritten")
    warnings.warn(f"linearize_module: the forward of {type(model).__name__} itself cannot be traced ({reason}), so it "
                  f"runs as written: the discrete ops in it stay hard and pass no gradient ({len(report.rewritten)} "
                  f"node(s) rewritten, in its traced children)\nFix: {fix}", OpaqueModelWarning, stacklevel=3)


def _refuse_linearized(model: torch.nn.Module) -> None:
    """A result of ``linearize_module`` given to it again: its sll ops would count as explicit ones, kept with their
    eps and mode, and nothing be rewritten; the eps and mode given were ignored silently (a58).  (A linearized part
    inside another model is kept so on purpose: the explicit ops' rule.)"""
    report = getattr(model, "sll_report", None)
    if isinstance(report, RewriteReport) and report.rewritten and not is_calibrating(model):  # (one whose eps="auto"
        # calibration is still to come: the trace refuses it, naming that)
        raise ValueError(f"linearize_module: this {type(model).__name__} is already linearized ({len(report.rewritten)} "
                         "node(s) rewritten by linearize_module): linearizing it again would keep them with their eps "
                         "and mode and rewrite nothing\nFix: change eps with sll_fx.set_eps(gm, eps) or load_eps; for "
                         "another mode or config, linearize the original model")


def export_hard(model: torch.nn.Module, verbose: bool = True) -> fx.GraphModule:
    """A clean GraphModule with every sll op replaced by the exact hard op it came from.

    Accepts a linearized GraphModule (its graph is copied; the input keeps working) or any
    traceable module (explicit ``sll_fx.sign(...)`` calls in it are stripped too). Also a
    ``torch.export.ExportedProgram`` of a linearized model (it stands for ``ep.module()``), that
    module, or ``ep.graph_module``: the sll nodes there are sll op overloads (``sll.round.default``)
    and come back as aten ops (``aten.round.default``, ``aten.gt.Scalar``, ...); the result exports
    again with ``torch.export`` (and ``torch.onnx.export(..., dynamo=True)``). The result
    computes bit for bit what the original model computes, and holds no ``torch.ops.sll`` node.
    Graphs inside opaque modules (see ``linearize_module``) are stripped too, on copies; an
    opaque module whose own Python code calls sll ops cannot be stripped: ``RewriteError``.
    """
    from sll_fx.passes import strip_pass

    _check_verbose("export_hard", verbose)
    model = unwrap_compiled(exported.as_module(model))  # (a compiled wrapper strips as the module it wraps)
    if not isinstance(model, torch.nn.Module):
        raise not_a_module(model)
    for m in model.modules():  # (a Python value a graph froze has changed: the hard model would not be the model's)
        if frozen.RECORDS in m.__dict__:
            frozen.check(m)
    top = model if isinstance(model, fx.GraphModule) or is_opaque(model) else \
        trace_with_fallback(model, codegen=False)[0]
    gm = map_graphs(top, lambda g, path: strip_pass(g).graph_module, StripReport(), check_opaque=refuse_sll_code)
    own_leaves(gm, model, torch_leaf)  # its own train()/eval() flags: hard.eval() leaves the input's BatchNorm training
    share_buffers_with(gm, model)
    assert_no_sll(gm)
    if verbose:
        print(gm.sll_report)
    return gm

"""What a trace makes of the forward's inputs: ``concrete_args``, inputs defaulting to None, ``**kwargs``.

A trace gives every input a proxy, which is not None: a forward testing an input against None (``if mask is None:
x = x + pos``) is traced with the branch for a tensor, and a call of the result without that input would silently
compute it.  :func:`sll_fx.frozen.mark_none_tested` finds such tests in the forward's own code;
:func:`mark_none_branches` finds those in code it calls by tracing again with the inputs None; both mark the input's
placeholder, and a call without it raises a TraceError naming the input and the ``concrete_args`` fix
(:func:`sll_fx.frozen.check_none_tested`).
A module traced for an opaque caller, which no ``concrete_args`` reach, is kept opaque instead
(:func:`refuse_none_tested`); so is one whose forward reads an item of its ``**kwargs`` that may be missing
(:func:`refuse_keyword_reads`), and one whose keyword-only inputs follow a ``*args`` (:func:`refuse_reordered`).
:func:`name_concrete_inputs` gives an input fixed by ``concrete_args`` its own name; :func:`check_concrete_args`
refuses ``concrete_args`` that fx would ignore (not a dict, a name the forward does not take), and
:func:`check_example_inputs` ``example_inputs`` that do not fit the forward.
"""

from __future__ import annotations

import inspect
import operator
import warnings
from typing import Callable

from torch import fx

from . import frozen
from .errors import TraceError


def _signature(model) -> inspect.Signature | None:
    """``model.forward``'s signature, None where Python cannot read it (nothing to check then)."""
    try:
        return inspect.signature(model.forward)
    except (TypeError, ValueError):
        return None


def check_concrete_args(model, concrete_args, what: str = "linearize_module") -> None:
    """``concrete_args`` must be a dict of the names of ``model.forward``'s inputs: fx ignores a key no input has (a
    misspelled ``{"flg": True}``) and takes a list for something else, and the trace that fails on the input left
    unfixed kept the whole model opaque, nothing rewritten, silently (a58)."""
    if not isinstance(concrete_args, dict):
        raise TypeError(f"{what}: concrete_args must be a dict of the forward's input names -> values, got a "
                        f"{type(concrete_args).__name__}\nFix: concrete_args={{'flag': True}}")
    if (signature := _signature(model)) is None:
        return
    named = [p.name for p in signature.parameters.values() if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    unknown = [k for k in concrete_args if k not in named]
    if unknown:
        raise ValueError(f"{what}: concrete_args names {', '.join(map(repr, unknown))}, which "
                         f"{type(model).__name__}.forward{signature} does not take as a named input (fx would ignore "
                         f"it)\nFix: use the forward's input names: {', '.join(named) or '(none)'}")


def check_example_inputs(model, inputs, concrete_args: dict | None) -> None:
    """``example_inputs`` must be a tuple (or list) of values ``model``'s forward takes positionally, with
    ``concrete_args`` (checked before, :func:`check_concrete_args`) for the rest: a bare tensor, or too few or too
    many values, were ignored silently (dtypes then came from the graph alone).  Their shapes are checked by the
    fake run that reads the dtypes (:func:`sll_fx.dtypes.infer_kinds`)."""
    if not isinstance(inputs, (tuple, list)):
        raise TypeError(f"linearize_module: example_inputs must be a tuple of the forward's inputs, got a "
                        f"{type(inputs).__name__}\nFix: example_inputs=(x,)")
    if (signature := _signature(model)) is None:
        return
    params = list(signature.parameters.values())
    fixed = dict(concrete_args or {})
    args = list(inputs)
    for param in params[len(inputs):]:  # (positional-only inputs fixed by concrete_args: given positionally)
        if param.kind is not param.POSITIONAL_ONLY or param.name not in fixed:
            break
        args.append(fixed.pop(param.name))
    taken = {p.name for p in params[:len(args)]}
    try:
        signature.bind(*args, **{k: v for k, v in fixed.items() if k not in taken})
    except TypeError as e:
        raise TypeError(f"linearize_module: example_inputs has {len(inputs)} value(s), which {type(model).__name__}"
                        f".forward{signature} does not take: {e}\nFix: one value per input, in the forward's "
                        "order") from None


def mark_none_branches(graph: fx.Graph, concrete_args, retrace: Callable[[dict], fx.Graph]) -> None:
    """Mark (as :func:`frozen.mark_none_tested` does) the inputs defaulting to None whose None the forward's code tests
    somewhere that scan cannot read (a helper method, a child module's forward: ``self.enc(x, mask)`` with ``if
    mask is None`` in ``enc``): the trace, given a proxy, took the branch for a tensor, so ``gm(x)`` silently
    computed the other branch's result, also where the graph uses the input and accepts None there
    (``self.mha(x, x, x, attn_mask=mask)``).  For such inputs the model is traced again with them None
    (``concrete_args``), and an input whose None gives another graph (its uses read as None) is marked: each alone;
    where none alone does, those whose value alone, the others None, brings back the graph traced."""
    unused = [n for n in graph.nodes if n.op == "placeholder" and n.args == (None,)  # (used or not)
              and not n.meta.get(frozen.NONE_TESTED) and not (concrete_args and n.target in concrete_args)]
    if not unused:
        return

    def differs(names: list[str]) -> bool:
        with warnings.catch_warnings():  # (the trace's warnings were given once)
            warnings.simplefilter("ignore")
            try:
                other = retrace({**(concrete_args or {}), **dict.fromkeys(names)})
            except Exception:  # (None makes the forward fail: not the graph traced)
                return True
        return _graph_shape(other) != _graph_shape(graph, as_none=set(names))

    names = [n.target for n in unused]
    if differs(names):
        marked = [node for node in unused if len(unused) == 1 or differs([node.target])]
        if not marked:  # (their None matters together, `if a is None and b is None`: those given alone as a value,
            # the others None, bring back the graph traced)
            marked = [node for node in unused if not differs([n for n in names if n != node.target])]
        for node in marked or unused:
            node.meta[frozen.NONE_TESTED] = True


def refuse_keyword_reads(graph: fx.Graph, kind: str) -> None:
    """A TraceError keeping the module traced opaque where its forward reads an item of its ``**kwargs`` (or of a copy
    of it, ``kwargs.copy()``, ``dict(kwargs)``; or of a dict input by a string key, ``batch.get("mask")``) that may
    be missing (``kw.get("mask")``, ``kw.pop("flip", False)``,
    ``kw.setdefault("mask", None)``), or one the graph does not use (``kw["flag"]``, tested only): the trace read a
    proxy, which is not None, so the graph has only the branch for a given value, and ``gm(x)`` without
    it silently computed that branch (``if m is None: x = x + pos`` before ``self.mha(..., attn_mask=m)``)."""
    for node in graph.nodes:
        if node.op != "placeholder":
            continue
        star = str(node.target).startswith("**")  # (else a dict input, batch: its string keys, batch.get("mask"))
        uses = list(node.users)
        for use in uses:  # (through copies and merges of the dict: kwargs.copy(), dict(kwargs), DEFAULTS | kwargs)
            if (use.op == "call_method" and use.target in ("copy", "__or__", "__ror__")) or \
                    (use.op == "call_function" and use.target in (dict, operator.or_)):
                uses += [u for u in use.users if u not in uses]
        for use in uses:
            optional = use.op == "call_method" and (use.target in ("get", "setdefault") or (
                use.target == "pop" and len(use.args) > 2))  # (given or missing: whatever the forward then tests in
            # Python, `if m is None`, `if flag is False`, the graph cannot; pop(k) without a default raises as [k] does)
            required = (use.op == "call_method" and use.target in ("__getitem__", "pop")) or \
                (use.op == "call_function" and use.target is operator.getitem)
            if not star and (len(use.args) < 2 or not isinstance(use.args[1], str)):
                continue  # (a tensor input indexed, x[0]: no item that may be missing)
            if optional or (required and not use.users):
                name, key = str(node.target).lstrip("*"), use.args[1]
                how = "which may be missing" if optional else "only in Python"
                what = f"**{name}" if star else f"the input {name}"
                raise TraceError(
                    f"torch.fx traced {kind} with {name}[{key!r}] as a value: its forward reads that item of {what}, "
                    f"{how}, and a graph cannot tell it given from missing (it has the branch for a given value "
                    f"only)\nFix: linearize_module keeps it opaque, so it runs as written and its child modules are "
                    f"still rewritten; or make it a named argument ({key}=None) and linearize with concrete_args for "
                    "the calls without it", module_path="", module_type=kind,
                    reason=f"reads {'**' if star else ''}{name}[{key!r}], {how}: kept opaque")


def refuse_reordered(graph: fx.Graph, kind: str, forward) -> None:
    """A TraceError keeping the module traced opaque where its forward has keyword-only inputs after a ``*args``
    (``forward(self, x, *extra, mask=None)``) that the graph takes as inputs: fx's generated forward puts them
    before the ``*args`` (``forward(self, x, mask=None, *extra)``), so ``gm(x, e0, e1)`` silently bound ``mask=e0``."""
    code = getattr(forward, "__code__", None)
    if code is None or not code.co_flags & inspect.CO_VARARGS or not code.co_kwonlyargcount:
        return
    first = code.co_argcount
    keyword_only = set(code.co_varnames[first:first + code.co_kwonlyargcount])
    taken = [n.target for n in graph.nodes if n.op == "placeholder" and n.target in keyword_only]
    if taken:
        star = code.co_varnames[first + code.co_kwonlyargcount]
        raise TraceError(
            f"torch.fx cannot keep the signature of {kind}.forward: its keyword-only input(s) {', '.join(taken)} follow "
            f"*{star}, and the forward fx generates takes them before *{star} as positional ones (a call "
            f"gm(x, a, b) would bind {taken[0]}=a)\nFix: linearize_module keeps it opaque, so it runs as written and "
            f"its child modules are still rewritten; or put {', '.join(taken)} before *{star}", module_path="",
            module_type=kind,
            reason=f"keyword-only input(s) {', '.join(taken)} after *{star}, which fx's generated forward would "
                   "bind positionally: kept opaque")


def refuse_none_tested(graph: fx.Graph, kind: str) -> None:
    """A TraceError keeping the module traced opaque where its traced forward has an input marked as tested against None
    (:func:`frozen.mark_none_tested`, :func:`mark_none_branches`) and an opaque module calls it: its Python code
    passes the input or not at run time, and no ``concrete_args`` reach this trace (the fix the call-time error
    names)."""
    tested = [n.target for n in graph.nodes if n.op == "placeholder" and n.meta.get(frozen.NONE_TESTED)]
    if tested:
        raise TraceError(
            f"torch.fx traced {kind} with its input '{tested[0]}' as a tensor (its default is None), and its forward "
            "tests it against None: the graph has only the branch for a tensor, and an opaque module calls it, with "
            "or without that input at run time\nFix: linearize_module keeps it opaque, so it runs as written and its "
            "child modules are still rewritten", module_path="", module_type=kind,
            reason=f"tests its input {tested[0]} against None (its caller is opaque): kept opaque")


def _graph_shape(graph: fx.Graph, as_none: set = frozenset()) -> list:
    """What ``graph`` computes, for comparing two traces of a forward: its nodes but the inputs and fx's checks of
    inputs fixed by ``concrete_args`` (``_assert_is_none``), each as (op, target, arguments), a node argument by
    its place in that list (an input by its name; the inputs ``as_none`` as None, which a trace with them None
    passes where the graph uses them: ``attn_mask=None``)."""
    place: dict = {}
    out = []

    def arg(a):  # (a NaN literal, float("nan"), is a new object in each trace, unequal to itself)
        if isinstance(a, fx.Node):
            return place.get(a, ("?",)) if a in place else ("?",)
        return ("nan",) if isinstance(a, float) and a != a else a

    for node in graph.nodes:
        if node.op == "placeholder":
            place[node] = None if node.target in as_none else ("input", node.target)
            continue
        if node.op == "call_function" and getattr(node.target, "__name__", "") == "_assert_is_none":
            continue
        place[node] = len(out)
        out.append((node.op, node.target, fx.node.map_aggregate(node.args, arg),
                    fx.node.map_aggregate(node.kwargs, arg)))
    return out


def name_concrete_inputs(graph: fx.Graph, concrete_args: dict) -> None:
    """fx gives an input fixed by ``concrete_args`` (a plain value: ``{"flag": False}``) a placeholder named
    ``flag_1`` whose default is the forward's own (``True``), and checks that it gets the fixed value: so
    ``gm(x, flag=False)`` was "an unexpected keyword argument 'flag'" and ``gm(x)`` failed fx's check.  The
    placeholder takes the argument's name and the fixed value as its default (a call passing another value
    still fails that check, with fx's message)."""
    inputs = [n for n in graph.nodes if n.op == "placeholder"]  # (fx's checks of earlier ones may come between)
    taken = {n.target for n in inputs}
    for node in inputs:
        name = node.target[:-2] if isinstance(node.target, str) and node.target.endswith("_1") else None
        if name and name in concrete_args and name not in taken and \
                isinstance(concrete_args[name], (bool, int, float, str, type(None))):
            node.target, node.args = name, (concrete_args[name],)

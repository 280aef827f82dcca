"""What the tie check knows of ops by their name or module: the op tables (``_JUMPS``, ``_CLAMPS``, ``_SUMS``,
``_PUTS``, ``_KEEP_VALUES``, ``_VIEWS``, ...), the maths of the one-to-one ops (:data:`_ONE_TO_ONE`, ``_preimages``;
the values they take on a grid's points, in float32: ``_grid_points``, ``_images_of``), the constants and the kept
values of activation modules (``_module_constants``, ``_keeps_values``) and an average pooling's window
(``_avg_window``).  No graph is walked here.

The check itself is :class:`_ties.Ties`; that module's docstring says where the rest is.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import nn
from torch.ao.quantization import DeQuantStub
from torch.fx import Node

from sll_fx import rules

from ._grids import Grid, _number
from ._patterns import _THROUGH, _arg


#: ops that read only their input's shape, dtype and device
_SHAPE_ONLY = frozenset(("zeros_like", "ones_like", "full_like", "empty_like", "new_zeros", "new_ones", "new_full",
                         "new_empty", "new_tensor"))
#: ops that give equal outputs for equal inputs along the dims they work on (not elementwise, but within a row)
_SAME_FOR_SAME = frozenset(("softmax", "log_softmax", "neg", "abs", "square", "relu", "relu6", "hardtanh", "clamp",
                            "clip", "clamp_min", "clamp_max", "leaky_relu", "elu", "gelu", "silu", "sign", "round",
                            "floor", "ceil", "trunc", "layer_norm"))
#: elementwise maximum and minimum of two values (a bound when one holds a number)
_EXTREMA = frozenset(("maximum", "minimum", "fmax", "fmin"))
#: ops that add (or otherwise reduce) values into (a copy of) their input where an index says, the rest as it was
_ACCUMULATING = frozenset(("scatter_add", "scatter_reduce", "index_add", "index_reduce"))
#: ops that put values into (a copy of) their input where an index or a mask says, the rest as it was -> the
#: position and keyword of the value put in
_PUTS = {"masked_fill": (2, "value"), "index_fill": (3, "value"), "scatter": (3, "src"), "index_put": (2, "values"),
         "index_copy": (3, "source"), "masked_scatter": (2, "source"), "setitem": (2, "value")}


def _avg_window(kernel, padding, ceil_mode, count_include_pad, divisor, dims: int) -> tuple[int | None, bool]:
    """The number of values an average pooling over ``dims`` dimensions divides by (its kernel, or
    ``divisor_override``), and whether edge windows divide by fewer (``ceil_mode``, ``count_include_pad=False`` with
    padding: then the kernel's size)."""
    varying = bool(ceil_mode) or not count_include_pad and padding not in (0, (0,), [0], (0, 0), [0, 0], (0, 0, 0),
                                                                          [0, 0, 0])
    if divisor is not None:
        return (divisor if isinstance(divisor, int) and divisor > 0 else None), False
    if isinstance(kernel, int):
        return kernel ** dims, varying
    if isinstance(kernel, (list, tuple)) and all(isinstance(k, int) for k in kernel):
        return math.prod(kernel), varying
    return None, varying


def _mapped(f: Callable, values: list[tuple]) -> list[tuple]:
    """``(f(v), source)`` for the numbers among ``values`` (``f`` of a float32 0-d tensor, as the model computes it;
    skipped where it fails)."""
    out = []
    for v, source in values:
        if _number(v):
            try:
                with torch.no_grad():
                    r = f(torch.tensor(v, dtype=torch.float32))
                out.append((float(r), source))
            except Exception:  # (an op that takes no 0-d tensor so: not followed)
                pass
    return out


def _elementwise_call(op) -> Callable | None:
    """``op`` (a node of an elementwise op, or its module) as a function of its first argument, its other arguments as
    they are; None where one is a node (a value the graph computes)."""
    if isinstance(op, nn.Module):
        return op
    if any(isinstance(a, Node) for a in (*op.args[1:], *op.kwargs.values())):
        return None
    if op.op == "call_function":
        return lambda v: op.target(v, *op.args[1:], **op.kwargs)
    return (lambda v: getattr(v, op.target)(*op.args[1:], **op.kwargs)) if op.op == "call_method" else None


def _grid_points(g: Grid) -> list[float]:
    """``g``'s values (at its scale's value now; its 0 only, where the scale holds none), those within
    :data:`_POINTS_REACH` of 0 where they are not known: the :data:`_POINTS` nearest 0 on each side, and the one
    nearest the reach (where a one-to-one op saturates in float32: sigmoid is 1.0 from 17 up, tanh -1 and 1 from 9)."""
    scale = 1.0 if g.scale is None else g.scale_value
    if not scale:
        return [0.0] if g.hits(0.0) else []
    if g.values is not None:
        return [v * scale for v in g.values]
    offset, step = g.offset * scale, g.step * abs(scale)
    centre, reach = round(-offset / step), math.ceil(_POINTS_REACH / step)
    steps = [*range(-min(reach, _POINTS), min(reach, _POINTS) + 1), *((-reach, reach) if reach > _POINTS else ())]
    return [offset + step * (centre + k) for k in steps]


def _images_of(call: Callable, points: list[float]) -> list[float]:
    """The distinct values ``call`` gives on the float32 ``points`` (one call on all of them, as the model computes
    each), finite and below 2^23 in size (beyond, every float32 is a multiple of 0.5: a continuous input's too)."""
    if not points:
        return []
    try:
        with torch.no_grad():
            out = call(torch.tensor(points, dtype=torch.float32))
    except Exception:  # (an op that takes no 1-d tensor so: not followed)
        return []
    return [v for v in dict.fromkeys(out.double().tolist()) if math.isfinite(v) and abs(v) < 2.0 ** 23] if \
        isinstance(out, torch.Tensor) and out.shape == (len(points),) else []


def _parameter(op, index: int, name: str, default):
    """An argument of a call node, or an attribute of an activation module (``nn.LeakyReLU(0.1).negative_slope``)."""
    return getattr(op, name, default) if isinstance(op, nn.Module) else _arg(op, index, name, default)


def _leaky_relu(t: float, op) -> float | None:
    slope = _parameter(op, 1, "negative_slope", 0.01)
    return t if t >= 0 else t / slope if _number(slope) and slope > 0 else None


def _elu(t: float, op) -> float | None:
    alpha = _parameter(op, 1, "alpha", 1.0)
    return t if t >= 0 else math.log1p(t / alpha) if _number(alpha) and alpha > 0 and t > -alpha else None


def _gelu(t: float, op) -> list[float]:
    """GELU's inputs at ``t`` (exact or tanh-approximated): it falls to a minimum then rises, 0 at 0."""
    if _parameter(op, 1, "approximate", "none") == "tanh":
        return _dipping(lambda x: 0.5 * x * (1 + math.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3))), t)
    return _dipping(lambda x: 0.5 * x * (1 + math.erf(x / math.sqrt(2))), t)


def _dipping(f: Callable[[float], float], t: float) -> list[float]:
    """The inputs at which ``f`` gives ``t``, for an ``f`` like GELU and SiLU: decreasing from 0 at -inf to a minimum
    below 0, then increasing through ``f(0) = 0`` (found by bisection, to float64 precision)."""
    if t == 0:
        return [0.0]

    def solve(lo: float, hi: float) -> float:  # (f(lo) - t and f(hi) - t of opposite signs)
        rising = f(hi) > f(lo)
        for _ in range(200):
            mid = (lo + hi) / 2
            if (f(mid) < t) == rising:
                lo = mid
            else:
                hi = mid
        return (lo + hi) / 2

    if t > 0:
        return [solve(0.0, t + 40.0)]
    low, high = -60.0, 0.0  # (the minimum's input, by ternary search)
    for _ in range(200):
        a, b = low + (high - low) / 3, high - (high - low) / 3
        low, high = (low, b) if f(a) < f(b) else (a, high)
    bottom = (low + high) / 2
    return [solve(-60.0, bottom), solve(bottom, 0.0)] if f(bottom) < t else []


#: one-to-one ops that keep their input's values from 0 up and scale those below (a grid's values stay on it, or on
#: it times the slope)
_IDENTITY_ABOVE_0 = frozenset(("leaky_relu",))
#: elementwise ops that take each value at one input only (strictly monotone) -> that input, or None (none there);
#: GELU and SiLU, which dip below 0 first, -> the list of their inputs there
_ONE_TO_ONE: dict[str, Callable[[float, Node], float | list[float] | None]] = {
    "sigmoid": lambda t, n: math.log(t / (1 - t)) if 0 < t < 1 else None,
    "tanh": lambda t, n: math.atanh(t) if -1 < t < 1 else None,
    "exp": lambda t, n: math.log(t) if t > 0 else None,
    "exp2": lambda t, n: math.log2(t) if t > 0 else None,
    "expm1": lambda t, n: math.log1p(t) if t > -1 else None,
    "log": lambda t, n: math.exp(t) if t < 700 else None,
    "log1p": lambda t, n: math.expm1(t) if t < 700 else None,
    "sqrt": lambda t, n: t * t if t >= 0 else None,
    "atan": lambda t, n: math.tan(t) if abs(t) < math.pi / 2 else None,
    "asinh": lambda t, n: math.sinh(t) if abs(t) < 700 else None,
    "sinh": lambda t, n: math.asinh(t),
    "leaky_relu": _leaky_relu,
    "elu": _elu,
    "gelu": _gelu,
    "silu": lambda t, n: _dipping(lambda x: x / (1 + math.exp(-x)) if x > -700 else -0.0, t),
}


#: activation modules that are ops of :data:`_ONE_TO_ONE`
_MODULE_ONE_TO_ONE = {nn.Sigmoid: "sigmoid", nn.Tanh: "tanh", nn.LeakyReLU: "leaky_relu", nn.ELU: "elu",
                      nn.GELU: "gelu", nn.SiLU: "silu"}


#: elementwise powers (``h ** 2``, ``h.pow(3)``, ``torch.square(h)``): by a whole number, the grid of a grid's
#: products (``Ties.grid``) and the numbers of their input mapped (``_range_values``)
_POWERS = frozenset(("pow", "square"))


def _power(name: str, node) -> int | None:
    """The whole exponent, 1 to 8, of ``node``, a power of its first operand by a number (``h ** 2``, ``h.pow(3)``,
    ``torch.square(h)``: 2), else None (another exponent, a tensor one, a number raised to a tensor)."""
    if name == "square":
        return 2 if len(node.args) == 1 and not node.kwargs else None
    p = node.args[1] if len(node.args) == 2 and not node.kwargs else None
    return int(p) if _number(p) and float(p).is_integer() and 1 <= p <= 8 and \
        isinstance(node.args[0], Node) else None


def _preimages(name: str, node, t: float) -> list[float]:
    """The inputs at which ``node`` (an op of :data:`_ONE_TO_ONE`, a module of :data:`_MODULE_ONE_TO_ONE`, a power
    by a number, or a number raised to a tensor: its exponent's) gives ``t``."""
    if name != "pow":
        try:
            found = _ONE_TO_ONE[name](t, node)
        except (ValueError, OverflowError, ZeroDivisionError):
            return []
        return [f for f in (found if isinstance(found, list) else [found]) if f is not None and math.isfinite(f)]
    p = node.args[1] if len(node.args) > 1 else None
    if _number(b := node.args[0]) and isinstance(p, Node):  # (a number raised to a tensor, 2.0 ** h: h at log2(t))
        return [math.log(t) / math.log(b)] if 0 < b != 1 and t > 0 else []
    if not _number(p) or p <= 0 or not isinstance(node.args[0], Node):
        return []
    if t == 0:
        return [0.0]
    if float(p).is_integer() and int(p) % 2:  # (x ** 3: one root, with t's sign)
        return [math.copysign(abs(t) ** (1 / p), t)]
    return [t ** (1 / p), -(t ** (1 / p))] if t > 0 else []


def _module_constants(module: nn.Module) -> tuple:
    """The constants of an activation or padding module (``nn.ReLU()``: 0)."""
    if isinstance(module, nn.ReLU | nn.Hardswish | nn.ZeroPad1d | nn.ZeroPad2d | nn.ZeroPad3d):
        return (0.0,)
    if isinstance(module, nn.ReLU6):
        return 0.0, 6.0
    if isinstance(module, nn.Hardtanh):
        return float(module.min_val), float(module.max_val)
    if isinstance(module, nn.Hardsigmoid):
        return 0.0, 1.0
    if isinstance(module, nn.Threshold | nn.ConstantPad1d | nn.ConstantPad2d | nn.ConstantPad3d):
        return (float(module.value),)
    return ()


def _keeps_values(module: nn.Module) -> bool:
    return isinstance(module, nn.Identity | DeQuantStub | nn.Flatten | nn.Unflatten | nn.MaxPool1d | nn.MaxPool2d |
                      nn.MaxPool3d |
                      nn.AdaptiveMaxPool1d | nn.AdaptiveMaxPool2d | nn.AdaptiveMaxPool3d | nn.Upsample |
                      nn.PixelShuffle | nn.PixelUnshuffle) and \
        (not isinstance(module, nn.Upsample) or module.mode == "nearest")


#: ops whose results are whole numbers (``round`` with ``decimals=d``: multiples of 10^-d)
_WHOLE_OPS = frozenset(("floor", "ceil", "trunc", "fix", "round", "one_hot", "argmax", "argmin", "bucketize",
                        "searchsorted", "floor_divide", "floordiv"))
#: where the elementwise ops jump (:meth:`Ties.on_jumps`): kind -> (offset of the grid of step 1 they jump on, the
#: values it holds where it is a few points, whether 0 is left out: trunc is continuous there)
_JUMPS = {"round": (0.5, None, False), "floor": (0.0, None, False), "ceil": (0.0, None, False),
          "trunc": (0.0, None, True), "heaviside": (0.0, frozenset((0.0,)), False)}
#: the constants of activations with fixed ones (their bounds: ``_bounds``; heaviside's steps, read where its grid is
#: none, a ``values`` of any value where its input is 0 on ranges: ``Ties._heaviside_grid``)
_CONSTANTS = {"hardsigmoid": (0, 1), "hardswish": (0,), "tril": (0,), "triu": (0,), "heaviside": (0, 1)}
#: ops folded on tensor attributes' values (``round(w * 4)``)
_FOLDABLE = frozenset(("round", "floor", "ceil", "trunc", "sign", "mul", "div", "truediv", "true_divide", "add", "sub",
                       "neg", "abs", "clamp", "clip", "relu"))
#: the torch function computing a folded op named otherwise (``7.0 / alpha``: operator.truediv)
_FOLDED_AS = {"truediv": "div"}
_CLAMPS = frozenset(("relu", "relu6", "hardtanh", "clamp", "clip", "clamp_min", "clamp_max"))
#: elementwise ops that give their input itself on a whole range of it (``Ties._less_its_clip``): between a clamp's
#: bounds, from 0 up (relu, leaky relu, elu, celu, abs), above a threshold, where it is the one a minimum/maximum
#: takes
_IDENTITY_ON_A_RANGE = _CLAMPS | _EXTREMA | _IDENTITY_ABOVE_0 | {"elu", "celu", "threshold", "abs"}
_MODULES_IDENTITY_ON_A_RANGE = (nn.ReLU, nn.ReLU6, nn.Hardtanh, nn.LeakyReLU, nn.ELU, nn.CELU, nn.Threshold)
_DIVS = frozenset(("div", "true_divide", "truediv"))
#: binary ops of two values that take 0 on whole ranges where their operands do (``Ties._of_two``: a factor, the
#: numerator, both terms of a sum not 0 on disjoint ranges)
_ZERO_PRODUCTS = _DIVS | {"mul", "add", "sub"}
#: the ops a hand-written straight-through value ends with (:func:`_straight_through`)
_SUMS = frozenset(("add", "sub"))
#: how many elementwise ops deep a term of a sum is read as a function of a value the other term reads
#: (``Ties._on_points``: ``relu(v) * 2 - v``)
_CHAIN = 2
#: how many ``Ties.grid`` calls may nest before the inputs' grids are found first, in graph order (Python's stack)
_GRID_NESTING = 64
#: how far from 0 a one-to-one op's input grid is read (:func:`_grid_points`: sigmoid is 1.0 in float32 from 17 up, tanh
#: -1 and 1 from 9 out, exp past 2^23 from 16), and at most how many of its values on each side
_POINTS_REACH = 32.0
_POINTS = 256
#: what ``Ties._names`` holds for a node not looked at yet
_UNNAMED = object()
#: reductions whose values are elements of their input (an order statistic), a tensor (``amax``; ``max`` of all of
#: it) or, with a dim, values and indices; and those that give both always (the comparisons' list, of ops whose
#: result holds an element of the input, is ``_patterns._ORDER_STATISTICS``: it has ``msort``, a tensor, and no ``mode``)
_ORDER_STATISTICS_OF_ONE = frozenset(("amax", "amin", "max", "min", "median", "nanmedian"))
_ORDER_STATISTICS_OF_MANY = frozenset(("kthvalue", "mode", "topk", "sort", "cummax", "cummin"))
#: reductions called (input, dim, keepdim)
_KEEPING_REDUCTIONS = frozenset(("mean", "nanmean", "sum", "nansum", "amax", "amin", "max", "min", "median",
                                 "nanmedian", "prod", "logsumexp", "mode", "all", "any"))
_JOINS = frozenset(("cat", "concat", "concatenate", "stack", "hstack", "vstack", "dstack", "column_stack"))
_INT_CASTS = frozenset(("int", "long", "short", "bool", "char", "byte"))
#: what passes its first argument's values on (each element a value it had: views, copies, casts, selections)
_KEEP_VALUES = _THROUGH | _INT_CASTS | frozenset(rules.FLOAT_CASTS) | {
    "getitem", "clone", "type_as", "narrow", "select", "flip", "roll", "repeat", "tile", "positive", "unfold",
    "index_select", "repeat_interleave", "gather", "take_along_dim", "take", "movedim", "moveaxis", "swapaxes",
    "swapdims", "split", "chunk", "tensor_split", "unbind", "unflatten", "view_as", "reshape_as", "diagonal",
    "pixel_shuffle", "pixel_unshuffle", "channel_shuffle", "upsample_nearest1d", "upsample_nearest2d",
    "upsample_nearest3d", "_unsafe_view", "alias", "slice", "as_strided", "permute_copy", "view_copy"}
_MAX_POOLS = ("max_pool", "adaptive_max_pool")
#: views: a write through one writes its base (``self.scale.data.copy_``, ``self.buf[0].fill_``)
_VIEW_DEPTH = 16  # (how many views deep an attribute is followed: self.zp.view(-1)[0])
_VIEWS = _THROUGH | frozenset(rules.FLOAT_CASTS) | {  # (and casts: .float() of a float tensor is the tensor)
    "getitem", "select", "narrow", "slice", "view_as", "unflatten", "diagonal", "as_strided", "t", "movedim", "swapaxes",
    "swapdims", "unbind", "split", "chunk", "ravel", "moveaxis", "reshape_as", "adjoint", "alias", "numpy_T", "mT",
    "mH", "matrix_H", "broadcast_to"}
_AVG_POOLS = ("avg_pool", "adaptive_avg_pool")
#: the modules that pool so (their calls read as those of the functions)
_AVG_POOL_MODULES = (nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d, nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d,
                     nn.AdaptiveAvgPool3d)
#: reductions that average (a constant each element takes on a range, the mean takes where every element does)
_MEANS = frozenset(("mean", "nanmean"))
#: reductions that add up (a constant each element takes on a range, times the count, the sum takes where every element
#: does: ``Ties._summed``)
_REDUCED_SUMS = frozenset(("sum", "nansum"))
#: views that show every element of their input once, whatever the shapes
_ALL_VIEWS = frozenset(("view", "view_as", "unflatten", "squeeze", "unsqueeze", "permute", "transpose", "t", "movedim",
                        "moveaxis", "swapaxes", "swapdims", "detach", "alias", "adjoint", "numpy_T", "mT", "mH",
                        "matrix_H"))
#: the same, but views only of a contiguous input (of another, a copy: a write to it does not reach the input)
_ALL_IF_CONTIGUOUS = frozenset(("reshape", "reshape_as", "flatten", "ravel", "contiguous"))
#: views that may show one element more than once (all of a node by number of elements, not by which ones)
_REPEATING = frozenset(("expand", "expand_as", "broadcast_to", "as_strided", "unfold"))
#: arithmetic with a number (``Ties._op_values``, ``Ties._op_ties``: its value's values mapped, its threshold inverted)
_ARITHMETIC = frozenset(("add", "sub", "rsub", "mul", "truediv", "div"))
#: how many such ops one step of a walk reads, a run of them (``Ties._arithmetic_run``, ``Ties._inverted_run``)
_RUN = 16


def _composed_number(outer: Callable, inner: Callable, v):
    """``outer(inner(v))``: the maps of a run of arithmetic on a number, composed."""
    return outer(inner(v))


def _composed_grid(outer: Callable, inner: Callable, g):
    """``outer(inner(g))`` for a grid, None where either map gives none."""
    return outer(h) if (h := inner(g)) is not None else None


def _arithmetic_step(name: str, c: float, first: bool) -> tuple | None:
    """``(number, grid)``: the maps of arithmetic ``name`` with the number ``c`` (``first``: its tensor is the first
    operand) on a value and on a grid, else None (a quotient by the tensor, or by 0)."""
    if name == "mul":
        return (lambda v: v * c), (lambda g: g.times(c))
    if name in _DIVS:
        return ((lambda v: v / c), (lambda g: g.times(1 / c))) if first and c else None
    if name == "add":
        return (lambda v: v + c), (lambda g: g.plus(c))
    if (name == "sub") == first:  # (other - c)
        return (lambda v: v - c), (lambda g: g.plus(-c))
    return (lambda v: c - v), (lambda g: h.plus(c) if (h := g.times(-1.0)) is not None else None)  # (c - other)

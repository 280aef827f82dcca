"""The ``sll`` operator namespace and the explicit-op API (``sll_fx.sign(x, eps)``, ...).

Each op is a real ``torch.library`` op (``torch.ops.sll.<name>``) with a
``CompositeImplicitAutograd`` kernel: ``symbolic_trace`` keeps it as one node, it
pickles, ``torch.export`` keeps it as one node, and under ``torch.compile`` it
decomposes into the few aten ops of ``kernels.py`` that inductor fuses.  Fake/meta
tensors go through the same composite, so shapes and dtypes are the hard op's.

Schemas (``eps`` and ``mode`` are keyword-only in every op)::

    sll::sign(Tensor x, *, float eps, str mode='linear') -> Tensor
    sll::heaviside(Tensor x, Tensor values, *, float eps, str mode='linear') -> Tensor
    sll::round(Tensor x, *, float eps, str mode='linear', int decimals=0) -> Tensor
    sll::floor / sll::ceil / sll::trunc(Tensor x, *, float eps, str mode='linear') -> Tensor
    sll::compare(Tensor x, Tensor threshold, str cmp, *, float eps, str mode='linear') -> Tensor
    sll::compare.Scalar(Tensor x, Scalar threshold, str cmp, *, float eps, str mode='linear') -> Tensor
    sll::select(Tensor s, Tensor a, Tensor b, *, str op='where', Tensor? soft=None, Tensor? hard=None) -> Tensor
    (and select.ScalarSelf / .ScalarOther / .Scalar for a number a or b)
    sll::argmax_onehot(Tensor x, int dim, int num_classes, *, float eps, str mode='linear', bool largest=True) -> Tensor
    sll::topk_mask(Tensor x, int k, int dim, *, float eps, str mode='linear', bool largest=True) -> Tensor

``compare`` returns the floating surrogate of ``(x cmp threshold)`` (``cmp`` one of gt, ge, lt, le)
in the promoted floating dtype of its operands. ``select`` blends ``a s + b (1 - s)``
(``op='masked_fill'``: ``b.masked_fill`` by ``s``, ``b``'s dtype); ``soft``: the surrogate that
weighs the branches' gradients in hard mode; ``hard``: the comparison's bool, read where the result
is an integer. ``argmax_onehot`` is the surrogate of ``one_hot(argmax(x, dim), num_classes)`` (``largest=False``:
argmin), ``topk_mask`` that of the k-hot mask ``zeros_like(x).scatter(dim, topk(x, k, dim).indices, 1.0)``.
Inputs whose dtype is not floating carry no gradient: the ops return the hard result
for them.

Every op that takes ``eps`` has a second overload whose ``eps`` is a ``Tensor`` (a 0-dim
floating tensor), named ``<op>.eps_tensor`` (``compare.Scalar_eps_tensor`` for
``compare.Scalar``)::

    sll::sign.eps_tensor(Tensor x, *, Tensor eps, str mode='linear') -> Tensor
    ...

The packet ``torch.ops.sll.sign(x, eps=e)`` picks the overload from ``e``'s run-time type.
(The tensor overloads are registered *before* the float ones: the packet tries overloads in
registration order and a 0-dim tensor would also convert to a ``float`` argument, silently
turning a graph input into a constant.)  ``linearize_module`` passes each node's eps as a
0-dim float64 buffer of the GraphModule, so that ``torch.compile`` sees eps as a graph input,
not as a constant it would specialise on: ``set_eps`` puts a new 0-dim tensor in each buffer
(``annealing._replace_eps``) and the compiled code, which reads the buffer by name each call,
keeps running with the new value (see ``sll_fx/annealing.py``).

A tensor eps is checked only by its metadata (0-dim, floating) under compilation and on
accelerators: its value is validated in Python where it is set (``linearize_module``,
``SLLConfig``, ``set_eps``), never by a device sync.  In eager mode on the CPU the value is
at hand for free (``Tensor.item`` on a CPU tensor is a read, not a sync), so there the op reads
it, validates it like a float eps and runs the float kernels: a linearized model trains in
eager exactly as fast as the explicit float ops (``benchmarks/ops.py``).

torch.func: the composite is also registered for ``FuncTorchDynamicLayerFrontMode``, the key every
call reaches first while a torch.func transform is active, so it runs as plain Python *before* any
functorch layer processes the op: its aten ops go through the transforms' own rules, and its
autograd.Functions through their ``setup_context``/``jvp``/generated vmap rules (a composite run
inside a layer could not call an autograd.Function: functorch dispatches those only from that key).
So ``grad``, ``vmap`` (batched, no per-sample fallback), ``jacrev``, ``jacfwd``, ``jvp`` and
``hessian`` work on every op; plain eager, ``torch.compile`` and ``torch.export`` never see that key.

Special values in ``linear`` mode: NaN in gives NaN out; ``±inf`` gives the hard value,
except ``compare`` with ``x`` and ``threshold`` both infinite with the same sign, whose
distance ``x - threshold`` is NaN (so is the surrogate).  Outside the bands the value
equals the hard op's, though the sign of a zero may differ (``round(-0.2)`` is ``+0``);
``hard`` mode and ``export_hard`` are bit-identical, signs of zero included.
"""

from __future__ import annotations

import functools
import math
import numbers
import reprlib
from typing import Callable

import torch
from torch import Tensor

from . import kernels
from .errors import EpsError, ModeError, SLLError

MODES = ("linear", "hard")
#: op-level modes beyond MODES: a hard forward with another estimator's backward (``method=``, see
#: ``kernels.estimator_grad``); ``linearize_module(method=...)`` and the explicit ops write them
ESTIMATOR_MODES = ("ste", "sigmoid")
OP_MODES = MODES + ESTIMATOR_MODES
METHODS = kernels.METHODS

# cmp name -> (hard comparison, direction of the jump: +1 rises at the threshold, -1 falls)
COMPARISONS: dict[str, tuple[Callable, int]] = {
    "gt": (torch.gt, +1), "ge": (torch.ge, +1), "lt": (torch.lt, -1), "le": (torch.le, -1),
}
CMP_ALIASES = {">": "gt", ">=": "ge", "<": "lt", "<=": "le", **{c: c for c in COMPARISONS}}


def check_mode(op: str, mode: str, allowed: tuple = MODES) -> None:
    if mode not in allowed:
        raise ModeError(f"sll.{op}: mode={mode!r} is not one of {allowed}")


def check_method(op: str, method: str) -> None:
    if method not in METHODS:
        raise ValueError(f"{op}: method={method!r} is not one of {METHODS}")


def op_mode(mode: str, method: str = "sll", op: str = "sll") -> str:
    """The ``mode`` string an sll op gets for a user's (mode, method): ``mode`` for ``"sll"``, else the
    method itself (``"ste"``/``"sigmoid"``: hard forward, that estimator's backward)."""
    check_method(op, method)
    return mode if method == "sll" else method


def _method(mode: str) -> str:
    return mode if mode in ESTIMATOR_MODES else "sll"


def _sll_only(op: str, mode: str) -> None:
    check_mode(op, mode, OP_MODES)
    if mode in ESTIMATOR_MODES:
        raise ValueError(f"sll.{op}: method={mode!r} is not supported for {op}; only method='sll'")


#: the largest |decimals| of round: beyond it 10**|decimals| overflows float64, and torch.round(x, decimals=d) scales
#: x by that inf (it is NaN for every x)
MAX_DECIMALS = 308


def decimals_in_range(decimals: int) -> bool:
    return -MAX_DECIMALS <= decimals <= MAX_DECIMALS


def check_decimals(decimals: int) -> None:
    """An :class:`EpsError` for a ``round`` whose ``decimals`` is out of range (10.0 ** -decimals raised OverflowError
    from Python's float power, or 0.5 * it underflowed to a limit of 0: "use eps <= 0")."""
    if not decimals_in_range(decimals):
        raise EpsError(f"sll.round: decimals={decimals} is out of range: round scales x by 10**{abs(decimals)}, which "
                       f"overflows float64 (torch.round(x, decimals={decimals}) is NaN for every x), so it has no band "
                       f"to fit an eps in\nFix: use {-MAX_DECIMALS} <= decimals <= {MAX_DECIMALS}")


def eps_limit(op: str, decimals: int = 0) -> float:
    """Largest valid eps: half the spacing of the op's boundaries (inf for a single jump; 0 for a ``decimals`` out of
    range, which :func:`check_eps` refuses)."""
    if op == "round":
        return 0.5 * 10.0 ** (-decimals) if decimals_in_range(decimals) else 0.0
    if op in ("floor", "ceil", "trunc"):
        return 0.5
    return math.inf


def check_eps(op: str, eps: float, decimals: int = 0) -> float:
    """Return ``eps`` as a float, or raise :class:`EpsError` naming the op and the limit.

    Only Python numbers: a tensor eps (the ``eps_tensor`` overloads) goes through :func:`op_eps`.
    """
    if isinstance(eps, Tensor) or not isinstance(eps, (int, float)) or isinstance(eps, bool):
        raise EpsError(f"sll.{op}: eps must be a Python float, got {type(eps).__name__}")
    if op == "round":
        check_decimals(decimals)
    eps = float(eps)
    if not math.isfinite(eps) or eps <= 0:
        raise EpsError(f"sll.{op}: eps={eps!r} must be positive and finite")
    limit = eps_limit(op, decimals)
    if eps > limit:
        where = f"round(decimals={decimals})" if op == "round" and decimals else op
        raise EpsError(
            f"sll.{op}: eps={eps!r} is too wide for {where}: its boundaries are {2 * limit:g} apart, "
            f"so bands of half-width eps overlap when eps > {limit:g}; use eps <= {limit:g}")
    return eps


def check_has_value(what: str, eps: Tensor) -> None:
    """An ``EpsError`` naming ``what`` for an eps tensor on the ``meta`` device, which holds no value to read
    (``linearize_module``, ``SLLConfig`` and ``set_eps`` read a tensor eps as the number it holds)."""
    if eps.device.type == "meta":
        raise EpsError(f"{what}: eps is a tensor on the 'meta' device, which holds no value to read\nFix: pass a "
                       "Python float (eps=0.1), or a tensor that holds the value (torch.tensor(0.1))")


def check_no_grad(what: str, eps: Tensor) -> None:
    """An ``EpsError`` naming ``what`` for an eps tensor that requires grad: ``linearize_module``, ``SLLConfig``,
    ``set_eps`` and ``load_eps`` read it as the number it holds (each op's band half-width), which gets no
    gradient."""
    if eps.requires_grad:
        raise EpsError(f"{what}: eps requires grad, but it is read as a number (each op's band half-width, "
                       f"{float(eps.detach())!r}), which gets no gradient\nFix: pass eps.detach(), or a Python float")


def _eager_cpu(eps: Tensor) -> bool:
    """True when ``eps`` is a plain CPU tensor in plain eager mode: its value may be read for free.

    Not under a dispatch mode (fake tensors, ``make_fx``/AOTAutograd tracing, functionalization),
    ``torch.jit.trace``, functorch transforms or ``torch.compile``: there reading the value would
    burn it into the trace (or fail on a fake tensor), so the kernels compute with the tensor.
    """
    return type(eps) in (Tensor, torch.nn.Parameter) and eps.device.type == "cpu" and kernels.plain_eager(eps)


def op_eps(op: str, eps, x: Tensor, decimals: int = 0) -> kernels.Eps:
    """The eps an op's kernel computes with: a checked float, or a 0-dim floating tensor.

    A float is validated (:func:`check_eps`).  A tensor must be 0-dim and floating (metadata:
    no sync); in plain eager mode on the CPU its value is read and validated as a float, and the
    float kernels run (same speed, same bits as a float eps); elsewhere it stays a tensor and is
    not validated (``linearize_module``, ``SLLConfig`` and ``set_eps`` validate it when set), but it must be
    on the CPU or on ``x``'s device (an eps on ``meta``, which holds no value, beside a CPU ``x`` was silently
    ignored).
    """
    if not isinstance(eps, Tensor):
        return check_eps(op, eps, decimals)
    if eps.dim() != 0 or not eps.is_floating_point():
        raise EpsError(f"sll.{op}: a tensor eps must be a 0-dim floating tensor, "
                       f"got shape {tuple(eps.shape)} and dtype {eps.dtype}")
    if eps.requires_grad and torch.is_grad_enabled():  # (a learnable eps would be detached, silently)
        raise EpsError(f"sll.{op}: eps requires grad, but an sll op gives eps no gradient (SLL_MATH.md's slope is "
                       "in x; eps is the band's fixed half-width)\nFix: pass eps.detach(), or a Python float")
    if _eager_cpu(eps):
        return check_eps(op, eps.item(), decimals)  # (item() reads a value that requires grad as well)
    if eps.device != x.device and eps.device.type != "cpu":  # (torch mixes a 0-dim CPU tensor into any device)
        fix = ("a Python float, or a tensor that holds the value (torch.tensor(0.1))" if eps.device.type == "meta"
               else f"eps on x's device or on the CPU (eps.to('{x.device}')), or a Python float")
        raise EpsError(f"sll.{op}: eps is a tensor on device '{eps.device}' and x is on '{x.device}': "
                       + ("a meta tensor holds no value, so " if eps.device.type == "meta" else "")
                       + f"the op cannot compute with it\nFix: pass {fix}")
    # a snapshot: a backward that reads eps uses the forward's value even if the tensor is changed in place
    # in between (by a user's fill_; not by set_eps)
    # (set_eps itself puts a new tensor in the buffer's place, which compiled code relies on: AOT autograd
    # saves the graph input, not this copy)
    return eps.detach().clone()


def _apply(op: str, x: Tensor, make, eps: kernels.Eps, jump: float = 1.0, **kw) -> Tensor:
    """``kernels.apply``, after checking that a float eps's slope ``jump / (2 eps)`` fits ``x``'s dtype (a tensor eps:
    not read)."""
    if not isinstance(eps, Tensor) and eps < _least_eps(x.dtype) * jump:
        raise EpsError(
            f"sll.{op}: eps={eps!r} is too small for {x.dtype}: the slope in the band, {jump:g}/(2 eps), overflows it "
            f"(its largest value is {torch.finfo(x.dtype).max:g}), so the op cannot be computed there\nFix: use "
            f"eps >= {_least_eps(x.dtype) * jump:.3g} (far below the dtype's spacing near a boundary anyway)"
            + _WIDER.get(x.dtype, ""))
    return kernels.apply(x, make, eps, **kw)


#: the fix's second half for an eps too small for x's dtype: a wider dtype, where there is one
_WIDER = {torch.float16: ", or run the op in float32 (x.float())", torch.bfloat16: ", or run the op in float32 (x.float())",
          torch.float32: ", or run the op in float64 (x.double())"}


@functools.lru_cache(maxsize=16)
def _least_eps(dtype: torch.dtype) -> float:
    """The least eps whose slope ``1/(2 eps)`` (a unit jump) is finite in ``dtype``."""
    return 0.5 / torch.finfo(dtype).max


def _hard_mode(mode: str, hard: Callable[[Tensor, object, object], Tensor]) -> Callable | None:
    return None if mode == "linear" else hard


# The Jump (``make(eps, threshold)``) and the hard value (``hard(x, threshold, values)``) of each op, as
# functions of the autograd.Function's own inputs: under a torch.func transform its forward runs at
# another functorch level than the caller's tensors, so no closure may capture one (constants only:
# a direction, decimals, a cmp name).  See ``kernels.SurrogateFunction``.

def _sign_jump(eps, threshold):
    return kernels.sign(eps)


def _heaviside_jump(eps, threshold):
    return kernels.step(eps, 0.0, +1)


def _round_jump(eps, threshold):
    return kernels.round_half(eps)


def _hard_sign(x, threshold, values):
    return torch.sign(x)


def _hard_heaviside(x, values_, values):
    return torch.heaviside(x, values)


def _hard_round(x, threshold, values):
    return torch.round(x)


# --- kernels behind the torch.library ops ---------------------------------------------

def _sign(x: Tensor, *, eps: kernels.Eps, mode: str = "linear") -> Tensor:
    check_mode("sign", mode, OP_MODES)
    eps = op_eps("sign", eps, x)
    if not x.is_floating_point():
        return torch.sign(x)
    return _apply("sign", x, _sign_jump, eps, 2.0, hard=_hard_mode(mode, _hard_sign), method=_method(mode))


def _heaviside(x: Tensor, values: Tensor, *, eps: kernels.Eps, mode: str = "linear") -> Tensor:
    check_mode("heaviside", mode, OP_MODES)
    eps = op_eps("heaviside", eps, x)
    if not x.is_floating_point():
        return torch.heaviside(x, values)
    xb = x.expand(torch.broadcast_shapes(x.shape, values.shape))  # heaviside broadcasts x against values
    # (the hard value from xb: torch.heaviside(xb, values) is torch.heaviside(x, values), same shape and bits)
    return _apply("heaviside", xb, _heaviside_jump, eps, values=values, hard=_hard_mode(mode, _hard_heaviside),
                         method=_method(mode))


def _round(x: Tensor, *, eps: kernels.Eps, mode: str = "linear", decimals: int = 0) -> Tensor:
    check_mode("round", mode, OP_MODES)
    check_decimals(decimals)  # (also for a tensor eps, which op_eps does not always check)
    eps = op_eps("round", eps, x, decimals)
    if not x.is_floating_point():
        return torch.round(x, decimals=decimals) if decimals else torch.round(x)
    if decimals:  # jump height 10^-d over a band of width 2 eps: slope 10^-d / (2 eps)
        make, hard = _round_decimals_fns(decimals)
        return _apply("round", x, make, eps, 10.0 ** -decimals, hard=_hard_mode(mode, hard), method=_method(mode))
    return _apply("round", x, _round_jump, eps, hard=_hard_mode(mode, _hard_round), method=_method(mode))


@functools.lru_cache(maxsize=64)
def _round_decimals_fns(decimals: int):
    """(make, hard) of ``sll::round`` with ``decimals``, one pair per value (kernels caches by ``make``)."""
    def make(eps, threshold):
        return kernels.round_decimals(eps, decimals)

    def hard(x, threshold, values):
        return torch.round(x, decimals=decimals)
    return make, hard


def _integer_op(name: str, hard_op: Callable[[Tensor], Tensor], jump: Callable[[float], kernels.Jump]):
    def make(eps, threshold):
        return jump(eps)

    def hard(x, threshold, values):
        return hard_op(x)

    def impl(x: Tensor, *, eps: kernels.Eps, mode: str = "linear") -> Tensor:
        check_mode(name, mode, OP_MODES)
        eps = op_eps(name, eps, x)
        if not x.is_floating_point():
            return hard_op(x)
        return _apply(name, x, make, eps, hard=_hard_mode(mode, hard), method=_method(mode))
    impl.__name__ = f"_{name}"
    return impl


_floor = _integer_op("floor", torch.floor, lambda eps: kernels.integer(eps, -1.0))
_ceil = _integer_op("ceil", torch.ceil, lambda eps: kernels.integer(eps, 0.0))
_trunc = _integer_op("trunc", torch.trunc, kernels.trunc)


def _compare_fns(cmp: str):
    """(make, hard) of ``sll::compare`` for ``cmp``, built once per comparison."""
    direction = COMPARISONS[cmp][1]

    def make(eps, threshold):
        return kernels.step(eps, threshold, direction)

    def hard(x, threshold, values):
        return hard_compare(x, threshold, cmp)
    return make, hard


_COMPARE_FNS = {cmp: _compare_fns(cmp) for cmp in COMPARISONS}


def _compare(x: Tensor, threshold, cmp: str, *, eps: kernels.Eps, mode: str = "linear") -> Tensor:
    check_mode("compare", mode, OP_MODES)
    eps = op_eps("compare", eps, x)
    if cmp not in COMPARISONS:
        raise ValueError(f"sll.compare: cmp={cmp!r} is not one of {tuple(COMPARISONS)}")
    if not x.is_floating_point():
        if not (isinstance(threshold, Tensor) and threshold.is_floating_point()):
            return hard_compare(x, threshold, cmp)  # integer data, a number: no gradient to give, the hard result
        x = x.to(torch.result_type(x, threshold))  # a floating threshold moves the jump: it has a gradient
    make, hard = _COMPARE_FNS[cmp]
    return _apply("compare", x, make, eps, threshold=threshold, hard=_hard_mode(mode, hard), method=_method(mode))


def _select(s: Tensor, a, b, *, op: str = "where", soft: Tensor | None = None, hard: Tensor | None = None) -> Tensor:
    """``where(s, a, b)`` (``op='where'``) or ``b.masked_fill(s, a)`` (``op='masked_fill'``: ``b`` is ``self``, ``a``
    the value, the result ``self``'s dtype) for the surrogate mask ``s``; ``soft``: see ``kernels.SelectFunction``;
    ``hard``: the comparison's hard value (``hard_mask``), read only when the result is an integer
    (``_hard_select``)."""
    if op not in ("where", "masked_fill"):
        raise ValueError(f"sll.select: op={op!r} is not 'where' or 'masked_fill'")
    if op == "masked_fill" and not isinstance(b, Tensor):
        raise ValueError(f"sll.select: op='masked_fill' needs a tensor b (masked_fill's self), got {b!r}")
    dtype = b.dtype if op == "masked_fill" else torch.result_type(a, b)  # (torch.masked_fill keeps self's dtype)
    if not (dtype.is_floating_point or dtype.is_complex):
        return _hard_select(s, a, b, op, dtype, hard)
    return kernels.select(s, a, b, soft, dtype)


def _hard_select(s: Tensor, a, b, op: str, dtype: torch.dtype, hard: Tensor | None = None) -> Tensor:
    """An integer (or bool) result cannot hold a blend: the hard where/masked_fill itself, no gradient.

    The mask is ``hard != 0`` when the comparison's hard value is given (``linearize_module`` passes it
    wherever it cannot tell the result's dtype before run time): exact, on the threshold too.  Without it
    the mask holds where ``s > 1/2``: ``s`` is the comparison's surrogate, on the hard value's side of 1/2
    wherever it is not 1/2 (and 0 or 1 in hard mode; NaN, the surrogate of a NaN input, fails every
    comparison).  ``s = 1/2`` is the comparison's boundary itself (or an input within rounding of it), where
    ``s`` alone does not say which side: in eager mode that is an error where the branches differ; under
    tracing or compilation it takes ``b``, the strict comparisons' (``>``, ``<``) value at equality.
    """
    if hard is not None:
        cond = hard != 0
        return b.masked_fill(cond, a) if op == "masked_fill" else torch.where(cond, a, b)
    half = s == 0.5
    if kernels.plain_eager(s) and bool((half & (torch.where(half, a, b) != torch.where(half, b, a))).any()):
        raise SLLError(f"sll.select ({op}): its result is {dtype}, an integer, so it is the hard "
                       f"{op}, but its comparison's input lies on the threshold "
                       "(the surrogate mask is 1/2 there), where the mask alone cannot say which branch the hard "
                       "op takes. Fix: linearize with example_inputs so that the integer result is known and the "
                       "node left hard, or give the where/masked_fill floating operands "
                       "(torch.where(x > t, 1.0, 0.0))")
    cond = s > 0.5
    return b.masked_fill(cond, a) if op == "masked_fill" else torch.where(cond, a, b)


def _dim_size(op: str, x: Tensor, dim: int) -> int:
    """``x.shape[dim]`` (1 for a 0-dim ``x``), or torch's own IndexError for a ``dim`` out of range, naming the op
    (``x.shape[dim]`` raised "tuple index out of range")."""
    rank = max(x.dim(), 1)  # (a 0-dim tensor takes dim 0 and -1, as torch.argmax does)
    if not -rank <= dim < rank:
        raise IndexError(f"sll.{op}: Dimension out of range (expected to be in range of [{-rank}, {rank - 1}], but "
                         f"got {dim}) (torch raises the same for x of shape {tuple(x.shape)})")
    return x.shape[dim] if x.dim() else 1


def _argmax_onehot(x: Tensor, dim: int, num_classes: int, *, eps: kernels.Eps, mode: str = "linear",
                   largest: bool = True) -> Tensor:
    _sll_only("argmax_onehot", mode)
    eps = op_eps("argmax_onehot", eps, x)
    width = _dim_size("argmax_onehot", x, dim)
    if not x.is_floating_point():
        return hard_argmax_onehot(x, dim, num_classes, largest)
    hard = hard_argmax_onehot(x, dim, num_classes, largest) if mode == "hard" else None
    if hard is None and num_classes < width:  # as one_hot itself (hard mode: above)
        index = torch.argmax(x, dim) if largest else torch.argmin(x, dim)
        if kernels.plain_eager(x):
            if bool((index >= num_classes).any()):
                raise RuntimeError(f"sll.argmax_onehot: Class values must be smaller than num_classes: the "
                                   f"{'argmax' if largest else 'argmin'} of a row is {int(index.max())}, "
                                   f"num_classes={num_classes} (one_hot raises the same)")
        elif not torch._C._functorch.is_functorch_wrapped_tensor(x):  # compiled (traced) code: an assert kernel
            torch._assert_async((index < num_classes).all(), "sll.argmax_onehot: Class values must be smaller "
                                f"than num_classes={num_classes} (one_hot raises the same)")
    return kernels.argmax_onehot(x, dim, num_classes, eps, largest, hard)


def _topk_mask(x: Tensor, k: int, dim: int, *, eps: kernels.Eps, mode: str = "linear", largest: bool = True) -> Tensor:
    _sll_only("topk_mask", mode)
    eps = op_eps("topk_mask", eps, x)
    width = _dim_size("topk_mask", x, dim)
    if x.dim() and not 0 <= k <= width:  # (the surrogate would be a constant: topk raises; 0-dim: kernels)
        raise RuntimeError(f"sll.topk_mask: selected index k out of range: k={k} for {width} elements "
                           f"along dim {dim} (torch.topk raises the same)")
    if not x.is_floating_point():
        return hard_topk_mask(x, k, dim, largest)
    hard = hard_topk_mask(x, k, dim, largest) if mode == "hard" else None
    return kernels.topk_mask(x, k, dim, eps, largest, hard)


def hard_argmax_onehot(x: Tensor, dim: int, num_classes: int, largest: bool = True) -> Tensor:
    """What ``sll::argmax_onehot`` strips to: ``one_hot(argmax(x, dim), num_classes)`` (int64)."""
    index = torch.argmax(x, dim) if largest else torch.argmin(x, dim)
    if torch._C._functorch.is_functorch_wrapped_tensor(index):  # one_hot reads index's values (vmap refuses):
        # the same int64 one-hot by comparison (an index >= num_classes gives a zero row, not one_hot's error)
        return (index.unsqueeze(-1) == torch.arange(num_classes, device=index.device)).long()
    return torch.nn.functional.one_hot(index, num_classes)


def hard_topk_mask(x: Tensor, k: int, dim: int, largest: bool = True) -> Tensor:
    """What ``sll::topk_mask`` strips to: ``zeros_like(x).scatter(dim, topk(x, k, dim).indices, 1.0)``."""
    return torch.zeros_like(x).scatter(dim, torch.topk(x, k, dim, largest=largest).indices, 1.0)


# --- registration ----------------------------------------------------------------------

_lib = torch.library.Library("sll", "DEF")
_SCHEMAS = {
    "sign": ("sign(Tensor x, *, float eps, str mode='linear') -> Tensor", _sign),
    "heaviside": ("heaviside(Tensor x, Tensor values, *, float eps, str mode='linear') -> Tensor", _heaviside),
    "round": ("round(Tensor x, *, float eps, str mode='linear', int decimals=0) -> Tensor", _round),
    "floor": ("floor(Tensor x, *, float eps, str mode='linear') -> Tensor", _floor),
    "ceil": ("ceil(Tensor x, *, float eps, str mode='linear') -> Tensor", _ceil),
    "trunc": ("trunc(Tensor x, *, float eps, str mode='linear') -> Tensor", _trunc),
    "compare": ("compare(Tensor x, Tensor threshold, str cmp, *, float eps, str mode='linear') -> Tensor", _compare),
    "compare.Scalar": ("compare.Scalar(Tensor x, Scalar threshold, str cmp, *, float eps, str mode='linear') -> Tensor",
                       _compare),
    # selections; select blends a surrogate mask s (from sll.compare) between a and b, either may be a scalar
    "select": ("select(Tensor s, Tensor a, Tensor b, *, str op='where', Tensor? soft=None, "
               "Tensor? hard=None) -> Tensor", _select),
    "select.ScalarSelf": ("select.ScalarSelf(Tensor s, Scalar a, Tensor b, *, str op='where', "
                          "Tensor? soft=None, Tensor? hard=None) -> Tensor", _select),
    "select.ScalarOther": ("select.ScalarOther(Tensor s, Tensor a, Scalar b, *, str op='where', "
                           "Tensor? soft=None, Tensor? hard=None) -> Tensor", _select),
    "select.Scalar": ("select.Scalar(Tensor s, Scalar a, Scalar b, *, str op='where', "
                      "Tensor? soft=None, Tensor? hard=None) -> Tensor", _select),
    "argmax_onehot": ("argmax_onehot(Tensor x, int dim, int num_classes, *, float eps, str mode='linear', "
                      "bool largest=True) -> Tensor", _argmax_onehot),
    "topk_mask": ("topk_mask(Tensor x, int k, int dim, *, float eps, str mode='linear', bool largest=True) -> Tensor",
                  _topk_mask),
}


def _with_tensor_eps(schemas: dict) -> dict:
    """Each schema with ``float eps`` preceded by its ``Tensor eps`` overload (``sign.eps_tensor``,
    ``compare.Scalar_eps_tensor``): the packet tries overloads in this order (see the module docstring)."""
    out = {}
    for name, (schema, impl) in schemas.items():
        if "float eps" in schema:
            base, _, overload = name.partition(".")
            tensor_name = f"{base}.{overload + '_' if overload else ''}eps_tensor"
            args = schema.split("(", 1)[1].replace("float eps", "Tensor eps")
            out[tensor_name] = (f"{tensor_name}({args}", impl)
        out[name] = (schema, impl)
    return out


_SCHEMAS = _with_tensor_eps(_SCHEMAS)
for _name, (_schema, _impl) in _SCHEMAS.items():
    _lib.define(_schema)
    _lib.impl(_name, _impl, "CompositeImplicitAutograd")
    # under torch.func transforms the same composite runs before any functorch layer (see the module docstring):
    # vmap batches its aten ops (no per-sample fallback), grad/jvp reach the Functions' setup_context and jvp
    _lib.impl(_name, _impl, "FuncTorchDynamicLayerFrontMode")

#: op name -> OpOverloadPacket, e.g. SLL_OPS["sign"] is torch.ops.sll.sign
SLL_OPS = {name: getattr(torch.ops.sll, name) for name in _SCHEMAS if "." not in name}


def is_sll_target(target) -> bool:
    """True for ``torch.ops.sll.*`` packets and their overloads (fx and export spellings)."""
    if isinstance(target, torch._ops.OpOverloadPacket):
        return target._qualified_op_name.startswith("sll::")
    return isinstance(target, torch._ops.OpOverload) and target.namespace == "sll"


#: every target :func:`is_sll_target` accepts: the packets of ``SLL_OPS`` and all their overloads (only this module
#: defines ops in the ``sll`` namespace)
SLL_TARGETS = tuple(t for p in SLL_OPS.values() for t in (p, *(getattr(p, o) for o in p.overloads())))


def find_calls(graph, targets, ordered: bool = True) -> list:
    """The call_function nodes of ``graph`` whose target is one of ``targets``, in graph order (``ordered``; else by
    target): fx's lookup of nodes by target, one per target (no sweep over the graph's nodes)."""
    found = [n for t in targets for n in graph.find_nodes(op="call_function", target=t, sort=False)]
    return sorted(found) if ordered and len(found) > 1 else found


def find_sll_nodes(graph, ordered: bool = True) -> list:
    """The nodes of ``graph`` that call an sll op (:data:`SLL_TARGETS`; :func:`find_calls`)."""
    return find_calls(graph, SLL_TARGETS, ordered)


# --- the explicit-op API (the seed package's ``sll_core.sign(x, eps=...)``) -------------
# ``eps`` is a float, or a 0-dim floating tensor (the ``eps_tensor`` overloads: see the module docstring)

DEFAULT_EPS = 1e-2


def _explicit_eps(eps, method: str, op: str = "sll_fx"):
    """``eps=None`` is allowed for ``method="ste"`` (its backward does not read eps); a value that is no number,
    tensor or fx proxy is a TypeError naming the op and the argument (the op's schema matching said "failed to
    match any schema", and for ``threshold`` blamed the argument ``threshold``)."""
    if eps is None:
        if method != "ste":
            raise EpsError(f"eps=None is only allowed with method='ste' (got method={method!r})")
        return DEFAULT_EPS
    _check_arg(op, "eps", eps, numbers.Real, "a float or a 0-dim floating tensor", "eps=0.01")
    return eps


def _check_arg(op: str, name: str, value, kind, what: str, example: str) -> None:
    """A TypeError naming the explicit op and its argument ``name`` when ``value`` is neither ``kind`` nor a tensor
    (nor an fx proxy: a model that calls the op is being traced)."""
    if isinstance(value, Tensor) or isinstance(value, kind) or isinstance(value, torch.fx.Proxy):
        return  # (a tensor first: under torch.compile that test is a constant)
    try:
        number = float(value) if isinstance(value, str) else None
    except ValueError:
        number = None
    fix = f"{name}={number!r}" if number is not None and kind is numbers.Real else example
    raise TypeError(f"sll_fx.{op}: {name}={value!r} must be {what}, got {type(value).__name__}\nFix: pass {fix}")


def _check_x(op: str, x) -> None:
    """A TypeError naming the explicit op when its input ``x`` is no tensor (nor an fx proxy): a list, a number or a
    NumPy array got the op's schema matching ("failed to match any schema") or, in heaviside and trunc, an
    AttributeError from inside ("'list' object has no attribute 'dtype'")."""
    if isinstance(x, Tensor) or isinstance(x, torch.fx.Proxy):
        return  # (a tensor first: under torch.compile that test is a constant)
    shown = reprlib.repr(x)  # (a long list is cut short)
    literal = isinstance(x, (list, tuple, numbers.Number)) and "..." not in shown
    fix = "a tensor" if x is None else f"torch.as_tensor({shown if literal else 'x'})"
    raise TypeError(f"sll_fx.{op}: x={shown} must be a tensor, got {type(x).__name__}\nFix: pass {fix} "
                    "(a floating one: an integer tensor gets no gradient)")

# ``method`` (every explicit op): "sll" (default), "ste" or "sigmoid" (hard forward, that estimator's
# backward: see ``kernels.estimator_grad``; for "sigmoid" eps is the temperature tau).


def sign(x: Tensor, eps: float | Tensor = DEFAULT_EPS, *, mode: str = "linear", method: str = "sll") -> Tensor:
    """SLL ``sign``: ``clamp(x / eps, -1, 1)``; slope ``1/eps`` in ``|x| <= eps`` (jump of 2)."""
    _check_x("sign", x)
    return torch.ops.sll.sign(x, eps=_explicit_eps(eps, method, "sign"), mode=op_mode(mode, method))


def heaviside(x: Tensor, eps: float | Tensor = DEFAULT_EPS, *, values: Tensor | float = 0.5,
              mode: str = "linear", method: str = "sll") -> Tensor:
    """SLL ``torch.heaviside(x, values)``: ``clamp(x/(2eps) + 1/2, 0, 1)``; the hard value at 0 is ``values``."""
    _check_x("heaviside", x)
    _check_arg("heaviside", "values", values, numbers.Real, "a number or a tensor", "values=0.5")
    if not isinstance(values, Tensor):
        values = torch.tensor(values, dtype=x.dtype, device=x.device)
    return torch.ops.sll.heaviside(x, values, eps=_explicit_eps(eps, method, "heaviside"), mode=op_mode(mode, method))


def round(x: Tensor, eps: float | Tensor = DEFAULT_EPS, *, decimals: int = 0,  # noqa: A001
          mode: str = "linear", method: str = "sll") -> Tensor:
    """SLL ``torch.round(x, decimals=d)``: ramps of half-width ``eps`` at the half-way points ``(j + 1/2) 10^-d``."""
    _check_x("round", x)
    _check_arg("round", "decimals", decimals, numbers.Integral, "an int", "decimals=1")
    return torch.ops.sll.round(x, eps=_explicit_eps(eps, method, "round"), mode=op_mode(mode, method),
                               decimals=decimals)


def floor(x: Tensor, eps: float | Tensor = DEFAULT_EPS, *, mode: str = "linear", method: str = "sll") -> Tensor:
    """SLL ``torch.floor``: ramps of half-width ``eps`` centred on the integers."""
    _check_x("floor", x)
    return torch.ops.sll.floor(x, eps=_explicit_eps(eps, method, "floor"), mode=op_mode(mode, method))


def ceil(x: Tensor, eps: float | Tensor = DEFAULT_EPS, *, mode: str = "linear", method: str = "sll") -> Tensor:
    """SLL ``torch.ceil``: ramps of half-width ``eps`` centred on the integers."""
    _check_x("ceil", x)
    return torch.ops.sll.ceil(x, eps=_explicit_eps(eps, method, "ceil"), mode=op_mode(mode, method))


def trunc(x: Tensor, eps: float | Tensor = DEFAULT_EPS, *, mode: str = "linear", method: str = "sll") -> Tensor:
    """SLL ``torch.trunc``: ramps at the nonzero integers (trunc does not jump at 0)."""
    _check_x("trunc", x)
    return torch.ops.sll.trunc(x, eps=_explicit_eps(eps, method, "trunc"), mode=op_mode(mode, method))


def threshold(x: Tensor, threshold: Tensor | float, eps: float | Tensor = DEFAULT_EPS, *, cmp: str = ">",
              mode: str = "linear", method: str = "sll") -> Tensor:
    """SLL ``(x cmp threshold).float()``; ``cmp`` is one of ``> >= < <=`` (or gt, ge, lt, le).

    The gradient reaches ``x`` and, when it is a tensor, ``threshold``.
    """
    _check_x("threshold", x)
    if cmp not in CMP_ALIASES:
        raise ValueError(f"sll_fx.threshold: cmp={cmp!r} is not one of {tuple(CMP_ALIASES)}")
    _check_arg("threshold", "threshold", threshold, numbers.Real, "a number or a tensor", "threshold=0.5")
    return torch.ops.sll.compare(x, threshold, CMP_ALIASES[cmp], eps=_explicit_eps(eps, method, "threshold"),
                                 mode=op_mode(mode, method))




def hard_compare(x: Tensor, threshold, cmp: str) -> Tensor:
    """The hard value of ``sll::compare``: ``(x cmp threshold)`` as the op's floating dtype.

    ``export_hard`` emits this where an sll compare node is not followed by the user's own
    float cast (the explicit ``sll_fx.threshold``); after ``linearize_module`` the cast is
    the user's and the bare comparison comes back instead.
    """
    hard_op, _ = COMPARISONS[cmp]
    dtype = result_dtype(x, threshold)
    return hard_op(x, threshold).to(dtype if dtype.is_floating_point else torch.get_default_dtype())


def _category(value) -> int:
    """0 bool, 1 integer, 2 floating: a tensor's (real) dtype or a Python number's."""
    if isinstance(value, Tensor):
        return 0 if value.dtype == torch.bool else 2 if value.is_floating_point() else 1
    return 0 if isinstance(value, bool) else 1 if isinstance(value, int) else 2


def result_dtype(x: Tensor, other) -> torch.dtype:
    """``torch.result_type(x, other)`` for real dtypes (``other`` a tensor or a Python number: a comparison's operands),
    from the dtypes and ranks alone: ``torch.compile`` cannot trace ``result_type`` (a dtype is no tensor), and
    ``promote_types`` it can.  A number, or a 0-dim tensor beside a tensor with dims, counts only where its category
    is higher than the other's."""
    if not isinstance(other, Tensor):
        if _category(other) <= _category(x):
            return x.dtype
        return torch.get_default_dtype() if _category(other) == 2 else torch.int64
    if (x.dim() == 0) == (other.dim() == 0):
        return torch.promote_types(x.dtype, other.dtype)
    ranked, zero_dim = (x, other) if other.dim() == 0 else (other, x)
    return zero_dim.dtype if _category(zero_dim) > _category(ranked) else ranked.dtype


def hard_mask(x: Tensor, threshold, cmp: str) -> Tensor:
    """``(x cmp threshold)``, the bool: the ``hard`` input of ``sll::select`` that ``linearize_module`` passes where
    the selection's result may be an integer (``_hard_select``).  A function of its own, not ``torch.gt``: it is
    no comparison for the rule table to find again."""
    return COMPARISONS[cmp][0](x, threshold)


def jump_of(op: str, args: tuple, kwargs: dict) -> kernels.Jump:
    """The :class:`~sll_fx.kernels.Jump` that ``torch.ops.sll.<op>(*args, **kwargs)`` uses."""
    eps = kwargs["eps"]
    if op == "sign":
        return kernels.sign(eps)
    if op == "heaviside":
        return kernels.step(eps, 0.0, +1)
    if op == "round":
        decimals = kwargs.get("decimals", 0)
        return kernels.round_decimals(eps, decimals) if decimals else kernels.round_half(eps)
    if op in ("floor", "ceil"):
        return kernels.integer(eps, -1.0 if op == "floor" else 0.0)
    if op == "trunc":
        return kernels.trunc(eps)
    if op == "compare":
        return kernels.step(eps, args[1], COMPARISONS[args[2]][1])
    raise KeyError(f"no jump for sll.{op}")


def in_band(op: str, args: tuple, kwargs: dict) -> Tensor:
    """Boolean mask: which elements of ``sll.<op>``'s input lie inside a band (where the gradient is nonzero).

    For ``argmax_onehot`` and ``topk_mask`` the mask has ``x``'s shape: elements whose margin
    (to the runner-up, or to the top-k threshold) is within eps.  ``select`` has no band of its
    own (its mask's ``compare`` has): ``KeyError``.  A band's edges are in it where the gradient is the slope
    there: in hard mode (:func:`~sll_fx.kernels.pass_within`) and for the selections (autograd's clamp), not for
    an elementwise op in linear mode (:func:`~sll_fx.kernels.pass_inside`).
    """
    if op in ("argmax_onehot", "topk_mask"):
        x = args[0]
        largest = kwargs.get("largest", True)
        with torch.no_grad():
            d = kernels.argmax_margin(x.detach(), args[1], largest) if op == "argmax_onehot" else \
                kernels.topk_distance(x.detach(), args[1], args[2], largest)
            return torch.zeros_like(x, dtype=torch.bool) if d is None else d.abs() <= kwargs["eps"]
    jump = jump_of(op, args, kwargs)
    x = args[0]
    if op == "heaviside":
        x = x.expand(torch.broadcast_shapes(x.shape, args[1].shape))
    with torch.no_grad():
        d = jump.distance(x.detach()).abs()
        return d <= jump.half if kwargs.get("mode", "linear") == "hard" else d < jump.half

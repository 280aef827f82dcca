"""The arithmetic of every SLL surrogate (``../shared/SLL_MATH.md``), forward and backward.

Every surrogate is a :class:`Jump`, two small functions of the input:

- ``ramp(x) -> (value, u)``: the ``linear``-mode value and the clamped ramp ``u`` it was
  built from.  ``u`` sits exactly on ``lo`` or ``hi`` outside the band (so the value is
  exactly the hard op's there) and moves linearly inside it;
- ``distance(x) -> d``: a tensor that lies inside ``[-half, half]`` exactly on the
  band, for ``hard`` mode, whose forward is the hard op and whose backward needs only where
  the band is.

The backward in both modes is ``slope * grad * 1{inside}``: one ``hardtanh_backward`` pass
and one in-place multiply.  Hard mode's band is closed, ``|d| <= half`` (:func:`pass_within`), as
SLL_MATH.md's; linear mode reads the clamped ramp, equal to its bound on the edge and beyond, so its
band is open (:func:`pass_inside`): at a kink the gradient from outside.  Compiled for the CPU
(:func:`compiled_cpu`) the band is spelled with float ops (:func:`inside_float`; for ``integral``
jumps, round/floor/ceil/trunc, it is read from the linear value itself: not an integer exactly
inside the band), so that inductor saves no
one-byte mask and needs no second store in the forward kernel (``benchmarks/compiled_ops.py``).
A hard forward may take another estimator's backward instead (``method="ste"``/``"sigmoid"``,
the op modes of the same names: :func:`estimator_grad`).  Written for eager speed: a fresh full-size tensor costs about
three in-place passes (page faults), so each function makes as few as it can and works in
place after that (``benchmarks/ops.py`` measures it).  In plain eager mode on the CPU
(:func:`plain_eager`) scalar operands are cached 0-dim tensors (:func:`constant`, :func:`scalar_operand`: no
wrapping and converting of a Python number per call) and round's ramp folds its ``d - 1/2`` into add's constant
where that is bit for bit exact (:func:`_half_folded`: one pass fewer); compiled and traced code keeps its ops.
Registration, argument checks and the public API live in ``ops.py``.

Autograd beyond the first backward: both Functions (:class:`SurrogateFunction`,
:class:`SelectFunction`) are new-style (``forward`` without ctx, ``setup_context``), with a ``jvp``
(forward-mode AD: dual numbers, ``torch.func.jvp``/``jacfwd``) and ``generate_vmap_rule``, so every
torch.func transform works; their forwards compute from their own inputs only (eps, the threshold and
heaviside's ``values`` are inputs, the hard op a function of them).  The fast spellings above (``out=``,
in place) are for plain eager tensors: where a tensor is functorch-wrapped (vmap's BatchedTensor, grad's
wrappers) or autograd records the op (a backward under ``create_graph=True``), :func:`inplace_ok` says
no and the same arithmetic is spelled out of place (bit for bit the same values).

``eps`` is a Python float or a 0-dim floating tensor (what ``linearize_module`` passes, from
a buffer, so that ``torch.compile`` sees it as a graph input rather than a constant: see
``ops.py``).  Every formula is written so that both work: ``0.5 / eps`` is a float or a 0-dim
tensor, and the few ATen calls that need a Python number (``add``'s ``alpha``,
``hardtanh_backward``'s bounds) have a tensor spelling next to them.  A tensor eps stays
0-dim: it never upcasts ``x`` (type promotion treats it like a scalar) and inductor reads it
once per kernel.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Callable, Union

import torch
from torch import Tensor
from torch._functorch.utils import unwrap_dead_wrappers
from torch.utils._python_dispatch import _get_current_dispatch_mode

#: a band half-width: a Python float, or a 0-dim floating tensor (a graph input under torch.compile)
Eps = Union[float, Tensor]


@dataclass(frozen=True)
class Jump:
    ramp: Callable[[Tensor], tuple[Tensor, Tensor]]   # x -> (linear value, ramp u); band: lo < u < hi
    bounds: tuple[float, float]                       # (lo, hi) of u
    distance: Callable[[Tensor], Tensor]               # x -> d; band: -half < d < half
    half: Eps                                          # half-width of the band in units of d
    slope: Eps                                         # d value / dx inside the band
    ste: tuple = (None, 1.0)                           # (clip in units of d or None: no clip, gain) for "ste"
    integral: bool = False                             # linear value is an integer exactly outside the band


def inplace_ok(*ts) -> bool:
    """True when the fast eager spellings (``out=``, in place) may write tensors computed from ``ts``.

    False when one of the tensors among ``ts`` is functorch-wrapped (``vmap``'s BatchedTensor,
    ``grad``/``jvp``'s wrappers: ``out=`` has no batching rule, and an in-place write into a tensor
    of a lower level than its operand is refused), or when autograd records ops on it (grad mode on
    and it requires grad: a backward run with ``create_graph=True``, where ``out=`` is refused).
    Non-tensors are ignored.  Plain eager and ``torch.compile`` (whose forward runs without grad)
    keep the fast spellings.
    """
    grad = torch.is_grad_enabled()
    for t in ts:
        if isinstance(t, Tensor) and (_wrapped(t) or (grad and t.requires_grad)):
            return False
    return True


_wrapped = torch._C._functorch.is_functorch_wrapped_tensor


def plain_eager(t: Tensor) -> bool:
    """Values can be read (no compilation, tracing or dispatch mode, ``t`` not functorch-wrapped): a data-dependent
    check is possible, and an eager-only spelling (:func:`constant`, :func:`scalar_operand`, round's folded ramp)
    changes no traced or compiled graph."""
    return (_get_current_dispatch_mode() is None and not torch.compiler.is_compiling()
            and not torch.jit.is_tracing() and not _wrapped(t))


def constant(value: float, like: Tensor) -> Tensor:
    """``torch.tensor(value, dtype=like.dtype)``, a 0-dim CPU tensor: in plain eager mode (:func:`plain_eager`) one
    cached per value and dtype (``torch.tensor`` is four ATen calls).  Only ever read (an op's operand)."""
    if plain_eager(like):
        return _cached_constant(float(value).hex(), like.dtype)  # (hex: -0.0 and 0.0 are two keys)
    return torch.tensor(value, dtype=like.dtype)


@functools.lru_cache(maxsize=256)
def _cached_constant(value: str, dtype: torch.dtype) -> Tensor:
    with torch.inference_mode(False), torch.no_grad():  # (a normal tensor even if first made in inference mode)
        return torch.tensor(float.fromhex(value), dtype=dtype)


def scalar_operand(value: float, t: Tensor) -> float | Tensor:
    """``value`` as the scalar operand of an in-place op on ``t`` (``t.mul_(value)``): for a float32 or float64 ``t``
    on the CPU in plain eager mode the cached 0-dim tensor :func:`constant` (the op computes with the same number,
    ``value`` rounded to the dtype, but a Python float it first wraps and converts: four ATen calls), else ``value``.
    (Not for half precision: there a Python float stays in float32, a 0-dim tensor of t's dtype would round it.)"""
    if t.dtype in (torch.float32, torch.float64) and t.device.type == "cpu" and inplace_ok(t) and plain_eager(t):
        return _cached_constant(float(value).hex(), t.dtype)
    return value


def affine_(d: Tensor, k: Eps, c: Eps) -> Tensor:
    """``k * d + c``, in place in ``d`` (one pass on CPU: a 0-dim CPU tensor as ``add``'s first operand).

    With a tensor ``k`` (a tensor eps) ``add``'s ``alpha`` cannot take it: ``mul_`` then ``add_``
    (compiled code fuses both into the surrounding kernel anyway).  Where :func:`inplace_ok` says
    no (functorch transforms, a recording autograd) it is the same arithmetic out of place, bit for
    bit: use the returned tensor, not ``d``.
    """
    if not inplace_ok(d, k, c):
        if isinstance(k, Tensor) or isinstance(c, Tensor):
            return d * k + c
        if d.device.type == "cpu":
            return torch.add(constant(c, d), d, alpha=k)
        return d * k + c
    if isinstance(k, Tensor) or isinstance(c, Tensor):
        return d.mul_(k).add_(c)
    if d.device.type == "cpu":
        return torch.add(constant(c, d), d, alpha=k, out=d)
    return d.mul_(k).add_(c)  # elsewhere a CPU operand would be a copy; compiled code fuses both


def clamp_(t: Tensor, lo: float | None, hi: float | None = None) -> Tensor:
    """``t.clamp(lo, hi)``, in place in the fresh ``t`` where :func:`inplace_ok` allows (``clamp_`` has no
    batching rule: under vmap it would take functorch's per-sample fallback)."""
    return t.clamp_(lo, hi) if inplace_ok(t) else t.clamp(lo, hi)


def mul_(t: Tensor, k: Eps) -> Tensor:
    """``t * k``, in place in the fresh ``t`` where :func:`inplace_ok` allows (``k`` may be of another
    functorch level than ``t``: a tensor eps under a transform)."""
    if not isinstance(k, Tensor):
        return t.mul_(scalar_operand(k, t))
    return t.mul_(k) if inplace_ok(t, k) else t * k


def pass_inside(grad: Tensor, d: Tensor, lo: Eps, hi: Eps) -> Tensor:
    """``grad`` where ``lo < d < hi``, else 0.

    The gradient at a NaN input is not specified (its value is NaN anyway): eager
    ``hardtanh_backward`` passes ``grad`` on its scalar tail and 0 in its vectorized lanes;
    compiled code gives 0.

    ``hardtanh_backward`` is one pass but takes Python numbers; tensor bounds (a tensor eps)
    take the same test spelled as a ``where``.
    """
    if compiled_cpu(d):
        return grad * inside_float(d, lo, hi)
    if isinstance(lo, Tensor) or isinstance(hi, Tensor):
        return torch.where((d <= lo) | (d >= hi), 0.0, grad)
    return torch.ops.aten.hardtanh_backward(grad, d, lo, hi)


def pass_within(grad: Tensor, d: Tensor, r: Eps) -> Tensor:
    """``grad`` where ``|d| <= r``, else 0: the closed band of a hard forward (SLL_MATH.md's ``|x - b| <= eps``).

    With ``r`` a Python number it is ``hardtanh_backward``'s one pass, its open bounds moved out by one step of
    ``d``'s dtype (``|d| <= r`` exactly where ``|d| < nextafter(r)``), so that an input exactly on a band's
    edge gets the slope: with ``eps = 1/2`` the bands of round meet at the integers, and there the
    surrogate's slope is the same on both sides (hard-mode round is then the straight-through estimator
    everywhere, 0 and the integers included).  A NaN ``d`` gets 0 compiled (unspecified in eager mode,
    as in :func:`pass_inside`).
    """
    if compiled_cpu(d):
        return grad * within_float(d, r)
    if isinstance(r, Tensor):
        return torch.where((d < -r) | (d > r), 0.0, grad)
    above = _step_above(float(r), d.dtype)
    return torch.ops.aten.hardtanh_backward(grad, d, -above, above)


@functools.lru_cache(maxsize=256)
def _step_above(r: float, dtype: torch.dtype) -> float:
    """The least value of ``dtype`` above ``r`` (``r`` rounded to ``dtype`` first)."""
    t = torch.tensor(r, dtype=dtype)
    return torch.nextafter(t, torch.tensor(math.inf, dtype=dtype)).item()


def within_float(d: Tensor, r: Eps) -> Tensor:
    """``1.0`` where ``|d| <= r``, else ``0.0`` (also for a NaN ``d``), spelled in float ops for compiled code
    (see :func:`inside_float`).

    With ``r`` a Python number and ``d`` in float32 or float64 it is ``|d| < nextafter(r)`` (as in :func:`pass_within`):
    one ``sign``, whose ``sign(NaN) = 0`` leaves a NaN outside, about half the element ops of the spelling for a tensor
    ``r`` (or a half-precision ``d``, which inductor computes in float32), which needs a test for NaN of its own.
    """
    if not isinstance(r, Tensor) and d.dtype in (torch.float32, torch.float64):
        return torch.sign(_step_above(float(r), d.dtype) - d.abs()).clamp_min(0.0)
    return torch.where(d != d, 0.0, (torch.sign(r - d.abs()) + 1.0).clamp_max(1.0))


def compiled_cpu(t: Tensor) -> bool:
    """True while ``torch.compile`` traces code for a CPU tensor: inductor's C++ kernels, where the
    spellings below (:func:`inside_float`, :func:`nan_to_`, the band read from an integral value)
    are faster.  Elsewhere (CUDA: Triton, whose one-byte stores and ``isnan`` are fast) the eager
    spellings stay, and the partitioner saves a one-byte band mask: a quarter of a float's memory.
    """
    return torch.compiler.is_compiling() and t.device.type == "cpu"


def inside_float(d: Tensor, lo: Eps, hi: Eps) -> Tensor:
    """``1.0`` where ``lo < d < hi``, else ``0.0`` (also for a NaN ``d``): the band as a float, for compiled code.
    ``d`` is a clamped ramp: ``lo <= d <= hi``, or NaN.

    Spelled without a comparison on purpose: from a ``bool`` band AOT autograd's partitioner
    saves a one-byte mask for the backward, and inductor's vectorized one-byte stores are
    ~25x slower than eager on CPU (``benchmarks/compiled_ops.py``, mask-store probe).  From
    these float ops it saves (or recomputes from) a float tensor instead: faster, but four
    times the memory of the mask (``benchmarks/memory.py``).
    """
    # one sign of the product (sign(NaN) = 0: a NaN is outside), not the product of two signs: half the element ops.
    # With lo <= d <= hi the product is never negative; inside, one factor is at least (hi - lo) / 2 (a jump's
    # bounds are 1 or 2 apart), so the product of two nonzero factors is never rounded to 0
    return torch.sign((d - lo) * (hi - d))


def nan_to_(t: Tensor, value: float) -> Tensor:
    """``t`` with NaN replaced by ``value`` (in place in eager mode; only NaN can occur where it is used).

    Compiled for the CPU, ``nan_to_num`` becomes a scalar ``std::isnan`` loop in inductor's kernels,
    which unvectorizes the whole fused kernel; ``t != t`` stays vectorized.
    """
    if compiled_cpu(t):
        return torch.where(t != t, value, t)
    return t.nan_to_num_(value) if inplace_ok(t) else t.nan_to_num(value)


class SurrogateFunction(torch.autograd.Function):
    """Forward: the linear surrogate, or the hard op (``hard`` given); backward and jvp: the slope in the band.

    Inputs: ``(x, threshold, eps, values, make, hard, method)``.  The forward computes from its own
    inputs only (under a torch.func transform it runs at another functorch level than the caller's
    tensors, so nothing may close over a caller's tensor): the :class:`Jump` is ``make(eps, threshold)``
    and the hard value ``hard(x, threshold, values)`` (``values``: heaviside's).  ``threshold`` (a
    tensor, or a number, or None) receives the negated gradient of ``x``: the jump moves with the
    threshold exactly as it moves against the input.  ``eps`` and ``values`` get no gradient.

    Outputs: the value, and in linear mode, when the ramp ``u`` is not the value itself (round,
    floor, ceil, trunc), ``u`` as a second, non-differentiable output: the one intermediate the
    backward needs (new-style Functions save only inputs and outputs).  :func:`apply` returns the value.

    ``generate_vmap_rule``: under ``vmap`` the forward, backward and jvp run on batched tensors, so
    every kernel they call picks the out-of-place spellings there (:func:`inplace_ok`).
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(x: Tensor, threshold, eps: Eps, values, make: Callable[[Eps, object], Jump],
                hard: Callable[[Tensor, object, object], Tensor] | None, method: str = "sll"):
        if hard is not None:
            return hard(x, threshold, values)
        jump = make(eps, threshold)
        out, u = jump.ramp(x)
        # compiled, an integer-valued op's band is where its value is not an integer: saving the
        # output (stored anyway) instead of the ramp spares the forward kernel a second store.
        # Not exact where the value cannot hold a fraction (|x| >= 2^22 in float32, 2^51 in
        # float64: an input exactly on a boundary there gets 0, not the slope); half and bfloat16
        # reach that at 2^9 and 2^6, so they keep the ramp.  (sign and step: u is the value.)
        if u is out or (jump.integral and x.dtype in (torch.float32, torch.float64) and compiled_cpu(x)):
            return out
        return out, u

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, threshold, eps, values, make, hard, method = inputs
        two = ctx.two = isinstance(output, tuple)
        out = output[0] if two else output
        ctx.linear = hard is None
        ctx.from_out = ctx.linear and not two and _integral(make)  # see forward
        if two:
            ctx.mark_non_differentiable(output[1])
            ctx.set_materialize_grads(False)   # (else the backward gets a zero-filled full-size grad for u)
        saved = (output[1] if two else out) if ctx.linear else x
        # eps and threshold are saved, not kept on ctx: under vmap this runs on batched tensors
        # that do not outlive it (generate_vmap_rule saves what save_for_backward gets, unbatched)
        t_saved = isinstance(threshold, Tensor) and not ctx.linear   # (linear mode: u has the band)
        e_saved = isinstance(eps, Tensor)
        tensors = (saved, *((threshold,) if t_saved else ()), *((eps,) if e_saved else ()))
        ctx.save_for_backward(*tensors)
        ctx.save_for_forward(*tensors)
        ctx.rest = (make, method, t_saved, None if t_saved or isinstance(threshold, Tensor) else threshold,
                    e_saved, None if e_saved else eps)
        ctx.shapes = (x.shape, x.dtype, None if not isinstance(threshold, Tensor) else (threshold.shape, threshold.dtype))
        ctx.out_meta = (out.shape, out.dtype)

    @staticmethod
    def _factor(ctx, grad: Tensor) -> Tensor:
        """``grad`` times d value / dx (a fresh tensor): the backward's and the jvp's common factor."""
        saved, *rest = ctx.saved_tensors
        make, method, t_saved, t_const, e_saved, e_const = ctx.rest
        it = iter(rest)
        threshold = next(it) if t_saved else t_const
        jump = make(next(it) if e_saved else e_const, threshold)
        if ctx.from_out:   # 1 where the value is not an integer (NaN: sign(NaN) = 0), see forward
            return grad * torch.sign((saved - torch.round(saved)).abs()) * jump.slope
        if ctx.linear:
            return mul_(pass_inside(grad, saved, *jump.bounds), jump.slope)
        return estimator_grad(grad, saved, jump, method)

    @staticmethod
    def backward(ctx, grad: Tensor | None, *_):
        if grad is None:   # (only with two outputs, whose grads are not materialized: see setup_context)
            return None, None, None, None, None, None, None
        g = SurrogateFunction._factor(ctx, grad)
        x_shape, x_dtype, t_meta = ctx.shapes
        grad_x = grad_t = None
        if ctx.needs_input_grad[0]:
            grad_x = _sum_to(g, x_shape, x_dtype)
        if t_meta is not None and ctx.needs_input_grad[1]:
            grad_t = _sum_to(g, *t_meta, neg=True)  # not in place: may alias grad_x
        return grad_x, grad_t, None, None, None, None, None

    @staticmethod
    def jvp(ctx, t_x, t_threshold, *_):
        """Forward mode: ``factor * (t_x - t_threshold)``, the factor of :meth:`backward`; u's tangent is None."""
        shape, dtype = ctx.out_meta
        t = t_x if t_threshold is None else (-t_threshold if t_x is None else t_x - t_threshold)
        if t is None:
            t = torch.zeros(shape, dtype=dtype, device=ctx.saved_tensors[0].device)
        else:
            t = SurrogateFunction._factor(ctx, t.expand(shape)).to(dtype)
        return (t, None) if ctx.two else t


def _sum_to(g: Tensor, shape: torch.Size, dtype: torch.dtype, neg: bool = False) -> Tensor:
    """``g.sum_to_size(shape)`` (negated with ``neg``) as ``dtype``; the ATen calls that would return their input
    (``sum_to_size`` to g's own shape, ``to`` its own dtype) skipped for a plain tensor."""
    if type(g) is not Tensor or g.shape != shape:
        g = g.sum_to_size(shape)
    if neg:
        g = g.neg()
    return g if g.dtype == dtype else g.to(dtype)


#: the estimators: the backward of a hard forward (``method=`` of ``linearize_module`` and the explicit ops)
METHODS = ("sll", "ste", "sigmoid")


def estimator_grad(grad: Tensor, x: Tensor, jump: Jump, method: str = "sll") -> Tensor:
    """The gradient w.r.t. ``x`` (a fresh tensor) of a hard-forward op under ``method``.

    - ``sll``: ``slope * grad * 1{|d| <= half}`` (the boxcar of SLL_MATH.md's hard mode, edges included:
      :func:`pass_within`);
    - ``ste``: ``gain * grad * 1{|d| <= clip}`` (``jump.ste``): identity for round/floor/ceil/trunc
      (no clip), the clipped identity ``1{|x| <= 1}`` for sign, ``±1{|x - t| <= 1/2}`` for a unit
      step (heaviside, comparisons: the clipped identity of ``clamp(x - t + 1/2, 0, 1)``);
    - ``sigmoid``: the derivative of ``h * sigmoid((x - b) / tau)`` at the nearest boundary ``b``
      with ``tau = eps``: ``grad * 2 slope * s (1 - s)``, ``s = sigmoid(d / half)`` (``h / tau = 2 slope``
      and ``(x - b) / tau = d / half`` in every op's units).
    """
    if method == "sll":
        return mul_(pass_within(grad, jump.distance(x), jump.half), jump.slope)
    if method == "ste":
        clip, gain = jump.ste
        if clip is None:
            g = grad.clone()
        elif compiled_cpu(x):  # 1{|d| <= clip} as a float: see inside_float
            g = grad * within_float(jump.distance(x), clip)
        else:
            g = torch.where(jump.distance(x).abs() <= clip, grad, 0.0)
        return g if gain == 1.0 else g.mul_(gain)
    if method == "sigmoid":
        s = torch.sigmoid(jump.distance(x) / jump.half)
        g = s * (1 - s)
        return mul_(g.mul_(grad) if inplace_ok(g, grad) else g * grad, 2 * jump.slope)
    raise ValueError(f"unknown estimator method {method!r}; one of {METHODS}")


def apply(x: Tensor, make: Callable[[Eps, object], Jump], eps: Eps, *,
          hard: Callable[[Tensor, object, object], Tensor] | None = None,
          threshold: Tensor | float | None = None, values: Tensor | None = None, method: str = "sll") -> Tensor:
    """Run the jump ``make(eps, threshold)`` through :class:`SurrogateFunction`.

    ``hard(x, threshold, values)`` given means hard forward mode (``values``: heaviside's; both
    functions must read tensors only from their arguments: see :class:`SurrogateFunction`);
    ``method`` picks the backward of a hard forward, see :func:`estimator_grad`.
    """
    out = _SURROGATE_APPLY(x, threshold, eps, values, make, hard, method)
    return out[0] if isinstance(out, tuple) else out


# --- the jumps, one per op family -----------------------------------------------------

def sign(eps: Eps) -> Jump:
    """``clamp(x / eps, -1, 1)``: ramp and value are one tensor; slope ``1/eps`` (a jump of 2)."""
    def ramp(x):
        k = 1.0 / eps
        u = clamp_(torch.mul(x, k if isinstance(k, Tensor) else scalar_operand(k, x)), -1.0, 1.0)
        return u, u
    return Jump(ramp, (-1.0, 1.0), lambda x: x, eps, 1.0 / eps, (1.0, 1.0))


def step(eps: Eps, threshold: Tensor | float, direction: int) -> Jump:
    """A unit jump at ``threshold``: ``clamp(direction (x - t) / (2 eps) + 1/2, 0, 1)`` (direction -1: a fall)."""
    k = 0.5 / eps

    def ramp(x):
        u = clamp_(affine_(torch.sub(x, threshold), direction * k, 0.5), 0.0, 1.0)
        return u, u

    def distance(x):
        return torch.sub(x, threshold) if isinstance(threshold, Tensor) or threshold != 0 else x
    return Jump(ramp, (0.0, 1.0), distance, eps, direction * k, (0.5, float(direction)))


def round_half(eps: Eps) -> Jump:
    """Boundaries at ``j + 1/2``: ``floor(x) + clamp((x - floor(x) - 1/2) / (2 eps) + 1/2, 0, 1)``."""
    k = 0.5 / eps

    def distance(x):
        f = torch.floor(x)
        d = torch.sub(x, f, out=f) if inplace_ok(x) else x - f
        return nan_to_(d.sub_(0.5), math.inf)  # +-inf, NaN: infinitely far from every band
    return Jump(lambda x: _round_half_ramp(x, k), (0.0, 1.0), distance, eps, k, integral=True)


def _round_half_ramp(x: Tensor, k: Eps, consume: bool = False) -> tuple[Tensor, Tensor]:
    """(floor(x) + u, u); with ``consume`` the ramp is built in ``x``'s own buffer."""
    f = torch.floor(x)
    d = x.sub_(f) if consume else torch.sub(x, f)
    # k (d - 1/2) + 1/2, not k d + (1/2 - k/2): d - 1/2 is exact, so a boundary gets exactly 1/2 (the
    # folded constant cancels against k d and leaves their rounding: 0.4999995 at eps = 0.03 in float32),
    # except where add rounds k d + c once (a fused multiply-add) and the fold is exact: _half_folded.
    # inf - inf = NaN -> 0 keeps f's inf; a NaN input stays NaN through f
    c = _half_folded(k, d)
    v = affine_(d, k, c) if c is not None else affine_(d.sub_(0.5), k, 0.5)
    u = nan_to_(clamp_(v, 0.0, 1.0), 0.0)
    return (f.add_(u) if inplace_ok(x, k) else f + u), u


def _half_folded(k: Eps, d: Tensor) -> float | None:
    """The constant ``c`` with which round's ramp ``clamp(k (d - 1/2) + 1/2, 0, 1)`` is one ``add`` pass fewer,
    ``clamp(k d + c, 0, 1)``, bit for bit, for every ``d = x - floor(x)`` (in [0, 1], or NaN); None where it is not.

    ``c = 1/2 - k/2`` (``k`` rounded to d's dtype, as ``add``'s ``alpha``), exact when ``k <= 2^mantissa``.  Where
    ``add`` rounds ``k d + c`` once (:func:`_fused_add`) the two agree: for ``d >= 1/4``, ``d - 1/2`` is exact
    (Sterbenz), so both round the same number ``k (d - 1/2) + 1/2`` once; for ``d < 1/4`` and ``k >= 2`` (eps <= 1/4)
    both values are ``<= 0`` (``k (d - 1/2) + 1/2 < 1/2 - k/4 <= 0``, also with ``d - 1/2`` rounded), so the clamp
    gives ``+0`` to both.  Eager CPU float32/float64 only: elsewhere (compiled or traced code, half precision, other
    devices) the ramp keeps its two passes and the graphs their ops."""
    if isinstance(k, Tensor) or d.dtype not in (torch.float32, torch.float64) or d.device.type != "cpu" \
            or not plain_eager(d):
        return None
    return _half_constant(k, d.dtype)


@functools.lru_cache(maxsize=256)
def _half_constant(k: float, dtype: torch.dtype) -> float | None:
    """:func:`_half_folded`'s ``c`` for a Python ``k`` (None: no fused add, ``k < 2``, or ``c`` not exact)."""
    if not _fused_add(dtype):
        return None
    kd = torch.tensor(k, dtype=dtype).item()  # (add converts alpha to the dtype the same way)
    if not 2.0 <= kd < math.inf:
        return None
    c = 0.5 - 0.5 * kd
    exact = Fraction(1, 2) - Fraction(kd) / 2
    return c if math.isfinite(c) and Fraction(torch.tensor(c, dtype=dtype).item()) == exact else None


@functools.lru_cache(maxsize=4)
def _fused_add(dtype: torch.dtype) -> bool:
    """Does ATen's CPU ``torch.add(c, d, alpha=k)`` round ``k d + c`` once (a fused multiply-add) in ``dtype``, in its
    vectorized loop, its scalar tail and a strided loop?  It does in the AVX2/AVX512 kernels; the scalar
    ``ATEN_CPU_CAPABILITY=default`` build rounds ``k d`` first.  Probe: ``(1 + u)^2 - (1 + 2u)`` is ``u^2`` fused
    and 0 otherwise (``u`` the dtype's epsilon)."""
    u = torch.finfo(dtype).eps
    d = torch.full((197,), 1.0 + u, dtype=dtype)
    c = torch.tensor(-(1.0 + 2.0 * u), dtype=dtype)
    strided = torch.add(c, d[::3], alpha=1.0 + u)
    fused = torch.add(c, d, alpha=1.0 + u, out=d)
    return bool((fused == u * u).all()) and bool((strided == u * u).all())


def integer(eps: Eps, shift: float) -> Jump:
    """Boundaries at the integers ``c = round(x)``: ``c + clamp((x - c) / (2 eps) + 1/2 + shift, shift, shift + 1)``.

    ``shift = -1`` is floor, ``shift = 0`` is ceil (SLL_MATH.md's ``c - 1 + ramp`` / ``c + ramp``).
    """
    k = 0.5 / eps

    def ramp(x):
        c = torch.round(x)
        w = nan_to_(clamp_(affine_(torch.sub(x, c), k, 0.5 + shift), shift, shift + 1.0), shift)
        return (c.add_(w) if inplace_ok(x, k) else c + w), w

    def distance(x):
        c = torch.round(x)
        return nan_to_(torch.sub(x, c, out=c) if inplace_ok(x) else x - c, math.inf)
    return Jump(ramp, (shift, shift + 1.0), distance, eps, k, integral=True)


def trunc(eps: Eps) -> Jump:
    """floor on ``|x|`` with no band at 0, sign restored: ``sign(x) (round(a) - 1 + ramp(a - round(a)))``.

    ``a = max(|x|, 1/2)``: below 1/2 trunc is 0 and has no jump; there ``round(a) = 0`` and the
    ramp sits on its top (value 0, gradient 0) without a mask.
    """
    k = 0.5 / eps

    def ramp(x):
        a = clamp_(torch.abs(x), 0.5)
        c = torch.round(a)
        w = nan_to_(clamp_(affine_(torch.sub(a, c), k, -0.5), -1.0, 0.0), -1.0)
        if compiled_cpu(x):  # -v where x < 0: the bits of v sign(x) (at +-0 and NaN too), half the element ops
            v = c + w
            return torch.where(x < 0, -v, v), w
        if inplace_ok(x, k):
            return c.add_(w).mul_(torch.sign(x)), w
        return (c + w) * torch.sign(x), w

    def distance(x):
        # to the nearest nonzero integer: below 1/2, 1 (round(|x|) = 0 there: |x| - 0 would put |x| < 1/2 on the
        # edge of a band of half-width 1/2, where trunc has no jump)
        a = torch.abs(x)
        return nan_to_(a.sub_(clamp_(torch.round(a), 1.0)), math.inf)
    return Jump(ramp, (-1.0, 0.0), distance, eps, k, integral=True)


_FLOAT32_MAX = torch.finfo(torch.float32).max


def round_decimals(eps: Eps, decimals: int) -> Jump:
    """round on the grid ``10^-d``: ``round_half`` on the scaled input, scaled back.

    It follows ATen's own kernel step for step (``nearbyint(x * 10^d) / 10^d``, or
    ``nearbyint(x / 10^-d) * 10^-d`` for negative ``d``, in float for half and bfloat16),
    so off the bands the value is ``torch.round(x, decimals=d)`` bit for bit.  The scale is
    a tensor on ``x``'s device: divisions by a Python scalar may become multiplications by
    its reciprocal, which round differently.
    """
    pw = 10.0 ** abs(decimals)
    inner = round_half(eps * 10.0 ** decimals)  # the band in units of the scaled input

    def scaled(x):
        xf = x.float() if x.dtype in (torch.float16, torch.bfloat16) else x  # ATen's opmath type
        # (traced as an op: no lifted constant); beyond the dtype's range inf, as ATen's pow(10, d) in that type is
        # (x * inf / inf, x / inf * inf: NaN for every x, torch.round's value; torch.full raised "value cannot be
        # converted to type float without overflow")
        scale = torch.full((), pw if pw <= _FLOAT32_MAX or pw <= torch.finfo(xf.dtype).max else math.inf,
                           dtype=xf.dtype, device=xf.device)
        return (torch.mul(xf, scale) if decimals > 0 else torch.div(xf, scale)), scale

    def ramp(x):
        xp, scale = scaled(x)
        value, u = _round_half_ramp(xp, inner.slope, consume=xp is not x)
        value = value.div_(scale) if decimals > 0 else value.mul_(scale)
        return value.to(x.dtype), u

    return Jump(ramp, (0.0, 1.0), lambda x: inner.distance(scaled(x)[0]), inner.half, inner.slope)


# --- selections: several elements compete; written as composites (autograd does the backward) ----

class SelectFunction(torch.autograd.Function):
    """``where(s, a, b)`` for a surrogate mask ``s`` in [0, 1]: ``a`` where ``s = 1``, ``b`` where ``s = 0``,
    the blend ``a s + b (1 - s)`` between, as ``dtype`` (None: ``result_type(a, b)``).  Gradients: ``w`` to
    ``a``, ``1 - w`` to ``b`` and ``a - b`` to ``s`` (0 where ``a - b`` is not finite: a jump to ``±inf``
    has no finite slope); the jvp is ``t_s (a - b) + t_a w + t_b (1 - w)`` with the same factors.  ``w`` is
    ``soft`` when given, else ``s``: in hard mode ``s`` is the hard 0/1 mask (the forward is the hard
    where) and ``soft`` the linear surrogate of the same comparison, so that the branch terms are those of
    the derivative of ``a s + b (1 - s)`` at the surrogate (SLL_MATH.md, forward modes); ``soft`` gets no
    gradient (``s`` carries the comparison's).  The exact ends keep ``-inf`` masks and NaN in the
    unselected branch out of the result, as ``torch.where`` does.  New-style (``setup_context``,
    ``generate_vmap_rule``): it works under every torch.func transform.
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(s: Tensor, a, b, soft: Tensor | None = None, dtype: torch.dtype | None = None) -> Tensor:
        dtype = torch.result_type(a, b) if dtype is None else dtype
        blend = (a * s + b * (1 - s)).to(dtype)  # (not b + s (a - b): that is NaN when one side is inf)
        out = torch.where(s == 1, a, torch.where(s == 0, b, blend))
        return out.to(dtype)

    @staticmethod
    def setup_context(ctx, inputs, output):
        s, a, b, soft, dtype = inputs
        tensors = (s, *(t for t in (a, b, soft) if isinstance(t, Tensor)))
        ctx.save_for_backward(*tensors)
        ctx.save_for_forward(*tensors)
        ctx.kinds = (isinstance(a, Tensor), isinstance(b, Tensor), isinstance(soft, Tensor))
        ctx.scalars = (None if ctx.kinds[0] else a, None if ctx.kinds[1] else b)
        ctx.out_meta = (output.shape, output.dtype)

    @staticmethod
    def _saved(ctx):
        """``(s, a, b, w)``: ``w`` the branch weight, ``soft`` when given, else ``s``."""
        s, *tensors = ctx.saved_tensors
        it = iter(tensors)
        a = next(it) if ctx.kinds[0] else ctx.scalars[0]
        b = next(it) if ctx.kinds[1] else ctx.scalars[1]
        return s, a, b, next(it) if ctx.kinds[2] else s

    @staticmethod
    def _diff(a, b, like: Tensor) -> Tensor:
        """``a - b`` in ``like``'s dtype, 0 where it is not finite."""
        diff = a - b
        diff = diff.to(like.dtype) if isinstance(diff, Tensor) else torch.tensor(diff, dtype=like.dtype, device=like.device)
        return torch.where(torch.isfinite(diff), diff, 0)

    @staticmethod
    def backward(ctx, grad: Tensor):
        s, a, b, w = SelectFunction._saved(ctx)
        grad_s = grad_a = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_s = (grad * SelectFunction._diff(a, b, grad)).sum_to_size(s.shape).to(s.dtype)
        if ctx.kinds[0] and ctx.needs_input_grad[1]:
            grad_a = (grad * w).sum_to_size(a.shape).to(a.dtype)
        if ctx.kinds[1] and ctx.needs_input_grad[2]:
            grad_b = (grad * (1 - w)).sum_to_size(b.shape).to(b.dtype)
        return grad_s, grad_a, grad_b, None, None

    @staticmethod
    def jvp(ctx, t_s, t_a, t_b, *_):
        s, a, b, w = SelectFunction._saved(ctx)
        shape, dtype = ctx.out_meta
        like = torch.empty((), dtype=dtype, device=s.device)
        terms = []
        if t_s is not None:
            terms.append(t_s * SelectFunction._diff(a, b, like))
        if ctx.kinds[0] and t_a is not None:
            terms.append(t_a * w)
        if ctx.kinds[1] and t_b is not None:
            terms.append(t_b * (1 - w))
        if not terms:
            return torch.zeros(shape, dtype=dtype, device=s.device)
        t = terms[0]
        for term in terms[1:]:
            t = t + term
        return t.to(dtype).expand(shape).clone() if t.shape != shape else t.to(dtype)


def select(s: Tensor, a, b, soft: Tensor | None = None, dtype: torch.dtype | None = None) -> Tensor:
    """:class:`SelectFunction`: the blend of ``a`` and ``b`` by ``s`` (``soft``: the branch weights of its gradient)."""
    return _SELECT_APPLY(s, a, b, soft, dtype)


def _with_hard(soft: Tensor, hard: Tensor | None) -> Tensor:
    """``hard`` as the value, ``soft``'s gradient (the hard forward mode); ``soft`` itself when ``hard`` is None."""
    if hard is None:
        return soft
    return hard.to(soft.dtype) + (soft - soft.detach()).nan_to_num(0.0)


def argmax_onehot(x: Tensor, dim: int, num_classes: int, eps: Eps, largest: bool = True,
                  hard: Tensor | None = None) -> Tensor:
    """SLL of ``one_hot(argmax(x, dim), num_classes)`` (argmin: ``largest=False``), classes on the last dim.

    ``y_i = clamp(m_i / (2 eps) + 1/2, 0, 1)`` with the margin ``m_i = x_i - max_{j != i} x_j``:
    slope ``1/(2 eps)`` on ``x_i`` and ``-1/(2 eps)`` on the runner-up (through ``topk``).
    """
    if x.dim() == 0:  # one element: argmax is 0 (torch.argmax checks dim as the hard op does), one_hot gives (n,)
        (torch.argmax if largest else torch.argmin)(x, dim)
        x, dim = x.reshape(1), 0
    margin = argmax_margin(x, dim, largest)
    y = torch.ones_like(x) if margin is None else (margin * (0.5 / eps) + 0.5).clamp(0.0, 1.0)
    y = y.movedim(dim, -1)
    width = y.shape[-1]
    if num_classes > width:
        y = torch.nn.functional.pad(y, (0, num_classes - width))
    elif num_classes < width:
        y = y.narrow(-1, 0, num_classes)
    return _with_hard(y, hard)


def topk_mask(x: Tensor, k: int, dim: int, eps: Eps, largest: bool = True, hard: Tensor | None = None) -> Tensor:
    """SLL of the 0/1 mask of ``topk(x, k, dim)``: ``clamp((x - tau) / (2 eps) + 1/2, 0, 1)``,
    ``tau = (x_(k) + x_(k+1)) / 2`` (the k-th and (k+1)-th largest), with the gradient also through ``tau``."""
    distance = topk_distance(x, k, dim, largest)
    if distance is None:  # no boundary: the mask is constant (zero gradient; 0 * x would be NaN at +-inf)
        # (a 0-dim x: the hard op's own value, which checks k and dim as it does: topk of a 0-dim tensor
        # selects its element for k = 0 too)
        const = torch.zeros_like(x).scatter(dim, x.topk(k, dim, largest=largest).indices, 1.0) if x.dim() == 0 \
            else torch.full_like(x, 1.0 if k > 0 else 0.0)
        y = const + torch.where(x.isfinite(), x, 0.0) * 0
    else:
        y = (distance * (0.5 / eps) + 0.5).clamp(0.0, 1.0)
    return _with_hard(y, hard)


def _first(indices: Tensor, dim: int, like: Tensor) -> Tensor:
    """Bool mask of the positions ``indices`` (along ``dim``) in a tensor shaped like ``like``."""
    z = torch.zeros_like(like, dtype=torch.bool)  # (like's: batched under vmap)
    return z.scatter_(dim, indices, True) if inplace_ok(indices) else z.scatter(dim, indices, True)


def _hard_where_undefined(d: Tensor, z: Tensor, chosen: Tensor, nan: Tensor | None = None) -> Tensor:
    """``d`` where it is a number; where it is NaN for a non-NaN ``z`` (``inf - inf``: a tie at infinity, or a
    NaN elsewhere in the row taking the hard op's choice) ``+inf`` for the elements the hard op chooses and
    ``-inf`` for the others, so that the surrogate is the hard value there (SLL_MATH.md: +-inf gives what the
    hard op gives).  A NaN element stays NaN.  ``nan``: ``isnan(z)``, where the caller has it."""
    far = torch.where(chosen, torch.inf, -torch.inf).to(d.dtype)
    return torch.where(torch.isnan(d) & ~(torch.isnan(z) if nan is None else nan), far, d)


def argmax_margin(x: Tensor, dim: int, largest: bool = True) -> Tensor | None:
    """``m_i = x_i - max_{j != i} x_j`` along ``dim`` (of ``-x`` for argmin); None when ``dim`` has one element.

    The maximum is the element ``argmax`` picks (the first of a tie, a NaN if there is one): its runner-up
    is the largest of the others; every other element's is the maximum.  So in a tie each tied element's
    margin is 0 and moves with its own value and the other's (slope on ``x_i`` and on the runner-up).
    (Both are read by position, not from ``topk``, whose order of tied values need not be ``argmax``'s.)
    """
    z = x if largest else -x  # (argmin(x) is argmax(-x), ties and NaN included)
    if z.dim() == 0 or z.shape[dim] == 1:
        return None
    index = z.argmax(dim, keepdim=True)
    chosen = _first(index, dim, z)
    best = z.gather(dim, index)
    nan = torch.isnan(z)
    # the runner-up among the numbers: a second NaN in the row made it NaN, and amax's backward divides by the count of
    # elements equal to its result (0 for NaN): NaN gradients for the whole row, in hard mode too.  Same value: a row
    # with a NaN has its (first) NaN chosen, whose margin is NaN whatever the runner-up
    runner_up = torch.where(chosen | nan, -torch.inf, z).amax(dim, keepdim=True)
    margin = z - torch.where(chosen, runner_up, best)
    return _hard_where_undefined(margin, z, chosen, nan)


def topk_distance(x: Tensor, k: int, dim: int, largest: bool = True) -> Tensor | None:
    """``x_i - tau``, ``tau = (x_(k) + x_(k+1)) / 2`` (signs flipped for the smallest k); None when ``k`` selects none
    or all (or ``x`` is 0-dim).

    ``topk`` ranks on ``x`` itself in both directions, as the hard op does (a NaN ranks above every
    number, also for the smallest k); an infinite ``tau`` (a tie at infinity) gives the hard choice.
    """
    if k <= 0 or x.dim() == 0 or k >= x.shape[dim]:  # (a 0-dim x has one element)
        return None
    top = x.topk(k + 1, dim, largest=largest)
    v = top.values
    tau = (v.narrow(dim, k - 1, 1) + v.narrow(dim, k, 1)) * 0.5
    d = x - tau if largest else tau - x
    return _hard_where_undefined(d, x, _first(top.indices.narrow(dim, 0, k), dim, x))


@functools.lru_cache(maxsize=256)  # (the ops' makers: module-level functions, or cached per decimals)
def _integral(make: Callable[[Eps, object], Jump]) -> bool:
    """Is the jump ``make`` builds integral (round, floor, ceil, trunc)?"""
    return make(1.0, None).integral


def _direct_apply(fn: type) -> Callable:
    """``fn.apply`` without the signature binding ``torch.autograd.Function.apply`` makes on every call of a
    new-style Function (``inspect.signature(forward).bind``: 10-20 us, the op's whole Python cost again; our
    callers pass every argument positionally, so it binds nothing), outside torch.func transforms and
    compilation, where ``fn.apply`` itself runs."""
    base = super(torch.autograd.Function, fn).apply  # (the C++ apply: forward, then setup_context)
    transforms = torch._C._are_functorch_transforms_active
    compiling = torch.compiler.is_compiling

    def apply(*args):
        if transforms() or compiling():
            return fn.apply(*args)
        return base(*unwrap_dead_wrappers(args))
    return apply


_SURROGATE_APPLY = _direct_apply(SurrogateFunction)
_SELECT_APPLY = _direct_apply(SelectFunction)

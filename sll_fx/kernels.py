"""The arithmetic of every SLL surrogate (``../shared/SLL_MATH.md``), forward and backward.

Every surrogate is built from one *unit ramp* ``u = clamp(z, lo, hi)`` on an affine
coordinate ``z`` of the input: outside the band ``u`` sits exactly on ``lo`` or ``hi``,
inside it ``u`` moves linearly.  The op's value in ``linear`` mode is assembled from
``u`` and a hard base (``floor(x) + u`` for round, ...); in ``hard`` mode it is the
hard op itself.  In both modes the backward is ``slope * grad * 1{lo < u < hi}``.

The functions here are written for eager speed: one fresh tensor per surrogate and
in-place passes after it (a fresh 2^22-element tensor costs about three in-place
passes on the reference machine; see ``benchmarks/ops.py``).  Registration as
``torch.library`` ops, argument checking and the public API live in ``ops.py``.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

# A band function maps the input to (u, assemble): u is the clamped ramp saved for the
# backward, assemble(u) builds the linear-mode value (it may reuse buffers in place).
Band = Callable[[Tensor], tuple[Tensor, Callable[[Tensor], Tensor]]]


def unit_ramp_(z: Tensor, k: float) -> Tensor:
    """In place: ``clamp(z * k + 1/2, 0, 1)``, the unit jump of SLL_MATH.md (NaN stays NaN)."""
    return z.mul_(k).add_(0.5).clamp_(0.0, 1.0)


class SurrogateFunction(torch.autograd.Function):
    """Forward: the linear surrogate or the hard op; backward: the surrogate's slope in the band.

    In ``linear`` mode the ramp ``u`` is computed once and saved; in ``hard`` mode the forward
    is the hard op alone and the backward recomputes ``u`` from the saved input.
    ``threshold`` (optional tensor) receives the negated gradient of ``x``: the jump moves
    with the threshold exactly as it moves against the input.
    """

    @staticmethod
    def forward(ctx, x: Tensor, threshold: Tensor | None, band: Band, hard: Callable[[], Tensor] | None,
                lo: float, hi: float, slope: float) -> Tensor:
        if hard is None:
            u, assemble = band(x)
            out = assemble(u)
            ctx.save_for_backward(u)
            ctx.band = None
        else:
            out = hard()
            ctx.save_for_backward(x)
            ctx.band = band
        ctx.bounds, ctx.slope = (lo, hi), slope
        ctx.shapes = (x.shape, x.dtype, None if threshold is None else (threshold.shape, threshold.dtype))
        return out

    @staticmethod
    def backward(ctx, grad: Tensor):
        (saved,) = ctx.saved_tensors
        u = saved if ctx.band is None else ctx.band(saved)[0]
        lo, hi = ctx.bounds
        g = torch.ops.aten.hardtanh_backward(grad, u, lo, hi).mul_(ctx.slope)
        (x_shape, x_dtype, t_meta) = ctx.shapes
        grad_x = grad_t = None
        if ctx.needs_input_grad[0]:
            grad_x = g.sum_to_size(x_shape).to(x_dtype)
        if t_meta is not None and ctx.needs_input_grad[1]:
            grad_t = g.sum_to_size(t_meta[0]).neg().to(t_meta[1])  # not in place: may alias grad_x
        return grad_x, grad_t, None, None, None, None, None


def apply(x: Tensor, band: Band, *, slope: float, lo: float = 0.0, hi: float = 1.0,
          hard: Callable[[], Tensor] | None = None, threshold: Tensor | None = None) -> Tensor:
    """Run ``band`` through :class:`SurrogateFunction` (``hard`` set means hard forward mode)."""
    return SurrogateFunction.apply(x, threshold, band, hard, lo, hi, slope)


# --- bands, one per op family ---------------------------------------------------------

def sign_band(eps: float) -> Band:
    """``clamp(x / eps, -1, 1)``: ramp and value are the same tensor."""
    def band(x):
        u = torch.mul(x, 1.0 / eps).clamp_(-1.0, 1.0)
        return u, lambda u: u
    return band


def step_band(k: float, threshold: Tensor | float, direction: int) -> Band:
    """``clamp(direction * (x - t) * k + 1/2, 0, 1)``: a unit jump at ``t`` (direction -1: a fall)."""
    def band(x):
        u = unit_ramp_(torch.sub(x, threshold), direction * k)
        return u, lambda u: u
    return band


def round_band(k: float) -> Band:
    """Boundaries at ``j + 1/2``: ``floor(x) + clamp((x - floor(x) - 1/2) k + 1/2, 0, 1)``."""
    def band(x):
        f = torch.floor(x)
        # (fr - 1/2) k + 1/2 folded into one multiply-add; inf - inf = NaN -> 0 keeps f's inf
        u = torch.sub(x, f).mul_(k).add_(0.5 - 0.5 * k).clamp_(0.0, 1.0).nan_to_num_(0.0)
        return u, lambda u: f.add_(u)
    return band


def integer_band(k: float, shift: float) -> Band:
    """Boundaries at integers: ``round(x) + shift + ramp(x - round(x))`` (floor: shift -1, ceil: 0)."""
    def band(x):
        c = torch.round(x)
        u = unit_ramp_(torch.sub(x, c), k).nan_to_num_(0.0)
        return u, (lambda u: c.add_(u)) if shift == 0 else (lambda u: c.sub_(-shift).add_(u))
    return band


def trunc_band(k: float) -> Band:
    """floor on ``|x|`` with no band at 0, sign restored: ``sign(x) * (round(a) - 1 + ramp(a - round(a)))``.

    ``a = max(|x|, 1/2)``: below 1/2 trunc is 0 and has no jump; there ``round(a) = 0`` and the
    ramp sits on 1 (so the value is 0 and the gradient 0) without a mask.
    """
    def band(x):
        a = torch.abs(x).clamp_min_(0.5)
        c = torch.round(a)
        u = unit_ramp_(torch.sub(a, c), k).nan_to_num_(0.0)
        return u, lambda u: c.add_(u).sub_(1.0).mul_(torch.sign(x))
    return band


def round_decimals_band(k: float, decimals: int) -> Band:
    """round on the grid ``10^-d``: the hard ``round(x, decimals=d)`` plus a correction that is 0 off the bands.

    Writing the value as ``hard + (f + u - round(x p)) / p`` keeps it bit-equal to the hard op
    outside the bands whatever rounding the division would otherwise add.
    """
    p = 10.0 ** decimals
    inner = round_band(k / p)

    def band(x):
        xp = torch.mul(x, p)
        u, assemble = inner(xp)
        def value(u):  # the correction is 0 off the bands; inf - inf (for +-inf) -> 0 keeps the hard inf
            return torch.round(x, decimals=decimals).add_(assemble(u).sub_(torch.round(xp)).nan_to_num_(0.0).div_(p))
        return u, value
    return band

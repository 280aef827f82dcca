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

``compare`` returns the floating surrogate of ``(x cmp threshold)`` (``cmp`` one of
gt, ge, lt, le) in the promoted floating dtype of its operands.  Inputs whose dtype
is not floating carry no gradient: the ops return the hard result for them.

Special values in ``linear`` mode: NaN in gives NaN out; ``±inf`` gives the hard value,
except ``compare`` with ``x`` and ``threshold`` both infinite with the same sign, whose
distance ``x - threshold`` is NaN (so is the surrogate).  Outside the bands the value
equals the hard op's, though the sign of a zero may differ (``round(-0.2)`` is ``+0``);
``hard`` mode and ``export_hard`` are bit-identical, signs of zero included.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import Tensor

from . import kernels
from .errors import EpsError, ModeError

MODES = ("linear", "hard")

# cmp name -> (hard comparison, direction of the jump: +1 rises at the threshold, -1 falls)
COMPARISONS: dict[str, tuple[Callable, int]] = {
    "gt": (torch.gt, +1), "ge": (torch.ge, +1), "lt": (torch.lt, -1), "le": (torch.le, -1),
}
CMP_ALIASES = {">": "gt", ">=": "ge", "<": "lt", "<=": "le", **{c: c for c in COMPARISONS}}


def check_mode(op: str, mode: str) -> None:
    if mode not in MODES:
        raise ModeError(f"sll.{op}: mode={mode!r} is not one of {MODES}")


def eps_limit(op: str, decimals: int = 0) -> float:
    """Largest valid eps: half the spacing of the op's boundaries (inf for a single jump)."""
    if op == "round":
        return 0.5 * 10.0 ** (-decimals)
    if op in ("floor", "ceil", "trunc"):
        return 0.5
    return math.inf


def check_eps(op: str, eps: float, decimals: int = 0) -> float:
    """Return ``eps`` as a float, or raise :class:`EpsError` naming the op and the limit."""
    if isinstance(eps, Tensor) or not isinstance(eps, (int, float)) or isinstance(eps, bool):
        raise EpsError(f"sll.{op}: eps must be a Python float, got {type(eps).__name__}")
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


def _hard_mode(mode: str, hard: Callable[[], Tensor]) -> Callable[[], Tensor] | None:
    return hard if mode == "hard" else None


# --- kernels behind the torch.library ops ---------------------------------------------

def _sign(x: Tensor, *, eps: float, mode: str = "linear") -> Tensor:
    check_mode("sign", mode)
    eps = check_eps("sign", eps)
    if not x.is_floating_point():
        return torch.sign(x)
    return kernels.apply(x, kernels.sign(eps), hard=_hard_mode(mode, lambda: torch.sign(x)))


def _heaviside(x: Tensor, values: Tensor, *, eps: float, mode: str = "linear") -> Tensor:
    check_mode("heaviside", mode)
    eps = check_eps("heaviside", eps)
    if not x.is_floating_point():
        return torch.heaviside(x, values)
    xb = x.expand(torch.broadcast_shapes(x.shape, values.shape))  # heaviside broadcasts x against values
    return kernels.apply(xb, kernels.step(eps, 0.0, +1), hard=_hard_mode(mode, lambda: torch.heaviside(x, values)))


def _round(x: Tensor, *, eps: float, mode: str = "linear", decimals: int = 0) -> Tensor:
    check_mode("round", mode)
    eps = check_eps("round", eps, decimals)
    if not x.is_floating_point():
        return torch.round(x, decimals=decimals) if decimals else torch.round(x)
    if decimals:  # jump height 10^-d over a band of width 2 eps: slope 10^-d / (2 eps)
        return kernels.apply(x, kernels.round_decimals(eps, decimals),
                             hard=_hard_mode(mode, lambda: torch.round(x, decimals=decimals)))
    return kernels.apply(x, kernels.round_half(eps), hard=_hard_mode(mode, lambda: torch.round(x)))


def _integer_op(name: str, hard_op: Callable[[Tensor], Tensor], jump: Callable[[float], kernels.Jump]):
    def impl(x: Tensor, *, eps: float, mode: str = "linear") -> Tensor:
        check_mode(name, mode)
        eps = check_eps(name, eps)
        if not x.is_floating_point():
            return hard_op(x)
        return kernels.apply(x, jump(eps), hard=_hard_mode(mode, lambda: hard_op(x)))
    impl.__name__ = f"_{name}"
    return impl


_floor = _integer_op("floor", torch.floor, lambda eps: kernels.integer(eps, -1.0))
_ceil = _integer_op("ceil", torch.ceil, lambda eps: kernels.integer(eps, 0.0))
_trunc = _integer_op("trunc", torch.trunc, kernels.trunc)


def _compare(x: Tensor, threshold, cmp: str, *, eps: float, mode: str = "linear") -> Tensor:
    check_mode("compare", mode)
    eps = check_eps("compare", eps)
    if cmp not in COMPARISONS:
        raise ValueError(f"sll.compare: cmp={cmp!r} is not one of {tuple(COMPARISONS)}")
    if not x.is_floating_point():  # integer data: no gradient to give, exact hard result
        return hard_compare(x, threshold, cmp)
    direction = COMPARISONS[cmp][1]
    t = threshold if isinstance(threshold, Tensor) else None
    return kernels.apply(x, kernels.step(eps, threshold, direction), threshold=t,
                         hard=_hard_mode(mode, lambda: hard_compare(x, threshold, cmp)))


def _select(s: Tensor, a, b, *, op: str = "where") -> Tensor:
    if op not in ("where", "masked_fill"):
        raise ValueError(f"sll.select: op={op!r} is not 'where' or 'masked_fill'")
    return kernels.select(s, a, b)


def _argmax_onehot(x: Tensor, dim: int, num_classes: int, *, eps: float, mode: str = "linear",
                   largest: bool = True) -> Tensor:
    check_mode("argmax_onehot", mode)
    eps = check_eps("argmax_onehot", eps)
    if not x.is_floating_point():
        return hard_argmax_onehot(x, dim, num_classes, largest)
    hard = hard_argmax_onehot(x, dim, num_classes, largest) if mode == "hard" else None
    return kernels.argmax_onehot(x, dim, num_classes, eps, largest, hard)


def _topk_mask(x: Tensor, k: int, dim: int, *, eps: float, mode: str = "linear", largest: bool = True) -> Tensor:
    check_mode("topk_mask", mode)
    eps = check_eps("topk_mask", eps)
    if not x.is_floating_point():
        return hard_topk_mask(x, k, dim, largest)
    hard = hard_topk_mask(x, k, dim, largest) if mode == "hard" else None
    return kernels.topk_mask(x, k, dim, eps, largest, hard)


def hard_argmax_onehot(x: Tensor, dim: int, num_classes: int, largest: bool = True) -> Tensor:
    """What ``sll::argmax_onehot`` strips to: ``one_hot(argmax(x, dim), num_classes)`` (int64)."""
    index = torch.argmax(x, dim) if largest else torch.argmin(x, dim)
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
    "select": ("select(Tensor s, Tensor a, Tensor b, *, str op='where') -> Tensor", _select),
    "select.ScalarSelf": ("select.ScalarSelf(Tensor s, Scalar a, Tensor b, *, str op='where') -> Tensor", _select),
    "select.ScalarOther": ("select.ScalarOther(Tensor s, Tensor a, Scalar b, *, str op='where') -> Tensor", _select),
    "select.Scalar": ("select.Scalar(Tensor s, Scalar a, Scalar b, *, str op='where') -> Tensor", _select),
    "argmax_onehot": ("argmax_onehot(Tensor x, int dim, int num_classes, *, float eps, str mode='linear', "
                      "bool largest=True) -> Tensor", _argmax_onehot),
    "topk_mask": ("topk_mask(Tensor x, int k, int dim, *, float eps, str mode='linear', bool largest=True) -> Tensor",
                  _topk_mask),
}
for _name, (_schema, _impl) in _SCHEMAS.items():
    _lib.define(_schema)
    _lib.impl(_name, _impl, "CompositeImplicitAutograd")

#: op name -> OpOverloadPacket, e.g. SLL_OPS["sign"] is torch.ops.sll.sign
SLL_OPS = {name: getattr(torch.ops.sll, name) for name in _SCHEMAS if "." not in name}


def is_sll_target(target) -> bool:
    """True for ``torch.ops.sll.*`` packets and their overloads (fx and export spellings)."""
    if isinstance(target, torch._ops.OpOverloadPacket):
        return target._qualified_op_name.startswith("sll::")
    return isinstance(target, torch._ops.OpOverload) and target.namespace == "sll"


# --- the explicit-op API (the seed package's ``sll_core.sign(x, eps=...)``) -------------

DEFAULT_EPS = 1e-2


def sign(x: Tensor, eps: float = DEFAULT_EPS, *, mode: str = "linear") -> Tensor:
    """SLL ``sign``: ``clamp(x / eps, -1, 1)``; slope ``1/eps`` in ``|x| <= eps`` (jump of 2)."""
    return torch.ops.sll.sign(x, eps=eps, mode=mode)


def heaviside(x: Tensor, eps: float = DEFAULT_EPS, *, values: Tensor | float = 0.5, mode: str = "linear") -> Tensor:
    """SLL ``torch.heaviside(x, values)``: ``clamp(x/(2eps) + 1/2, 0, 1)``; the hard value at 0 is ``values``."""
    if not isinstance(values, Tensor):
        values = torch.tensor(values, dtype=x.dtype, device=x.device)
    return torch.ops.sll.heaviside(x, values, eps=eps, mode=mode)


def round(x: Tensor, eps: float = DEFAULT_EPS, *, decimals: int = 0, mode: str = "linear") -> Tensor:  # noqa: A001
    """SLL ``torch.round(x, decimals=d)``: ramps of half-width ``eps`` at the half-way points ``(j + 1/2) 10^-d``."""
    return torch.ops.sll.round(x, eps=eps, mode=mode, decimals=decimals)


def floor(x: Tensor, eps: float = DEFAULT_EPS, *, mode: str = "linear") -> Tensor:
    """SLL ``torch.floor``: ramps of half-width ``eps`` centred on the integers."""
    return torch.ops.sll.floor(x, eps=eps, mode=mode)


def ceil(x: Tensor, eps: float = DEFAULT_EPS, *, mode: str = "linear") -> Tensor:
    """SLL ``torch.ceil``: ramps of half-width ``eps`` centred on the integers."""
    return torch.ops.sll.ceil(x, eps=eps, mode=mode)


def trunc(x: Tensor, eps: float = DEFAULT_EPS, *, mode: str = "linear") -> Tensor:
    """SLL ``torch.trunc``: ramps at the nonzero integers (trunc does not jump at 0)."""
    return torch.ops.sll.trunc(x, eps=eps, mode=mode)


def threshold(x: Tensor, threshold: Tensor | float, eps: float = DEFAULT_EPS, *, cmp: str = ">",
              mode: str = "linear") -> Tensor:
    """SLL ``(x cmp threshold).float()``; ``cmp`` is one of ``> >= < <=`` (or gt, ge, lt, le).

    The gradient reaches ``x`` and, when it is a tensor, ``threshold``.
    """
    if cmp not in CMP_ALIASES:
        raise ValueError(f"sll_fx.threshold: cmp={cmp!r} is not one of {tuple(CMP_ALIASES)}")
    return torch.ops.sll.compare(x, threshold, CMP_ALIASES[cmp], eps=eps, mode=mode)




def hard_compare(x: Tensor, threshold, cmp: str) -> Tensor:
    """The hard value of ``sll::compare``: ``(x cmp threshold)`` as the op's floating dtype.

    ``export_hard`` emits this where an sll compare node is not followed by the user's own
    float cast (the explicit ``sll_fx.threshold``); after ``linearize_module`` the cast is
    the user's and the bare comparison comes back instead.
    """
    hard_op, _ = COMPARISONS[cmp]
    dtype = torch.result_type(x, threshold)
    return hard_op(x, threshold).to(dtype if dtype.is_floating_point else torch.get_default_dtype())


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
    own (its mask's ``compare`` has): ``KeyError``.
    """
    if op in ("argmax_onehot", "topk_mask"):
        x = args[0]
        largest = kwargs.get("largest", True)
        with torch.no_grad():
            d = kernels.argmax_margin(x.detach(), args[1], largest) if op == "argmax_onehot" else \
                kernels.topk_distance(x.detach(), args[1], args[2], largest)
            return torch.zeros_like(x, dtype=torch.bool) if d is None else d.abs() < kwargs["eps"]
    jump = jump_of(op, args, kwargs)
    x = args[0]
    if op == "heaviside":
        x = x.expand(torch.broadcast_shapes(x.shape, args[1].shape))
    with torch.no_grad():
        return jump.distance(x.detach()).abs() < jump.half

"""Op-level tests of ``torch.ops.sll.*`` and the explicit API, against ``../shared/SLL_MATH.md``.

SLL_MATH's surrogate of one jump at ``b`` (left value ``L``, right value ``R``, ``h = R - L``):

    f_eps(x) = f(x)                               if |x - b| > eps
    f_eps(x) = L + h * (x - b + eps) / (2 eps)    if |x - b| <= eps

with derivative ``h / (2 eps)`` inside the band and ``0`` outside.  The references below are
built from that definition directly (``L`` and ``R`` read off the hard op on either side of
the boundary), not from the library's kernels.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
from dataclasses import dataclass
from typing import Callable

import pytest
import torch
from torch import nn
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import sll_fx
from sll_fx import EpsError, ModeError
from _helpers import Fn

MODES = ("linear", "hard")
FLOATS = (torch.float32, torch.float64)
INF, NAN = math.inf, math.nan

PROPERTY_SETTINGS = settings(
    max_examples=50, deadline=None, derandomize=True, database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


# --- the op table ----------------------------------------------------------------------

def _finite(fn: Callable[[float], float]) -> Callable[[float], float]:
    """Distance helper wrapper: NaN stays NaN, +-inf is infinitely far from every boundary."""
    def dist(s: float) -> float:
        if math.isnan(s):
            return NAN
        if math.isinf(s):
            return INF
        return fn(s)
    return dist


def _dist_point(b: float):
    return _finite(lambda s: abs(s - b))


_dist_half = _finite(lambda s: abs(s - (math.floor(s) + 0.5)))          # boundaries k + 1/2
_dist_int = _finite(lambda s: abs(s - math.floor(s + 0.5)))             # boundaries k


@_finite
def _dist_trunc(s: float) -> float:                                     # nonzero integers
    a = abs(s)
    return min(abs(a - max(1.0, math.floor(a))), abs(a - max(1.0, math.ceil(a))))


@dataclass(frozen=True)
class Spec:
    id: str
    op: str                       # the name in error messages: sll.<op>
    call: Callable                # (x, eps, mode) -> Tensor
    hard: Callable                # x -> Tensor, the exact hard op
    boundaries: tuple             # boundaries to probe
    unit: float                   # boundary spacing (1 for single-jump ops); L/R read at b -+ unit/4
    limit: float                  # largest valid eps
    scale: float                  # distances are measured on x * scale (10**d for round(decimals=d))
    dist: Callable                # scaled x -> scaled distance to the nearest boundary
    eps_values: tuple             # eps for the deterministic tests
    hyp_eps: tuple                # eps for the property tests
    decimals: int = 0
    integer_ok: bool = True       # the hard op accepts integer tensors


def _multi(id_, op, call, hard, boundaries, dist, unit=1.0, decimals=0, integer_ok=True):
    limit = 0.5 * unit
    return Spec(id_, op, call, hard, tuple(boundaries), unit, limit, 1.0 / unit if decimals else 1.0,
                dist, (0.1 * unit, 0.4 * unit), tuple(f * unit for f in (1e-3, 0.01, 0.1, 0.3, 0.5)),
                decimals, integer_ok)


def _single(id_, op, call, hard, b):
    return Spec(id_, op, call, hard, (b,), 1.0, INF, 1.0, _dist_point(b), (0.05, 2.0),
                (1e-3, 0.01, 0.1, 1.0, 10.0))


def _heaviside_hard(x):
    return torch.heaviside(x, torch.tensor(0.5, dtype=x.dtype, device=x.device))


CMP_FN = {"gt": torch.gt, "ge": torch.ge, "lt": torch.lt, "le": torch.le}
CMP_SYMBOL = {"gt": ">", "ge": ">=", "lt": "<", "le": "<="}
SCALAR_T, TENSOR_T = 0.75, -0.25


def _cmp_scalar(cmp):
    return _single(
        f"threshold{CMP_SYMBOL[cmp]}{SCALAR_T}", "compare",
        lambda x, eps, mode: sll_fx.threshold(x, SCALAR_T, eps, cmp=CMP_SYMBOL[cmp], mode=mode),
        lambda x: CMP_FN[cmp](x, SCALAR_T).to(x.dtype if x.is_floating_point() else torch.float32),
        SCALAR_T)


def _cmp_tensor(cmp):
    def call(x, eps, mode):
        return torch.ops.sll.compare(x, torch.tensor(TENSOR_T, device=x.device).to(x.dtype), cmp,
                                     eps=eps, mode=mode)

    def hard(x):
        t = torch.tensor(TENSOR_T, device=x.device).to(x.dtype)
        return CMP_FN[cmp](x, t).to(x.dtype if x.is_floating_point() else torch.float32)
    return _single(f"compare.{cmp}.tensor", "compare", call, hard, TENSOR_T)


def _round_d(d):
    unit = 10.0 ** (-d)
    return _multi(
        f"round_d{d}", "round",
        lambda x, eps, mode: sll_fx.round(x, eps, decimals=d, mode=mode),
        lambda x: torch.round(x, decimals=d),
        [(k + 0.5) * unit for k in range(-3, 3)], _dist_half, unit=unit, decimals=d, integer_ok=False)


SPECS = [
    _single("sign", "sign", lambda x, eps, mode: sll_fx.sign(x, eps, mode=mode), torch.sign, 0.0),
    _single("heaviside", "heaviside", lambda x, eps, mode: sll_fx.heaviside(x, eps, mode=mode),
            _heaviside_hard, 0.0),
    _multi("round", "round", lambda x, eps, mode: sll_fx.round(x, eps, mode=mode), torch.round,
           [k + 0.5 for k in range(-3, 3)], _dist_half),
    _round_d(1), _round_d(2), _round_d(-1),
    _multi("floor", "floor", lambda x, eps, mode: sll_fx.floor(x, eps, mode=mode), torch.floor,
           range(-3, 4), _dist_int),
    _multi("ceil", "ceil", lambda x, eps, mode: sll_fx.ceil(x, eps, mode=mode), torch.ceil,
           range(-3, 4), _dist_int),
    _multi("trunc", "trunc", lambda x, eps, mode: sll_fx.trunc(x, eps, mode=mode), torch.trunc,
           [k for k in range(-3, 4) if k != 0], _dist_trunc),
    *[_cmp_scalar(c) for c in CMP_FN],
    *[_cmp_tensor(c) for c in CMP_FN],
]
SPEC_IDS = [s.id for s in SPECS]
SPEC_EPS = [pytest.param(s, e, id=f"{s.id}-eps{e:g}") for s in SPECS for e in s.eps_values]


# --- helpers ---------------------------------------------------------------------------

def points(spec: Spec, offsets_in_eps, eps: float, dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """x = b + o * eps for every probed boundary b and offset o; returns (x, b) as ``dtype``/float64."""
    bs = [float(b) for b in spec.boundaries for _ in offsets_in_eps]
    xs = [float(b) + o * eps for b in spec.boundaries for o in offsets_in_eps]
    return torch.tensor(xs, dtype=dtype), torch.tensor(bs, dtype=torch.float64)


def reference(spec: Spec, x: torch.Tensor, b: torch.Tensor, eps: float):
    """SLL_MATH's f_eps and its derivative at x (float64), for the band around the given b."""
    xd = x.double()
    L = spec.hard(b - spec.unit / 4)
    R = spec.hard(b + spec.unit / 4)
    z = xd - b
    inband = z.abs() <= eps
    value = torch.where(inband, L + (R - L) * (z + eps) / (2 * eps), spec.hard(xd))
    slope = torch.where(z.abs() < eps, (R - L) / (2 * eps), torch.zeros_like(z))
    return value, slope


def value_and_grad(fn, x: torch.Tensor):
    x = x.detach().clone().requires_grad_(True)
    y = fn(x)
    (g,) = torch.autograd.grad(y.sum(), x)
    return y.detach(), g


def assert_same_bits(actual: torch.Tensor, expected: torch.Tensor):
    """Equal shape/dtype, NaN in the same places, equal values and equal sign of zero elsewhere."""
    assert actual.dtype == expected.dtype and actual.shape == expected.shape
    an, en = torch.isnan(actual), torch.isnan(expected)
    assert torch.equal(an, en), (actual, expected)
    a, e = actual[~an], expected[~en]
    assert torch.equal(a, e), (actual, expected)
    assert torch.equal(torch.signbit(a), torch.signbit(e)), (actual, expected)


# --- 1. values and slopes, inside and outside the bands --------------------------------

OUTSIDE = (-3.0, -1.5, -1.2, -1.05, 1.05, 1.2, 1.5, 3.0)   # in units of eps (multi ops: clipped below)
INSIDE = (-0.9, -0.5, -0.1, 0.3, 0.7, 0.95)


def _outside_offsets(spec: Spec, eps: float):
    # keep outside points out of the neighbouring bands too: |o| * eps < unit - eps
    return tuple(o for o in OUTSIDE if spec.limit == INF or abs(o) * eps < spec.unit - eps - 1e-3 * spec.unit)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dtype", FLOATS, ids=str)
@pytest.mark.parametrize("spec,eps", SPEC_EPS)
def test_outside_band_is_exactly_the_hard_op_with_zero_grad(spec, eps, dtype, mode):
    x, _ = points(spec, _outside_offsets(spec, eps), eps, dtype)
    far = torch.tensor([-1e6, -37.0, 1e6, 37.0], dtype=dtype) * (spec.unit if spec.limit != INF else 1.0)
    far = far[[spec.dist(float(v) * spec.scale) > 1.1 * eps * spec.scale for v in far.tolist()]]
    x = torch.cat([x, far])
    y, g = value_and_grad(lambda t: spec.call(t, eps, mode), x)
    assert y.dtype == dtype
    assert torch.equal(y, spec.hard(x))
    assert torch.equal(g, torch.zeros_like(x))


@pytest.mark.parametrize("dtype", FLOATS, ids=str)
@pytest.mark.parametrize("spec,eps", SPEC_EPS)
def test_inside_band_linear_value_and_slope_match_sll_math(spec, eps, dtype):
    x, b = points(spec, INSIDE, eps, dtype)
    y, g = value_and_grad(lambda t: spec.call(t, eps, "linear"), x)
    ref, slope = reference(spec, x, b, eps)
    # in-band points really are off the hard value (the test is not vacuous)
    assert not torch.equal(y, spec.hard(x))
    tol = 1e-6 * spec.unit if dtype == torch.float32 else 1e-12 * spec.unit
    torch.testing.assert_close(y.double(), ref, rtol=1e-5, atol=tol)
    torch.testing.assert_close(g.double(), slope, rtol=1e-6, atol=0)
    # and the slope is the analytic one: +-h/(2 eps) with h the op's jump
    expected = {"sign": 1 / eps}.get(spec.op, spec.unit / (2 * eps))
    sign = -1.0 if spec.id.startswith(("threshold<", "compare.lt", "compare.le")) else 1.0
    torch.testing.assert_close(g.double(), torch.full_like(g, sign * expected, dtype=torch.float64),
                               rtol=1e-6, atol=0)


@pytest.mark.parametrize("dtype", FLOATS, ids=str)
@pytest.mark.parametrize("spec,eps", SPEC_EPS)
def test_hard_mode_in_band_forward_is_hard_op_and_grad_is_linear_grad(spec, eps, dtype):
    x, _ = points(spec, INSIDE, eps, dtype)
    y_hard, g_hard = value_and_grad(lambda t: spec.call(t, eps, "hard"), x)
    _, g_lin = value_and_grad(lambda t: spec.call(t, eps, "linear"), x)
    assert_same_bits(y_hard, spec.hard(x))
    assert torch.equal(g_hard, g_lin)
    assert bool((g_hard != 0).all())


@pytest.mark.parametrize("spec,eps", SPEC_EPS)
def test_band_edges_are_continuous(spec, eps):
    for b in spec.boundaries:
        for side in (-1.0, 1.0):
            edge = torch.tensor([b + side * eps], dtype=torch.float64)
            just_out = torch.tensor([b + side * eps * (1 + 1e-9)], dtype=torch.float64)
            y_edge = spec.call(edge, eps, "linear")
            y_out = spec.call(just_out, eps, "linear")
            hard = spec.hard(edge)
            assert abs(float(y_edge - hard)) <= 1e-4 * spec.unit, (b, side, y_edge, hard)
            assert abs(float(y_out - y_edge)) <= 1e-4 * spec.unit
            assert torch.equal(y_out, spec.hard(just_out))


@pytest.mark.parametrize("dtype", FLOATS, ids=str)
def test_midpoints_at_the_boundaries(dtype):
    def lin(fn, xs, **kw):
        return fn(torch.tensor(xs, dtype=dtype), **kw).tolist()

    ks = [-3.0, -2.0, -1.0, 1.0, 2.0, 3.0]
    assert lin(sll_fx.sign, [0.0, -0.0], eps=0.1) == [0.0, 0.0]
    assert lin(sll_fx.heaviside, [0.0, -0.0], eps=0.1) == [0.5, 0.5]
    assert lin(sll_fx.round, [k + 0.5 for k in range(-3, 3)], eps=0.1) == [k + 0.5 for k in range(-3, 3)]
    assert lin(sll_fx.floor, ks + [0.0], eps=0.1) == [k - 0.5 for k in ks + [0.0]]
    assert lin(sll_fx.ceil, ks + [0.0], eps=0.1) == [k + 0.5 for k in ks + [0.0]]
    assert lin(sll_fx.trunc, ks, eps=0.1) == [k - 0.5 if k > 0 else k + 0.5 for k in ks]
    for cmp in CMP_SYMBOL.values():
        assert lin(sll_fx.threshold, [0.75], threshold=0.75, eps=0.1, cmp=cmp) == [0.5]
    # round(decimals=d): the midpoint of the jump from k 10^-d to (k+1) 10^-d
    torch.testing.assert_close(sll_fx.round(torch.tensor([0.25, -0.35], dtype=dtype), 0.01, decimals=1),
                               torch.tensor([0.25, -0.35], dtype=dtype))
    torch.testing.assert_close(sll_fx.round(torch.tensor([15.0, -25.0], dtype=dtype), 1.0, decimals=-1),
                               torch.tensor([15.0, -25.0], dtype=dtype))


MIDPOINT_EPS = [0.37, 0.1, 0.03, 0.011, 1e-3]


def _midpoint_cases():
    """(op, inputs on its boundaries, the midpoints it must give there)."""
    ks = [-3.0, -2.0, -1.0, 1.0, 2.0, 3.0]
    halves = [k + 0.5 for k in range(-4, 4)]
    return [
        (sll_fx.round, halves, halves),
        (sll_fx.floor, ks, [k - 0.5 for k in ks]),
        (sll_fx.ceil, ks, [k + 0.5 for k in ks]),
        (sll_fx.trunc, ks, [k - 0.5 if k > 0 else k + 0.5 for k in ks]),
        (lambda t, eps: sll_fx.threshold(t, 0.75, eps), [0.75], [0.5]),
    ]


@pytest.mark.parametrize("eps", MIDPOINT_EPS)
@pytest.mark.parametrize("dtype", FLOATS + (torch.float16, torch.bfloat16), ids=str)
def test_midpoints_for_any_eps(dtype, eps):
    """The boundary gets exactly the midpoint whatever eps is (not only where 1/2 - k/2 happens to be exact),
    and the slope: the folded-constant spelling of round's ramp gave 0.49999952 at eps = 0.03 in float32 and
    floor(x), gradient 0, at eps = 1e-3 in bfloat16."""
    for fn, xs, mids in _midpoint_cases():
        x = torch.tensor(xs, dtype=dtype)
        y, g = value_and_grad(lambda t: fn(t, eps), x)
        assert y.tolist() == mids, (fn, eps)
        slope = -0.5 / eps if fn not in (sll_fx.round, sll_fx.floor, sll_fx.ceil, sll_fx.trunc) else 0.5 / eps
        assert torch.equal(g, torch.full_like(x, abs(slope))), (fn, eps, g)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
def test_round_is_hard_just_outside_a_narrow_band_in_low_precision(dtype):
    """|x - b| = 2^-5 > eps = 0.03: the hard value and zero gradient (the folded constant, rounded to
    bfloat16, used to move the band out to there)."""
    x = torch.tensor([0.53125, 1.53125, -0.46875, 0.46875, 2.46875], dtype=dtype)
    y, g = value_and_grad(lambda t: sll_fx.round(t, 0.03), x)
    assert y.tolist() == torch.round(x).tolist()
    assert torch.equal(g, torch.zeros_like(x))


def test_compiled_midpoints_for_any_eps():
    """The same under torch.compile (eps a tensor: the mul/add spelling of the ramp)."""
    x = torch.tensor([k + 0.5 for k in range(-4, 4)])
    for eps in (0.03, 0.011):
        fn = torch.compile(lambda t, e: sll_fx.round(t, e), fullgraph=True, dynamic=False)
        assert fn(x, torch.tensor(eps, dtype=torch.float64)).tolist() == x.tolist()


def _round_two_passes(x: torch.Tensor, eps: float, grad: torch.Tensor):
    """Linear round's value and x-gradient spelled with ``d - 1/2`` in a pass of its own (the eager kernel before the
    fold of ``kernels._half_folded``): the reference the folded ramp must match bit for bit."""
    k = 0.5 / eps
    f = torch.floor(x)
    d = torch.sub(x, f).sub_(0.5)
    u = torch.add(torch.tensor(0.5, dtype=x.dtype), d, alpha=k).clamp_(0.0, 1.0).nan_to_num_(0.0)
    return f + u, torch.ops.aten.hardtanh_backward(grad, u, 0.0, 1.0).mul_(k)


def _round_fold_inputs(dtype: torch.dtype, eps: float) -> torch.Tensor:
    """Dense values (two threads' chunks and vector tails), fine negatives above -1 (where x - floor(x) rounds),
    the boundaries, the band edges and the values next to them in ``dtype``, and special values."""
    g = torch.Generator().manual_seed(0)
    dense = torch.rand(40003, generator=g, dtype=torch.float64) * 40 - 20
    fine = -torch.rand(4099, generator=g, dtype=torch.float64) ** 8
    j = torch.arange(-5, 6, dtype=torch.float64) + 0.5
    edges = torch.cat([j, j - eps, j + eps, j - 0.25, j + 0.25]).to(dtype)
    near = torch.cat([torch.nextafter(edges, edges.new_tensor(INF)), torch.nextafter(edges, edges.new_tensor(-INF))])
    special = torch.tensor([0.0, -0.0, INF, -INF, NAN, 1e-30, -1e-30, 2.0 ** 22 + 0.5, 2.0 ** 23, -2.0 ** 23 - 1,
                            1e30, -1e30], dtype=dtype)
    return torch.cat([dense.to(dtype), fine.to(dtype), edges, near, special])


@pytest.mark.parametrize("eps", [0.5, 0.3, 0.25, 0.2, 0.1, 0.03, 0.011, 1e-3, 1e-7])
@pytest.mark.parametrize("dtype", FLOATS, ids=str)
def test_round_folded_ramp_is_bitwise_the_two_pass_ramp(dtype, eps):
    """Eager linear round folds ``d - 1/2`` into add's constant where that is exact (eps <= 1/4 and a fused add):
    one pass fewer, the same bits in value and gradient (signs of zero and NaN included), on every input."""
    x = _round_fold_inputs(dtype, eps)
    gy = torch.randn(x.shape, generator=torch.Generator().manual_seed(1), dtype=dtype)
    xr = x.clone().requires_grad_()
    y = sll_fx.round(xr, eps)
    (gx,) = torch.autograd.grad(y, xr, gy)
    want_y, want_g = _round_two_passes(x, eps, gy)
    assert_same_bits(y.detach(), want_y)
    assert_same_bits(gx, want_g)


def test_round_folds_only_where_the_fold_is_exact():
    from sll_fx import kernels

    x32 = torch.zeros(3)
    assert kernels._half_folded(5.0, x32) == (-2.0 if kernels._fused_add(torch.float32) else None)
    assert kernels._half_folded(0.5 / 0.3, x32) is None                    # k < 2: d < 1/4 may lie in the band
    assert kernels._half_folded(torch.tensor(5.0), x32) is None            # a tensor k (compiled code)
    assert kernels._half_folded(5.0, x32.half()) is None                   # half precision: not probed
    assert kernels._half_constant(2.0 ** 25, torch.float32) is None        # 1/2 - k/2 not exact in float32
    with torch._subclasses.fake_tensor.FakeTensorMode() as mode:           # traced code keeps its ops
        assert kernels._half_folded(5.0, mode.from_tensor(x32)) is None


def test_round_without_a_fused_add_keeps_the_two_passes():
    """The scalar ATen build (ATEN_CPU_CAPABILITY=default) rounds k d before adding c: no fold, the same bits."""
    code = """if True:
        import torch, sll_fx
        from sll_fx import kernels
        assert not kernels._fused_add(torch.float32) and not kernels._fused_add(torch.float64)
        assert kernels._half_folded(5.0, torch.zeros(1)) is None
        """
    env = {**os.environ, "ATEN_CPU_CAPABILITY": "default"}
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    subprocess.run([sys.executable, "-c", code], env=env, cwd=root, check=True, capture_output=True, text=True)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dtype", FLOATS, ids=str)
def test_trunc_has_no_band_at_zero(dtype, mode):
    x = torch.tensor([-0.55, -0.3, -0.0, 0.0, 0.1, 0.3, 0.55], dtype=dtype)
    y, g = value_and_grad(lambda t: sll_fx.trunc(t, 0.4, mode=mode), x)
    assert torch.equal(y, torch.zeros_like(x))
    assert torch.equal(g, torch.zeros_like(x))
    # floor, by contrast, has a band at 0
    _, gf = value_and_grad(lambda t: sll_fx.floor(t, 0.4, mode=mode), x)
    assert bool((gf[2:5] == 1.25).all())


def test_round_with_eps_half_is_identity_in_linear_mode_and_ste_in_hard_mode():
    x = torch.tensor([-2.7, -1.25, -0.3, 0.1, 0.49, 0.51, 1.9, 3.3], dtype=torch.float64)
    y, g = value_and_grad(lambda t: sll_fx.round(t, 0.5), x)
    torch.testing.assert_close(y, x, rtol=0, atol=1e-12)
    assert torch.equal(g, torch.ones_like(x))
    y, g = value_and_grad(lambda t: sll_fx.round(t, 0.5, mode="hard"), x)
    assert torch.equal(y, torch.round(x))
    assert torch.equal(g, torch.ones_like(x))


def _edges_and_beyond(spec: Spec, eps: float, dtype) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(each boundary b, its band's edges b -+ eps, points just beyond them); eps exact in binary.  The ops measure
    distances to the boundary at the boundary's scale (``x - floor(x)``, ``x - t``): "just beyond" is a few of that
    scale's rounding steps, not the next value after the edge (which may round back onto it)."""
    b = torch.tensor([float(v) for v in spec.boundaries for _ in (-1, 1)], dtype=dtype)
    side = torch.tensor([s for _ in spec.boundaries for s in (-1.0, 1.0)], dtype=dtype)
    edge = b + side * eps
    return b, edge, edge + side * 8 * torch.finfo(dtype).eps * max(1.0, *(abs(float(v)) for v in spec.boundaries))


@pytest.mark.parametrize("kernels", ["eager", "tensor_kernels", "compiled"])
@pytest.mark.parametrize("dtype", FLOATS, ids=str)
@pytest.mark.parametrize("spec", [s for s in SPECS if not s.decimals], ids=lambda s: s.id)
def test_hard_mode_band_edges_get_the_slope(spec, dtype, kernels, monkeypatch, fresh_dynamo):
    """SLL_MATH's band is closed, ``|x - b| <= eps``: in hard mode an input exactly on a band's edge gets the
    band's slope (it got 0: the band was open), the next value of its dtype further out 0."""
    from sll_fx import ops

    eps = 0.25 * spec.unit if spec.limit != INF else 0.25
    b, edge, beyond = _edges_and_beyond(spec, eps, dtype)
    if kernels == "tensor_kernels":
        monkeypatch.setattr(ops, "_eager_cpu", lambda e: False)

    def grad(x):
        e = eps if kernels == "eager" else torch.tensor(eps, dtype=torch.float64)
        fn = (lambda t: spec.call(t, e, "hard"))
        return value_and_grad(torch.compile(fn, fullgraph=True) if kernels == "compiled" else fn, x)[1]

    slope = grad(b)  # (the boundary itself: the middle of its band)
    assert bool((slope != 0).all())
    assert torch.equal(grad(edge), slope)
    assert torch.equal(grad(beyond), torch.zeros_like(beyond))


@pytest.mark.parametrize("mode", ["hard", "ste"])
def test_hard_round_with_eps_half_is_the_ste_at_the_integers_too(mode):
    """eps = 1/2: the bands of round meet at the integers, where the surrogate (the identity) has slope 1 on both
    sides; hard mode is the straight-through estimator there too (its open band gave 0 at every integer, 0
    included), as method="ste" is."""
    x = torch.tensor([-3.0, -2.0, -1.0, -0.0, 0.0, 1.0, 2.0, 0.5, -1.5, 0.25, 1e-30, 7.0], dtype=torch.float64)
    if mode == "hard":
        y, g = value_and_grad(lambda t: sll_fx.round(t, 0.5, mode="hard"), x)
    else:
        y, g = value_and_grad(lambda t: torch.ops.sll.round(t, eps=0.5, mode="ste"), x)
    assert_same_bits(y, torch.round(x))
    assert torch.equal(g, torch.ones_like(x))
    _, g = value_and_grad(lambda t: sll_fx.round(t, 0.5, mode="hard"), torch.tensor([INF, -INF], dtype=torch.float64))
    assert torch.equal(g, torch.zeros(2, dtype=torch.float64))  # (+-inf: in no band)


@pytest.mark.parametrize("kernels", ["eager", "compiled"])
def test_hard_trunc_has_no_band_below_one_half_at_eps_one_half(kernels, fresh_dynamo):
    """trunc jumps at the nonzero integers only: below |x| = 1/2 no band reaches at eps = 1/2 (the closed band gave
    the slope on all of (-1/2, 1/2): its distance there was 1/2, not the 1 - |x| to the nearest boundary, +-1)."""
    x = torch.tensor([0.0, -0.0, 0.3, -0.49, 0.5, -0.5, 0.75, 1.5, -2.5, INF], dtype=torch.float64)
    fn = (lambda t: sll_fx.trunc(t, 0.5, mode="hard"))
    _, g = value_and_grad(torch.compile(fn, fullgraph=True) if kernels == "compiled" else fn, x)
    assert g.tolist() == [0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.0]


# --- 2. hard mode: ties, signed zeros, infinities ---------------------------------------

SPECIAL = [0.0, -0.0, 0.5, -0.5, 1.5, -1.5, 2.5, -2.5, 3.5, 0.25, -0.25, 0.75, 0.15, 0.35, -0.45, 5.0, 15.0,
           25.0, -35.0, 1.0, -1.0, 2.0, -3.0, 0.3, -0.7, 1e-30, -1e-30, INF, -INF]


@pytest.mark.parametrize("dtype", FLOATS, ids=str)
@pytest.mark.parametrize("spec", SPECS, ids=SPEC_IDS)
def test_hard_mode_forward_is_bitwise_the_hard_op(spec, dtype):
    gen = torch.Generator().manual_seed(0)
    x = torch.cat([torch.tensor(SPECIAL, dtype=dtype), torch.randn(64, generator=gen, dtype=dtype) * 3])
    eps = spec.eps_values[0]
    assert_same_bits(spec.call(x, eps, "hard"), spec.hard(x))
    _, g_hard = value_and_grad(lambda t: spec.call(t, eps, "hard"), x)
    _, g_lin = value_and_grad(lambda t: spec.call(t, eps, "linear"), x)
    assert torch.equal(g_hard, g_lin)


def test_hard_round_ties_go_to_even():
    x = torch.tensor([-2.5, -1.5, -0.5, 0.5, 1.5, 2.5, 3.5])
    expected = torch.tensor([-2.0, -2.0, -0.0, 0.0, 2.0, 2.0, 4.0])
    y, g = value_and_grad(lambda t: sll_fx.round(t, 0.1, mode="hard"), x)
    assert_same_bits(y, expected)
    assert torch.equal(g, torch.full_like(x, 5.0))          # the ties are the band centres
    assert_same_bits(sll_fx.round(torch.tensor([0.25, 0.35, 15.0, 25.0], dtype=torch.float64), 0.01,
                                  decimals=1, mode="hard"),
                     torch.round(torch.tensor([0.25, 0.35, 15.0, 25.0], dtype=torch.float64), decimals=1))


@pytest.mark.parametrize("mode", MODES)
def test_hard_values_at_the_boundary_itself(mode):
    if mode == "hard":
        zero = torch.tensor([0.0, -0.0])
        assert_same_bits(sll_fx.sign(zero, 0.1, mode=mode), torch.sign(zero))
        assert_same_bits(sll_fx.heaviside(zero, 0.1, values=0.0, mode=mode), torch.zeros(2))
        assert_same_bits(sll_fx.heaviside(zero, 0.1, values=1.0, mode=mode), torch.ones(2))
        t = torch.tensor([0.75])
        assert sll_fx.threshold(t, 0.75, 0.1, cmp=">", mode=mode).item() == 0.0
        assert sll_fx.threshold(t, 0.75, 0.1, cmp=">=", mode=mode).item() == 1.0
        assert sll_fx.threshold(t, 0.75, 0.1, cmp="<", mode=mode).item() == 0.0
        assert sll_fx.threshold(t, 0.75, 0.1, cmp="<=", mode=mode).item() == 1.0
    else:  # linear: the midpoint whatever `values` says
        assert sll_fx.heaviside(torch.tensor([0.0]), 0.1, values=0.0).item() == 0.5


# --- 3. threshold -------------------------------------------------------------------------

@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("cmp", list(CMP_FN))
def test_threshold_broadcast_and_gradients(cmp, mode):
    eps = 0.2
    gen = torch.Generator().manual_seed(1)
    t = torch.tensor([-1.0, 0.0, 0.5, 2.0], dtype=torch.float64, requires_grad=True)
    # rows: far below the threshold, in its band, at the threshold itself
    x = (t.detach() + torch.tensor([[-1.0], [-0.1], [0.0]], dtype=torch.float64)).requires_grad_(True)
    assert x.shape == (3, 4)
    w = torch.rand(3, 4, generator=gen, dtype=torch.float64) + 0.5
    y = sll_fx.threshold(x, t, eps, cmp=CMP_SYMBOL[cmp], mode=mode)
    assert y.shape == (3, 4) and y.dtype == torch.float64
    (y * w).sum().backward()
    direction = 1.0 if cmp in ("gt", "ge") else -1.0
    inband = ((x.detach() - t.detach()).abs() < eps).double()
    expected_gx = w * inband * direction / (2 * eps)
    torch.testing.assert_close(x.grad, expected_gx, rtol=1e-12, atol=0)
    torch.testing.assert_close(t.grad, -x.grad.sum(0), rtol=1e-12, atol=0)
    # gt/ge: d/dt = -1/(2eps) per in-band element; lt/le: +1/(2eps)
    torch.testing.assert_close(t.grad, -direction * (w * inband).sum(0) / (2 * eps), rtol=1e-12, atol=0)
    hard = CMP_FN[cmp](x.detach(), t.detach()).double()
    if mode == "hard":
        assert torch.equal(y.detach(), hard)
    else:
        assert torch.equal(y.detach()[0], hard[0])
        assert bool((y.detach()[2] == 0.5).all())


@pytest.mark.parametrize("mode", MODES)
def test_threshold_larger_than_x_broadcasts_and_grad_sums_back(mode):
    x = torch.tensor([0.0, 0.05, -3.0, 3.0], requires_grad=True)
    t = torch.zeros(3, 4, requires_grad=True)
    y = sll_fx.threshold(x, t, 0.1, cmp=">", mode=mode)
    assert y.shape == (3, 4)
    y.sum().backward()
    assert torch.equal(x.grad, torch.tensor([15.0, 15.0, 0.0, 0.0]))
    assert torch.equal(t.grad, -torch.tensor([5.0, 5.0, 0.0, 0.0]).expand(3, 4))


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("cmp", list(CMP_SYMBOL.values()) + list(CMP_FN))
def test_threshold_scalar_and_dtypes(cmp, mode):
    for dtype in (torch.float32, torch.float64):
        x = torch.tensor([-2.0, 0.0, 0.9, 1.0, 1.05, 4.0], dtype=dtype)
        for thr in (1, 1.0, torch.tensor(1.0, dtype=dtype), torch.ones(6, dtype=dtype)):
            y = sll_fx.threshold(x, thr, 0.2, cmp=cmp, mode=mode)
            assert y.dtype == dtype and y.shape == x.shape
            name = {">": "gt", ">=": "ge", "<": "lt", "<=": "le"}.get(cmp, cmp)
            hard = CMP_FN[name](x, thr).to(dtype)
            far = torch.tensor([True, True, False, False, False, True])
            assert torch.equal(y[far], hard[far])
            if mode == "hard":
                assert torch.equal(y, hard)
            else:
                assert y[3].item() == 0.5
    # a 0-dim float64 threshold does not promote a float32 x (torch.result_type)
    y = sll_fx.threshold(torch.zeros(3), torch.tensor(1.0, dtype=torch.float64), 0.1, cmp=cmp, mode=mode)
    assert y.dtype == torch.float32
    # a float32 x and a float64 1-d threshold: promoted like torch does
    y = sll_fx.threshold(torch.zeros(3), torch.ones(3, dtype=torch.float64), 0.1, cmp=cmp, mode=mode)
    assert y.dtype == torch.float64


def test_threshold_integer_input_is_hard_and_floating():
    x = torch.tensor([-1, 0, 1, 2, 3])
    for cmp, fn in CMP_FN.items():
        for mode in MODES:
            for thr in (1, 1.5):
                y = sll_fx.threshold(x, thr, 0.3, cmp=cmp, mode=mode)
                assert y.dtype == torch.float32
                assert torch.equal(y, fn(x, thr).float())


# --- 4. property tests ------------------------------------------------------------------

def _grid():
    return st.builds(lambda k, f: k + f, st.integers(-50, 50),
                     st.sampled_from([0.0, 0.5, -0.5, 0.25, 0.1, 0.3, 0.45, 0.55, 0.05, 0.95, 0.999, 1e-3]))


def float_values(width: int):
    grid = _grid()
    return st.one_of(
        st.floats(width=width),                               # anything, NaN and +-inf included
        st.floats(-20, 20, width=width),
        st.sampled_from(SPECIAL + [NAN, 1e308, -1e308, 3e38]),
        grid, grid.map(lambda v: v / 10), grid.map(lambda v: v / 100), grid.map(lambda v: v * 10),
    )


@st.composite
def inputs(draw, spec: Spec, allow_nan=True):
    dtype = draw(st.sampled_from(FLOATS))
    width = 32 if dtype == torch.float32 else 64
    vals = draw(st.lists(float_values(width), min_size=1, max_size=8))
    if not allow_nan:
        vals = [v for v in vals if not math.isnan(v)] or [0.0]
    eps = draw(st.sampled_from(spec.hyp_eps))
    return torch.tensor(vals, dtype=dtype), eps


def _far_mask(spec: Spec, x: torch.Tensor, eps: float) -> torch.Tensor:
    """Elements farther than eps (plus float slack) from every boundary of the op."""
    fe = torch.finfo(x.dtype).eps
    keep = []
    for v in x.double().tolist():
        s = v * spec.scale
        d = spec.dist(s)
        slack = 4 * fe * (max(1.0, abs(s)) if math.isfinite(s) else 1.0)
        keep.append(bool(d > eps * spec.scale * (1 + 1e-6) + slack))
    return torch.tensor(keep, dtype=torch.bool)


@pytest.mark.parametrize("spec", SPECS, ids=SPEC_IDS)
@PROPERTY_SETTINGS
@given(data=st.data())
def test_property_hard_mode_is_bitwise_hard_op(spec, data):
    x, eps = data.draw(inputs(spec))
    assert_same_bits(spec.call(x, eps, "hard"), spec.hard(x))


@pytest.mark.parametrize("spec", SPECS, ids=SPEC_IDS)
@PROPERTY_SETTINGS
@given(data=st.data())
def test_property_linear_equals_hard_away_from_boundaries(spec, data):
    x, eps = data.draw(inputs(spec))
    far = _far_mask(spec, x, eps)
    y, g = value_and_grad(lambda t: spec.call(t, eps, "linear"), x)
    assert y.dtype == x.dtype
    assert_values_equal(y[far], spec.hard(x)[far])
    assert torch.equal(g[far], torch.zeros_like(g[far]))


@pytest.mark.parametrize("dtype", FLOATS, ids=str)
@pytest.mark.parametrize("spec", SPECS, ids=SPEC_IDS)
def test_linear_nan_infinities_and_huge_values(spec, dtype):
    """NaN -> NaN; +-inf -> the hard value; huge finite values outside every band -> the hard value."""
    big = torch.finfo(dtype).max
    x = torch.tensor([NAN, INF, -INF, big, -big, big / 3, -big / 7], dtype=dtype)
    eps = spec.eps_values[0]
    y = spec.call(x, eps, "linear")
    assert bool(torch.isnan(y[0]))
    assert_same_bits(y[1:3], spec.hard(x[1:3]))
    far = torch.tensor([spec.dist(v * spec.scale) > eps * spec.scale for v in x[3:].double().tolist()])
    assert_values_equal(y[3:][far], spec.hard(x[3:])[far])


def assert_values_equal(actual: torch.Tensor, expected: torch.Tensor):
    assert actual.shape == expected.shape
    assert torch.equal(torch.isnan(actual), torch.isnan(expected)), (actual, expected)
    ok = ~torch.isnan(expected)
    assert torch.equal(actual[ok], expected[ok]), (actual, expected)


@pytest.mark.parametrize("spec", SPECS, ids=SPEC_IDS)
@PROPERTY_SETTINGS
@given(data=st.data())
def test_property_nan_in_nan_out_and_inf_gives_hard_value(spec, data):
    x, eps = data.draw(inputs(spec))
    extra = data.draw(st.lists(st.sampled_from([NAN, INF, -INF]), min_size=1, max_size=4))
    x = torch.cat([x, torch.tensor(extra, dtype=x.dtype)])
    y = spec.call(x, eps, "linear")
    nan, inf = torch.isnan(x), torch.isinf(x)
    assert bool(torch.isnan(y[nan]).all()), (x, y)
    assert_same_bits(y[inf], spec.hard(x)[inf])


@pytest.mark.parametrize("cmp", list(CMP_FN))
@PROPERTY_SETTINGS
@given(data=st.data())
def test_property_compare_with_drawn_thresholds(cmp, data):
    dtype = data.draw(st.sampled_from(FLOATS))
    width = 32 if dtype == torch.float32 else 64
    x = torch.tensor(data.draw(st.lists(float_values(width), min_size=1, max_size=8)), dtype=dtype)
    t_val = data.draw(st.floats(-100, 100, width=width))
    eps = data.draw(st.sampled_from([1e-3, 0.1, 1.0, 10.0]))
    for thr in (t_val, torch.tensor(t_val, dtype=dtype)):
        assert_same_bits(torch.ops.sll.compare(x, thr, cmp, eps=eps, mode="hard"), CMP_FN[cmp](x, thr).to(dtype))
        y = torch.ops.sll.compare(x, thr, cmp, eps=eps, mode="linear")
        d = (x.double() - t_val).abs()
        mag = torch.clamp(x.double().abs(), min=max(1.0, abs(t_val))).nan_to_num(posinf=1.0)
        far = d > eps * (1 + 1e-6) + 4 * torch.finfo(dtype).eps * mag
        far &= ~torch.isnan(d)
        assert torch.equal(y[far], CMP_FN[cmp](x, thr).to(dtype)[far])
        assert bool(torch.isnan(y[torch.isnan(x)]).all())


# --- 5. opcheck -----------------------------------------------------------------------------

def _opcheck_cases():
    x = lambda: (torch.randn(3, 4, generator=torch.Generator().manual_seed(2)) * 2).requires_grad_(True)  # noqa: E731
    t = lambda: torch.randn(4, generator=torch.Generator().manual_seed(3)).requires_grad_(True)  # noqa: E731
    ops = torch.ops.sll
    return [
        ("sign", ops.sign.default, lambda: (x(),), {}),
        ("heaviside", ops.heaviside.default, lambda: (x(), torch.tensor(0.5)), {}),
        ("round", ops.round.default, lambda: (x(),), {}),
        ("round_d1", ops.round.default, lambda: (x(),), {"decimals": 1, "eps": 0.03}),
        ("floor", ops.floor.default, lambda: (x(),), {}),
        ("ceil", ops.ceil.default, lambda: (x(),), {}),
        ("trunc", ops.trunc.default, lambda: (x(),), {}),
        ("compare.gt", ops.compare.default, lambda: (x(), t(), "gt"), {}),
        ("compare.le", ops.compare.default, lambda: (x(), t(), "le"), {}),
        ("compare.Scalar.ge", ops.compare.Scalar, lambda: (x(), 0.25, "ge"), {}),
        ("compare.Scalar.lt", ops.compare.Scalar, lambda: (x(), 0.25, "lt"), {}),
        # the Tensor-eps overloads (what linearize_module's graphs call, eps from a buffer)
        ("sign.T", ops.sign.eps_tensor, lambda: (x(),), {"eps": _teps(0.3)}),
        ("heaviside.T", ops.heaviside.eps_tensor, lambda: (x(), torch.tensor(0.5)), {"eps": _teps(0.3)}),
        ("round.T", ops.round.eps_tensor, lambda: (x(),), {"eps": _teps(0.3)}),
        ("round_d1.T", ops.round.eps_tensor, lambda: (x(),), {"decimals": 1, "eps": _teps(0.03)}),
        ("floor.T", ops.floor.eps_tensor, lambda: (x(),), {"eps": _teps(0.3)}),
        ("ceil.T", ops.ceil.eps_tensor, lambda: (x(),), {"eps": _teps(0.3)}),
        ("trunc.T", ops.trunc.eps_tensor, lambda: (x(),), {"eps": _teps(0.3)}),
        ("compare.gt.T", ops.compare.eps_tensor, lambda: (x(), t(), "gt"), {"eps": _teps(0.3)}),
        ("compare.Scalar.le.T", ops.compare.Scalar_eps_tensor, lambda: (x(), 0.25, "le"), {"eps": _teps(0.3)}),
    ]


def _teps(value):
    return torch.tensor(value, dtype=torch.float64)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name,op,args,kwargs", _opcheck_cases(), ids=[c[0] for c in _opcheck_cases()])
def test_opcheck(name, op, args, kwargs, mode):
    kw = {"eps": 0.3, "mode": mode, **kwargs}
    torch.library.opcheck(op, args(), kw)


def test_every_overload_is_opchecked():
    covered = {str(c[1]) for c in _opcheck_cases()}
    for name in ("sign", "heaviside", "round", "floor", "ceil", "trunc", "compare"):
        packet = getattr(torch.ops.sll, name)
        for overload in packet.overloads():
            assert str(getattr(packet, overload)) in covered


# --- 6. meta tensors, dtypes, integer inputs -------------------------------------------------

@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.int64],
                         ids=str)
@pytest.mark.parametrize("spec", SPECS, ids=SPEC_IDS)
def test_meta_tensors_have_the_hard_ops_shape_and_dtype(spec, dtype, mode):
    if not dtype.is_floating_point and not spec.integer_ok:
        pytest.skip("torch.round(decimals=d) has no integer kernel")
    x = torch.empty(2, 3, 5, device="meta", dtype=dtype)
    y = spec.call(x, spec.eps_values[0], mode)
    h = spec.hard(x)
    assert y.device.type == "meta"
    assert y.shape == h.shape == (2, 3, 5)
    assert y.dtype == h.dtype


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("spec", SPECS, ids=SPEC_IDS)
def test_floating_dtypes_are_kept(spec, dtype, mode):
    eps = spec.eps_values[0]
    x, _ = points(spec, (-3.0, -0.5, 0.5, 3.0), eps, dtype)
    y, g = value_and_grad(lambda t: spec.call(t, eps, mode), x)
    assert y.dtype == dtype and g.dtype == dtype
    if spec.decimals == 0 or dtype == torch.float64:
        far = torch.tensor([spec.dist(v * spec.scale) > 1.5 * eps * spec.scale for v in x.double().tolist()])
        assert torch.equal(y[far], spec.hard(x)[far])
        assert bool((g[~far] != 0).all())


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.int16, torch.uint8], ids=str)
@pytest.mark.parametrize("spec", [s for s in SPECS if s.integer_ok], ids=[s.id for s in SPECS if s.integer_ok])
def test_integer_inputs_give_the_exact_hard_result(spec, dtype, mode):
    lo = 0 if dtype == torch.uint8 else -5
    x = torch.arange(lo, 6).to(dtype)
    if spec.op == "heaviside":
        y = torch.ops.sll.heaviside(x, torch.tensor(7, dtype=dtype), eps=0.1, mode=mode)
        h = torch.heaviside(x, torch.tensor(7, dtype=dtype))
    else:
        y, h = spec.call(x, spec.eps_values[0], mode), spec.hard(x)
    assert y.dtype == h.dtype
    assert torch.equal(y, h)


@pytest.mark.parametrize("mode", MODES)
def test_heaviside_broadcasts_values_like_the_hard_op(mode):
    """torch.heaviside broadcasts x against values; the op's shape must be the hard op's."""
    x = torch.tensor([-1.0, 0.0, 0.05, 1.0])
    values = torch.tensor([[0.0], [1.0], [0.5]])
    y = torch.ops.sll.heaviside(x, values, eps=0.1, mode=mode)
    assert y.shape == torch.heaviside(x, values).shape == (3, 4)
    ym = torch.ops.sll.heaviside(x.to("meta"), values.to("meta"), eps=0.1, mode=mode)
    assert ym.shape == (3, 4)


# --- 7. gradcheck ----------------------------------------------------------------------------

@pytest.mark.parametrize("spec,eps", SPEC_EPS)
def test_gradcheck_linear_away_from_band_edges(spec, eps):
    # 1.2 eps: outside the band and, for eps <= 0.4 * spacing, 0.2 eps clear of the next band
    x, _ = points(spec, (-1.2, -0.5, 0.3, 1.2), eps, torch.float64)
    x = x.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda t: spec.call(t, eps, "linear"), (x,), eps=1e-6, atol=1e-6)


@pytest.mark.parametrize("cmp", list(CMP_FN))
def test_gradcheck_compare_through_x_and_threshold(cmp):
    t = torch.tensor([-1.0, 0.0, 0.5, 2.0], dtype=torch.float64)
    x = (t + torch.tensor([[0.05], [-0.12], [0.5], [-0.3]], dtype=torch.float64)).requires_grad_(True)
    t.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a, b: torch.ops.sll.compare(a, b, cmp, eps=0.2), (x, t),
                                    eps=1e-6, atol=1e-6)


# --- 8. errors -------------------------------------------------------------------------------

OP_CALLS = {
    "sign": lambda x, eps, mode="linear": torch.ops.sll.sign(x, eps=eps, mode=mode),
    "heaviside": lambda x, eps, mode="linear": torch.ops.sll.heaviside(x, torch.tensor(0.5), eps=eps, mode=mode),
    "round": lambda x, eps, mode="linear": torch.ops.sll.round(x, eps=eps, mode=mode),
    "floor": lambda x, eps, mode="linear": torch.ops.sll.floor(x, eps=eps, mode=mode),
    "ceil": lambda x, eps, mode="linear": torch.ops.sll.ceil(x, eps=eps, mode=mode),
    "trunc": lambda x, eps, mode="linear": torch.ops.sll.trunc(x, eps=eps, mode=mode),
    "compare": lambda x, eps, mode="linear": torch.ops.sll.compare(x, 0.5, "gt", eps=eps, mode=mode),
}
INPUTS = {"float": lambda: torch.zeros(3), "int": lambda: torch.zeros(3, dtype=torch.int64),
          "meta": lambda: torch.empty(3, device="meta")}


@pytest.mark.parametrize("inp", list(INPUTS))
@pytest.mark.parametrize("eps", [0.0, -0.0, -0.1, -1e-12, NAN, INF, -INF], ids=str)
@pytest.mark.parametrize("op", list(OP_CALLS))
def test_non_positive_or_non_finite_eps_is_an_eps_error(op, eps, inp):
    with pytest.raises(EpsError, match=rf"sll\.{op}\b.*positive") as info:
        OP_CALLS[op](INPUTS[inp](), eps)
    assert isinstance(info.value, ValueError)


WIDE = [
    ("round", 0, 0.51, "0.5"), ("round", 0, 1.0, "0.5"), ("floor", 0, 0.6, "0.5"), ("ceil", 0, 0.75, "0.5"),
    ("trunc", 0, 10.0, "0.5"), ("round", 1, 0.051, "0.05"), ("round", 2, 0.0051, "0.005"),
    ("round", -1, 5.5, "5"), ("round", 3, 0.001, "0.0005"),
]


@pytest.mark.parametrize("inp", ["float", "meta"])
@pytest.mark.parametrize("op,decimals,eps,limit", WIDE)
def test_too_wide_eps_names_the_op_and_the_limit(op, decimals, eps, limit, inp):
    x = INPUTS[inp]()
    with pytest.raises(EpsError) as info:
        if op == "round":
            sll_fx.round(x, eps, decimals=decimals)
        else:
            getattr(sll_fx, op)(x, eps)
    msg = str(info.value)
    assert f"sll.{op}" in msg
    assert f"eps <= {limit}" in msg and f"> {limit}" in msg
    if decimals:
        assert f"decimals={decimals}" in msg


@pytest.mark.parametrize("op,decimals,eps", [("round", 0, 0.5), ("floor", 0, 0.5), ("ceil", 0, 0.5),
                                              ("trunc", 0, 0.5), ("round", 1, 0.05), ("round", -1, 5.0)])
def test_eps_at_the_limit_is_accepted(op, decimals, eps):
    x = torch.linspace(-3, 3, 13, dtype=torch.float64)
    kw = {"decimals": decimals} if decimals else {}
    y = getattr(sll_fx, op)(x, eps, **kw)
    assert y.shape == x.shape and bool(torch.isfinite(y).all())


@pytest.mark.parametrize("op", ["sign", "heaviside", "compare"])
def test_single_jump_ops_have_no_upper_eps_limit(op):
    x = torch.tensor([-2e6, 0.0, 2e6], dtype=torch.float64)
    y = OP_CALLS[op](x, 1e6)
    ref = {"sign": [-1.0, 0.0, 1.0], "heaviside": [0.0, 0.5, 1.0], "compare": [0.0, 0.5 - 0.5 / 2e6, 1.0]}[op]
    torch.testing.assert_close(y, torch.tensor(ref, dtype=torch.float64), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("mode", ["soft", "", "Linear", "HARD", "STE", "sll"])  # "ste"/"sigmoid" are op modes now (method=, issue 5)
@pytest.mark.parametrize("op", list(OP_CALLS))
def test_bad_mode_is_a_mode_error(op, mode):
    for make in INPUTS.values():
        with pytest.raises(ModeError, match=rf"sll\.{op}\b.*{mode!r}") as info:
            OP_CALLS[op](make(), 0.1, mode)
        assert isinstance(info.value, ValueError)


@pytest.mark.parametrize("cmp", ["eq", "ne", "==", ">", "GT", ""])
def test_bad_cmp_is_a_value_error(cmp):
    x = torch.zeros(3)
    with pytest.raises(ValueError, match="cmp"):
        torch.ops.sll.compare(x, 0.5, cmp, eps=0.1)
    with pytest.raises(ValueError, match="cmp"):
        torch.ops.sll.compare(x, torch.tensor(0.5), cmp, eps=0.1)


@pytest.mark.parametrize("cmp", ["==", "!=", "=>", "eq", "", "gt "])
def test_threshold_bad_cmp_is_a_value_error(cmp):
    with pytest.raises(ValueError, match="cmp"):
        sll_fx.threshold(torch.zeros(3), 0.5, 0.1, cmp=cmp)


# --- 9. the seed documents' disagreements, settled by SLL_MATH ---------------------------------

@pytest.mark.parametrize("mode", MODES)
def test_sign_gradient_at_zero_is_one_over_eps_not_half(mode):
    _, g = value_and_grad(lambda t: sll_fx.sign(t, 1e-3, mode=mode), torch.tensor([0.0]))
    torch.testing.assert_close(g, torch.tensor([1000.0]))
    assert abs(g.item() - 500.0) > 1.0


@pytest.mark.parametrize("mode", MODES)
def test_round_has_no_band_around_integers(mode):
    _, g = value_and_grad(lambda t: sll_fx.round(t, 0.1, mode=mode), torch.tensor([1.0, 0.0, -2.0, 0.95]))
    assert torch.equal(g, torch.zeros(4))
    y, g = value_and_grad(lambda t: sll_fx.round(t, 0.1, mode=mode), torch.tensor([0.001, 0.5, 0.999]))
    torch.testing.assert_close(g, torch.tensor([0.0, 5.0, 0.0]))
    expected = [0.0, 0.0, 1.0] if mode == "hard" else [0.0, 0.5, 1.0]
    torch.testing.assert_close(y, torch.tensor(expected))


# --- 10. the Tensor-eps overloads (what linearize_module's graphs call) -------------------------

_OFFSETS = (-2.0, -1.0, -0.7, -0.3, 0.0, 0.3, 0.7, 1.0, 2.0)   # in units of eps; +-1: the band's edges


def _probe_x(spec: Spec, eps: float, dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """Every boundary at offsets inside, at and outside its band, plus the special values; and which
    elements sit on a band edge (where one rounding decides between the slope and 0)."""
    x, _ = points(spec, _OFFSETS, eps, dtype)
    edge = torch.tensor([abs(o) == 1.0 for _ in spec.boundaries for o in _OFFSETS] + [False] * 6)
    return torch.cat([x, torch.tensor([INF, -INF, NAN, 0.0, -0.0, 12.34], dtype=dtype)]), edge


@pytest.mark.parametrize("kernels", ["eager_read", "tensor_kernels"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("spec", SPECS, ids=SPEC_IDS)
def test_tensor_eps_computes_what_the_float_eps_does(spec, mode, dtype, kernels, monkeypatch):
    """In eager mode on the CPU a tensor eps is read and the float kernels run: the same bits.  The
    tensor kernels (compiled code, accelerators; forced here) agree to rounding."""
    from sll_fx import ops

    if kernels == "tensor_kernels":
        monkeypatch.setattr(ops, "_eager_cpu", lambda eps: False)
    for eps in spec.eps_values:
        x, edge = _probe_x(spec, eps, dtype)
        y_f, g_f = value_and_grad(lambda t: spec.call(t, eps, mode), x)
        y_t, g_t = value_and_grad(lambda t: spec.call(t, torch.tensor(eps, dtype=torch.float64), mode), x)
        if kernels == "eager_read":
            assert_same_bits(y_t, y_f)
            assert_same_bits(g_t, g_f)
        else:
            torch.testing.assert_close(y_t, y_f, equal_nan=True)
            torch.testing.assert_close(g_t[~edge], g_f[~edge], equal_nan=True)
            outside = ~torch.isnan(y_f) & (g_f == 0)
            assert torch.equal(y_t[outside], y_f[outside])   # off the bands: the hard value, exactly


def test_the_packet_picks_the_overload_by_the_type_of_eps():
    """Tensor-eps overloads come first: a 0-dim tensor would also convert to a float argument."""
    x, e = torch.randn(3), torch.tensor(0.1, dtype=torch.float64)
    resolve = torch._C._jit_resolve_packet
    for name, args in [("sign", ()), ("round", ()), ("floor", ()), ("ceil", ()), ("trunc", ()),
                       ("heaviside", (torch.tensor(0.5),)), ("argmax_onehot", (-1, 3)), ("topk_mask", (1, -1))]:
        assert resolve(f"sll::{name}", x, *args, eps=e) == "eps_tensor", name
        assert resolve(f"sll::{name}", x, *args, eps=0.1) == "default", name
    assert resolve("sll::compare", x, torch.tensor(0.2), "gt", eps=e) == "eps_tensor"
    assert resolve("sll::compare", x, torch.tensor(0.2, requires_grad=True), "gt", eps=0.1) == "default"
    assert resolve("sll::compare", x, 0.2, "gt", eps=e) == "Scalar_eps_tensor"
    assert resolve("sll::compare", x, 0.2, "gt", eps=0.1) == "Scalar"


def test_a_tensor_eps_under_fake_tensors_stays_a_tensor():
    """What torch.compile traces: the value is unknown, so it is neither read nor validated."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode() as mode:
        x = mode.from_tensor(torch.randn(4, requires_grad=True))
        for eps in (torch.tensor(0.1, dtype=torch.float64), torch.tensor(7.0, dtype=torch.float64)):
            e = mode.from_tensor(eps)
            for op in ("sign", "round", "floor"):
                y = getattr(torch.ops.sll, op)(x, eps=e)
                assert y.shape == x.shape and y.dtype == x.dtype
            y.sum().backward()


def test_round_with_decimals_whose_spacing_underflows_says_so():
    """decimals=400: the limit 0.5 * 10**-400 is 0.0, and the message said "its boundaries are 0 apart ... use
    eps <= 0" (audit)."""
    with pytest.raises(EpsError, match=r"^sll\.round: decimals=400 is out of range: round scales x by 10\*\*400, which "
                                       r"overflows float64 \(torch\.round\(x, decimals=400\) is NaN for every x\), so it "
                                       r"has no band to fit an eps in\nFix: use -308 <= decimals <= 308$"):
        sll_fx.round(torch.randn(3), 1e-300, decimals=400)
    with pytest.raises(EpsError, match=r"use eps <= 5e-309$"):  # (the limit itself where it is a float)
        sll_fx.round(torch.randn(3), 1e-300, decimals=308)


@pytest.mark.parametrize("decimals", [-400, -309, 309, 315])
@pytest.mark.parametrize("mode", ["linear", "hard"])
def test_round_with_decimals_out_of_range_is_an_eps_error_naming_the_range(decimals, mode):
    """sll_fx.round(x, 0.1, decimals=-400) raised "OverflowError: (34, 'Numerical result out of range')" from Python's
    10.0 ** 400, and decimals=315 (a limit 5e-316 that fits a float) the same from the kernel's scale (audit).
    torch.round itself is NaN for every x there (it scales x by inf)."""
    x = torch.tensor([0.3, -2.7, 0.0, 1e300], dtype=torch.float64)
    assert torch.round(x, decimals=decimals).isnan().all()
    message = (rf"^sll\.round: decimals={decimals} is out of range: round scales x by 10\*\*{abs(decimals)}, which "
               r"overflows float64 .*\nFix: use -308 <= decimals <= 308$")
    for eps in (0.1, 1e-320, torch.tensor(0.1, dtype=torch.float64)):
        with pytest.raises(EpsError, match=message):
            sll_fx.round(x, eps, decimals=decimals, mode=mode)
    with pytest.raises(ValueError):  # (an EpsError is a ValueError)
        torch.ops.sll.round(x, eps=0.1, decimals=decimals)


@pytest.mark.parametrize("decimals,eps", [(39, 1e-40), (45, 1e-46), (-39, 1e6), (-45, 1e7), (-300, 1e262)])
@pytest.mark.parametrize("mode", ["linear", "hard"])
def test_round_with_decimals_beyond_float32_gives_torchs_nan(decimals, eps, mode):
    """In float32, 10**|decimals| beyond 3.4e38 is inf in ATen's scale (torch.round is NaN for every x); the kernel's
    torch.full((), 1e45, dtype=torch.float32) raised "RuntimeError: value cannot be converted to type float without
    overflow" (audit)."""
    x = torch.tensor([0.3, -2.7, 0.0, 2e38], requires_grad=True)
    y = sll_fx.round(x, eps, decimals=decimals, mode=mode)
    assert torch.round(x.detach(), decimals=decimals).isnan().all() and y.isnan().all()
    y.sum().backward()
    assert torch.equal(x.grad, torch.zeros(4))


@pytest.mark.parametrize("eps,match", [
    (torch.tensor(0.7, dtype=torch.float64), "too wide"), (torch.tensor(0.0), "positive"),
    (torch.tensor(NAN), "positive"), (torch.tensor([0.1, 0.2]), "0-dim"), (torch.tensor(1), "floating"),
], ids=["too_wide", "zero", "nan", "not_0dim", "integer"])
def test_a_bad_tensor_eps_is_an_eps_error_where_its_value_is_at_hand(eps, match):
    with pytest.raises(EpsError, match=rf"sll\.round\b.*{match}"):
        torch.ops.sll.round(torch.zeros(3), eps=eps)


@pytest.mark.parametrize("call,message", [
    (lambda x: sll_fx.round(x, "0.1"), r"sll_fx\.round: eps='0\.1' must be a float or a 0-dim floating tensor, got "
                                       r"str\nFix: pass eps=0\.1$"),
    (lambda x: sll_fx.sign(x, [0.1]), r"sll_fx\.sign: eps=\[0\.1\] must be a float .*, got list\nFix: pass eps=0\.01$"),
    (lambda x: sll_fx.threshold(x, 0.3, "0.1"), r"sll_fx\.threshold: eps='0\.1' must be a float"),
    (lambda x: sll_fx.threshold(x, "0.3"), r"sll_fx\.threshold: threshold='0\.3' must be a number or a tensor, got "
                                           r"str\nFix: pass threshold=0\.3$"),
    (lambda x: sll_fx.round(x, 0.01, decimals=1.5), r"sll_fx\.round: decimals=1\.5 must be an int, got float\nFix: "
                                                    r"pass decimals=1$"),
    (lambda x: sll_fx.heaviside(x, 0.1, values="a"), r"sll_fx\.heaviside: values='a' must be a number or a tensor, "
                                                     r"got str\nFix: pass values=0\.5$"),
], ids=["round_eps_str", "sign_eps_list", "threshold_eps_str", "threshold_str", "decimals_float", "heaviside_values"])
def test_an_explicit_op_argument_of_the_wrong_type_is_a_type_error_naming_it(call, message):
    """The op's schema matching raised "Overloaded torch operator invoked from Python failed to match any schema", and
    for sll_fx.threshold(x, 0.3, "0.1") blamed the argument 'threshold' (audit); heaviside(x, 0.1, values="a") raised
    torch's "new(): invalid data type 'str'" (a58)."""
    with pytest.raises(TypeError, match=rf"^{message}"):
        call(torch.randn(4))


@pytest.mark.parametrize("op,call", [
    ("sign", lambda x: sll_fx.sign(x, 0.1)), ("heaviside", lambda x: sll_fx.heaviside(x, 0.1)),
    ("round", lambda x: sll_fx.round(x, 0.1)), ("floor", lambda x: sll_fx.floor(x, 0.1)),
    ("ceil", lambda x: sll_fx.ceil(x, 0.1)), ("trunc", lambda x: sll_fx.trunc(x, 0.1)),
    ("threshold", lambda x: sll_fx.threshold(x, 0.3, 0.1)), ("sign", lambda x: sll_fx.sign(x, None, method="ste")),
], ids=["sign", "heaviside", "round", "floor", "ceil", "trunc", "threshold", "sign_ste"])
def test_an_explicit_op_given_no_tensor_is_a_type_error_naming_it(op, call):
    """sll_fx.heaviside([0.1], 0.1) and trunc raised "AttributeError: 'list' object has no attribute 'dtype'" from
    inside, the others the op's "failed to match any schema" (audit)."""
    with pytest.raises(TypeError, match=rf"^sll_fx\.{op}: x=\[0\.1\] must be a tensor, got list\nFix: pass "
                                        r"torch\.as_tensor\(\[0\.1\]\) \(a floating one: an integer tensor gets no "
                                        r"gradient\)$"):
        call([0.1])
    with pytest.raises(TypeError, match=rf"^sll_fx\.{op}: x=0\.5 must be a tensor, got float\nFix: pass "
                                        r"torch\.as_tensor\(0\.5\)"):
        call(0.5)
    with pytest.raises(TypeError, match=rf"^sll_fx\.{op}: x=\[0, 1, 2, 3, 4, 5, \.\.\.\] must be a tensor, got "
                                        r"list\nFix: pass torch\.as_tensor\(x\) "):  # (a long value cut short)
        call(list(range(100)))
    with pytest.raises(TypeError, match=rf"^sll_fx\.{op}: x=None must be a tensor, got NoneType\nFix: pass a tensor "):
        call(None)


@pytest.mark.parametrize("op", ["sign", "round", "floor", "heaviside", "threshold"])
def test_an_eps_on_the_meta_device_beside_a_cpu_input_is_an_eps_error(op):
    """A 0-dim eps on 'meta' (no value) with a CPU x: round, floor, heaviside and threshold returned a result that
    ignored eps (round gave x itself, gradient 1 everywhere), sign a device error naming no op (audit)."""
    f = {"sign": sll_fx.sign, "round": sll_fx.round, "floor": sll_fx.floor, "heaviside": sll_fx.heaviside,
         "threshold": lambda x, eps: sll_fx.threshold(x, 0.3, eps)}[op]
    x = torch.tensor([-1.2, -0.01, 0.3, 0.5], requires_grad=True)
    name = "compare" if op == "threshold" else op
    with pytest.raises(EpsError, match=rf"sll\.{name}: eps is a tensor on device 'meta' and x is on 'cpu': a meta "
                                       r"tensor holds no value.*\nFix: pass a Python float"):
        f(x, torch.tensor(0.1, device="meta"))
    assert f(x.to("meta"), torch.tensor(0.1, device="meta")).device.type == "meta"  # (both on meta: shapes only)
    assert f(x.to("meta"), torch.tensor(0.1)).device.type == "meta"  # (a CPU eps goes with any device)


# --- 7. selections: the hard mode's branch weights, integer results, masked_fill's dtype, 0-dim inputs ----

def _where_parts(mode: str, x: torch.Tensor, eps: float = 0.1):
    """``where(x > 0.5, 3 x, -x)`` as linearize writes it: the mask in ``mode`` and, in hard mode, the linear
    surrogate of the same comparison as ``soft`` (the branch weights of the gradient)."""
    s = torch.ops.sll.compare(x, 0.5, "gt", eps=eps, mode=mode)
    soft = torch.ops.sll.compare(x, 0.5, "gt", eps=eps) if mode == "hard" else None
    return s, soft


@pytest.mark.parametrize("mode", MODES)
def test_select_hard_mode_weighs_the_branches_with_the_surrogate(mode):
    """SLL_MATH.md: hard mode's backward is the derivative of f_eps = a s + b (1 - s) at the same point, s the
    surrogate: the branch terms are s a' + (1 - s) b', not the hard mask's (s37)."""
    x0 = torch.tensor([0.45, 0.5, 0.58, 0.7, 0.3, 0.42], dtype=torch.float64)
    x = x0.clone().requires_grad_(True)
    y = _where(mode, x)
    y.sum().backward()
    u = ((x0 - 0.5) / 0.2 + 0.5).clamp(0, 1)
    inside = ((x0 - 0.5).abs() < 0.1).double()
    want = 3 * u - (1 - u) + inside * 5 * (3 * x0 + x0)
    torch.testing.assert_close(x.grad, want, rtol=0, atol=1e-12)
    assert x.grad.tolist() == pytest.approx([9.0, 11.0, 14.2, 3.0, -1.0, 7.8])
    if mode == "hard":  # the forward is the hard where, bit for bit
        assert torch.equal(y.detach(), torch.where(x0 > 0.5, x0 * 3, -x0))
    # forward mode agrees (the jvp's factors are the backward's)
    _, tangent = torch.func.jvp(lambda v: _where(mode, v), (x0,), (torch.ones_like(x0),))
    torch.testing.assert_close(tangent, want, rtol=0, atol=1e-12)


def _where(mode: str, x: torch.Tensor) -> torch.Tensor:
    s, soft = _where_parts(mode, x)
    return torch.ops.sll.select(s, x * 3, -x, soft=soft)


def test_select_soft_masked_fill_and_scalar_branches():
    """masked_fill (b is self, a the value) and Python-number branches take soft's weights too; soft itself gets
    no gradient (the mask's comparison carries the slope once)."""
    x0 = torch.tensor([0.45, 0.52, 0.7], dtype=torch.float64)
    x = x0.clone().requires_grad_(True)
    s, soft = _where_parts("hard", x)
    y = torch.ops.sll.select(s, 1.0, x * 3, op="masked_fill", soft=soft)  # (x * 3).masked_fill(x > 0.5, 1.0)
    assert torch.equal(y.detach(), (x0 * 3).masked_fill(x0 > 0.5, 1.0))
    y.sum().backward()
    u = ((x0 - 0.5) / 0.2 + 0.5).clamp(0, 1)
    inside = ((x0 - 0.5).abs() < 0.1).double()
    torch.testing.assert_close(x.grad, 3 * (1 - u) + inside * 5 * (1.0 - 3 * x0), rtol=0, atol=1e-12)
    soft_leaf = soft.detach().requires_grad_(True)
    torch.ops.sll.select(s.detach(), x0 * 3, -x0, soft=soft_leaf).sum().backward()
    assert soft_leaf.grad is None


def test_select_soft_strips_with_its_select():
    """A comparison read only as a select's soft mask goes with the select: export_hard gives the hard where,
    bit for bit, and no dead node."""
    class M(torch.nn.Module):
        def forward(self, x):
            s = torch.ops.sll.compare(x, 0.5, "gt", eps=0.1, mode="hard")
            soft = torch.ops.sll.compare(x, 0.5, "gt", eps=0.1)
            return torch.ops.sll.select(s, x * 3, -x, soft=soft)

    gm = torch.fx.symbolic_trace(M())
    hard = sll_fx.export_hard(gm, verbose=False)
    x = torch.tensor([0.45, 0.5, 0.58, 0.7, float("nan")])
    assert torch.equal(hard(x)[:4], torch.where(x > 0.5, x * 3, -x)[:4]) and hard(x)[4] != hard(x)[4]
    names = [n.target for n in hard.graph.nodes if n.op == "call_function"]
    assert not any(sll_fx.ops.is_sll_target(t) for t in names)
    assert sum(1 for n in hard.graph.nodes if n.op == "call_function" and n.target is torch.gt) <= 1
    assert all(n.users or n.op == "output" for n in hard.graph.nodes), hard.graph


@pytest.mark.parametrize("mode", MODES)
def test_select_with_an_integer_result_is_the_hard_where(mode):
    """An integer result cannot hold a blend: the exact hard where/masked_fill, in and out of the band, NaN
    included, no gradient (s48; it raised)."""
    x = torch.tensor([-1.0, 0.45, 0.499, 0.5001, 0.55, 2.0, NAN], requires_grad=True)
    s = torch.ops.sll.compare(x, 0.5, "lt", eps=0.1, mode=mode)
    labels = torch.arange(7)
    y = torch.ops.sll.select(s, -100, labels, op="masked_fill")
    assert y.dtype == torch.int64 and not y.requires_grad
    assert torch.equal(y, labels.masked_fill(x.detach() < 0.5, -100))
    w = torch.ops.sll.select(s, labels, labels * 2)
    assert torch.equal(w, torch.where(x.detach() < 0.5, labels, labels * 2))
    flags = torch.tensor([False, True, False, True, False, True, False])  # a bool self stays bool
    s2 = torch.ops.sll.compare(x, 0.5, "ge", eps=0.1, mode=mode)
    y2 = torch.ops.sll.select(s2, True, flags, op="masked_fill")
    assert y2.dtype == torch.bool and torch.equal(y2, flags.masked_fill(x.detach() >= 0.5, True))


def test_select_with_an_integer_result_on_the_threshold_is_an_error():
    """On the threshold the surrogate mask is 1/2 for > and >= alike: the hard value is not known from it.
    Eager mode says so (with the fix) where the branches differ; where they agree it is their value."""
    x = torch.tensor([0.2, 0.5, 0.9])
    s = torch.ops.sll.compare(x, 0.5, "ge", eps=0.1)
    with pytest.raises(sll_fx.SLLError, match=r"sll.select \(masked_fill\): its result is torch.int64.*Fix: "
                                              r"linearize with example_inputs"):
        torch.ops.sll.select(s, -1, torch.arange(3), op="masked_fill")
    assert torch.ops.sll.select(s, 1, torch.tensor([0, 1, 0]), op="masked_fill").tolist() == [0, 1, 1]


@pytest.mark.parametrize("self_dtype,value,want", [
    (torch.int64, 0.5, torch.int64), (torch.bool, 0, torch.bool), (torch.float16, 0.5, torch.float16),
    (torch.float16, torch.tensor(0.5, dtype=torch.float64), torch.float16), (torch.int32, -7, torch.int32),
], ids=["int64_float_value", "bool_int_value", "half", "half_double_tensor_value", "int32"])
def test_masked_fill_result_is_selfs_dtype(self_dtype, value, want):
    """torch.masked_fill keeps self's dtype (not result_type(self, value)); so does sll.select(op='masked_fill')."""
    x = torch.tensor([1.0, 2.0, 3.0, 4.0])
    self_ = x.to(self_dtype)
    s = torch.ops.sll.compare(x, 2.5, "gt", eps=0.1)
    y = torch.ops.sll.select(s, value, self_, op="masked_fill")
    hard = self_.masked_fill(x > 2.5, value)
    assert y.dtype == hard.dtype == want and torch.equal(y, hard)


def test_masked_fill_dtype_after_linearize():
    class M(torch.nn.Module):
        def forward(self, x):
            return x.masked_fill(x > 2, 0.5)

    class B(torch.nn.Module):
        def forward(self, x):
            return x.masked_fill(x > 0, 0)

    for m, x in ((M(), torch.tensor([1, 2, 3, 4])), (B(), torch.tensor([True, False, True]))):
        gm = sll_fx.linearize_module(m, eps=0.1, verbose=False)
        assert gm(x).dtype == m(x).dtype and torch.equal(gm(x), m(x))


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("k", [0, 1])
def test_topk_mask_on_a_0dim_input_is_the_hard_mask(k, mode):
    """topk of a 0-dim tensor selects its element (for k = 0 too): the hard op's value, with a zero gradient."""
    for dim in (0, -1):
        x = torch.tensor(0.7, requires_grad=True)
        y = torch.ops.sll.topk_mask(x, k, dim, eps=0.1, mode=mode)
        hard = torch.zeros_like(x).scatter(dim, torch.topk(x, k, dim).indices, 1.0)
        assert y.shape == hard.shape == () and torch.equal(y.detach(), hard)
        y.backward()
        assert x.grad == 0


@pytest.mark.parametrize("mode", MODES)
def test_argmax_onehot_on_a_0dim_input_is_the_hard_one_hot(mode):
    x = torch.tensor(-0.3, requires_grad=True)
    for n, largest in ((3, True), (1, False)):
        y = torch.ops.sll.argmax_onehot(x, -1, n, eps=0.1, mode=mode, largest=largest)
        hard = torch.nn.functional.one_hot((torch.argmax if largest else torch.argmin)(x.detach(), -1), n)
        assert y.shape == hard.shape == (n,) and torch.equal(y.detach(), hard.float())


def test_topk_mask_and_argmax_onehot_bad_arguments_raise_as_the_hard_op():
    x0 = torch.tensor(0.7)
    for call, hard in (
        (lambda: torch.ops.sll.topk_mask(x0, 2, -1, eps=0.1), lambda: torch.topk(x0, 2, -1)),
        (lambda: torch.ops.sll.topk_mask(x0, 1, 1, eps=0.1), lambda: torch.topk(x0, 1, 1)),
        (lambda: torch.ops.sll.argmax_onehot(x0, 1, 3, eps=0.1), lambda: torch.argmax(x0, 1)),
        (lambda: torch.ops.sll.topk_mask(torch.ones(3), 4, 0, eps=0.1), lambda: torch.topk(torch.ones(3), 4, 0)),
    ):
        with pytest.raises(Exception) as want:
            hard()
        with pytest.raises(want.type, match="out of range"):
            call()


@pytest.mark.parametrize("dim", [2, -3])
@pytest.mark.parametrize("mode", MODES)
def test_an_out_of_range_dim_is_torchs_index_error_naming_the_op(dim, mode):
    """``x.shape[dim]`` raised "IndexError: tuple index out of range" where the hard model raises torch's "Dimension
    out of range" (audit: a linearized one_hot(argmax(x, 2)) / topk(x, 1, 2) mask of a 2-D x)."""
    want = rf"Dimension out of range \(expected to be in range of \[-2, 1\], but got {dim}\)"
    for x in (torch.randn(2, 4), torch.ones(2, 4, dtype=torch.long)):
        with pytest.raises(IndexError, match=want):
            torch.argmax(x, dim)
        with pytest.raises(IndexError, match=rf"^sll\.argmax_onehot: {want}"):
            torch.ops.sll.argmax_onehot(x, dim, 4, eps=0.1, mode=mode)
        with pytest.raises(IndexError, match=rf"^sll\.topk_mask: {want}"):
            torch.ops.sll.topk_mask(x, 1, dim, eps=0.1, mode=mode)


class _TopkOutOfRange(nn.Module):
    def forward(self, x):
        return torch.zeros_like(x).scatter(2, x.topk(1, 2).indices, 1.0)


class _OneHotOutOfRange(nn.Module):
    def forward(self, x):
        return torch.nn.functional.one_hot(x.argmax(2), 4).to(x.dtype)


@pytest.mark.parametrize("model", [_TopkOutOfRange, _OneHotOutOfRange])
def test_a_linearized_selection_with_an_out_of_range_dim_raises_what_the_model_raises(model):
    x = torch.randn(2, 4)
    with pytest.raises(IndexError) as hard:
        model()(x)
    gm = sll_fx.linearize_module(model(), eps=0.1, verbose=False)
    assert any(e.rewritten for e in gm.sll_report.entries)
    with pytest.raises(IndexError, match=r"^sll\.(topk_mask|argmax_onehot): ") as info:
        gm(x)
    assert str(hard.value) in str(info.value)


def _opcheck_selection_cases():
    x = lambda: (torch.randn(3, 4, generator=torch.Generator().manual_seed(2)) * 0.3).requires_grad_(True)  # noqa: E731
    ops = torch.ops.sll

    def mask(mode="linear"):
        return ops.compare(x(), 0.0, "gt", eps=0.3, mode=mode)
    return [
        ("select", ops.select.default, lambda: (mask(), x() * 2, x()), {}),
        ("select.soft", ops.select.default, lambda: (mask("hard"), x() * 2, x()), {"soft": mask().detach()}),
        ("select.masked_fill", ops.select.ScalarSelf, lambda: (mask(), 0.5, x()), {"op": "masked_fill"}),
        ("select.masked_fill.soft", ops.select.ScalarSelf, lambda: (mask("hard"), 0.5, x()),
         {"op": "masked_fill", "soft": mask().detach()}),
        ("select.ScalarOther.soft", ops.select.ScalarOther, lambda: (mask("hard"), x(), -1.0),
         {"soft": mask().detach()}),
        ("select.Scalar", ops.select.Scalar, lambda: (mask(), 1.0, 0.0), {}),
        ("select.int_masked_fill", ops.select.ScalarSelf, lambda: (mask(), -100, torch.arange(12).view(3, 4)),
         {"op": "masked_fill"}),
        ("select.int_where", ops.select.default,
         lambda: (mask(), torch.arange(12).view(3, 4), torch.zeros(3, 4, dtype=torch.long)), {}),
        ("topk_mask", ops.topk_mask.default, lambda: (x(), 2, -1), {"eps": 0.3}),
        ("topk_mask.0dim", ops.topk_mask.default, lambda: (x()[0, 0].detach().requires_grad_(True), 1, -1),
         {"eps": 0.3}),
        ("argmax_onehot", ops.argmax_onehot.default, lambda: (x(), -1, 4), {"eps": 0.3}),
        ("argmax_onehot.0dim", ops.argmax_onehot.default, lambda: (x()[0, 0].detach().requires_grad_(True), -1, 3),
         {"eps": 0.3}),
    ]


@pytest.mark.parametrize("name,op,args,kwargs", _opcheck_selection_cases(),
                         ids=[c[0] for c in _opcheck_selection_cases()])
def test_opcheck_selections(name, op, args, kwargs):
    torch.library.opcheck(op, args(), kwargs)


_DTYPES = [torch.bool, torch.uint8, torch.int8, torch.int32, torch.int64, torch.float16, torch.bfloat16, torch.float32,
           torch.float64]  # (real dtypes: comparisons are not defined on complex ones)


@pytest.mark.parametrize("dtype", _DTYPES, ids=str)
def test_result_dtype_is_torch_result_type(dtype):
    """``ops.result_dtype`` (what ``hard_compare`` reads under torch.compile) is ``torch.result_type`` for every pair
    of dtypes and ranks (0-dim beside dims, both, neither) and for Python numbers."""
    for other in _DTYPES:
        for x_dims, o_dims in ((1, 1), (1, 0), (0, 1), (0, 0)):
            x, o = torch.zeros((2,) * x_dims, dtype=dtype), torch.zeros((2,) * o_dims, dtype=other)
            assert sll_fx.ops.result_dtype(x, o) == torch.result_type(x, o), (dtype, other, x_dims, o_dims)
    for number in (True, 3, 0.5):
        for dims in (0, 1):
            x = torch.zeros((2,) * dims, dtype=dtype)
            assert sll_fx.ops.result_dtype(x, number) == torch.result_type(x, number), (dtype, number, dims)


def test_an_eps_that_requires_grad_is_refused_not_detached():
    """An sll op gives eps no gradient: a learnable eps was detached silently (audit); now an EpsError with the fix,
    from the explicit ops and from linearize_module (whose message said eps must be a Python float)."""
    eps = torch.tensor(0.5, requires_grad=True)
    x = torch.tensor([0.2, -1.0], requires_grad=True)
    with pytest.raises(sll_fx.EpsError, match=r"sll.sign: eps requires grad.*\nFix: pass eps.detach\(\)"):
        sll_fx.sign(x, eps)
    assert torch.equal(sll_fx.sign(x, eps.detach()), torch.tensor([0.4, -1.0]))
    with torch.no_grad():
        sll_fx.round(x, eps)  # (no graph: nothing to differentiate)
    with pytest.raises(sll_fx.EpsError, match=r"SLLConfig: eps requires grad.*\nFix: pass eps.detach\(\)"):
        sll_fx.linearize_module(Fn(torch.round), eps=eps, verbose=False)

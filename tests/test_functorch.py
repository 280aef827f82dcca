"""torch.func transforms, forward-mode AD and double backward on every sll op.

The expected values are analytic (SLL_MATH.md: the slope inside the band, 0 outside; the estimators'
factors of ``kernels.estimator_grad``) or a loop of ``torch.autograd.grad`` (the eager path).  The points
are dyadic and sit inside a band, away from its edges, or outside every band, with eps = 1/4, so that
the float32 slopes and products are exact and most comparisons are bitwise (``torch.equal``); the
sigmoid estimator and round(decimals=1) (slope 1.6) are compared with ``assert_close``.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Callable

import pytest
import torch
from torch import nn
from torch.autograd import forward_ad
from torch.func import functional_call, grad, hessian, jacfwd, jacrev, jvp, vmap

import sll_fx
from _helpers import assert_bitwise

pytestmark = pytest.mark.filterwarnings("ignore:.*torch.jit.*is deprecated:DeprecationWarning")  # (gradcheck's own)

EPS = 0.25
#: per-element weights / tangents (dyadic: products stay exact)
WEIGHTS = torch.tensor([1.0, -2.0, 0.5, 3.0, -1.0, 0.25])
ops = torch.ops.sll


def _box(x, lo, hi):
    return ((x > lo) & (x < hi)).float()


@dataclass
class Case:
    name: str
    f: Callable                       # f(x, mode): the op, mode in linear/hard/ste/sigmoid
    points: list                      # inside a band (away from its edges) or outside every band
    slope: Callable                   # x -> d f / d x in linear and hard (sll) mode, elementwise
    ste: Callable | None = None       # x -> the "ste" factor; None: the op has no ste/sigmoid
    exact: bool = True                # float32 results exact (else assert_close)

    def __repr__(self):
        return self.name


def _mode(mode):
    return ("linear", "sll") if mode == "linear" else ("hard", "sll") if mode == "hard" else ("hard", mode)


def _call(op, **kw):
    def f(x, mode):
        m, method = _mode(mode)
        return op(x, mode=m, method=method, **kw)
    return f


T_VEC = torch.tensor([0.5, -0.25, 0.0, 1.0, 0.5, -1.0])  # compare's tensor threshold (one per element)

CASES = [
    Case("sign", _call(sll_fx.sign, eps=EPS), [-0.125, 0.0625, 0.5, -1.0, 2.0, 0.1875],
         lambda x: 4.0 * _box(x, -EPS, EPS), lambda x: _box(x, -1.0001, 1.0001)),
    Case("round", _call(sll_fx.round, eps=EPS), [0.375, 0.625, 1.625, 0.0, 0.125, -2.0],
         lambda x: 2.0 * _box((x - torch.floor(x) - 0.5), -EPS, EPS), lambda x: torch.ones_like(x)),
    Case("round_d1", _call(sll_fx.round, eps=0.03125, decimals=1), [0.0625, 0.125, 0.1, 0.2, -0.3, 0.4375],
         lambda x: 1.6 * _box((x * 10 - torch.floor(x * 10) - 0.5), -0.3125, 0.3125),
         lambda x: torch.ones_like(x), exact=False),
    Case("floor", _call(sll_fx.floor, eps=EPS), [1.125, -0.875, 0.0625, 0.5, 1.5, 2.5],
         lambda x: 2.0 * _box(x - torch.round(x), -EPS, EPS), lambda x: torch.ones_like(x)),
    Case("ceil", _call(sll_fx.ceil, eps=EPS), [1.125, -0.875, 0.0625, 0.5, 1.5, -2.5],
         lambda x: 2.0 * _box(x - torch.round(x), -EPS, EPS), lambda x: torch.ones_like(x)),
    Case("trunc", _call(sll_fx.trunc, eps=EPS), [1.125, -0.875, -2.0625, 0.0625, 0.5, -1.5],
         lambda x: 2.0 * _box(x.abs() - torch.round(x.abs()), -EPS, EPS) * (x.abs() > 0.5).float(),
         lambda x: torch.ones_like(x)),
    Case("heaviside", _call(sll_fx.heaviside, eps=EPS), [-0.125, 0.0625, 0.5, -1.0, 0.1875, 3.0],
         lambda x: 2.0 * _box(x, -EPS, EPS), lambda x: (x.abs() <= 0.5).float()),
    Case("gt_scalar", _call(sll_fx.threshold, threshold=0.5, eps=EPS, cmp=">"), [0.375, 0.625, 0.0, 1.0, 0.5625, -2.0],
         lambda x: 2.0 * _box(x - 0.5, -EPS, EPS), lambda x: ((x - 0.5).abs() <= 0.5).float()),
    Case("le_scalar", _call(sll_fx.threshold, threshold=0.5, eps=EPS, cmp="<="), [0.375, 0.625, 0.0, 1.0, 0.5625, -2.0],
         lambda x: -2.0 * _box(x - 0.5, -EPS, EPS), lambda x: -((x - 0.5).abs() <= 0.5).float()),
    Case("gt_tensor", _call(sll_fx.threshold, threshold=T_VEC, eps=EPS, cmp=">"), [0.375, -0.125, 0.5, 1.125, 2.0, -1.0625],
         lambda x: 2.0 * _box(x - T_VEC, -EPS, EPS), lambda x: ((x - T_VEC).abs() <= 0.5).float()),
]
# the selections (linear and hard mode only): no analytic diagonal, compared with torch.autograd
SELECTIONS = {
    "argmax_onehot": lambda x, mode: ops.argmax_onehot(x, -1, x.shape[-1], eps=EPS, mode=mode),
    "topk_mask": lambda x, mode: ops.topk_mask(x, 2, -1, eps=EPS, mode=mode),
    "select": lambda x, mode: ops.select(sll_fx.threshold(x, 0.5, EPS, mode=mode), 3.0 * x, -x * x),
    "select_scalar": lambda x, mode: ops.select(sll_fx.threshold(x, 0.5, EPS, mode=mode), 1.0, x),
}
SEL_POINTS = [0.125, 0.375, -0.25, 1.0, 0.875, 0.5]  # argmax margins +-1/8, top-2 tau 11/16, none on a band edge

MODES = ["linear", "hard", "ste", "sigmoid"]


def _x(case_or_points, dtype=torch.float32):
    pts = case_or_points.points if isinstance(case_or_points, Case) else case_or_points
    return torch.tensor(pts, dtype=dtype)


def _expected(case: Case, x: torch.Tensor, mode: str) -> torch.Tensor | None:
    """d f / dx elementwise (None for the sigmoid: compared with the eager autograd instead)."""
    if mode in ("linear", "hard"):
        return case.slope(x)
    if mode == "ste":
        return case.ste(x)
    return None


def _eager_grad(f, x, w=None):
    x = x.detach().clone().requires_grad_(True)
    y = f(x)
    (g,) = torch.autograd.grad(y if w is None else y, x, torch.ones_like(y) if w is None else w)
    return g


def _same(a, b, exact):
    """Equal values (exactly, or within float tolerance); a zero's sign is not compared (the analytic
    ``slope * 1{inside} * w`` is -0 where ``w < 0`` outside the band, a gradient +0)."""
    if exact:
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    else:
        torch.testing.assert_close(a, b)


def _batch(x, n=3):
    """n rows of x, each shifted by a whole number of units away from every band change (for elementwise ops)."""
    return torch.stack([x.roll(i) for i in range(n)])


# --- 1. torch.func.grad and per-sample vmap(grad) against a loop of torch.autograd.grad ---------

@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("case", CASES, ids=repr)
def test_grad_and_vmap_grad_equal_autograd_loop(case, mode):
    f = lambda v: case.f(v, mode)  # noqa: E731
    x = _x(case)
    w = WEIGHTS
    expected = _expected(case, x, mode)
    g = grad(lambda v: (f(v) * w).sum())(x)
    _same(g, _eager_grad(f, x, w), exact=True)
    if expected is not None:
        _same(g, expected * w, case.exact)
    if case.name == "gt_tensor":  # rows must broadcast against the tensor threshold: the same row each time
        X = torch.stack([x, x * 2, x - 4.0])
    else:
        X = _batch(x)
    G = vmap(grad(lambda v: (f(v) * w).sum()))(X)
    loop = torch.stack([_eager_grad(f, r, w) for r in X])
    torch.testing.assert_close(G, loop, rtol=0, atol=0)


@pytest.mark.parametrize("mode", ["linear", "hard", "ste", "sigmoid"])
def test_grad_of_tensor_threshold(mode):
    """compare with a tensor threshold: grad w.r.t. the threshold is minus the x factor (per element)."""
    case = next(c for c in CASES if c.name == "gt_scalar")
    m, method = _mode(mode)
    x = _x(case)
    t = torch.full_like(x, 0.5)
    f = lambda v, thr: sll_fx.threshold(v, thr, EPS, mode=m, method=method)  # noqa: E731
    gx, gt = grad(lambda v, thr: f(v, thr).sum(), argnums=(0, 1))(x, t)
    tt = t.clone().requires_grad_(True)
    xx = x.clone().requires_grad_(True)
    ex, et = torch.autograd.grad(f(xx, tt).sum(), (xx, tt))
    assert_bitwise(gx, ex)
    assert_bitwise(gt, et)
    assert_bitwise(gt, -gx)
    expected = _expected(case, x, mode)
    if expected is not None:
        assert_bitwise(gx, expected)
    # a 0-dim threshold shared by every element: its gradient is the sum, per sample under vmap
    t0 = torch.tensor(0.5)
    X = _batch(x)
    Gt = vmap(grad(lambda v, thr: f(v, thr).sum(), argnums=1), in_dims=(0, None))(X, t0)
    loop = torch.stack([_threshold_grad(f, r, t0) for r in X])
    torch.testing.assert_close(Gt, loop, rtol=0, atol=0)


def _threshold_grad(f, x, t):
    t = t.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(f(x, t).sum(), t)
    return g


# --- 2. jacrev == jacfwd == the analytic diagonal ---------------------------------------------

@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("case", CASES, ids=repr)
def test_jacrev_jacfwd_are_the_analytic_diagonal(case, mode):
    f = lambda v: case.f(v, mode)  # noqa: E731
    x = _x(case)
    jr, jf = jacrev(f)(x), jacfwd(f)(x)
    _same(jr, jf, case.exact or mode == "sigmoid")
    expected = _expected(case, x, mode)
    if expected is None:  # sigmoid: the eager autograd's
        expected = _eager_grad(f, x)
        torch.testing.assert_close(jr, torch.diag(expected))
    else:
        _same(jr, torch.diag(expected), case.exact)
    ref = torch.autograd.functional.jacobian(f, x)
    torch.testing.assert_close(jr, ref, rtol=0, atol=0)


@pytest.mark.parametrize("mode", ["linear", "hard"])
@pytest.mark.parametrize("name", list(SELECTIONS))
def test_selections_jacrev_jacfwd_equal_autograd(name, mode):
    f = lambda v: SELECTIONS[name](v, mode)  # noqa: E731
    x = _x(SEL_POINTS)
    ref = torch.autograd.functional.jacobian(f, x)
    assert ref.abs().sum() > 0   # some of the points are inside a band
    torch.testing.assert_close(jacrev(f)(x), ref, rtol=0, atol=0)
    torch.testing.assert_close(jacfwd(f)(x), ref, rtol=0, atol=0)


# --- 3. forward mode: torch.func.jvp and dual numbers --------------------------------------------

@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("case", CASES, ids=repr)
def test_jvp_and_dual_numbers_are_the_analytic_tangent(case, mode):
    f = lambda v: case.f(v, mode)  # noqa: E731
    x = _x(case)
    t = WEIGHTS
    expected = _expected(case, x, mode)
    expected = _eager_grad(f, x) * t if expected is None else expected * t
    exact = case.exact and mode != "sigmoid"
    out, tangent = jvp(f, (x,), (t,))
    assert_bitwise(out, f(x))
    _same(tangent, expected, exact)
    with forward_ad.dual_level():
        y = f(forward_ad.make_dual(x, t))
        primal, dual = forward_ad.unpack_dual(y)
    assert_bitwise(primal, f(x))
    _same(dual, expected, exact)


def test_jvp_threshold_tangent():
    """compare: the tangent is factor * (t_x - t_threshold)."""
    x = torch.tensor([0.375, 0.625, 0.0, 1.0])
    t = torch.tensor([0.5, 0.5, 0.5, 0.5])
    tx, tt = torch.tensor([1.0, 2.0, 1.0, 1.0]), torch.tensor([0.5, -1.0, 3.0, 3.0])
    _, tangent = jvp(lambda v, thr: sll_fx.threshold(v, thr, EPS), (x, t), (tx, tt))
    _same(tangent, torch.tensor([2.0 * 0.5, 2.0 * 3.0, 0.0, 0.0]), exact=True)
    with forward_ad.dual_level():
        y = sll_fx.threshold(forward_ad.make_dual(x, tx), forward_ad.make_dual(t, tt), EPS, cmp="<")
        _same(forward_ad.unpack_dual(y).tangent, torch.tensor([-1.0, -6.0, 0.0, 0.0]), exact=True)


def test_jvp_select_is_the_product_rule():
    s = torch.tensor([0.0, 0.25, 0.5, 1.0])
    a = torch.tensor([2.0, 4.0, -1.0, 3.0])
    b = torch.tensor([1.0, 0.5, 2.0, float("-inf")])
    ts, ta, tb = torch.tensor([1.0, 2.0, -1.0, 1.0]), torch.tensor([0.5, 1.0, 2.0, 1.0]), torch.tensor([4.0, 1.0, 1.0, 0.0])
    _, tangent = jvp(lambda s_, a_, b_: ops.select(s_, a_, b_), (s, a, b), (ts, ta, tb))
    diff = torch.where(torch.isfinite(a - b), a - b, 0.0)
    assert_bitwise(tangent, ts * diff + ta * s + tb * (1 - s))
    with forward_ad.dual_level():
        y = ops.select(forward_ad.make_dual(s, ts), forward_ad.make_dual(a, ta), b)
        assert_bitwise(forward_ad.unpack_dual(y).tangent, ts * diff + ta * s)
    # scalar branches: only s and the tensor branch have tangents
    _, tangent = jvp(lambda s_, b_: ops.select(s_, 2.0, b_), (s, a), (ts, tb))
    assert_bitwise(tangent, ts * (2.0 - a) + tb * (1 - s))


@pytest.mark.parametrize("mode", ["linear", "hard"])
@pytest.mark.parametrize("name", list(SELECTIONS))
def test_selections_jvp_is_jacobian_times_tangent(name, mode):
    f = lambda v: SELECTIONS[name](v, mode)  # noqa: E731
    x = _x(SEL_POINTS)
    t = WEIGHTS
    J = torch.autograd.functional.jacobian(f, x)
    _, tangent = jvp(f, (x,), (t,))
    torch.testing.assert_close(tangent, J @ t)
    with forward_ad.dual_level():
        dual = forward_ad.unpack_dual(f(forward_ad.make_dual(x, t))).tangent
    torch.testing.assert_close(dual, J @ t)


# --- 4. gradcheck with forward AD, gradgradcheck (float64, linear mode) --------------------------

@pytest.mark.parametrize("case", CASES, ids=repr)
def test_gradcheck_forward_ad_and_gradgradcheck(case):
    x = _x(case, torch.float64).requires_grad_(True)
    f = lambda v: case.f(v, "linear")  # noqa: E731
    assert torch.autograd.gradcheck(f, (x,), check_forward_ad=True, check_backward_ad=True,
                                    check_batched_grad=True, check_batched_forward_grad=True)
    assert torch.autograd.gradgradcheck(f, (x,), check_fwd_over_rev=True, check_rev_over_rev=True)


def test_gradcheck_tensor_threshold_and_select():
    x = torch.tensor([0.375, 0.625, 0.0, 1.0], dtype=torch.float64, requires_grad=True)
    t = torch.tensor([0.5, 0.5, 0.375, 0.875], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda v, thr: sll_fx.threshold(v, thr, EPS), (x, t), check_forward_ad=True,
                                    check_batched_grad=True, check_batched_forward_grad=True)
    assert torch.autograd.gradgradcheck(lambda v, thr: sll_fx.threshold(v, thr, EPS), (x, t), check_fwd_over_rev=True)
    s = torch.tensor([0.25, 0.5, 0.75, 0.125], dtype=torch.float64, requires_grad=True)
    a = torch.tensor([2.0, 4.0, -1.0, 3.0], dtype=torch.float64, requires_grad=True)
    b = torch.tensor([1.0, 0.5, 2.0, -2.0], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(ops.select, (s, a, b), check_forward_ad=True,
                                    check_batched_grad=True, check_batched_forward_grad=True)
    assert torch.autograd.gradgradcheck(ops.select, (s, a, b), check_fwd_over_rev=True)


@pytest.mark.parametrize("name", ["argmax_onehot", "topk_mask"])
def test_gradcheck_selections(name):
    x = _x(SEL_POINTS, torch.float64).requires_grad_(True)
    f = lambda v: SELECTIONS[name](v, "linear")  # noqa: E731
    assert torch.autograd.gradcheck(f, (x,), check_forward_ad=True)
    assert torch.autograd.gradgradcheck(f, (x,), check_fwd_over_rev=True)


# --- 5. double backward in hard mode (F3) ----------------------------------------------------------

@pytest.mark.parametrize("method", ["sll", "ste", "sigmoid"])
@pytest.mark.parametrize("case", CASES, ids=repr)
def test_hard_mode_double_backward(case, method):
    x = _x(case).requires_grad_(True)
    y = case.f(x, "hard" if method == "sll" else method)
    (g,) = torch.autograd.grad(y.sum(), x, create_graph=True)
    expected = _expected(case, x.detach(), "hard" if method == "sll" else method)
    if expected is not None:
        _same(g.detach(), expected, case.exact)
    if g.requires_grad:
        (gg,) = torch.autograd.grad((g * g).sum(), x, allow_unused=True)
    else:
        gg = None
    gg = torch.zeros_like(x) if gg is None else gg
    if method in ("sll", "ste"):   # the boxcar (and the identity) have zero derivative
        _same(gg, torch.zeros_like(x), exact=True)
    else:
        assert torch.isfinite(gg).all()
    h = hessian(lambda v: case.f(v, "hard" if method == "sll" else method).sum())(x.detach())
    if method in ("sll", "ste"):
        _same(h, torch.zeros_like(h), exact=True)


def test_sigmoid_second_derivative_is_the_sigmoids():
    """method="sigmoid" on x > t: d/dx of 2 slope s (1 - s), s = sigmoid((x - t) / eps)."""
    x = torch.tensor([0.375, 0.625, 0.0, 1.0], dtype=torch.float64, requires_grad=True)
    y = sll_fx.threshold(x, 0.5, EPS, method="sigmoid")
    (g,) = torch.autograd.grad(y.sum(), x, create_graph=True)
    (gg,) = torch.autograd.grad(g.sum(), x)
    xr = x.detach().clone().requires_grad_(True)
    s = torch.sigmoid((xr - 0.5) / EPS)
    ref = 2 * (0.5 / EPS) * s * (1 - s)
    (ref_gg,) = torch.autograd.grad(ref.sum(), xr)
    torch.testing.assert_close(g.detach(), ref.detach())
    torch.testing.assert_close(gg, ref_gg)


# --- 6. vmap: bitwise the batched call, no per-sample fallback ----------------------------------

@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("case", CASES, ids=repr)
def test_vmap_is_bitwise_the_batched_call(case, mode):
    f = lambda v: case.f(v, mode)  # noqa: E731
    X = _batch(_x(case), 4)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)   # "There is a performance drop ..." (BatchedFallback)
        out = vmap(f)(X)
        out_t = vmap(f, in_dims=1, out_dims=1)(X.T.contiguous())
    assert_bitwise(out, f(X))
    assert_bitwise(out_t, f(X).T)


@pytest.mark.parametrize("mode", ["linear", "hard"])
@pytest.mark.parametrize("name", list(SELECTIONS))
def test_selections_vmap_is_bitwise_the_batched_call(name, mode):
    f = lambda v: SELECTIONS[name](v, mode)  # noqa: E731
    X = torch.stack([_x(SEL_POINTS), _x(SEL_POINTS).flip(0), _x(SEL_POINTS) * 2])
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        out = vmap(f)(X)
    assert_bitwise(out, f(X))


def test_vmap_over_threshold_and_eps_tensor():
    x = torch.tensor([0.375, 0.625, 0.0, 1.0])
    T = torch.tensor([0.5, 0.25, 1.0])
    out = vmap(lambda t: sll_fx.threshold(x, t, EPS))(T)
    assert_bitwise(out, torch.stack([sll_fx.threshold(x, t, EPS) for t in T]))
    E = torch.tensor([0.25, 0.125, 0.5])  # eps batched (a tensor eps, as linearize_module passes)
    out = vmap(lambda e: sll_fx.round(x, e))(E)
    assert_bitwise(out, torch.stack([sll_fx.round(x, float(e)) for e in E]))
    G = vmap(grad(lambda v, e: sll_fx.round(v, e).sum()), in_dims=(None, 0))(x, E)
    assert_bitwise(G, torch.stack([_eager_grad(lambda v: sll_fx.round(v, float(e)), x) for e in E]))


def test_heaviside_values_batched():
    x = torch.tensor([0.0, 0.5, -0.125, 0.0])
    V = torch.tensor([[0.0], [0.25], [1.0]])
    for mode in ("linear", "hard"):
        out = vmap(lambda v: sll_fx.heaviside(x, EPS, values=v, mode=mode))(V)
        assert_bitwise(out, torch.stack([sll_fx.heaviside(x, EPS, values=v, mode=mode) for v in V]))


# --- 7. a linearized model: per-sample gradients, hessian, vmap before calibration -----------------

class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.l1 = nn.Linear(4, 8)
        self.l2 = nn.Linear(8, 8)
        self.l3 = nn.Linear(8, 1)
        self.t = nn.Parameter(torch.tensor(0.1))

    def forward(self, x):
        h = self.l1(x)
        h = torch.sign(h) * 0.5 + torch.round(h * 2) * 0.25
        gate = (self.l2(h) > self.t).float()
        return self.l3(h * gate)


def _model(**kw):
    torch.manual_seed(0)
    return sll_fx.linearize_module(Net(), verbose=False, **kw)


@pytest.mark.parametrize("mode", ["linear", "hard"])
def test_linearized_model_per_sample_gradients(mode):
    gm = _model(eps=0.1, mode=mode)
    torch.manual_seed(1)
    X, Y = torch.randn(16, 4), torch.randn(16, 1)
    params = {k: v.detach() for k, v in gm.named_parameters()}
    buffers = dict(gm.named_buffers())

    def loss(p, x, y):
        out = functional_call(gm, (p, buffers), (x[None],))
        return ((out - y[None]) ** 2).mean()

    per_sample = vmap(grad(loss), in_dims=(None, 0, 0))(params, X, Y)
    for i in range(len(X)):
        gm.zero_grad()
        ((gm(X[i:i + 1]) - Y[i:i + 1]) ** 2).mean().backward()
        for k, p in gm.named_parameters():
            torch.testing.assert_close(per_sample[k][i], p.grad, msg=f"sample {i}, {k}")
    # the sll ops carried gradient: l1 is reached only through sign/round and the gate
    assert per_sample["l1.weight"].abs().sum() > 0
    assert per_sample["t"].abs().sum() > 0
    # jacrev/jacfwd of the model's output w.r.t. its input agree
    x = X[:3]
    torch.testing.assert_close(jacrev(gm)(x), jacfwd(gm)(x))


def test_vmap_before_auto_calibration_says_how():
    gm = _model()   # eps="auto": the first call calibrates
    x = torch.randn(6, 4)
    for transform in (vmap, jacrev):
        with pytest.raises(sll_fx.EpsError, match=r"under a torch.func transform .*run one batch eagerly first"):
            transform(gm)(x)
    sll_fx.calibrate(gm, x)
    with torch.no_grad():
        torch.testing.assert_close(vmap(gm)(x), gm(x))


def test_vmap_after_calibration_is_the_batched_call():
    gm = _model()
    torch.manual_seed(1)
    x = torch.randn(6, 4)
    sll_fx.calibrate(gm, x)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        torch.testing.assert_close(vmap(gm)(x), gm(x))

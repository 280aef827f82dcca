"""Estimators as a choice of the same pass: method="sll" | "ste" | "sigmoid" (issue 5, item 1).

For "ste" and "sigmoid" the forward is the hard op bit for bit; the backward is the formula
documented in ``sll_fx.kernels.estimator_grad``.  SpikingJelly's quantizers (seed 002) written
as plain hard-op code and linearized with method="ste" reproduce the seed's gradients.
"""

import pytest
import torch
from torch import nn

import sll_fx
from sll_fx import ops

torch.manual_seed(0)
TAU = 0.2
INF_ = float("inf")


def _x(n=4000, scale=3.0, dtype=torch.float64):
    g = torch.Generator().manual_seed(1)
    return (torch.randn(n, generator=g, dtype=dtype) * scale).requires_grad_()


def _sig(z):
    s = torch.sigmoid(z)
    return s * (1 - s)


def _trunc_d(x):
    """|x| to its nearest boundary of trunc, a nonzero integer: 1 below 1/2 (it was clamped to 1/2 there, as if a
    boundary sat at 0: sigmoid's derivative was too large, and hard mode's closed band passed the slope at eps 1/2)."""
    a = x.abs()
    return a - torch.round(a).clamp_min(1.0)


# (name, explicit call, hard op, ste derivative, sigmoid derivative with tau = eps = TAU)
CASES = [
    ("sign", lambda x, m: sll_fx.sign(x, TAU, method=m), torch.sign,
     lambda x: (x.abs() <= 1).double(), lambda x: 2 / TAU * _sig(x / TAU)),
    ("heaviside", lambda x, m: sll_fx.heaviside(x, TAU, method=m), lambda x: torch.heaviside(x, torch.tensor(0.5, dtype=x.dtype)),
     lambda x: (x.abs() <= 0.5).double(), lambda x: 1 / TAU * _sig(x / TAU)),
    ("gt", lambda x, m: sll_fx.threshold(x, 0.7, TAU, cmp=">", method=m), lambda x: (x > 0.7).double(),
     lambda x: ((x - 0.7).abs() <= 0.5).double(), lambda x: 1 / TAU * _sig((x - 0.7) / TAU)),
    ("le", lambda x, m: sll_fx.threshold(x, -0.2, TAU, cmp="<=", method=m), lambda x: (x <= -0.2).double(),
     lambda x: -((x + 0.2).abs() <= 0.5).double(), lambda x: -1 / TAU * _sig((x + 0.2) / TAU)),
    ("round", lambda x, m: sll_fx.round(x, TAU, method=m), torch.round,
     lambda x: torch.ones_like(x), lambda x: 1 / TAU * _sig((x - torch.floor(x) - 0.5) / TAU)),
    ("floor", lambda x, m: sll_fx.floor(x, TAU, method=m), torch.floor,
     lambda x: torch.ones_like(x), lambda x: 1 / TAU * _sig((x - torch.round(x)) / TAU)),
    ("ceil", lambda x, m: sll_fx.ceil(x, TAU, method=m), torch.ceil,
     lambda x: torch.ones_like(x), lambda x: 1 / TAU * _sig((x - torch.round(x)) / TAU)),
    ("trunc", lambda x, m: sll_fx.trunc(x, TAU, method=m), torch.trunc,
     lambda x: torch.ones_like(x), lambda x: 1 / TAU * _sig(_trunc_d(x) / TAU)),
    ("round_decimals", lambda x, m: sll_fx.round(x, 0.02, decimals=1, method=m),
     lambda x: torch.round(x, decimals=1), lambda x: torch.ones_like(x),
     lambda x: 0.1 / 0.02 * _sig((x * 10 - torch.floor(x * 10) - 0.5) / 0.2)),
]


@pytest.mark.parametrize("method", ["ste", "sigmoid"])
@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_forward_is_hard_and_gradient_is_the_formula(case, method):
    name, call, hard, ste, sig = case
    x = _x()
    up = torch.randn(x.shape, dtype=x.dtype, generator=torch.Generator().manual_seed(2))
    y = call(x, method)
    assert torch.equal(y.detach(), hard(x.detach()).to(y.dtype))
    (g,) = torch.autograd.grad(y, x, up)
    expected = up * (ste if method == "ste" else sig)(x.detach())
    torch.testing.assert_close(g, expected, rtol=1e-12, atol=1e-12)


def test_methods_are_an_exported_name():
    """``sll_fx.METHODS``, the values ``method=`` takes, is one of ``from sll_fx import *``'s names."""
    names = {}
    exec("from sll_fx import *", names)
    assert names["METHODS"] == ("sll", "ste", "sigmoid") == sll_fx.METHODS


def test_threshold_gradient_is_the_negated_input_gradient():
    x, t = _x(), torch.tensor(0.3, dtype=torch.float64, requires_grad=True)
    for method in ("ste", "sigmoid"):
        y = sll_fx.threshold(x, t, TAU, method=method)
        gx, gt = torch.autograd.grad(y.sum(), (x, t))
        torch.testing.assert_close(gt, -gx.sum())


def test_float32_and_tensor_eps():
    x = _x(dtype=torch.float32)
    for method in ("ste", "sigmoid"):
        g1 = torch.autograd.grad(sll_fx.round(x, 0.2, method=method).sum(), x)[0]
        g2 = torch.autograd.grad(sll_fx.round(x, torch.tensor(0.2, dtype=torch.float64), method=method).sum(), x)[0]
        torch.testing.assert_close(g1, g2)


def test_ste_accepts_eps_none_and_bad_method_raises():
    x = _x()
    assert torch.equal(sll_fx.round(x, None, method="ste"), torch.round(x))
    with pytest.raises(ValueError, match="method"):
        sll_fx.round(x, 0.1, method="bogus")
    with pytest.raises(ValueError, match="eps=None"):
        sll_fx.round(x, None, method="sigmoid")


@pytest.mark.parametrize("mode", ["ste", "sigmoid"])
@pytest.mark.parametrize("name,args,kwargs", [
    ("sign", lambda: (torch.randn(6, dtype=torch.float64, requires_grad=True),), {}),
    ("heaviside", lambda: (torch.randn(6, requires_grad=True), torch.tensor(0.5)), {}),
    ("round", lambda: (torch.randn(6, requires_grad=True) * 3,), {"decimals": 1}),
    ("floor", lambda: (torch.randn(6, requires_grad=True) * 3,), {}),
    ("ceil", lambda: (torch.randn(6, requires_grad=True) * 3,), {}),
    ("trunc", lambda: (torch.randn(6, requires_grad=True) * 3,), {}),
    ("compare", lambda: (torch.randn(6, requires_grad=True), torch.tensor(0.1, requires_grad=True), "gt"), {}),
])
@pytest.mark.parametrize("tensor_eps", [False, True])
def test_opcheck_estimator_modes(name, args, kwargs, mode, tensor_eps):
    eps = torch.tensor(0.05, dtype=torch.float64) if tensor_eps else 0.05
    packet = getattr(torch.ops.sll, name)
    op = packet.eps_tensor if tensor_eps else packet.default
    a = tuple(t.detach().clone().requires_grad_(t.requires_grad) if isinstance(t, torch.Tensor) else t for t in args())
    torch.library.opcheck(op, a, {"eps": eps, "mode": mode, **kwargs})


def test_selections_support_only_sll():
    x = torch.randn(4, 5)
    with pytest.raises(ValueError, match="argmax_onehot"):
        torch.ops.sll.argmax_onehot(x, -1, 5, eps=0.1, mode="ste")
    with pytest.raises(ValueError, match="topk_mask"):
        torch.ops.sll.topk_mask(x, 2, -1, eps=0.1, mode="sigmoid")

    class Arg(nn.Module):
        def forward(self, x):
            return nn.functional.one_hot(torch.argmax(x, -1), 5).float()
    with pytest.raises(ValueError, match="argmax_onehot"):
        sll_fx.linearize_module(Arg(), method="ste", verbose=False)


class Mixed(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(6, 6)

    def forward(self, x):
        h = self.lin(x)
        q = torch.round(h * 4) / 4
        s = torch.sign(h)
        m = (h > 0.2).float()
        w = torch.where(h < 0.0, h, 2 * h)
        return q + s + m + torch.floor(h * 2) + w


@pytest.mark.parametrize("method", ["ste", "sigmoid"])
def test_linearize_module_method_report_and_export_hard(method):
    model = Mixed()
    gm = sll_fx.linearize_module(model, 0.1, method=method, verbose=False)
    rewritten = gm.sll_report.rewritten
    assert rewritten and all(e.replacement.endswith(f"[{method}]") or e.replacement.startswith("sll.select")
                             for e in rewritten)
    assert f"method={method}" in str(gm.sll_report)
    x = torch.randn(64, 6)
    assert torch.equal(gm(x), model(x))  # hard forward, bit for bit
    hard = sll_fx.export_hard(gm, verbose=False)
    assert torch.equal(hard(x), model(x))
    # the same through SLLConfig
    gm2 = sll_fx.linearize_module(model, sll_fx.SLLConfig(eps=0.1, method=method), verbose=False)
    xg = x.clone().requires_grad_()
    g1 = torch.autograd.grad(gm(xg).sum(), xg)[0]
    g2 = torch.autograd.grad(gm2(xg).sum(), xg)[0]
    assert torch.equal(g1, g2)
    assert g1.abs().sum() > 0


def test_linearized_gradient_matches_explicit_ops():
    class Q(nn.Module):
        def forward(self, x):
            return torch.sign(x) * 2 + torch.round(x) + torch.heaviside(x, torch.tensor(0.5, dtype=x.dtype))

    x = _x()
    for method in ("sll", "ste", "sigmoid"):
        gm = sll_fx.linearize_module(Q(), TAU, mode="hard", method=method, verbose=False)
        g = torch.autograd.grad(gm(x).sum(), x)[0]
        e = torch.autograd.grad((sll_fx.sign(x, TAU, mode="hard", method=method) * 2
                                 + sll_fx.round(x, TAU, mode="hard", method=method)
                                 + sll_fx.heaviside(x, TAU, mode="hard", method=method)).sum(), x)[0]
        assert torch.equal(g, e)


def test_compiled_sigmoid_matches_eager():
    model = Mixed()
    gm = sll_fx.linearize_module(model, 0.1, method="sigmoid", verbose=False)
    x = torch.randn(32, 6, requires_grad=True)
    g_eager = torch.autograd.grad(gm(x).sum(), x)[0]
    compiled = torch.compile(gm, backend="aot_eager")
    y = compiled(x)
    assert torch.equal(y, model(x))
    g_comp = torch.autograd.grad(y.sum(), x)[0]
    torch.testing.assert_close(g_comp, g_eager)


# --- SpikingJelly's quantizers (seed 002), their autograd functions copied from the seed -------------

class _SJRound(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return torch.round(x)

    @staticmethod
    def backward(ctx, g):
        return g


class _SJFloor(_SJRound):
    @staticmethod
    def forward(ctx, x):
        return torch.floor(x)


class _SJCeil(_SJRound):
    @staticmethod
    def forward(ctx, x):
        return torch.ceil(x)


class _SJClamp(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, lo, hi):
        ctx.save_for_backward(x)
        ctx.lo, ctx.hi = lo, hi
        return torch.clamp(x, lo, hi)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        mask = (x >= ctx.lo).to(x) * (x <= ctx.hi).to(x)
        return g * mask, None, None


class _SJStep(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, step):
        return torch.round_(x / step) * step

    @staticmethod
    def backward(ctx, g):
        return g, None


class _SJKBit(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, k):
        c = float(1 << k) - 1.0
        x = x * c
        torch.round_(x)
        return x / c

    @staticmethod
    def backward(ctx, g):
        return g, None


def _sj_affine(x, k, w, b):
    return w * _SJKBit.apply(x, k) + b


class _Plain(nn.Module):  # the quantizers as plain hard-op code
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, x):
        return self.fn(x)


class _Plain3(_Plain):
    def forward(self, x, w, b):
        return self.fn(x, w, b)


def _k_bit(x, k: int = 3):
    c = float(1 << k) - 1.0
    return torch.round(x * c) / c


SJ_CASES = [
    ("round", lambda x: torch.round(x), lambda x: _SJRound.apply(x), True),
    ("floor", lambda x: torch.floor(x), lambda x: _SJFloor.apply(x), True),
    ("ceil", lambda x: torch.ceil(x), lambda x: _SJCeil.apply(x), True),
    ("clamp", lambda x: torch.clamp(x, -0.5, 0.75), lambda x: _SJClamp.apply(x, -0.5, 0.75), True),
    ("step_quantize_pow2", lambda x: torch.round(x / 0.25) * 0.25, lambda x: _SJStep.apply(x, 0.25), True),
    ("step_quantize", lambda x: torch.round(x / 0.1) * 0.1, lambda x: _SJStep.apply(x, 0.1), False),
    ("k_bit_quantize", lambda x: _k_bit(x, 3), lambda x: _SJKBit.apply(x, 3), False),
]


@pytest.mark.parametrize("name,plain,seed,exact", SJ_CASES, ids=[c[0] for c in SJ_CASES])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_spikingjelly_quantizers_are_reproduced_with_ste(name, plain, seed, exact, dtype):
    g = torch.Generator().manual_seed(3)
    x = torch.rand(5000, generator=g, dtype=dtype) * 4 - 2
    if name == "clamp":
        x[:2] = torch.tensor([-0.5, 0.75], dtype=dtype)  # the mask is inclusive at both ends
    if name == "k_bit_quantize":
        x = x.abs() / 2  # in [0, 1]
    up = torch.randn(x.shape, generator=g, dtype=dtype)
    gm = sll_fx.linearize_module(_Plain(plain), None, method="ste", verbose=False)
    assert not gm.sll_report.opaque and len(gm.sll_report.rewritten) == (name != "clamp")
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    ya, yb = gm(xa), seed(xb)
    assert torch.equal(ya, yb)
    ga = torch.autograd.grad(ya, xa, up)[0]
    gb = torch.autograd.grad(yb, xb, up)[0]
    if exact:
        assert torch.equal(ga, gb)
    else:  # (g * c) / c: the chain rule through the scale rounds in the last bit
        torch.testing.assert_close(ga, gb, rtol=4 * torch.finfo(dtype).eps, atol=0)


def test_spikingjelly_affine_k_bit_quantize():
    g = torch.Generator().manual_seed(4)
    x = torch.rand(3000, generator=g, dtype=torch.float64)
    w = torch.randn(3000, generator=g, dtype=torch.float64)
    b = torch.randn(3000, generator=g, dtype=torch.float64)
    up = torch.randn(3000, generator=g, dtype=torch.float64)
    gm = sll_fx.linearize_module(_Plain3(lambda x, w, b: w * _k_bit(x, 4) + b), None, method="ste", verbose=False)
    ours = [t.clone().requires_grad_() for t in (x, w, b)]
    theirs = [t.clone().requires_grad_() for t in (x, w, b)]
    ya, yb = gm(*ours), _sj_affine(theirs[0], 4, theirs[1], theirs[2])
    assert torch.equal(ya, yb)
    for a, b_ in zip(torch.autograd.grad(ya, ours, up), torch.autograd.grad(yb, theirs, up)):
        torch.testing.assert_close(a, b_, rtol=1e-15, atol=0)


@pytest.mark.parametrize("op", ["round", "floor", "ceil", "trunc"])
def test_sigmoid_gradient_at_infinities_and_nan_is_zero(op):
    """+-inf (and NaN) are infinitely far from every boundary: sigmoid's derivative there is 0 (their distance was the
    placeholder 1, which gave 2 slope s (1 - s) at s = sigmoid(1 / tau): a gradient at an infinite input)."""
    x = torch.tensor([INF_, -INF_, float("nan"), 0.3], dtype=torch.float64, requires_grad=True)
    getattr(torch.ops.sll, op)(x, eps=TAU, mode="sigmoid").sum().backward()
    assert x.grad[:3].tolist() == [0.0, 0.0, 0.0] and x.grad[3] != 0


def test_calibration_leaves_non_finite_inputs_out():
    """calibrate chooses eps from the finite inputs' distances (non-finite ones were counted at distance 1)."""

    class Round(torch.nn.Module):
        def forward(self, x):
            return torch.round(x)

    x = torch.randn(4000, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    with_inf = torch.cat([x, torch.full((1000,), INF_, dtype=torch.float64), torch.full((500,), float("nan"))])
    gm = sll_fx.linearize_module(Round(), verbose=False)
    finite = sll_fx.calibrate(gm, x)
    assert sll_fx.calibrate(gm, with_inf) == finite

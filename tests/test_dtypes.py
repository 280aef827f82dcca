"""Dtypes and devices: every sll op in float16, bfloat16 and float64, autocast, the precision warning.

Per op and dtype (and per available device: the CPU, CUDA when there is one; shapes and
dtypes also on the meta device):

- outside the bands the value is exactly the hard op's value in that dtype (both modes);
- inside the bands the gradient is SLL_MATH's slope ``h / (2 eps)`` within the dtype's
  tolerance, and the ``linear`` value is ``f_eps(x)`` within the dtype's rounding;
- the output dtype is the hard op's (the promoted floating dtype for ``compare``; the
  input's floating dtype for ``argmax_onehot``, whose hard op is an int64 one-hot);

then linearized models in each dtype and under ``torch.autocast("cpu", dtype=torch.bfloat16)``
against a float32 reference, and :class:`sll_fx.PrecisionWarning` (an eps not larger than the
dtype's spacing at the boundary names the node).

The points are built in float64 and cast to the dtype; whether a point is inside or outside
a band is decided on the value actually representable, with a margin of two ulps.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Callable

import pytest
import torch
import torch.nn.functional as F
from torch import fx, nn

import sll_fx
from _helpers import Fn
from sll_fx import precision
from sll_fx.ops import is_sll_target
from sll_fx.rules import sll_op_name

DTYPES = (torch.float16, torch.bfloat16, torch.float64)
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
MODES = ("linear", "hard")


def ulp(dtype: torch.dtype, at: torch.Tensor | float) -> torch.Tensor:
    """The spacing of ``dtype`` at ``|at|`` (float64), computed here, not by the library."""
    info = torch.finfo(dtype)
    a = torch.as_tensor(at, dtype=torch.float64).abs()
    exponent = torch.floor(torch.log2(a.clamp_min(info.smallest_normal)))
    return torch.exp2(exponent) * info.eps


def sll_op_names(gm: fx.GraphModule) -> list[str]:
    return [sll_op_name(n.target) for n in gm.graph.nodes if n.op == "call_function" and is_sll_target(n.target)]


def grad_rtol(dtype: torch.dtype) -> float:
    """A slope ``1/(2 eps)`` is rounded once to the dtype and multiplied once by the incoming 1."""
    return 4 * torch.finfo(dtype).eps


# ----------------------------------------------------------------------------------------
# the elementwise ops: one jump table each
# ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Elem:
    id: str
    call: Callable            # (x, eps, mode) -> sll output
    hard: Callable            # x -> the hard op's output (the hard op's own dtype)
    boundaries: tuple         # float64 positions of the jumps probed
    jump: float               # h = R - L at each boundary
    eps: float
    out_dtype: Callable = lambda dtype: dtype   # expected output dtype for an input dtype
    t_grad: bool = False      # a tensor threshold that receives -slope


def _hv(x):
    return torch.heaviside(x, torch.tensor(0.5, dtype=x.dtype, device=x.device))


def _cmp(cmp, t):
    fn = {"gt": torch.gt, "ge": torch.ge, "lt": torch.lt, "le": torch.le}[cmp]
    sign = 1.0 if cmp in ("gt", "ge") else -1.0
    sym = {"gt": ">", "ge": ">=", "lt": "<", "le": "<="}[cmp]
    scalar = Elem(f"compare.{cmp}.scalar", lambda x, e, m: sll_fx.threshold(x, t, e, cmp=sym, mode=m),
                  lambda x: fn(x, t).to(x.dtype), (t,), sign, 0.25)

    def tensor_call(x, e, m):
        return torch.ops.sll.compare(x, torch.tensor(t, dtype=x.dtype, device=x.device), cmp, eps=e, mode=m)

    def tensor_hard(x):
        return fn(x, torch.tensor(t, dtype=x.dtype, device=x.device)).to(x.dtype)
    tensor = Elem(f"compare.{cmp}.tensor", tensor_call, tensor_hard, (t,), sign, 0.25, t_grad=True)
    return [scalar, tensor]


ELEMS = [
    Elem("sign", lambda x, e, m: sll_fx.sign(x, e, mode=m), torch.sign, (0.0,), 2.0, 0.25),
    Elem("heaviside", lambda x, e, m: sll_fx.heaviside(x, e, mode=m), _hv, (0.0,), 1.0, 0.25),
    Elem("round", lambda x, e, m: sll_fx.round(x, e, mode=m), torch.round,
         tuple(k + 0.5 for k in range(-4, 4)), 1.0, 0.25),
    Elem("round.decimals1", lambda x, e, m: sll_fx.round(x, e, decimals=1, mode=m),
         lambda x: torch.round(x, decimals=1), tuple((k + 0.5) / 10 for k in range(-6, 6)), 0.1, 0.02),
    Elem("floor", lambda x, e, m: sll_fx.floor(x, e, mode=m), torch.floor, tuple(float(k) for k in range(-4, 5)),
         1.0, 0.25),
    Elem("ceil", lambda x, e, m: sll_fx.ceil(x, e, mode=m), torch.ceil, tuple(float(k) for k in range(-4, 5)),
         1.0, 0.25),
    Elem("trunc", lambda x, e, m: sll_fx.trunc(x, e, mode=m), torch.trunc,
         tuple(float(k) for k in range(-4, 5) if k), 1.0, 0.25),
    *(e for cmp in ("gt", "ge", "lt", "le") for e in _cmp(cmp, 0.75)),
]


def probe(spec: Elem, dtype: torch.dtype, device: str):
    """(x, nearest boundary, inside mask, outside mask): points around every boundary, in ``dtype``."""
    offsets = torch.tensor([-3.0, -1.7, -1.2, -0.93, -0.61, -0.33, -0.07, 0.0, 0.11, 0.38, 0.55, 0.86,
                            0.97, 1.05, 1.4, 2.2, 3.0], dtype=torch.float64)
    b = torch.tensor(spec.boundaries, dtype=torch.float64)
    xs = (b[:, None] + offsets[None, :] * spec.eps).reshape(-1)
    if len(b) > 1:  # (the probes reach the bands of the next boundary out at each end: -4.25 is on -4.5's edge)
        step = float(b[1] - b[0])
        b = torch.cat([b[:1] - step, b, b[-1:] + step])
    x = xs.to(dtype)
    exact = x.to(torch.float64)
    dist = (exact[:, None] - b[None, :]).abs()
    d, nearest = dist.min(dim=1)
    margin = 2 * ulp(dtype, b[nearest])
    inside = d < spec.eps - margin
    outside = d > spec.eps + margin
    return x.to(device), b[nearest], inside, outside


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("spec", ELEMS, ids=lambda s: s.id)
def test_elementwise_op_in_dtype(spec, dtype, mode, device):
    x, b, inside, outside = probe(spec, dtype, device)
    assert inside.sum() >= 3 * len(spec.boundaries) and outside.sum() >= 3 * len(spec.boundaries)
    xr = x.clone().requires_grad_(True)
    y = spec.call(xr, spec.eps, mode)
    hard = spec.hard(x)
    assert y.dtype == hard.dtype == spec.out_dtype(dtype)
    assert y.device == x.device and y.shape == x.shape
    # outside the bands: the hard op's value in this dtype, exactly
    yo, ho = y.detach().cpu()[outside], hard.cpu()[outside]
    assert torch.equal(yo, ho), (x.cpu()[outside][yo != ho], yo[yo != ho], ho[yo != ho])
    if mode == "hard":  # the hard forward is the hard op everywhere
        assert torch.equal(y.detach().cpu(), hard.cpu())
    # gradients: the slope inside, 0 outside
    y.backward(torch.ones_like(y))
    g = xr.grad.detach().cpu().to(torch.float64)
    slope = spec.jump / (2 * spec.eps)
    torch.testing.assert_close(g[inside], torch.full_like(g[inside], slope), rtol=grad_rtol(dtype), atol=0.0)
    assert torch.equal(g[outside], torch.zeros_like(g[outside]))
    if mode == "linear":  # inside: f_eps(x) = L + h (x - b + eps) / (2 eps), to the dtype's rounding
        xi = x.cpu().to(torch.float64)[inside]
        bi = b[inside]
        lo = spec.hard(torch.tensor((bi - spec.eps / 2).tolist(), dtype=torch.float64))
        expected = lo + spec.jump * (xi - bi + spec.eps) / (2 * spec.eps)
        got = y.detach().cpu().to(torch.float64)[inside]
        # a few roundings of x's size, scaled by the slope, and of the result's size
        tol = 4 * (ulp(dtype, xi) * abs(spec.jump) / (2 * spec.eps) + ulp(dtype, expected) + ulp(dtype, spec.jump))
        assert ((got - expected).abs() <= tol).all(), (xi, got, expected)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("cmp", ["gt", "le"])
def test_compare_tensor_threshold_gets_the_negated_slope(cmp, dtype, device):
    t = torch.tensor([0.75, -1.5, 2.0], dtype=dtype, device=device, requires_grad=True)
    x = (t.detach().double().cpu() + torch.tensor([[0.05], [-0.1], [2.0]], dtype=torch.float64)).to(dtype).to(device)
    x.requires_grad_(True)
    eps = 0.25
    y = torch.ops.sll.compare(x, t, cmp, eps=eps)
    assert y.dtype == dtype
    y.sum().backward()
    sign = 1.0 if cmp == "gt" else -1.0
    expected_x = torch.tensor([[1, 1, 1], [1, 1, 1], [0, 0, 0]], dtype=torch.float64) * sign / (2 * eps)
    torch.testing.assert_close(x.grad.cpu().double(), expected_x, rtol=grad_rtol(dtype), atol=0.0)
    torch.testing.assert_close(t.grad.cpu().double(), -expected_x.sum(0), rtol=grad_rtol(dtype), atol=0.0)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_compare_promotes_like_torch(dtype):
    """compare's output is the promoted floating dtype of x and its threshold (hard: the user's cast)."""
    x = torch.zeros(3, dtype=dtype)
    for t, expected in ((0.5, dtype), (torch.tensor(0.5, dtype=torch.float64), dtype),
                        (torch.ones(3, dtype=torch.float64), torch.float64),
                        (torch.ones(3, dtype=torch.float32), torch.promote_types(dtype, torch.float32))):
        assert sll_fx.threshold(x, t, 0.1).dtype == expected == torch.result_type(x, t)
    # integer x: the hard comparison, as a float (nothing to linearize)
    assert sll_fx.threshold(torch.arange(3), 1, 0.1).dtype == torch.get_default_dtype()


# ----------------------------------------------------------------------------------------
# the selections: where / masked_fill, one_hot(argmax), top-k masks
# ----------------------------------------------------------------------------------------

class Where(nn.Module):
    def forward(self, x, a, b):
        return torch.where(x > 0.75, a, b)


class MaskedFill(nn.Module):
    def forward(self, x):
        return x.masked_fill(x < 0.25, -1.0)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_where_in_dtype(dtype, mode, device):
    eps = 0.25
    spec = Elem("where", None, None, (0.75,), 1.0, eps)
    x, _, inside, outside = probe(spec, dtype, device)
    a = torch.full_like(x, 2.0).requires_grad_(True)
    b = torch.full_like(x, -1.0).requires_grad_(True)
    gm = sll_fx.linearize_module(Where(), eps=eps, mode=mode, verbose=False)
    # (hard mode: the mask's comparison, and its linear copy whose surrogate weighs the branches' gradients)
    assert sll_op_names(gm) == (["compare", "compare", "select"] if mode == "hard" else ["compare", "select"])
    xr = x.clone().requires_grad_(True)
    y = gm(xr, a, b)
    hard = Where()(x, a.detach(), b.detach())
    assert y.dtype == hard.dtype == dtype
    assert torch.equal(y.detach().cpu()[outside], hard.cpu()[outside])
    if mode == "hard":
        assert torch.equal(y.detach().cpu(), hard.cpu())
    y.sum().backward()
    g = xr.grad.cpu().double()
    torch.testing.assert_close(g[inside], torch.full_like(g[inside], 3.0 / (2 * eps)), rtol=grad_rtol(dtype), atol=0)
    assert torch.equal(g[outside], torch.zeros_like(g[outside]))
    # the branches get the surrogate's weights: exactly 1/0 outside the band
    ga, gb = a.grad.cpu().double(), b.grad.cpu().double()
    assert torch.equal(ga[outside] + gb[outside], torch.ones_like(ga[outside]))
    torch.testing.assert_close(ga + gb, torch.ones_like(ga), rtol=0, atol=2 * torch.finfo(dtype).eps)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_masked_fill_in_dtype(dtype, mode):
    eps = 0.25
    x, _, inside, outside = probe(Elem("mf", None, None, (0.25,), 1.0, eps), dtype, "cpu")
    gm = sll_fx.linearize_module(MaskedFill(), eps=eps, mode=mode, verbose=False)
    xr = x.clone().requires_grad_(True)
    y = gm(xr)
    hard = MaskedFill()(x)
    assert y.dtype == hard.dtype == dtype
    assert torch.equal(y.detach()[outside], hard[outside])
    y.sum().backward()
    # y = s * (-1) + (1 - s) * x with s = clamp((0.25 - x) / (2 eps) + 1/2, 0, 1)
    xd = x.double()
    s = ((0.25 - xd) / (2 * eps) + 0.5).clamp(0, 1)  # (in hard mode too: SLL_MATH.md's derivative of f_eps)
    expected = (1 + xd) / (2 * eps) + (1 - s)
    g = xr.grad.double()
    tol = 8 * torch.finfo(dtype).eps * expected.abs() + 4 * ulp(dtype, xd) / (2 * eps)
    assert ((g[inside] - expected[inside]).abs() <= tol[inside]).all()
    torch.testing.assert_close(g[outside], (xd >= 0.25).double()[outside] * 1.0, rtol=0, atol=0)


def _margin_rows(dtype: torch.dtype, eps: float, device: str):
    """Rows whose two largest entries are ``m`` apart, for margins inside and outside the band."""
    margins = torch.tensor([-1.5, -0.6, -0.3, -0.2, -0.1, 0.05, 0.15, 0.22, 0.3, 0.45, 1.2], dtype=torch.float64) * eps * 2
    rows = torch.stack([torch.tensor([0.5, 0.5 - float(m), -2.0, -3.5], dtype=torch.float64) for m in margins])
    x = rows.to(dtype)
    real = x.double()
    m = real[:, 0] - real[:, 1]
    margin_ulp = 2 * ulp(dtype, 2.0)
    return x.to(device), m, m.abs() < eps - margin_ulp, m.abs() > eps + margin_ulp


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_argmax_onehot_in_dtype(dtype, mode, device):
    eps = 0.25
    x, m, inside, outside = _margin_rows(dtype, eps, device)
    assert inside.any() and outside.any()
    xr = x.clone().requires_grad_(True)
    y = torch.ops.sll.argmax_onehot(xr, -1, 4, eps=eps, mode=mode)
    hard = F.one_hot(x.argmax(-1), 4)
    assert hard.dtype == torch.int64 and y.dtype == dtype  # the floating surrogate of an int64 one-hot
    assert torch.equal(y.detach().cpu()[outside], hard.cpu()[outside].to(dtype))
    if mode == "hard":
        assert torch.equal(y.detach().cpu(), hard.cpu().to(dtype))
    # d y_0 / d x_0 = 1/(2 eps), d y_0 / d x_1 = -1/(2 eps) in the band (x_0 vs the runner-up x_1)
    y[:, 0].sum().backward()
    g = xr.grad.cpu().double()
    slope = 1 / (2 * eps)
    torch.testing.assert_close(g[inside][:, :2], torch.tensor([slope, -slope]).double().expand(int(inside.sum()), 2),
                               rtol=grad_rtol(dtype), atol=0)
    assert torch.equal(g[outside], torch.zeros_like(g[outside]))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_topk_mask_in_dtype(dtype, mode, device):
    eps = 0.25
    # k = 1 of [x_0, x_1, ...]: tau = (x_0 + x_1) / 2, so x_0 - tau = m / 2 for the margin m = x_0 - x_1
    x, m, _, _ = _margin_rows(dtype, eps, device)
    half = m.abs() / 2
    margin_ulp = 2 * ulp(dtype, 2.0)
    inside, outside = half < eps - margin_ulp, half > eps + margin_ulp
    assert inside.any() and outside.any()
    xr = x.clone().requires_grad_(True)
    y = torch.ops.sll.topk_mask(xr, 1, -1, eps=eps, mode=mode)
    hard = torch.zeros_like(x).scatter(-1, torch.topk(x, 1, -1).indices, 1.0)
    assert y.dtype == hard.dtype == dtype
    assert torch.equal(y.detach().cpu()[outside], hard.cpu()[outside])
    if mode == "hard":
        assert torch.equal(y.detach().cpu(), hard.cpu())
    # y_0 = clamp((x_0 - tau) / (2 eps) + 1/2): d/dx_0 = 1/(4 eps), d/dx_1 = -1/(4 eps) (through tau)
    y[:, 0].sum().backward()
    g = xr.grad.cpu().double()
    q = 1 / (4 * eps)
    torch.testing.assert_close(g[inside][:, :2], torch.tensor([q, -q]).double().expand(int(inside.sum()), 2),
                               rtol=grad_rtol(dtype), atol=0)
    assert torch.equal(g[outside], torch.zeros_like(g[outside]))


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_select_scalar_branches_keep_the_tensor_dtype(dtype):
    x = torch.linspace(-1, 1, 9, dtype=dtype)
    s = sll_fx.threshold(x, 0.0, 0.25)
    assert torch.ops.sll.select(s, x, 0.0).dtype == dtype
    assert torch.ops.sll.select(s, 1.0, x).dtype == dtype
    assert torch.ops.sll.select(s, x, x * 2).dtype == dtype


# ----------------------------------------------------------------------------------------
# every op on the meta device: shapes and dtypes of the hard op, a backward
# ----------------------------------------------------------------------------------------

META_CALLS = {
    "sign": lambda x: sll_fx.sign(x, 0.1),
    "heaviside": lambda x: sll_fx.heaviside(x, 0.1),
    "round": lambda x: sll_fx.round(x, 0.1),
    "round.decimals": lambda x: sll_fx.round(x, 0.01, decimals=1),
    "floor": lambda x: sll_fx.floor(x, 0.1),
    "ceil": lambda x: sll_fx.ceil(x, 0.1),
    "trunc": lambda x: sll_fx.trunc(x, 0.1),
    "compare.scalar": lambda x: sll_fx.threshold(x, 0.5, 0.1),
    "compare.tensor": lambda x: sll_fx.threshold(x, torch.zeros(5, dtype=x.dtype, device=x.device), 0.1),
    "select": lambda x: torch.ops.sll.select(sll_fx.threshold(x, 0.5, 0.1), x, -x),
    "argmax_onehot": lambda x: torch.ops.sll.argmax_onehot(x, -1, 5, eps=0.1),
    "topk_mask": lambda x: torch.ops.sll.topk_mask(x, 2, -1, eps=0.1),
}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("name", list(META_CALLS))
def test_ops_on_the_meta_device(name, dtype, mode):
    call = META_CALLS[name]
    if mode == "hard":
        if name == "select":
            pytest.skip("select has no mode")
        base = call
        call = lambda x: _with_mode(base, x)  # noqa: E731
    x = torch.randn(3, 5, dtype=dtype, device="meta", requires_grad=True)
    y = call(x)
    ref = call(torch.randn(3, 5, dtype=dtype))
    assert y.device.type == "meta" and y.shape == ref.shape and y.dtype == ref.dtype
    y.sum().backward()
    assert x.grad is not None and x.grad.device.type == "meta" and x.grad.shape == x.shape


def _with_mode(call, x):
    """``call`` in hard mode: the same op, read off the graph of the linear call."""
    gm = fx.symbolic_trace(lambda x: call(x))
    for node in gm.graph.nodes:
        if node.op == "call_function" and is_sll_target(node.target) and "eps" in node.kwargs:
            node.update_kwarg("mode", "hard")
    gm.recompile()
    return gm(x)


# ----------------------------------------------------------------------------------------
# linearized models in each dtype, on each device, on meta; autocast
# ----------------------------------------------------------------------------------------

class Mixed(nn.Module):
    """Every rule kind behind real layers."""

    def __init__(self):
        super().__init__()
        self.a = nn.Linear(8, 16)
        self.b = nn.Linear(16, 8)
        self.c = nn.Linear(8, 4)
        self.t = nn.Parameter(torch.tensor(0.1))

    def forward(self, x):
        h = self.a(x)
        q = torch.round(h * 2) / 2 + torch.sign(h) * 0.1 + (h > self.t).to(h.dtype) * 0.5 \
            + torch.floor(h) * 0.1 + torch.ceil(h) * 0.05 + torch.trunc(h) * 0.05
        g = self.b(q)
        g = torch.where(g > 0.0, g, 0.1 * g) + g.masked_fill(g < -0.5, 0.0) \
            + F.one_hot(g.argmax(-1), 8).to(g.dtype) \
            + torch.zeros_like(g).scatter(-1, torch.topk(g, 3, -1).indices, 1.0)
        return self.c(g)


def _mixed(seed: int = 0) -> Mixed:
    torch.manual_seed(seed)
    return Mixed()


def test_mixed_model_rewrites_every_kind():
    gm = sll_fx.linearize_module(_mixed(), eps=0.3, verbose=False)
    assert set(sll_op_names(gm)) == {"round", "sign", "compare", "floor", "ceil", "trunc", "select",
                                     "argmax_onehot", "topk_mask"}


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_linearized_model_in_dtype(dtype, device):
    model = _mixed().to(device=device, dtype=dtype)
    x = torch.randn(32, 8, generator=torch.Generator().manual_seed(1)).to(device=device, dtype=dtype)
    ref = model(x)
    hard_mode = sll_fx.linearize_module(model, eps=0.3, mode="hard", verbose=False)
    assert torch.equal(hard_mode(x), ref)  # hard forward: the model's value, bit for bit, in this dtype
    gm = sll_fx.linearize_module(model, eps=0.3, verbose=False)
    assert torch.equal(sll_fx.export_hard(gm, verbose=False)(x), ref)
    for module in (gm, hard_mode):
        y = module(x)
        assert y.dtype == ref.dtype == dtype and y.device == ref.device
        y.square().mean().backward()
        grads = [p.grad for p in module.parameters()]
        assert all(g is not None and g.dtype == dtype and g.device.type == device and torch.isfinite(g).all()
                   for g in grads)
        assert module.a.weight.grad.abs().sum() > 0  # the gradient crossed the discrete ops
        module.zero_grad()


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_linearized_model_moves_to_the_input_device_and_dtype_after_linearizing(dtype):
    """Linearize in float32 on the CPU, then move: eps buffers and all state follow ``.to``."""
    gm = sll_fx.linearize_module(_mixed(), eps=0.3, verbose=False)
    gm.to(dtype=dtype)
    x = torch.randn(8, 8, dtype=dtype)
    y = gm(x)
    assert y.dtype == dtype
    for device in DEVICES[1:] + ["meta"]:
        moved = sll_fx.linearize_module(_mixed(), eps=0.3, verbose=False).to(device=device, dtype=dtype)
        assert all(b.device.type == device for b in moved.buffers())
        out = moved(x.to(device))
        assert out.device.type == device and out.dtype == dtype and out.shape == y.shape


def test_linearized_model_on_the_meta_device_is_shape_only():
    model = _mixed().to("meta")
    gm = sll_fx.linearize_module(model, eps=0.3, verbose=False)
    x = torch.empty(4, 8, device="meta")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no precision check can run without data: none warns or fails
        y = gm(x)
    assert y.device.type == "meta" and y.shape == (4, 4)
    y.sum().backward()
    assert gm.a.weight.grad.device.type == "meta"


def _grads(module):
    return {n: p.grad.detach().clone() for n, p in module.named_parameters()}


def _rel(a, b):
    return float((a.float() - b.float()).norm() / b.float().norm().clamp_min(1e-12))


def test_autocast_bfloat16_matches_float32_reference():
    model = _mixed()
    gm = sll_fx.linearize_module(model, eps=0.3, verbose=False)
    x = torch.randn(128, 8, generator=torch.Generator().manual_seed(3))
    ref = gm(x)
    ref.square().mean().backward()
    g_ref = _grads(gm)
    gm.zero_grad()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = gm(x)
        assert y.dtype == torch.bfloat16  # the last Linear runs in bfloat16
        loss = y.float().square().mean()
    loss.backward()
    torch.testing.assert_close(y.float(), ref, atol=0.05, rtol=0.03)
    g = _grads(gm)
    for name in g_ref:
        assert g[name].dtype == torch.float32  # autocast keeps the parameters float32
        assert _rel(g[name], g_ref[name]) < 0.25, name
        cos = F.cosine_similarity(g[name].flatten(), g_ref[name].flatten(), dim=0)
        assert cos > 0.97, (name, float(cos))


def test_autocast_hard_mode_is_the_hard_model_under_autocast():
    model = _mixed()
    gm = sll_fx.linearize_module(model, eps=0.3, mode="hard", verbose=False)
    x = torch.randn(64, 8, generator=torch.Generator().manual_seed(4))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y, ref = gm(x), model(x)
        assert torch.equal(y, ref)
        y.float().sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in gm.parameters())
    assert gm.a.weight.grad.abs().sum() > 0


def test_autocast_exported_hard_model_is_bitwise_the_model():
    model = _mixed()
    hard = sll_fx.export_hard(sll_fx.linearize_module(model, eps=0.3, verbose=False), verbose=False)
    x = torch.randn(64, 8, generator=torch.Generator().manual_seed(5))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert torch.equal(hard(x), model(x))


# ----------------------------------------------------------------------------------------
# the precision warning
# ----------------------------------------------------------------------------------------

class Quant(nn.Module):
    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(100.0))

    def forward(self, x):
        h = x * self.scale
        return torch.round(h) + torch.sign(x) + (x > 0.5).float()


def _catch(fn):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = fn()
    return out, [w for w in caught if issubclass(w.category, sll_fx.PrecisionWarning)]


def _data(dtype=torch.float32, n=64, seed=0):
    return torch.rand(n, generator=torch.Generator().manual_seed(seed)).to(dtype) + 0.5  # round sees 50..150


def test_precision_warning_names_the_node_op_eps_dtype_spacing_and_fix():
    gm = sll_fx.linearize_module(Quant(), eps=0.01, verbose=False)
    _, caught = _catch(lambda: gm(_data()))
    assert caught == []  # float32: the spacing near 150 is 1.5e-5 < eps
    gm.to(torch.float16)
    _, caught = _catch(lambda: gm(_data(torch.float16)))
    assert len(caught) == 1, [str(w.message) for w in caught]
    w = caught[0]
    assert issubclass(sll_fx.PrecisionWarning, UserWarning)
    assert w.filename == __file__  # points at the gm(...) call
    msg = str(w.message)
    node = next(n.name for n in gm.graph.nodes if n.op == "call_function" and is_sll_target(n.target)
                and sll_op_name(n.target) == "round")
    assert w.message.node == node and w.message.op == "round" and w.message.dtype == torch.float16
    assert w.message.spacing >= w.message.eps and w.message.spacing == precision.spacing(torch.float16,
                                                                                         w.message.boundary)
    for part in (repr(node), "sll.round", "eps=0.01", "torch.float16", f"{w.message.spacing:g}",
                 f"boundary {w.message.boundary:g}", "Fix:", "set_eps", "wider dtype", "test_dtypes.py:"):
        assert part in msg, (part, msg)
    assert 50 <= w.message.boundary <= 151 and w.message.starved / w.message.total >= 0.5


class _Gate(nn.Module):
    def forward(self, x):
        return (x > 100.0).float() + torch.round(x)


def test_precision_warning_names_nodes_as_the_report_does():
    """The warning named the graph node (``compare``, ``round_2``) where the report, ``eps_state`` and ``set_eps``
    say ``gt``, ``round`` (a55)."""
    gm = sll_fx.linearize_module(_Gate(), eps=1e-9, verbose=False)
    _, caught = _catch(lambda: gm(_data() * 100))
    assert {w.message.node for w in caught} == {e.node for e in gm.sll_report.entries} == set(sll_fx.eps_state(gm))


def test_precision_warning_once_per_node_and_dtype_and_again_for_a_new_dtype():
    gm = sll_fx.linearize_module(Quant(), eps=0.01, verbose=False)
    gm.to(torch.float16)
    _, first = _catch(lambda: gm(_data(torch.float16)))
    _, again = _catch(lambda: [gm(_data(torch.float16, seed=s)) for s in range(3)])
    assert len(first) == 1 and again == []
    gm.to(torch.bfloat16)
    _, bf = _catch(lambda: gm(_data(torch.bfloat16)))
    assert len(bf) == 1 and bf[0].message.dtype == torch.bfloat16 and bf[0].message.node == first[0].message.node
    # a copy is a new module: it warns again
    import copy
    _, copied = _catch(lambda: copy.deepcopy(gm)(_data(torch.bfloat16)))
    assert len(copied) == 1


def test_precision_warning_under_autocast():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(4, 4)

        def forward(self, x):
            return torch.round(self.lin(x) * 50.0)

    torch.manual_seed(0)
    gm = sll_fx.linearize_module(Net(), eps=0.05, verbose=False)
    x = torch.randn(256, 4) * 3
    _, caught = _catch(lambda: gm(x))
    assert caught == []
    with torch.autocast("cpu", dtype=torch.bfloat16):
        _, caught = _catch(lambda: gm(x))
    assert len(caught) == 1 and caught[0].message.dtype == torch.bfloat16 and caught[0].message.op == "round"


def test_raising_eps_with_set_eps_clears_the_warning():
    gm = sll_fx.linearize_module(Quant(), eps=0.01, verbose=False).to(torch.float16)
    _, caught = _catch(lambda: gm(_data(torch.float16)))
    assert len(caught) == 1
    sll_fx.set_eps(gm, 0.3, where="round")  # float16 near 150 has spacing 0.125
    _, caught = _catch(lambda: gm(_data(torch.float16, seed=1)))
    assert caught == []
    sll_fx.set_eps(gm, 0.05, where="round")  # the check runs again for the new eps
    _, caught = _catch(lambda: gm(_data(torch.float16, seed=2)))
    assert len(caught) == 1 and caught[0].message.eps == pytest.approx(0.05, rel=1e-3)


def test_an_eps_schedule_is_checked_once_per_octave_and_remembered_boundedly():
    """set_eps on every step (annealing) re-runs the check only when an eps reaches another power-of-two octave:
    before, every step was a new signature (a checked forward: +42% step time) and the module kept one per
    step forever."""
    import math
    gm = sll_fx.linearize_module(Quant(), eps=0.3, verbose=False)
    schedule = [0.3 * (0.05 / 0.3) ** (i / 199) for i in range(200)]
    for i, eps in enumerate(schedule):
        sll_fx.set_eps(gm, eps)
        gm(_data(torch.float32, seed=i % 3))
    octaves = {math.floor(math.log2(e)) for e in schedule}
    assert len(gm.__dict__["_sll_precision_seen"]) == len(octaves) == 4  # (0.3 -> 0.05: 2^-2 ... 2^-5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", sll_fx.PrecisionWarning)  # (the small eps warn: not what is tested here)
        for i in range(100):  # 80 octaves: the remembered signatures stay bounded
            sll_fx.set_eps(gm, 2.0 ** -(i % 80 + 3))
            gm(_data(torch.float32))
    assert len(gm.__dict__["_sll_precision_seen"]) <= precision._MAX_SEEN


def test_precision_warning_for_a_threshold_and_none_for_sign():
    class Gate(nn.Module):
        def forward(self, x):
            return (x > 300.0).float() + (x > 0.5).float() + torch.sign(x)

    gm = sll_fx.linearize_module(Gate(), eps=0.5, verbose=False)
    x = torch.linspace(0, 600, 101, dtype=torch.bfloat16)
    _, caught = _catch(lambda: gm(x))
    # bfloat16 at 300: spacing 2 >= 0.5; at 0.5: 0.0039 < 0.5; sign: boundary 0, subnormal spacing
    assert [w.message.op for w in caught] == ["compare"] and caught[0].message.boundary == 300.0
    assert caught[0].message.spacing == 2.0


def test_a_few_outliers_do_not_warn():
    gm = sll_fx.linearize_module(Quant(), eps=0.2, verbose=False).to(torch.bfloat16)
    x = torch.cat([torch.rand(100) * 0.02, torch.tensor([1.5, 1.6])]).to(torch.bfloat16)  # round sees <= 2, and 150
    _, caught = _catch(lambda: gm(x))
    assert caught == []
    fresh = sll_fx.linearize_module(Quant(), eps=0.2, verbose=False).to(torch.bfloat16)
    _, caught = _catch(lambda: fresh(x[-2:].repeat(10)))  # most of the input sits where bf16 spacing is 1
    assert len(caught) == 1


def test_precision_warning_names_nodes_inside_opaque_modules():
    class Inner(nn.Module):
        def forward(self, h):
            return torch.floor(h * 1000.0)

    class Moody(nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = Inner()

        def forward(self, h):
            if h.sum() > 0:
                return self.inner(h)
            return -self.inner(-h)

    class Top(nn.Module):
        def __init__(self):
            super().__init__()
            self.block = Moody()

        def forward(self, x):
            return self.block(x) + torch.round(x)

    gm = sll_fx.linearize_module(Top(), eps=0.05, verbose=False)
    assert [o.path for o in gm.sll_report.opaque] == ["block"]
    _, caught = _catch(lambda: gm(torch.rand(32, dtype=torch.float16) + 0.5))
    inner = gm.get_submodule("block.inner")
    floor = next(n.name for n in inner.graph.nodes if n.op == "call_function" and is_sll_target(n.target))
    assert [w.message.node for w in caught] == [f"block.inner.{floor}"]  # round (top level) is fine: |x| < 2
    assert "test_dtypes.py:" in caught[0].message.source


def test_findings_and_explicit_ops_and_switch():
    class Explicit(nn.Module):
        def forward(self, x):
            return sll_fx.round(x, 0.01)

    x = torch.full((10,), 100.25, dtype=torch.bfloat16)
    found = precision.findings(Explicit(), x)
    assert len(found) == 1 and found[0].op == "round" and found[0].node.startswith("test_dtypes.py:")
    gm = sll_fx.linearize_module(Quant(), eps=0.01, verbose=False).to(torch.float16)
    previous = precision.set_checks(False)
    try:
        _, caught = _catch(lambda: gm(_data(torch.float16)))
        assert caught == []
    finally:
        precision.set_checks(previous)
    assert [f.op for f in precision.findings(gm, _data(torch.float16))] == ["round"]


def test_spacing_and_starved_from():
    assert precision.spacing(torch.float32, 1.0) == torch.finfo(torch.float32).eps
    assert precision.spacing(torch.bfloat16, 100.0) == 0.5
    assert precision.spacing(torch.float16, 0.0) == 2.0 ** -24
    assert precision.spacing(torch.float16, 1e6) == math.inf  # beyond float16's range
    for dtype in DTYPES:
        for eps in (1e-9, 1e-4, 0.01, 0.3):
            t = precision.starved_from(dtype, eps)
            if t == 0.0:
                assert precision.spacing(dtype, 0.0) >= eps
            elif math.isfinite(t):
                assert precision.spacing(dtype, t) >= eps > precision.spacing(dtype, t * (1 - 2 ** -30))
    # the library's spacing agrees with the representable neighbours of the dtype
    for dtype in DTYPES:
        for at in (0.75, 1.0, 3.0, 150.0):
            a = torch.tensor(at, dtype=dtype)
            nxt = torch.nextafter(a.double(), torch.tensor(math.inf, dtype=torch.float64)) if dtype == torch.float64 \
                else (a.double() + ulp(dtype, at)).to(dtype)
            assert float(nxt.double() - a.double()) == precision.spacing(dtype, at)


def test_no_check_while_tracing_or_compiling_the_module():
    gm = sll_fx.linearize_module(Quant(), eps=0.01, verbose=False).to(torch.float16)

    class Outer(nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = gm

        def forward(self, x):
            return self.inner(x) * 2

    traced, caught = _catch(lambda: fx.symbolic_trace(Outer()))  # the check must not run on proxies
    assert caught == []
    assert "round" in sll_op_names(traced)
    _, caught = _catch(lambda: traced(_data(torch.float16)))  # a plain GraphModule: not checked
    assert caught == []
    x = _data(torch.float16)
    _, caught = _catch(lambda: torch.jit.trace(gm, (x,), check_trace=False))
    assert caught == []
    _, caught = _catch(lambda: gm(x))  # the first real call is checked
    assert len(caught) == 1


def test_evaluation_under_no_grad_is_not_checked_and_does_not_use_up_the_check():
    gm = sll_fx.linearize_module(Quant(), eps=0.01, verbose=False).to(torch.float16)
    with torch.no_grad():
        _, caught = _catch(lambda: gm(_data(torch.float16)))
    assert caught == []
    with torch.inference_mode():
        _, caught = _catch(lambda: gm(_data(torch.float16)))
    assert caught == []
    _, caught = _catch(lambda: gm(_data(torch.float16)))  # the first training-style call
    assert len(caught) == 1


class _Decimals(nn.Module):
    def forward(self, x):
        return torch.round(x, decimals=1)


@pytest.mark.parametrize("cast", ["bfloat16", "half", "to_float16", "double"])
def test_a_dtype_cast_keeps_the_eps_buffers_float64_and_at_their_limit(cast):
    """eps at round(decimals=1)'s limit 0.05: bfloat16 would round it up to 0.05005, over the limit
    (every call then raised EpsError); the buffers stay float64 and exactly the eps that was chosen."""
    gm = sll_fx.linearize_module(_Decimals(), eps=0.05, verbose=False)
    dtype = {"bfloat16": torch.bfloat16, "half": torch.float16, "to_float16": torch.float16,
             "double": torch.float64}[cast]
    gm = {"bfloat16": lambda: gm.bfloat16(), "half": lambda: gm.half(), "double": lambda: gm.double(),
          "to_float16": lambda: gm.to(torch.float16)}[cast]()
    bufs = {n: b for n, b in gm.named_buffers() if "_sll_eps_" in n}
    assert len(bufs) == 1 and all(b.dtype == torch.float64 and b.item() == 0.05 for b in bufs.values())
    x = torch.tensor([0.12, 0.26, 0.25, -0.35], dtype=dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", sll_fx.PrecisionWarning)
        y = gm(x)
        hard = sll_fx.export_hard(gm, verbose=False)(x)
    assert y.dtype == dtype and torch.equal(y, sll_fx.round(x, 0.05, decimals=1))  # the op at eps = 0.05 exactly
    assert torch.equal(hard, torch.round(x, decimals=1))
    sll_fx.set_eps(gm, 0.05)  # validated, then stored exactly
    assert [b.item() for n, b in gm.named_buffers() if "_sll_eps_" in n] == [0.05]
    gm(x)


def test_eps_buffers_still_move_with_the_module():
    gm = sll_fx.linearize_module(_Decimals(), eps=0.05, verbose=False).to("meta")
    assert all(b.device.type == "meta" and b.dtype == torch.float64
               for n, b in gm.named_buffers() if "_sll_eps_" in n)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_a_dtype_cast_keeps_the_tensor_literals_of_forward(dtype):
    """torch.tensor([...]) in forward is fx's _tensor_constant0, a buffer of the result: model.half() leaves the
    literal float32 (it is made in forward), so gm.half() must too, or a half input stops being promoted."""
    class Literal(nn.Module):
        def forward(self, x):
            return torch.round(x * 4) * torch.tensor([0.5, 0.25, 2.0])

    model = Literal()
    x = torch.tensor([0.3, -0.8, 1.1]).to(dtype)
    for gm in (sll_fx.linearize_module(model, eps=0.05, verbose=False),
               sll_fx.export_hard(model, verbose=False)):
        assert gm._tensor_constant0.dtype == torch.float32
        gm.to(dtype)
        assert gm._tensor_constant0.dtype == torch.float32
        out = sll_fx.export_hard(gm, verbose=False)(x)
        assert out.dtype == model(x).dtype == torch.float32
        assert torch.equal(out, model(x))


def test_a_threshold_at_a_power_of_two_is_not_starved_by_the_spacing_above_it():
    # (it warned "passes no gradient" while every element got the slope: below 0.25 the float16 spacing is
    # half the spacing above it, smaller than eps)
    class Gate(nn.Module):
        def forward(self, x):
            return (x > 0.25).float()

    gm = sll_fx.linearize_module(Gate(), eps=2e-4, verbose=False)
    below = torch.tensor(0.25 - 2.0 ** -13, dtype=torch.float16)  # float16's neighbour below 0.25 (2^-12 above)
    x = torch.stack([below, torch.tensor(0.25, dtype=torch.float16)]).repeat(4).requires_grad_()
    out, caught = _catch(lambda: gm(x))
    out.sum().backward()
    assert float(below) < 0.25 and caught == []
    assert torch.equal(x.grad, torch.full_like(x, 2500.0))  # slope 1/(2 eps), in float16
    assert precision.findings(sll_fx.linearize_module(Gate(), eps=1e-4, verbose=False), x.detach())  # eps <= s/2 below


def test_the_fix_of_a_round_with_decimals_suggests_an_eps_within_its_limit():
    # (float16, decimals=2: it said "no valid eps is that wide" or suggested 0.0078, over the limit 0.005)
    class Cents(nn.Module):
        def forward(self, x):
            return torch.round(x, decimals=2)

    gm = sll_fx.linearize_module(Cents(), eps=0.003, verbose=False)
    x = (torch.rand(64, generator=torch.Generator().manual_seed(0)) * 2 + 4).to(torch.float16)  # spacing 2^-8
    _, caught = _catch(lambda: gm(x))
    assert len(caught) == 1 and caught[0].message.spacing == 2.0 ** -8
    assert "sll_fx.set_eps(gm, 0.005, where='round_1')" in str(caught[0].message)
    sll_fx.set_eps(gm, 0.005, where="round_1")  # the suggestion is valid, and the warning goes
    _, caught = _catch(lambda: gm(x))
    assert caught == []


@pytest.mark.parametrize("dtype,eps", [(torch.float16, 5e-6), (torch.bfloat16, 1e-39), (torch.float32, 1e-39)])
@pytest.mark.parametrize("op", ["sign", "round", "heaviside", "threshold"])
def test_an_eps_whose_slope_overflows_the_dtype_is_an_eps_error(op, dtype, eps):
    """The slope 1/eps overflowing the input's dtype gave torch's "value cannot be converted to type c10::Half
    without overflow" (naming no op, node or fix), or NaN values and gradients outside the band (sign); audit."""
    f = {"sign": lambda x: sll_fx.sign(x, eps), "round": lambda x: sll_fx.round(x, eps),
         "heaviside": lambda x: sll_fx.heaviside(x, eps), "threshold": lambda x: sll_fx.threshold(x, 0.5, eps)}[op]
    x = torch.tensor([0.0, 0.25, 0.5, -2.0], dtype=dtype, requires_grad=True)
    with pytest.raises(sll_fx.EpsError, match=rf"sll\.\w+: eps={eps!r} is too small for {dtype}: .*\nFix: use eps >="):
        f(x)


@pytest.mark.parametrize("dtype,wider", [(torch.float16, r", or run the op in float32 \(x\.float\(\)\)"),
                                         (torch.bfloat16, r", or run the op in float32 \(x\.float\(\)\)"),
                                         (torch.float32, r", or run the op in float64 \(x\.double\(\)\)"),
                                         (torch.float64, "")])
def test_the_fix_for_an_eps_too_small_names_a_wider_dtype_where_there_is_one(dtype, wider):
    """It said "or run the op in float32 (x.float())" to an op already running in float32 and in float64 (audit)."""
    eps = {torch.float16: 1e-6, torch.bfloat16: 1e-39, torch.float32: 1e-39, torch.float64: 1e-320}[dtype]
    with pytest.raises(sll_fx.EpsError, match=rf"\nFix: use eps >= \S+ \(far below the dtype's spacing near a "
                                              rf"boundary anyway\){wider}$"):
        sll_fx.sign(torch.tensor([0.0, 0.5], dtype=dtype), eps)


def test_the_slope_limit_is_each_ops_own():
    """sign's slope is 1/eps, the others' 1/(2 eps): at eps = 1e-5 in float16 (slope 50000 < 65504) they run (the check
    first used sign's slope for every op; audit of the fix)."""
    x = torch.tensor([0.0, 0.5, 1.5], dtype=torch.float16, requires_grad=True)
    (g,) = torch.autograd.grad(sll_fx.round(x, 1e-5).sum(), x)
    assert g.tolist() == [0.0, 49984.0, 49984.0]  # (1/(2e-5) in float16)
    with pytest.raises(sll_fx.EpsError, match=r"sll\.sign: eps=1e-05 is too small for torch\.float16: .* 2/\(2 eps\)"):
        sll_fx.sign(x, 1e-5)


def test_an_eps_too_small_for_the_dtype_names_the_node():
    gm = sll_fx.linearize_module(Fn(torch.sign), eps=1e-5, verbose=False)
    with pytest.raises(sll_fx.EpsError, match=r"node 'sign' \(.*\): sll\.sign: eps=1e-05 is too small for torch\.float16"):
        gm(torch.tensor([0.0, 0.25], dtype=torch.float16))
    gm(torch.tensor([0.0, 0.25]))  # (float32: fine)


class _TwoOps(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 4)

    def forward(self, x):
        return torch.round(self.lin(x)) + torch.floor(self.lin(x))


class _Inner(nn.Module):
    def forward(self, x):
        return torch.floor(x) * 2


class _Branchy(nn.Module):
    def __init__(self):
        super().__init__()
        self.g = _Inner()

    def forward(self, x):  # control flow on a value: kept opaque, ``g`` traced (a nested GraphModule)
        return self.g(x) if x.sum() > 0 else self.g(-x)


class _Nested(nn.Module):
    def __init__(self):
        super().__init__()
        self.b = _Branchy()

    def forward(self, x):
        return torch.round(x) + self.b(x)


@pytest.mark.parametrize("context", ["enable_grad", "no_grad", "inference_mode"])
def test_an_invalid_eps_met_at_call_time_names_the_node_in_every_grad_mode(context):
    """The node was named only while the precision check ran (the first call with gradients enabled): under
    torch.no_grad() or inference_mode the same EpsError lost the node and its source line (audit)."""
    ctx = getattr(torch, context)
    torch.manual_seed(0)
    gm = sll_fx.linearize_module(_TwoOps(), eps=0.1, verbose=False)
    with torch.no_grad():
        gm._sll_eps_floor.fill_(0.9)
    with pytest.raises(sll_fx.EpsError, match=r"^node 'floor' \(test_dtypes\.py:\d+\): sll\.floor: eps=0\.9 is too wide"):
        with ctx():
            gm(torch.randn(3, 4))
    gm = sll_fx.linearize_module(Fn(torch.sign), eps=1e-5, verbose=False)
    with pytest.raises(sll_fx.EpsError, match=r"^node 'sign' \(.*\): sll\.sign: eps=1e-05 is too small for torch\.float16"):
        with ctx():
            gm(torch.tensor([0.0, 0.25], dtype=torch.float16))
    gm = sll_fx.linearize_module(_Nested(), eps=0.1, verbose=False)  # a node of a nested graph: by its path
    with torch.no_grad():
        gm.b.g._sll_eps_floor.fill_(0.9)
    with pytest.raises(sll_fx.EpsError, match=r"^node 'b\.g\.floor' \(test_dtypes\.py:\d+\): sll\.floor: eps=0\.9 "
                                              r"is too wide"):
        with ctx():
            gm(torch.tensor([0.5, 1.25]))


class _BufferGate(nn.Module):
    def __init__(self, n=5):
        super().__init__()
        self.lin = nn.Linear(4, 4)
        self.register_buffer("t", torch.zeros(n))  # (of 5: does not broadcast with lin's 4 features)

    def forward(self, x):
        h = self.lin(x)
        return torch.sign(h) + (h > self.t).float() * h


class _BufferGateInside(nn.Module):
    def __init__(self):
        super().__init__()
        self.m = _BufferGate()

    def forward(self, x):
        return self.m(x)


class _BufferCompare(nn.Module):
    def __init__(self):
        super().__init__()
        self.register_buffer("t", torch.zeros(5))

    def forward(self, x):
        return (x > self.t).float() * x


class _BranchyGate(nn.Module):
    def __init__(self):
        super().__init__()
        self.g = _BufferCompare()

    def forward(self, x):  # control flow on a value: kept opaque, ``g`` traced (a nested GraphModule)
        return self.g(x) if x.sum() > 0 else -x


class _NestedGate(nn.Module):
    def __init__(self):
        super().__init__()
        self.b = _BranchyGate()

    def forward(self, x):
        return torch.round(x) + self.b(x)


def _raised(call) -> Exception:
    with pytest.raises(Exception) as info:
        call()
    return info.value


@pytest.mark.parametrize("context", ["enable_grad", "no_grad", "inference_mode"])
def test_a_run_time_error_of_an_sll_op_names_the_node(context):
    """An sll op given inputs it cannot take at run time (a threshold buffer that does not broadcast with its input)
    raised torch's error alone: no node, no op, no source line (only an EpsError named one; a58).  It keeps torch's
    type and message, with a note naming the node as the report does, the op it came from, submodule and source."""
    ctx = getattr(torch, context)
    gm = sll_fx.linearize_module(_BufferGateInside(), eps=0.1, verbose=False)
    with ctx():
        e = _raised(lambda: gm(torch.randn(3, 4)))
    assert type(e) is RuntimeError and str(e).startswith("The size of tensor a (4) must match the size of tensor b (5)")
    (note,) = e.__notes__
    assert note.startswith("sll_fx: raised by node 'gt' of the linearized module (sll.compare, rewritten from x > t; "
                           "graph node 'compare', submodule 'm', test_dtypes.py:"), note
    assert "check the shapes and dtypes of the inputs it read" in note
    nested = sll_fx.linearize_module(_NestedGate(), eps=0.1, verbose=False)  # a nested graph's node: by its path, once
    with ctx():
        e = _raised(lambda: nested(torch.ones(3, 4)))
    (note,) = e.__notes__
    assert type(e) is RuntimeError and note.startswith("sll_fx: raised by node 'b.g.gt' of the linearized module"), note
    with ctx():  # (an error of another node: torch's alone)
        e = _raised(lambda: gm(torch.randn(3, 5)))
    assert type(e) is RuntimeError and not getattr(e, "__notes__", None)


class _Tied(torch.nn.Module):
    """Two names of one parameter, a None parameter, a class attribute and a property."""
    flag = 3

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(2))
        self.register_parameter("missing", None)
        self.register_buffer("b", torch.zeros(1))
        self.inplace = True

    @property
    def prop(self):
        return 7


class _OwnGetattr(torch.nn.Linear):
    def __getattr__(self, name):
        return "own" if name == "anything" else super().__getattr__(name)


@pytest.mark.parametrize("make", [lambda: torch.nn.Linear(2, 3), lambda: torch.nn.ReLU(inplace=True), _Tied,
                                  lambda: _OwnGetattr(2, 2),
                                  lambda: torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.ReLU())])
def test_module_helpers_agree_with_nn_module(make):
    """dtypes.module_attr / module_parameters / module_tree answer as getattr / parameters() / modules() do."""
    from sll_fx import dtypes
    m = make()
    m.__dict__.setdefault("extra", 5)
    if isinstance(m, _Tied):
        m.v = m.w  # (a second name of the same parameter: once in parameters())
    for name in ("activation_post_process", "inplace", "weight", "w", "b", "missing", "flag", "prop", "extra",
                 "anything", "training", "0"):
        assert dtypes.module_attr(m, name, "default") is getattr(m, name, "default") or \
            dtypes.module_attr(m, name, "default") == getattr(m, name, "default"), name
    assert [id(p) for p in dtypes.module_parameters(m)] == [id(p) for p in m.parameters()]
    assert [id(x) for x in dtypes.module_tree(m)] == [id(x) for x in m.modules()]
    assert dtypes.module_attr(None, "activation_post_process") is None

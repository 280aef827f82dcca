"""In-place discrete ops inside an ``sll_fx.linearize`` block (a73): ``t.round_()``, ``torch.round_(t)``, ...

A block writes the sll op's values into ``t`` (``t.copy_(sll op of t)``) where it can see at the call that ``t`` is a
float intermediate of the autograd graph (grad mode on, ``t.requires_grad``, ``t.grad_fn`` set, not a view), so the
gradient reaches what ``t`` held before; everything else gets the hard in-place op, bit for bit.  Before a73 every
in-place spelling stayed hard in a block, and every layer before SpikingJelly's own quantizers got a zero gradient,
where ``linearize_module`` already rewrote them (tests/test_inplace_fresh.py).
"""

import pytest
import torch
from torch import nn

import sll_fx
from _helpers import assert_bitwise, k_bit_quantize_forward, step_quantize_forward  # (SpikingJelly's)

EPS = 0.05


class _Quantized(nn.Module):
    """Linear -> both quantizers -> Linear."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.l1, self.l2 = nn.Linear(4, 6), nn.Linear(6, 3)

    def forward(self, x):
        h = self.l1(x)
        return self.l2(step_quantize_forward(h, 0.25) + k_bit_quantize_forward(h, 2))


def _half_distance(v):
    """Distance of each element of ``v`` to the nearest k + 1/2 (round's jumps)."""
    return (v - torch.floor(v) - 0.5).abs()


def _forward_backward(model, x, block=None):
    model.zero_grad()
    if block is None:
        y = model(x)
    else:
        with block:
            y = model(x)
    y.backward(torch.randn(y.shape, generator=torch.Generator().manual_seed(1)))
    return y.detach(), model.l1.weight.grad.clone(), model.l2.weight.grad.clone()


def test_spikingjelly_quantizers_in_a_block():
    """Before: l1's gradient 0 in the block as outside it (both torch.round_ hard)."""
    model, x = _Quantized(), torch.randn(400, 4, generator=torch.Generator().manual_seed(2))
    hard, hard_g1, _ = _forward_backward(model, x)
    assert hard_g1.abs().sum() == 0
    dyn, dyn_g1, _ = _forward_backward(model, x, sll_fx.linearize(eps=EPS))
    assert dyn_g1.abs().sum() > 0

    with torch.no_grad():  # rows whose quantizer inputs are all off the band: the hard model's values, bit for bit
        h = model.l1(x)
        off = ((_half_distance(h / 0.25) > EPS) & (_half_distance(h * 3.0) > EPS)).all(1)
    assert 50 < int(off.sum()) < 350
    assert_bitwise(dyn[off], hard[off], "off the band")
    assert not torch.equal(dyn[~off], hard[~off])

    gm = sll_fx.linearize_module(model, eps=EPS, verbose=False)  # graph mode on the same module and input
    graph, graph_g1, graph_g2 = _forward_backward(gm, x)
    assert_bitwise(dyn, graph, "graph mode")
    _, dyn_g1, dyn_g2 = _forward_backward(model, x, sll_fx.linearize(eps=EPS))
    assert_bitwise(dyn_g1, graph_g1, "graph mode: l1.weight.grad")
    assert_bitwise(dyn_g2, graph_g2, "graph mode: l2.weight.grad")


def test_decorated_quantizer():
    quantize = sll_fx.linearize(eps=EPS)(k_bit_quantize_forward)
    w = torch.tensor([0.1, 0.5 / 3 + 0.01, 0.4], requires_grad=True)
    y = quantize(w * 1.0, 2)
    y.sum().backward()
    # round of 3 w: 0.3 and 1.2 off the band (slope 0); 0.53 inside it, slope 3 * 1/(2 eps) / 3
    assert w.grad.tolist() == pytest.approx([0.0, 1 / (2 * EPS), 0.0])
    hard = k_bit_quantize_forward(w.detach() * 1.0, 2)
    assert_bitwise(y.detach()[[0, 2]], hard[[0, 2]])


# -- each spelling: the out-of-place op's values and gradients in the block ------------------------------------------

_VALUES = torch.tensor([0.5], dtype=torch.float64)


@pytest.mark.parametrize("name,inplace,twin", [
    ("x.round_()", lambda t: t.round_(), torch.round),
    ("torch.round_(x)", lambda t: torch.round_(t), torch.round),
    ("x.round_(decimals=1)", lambda t: t.round_(decimals=1), lambda t: torch.round(t, decimals=1)),
    ("x.floor_()", lambda t: t.floor_(), torch.floor),
    ("torch.floor_(x)", lambda t: torch.floor_(t), torch.floor),
    ("x.ceil_()", lambda t: t.ceil_(), torch.ceil),
    ("torch.ceil_(x)", lambda t: torch.ceil_(t), torch.ceil),
    ("x.trunc_()", lambda t: t.trunc_(), torch.trunc),
    ("torch.trunc_(x)", lambda t: torch.trunc_(t), torch.trunc),
    ("x.fix_()", lambda t: t.fix_(), torch.fix),
    ("torch.fix_(x)", lambda t: torch.fix_(t), torch.fix),
    ("x.sign_()", lambda t: t.sign_(), torch.sign),
    ("x.heaviside_(v)", lambda t: t.heaviside_(_VALUES), lambda t: torch.heaviside(t, _VALUES)),
])
@pytest.mark.parametrize("mode", ["linear", "hard"])
def test_each_spelling_is_its_out_of_place_op(name, inplace, twin, mode):
    x0 = torch.linspace(-2.3, 2.3, 461, dtype=torch.float64)  # steps of 0.01: on, near and off every jump

    def run(f):
        x = x0.clone().requires_grad_(True)
        t = x * 1.0
        y = f(t)
        (y * torch.arange(1.0, 462.0, dtype=torch.float64)).sum().backward()
        return t, y, x.grad

    with sll_fx.linearize(eps=EPS, mode=mode):
        t, y, grad = run(inplace)
        _, y_twin, grad_twin = run(twin)
    assert y is t  # an in-place op returns its self
    assert_bitwise(y.detach(), y_twin.detach(), f"{name}: values")
    assert_bitwise(grad, grad_twin, f"{name}: gradient")
    assert grad.abs().sum() > 0
    hard = twin(x0)
    band = ~torch.isclose(y.detach(), hard, rtol=0, atol=0)
    if mode == "hard":
        assert not band.any()
    else:
        assert band.any() and not band.all()


def test_round_slope_in_band():
    x = torch.tensor([0.2, 0.49, 0.51, 1.46, 2.7], dtype=torch.float64, requires_grad=True)
    with sll_fx.linearize(eps=EPS):
        t = x * 1.0
        t.round_()
    t.sum().backward()
    assert x.grad.tolist() == [0.0, 1 / (2 * EPS), 1 / (2 * EPS), 1 / (2 * EPS), 0.0]
    assert t[0].item() == 0.0 and t[4].item() == 3.0
    assert t[1].item() == pytest.approx(0.5 + (0.49 - 0.5) / (2 * EPS))


def test_aliases_see_the_written_values():
    """What PyTorch does: an alias (a view of t, t itself) taken before the write reads what it wrote."""
    x = torch.linspace(-1, 1, 21, dtype=torch.float64, requires_grad=True)
    with sll_fx.linearize(eps=0.1):
        t = x * 2.0
        same, view = t, t.view(3, 7)
        before = view._version
        out = t.sign_()
    assert out is t and same is t and view._version > before
    expected = torch.clamp(x.detach() * 2.0 / 0.1, -1, 1)
    assert_bitwise(view.detach().reshape(-1), expected)
    view.sum().backward()  # through the view taken before the write
    assert x.grad.tolist() == pytest.approx([20.0 if abs(v) < 0.05 else 0.0 for v in x.detach().tolist()])


def test_under_torch_func_grad():
    def inplace(x):
        with sll_fx.linearize(eps=EPS):
            t = x * 1.0
            t.round_()
        return t.sum()

    def twin(x):
        with sll_fx.linearize(eps=EPS):
            return torch.round(x * 1.0).sum()

    x = torch.tensor([0.2, 0.49, 0.52, 1.7], dtype=torch.float64)
    grad = torch.func.grad(inplace)(x)
    assert_bitwise(grad, torch.func.grad(twin)(x))
    assert grad.tolist() == [0.0, 1 / (2 * EPS), 1 / (2 * EPS), 0.0]


class _DecoratedQuantizer(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.l = nn.Linear(4, 4)

    @sll_fx.linearize(eps=EPS)
    def quantize(self, h):
        return k_bit_quantize_forward(h, 2)

    def forward(self, x):
        return self.quantize(self.l(x))


def test_exported_block_strips_to_the_hard_model():
    """torch.export records the block's write (clone, sll.round, copy_); export_hard puts aten.round there."""
    model, x = _DecoratedQuantizer(), torch.randn(64, 4, generator=torch.Generator().manual_seed(3))
    ep = torch.export.export(model, (x,))
    targets = [str(n.target) for n in ep.graph.nodes if n.op == "call_function"]
    assert "sll.round.default" in targets and "aten.round_.default" not in targets
    assert_bitwise(ep.module()(x).detach(), model(x).detach())
    hard = sll_fx.export_hard(ep, verbose=False)
    with torch.no_grad():
        assert_bitwise(hard(x), k_bit_quantize_forward(model.l(x), 2))


# -- what stays hard, bit for bit -------------------------------------------------------------------------------------

def _hard_and_block(f, eps=EPS):
    """``f()`` -> the tensor it wrote; run hard and in a block on fresh inputs: both results."""
    hard = f()
    with sll_fx.linearize(eps=eps):
        dyn = f()
    return hard, dyn


_X = torch.linspace(-2, 2, 400)


def _leaf_values():
    t = _X.clone()  # no gradient recorded: a block cannot tell this copy from shared data
    return t.round_()


def _no_grad_intermediate():
    x = _X.clone().requires_grad_(True)
    t = x * 1.0
    with torch.no_grad():
        t.floor_()
    return t


def _view():
    x = _X.clone().requires_grad_(True)
    t = (x * 1.0).reshape(4, -1)[1:]
    t[0].round_()
    t.ceil_()  # (a slice: a view too)
    return t


def _not_requiring_grad():
    t = _X * 1.0
    t.sign_()
    return torch.round_(t * 2)


def _integer():
    t = (_X * 10).long()
    t.sign_()
    return t


def _comparison_and_masked_fill():  # x.gt_(0) and masked_fill_ are the graph pass's to leave hard too
    x = _X.clone().requires_grad_(True)
    t = x * 1.0
    t.gt_(0.3)
    u = x * 1.0
    u.masked_fill_(u < 0.2, 0.0)
    return t + u


@pytest.mark.parametrize("f", [_leaf_values, _no_grad_intermediate, _view, _not_requiring_grad, _integer,
                               _comparison_and_masked_fill], ids=lambda f: f.__name__)
def test_stays_hard(f):
    hard, dyn = _hard_and_block(f)
    assert_bitwise(dyn.detach(), hard.detach(), f.__name__)


def test_view_stays_hard_and_its_gradient_zero():
    x = _X.clone().requires_grad_(True)
    with sll_fx.linearize(eps=EPS):
        t = x * 1.0
        t[::2].round_()
    t.sum().backward()
    assert x.grad[::2].abs().sum() == 0 and x.grad[1::2].tolist() == [1.0] * 200


def test_saved_by_its_maker_raises_as_torch_does():
    """exp saves its result for its backward: writing it in place breaks the backward, hard or not."""
    for block in (None, sll_fx.linearize(eps=EPS)):
        x = _X.clone().requires_grad_(True)
        with block or torch.enable_grad():
            t = x.exp()
            t.round_()
        with pytest.raises(RuntimeError, match="modified by an inplace operation"):
            t.sum().backward()


def test_leaf_requiring_grad_raises_as_torch_does():
    x = _X.clone().requires_grad_(True)
    with pytest.raises(RuntimeError, match="leaf Variable that requires grad"):
        x.round_()
    with pytest.raises(RuntimeError, match="leaf Variable that requires grad"), sll_fx.linearize(eps=EPS):
        x.round_()


class _Stateful(nn.Module):
    def __init__(self):
        super().__init__()
        self.p = nn.Parameter(torch.linspace(-2, 2, 41))
        self.register_buffer("b", torch.linspace(-2, 2, 41) + 0.01)

    def forward(self, x):
        with torch.no_grad():
            self.p.round_()
            torch.floor_(self.b)
        self.b.ceil_()  # (a buffer does not require grad)
        return x * self.p + self.b


def test_parameter_and_buffer_stay_hard():
    hard_model, dyn_model = _Stateful(), _Stateful()
    x = torch.ones(41, requires_grad=True)
    hard = hard_model(x)
    with sll_fx.linearize(eps=EPS):
        dyn = dyn_model(x)
    assert_bitwise(dyn.detach(), hard.detach())
    assert_bitwise(dyn_model.p.detach(), torch.round(torch.linspace(-2, 2, 41)))
    assert_bitwise(dyn_model.b, hard_model.b)


def test_out_argument_stays_hard():
    t = torch.linspace(-1, 1, 21) * 3.0
    out = torch.empty(21)
    with sll_fx.linearize(eps=0.2):
        torch.round(t, out=out)  # (an in-place write: out= is not carried, as in graph mode)
    assert_bitwise(out, torch.round(t))
    t.requires_grad_(True)
    with pytest.raises(RuntimeError, match="out=... arguments don't support automatic differentiation"), \
            sll_fx.linearize(eps=0.2):
        torch.round(t * 1.0, out=out)


def test_heaviside_values_larger_than_the_tensor_raise_as_torch_does():
    x = torch.linspace(-1, 1, 3, requires_grad=True)
    values = torch.full((2, 3), 0.5)
    with pytest.raises(RuntimeError) as hard:
        (x * 1.0).heaviside_(values)
    with pytest.raises(RuntimeError) as dyn, sll_fx.linearize(eps=EPS):
        (x * 1.0).heaviside_(values)
    assert str(dyn.value) == str(hard.value)


def test_heaviside_of_itself():
    """``t.heaviside_(t)``: the sll op reads copies of both, which the write does not change."""
    x = torch.tensor([-1.0, -0.01, 0.0, 0.02, 1.0], dtype=torch.float64, requires_grad=True)
    with sll_fx.linearize(eps=EPS):
        t = x * 1.0
        t.heaviside_(t)
        u = x * 1.0
        twin = torch.heaviside(u, u)
    (t.sum() + twin.sum()).backward()  # (the twin's gradient is the same: x.grad is twice it)
    assert_bitwise(t.detach(), twin.detach())
    x2 = x.detach().clone().requires_grad_(True)
    with sll_fx.linearize(eps=EPS):
        torch.heaviside(x2 * 1.0, x2 * 1.0).sum().backward()
    assert_bitwise(x.grad, 2 * x2.grad)


def test_eps_too_large_for_round_names_the_call():
    x = torch.linspace(-1, 1, 21, requires_grad=True)
    with pytest.raises(sll_fx.EpsError, match="Tensor.round_"), sll_fx.linearize(eps=0.6):
        (x * 1.0).round_()

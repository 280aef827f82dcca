"""``torch.compile`` of linearized models: one graph, eager's numbers, fused kernels, eps as an input.

``linearize_module`` passes each sll node's eps from a 0-dim buffer of the GraphModule (the
ops' ``eps_tensor`` overloads), so that:

- ``torch.compile(gm, fullgraph=True)`` traces forward and backward as one graph (no break);
  the sll ops are ``CompositeImplicitAutograd`` and decompose under AOTAutograd;
- the compiled model computes what the eager one does, values and gradients, in both modes;
- inductor fuses the surrogate (its clamp, its ``hardtanh_backward``) with the neighbouring
  elementwise ops into one generated loop (checked in the generated code);
- ``set_eps`` during compiled training recompiles nothing (at most one recompilation in
  total is allowed) and the compiled code uses the new eps (its slope ``1/eps``).

Compilation is slow on a small CPU machine: few, small models, each compiled once per test.
"""

from __future__ import annotations

import re

import pytest
import torch
import torch._dynamo
import torch._inductor.config
import torch.nn.functional as F
from torch import fx, nn
from torch._dynamo.backends.registry import lookup_backend
from torch._inductor.utils import run_and_get_code

import sll_fx
from sll_fx.annealing import EPS_PREFIX, node_eps
from sll_fx.diagnostics import is_soft_mask
from sll_fx.ops import is_sll_target
from sll_fx.tracer import module_of

EPS_SCHEDULE = (0.2, 0.15, 0.1, 0.3, 0.05)   # five set_eps calls while training


@pytest.fixture(autouse=True)
def _fresh(fresh_dynamo):  # (conftest.py): every test counts its own compilations
    yield


class Fine(nn.Module):
    def forward(self, h):
        return torch.round(h, decimals=1)


class Net(nn.Module):
    """Every rule family: elementwise ops, comparisons with a learnable threshold (cast, product,
    where, masked_fill), one_hot(argmax) and a top-k mask."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(6, 6)
        self.t = nn.Parameter(torch.tensor(0.1))
        self.fine = Fine()

    def forward(self, x):
        h = self.lin(x)
        elementwise = (torch.sign(h) * 1.5 + torch.round(h * 2) + torch.floor(h) - torch.ceil(h * 0.5)
                       + torch.trunc(h * 3) + torch.heaviside(h, torch.tensor(0.5)) + self.fine(h))
        gates = (h > self.t).float() * 2 + h * (h <= -self.t) + torch.where(h < self.t, h * 2, -h) \
            + h.masked_fill(h >= 0.3, 0.5)
        onehot = F.one_hot(h.argmax(-1), 6).float() * h
        mask = torch.zeros_like(h).scatter(-1, torch.topk(h, 2, -1).indices, 1.0) * h
        return elementwise + gates + onehot + mask


def linearized_net(mode):
    torch.manual_seed(0)
    cfg = sll_fx.SLLConfig(eps=0.2, mode=mode, module_eps={"fine": 0.02})
    return sll_fx.linearize_module(Net(), cfg, verbose=False)


class Inductor:
    """The inductor backend, counting the graphs dynamo hands it (one per compilation, recompilations
    included) and noting, per graph, how each sll call gets its eps (before inductor consumes the graph)."""

    def __init__(self):
        self.frame_count = 0
        self.eps_args: list[list] = []   # per graph: the eps argument of each sll call (an fx.Node: an input)

    def __call__(self, graph_module, example_inputs):
        self.frame_count += 1
        self.eps_args.append([n.kwargs.get("eps") for n in graph_module.graph.nodes
                              if n.op == "call_function" and is_sll_target(n.target) and not is_soft_mask(n)])
        return lookup_backend("inductor")(graph_module, example_inputs)


def sll_nodes(gm):
    return [n for mod in gm.modules() if isinstance(mod, fx.GraphModule)
            for n in mod.graph.nodes if n.op == "call_function" and is_sll_target(n.target)]


def grads(module):
    return {n: p.grad.detach().clone() for n, p in module.named_parameters()}


def step(fn, gm, x):
    """forward + backward of ``fn`` (``gm`` or its compiled form); (output, ``gm``'s parameter gradients)."""
    gm.zero_grad()
    out = fn(x)
    (out * torch.linspace(-1, 1, out.shape[-1])).sum().backward()
    g = grads(gm)
    gm.zero_grad()
    return out.detach(), g


def assert_matches(compiled, gm, x, what):
    out_c, g_c = step(compiled, gm, x)
    out_e, g_e = step(gm, gm, x)
    torch.testing.assert_close(out_c, out_e, rtol=1e-5, atol=1e-5, msg=lambda m: f"{what}: output\n{m}")
    assert g_c.keys() == g_e.keys() and len(g_e) == 3
    for name in g_e:
        torch.testing.assert_close(g_c[name], g_e[name], rtol=1e-4, atol=1e-4,
                                   msg=lambda m: f"{what}: grad of {name}\n{m}")
    return out_e


# ----------------------------------------------------------------------------------------
# one graph, eager's numbers, and set_eps without recompiling
# ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["linear", "hard"])
def test_compiled_training_matches_eager_and_set_eps_does_not_recompile(mode):
    gm = linearized_net(mode)
    nodes = [n for n in sll_nodes(gm) if not is_soft_mask(n)]  # (hard mode: the selections' soft masks are theirs)
    assert len(sll_nodes(gm)) - len(nodes) == (2 if mode == "hard" else 0)
    eps_nodes = [n for n in nodes if "eps" in n.kwargs]   # all but the two sll.select
    assert len(nodes) == 15 and len(eps_nodes) == 13
    assert sorted({node_eps(gm, n) for n in eps_nodes}) == [0.02, 0.2]
    counter = Inductor()
    compiled = torch.compile(gm, backend=counter, fullgraph=True)   # fullgraph: a graph break raises
    opt = torch.optim.SGD(gm.parameters(), lr=0.01)
    g = torch.Generator().manual_seed(1)
    outputs = []
    for eps in EPS_SCHEDULE:
        sll_fx.set_eps(gm, eps, where=lambda n: module_of(n) != "fine")
        sll_fx.set_eps(gm, eps / 10, where="fine")   # round(decimals=1): eps <= 0.05
        x = torch.randn(16, 6, generator=g)
        outputs.append(assert_matches(compiled, gm, x, f"{mode}, eps={eps}"))
        # a training step of the compiled model moves the shared parameters
        opt.zero_grad()
        compiled(x).square().mean().backward()
        opt.step()
    assert counter.frame_count - 1 <= 1, f"{counter.frame_count} compilations for {len(EPS_SCHEDULE)} eps values"
    # eps is an input of the captured graph, not a constant in it
    eps_args = counter.eps_args[0]
    assert len(eps_args) == 15   # the sll ops are single calls in dynamo's graph
    assert sum(isinstance(e, fx.Node) for e in eps_args) == 13 and not [e for e in eps_args if isinstance(e, float)]
    # and it was used: the same weights give other outputs at another eps (checked against eager above)
    x = torch.randn(16, 6, generator=g)
    sll_fx.set_eps(gm, 0.2, where=lambda n: module_of(n) != "fine")
    a = compiled(x).detach()   # (grad mode as in training: a switch to no_grad would be a recompilation of its own)
    sll_fx.set_eps(gm, 0.05)
    b = compiled(x).detach()
    torch.testing.assert_close(b, gm(x).detach(), rtol=1e-5, atol=1e-5)
    if mode == "linear":
        assert not torch.allclose(a, b)
    assert counter.frame_count - 1 <= 1


def test_no_graph_break():
    gm = linearized_net("linear")
    explanation = torch._dynamo.explain(gm)(torch.randn(4, 6))
    assert explanation.graph_break_count == 0 and explanation.graph_count == 1, str(explanation)


# ----------------------------------------------------------------------------------------
# the new eps is really used: slopes
# ----------------------------------------------------------------------------------------

class Probe(nn.Module):
    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.ones(3))
        self.t = nn.Parameter(torch.tensor(0.4))

    def forward(self, x):
        return torch.sign(x * self.w) * 3.0 + (x > self.t).float() * 2.0


def test_slopes_follow_set_eps_in_compiled_training():
    probe = Probe()
    gm = sll_fx.linearize_module(probe, 0.2, verbose=False)
    counter = Inductor()
    compiled = torch.compile(gm, backend=counter, fullgraph=True)
    opt = torch.optim.SGD(gm.parameters(), lr=0.01)
    g = torch.Generator().manual_seed(2)
    for eps in EPS_SCHEDULE:
        sll_fx.set_eps(gm, eps)
        opt.zero_grad()   # a training step (inputs of one signature: only eps changes between calls)
        compiled((torch.randn(3, generator=g) * 0.3).requires_grad_(True)).sum().backward()
        opt.step()
        # x = [0, t, 5]: sign's slope 3 w_0 / eps at 0, the gate's 2 / (2 eps) at t (and -1/eps to t), 0 far out
        t = probe.t.detach().clone()
        x = torch.stack([torch.tensor(0.0), t, torch.tensor(5.0)]).requires_grad_(True)
        gm.zero_grad()
        compiled(x).sum().backward()
        w0 = float(probe.w.detach()[0])
        torch.testing.assert_close(x.grad, torch.tensor([3 * w0 / eps, 1 / eps, 0.0]), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(probe.t.grad, torch.tensor(-1 / eps), rtol=1e-5, atol=1e-5)
    assert counter.frame_count - 1 <= 1, f"{counter.frame_count} compilations for {len(EPS_SCHEDULE)} eps values"


# ----------------------------------------------------------------------------------------
# fusion: the surrogate and its neighbours in one generated loop
# ----------------------------------------------------------------------------------------

_KERNEL = re.compile(r"^(\w+_fused_\w+) = async_compile\.", re.M)


def kernels(code: str) -> list[str]:
    """Names of the fused kernels one generated module (inductor's C++ or Triton code) defines."""
    return _KERNEL.findall(code)


@pytest.mark.parametrize("mode", ["linear", "hard"])
def test_inductor_fuses_sll_ops_with_their_neighbours(mode):
    """``sign(x * w) * 3 + (x > t).float() * 2``: the products before and after the surrogates,
    both surrogates and the sum are one kernel forward and one kernel backward (including the
    threshold's gradient, a reduction)."""
    gm = sll_fx.linearize_module(Probe(), 0.2, mode=mode, verbose=False)
    compiled = torch.compile(gm, fullgraph=True)
    x = torch.randn(64, 3)
    with torch._inductor.config.patch(fx_graph_cache=False):   # generate the code, even if a cache has it
        _, codes = run_and_get_code(lambda: compiled(x).sum().backward())
    assert len(codes) == 2, "expected a forward and a backward module"
    forward, backward = (kernels(c) for c in codes)
    assert len(forward) == 1, forward
    assert len(backward) == 1, backward
    # names list the aten ops fused into the kernel: the surrogate's clamp (linear mode) and the multiplies
    if mode == "linear":
        assert "clamp" in forward[0] and "mul" in forward[0], forward
        assert "sign" in backward[0] and "mul" in backward[0] and "sum" in backward[0], backward
    else:
        assert "mul" in forward[0] and ("sign" in forward[0] or "gt" in forward[0]), forward
        assert "mul" in backward[0] and "sum" in backward[0], backward
    # the band is not saved as a one-byte mask (inductor's vectorized bool stores are slow on CPU,
    # see kernels.inside_float): the forward allocates no bool buffer
    assert "torch.bool" not in codes[0], codes[0]
    # the compiled kernels compute eager's gradients
    gm.zero_grad()
    compiled(x).sum().backward()
    compiled_grads = grads(gm)
    gm.zero_grad()
    gm(x).sum().backward()
    for name, grad in grads(gm).items():
        torch.testing.assert_close(compiled_grads[name], grad, rtol=1e-4, atol=1e-4)


def test_eps_buffers_are_graph_inputs_of_the_compiled_code():
    """The generated module reads eps from a (double) input, it does not hold it as a literal."""
    gm = sll_fx.linearize_module(Probe(), 0.123, verbose=False)
    buffers = [n for n, _ in gm.named_buffers() if n.startswith(EPS_PREFIX)]
    assert len(buffers) == 2 and all(n not in gm.state_dict() for n in buffers)
    compiled = torch.compile(gm, fullgraph=True)
    with torch._inductor.config.patch(fx_graph_cache=False):
        _, (forward,) = run_and_get_code(lambda: compiled(torch.randn(5, 3)))
    assert "0.123" not in forward and "8.13" not in forward   # neither eps nor 1/eps is baked in


SPECIAL = [float("nan"), float("inf"), -float("inf"), 0.0, -0.0, 0.5, -0.5, 1.5, 2.0, -2.0, 0.25, 0.45, 0.55,
           0.3, 0.7, 1.0, -1.0, 2.5, 3e38, -3e38, 1e-30]


@pytest.mark.parametrize("mode, method", [("linear", "sll"), ("hard", "sll"), ("hard", "ste"), ("hard", "sigmoid")])
def test_compiled_ops_match_eager_on_special_values(mode, method):
    """Every explicit op, compiled with inductor, gives eager's values and gradients on boundaries,
    band edges, ±0, ±inf and NaN (the compiled backward spells the band without ``bool`` tensors
    and NaN tests without ``isnan``: see ``kernels.inside_float`` and ``kernels.nan_to_``)."""
    eps = 0.05
    t = torch.tensor(0.5, requires_grad=True)

    def f(xs):
        kw = dict(mode=mode, method=method)
        return (sll_fx.sign(xs[0], eps, **kw), sll_fx.heaviside(xs[1], eps, **kw), sll_fx.round(xs[2], eps, **kw),
                sll_fx.round(xs[3], eps / 10, decimals=1, **kw), sll_fx.floor(xs[4], eps, **kw),
                sll_fx.ceil(xs[5], eps, **kw), sll_fx.trunc(xs[6], eps, **kw),
                sll_fx.threshold(xs[7], t, eps, **kw))

    torch.manual_seed(0)
    base = torch.cat([torch.tensor(SPECIAL), torch.randn(43) * 2])   # [0] is the NaN
    g = torch.randn_like(base)

    def run(fn):
        xs = [base.clone().requires_grad_() for _ in range(8)]
        t.grad = None
        outs = fn(xs)
        torch.autograd.backward(outs, [g] * len(outs))
        return [o.detach() for o in outs], [x.grad for x in xs] + [t.grad]

    eager_out, eager_grad = run(f)
    compiled_out, compiled_grad = run(torch.compile(f, fullgraph=True))
    if method == "sll":
        # SLL's gradient at a NaN input is unspecified (eager hardtanh_backward: grad in its scalar
        # tail, 0 in vectorized lanes); compiled code gives 0
        assert all(float(grad[0]) == 0.0 for grad in compiled_grad[:8])
        eager_grad = [grad[1:] for grad in eager_grad[:8]] + eager_grad[8:]
        compiled_grad = [grad[1:] for grad in compiled_grad[:8]] + compiled_grad[8:]
    if mode == "linear":
        # compiled linear round/floor/ceil/trunc read the band from the value (not an integer inside
        # it): +-3e38 are integers exactly on a floor/ceil/trunc boundary, where eager gives the slope and
        # the compiled value, which cannot hold the midpoint's fraction, gives 0 (kernels.SurrogateFunction)
        huge = base[1:].abs() >= 2 ** 22
        for i in (4, 5, 6):   # floor, ceil, trunc
            assert bool((compiled_grad[i][huge] == 0).all())
            eager_grad[i], compiled_grad[i] = eager_grad[i][~huge], compiled_grad[i][~huge]
    names = ["sign", "heaviside", "round", "round(decimals=1)", "floor", "ceil", "trunc", "threshold"]
    labels = [f"{n} value" for n in names] + [f"{n} grad" for n in names] + ["threshold grad of t"]
    for label, a, b in zip(labels, compiled_out + compiled_grad, eager_out + eager_grad):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5, equal_nan=True, msg=lambda m, label=label: f"{label}: {m}")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_compiled_integer_ops_find_the_band_from_their_value(dtype):
    """Compiled linear round/floor/ceil/trunc take the band from the value (not an integer inside it):
    the slope exactly where the compiled value is not an integer, and eager's gradients on and around
    the bands for boundaries up to 2^20, except within an ulp of a band edge (there the fused compiled
    arithmetic may round the ramp to the edge where eager's does not, or the other way round)."""
    eps = 0.05
    torch.manual_seed(1)
    k = torch.cat([torch.arange(-40, 41), torch.randint(-2 ** 20, 2 ** 20, (200,))]).to(dtype)
    offsets = torch.tensor([0.0, eps / 2, -eps / 2, 0.3, -0.3, 0.7 * eps, -0.7 * eps], dtype=dtype)
    inner = (k[:, None] + offsets).flatten()
    edges = torch.cat([k - eps, k + eps])
    near = torch.cat([inner, torch.nextafter(edges, edges + 1), torch.nextafter(edges, edges - 1), edges])

    def f(xs):
        return (sll_fx.round(xs[0] + 0.5, eps), sll_fx.floor(xs[1], eps), sll_fx.ceil(xs[2], eps),
                sll_fx.trunc(xs[3], eps))

    def run(fn):
        xs = [near.clone().requires_grad_() for _ in range(4)]
        outs = fn(xs)
        torch.autograd.backward(outs, [torch.ones_like(near)] * 4)
        return [o.detach() for o in outs], [x.grad for x in xs]

    eager_out, eager_grad = run(f)
    compiled_out, compiled_grad = run(torch.compile(f, fullgraph=True))
    slope = 0.5 / eps
    n = len(inner)
    for name, value, a, b in zip(["round", "floor", "ceil", "trunc"], compiled_out, compiled_grad, eager_grad):
        inside = value != torch.round(value)
        torch.testing.assert_close(a, torch.where(inside, slope, 0.0).to(dtype), rtol=1e-6, atol=0)
        assert torch.equal(a[:n], b[:n]), (name, near[:n][a[:n] != b[:n]])
        assert 0 < int((b[:n] != 0).sum()) < n, name    # both inside and outside bands are tested
    for a, b in zip(compiled_out, eager_out):
        torch.testing.assert_close(a, b)


def test_export_hard_of_an_explicit_threshold_compiles_fullgraph():
    """``export_hard`` gives an explicit ``sll_fx.threshold`` back as ``ops.hard_compare`` (its float result); that
    compiles with ``fullgraph=True`` (it read ``torch.result_type``, which dynamo cannot trace: Unsupported)."""

    class Gate(nn.Module):
        def forward(self, x):
            return sll_fx.threshold(x, 0.5, eps=0.1) * 2 + sll_fx.threshold(x.long(), 1.5, eps=0.1)

    hard = sll_fx.export_hard(sll_fx.linearize_module(Gate(), eps=0.1, verbose=False))
    x = torch.tensor([0.2, 0.5, 0.7, 2.0, float("nan")])
    want = hard(x)
    got = torch.compile(hard, fullgraph=True)(x)
    assert got.dtype == want.dtype == torch.float32 and torch.equal(got, want)
    assert want.tolist()[:4] == [0.0, 0.0, 2.0, 3.0]


class _Round(nn.Module):
    def forward(self, x):
        return torch.round(x * 3)


def test_more_linearized_models_than_dynamos_recompile_limit_compile():
    """Every SLLGraphModule entered torch.compile through one shared ``__call__`` code object, and dynamo caches per code
    object up to its recompile limit (8): the 9th linearized model compiled in a process raised FailOnRecompileLimitHit
    under fullgraph=True, and ran eagerly without it, silently (audit of the benchmarks: the CNN's model there was
    compiled as a recompile of the MLP's, with dynamic shapes). Each module's class now has its own."""
    limit = torch._dynamo.config.recompile_limit
    x = torch.randn(8, 4)
    kept = []
    for i in range(limit + 3):
        torch.manual_seed(i)
        gm = sll_fx.linearize_module(nn.Sequential(nn.Linear(4, 4), _Round()), eps=0.1, verbose=False)
        compiled = torch.compile(gm, fullgraph=True, backend="eager")
        kept.append((gm, compiled))
        assert torch.equal(compiled(x), gm(x)), i
    assert len({id(type(gm).__call__.__code__) for gm, _ in kept}) == len(kept)


def test_module_compile_in_place_with_fullgraph():
    """``gm.compile(fullgraph=True)`` (nn.Module's in-place spelling): the first call with gradients ran the
    precision check's TorchFunctionMode around the compiled call, which dynamo then traced (Unsupported, on every
    call; audit). Compiled code has no precision check to run, as under torch.compile(gm)."""
    torch.manual_seed(0)
    gm = sll_fx.linearize_module(nn.Sequential(nn.Linear(4, 4), _Round()), eps=0.1, verbose=False)
    x = torch.randn(8, 4, requires_grad=True)
    want = gm(x)
    (g_want,) = torch.autograd.grad(want.sum(), x)
    fresh = sll_fx.linearize_module(nn.Sequential(nn.Linear(4, 4), _Round()), eps=0.1, verbose=False)
    fresh.load_state_dict(gm.state_dict())
    fresh.compile(backend="eager", fullgraph=True)
    for _ in range(2):
        got = fresh(x)
        (g_got,) = torch.autograd.grad(got.sum(), x)
        assert torch.equal(got, want) and torch.equal(g_got, g_want)

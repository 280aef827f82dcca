"""Python values a traced forward read (``self.bits``, ``self.enabled``): changing one after
linearize_module raises instead of being ignored (sll_fx/frozen.py)."""

import pytest
import torch
from torch import nn

import sll_fx
from sll_fx.errors import TraceError

X = torch.rand(6, 4)


class QuantAct(nn.Module):
    """QAT: quantization switched on after a warm-up, a bit-width schedule."""

    def __init__(self):
        super().__init__()
        self.enabled, self.bits, self.label = True, 4, "act"

    def levels(self):
        return 2 ** self.bits - 1

    def forward(self, x):
        if not self.enabled:
            return x
        n = self.levels()
        return torch.round(x.clamp(0, 1) * n) / n

    def extra_repr(self):
        return self.label  # read outside forward: not frozen


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 4)
        self.q = QuantAct()

    def forward(self, x):
        return self.q(self.lin(x))


@pytest.mark.parametrize("name,value", [("bits", 2), ("enabled", False)])
def test_changing_a_value_the_graph_froze_raises(name, value):
    model = Net()
    gm = sll_fx.linearize_module(model, eps=0.05, verbose=False)
    gm(X)
    traced = getattr(model.q, name)
    setattr(model.q, name, value)
    with pytest.raises(TraceError, match=f"'q.{name}' is {value!r} now, {traced!r} when linearize_module traced") as info:
        gm(X)
    assert info.value.module_path == "q" and "Fix: linearize the model again" in str(info.value)
    setattr(model.q, name, traced)
    gm(X)  # back to the traced value: fine
    fresh = sll_fx.linearize_module(model, eps=0.05, mode="hard", verbose=False)  # the fix
    setattr(model.q, name, value)
    fresh2 = sll_fx.linearize_module(model, eps=0.05, mode="hard", verbose=False)
    assert torch.equal(fresh2(X), model(X)) and fresh is not fresh2


def test_values_read_outside_forward_and_on_the_result_itself():
    model = Net()
    gm = sll_fx.linearize_module(model, eps=0.05, verbose=False)
    model.q.label = "renamed"  # only extra_repr reads it
    gm(X)
    root = QuantAct()
    top = sll_fx.linearize_module(root, eps=0.05, verbose=False)
    top.bits = 3  # set on the linearized model itself
    with pytest.raises(TraceError, match="'bits' is 3 now, 4"):
        top(X)


class Gated(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 4)

    def forward(self, x, mask=None):
        g = (self.lin(x) > 0).float()
        if mask is not None:  # a proxy is not None: traced with the mask
            g = g * mask
        return g


def test_a_none_input_the_graph_uses_names_the_input_and_the_fix():
    model = Gated()
    gm = sll_fx.linearize_module(model, eps=0.05, verbose=False)
    gm(X, torch.ones(6, 4))
    with pytest.raises(TraceError, match="input 'mask' is None here") as info:
        gm(X)
    assert "concrete_args={'mask': None}" in str(info.value) and isinstance(info.value.__cause__, TypeError)
    without = sll_fx.linearize_module(model, eps=0.05, mode="hard", verbose=False, concrete_args={"mask": None})
    assert torch.equal(without(X), model(X))


def test_a_none_input_a_graph_takes_as_none_runs():
    class Biased(nn.Module):
        def __init__(self):
            super().__init__()
            self.weight = nn.Parameter(torch.randn(4, 4))

        def forward(self, x, bias=None):
            return torch.sign(torch.nn.functional.linear(x, self.weight, bias))

    model = Biased()
    gm = sll_fx.linearize_module(model, eps=1e-3, mode="hard", verbose=False)
    assert torch.equal(gm(X), model(X))


class GradNoise(nn.Module):
    def forward(self, x):
        if torch.is_grad_enabled():  # noise only while training with gradients
            x = x + 0.5
        return torch.round(x)


def test_a_forward_reading_the_grad_mode_is_kept_opaque():
    model = GradNoise()
    gm = sll_fx.linearize_module(model, eps=1e-3, mode="hard", verbose=False)
    (record,) = gm.sll_report.opaque
    assert record.reason.startswith("reads torch.is_grad_enabled() in forward")
    with torch.no_grad():
        assert torch.equal(gm(X), model(X))
    assert torch.equal(gm(X), model(X))


def test_a_class_level_default_is_checked_too():
    class Fixed(nn.Module):
        bits = 4

        def forward(self, x):
            return torch.round(x * (2 ** self.bits - 1))

    model = Fixed()
    gm = sll_fx.linearize_module(model, eps=0.05, verbose=False)
    model.bits = 2
    with pytest.raises(TraceError, match="'bits' is 2 now, 4"):
        gm(X)

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

"""Python values a traced forward read (``self.bits``, ``self.enabled``): changing one after
linearize_module raises instead of being ignored (sll_fx/frozen.py)."""

import copy
import dataclasses
import re
import types

import pytest
import torch
from torch import nn

import sll_fx
from sll_fx import frozen
from sll_fx.errors import TraceError

from _helpers import COPIES

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
    def __init__(self, quant=QuantAct):
        super().__init__()
        self.lin = nn.Linear(4, 4)
        self.q = quant()

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
    # (raised before the graph runs: forward tests the mask against None, used or not; it was raised after the graph's
    # TypeError on None, which a graph accepting None where it uses the input never raises)
    assert "concrete_args={'mask': None}" in str(info.value) and info.value.__cause__ is None
    without = sll_fx.linearize_module(model, eps=0.05, mode="hard", verbose=False, concrete_args={"mask": None})
    assert torch.equal(without(X), model(X))


class Switched(nn.Module):
    """An input defaulting to None that forward only tests against None: the graph does not use it."""

    def forward(self, a, b=None, c=None):
        y = torch.round(a)
        if b is not None:  # a proxy is not None: traced with the branch for a tensor
            y = y + 1
        if c is None:  # (never taken while tracing)
            y = y * 2
        return y


@pytest.mark.parametrize("how", ["gm", "hard", *COPIES])
def test_a_none_input_the_forward_only_tests_names_the_input_and_the_fix(how):
    """gm(x) without b silently gave [2, -2, 4] where the model gave [1, -3, 3]: the trace took the branch for a
    tensor, the graph does not use b, and the TypeError check never ran."""
    model, x, t = Switched(), torch.tensor([1.2, -2.7, 3.1]), torch.ones(3)
    gm = sll_fx.linearize_module(model, eps=0.05, mode="hard", verbose=False)
    gm = sll_fx.export_hard(gm, verbose=False) if how == "hard" else COPIES[how](gm) if how in COPIES else gm
    assert torch.equal(gm(x, t, t), model(x, t, t)) and torch.equal(gm(x, c=t, b=t), model(x, t, t))
    for args, kwargs, name in (((x,), {}, "b"), ((x, None, t), {}, "b"), ((x, t), {}, "c"), ((x,), {"b": t}, "c")):
        with pytest.raises(TraceError, match=f"input '{name}' is None here") as info:
            gm(*args, **kwargs)
        assert str(info.value).endswith(f"Fix: pass it, or linearize with concrete_args={{'{name}': None}} for the "
                                        "calls without it (one linearized model per case)")
        assert "the forward tests it against None" in str(info.value)
    without = sll_fx.linearize_module(model, eps=0.05, mode="hard", verbose=False,
                                      concrete_args={"b": None, "c": None})
    assert torch.equal(without(x), model(x)) and torch.equal(without(x), torch.tensor([2.0, -6.0, 6.0]))


class _Shift(nn.Module):
    def forward(self, x, m=None):
        if m is None:
            return x + 1
        return x - 1


class NoneTestedInChild(nn.Module):
    """The None test is in a child module's forward: the parent's code only passes ``m`` on."""

    def __init__(self):
        super().__init__()
        self.shift = _Shift()

    def forward(self, x, m=None):
        return torch.sign(self.shift(x, m))


class NoneTestedInHelper(nn.Module):
    """The None test is in a helper method; ``unused`` is passed on too, and no code tests it."""

    def scale(self, x, m, unused):
        return x * 2 if m is not None else x

    def forward(self, x, m=None, unused=None):
        return torch.round(self.scale(x, m, unused))


@pytest.mark.parametrize("how", ["gm", "hard"])
def test_a_none_input_tested_in_a_child_or_a_helper_names_the_input_and_the_fix(how):
    """``gm(x)`` silently gave [-1, -1] where the model gives [1, -1] (the child's branch for a tensor, x - 1), and
    [1, -6] where the model gives [0, -3] (the helper's x * 2): only forward's own code was read for the test."""
    x = torch.tensor([0.3, -3.0])
    for model, name in ((NoneTestedInChild(), "m"), (NoneTestedInHelper(), "m")):
        gm = sll_fx.linearize_module(model, eps=0.05, verbose=False)
        gm = sll_fx.export_hard(gm, verbose=False) if how == "hard" else gm
        assert torch.equal(gm(x, x), model(x, x))
        with pytest.raises(TraceError, match=f"input '{name}' is None here") as info:
            gm(x)
        assert "concrete_args={'m': None}" in str(info.value) and "in code it calls" in str(info.value)
        without = sll_fx.linearize_module(model, eps=0.05, verbose=False, concrete_args={"m": None})
        assert torch.equal(without(x), model(x))
    helper = sll_fx.linearize_module(NoneTestedInHelper(), eps=0.05, verbose=False)
    assert torch.equal(helper(x, x, None), NoneTestedInHelper()(x, x))  # (unused: None gives the same graph)
    assert torch.equal(NoneTestedInChild()(x), torch.tensor([1.0, -1.0]))


class _Pick(nn.Module):
    """Whose None matters only together: each alone gives the graph traced with both tensors."""

    def pick(self, x, a, b):
        if a is None and b is None:
            return x + 1
        return x - 1

    def forward(self, x, a=None, b=None):
        return torch.sign(self.pick(x, a, b))


class _NaNFill(nn.Module):
    def forward(self, x, mask=None):  # (mask: unused, untested)
        return torch.sign(x).masked_fill(x.abs() > 5, float("nan"))


class _OpaqueCaller(nn.Module):
    def __init__(self):
        super().__init__()
        self.c = NoneTestedInChild()

    def forward(self, x):
        if x.sum() > -1e9:  # (data-dependent: kept opaque, its child traced)
            return self.c(x)
        return x


def test_none_inputs_that_matter_together_a_nan_literal_and_an_opaque_caller():
    """Three cases of the None probe (9526d3a).  ``a is None and b is None``: each alone traced as the graph with both
    tensors, so neither was marked and ``gm(x)`` silently gave [-1, -1] where the model gives [1, -1].  A
    ``float("nan")`` literal (a new object in each trace, unequal to itself) made every trace "differ": an unused
    ``mask`` was marked and ``gm(x)`` refused.  A child traced under an opaque parent, whose None-default input the
    parent does not pass: the call-time error named ``concrete_args``, which cannot reach the child."""
    x = torch.tensor([0.3, -3.0])
    gm = sll_fx.linearize_module(_Pick(), eps=0.05, verbose=False)
    assert torch.equal(_Pick()(x), torch.tensor([1.0, -1.0]))
    with pytest.raises(TraceError, match="is None here"):
        gm(x)
    assert torch.equal(gm(x, x, x), _Pick()(x, x, x))
    gm = sll_fx.linearize_module(_NaNFill(), eps=0.05, verbose=False)
    y = torch.tensor([0.3, -7.0])
    torch.testing.assert_close(gm(y), _NaNFill()(y), rtol=0, atol=0, equal_nan=True)  # (no error: mask unmarked)
    model = _OpaqueCaller()
    gm = sll_fx.linearize_module(model, eps=0.05, verbose=False)
    assert torch.equal(gm(x), model(x)) and torch.equal(model(x), torch.tensor([1.0, -1.0]))
    assert {o.path: o.reason for o in gm.sll_report.opaque}["c"] == \
        "tests its input m against None (its caller is opaque): kept opaque"


class _PickWithUnrelated(_Pick):
    def forward(self, x, a=None, b=None, unrelated=None):
        return torch.sign(self.pick(x, a, b))


class _KeywordsRead(nn.Module):
    def forward(self, x, **kw):
        m = kw.get("mask")
        return torch.sign(x + 1 if m is None else x - 1)


def test_an_unrelated_none_input_is_not_marked_and_a_keywords_read_keeps_its_module_opaque():
    """c72c639 marked every unused None-default input when none alone mattered: gm(x, a=t, b=t) named 'unrelated',
    which the forward never reads.  ``m = kw.get("mask")`` then ``if m is None``: gm(x) silently gave the branch for a
    value ([-1, -1, -1] where the model gives [1, 1, 1])."""
    x, t = torch.tensor([0.3, -0.2, 0.9]), torch.ones(3)
    gm = sll_fx.linearize_module(_PickWithUnrelated(), eps=0.05, verbose=False)
    assert torch.equal(gm(x, a=t, b=t), _PickWithUnrelated()(x, a=t, b=t))
    with pytest.raises(TraceError, match="input '[ab]' is None here"):
        gm(x)
    model = _KeywordsRead()
    gm = sll_fx.linearize_module(model, eps=0.05, verbose=False)
    assert [o.reason for o in gm.sll_report.opaque] == ["reads **kw['mask'], which may be missing: kept opaque"]
    assert torch.equal(gm(x), model(x)) and torch.equal(model(x), torch.ones(3))
    assert torch.equal(gm(x, mask=t), model(x, mask=t))
    for model in (_KeywordFlag(), _KeywordPopped()):  # (ca98240 traced these: gm(x) 3 of 12, gm(x, flip=True) 10 of 12
        gm = sll_fx.linearize_module(model, eps=0.05, verbose=False)  # elements wrong)
        assert [o.reason for o in gm.sll_report.opaque][0].endswith(", which may be missing: kept opaque")
        for kw in ({}, {"scale": 2.0, "flip": True}):
            assert torch.equal(gm(x, **kw), model(x, **kw))


class _KeywordCopied(nn.Module):
    def forward(self, x, **kwargs):
        opts = kwargs.copy()
        mask = opts.get("mask")
        return torch.sign(x + 1 if mask is None else x - 1)


class _KeywordUsed(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3, 3)

    def forward(self, x, **kwargs):
        return (self.fc(x) * kwargs["scale"] > 0.1).float()


def test_a_copied_keywords_read_keeps_its_module_opaque_and_auto_eps_binds_keywords():
    """``opts = kwargs.copy(); opts.get("mask")`` was traced: gm(x) gave the branch for a given mask (62 of 80 elements
    wrong in the audit's model).  eps="auto" with a forward whose **kwargs the graph uses raised 'calibrate: no value
    for input kwargs' on its first call (fx's Interpreter also takes a **kwargs input as a list)."""
    x = torch.tensor([[0.3, -0.2, 0.9]])
    gm = sll_fx.linearize_module(_KeywordCopied(), eps=0.05, verbose=False)
    assert [o.reason for o in gm.sll_report.opaque] == ["reads **kwargs['mask'], which may be missing: kept opaque"]
    assert torch.equal(gm(x), _KeywordCopied()(x))
    model = _KeywordUsed()
    gm = sll_fx.linearize_module(model, verbose=False)  # eps="auto"
    assert gm(x, scale=2.0).shape == (1, 3) and list(sll_fx.eps_state(gm)) == ["gt"]


class _KeywordMerged(nn.Module):
    def forward(self, x, **kwargs):
        mask = ({"mask": None} | kwargs)["mask"]
        return torch.sign(x + 1 if mask is None else x - 1)


class _KeywordPoppedRequired(nn.Module):
    def forward(self, x, **kwargs):
        opts = kwargs.copy()
        return torch.sign(x * opts.pop("scale") - 0.5)


class _ArgsAndKeywords(nn.Module):
    def forward(self, x, *args, **kwargs):
        return torch.sign(x * kwargs["scale"] + args[0])


def test_keyword_reads_through_a_merge_a_required_pop_and_auto_eps_with_args_and_keywords():
    """``({"mask": None} | kwargs)["mask"]`` was traced (gm gave the branch for a given mask); ``opts.pop("scale")``
    without a default (required, as ``opts["scale"]``) kept its module opaque; eps="auto" on ``forward(x, *args,
    **kwargs)`` raised a bare StopIteration on its first call."""
    x = torch.tensor([[0.3, -0.2, 0.9]])
    gm = sll_fx.linearize_module(_KeywordMerged(), eps=0.05, verbose=False)
    assert gm.sll_report.opaque and torch.equal(gm(x), _KeywordMerged()(x))
    gm = sll_fx.linearize_module(_KeywordPoppedRequired(), eps=0.05, verbose=False)
    assert not gm.sll_report.opaque and [e.node for e in gm.sll_report.rewritten] == ["sign"]
    gm = sll_fx.linearize_module(_ArgsAndKeywords(), verbose=False)  # eps="auto"
    assert gm(x, 0.3, scale=2.0).shape == (1, 3) and list(sll_fx.eps_state(gm)) == ["sign"]


class _ArgsAsATuple(nn.Module):
    def forward(self, x, *args):
        return torch.sign(torch.cat((x,) + args))


def test_auto_eps_gives_args_as_a_tuple():
    """The calibrating interpreter gave ``*args`` as a list: ``(x,) + args`` raised "can only concatenate tuple (not
    list) to tuple" on every call of an eps="auto" result (calibration stayed pending)."""
    x, y = torch.tensor([-0.5, 0.5]), torch.tensor([-0.3, 0.7])
    gm = sll_fx.linearize_module(_ArgsAsATuple(), verbose=False)
    assert gm(x, y).shape == (4,) and list(sll_fx.eps_state(gm)) == ["sign"]
    assert torch.equal(sll_fx.export_hard(gm, verbose=False)(x, y), _ArgsAsATuple()(x, y))


class _KeywordOnlyAfterArgs(nn.Module):
    def forward(self, x, *extra, mask=None):
        y = torch.sign(x) + extra[0]
        return y if mask is None else y * mask


class _KeywordOnlyFixed(nn.Module):  # (the fix the reason names: the input before *extra)
    def forward(self, x, mask, *extra):
        return (torch.sign(x) + extra[0]) * mask


def test_keyword_only_inputs_after_args_keep_the_module_opaque():
    """fx generates ``forward(self, x, mask=None, *extra)`` for ``forward(self, x, *extra, mask=None)``: ``gm(x, e0,
    e1)`` bound ``mask=e0`` and silently differed from the model, ``gm(x, e0)`` raised an IndexError."""
    x, e0, e1, mask = torch.tensor([0.3, -0.2]), torch.ones(2), 2 * torch.ones(2), torch.tensor([1.0, 0.0])
    model = _KeywordOnlyAfterArgs()
    gm = sll_fx.linearize_module(model, eps=0.05, mode="hard", verbose=False)
    assert [o.reason for o in gm.sll_report.opaque] == [
        "keyword-only input(s) mask after *extra, which fx's generated forward would bind positionally: kept opaque"]
    for args, kwargs in [((x, e0), {}), ((x, e0, e1), {}), ((x, e0), {"mask": mask})]:
        assert torch.equal(gm(*args, **kwargs), model(*args, **kwargs))
    fixed = sll_fx.linearize_module(_KeywordOnlyFixed(), eps=0.05, verbose=False)
    assert not fixed.sll_report.opaque and [e.node for e in fixed.sll_report.rewritten] == ["sign"]


class _BatchDict(nn.Module):
    """A dict input whose mask may be missing (``batch.get("mask")``) or is tested only (``batch["mask"] is None``)."""

    def __init__(self, optional: bool):
        super().__init__()
        self.optional = optional
        self.pos = nn.Parameter(torch.ones(2))

    def forward(self, batch):
        x = batch["x"]
        if not self.optional:  # (tested only: the graph does not use the item)
            return torch.sign(x + self.pos) if batch["mask"] is None else torch.sign(x) * 2
        m = batch.get("mask")
        if m is None:
            return torch.sign(x + self.pos)
        return torch.sign(x) * m


@pytest.mark.parametrize("optional", [True, False])
def test_an_item_of_a_dict_input_that_may_be_missing_or_none_keeps_the_module_opaque(optional):
    """Only ``**kwargs`` items were checked: ``batch.get("mask")`` was traced as given, so ``gm({"x": x})`` raised
    (None times a tensor) where the model adds its position; ``batch["mask"] is None`` read in Python alike."""
    model = _BatchDict(optional)
    gm = sll_fx.linearize_module(model, eps=0.05, mode="hard", verbose=False)
    how = "which may be missing" if optional else "only in Python"
    assert [o.reason for o in gm.sll_report.opaque] == [f"reads batch['mask'], {how}: kept opaque"]
    x = torch.tensor([0.3, -1.2])
    batches = [{"x": x, "mask": torch.tensor([1.0, 0.0])}, {"x": x, "mask": None}] + ([{"x": x}] if optional else [])
    for batch in batches:
        assert torch.equal(gm(batch), model(batch))


class _KeywordFlag(nn.Module):
    def forward(self, x, **kw):
        scale = kw.get("scale", False)
        return torch.sign(x + 1 if scale is False else x * scale)


class _KeywordPopped(nn.Module):
    def forward(self, x, **kw):
        if kw.pop("flip", False) is True:
            x = -x
        return torch.sign(x)


class _TestedAndUsed(nn.Module):
    """Tests its mask and hands it to a module that accepts None: a graph with the mask runs without it, wrong."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.mha = nn.MultiheadAttention(4, 1, batch_first=True)
        self.pos = nn.Parameter(torch.ones(4))

    def forward(self, x, attn_mask=None):
        if attn_mask is None:
            x = x + self.pos
        return torch.sign(self.mha(x, x, x, attn_mask=attn_mask)[0])


class _TestedInAChildAndUsed(nn.Module):
    def __init__(self):
        super().__init__()
        self.inner = _TestedAndUsed()

    def forward(self, x, attn_mask=None):
        return self.inner(x, attn_mask) * 2


@pytest.mark.parametrize("cls", [_TestedAndUsed, _TestedInAChildAndUsed])
def test_a_none_input_the_graph_uses_and_the_forward_tests_names_the_input(cls):
    """Before: used by the graph (MultiheadAttention accepts attn_mask=None) and tested (if attn_mask is None: x + pos),
    the input was neither refused nor probed: gm(x) silently differed from the model in 10 of 24 elements."""
    model, x = cls(), torch.randn(2, 3, 4, generator=torch.Generator().manual_seed(0))
    gm = sll_fx.linearize_module(model, eps=0.05, mode="hard", verbose=False)
    mask = torch.zeros(3, 3)
    with torch.no_grad():
        assert torch.equal(gm(x, mask), model(x, mask))
        with pytest.raises(TraceError, match="input 'attn_mask' is None here"):
            gm(x)


def test_an_unused_none_input_the_forward_does_not_test_runs():
    class Unused(nn.Module):
        def forward(self, a, unused=None):
            return torch.round(a)

    gm = sll_fx.linearize_module(Unused(), eps=0.05, mode="hard", verbose=False)
    assert frozen.NONE_TESTED not in gm.__dict__ and torch.equal(gm(X), torch.round(X))


class MaskedRound(nn.Module):
    def forward(self, x, mask=None):
        y = torch.round(x)
        if mask is not None:  # the mask feeds a rewritten comparison, then a rewritten sign
            y = y * (mask > 0).float() + torch.sign(mask)
        return y


def test_a_none_input_feeding_an_sll_op_names_the_input_and_the_fix():
    """The sll op given None raised "AttributeError: 'NoneType' object has no attribute 'is_floating_point'" from
    inside sll.compare, where a torch op's TypeError gave the TraceError (audit)."""
    gm = sll_fx.linearize_module(MaskedRound(), eps=0.05, verbose=False)
    x = torch.tensor([1.2, -2.7, 3.1])
    assert torch.equal(gm(x, torch.ones(3)), torch.round(x) + 1.0)
    with pytest.raises(TraceError, match=r"input 'mask' is None here.*\nFix: pass it, or linearize with "
                                         r"concrete_args=\{'mask': None\}") as info:
        gm(x)
    assert info.value.__cause__ is None  # (raised before the graph runs, as for every input the forward tests)


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


class QuantCfg(nn.Module):
    """The same quantizer, configured by a dict: ``self.cfg["bits"]``."""

    def __init__(self):
        super().__init__()
        self.cfg = {"bits": 4, "enabled": True, "label": "act"}

    def forward(self, x):
        if not self.cfg["enabled"]:
            return x
        n = 2 ** self.cfg["bits"] - 1
        return torch.round(x.clamp(0, 1) * n) / n


@pytest.mark.parametrize("key,value", [("bits", 2), ("enabled", False)])
def test_changing_an_item_of_a_dict_the_graph_froze_raises(key, value):
    model = Net(QuantCfg)
    gm = sll_fx.linearize_module(model, eps=0.05, verbose=False)
    gm(X)
    model.q.cfg["label"] = "renamed"  # a key forward does not read
    model.q.cfg["new"] = 1
    gm(X)
    traced = model.q.cfg[key]
    model.q.cfg[key] = value
    with pytest.raises(TraceError, match=re.escape(f"""'q.cfg["{key}"]' is {value!r} now, {traced!r} when """
                                                   "linearize_module traced")) as info:
        gm(X)
    assert info.value.module_path == "q" and "Fix: linearize the model again" in str(info.value)
    model.q.cfg[key] = traced
    gm(X)  # back to the traced value: fine
    model.q.cfg = {"bits": 4, "enabled": True}  # another dict, same values read: fine
    gm(X)
    model.q.cfg = {**model.q.cfg, key: value}  # another dict, another value: raises
    with pytest.raises(TraceError, match=re.escape(f"""'q.cfg["{key}"]' is {value!r} now""")):
        gm(X)


def test_an_item_removed_since_tracing_raises():
    model = Net(QuantCfg)
    gm = sll_fx.linearize_module(model, eps=0.05, verbose=False)
    del model.q.cfg["bits"]
    with pytest.raises(TraceError, match=re.escape("""'q.cfg["bits"]' is missing now, 4 when linearize_module""")):
        gm(X)


class Nested(nn.Module):
    def __init__(self):
        super().__init__()
        self.cfg = {"q": {"bits": 4, "unused": 0}}
        self.scales = [2.0, 3.0]

    def forward(self, x):
        n = 2 ** self.cfg["q"]["bits"] - 1
        return torch.round(x * n * self.scales[0]) / n


def test_a_nested_subscript_and_a_list_index_are_checked():
    model = Nested()
    assert frozen.values_read(model) == {("cfg", ("[", "q"), ("[", "bits")): 4, ("scales", ("[", 0)): 2.0}
    gm = sll_fx.linearize_module(model, eps=0.05, verbose=False)
    model.scales[1] = 7.0  # not read
    model.cfg["q"]["unused"] = 1
    gm(X)
    model.cfg["q"]["bits"] = 3
    with pytest.raises(TraceError, match=re.escape("""'cfg["q"]["bits"]' is 3 now, 4 when""")):
        gm(X)
    model.cfg["q"]["bits"] = 4
    model.scales[0] = 5.0
    with pytest.raises(TraceError, match=re.escape("'scales[0]' is 5.0 now, 2.0 when")):
        gm(X)
    model.scales[0] = 2  # an int now, not the float traced: a change
    with pytest.raises(TraceError, match=re.escape("'scales[0]' is 2 now, 2.0 when")):
        gm(X)


@dataclasses.dataclass
class Config:
    bits: int = 4
    label: str = "act"


@pytest.mark.parametrize("make", [Config, lambda: types.SimpleNamespace(bits=4, label="act")])
def test_a_field_of_a_dataclass_or_namespace_is_checked(make):
    class Quant(nn.Module):
        def __init__(self):
            super().__init__()
            self.cfg = make()

        def forward(self, x):
            return torch.round(x * (2 ** self.cfg.bits - 1))

    model = Quant()
    gm = sll_fx.linearize_module(model, eps=0.05, verbose=False)
    model.cfg.label = "renamed"  # not read
    gm(X)
    model.cfg.bits = 2
    with pytest.raises(TraceError, match=re.escape("'cfg.bits' is 2 now, 4 when")):
        gm(X)


def test_an_item_on_the_result_itself_is_checked():
    top = sll_fx.linearize_module(QuantCfg(), eps=0.05, verbose=False)
    top(X)
    top.cfg = {"bits": 3, "enabled": True}  # set on the linearized model itself
    with pytest.raises(TraceError, match=re.escape("""'cfg["bits"]' is 3 now, 4""")):
        top(X)


def test_a_container_read_otherwise_is_checked_whole():
    """A variable key, a loop, an argument or a name bound again: the whole container read is checked."""
    class Other(nn.Module):
        def __init__(self):
            super().__init__()
            self.cfg = {"bits": 4, "on": True}
            self.sizes = (4, 8)  # plain itself: checked whole, as before
            self.key = "bits"

        def forward(self, x, cfg=None):
            n = self.cfg[self.key] + self.sizes[0]  # a variable key
            for k in self.cfg:  # a loop
                n = n + len(k)
            cfg = cfg or self.cfg  # an argument bound again
            c = self.cfg
            c = {"bits": 2}  # a name bound twice
            return x * (n + cfg["on"] + c["bits"])

    assert frozen.values_read(Other()) == {"key": "bits", "sizes": (4, 8), "cfg": {"bits": 4, "on": True}}


class Loops(nn.Module):
    """Containers read otherwise than with constant keys: each is checked whole."""

    def __init__(self):
        super().__init__()
        self.cfg = {"a": 1.0, "b": 2.0}
        self.scales = [1.0, 2.0]
        self.levels = {"q": [3, 5], "unused": 0}
        self.spec = Config()
        self.other = {"a": 3.0}
        self.opt = {"x": 1}  # only tested against None: not read
        self.tables = {"w": torch.ones(2)}  # holds a tensor: not a plain value, not checked

    def forward(self, x):
        for key in ("a", "b"):
            x = torch.round(x * self.cfg[key])  # a variable key
        for s in self.scales:  # a loop over a list
            x = torch.round(x * s)
        for n in self.levels["q"]:  # a loop over an item
            x = torch.round(x * n)
        c = self.other
        x = x * c["a"]
        c = self.cfg  # bound twice: both read whole
        x = x + len(dataclasses.astuple(self.spec))  # a dataclass passed on
        if self.opt is not None:
            x = x + 1
        return x + self.tables["w"].sum()


CHANGES = [
    (lambda m: m.cfg.__setitem__("b", 5.0), "'cfg' is {'a': 1.0, 'b': 5.0} now, {'a': 1.0, 'b': 2.0} when"),
    (lambda m: m.cfg.__setitem__("c", 0.0), "'cfg' is {'a': 1.0, 'b': 2.0, 'c': 0.0} now"),
    (lambda m: m.scales.append(3.0), "'scales' is [1.0, 2.0, 3.0] now, [1.0, 2.0] when"),
    (lambda m: m.scales.__setitem__(0, 1), "'scales' is [1, 2.0] now"),  # an int now, not the float traced
    (lambda m: m.levels["q"].__setitem__(1, 7), """'levels["q"]' is [3, 7] now, [3, 5] when"""),
    (lambda m: m.other.__setitem__("a", 4.0), "'other' is {'a': 4.0} now, {'a': 3.0} when"),
    (lambda m: setattr(m.spec, "bits", 2), "'spec' is Config(bits=2, label='act') now, Config(bits=4, label='act')"),
]


@pytest.mark.parametrize("change,text", CHANGES)
def test_changing_a_container_read_in_a_loop_or_with_a_variable_key_raises(change, text):
    model = Loops()
    assert set(frozen.values_read(model)) == {"cfg", "scales", ("levels", ("[", "q")), "other", "spec"}
    gm = sll_fx.linearize_module(model, eps=0.05, verbose=False)
    gm(X)
    model.levels["unused"] = 1  # not read
    model.opt["x"] = 2  # tested against None only
    model.tables["w"] = torch.zeros(2)  # not a plain value (not checked)
    gm(X)
    change(model)
    with pytest.raises(TraceError, match=re.escape(text)):
        gm(X)


@pytest.mark.parametrize("how", list(COPIES))
def test_copies_check_containers_read_whole(how):
    model = nn.Sequential(Loops())
    twin = COPIES[how](sll_fx.linearize_module(model, eps=0.05, verbose=False))
    twin(X)
    twin.get_submodule("0").scales = [1.0, 4.0]  # set on the copy's module
    with pytest.raises(TraceError, match=re.escape("'0.scales' is [1.0, 4.0] now, [1.0, 2.0] when")):
        twin(X)
    twin.get_submodule("0").scales = [1.0, 2.0]
    twin(X)
    model[0].scales[1] = 4.0  # the model's list: a shallow copy checks the model's module, a deep one does not
    if how == "copy":
        with pytest.raises(TraceError, match=re.escape("'0.scales' is [1.0, 4.0] now")):
            twin(X)
    else:
        twin(X)


def test_a_local_name_used_before_its_one_store_in_a_loop_is_followed():
    class Late(nn.Module):
        def __init__(self):
            super().__init__()
            self.cfg = {"bits": 4, "label": "act"}

        def forward(self, x):
            for i in range(2):
                if i:
                    x = torch.round(x * c["bits"])  # noqa: F821 (bound below, on the first pass)
                c = self.cfg
            return x

    assert frozen.values_read(Late()) == {("cfg", ("[", "bits")): 4}


class Local(nn.Module):
    """Items read through a local name and with ``.get``."""

    def __init__(self):
        super().__init__()
        self.cfg = {"bits": 4, "q": {"scale": 2.0}, "on": True, "label": "act"}

    def forward(self, x):
        cfg = self.cfg
        q = cfg["q"]
        n = 2 ** cfg["bits"] - 1
        if not self.cfg.get("on", False):
            return x
        return torch.round(x * n * q.get("scale")) / n


def test_items_read_through_a_local_name_or_get_are_checked():
    model = Local()
    assert frozen.values_read(model) == {("cfg", ("[", "bits")): 4, ("cfg", ("[", "on")): True,
                                         ("cfg", ("[", "q"), ("[", "scale")): 2.0}
    gm = sll_fx.linearize_module(model, eps=0.05, verbose=False)
    model.cfg["label"] = "renamed"  # not read
    gm(X)
    for key, value, text in [("bits", 2, """'cfg["bits"]' is 2 now, 4 when"""),
                             ("on", False, """'cfg["on"]' is False now, True when""")]:
        model.cfg[key] = value
        with pytest.raises(TraceError, match=re.escape(text)):
            gm(X)
        model.cfg[key] = {"bits": 4, "on": True}[key]
        gm(X)
    model.cfg["q"]["scale"] = 3.0
    with pytest.raises(TraceError, match=re.escape("""'cfg["q"]["scale"]' is 3.0 now, 2.0 when""")):
        gm(X)
    model.cfg["q"]["scale"] = 2.0
    del model.cfg["on"]  # .get now gives its default
    with pytest.raises(TraceError, match=re.escape("""'cfg["on"]' is missing now, True when""")):
        gm(X)


class Scaled(nn.Module):
    """A quantizer whose forward reads a buffer and a parameter of its own (``get_attr`` nodes of the result)."""

    def __init__(self):
        super().__init__()
        self.register_buffer("scale", torch.tensor(4.0))
        self.alpha = nn.Parameter(torch.tensor(1.0))

    def forward(self, x):
        return torch.round(x * self.scale) / self.scale * self.alpha


class WithLeaf(nn.Module):
    def __init__(self):
        super().__init__()
        self.q = Scaled()
        self.fc = nn.Linear(8, 8)

    def forward(self, x):
        return self.fc(self.q(x))


XS = torch.linspace(-1.0, 1.0, 16).reshape(2, 8)


@pytest.mark.parametrize("replace", [
    lambda m: m.half(),                                          # buffers replaced (parameters converted in place)
    lambda m: setattr(m.q, "scale", torch.tensor(2.0)),          # a buffer assigned anew
    lambda m: setattr(m.q, "alpha", nn.Parameter(torch.tensor(2.0))),  # a parameter assigned anew
], ids=["half", "buffer", "parameter"])
def test_a_tensor_replaced_on_the_model_raises(replace):
    """model.half() / an assignment on the model after linearize_module: the result would read the old
    tensor (before: float32 scale next to half weights, or the old value, silently)."""
    model = WithLeaf()
    gm = sll_fx.linearize_module(model, eps=0.05, verbose=False)
    gm(XS)
    replace(model)
    with pytest.raises(TraceError, match=r"the model's (buffer 'q\.scale'|parameter 'q\.alpha') was replaced since "
                                         r"linearize_module"):
        gm(XS)


def test_tensors_changed_in_place_or_moved_with_the_result_do_not_raise():
    model = WithLeaf()
    gm = sll_fx.linearize_module(model, eps=0.05, verbose=False)
    model.load_state_dict(WithLeaf().state_dict())  # in place: still shared
    gm(XS)
    gm.double()  # the result moved: the model's buffers follow (its parameters are converted in place)
    assert model.q.scale is gm.q.scale and model.q.scale.dtype == torch.float64
    gm(XS.double())
    gm.q.scale = torch.tensor(3.0, dtype=torch.float64)  # replaced on the result alone (as FSDP does): its own
    gm(XS.double())
    copy.deepcopy(gm)(XS.double())  # a copy shares nothing with the model: nothing to check


def test_moving_the_result_then_replacing_its_tensor_does_not_raise():
    """gm.double() (the model's buffers follow), then a tensor replaced on gm alone with no call between; and a
    buffer two modules share, which moving makes two tensors (as nn.Module does): each model path gets gm's."""
    model = WithLeaf()
    gm = sll_fx.linearize_module(model, eps=0.05, verbose=False)
    gm.double()
    gm.q.scale = torch.tensor(3.0, dtype=torch.float64)
    gm(XS.double())

    class Tied(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = Scaled(), Scaled()
            self.b.scale = self.a.scale

        def forward(self, x):
            return self.b(self.a(x))

    model = Tied()
    gm = sll_fx.linearize_module(model, eps=0.05, verbose=False)
    gm.double()
    assert model.a.scale is gm.a.scale and model.b.scale is gm.b.scale
    gm(XS.double())




@pytest.mark.parametrize("how", list(COPIES))
def test_copies_check_the_values_the_graph_froze(how):
    model = Net()
    gm = sll_fx.linearize_module(model, eps=0.05, verbose=False)
    twin = COPIES[how](gm)
    twin(X)
    twin.q.bits = 2  # a schedule on the module the copy holds (copy.copy: the model's own)
    with pytest.raises(TraceError, match=r"'q\.bits' is 2 now, 4 when linearize_module traced") as info:
        twin(X)
    assert info.value.module_path == "q"
    with pytest.raises(TraceError, match=r"'q\.bits' is 2 now"):
        sll_fx.export_hard(twin, verbose=False)
    twin.q.bits = 4
    before = twin(X)
    model.q.bits = 2  # the model's module: a shallow copy shares it, a deep one does not (nor the change)
    if how == "copy":
        with pytest.raises(TraceError, match=r"'q\.bits' is 2 now"):
            twin(X)
    else:
        assert twin.q is not model.q and torch.equal(twin(X), before)


def test_a_value_changed_under_torch_compile_names_it_fullgraph_or_not():
    torch._dynamo.reset()
    for fullgraph in (False, True):
        model = Net()
        gm = sll_fx.linearize_module(model, eps=0.05, verbose=False)
        compiled = torch.compile(gm, backend="eager", fullgraph=fullgraph)
        compiled(X)
        model.q.bits = 2
        # fullgraph: dynamo's own error (it cannot leave the graph), quoting the TraceError, message and fix
        with pytest.raises(TraceError if not fullgraph else Exception,
                           match=r"'q\.bits' is 2 now, 4 when linearize_module traced(.|\n)*Fix: linearize the model"):
            compiled(X)
        model.q.bits = 4
        compiled(X)


class _Threshold(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.vth = 1.0

    def forward(self, x):
        return (self.fc(x) > self.vth).float()


def test_a_float_changed_under_torch_compile_fullgraph_names_it_and_the_fix():
    """A float threshold changed after linearize_module (a spiking neuron's ``v_th`` schedule): the check formatted
    it with ``repr``, which dynamo cannot trace for a float it reads from a module, so ``torch.compile(gm,
    fullgraph=True)`` raised "repr_impl not implemented", naming neither the attribute nor the fix (a55)."""
    torch._dynamo.reset()
    model, x = _Threshold(), torch.randn(3, 4)
    gm = sll_fx.linearize_module(model, eps=0.05, verbose=False)
    compiled = torch.compile(gm, backend="eager", fullgraph=True)
    compiled(x)
    model.vth = 0.5
    with pytest.raises(Exception, match=r"'vth' changed since linearize_module traced it(.|\n)*Fix: linearize the"):
        compiled(x)
    with pytest.raises(TraceError, match=r"'vth' is 0\.5 now, 1\.0 when linearize_module traced it"):
        gm(x)


class _Flagged(nn.Module):
    def forward(self, x, flag: bool = True):
        if flag:
            return torch.round(x)
        return torch.sign(x)


def test_an_input_fixed_by_concrete_args_keeps_its_name_and_takes_the_fixed_value_as_default():
    """fx named the placeholder flag_1 with the forward's default (True): gm(x, flag=False) was 'an unexpected keyword
    argument', gm(x) failed fx's 'flag has been specialized' check, and torch.export with flag= failed."""
    x = torch.tensor([1.2, -2.7, 3.1])
    model = _Flagged()
    gm = sll_fx.linearize_module(model, eps=0.1, verbose=False, concrete_args={"flag": False})
    assert torch.equal(gm(x), model(x, flag=False))
    assert torch.equal(gm(x, flag=False), model(x, flag=False))
    assert torch.equal(gm(x, False), model(x, False))
    with pytest.raises(AssertionError, match="flag has been specialized to have value False"):
        gm(x, flag=True)
    hard = sll_fx.export_hard(gm, verbose=False)
    assert torch.equal(hard(x, flag=False), model(x, flag=False))
    other = sll_fx.linearize_module(model, eps=0.1, verbose=False, concrete_args={"flag": True})
    ep = torch.export.export(other, (x,), {"flag": True})
    assert torch.equal(ep.module()(x, flag=True), model(x))


class _FlaggedScaled(nn.Module):
    def forward(self, x, flag=False, scale=None):
        y = torch.round(x * 3)
        if flag:
            y = y + 1
        return y if scale is None else y * scale


def test_a_none_fixed_by_concrete_args_keeps_its_name_too():
    """fx puts its check of flag between the placeholders, so scale stayed scale_1."""
    x = torch.tensor([0.2, 1.4])
    gm = sll_fx.linearize_module(_FlaggedScaled(), eps=0.1, verbose=False, concrete_args={"flag": True, "scale": None})
    assert torch.equal(gm(x, flag=True, scale=None), _FlaggedScaled()(x, True))


@pytest.mark.parametrize("inputs, message", [(torch.zeros(3), "must be a tuple"), ((1, 2, 3, 4), "has 4 value")])
def test_example_inputs_are_checked_against_the_forward_also_when_it_is_opaque(inputs, message):
    class Opaque(nn.Module):
        def forward(self, x, flag=False, scale=None):
            if flag:  # (a Python branch on an input: the model is kept opaque)
                return torch.round(x)
            return x
    with pytest.raises(TypeError, match=f"example_inputs {message}"):
        sll_fx.linearize_module(Opaque(), eps=0.1, verbose=False, example_inputs=inputs)


def test_example_inputs_with_concrete_args_for_the_rest_are_accepted():
    class Required(nn.Module):
        def forward(self, x, flag):
            return torch.round(x) if flag else x

    class KeywordOnly(nn.Module):
        def forward(self, x, *, scale):
            return torch.round(x * scale)

    x = torch.tensor([0.2, 1.4])
    for model, fixed in ((Required(), {"flag": True}), (KeywordOnly(), {"scale": 2.0})):
        gm = sll_fx.linearize_module(model, eps=0.1, verbose=False, example_inputs=(x,), concrete_args=fixed)
        assert gm.sll_report.rewritten


def test_example_inputs_with_an_unknown_concrete_arg_are_refused_and_take_a_positional_only_one():
    """An unknown concrete arg was ignored here (as fx does); it is an error now, with or without example inputs (a
    misspelled name left the input it meant unfixed, a58)."""
    class Plain(nn.Module):
        def forward(self, x):
            return torch.round(x)

    class PositionalOnly(nn.Module):
        def forward(self, x, flag, /):
            return torch.round(x) if flag else x

    x = torch.tensor([0.2, 1.4])
    with pytest.raises(ValueError, match="concrete_args names 'bogus'"):
        sll_fx.linearize_module(Plain(), eps=0.1, verbose=False, example_inputs=(x,), concrete_args={"bogus": 1})
    gm = sll_fx.linearize_module(PositionalOnly(), eps=0.1, verbose=False, example_inputs=(x,),
                                 concrete_args={"flag": True})
    assert gm.sll_report.rewritten


class _Features(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 4)

    def forward(self, x):
        return torch.round(self.lin(x).view(-1, 8))


class _OpaqueFeatures(_Features):
    def forward(self, x):
        if x.dim() == 2:  # (fx: a branch on a proxy, kept opaque; the fake run reads the dim)
            return torch.round(self.lin(x))
        return x


@pytest.mark.parametrize("model, inputs, node, op, message", [
    (_Features(), (torch.zeros(3, 7),), "lin", "Linear 'lin'", "a and b must have same reduction dim"),
    (_Features(), (torch.zeros(2, 4),), None, None, None),
    (_Features(), (torch.zeros(3, 4),), "view", ".view()", "shape '[-1, 8]' is invalid for input of size 12"),
    (nn.Sequential(_OpaqueFeatures()), (torch.zeros(3, 7),), "_0", "_OpaqueFeatures '0'",
     "a and b must have same reduction dim"),
])
def test_example_inputs_the_model_does_not_run_on_are_refused_naming_the_node(model, inputs, node, op, message,
                                                                            capfd):
    """Inputs of the wrong shape were taken: the fake run failed, the dtypes came from the graph, and torch logged a
    19-line ERROR traceback on stderr (a58).  A torch op refusing them (also inside an opaque module) is a
    ValueError naming the node, the op and torch's message; nothing is logged."""
    if node is None:  # (a shape the model runs on: 8 elements -> view(-1, 8))
        gm = sll_fx.linearize_module(model, eps=0.1, verbose=False, example_inputs=inputs)
        assert gm.sll_report.counts["rewritten"] == 1
    else:
        with pytest.raises(ValueError) as e:
            sll_fx.linearize_module(model, eps=0.1, verbose=False, example_inputs=inputs)
        text = str(e.value)
        assert text.startswith(f"linearize_module: example_inputs do not run the model: node '{node}' ({op}")
        assert f"raised RuntimeError: {message}" in text
        assert "\nFix: pass example_inputs the model runs on" in text and "or none" in text
    assert capfd.readouterr().err == ""


def test_example_inputs_the_fake_run_cannot_follow_still_fall_back_to_the_graph(capfd):
    """The fake run's own limits (a data-dependent shape, .numpy() in an opaque module) are no refusal: the model runs
    on these inputs."""
    class Numpy(nn.Module):
        def forward(self, x):
            if x.sum() > 0:  # (kept opaque)
                return x * float(x.detach().numpy().sum())
            return x

    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.np = Numpy()

        def forward(self, x):
            return torch.round(self.np(x)) + torch.floor(x[x > 0]).sum()

    x = torch.rand(3, 4) + 0.1
    gm = sll_fx.linearize_module(Model(), eps=0.1, verbose=False, example_inputs=(x,))
    assert torch.equal(sll_fx.export_hard(gm, verbose=False)(x), Model()(x))
    assert capfd.readouterr().err == ""

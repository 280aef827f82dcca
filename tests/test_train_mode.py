"""``self.training`` in a traced forward: read as a value it becomes a graph input (the result's own
flag, so train()/eval() still switch it); a branch on it keeps that module opaque (sll_fx/tracer.py)."""

import copy
import io

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import sll_fx
from sll_fx.errors import TraceError
from sll_fx.tracer import trace

X = torch.randn(6, 4, generator=torch.Generator().manual_seed(0))


class Spike(nn.Module):
    def forward(self, x):
        return torch.sign(x)


class NoisyQuant(nn.Module):
    """A quantizer that adds noise while training: the branch a trace would bake."""

    def __init__(self):
        super().__init__()
        self.spike = Spike()

    def forward(self, x):
        if self.training:
            return x + 0.25 * torch.round(x)
        return torch.round(x) + self.spike(x)


class Model(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 4)
        self.q = NoisyQuant()

    def forward(self, x):
        return self.q(self.lin(x) * 3)


class Dropped(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 4)

    def forward(self, x):
        return torch.sign(F.dropout(self.lin(x), 0.5, training=self.training)) * (1 + self.training)


def _model(cls):
    torch.manual_seed(0)
    return cls()


def _same_in_both_modes(model, gm):
    for train in (True, False, True):
        model.train(train)
        gm.train(train)
        torch.manual_seed(1)
        expected = model(X)
        torch.manual_seed(1)
        assert torch.equal(gm(X), expected), f"train={train}"


@pytest.mark.parametrize("traced_in", ["train", "eval"])
def test_a_branch_on_self_training_keeps_the_module_opaque_and_following_the_mode(traced_in):
    model = _model(Model)
    model.train(traced_in == "train")
    gm = sll_fx.linearize_module(model, eps=1e-3, mode="hard", verbose=False)
    assert {o.path: o.reason for o in gm.sll_report.opaque} == \
        {"q": "branches on self.training: kept opaque so it follows train()/eval()"}
    assert [e.module for e in gm.sll_report.rewritten] == ["q.spike"]  # its child is still rewritten
    _same_in_both_modes(model, gm)
    _same_in_both_modes(model, sll_fx.export_hard(gm, verbose=False))


@pytest.mark.parametrize("spelling", [
    lambda self, x: x if not self.training else -x,
    lambda self, x: x if self.training == True else -x,  # noqa: E712
    lambda self, x: x * 2 if self.training and x.dim() == 2 else x,
], ids=["not", "eq", "and"])
def test_every_branch_depending_on_the_flag_is_refused(spelling):
    class Branchy(nn.Module):
        def forward(self, x):
            return torch.sign(spelling(self, x))

    with pytest.raises(TraceError, match="branches on self.training") as info:
        trace(Branchy())
    assert info.value.module_path == "" and "Fix:" in str(info.value)


def test_the_flag_as_a_value_is_read_when_the_graph_runs():
    model = _model(Dropped)
    gm = sll_fx.linearize_module(model, eps=1e-3, mode="hard", verbose=False)
    assert gm.sll_report.opaque == [] and len(gm.sll_report.rewritten) == 1
    assert [n.target for n in gm.graph.nodes if n.op == "get_attr"].count("training") == 1
    _same_in_both_modes(model, gm)
    hard = sll_fx.export_hard(gm, verbose=False)
    _same_in_both_modes(model, hard)
    for clone in (copy.deepcopy(gm), _reloaded(gm)):
        _same_in_both_modes(model, clone)


def _reloaded(gm):
    buf = io.BytesIO()
    torch.save(gm, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=False)


def test_export_of_the_eval_model_specializes_on_the_flag():
    model = _model(Dropped).eval()
    gm = sll_fx.linearize_module(model, eps=1e-3, mode="hard", verbose=False).eval()
    for m in (gm, sll_fx.export_hard(gm, verbose=False)):
        ep = torch.export.export(m, (X,))
        assert torch.equal(ep.module()(X), model(X))


def test_no_flag_read_leaves_no_node_and_the_users_modules_keep_a_bool():
    model = _model(Model)
    sll_fx.linearize_module(model, eps=1e-3, verbose=False)
    gm = sll_fx.linearize_module(model.lin, eps=1e-3, verbose=False)
    assert all(n.target != "training" for n in gm.graph.nodes)
    assert all(type(m.__dict__["training"]) is bool for m in model.modules())


class Backbone(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 4)

    def forward(self, x):
        return F.dropout(self.lin(x), 0.5, training=self.training)


class FineTuned(nn.Module):
    """A frozen backbone in eval mode under a head that trains."""

    def __init__(self):
        super().__init__()
        self.backbone, self.head = Backbone(), nn.Linear(4, 4)

    def forward(self, x):
        return torch.sign(self.head(self.backbone(x)))


def test_a_module_in_the_other_mode_keeps_its_own_flag():
    model = _model(FineTuned).train()
    model.backbone.eval()
    gm = sll_fx.linearize_module(model, eps=1e-3, mode="hard", verbose=False)
    hard = sll_fx.export_hard(gm, verbose=False)
    assert torch.equal(gm(X), model(X)) and torch.equal(hard(X), model(X))  # no dropout: deterministic


def _fine_tuning(*modules) -> None:
    for m in modules:
        m.train()
        m.backbone.eval()


def test_a_submodules_own_train_and_eval_after_linearizing_act_as_on_the_model():
    """``model.train(); model.backbone.eval()`` (fine-tuning a frozen backbone) on the results, after linearizing
    in either mode: each traced module reads its own flag, at its own path (before: every traced module read
    the root's, so the backbone's dropout stayed on, and export_hard differed from the model)."""
    for traced_in in ("train", "eval"):
        model = _model(FineTuned).train(traced_in == "train")
        gm = sll_fx.linearize_module(model, eps=1e-3, mode="hard", verbose=False)
        assert sorted(n.target for n in gm.graph.nodes if n.op == "get_attr" and n.target.endswith("training")) \
            == ["backbone.training"]
        hard = sll_fx.export_hard(gm, verbose=False)
        for result in (gm, hard, copy.deepcopy(gm), _reloaded(gm)):
            _fine_tuning(model, result)
            assert torch.equal(result(X), model(X))  # the backbone's dropout off: deterministic
            result.train()
            model.train()
            torch.manual_seed(5)
            expected = model(X)
            torch.manual_seed(5)
            assert torch.equal(result(X), expected) and not torch.equal(result(X), expected)  # on again


def test_a_forward_assigning_the_flag_is_module_state():
    class Sneaky(nn.Module):
        def forward(self, x):
            self.training = False
            return torch.sign(x)

    gm = sll_fx.linearize_module(Outer(Sneaky()), eps=0.1, verbose=False)
    assert [(o.path, o.reason.split(":")[0]) for o in gm.sll_report.opaque] == \
        [("inner", "assigns self.training in forward")]


class Outer(nn.Module):
    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return torch.round(self.inner(x))


class ReadsLeafFlags(nn.Module):
    """Reads its torch.nn leaves' flags: as a value (dropout's ``training=``) and in a branch."""

    def __init__(self, branch: bool):
        super().__init__()
        self.lin, self.drop, self.bn, self.branch = nn.Linear(4, 4), nn.Dropout(0.5), nn.BatchNorm1d(4), branch

    def forward(self, x):
        h = F.dropout(self.lin(x), 0.5, training=self.drop.training)
        if self.branch and self.bn.training:
            h = h * 2
        return torch.round(self.bn(h) * 2)


@pytest.mark.parametrize("branch", [False, True], ids=["value", "branch"])
def test_a_leafs_flag_read_by_its_parent_follows_train_and_eval(branch):
    # (read as a value, it was the trace-time bool: dropout stayed on after gm.eval(), unreported)
    model = ReadsLeafFlags(branch)
    gm = sll_fx.linearize_module(model, eps=0.1, verbose=False)
    assert bool(gm.sll_report.opaque) == branch  # (a branch on a flag keeps the module opaque, as on self.training)
    for mode in ("train", "eval", "train"):
        for m in (model, gm):
            getattr(m, mode)()
        torch.manual_seed(0)
        hard = sll_fx.export_hard(gm, verbose=False)(X)
        torch.manual_seed(0)
        assert torch.equal(hard, model(X)), mode
    model.train(), gm.train()
    model.drop.eval(), gm.drop.eval()  # (a submodule's own mode)
    torch.manual_seed(0)
    hard = sll_fx.export_hard(gm, verbose=False)(X)
    torch.manual_seed(0)
    assert torch.equal(hard, model(X))
    assert sorted(gm.state_dict()) == sorted(model.state_dict())

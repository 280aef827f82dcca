"""Module hooks: fx traces a submodule's hooks once, on proxies, and never the model's own, so a
module with hooks is kept opaque and its hooks run as registered (sll_fx/tracer.py, scans.hooks_of)."""

import pytest
import torch
from torch import nn

import sll_fx
from sll_fx.errors import EpsError, TraceError
from sll_fx.tracer import trace


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 4)

    def forward(self, x):
        return torch.sign(self.lin(x))


class Model(nn.Module):
    def __init__(self):
        super().__init__()
        self.block = Block()
        self.out = nn.Linear(4, 2)

    def forward(self, x):
        return self.out(self.block(x))


def _model():
    torch.manual_seed(0)
    return Model()


X = torch.randn(8, 4, generator=torch.Generator().manual_seed(0))


def _opaque(gm):
    return {o.path: o.reason for o in gm.sll_report.opaque}


@pytest.mark.parametrize("register", [
    lambda m: m.register_forward_hook(lambda mod, args, out: out + 100.0),
    lambda m: m.register_forward_pre_hook(lambda mod, args: (args[0] * 2.0,)),
    lambda m: m.register_forward_hook(lambda mod, args, kwargs, out: out - 1.0, with_kwargs=True),
], ids=["forward", "pre", "forward_with_kwargs"])
def test_the_models_own_hook_runs_and_its_children_are_rewritten(register):
    model = _model()
    register(model)
    gm = sll_fx.linearize_module(model, eps=1e-3, mode="hard", verbose=False)
    assert list(_opaque(gm)) == [""]
    assert "hook" in _opaque(gm)[""] and "kept opaque" in _opaque(gm)[""]
    assert [e.module for e in gm.sll_report.rewritten] == ["block"]  # the child's sign is still rewritten
    assert torch.equal(gm(X), model(X))
    assert torch.equal(sll_fx.export_hard(gm, verbose=False)(X), model(X))


def test_a_forward_hook_with_side_effects_runs_on_every_call_and_not_while_linearizing():
    model = _model()
    features = []
    model.block.register_forward_hook(lambda mod, args, out: features.append(out))
    gm = sll_fx.linearize_module(model, eps=1e-3, verbose=False)
    assert features == []  # a trace would have appended a Proxy here
    assert _opaque(gm) == {"block": "hooks registered (1 forward hook): kept opaque so it runs as written"}
    y = gm(X)
    assert len(features) == 1 and torch.equal(features[0], torch.sign(model.block.lin(X)))
    assert torch.equal(y, model.out(features[0]))
    hard = sll_fx.export_hard(gm, verbose=False)
    hard(X)
    assert len(features) == 2


@pytest.mark.parametrize("where", ["model", "block"])
def test_backward_hooks_fire(where):
    model = _model()
    calls = []
    target = model if where == "model" else model.block
    target.register_full_backward_hook(lambda mod, grad_in, grad_out: calls.append(grad_out[0].shape))
    gm = sll_fx.linearize_module(model, eps=1e-3, verbose=False)
    assert list(_opaque(gm)) == ["" if where == "model" else "block"]
    assert "1 backward hook" in next(iter(_opaque(gm).values()))
    x = X.clone().requires_grad_()
    gm(x).sum().backward()
    assert len(calls) == 1


def test_a_hook_on_a_torch_nn_leaf_keeps_the_model_traced():
    model = _model()
    seen = []
    model.out.register_forward_hook(lambda mod, args, out: seen.append(out))  # a leaf: the graph calls it
    gm = sll_fx.linearize_module(model, eps=1e-3, verbose=False)
    assert _opaque(gm) == {} and len(gm.sll_report.rewritten) == 1
    gm(X)
    assert len(seen) == 1


def test_trace_names_the_module_the_hooks_and_the_fix():
    model = _model()
    model.block.register_forward_hook(lambda mod, args, out: out)
    model.block.register_forward_pre_hook(lambda mod, args: None)
    model.block.register_forward_pre_hook(lambda mod, args: None)
    with pytest.raises(TraceError) as info:
        trace(model)
    assert info.value.module_path == "block" and info.value.module_type == "Block"
    assert "2 forward pre-hooks, 1 forward hook" in str(info.value) and "Fix:" in str(info.value)


def test_the_users_model_and_its_hooks_are_left_as_they_are():
    model = _model()
    handle = model.block.register_forward_hook(lambda mod, args, out: out * 3)
    model.register_forward_hook(lambda mod, args, out: out + 1)
    before = (dict(model._forward_hooks), dict(model.block._forward_hooks), dict(model._modules))
    expected = model(X)
    gm = sll_fx.linearize_module(model, eps=1e-3, mode="hard", verbose=False)
    assert (dict(model._forward_hooks), dict(model.block._forward_hooks), dict(model._modules)) == before
    assert torch.equal(gm(X), expected)
    handle.remove()  # the linearized model has its own copy of the hook dicts
    assert torch.equal(gm(X), expected)


class Outer(nn.Module):
    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return self.inner(x) * 2


def test_an_uncalibrated_auto_model_is_refused_until_it_calibrated():
    inner = sll_fx.linearize_module(Block(), verbose=False)  # eps="auto": calibrates on its first call
    outer = Outer(inner)
    with pytest.raises(EpsError, match="submodule 'inner'.*not calibrated") as info:
        sll_fx.linearize_module(outer, eps=0.1, verbose=False)
    assert "Fix:" in str(info.value)
    with pytest.raises(EpsError, match="the model"):
        sll_fx.linearize_module(inner, eps=0.1, verbose=False)
    inner(X)  # calibrates
    gm = sll_fx.linearize_module(outer, eps=0.1, verbose=False)
    assert _opaque(gm) == {}
    assert torch.equal(gm(X), outer(X))


class FrozenNorm(nn.Module):
    """Detection/fine-tuning code: train() keeps the BatchNorm in eval mode."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 4)
        self.bn = nn.BatchNorm1d(4)

    def train(self, mode=True):
        super().train(mode)
        self.bn.eval()
        return self

    def forward(self, x):
        return torch.sign(self.bn(self.lin(x)))


class Holder(nn.Module):
    def __init__(self):
        super().__init__()
        self.inner = FrozenNorm()

    def forward(self, x):
        return torch.round(self.inner(x) * 2)


@pytest.mark.parametrize("top", [FrozenNorm, Holder])
def test_an_overridden_train_keeps_its_module_opaque_and_runs(top):
    torch.manual_seed(0)
    model = top().train()
    stats = model.get_submodule("bn" if top is FrozenNorm else "inner.bn").running_mean.clone()
    gm = sll_fx.linearize_module(model, eps=1e-3, mode="hard", verbose=False)
    path = "" if top is FrozenNorm else "inner"
    assert _opaque(gm) == {path: "overrides train() (FrozenNorm.train): kept opaque so it runs as written"}
    gm.train()
    bn = gm.get_submodule("bn" if top is FrozenNorm else "inner.bn")
    assert not bn.training
    assert torch.equal(gm(X), model(X)) and torch.equal(bn.running_mean, stats)


class Scaled(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 4)

    def __call__(self, x, *args, **kwargs):
        return super().__call__(x * 10, *args, **kwargs)

    def forward(self, x):
        return torch.round(self.lin(x))


def test_the_models_own_call_override_runs():
    torch.manual_seed(0)
    model = Scaled()
    gm = sll_fx.linearize_module(model, eps=1e-3, mode="hard", verbose=False)
    assert _opaque(gm) == {"": "overrides __call__() (Scaled.__call__): kept opaque so it runs as written"}
    assert torch.equal(gm(X), model(X)) and torch.equal(sll_fx.export_hard(model, verbose=False)(X), model(X))
    inner = Outer(Scaled())  # a submodule's override is traced (fx calls it), and rewritten
    assert _opaque(sll_fx.linearize_module(inner, eps=1e-3, verbose=False)) == {}


class Normed(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 4)
        self.bn = nn.BatchNorm1d(4)
        self.drop = nn.Dropout(0.5)
        self.pair = nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.1))
        self.tied = self.pair

    def forward(self, x):
        return torch.sign(self.tied(self.drop(self.bn(self.lin(x)))))


@pytest.mark.parametrize("source", ["linearized", "model"])
def test_export_hards_result_has_its_own_train_and_eval_flags(source):
    """Validating on export_hard(gm).eval() between training steps leaves gm's BatchNorm training."""
    torch.manual_seed(0)
    model = Normed()
    gm = sll_fx.linearize_module(model, eps=1e-3, verbose=False).train()
    hard = sll_fx.export_hard(gm if source == "linearized" else model, verbose=False).eval()
    trained = gm if source == "linearized" else model
    assert all(m.training for m in trained.modules()) and not any(m.training for m in hard.modules())
    assert hard.pair is hard.tied and hard.bn is not trained.bn
    assert all(a is b for a, b in zip(hard.parameters(), model.parameters()))  # the same tensors
    assert all(a is b for a, b in zip(hard.buffers(), model.buffers()))
    before = model.bn.running_mean.clone()
    gm(X)  # a training step updates the shared running statistics
    assert not torch.equal(model.bn.running_mean, before) and hard.bn.running_mean is model.bn.running_mean


class WeightLayer(nn.Module):
    """A user layer whose weight torch.nn.utils hooks recompute before each forward."""

    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(6, 4))
        self.bias = nn.Parameter(torch.zeros(6))

    def forward(self, x):
        h = nn.functional.linear(x, self.weight, self.bias)
        return torch.sign(h) + 0.1 * h


@pytest.mark.filterwarnings("ignore:.*weight_norm. is deprecated:FutureWarning")
@pytest.mark.parametrize("hook,param", [
    (lambda m: torch.nn.utils.weight_norm(m), "weight_g"),
    (lambda m: torch.nn.utils.spectral_norm(m), "weight_orig"),
    (lambda m: __import__("torch.nn.utils.prune").nn.utils.prune.l1_unstructured(m, "weight", amount=0.5), "weight_orig"),
], ids=["weight_norm", "spectral_norm", "prune"])
def test_torch_nn_utils_weight_hooks_on_the_model_keep_it_opaque(hook, param):
    """weight_norm, spectral_norm and prune recompute ``weight`` in a forward pre-hook: a graph of the model would
    read the weight of the last call before linearize_module, forever (before: export_hard differed from the
    model in every element after one optimizer step, and a second backward raised)."""
    torch.manual_seed(0)
    model = hook(WeightLayer()).eval()
    gm = sll_fx.linearize_module(model, eps=0.1, verbose=False)
    assert _opaque(gm) == {"": "hooks registered (1 forward pre-hook): kept opaque so it runs as written"}
    with torch.no_grad():
        getattr(model, param).add_(torch.randn_like(getattr(model, param)))
    assert torch.equal(sll_fx.export_hard(gm, verbose=False)(X), model(X)) and torch.equal(gm(X), model(X))
    train = sll_fx.linearize_module(hook(WeightLayer()), eps=0.1, verbose=False)
    for _ in range(2):
        train(X).sum().backward()


def test_torchs_own_hooks_do_not_make_a_module_opaque():
    torch.manual_seed(0)
    ep = torch.export.export(Block(), (X,))
    gm = sll_fx.linearize_module(Outer(ep.module()), eps=1e-3, verbose=False)
    assert _opaque(gm) == {} and len(gm.sll_report.rewritten) == 1


def test_export_hards_copies_share_the_hooks_of_the_models_modules():
    torch.manual_seed(0)
    model = Normed()
    calls = []
    handle = model.lin.register_forward_hook(lambda mod, args, out: calls.append(1))
    hard = sll_fx.export_hard(sll_fx.linearize_module(model, eps=1e-3, verbose=False), verbose=False)
    hard(X)
    handle.remove()
    hard(X)
    model.lin.register_forward_hook(lambda mod, args, out: calls.append(2))
    hard(X)
    assert calls == [1, 2]


# --- hooks registered on the result: a traced-through submodule's forward is inlined into the graph ------------

class Quant(nn.Module):  # no parameter: the graph touches nothing of it
    def forward(self, x):
        return torch.round(x * 3) / 3


class WithQuant(nn.Module):
    def __init__(self):
        super().__init__()
        self.block = Block()
        self.q = Quant()
        self.out = nn.Linear(4, 2)

    def forward(self, x):
        return self.out(self.q(self.block(x)))


_REGISTRATIONS = {
    "forward": lambda m: m.register_forward_hook(lambda mod, args, out: None),
    "pre": lambda m: m.register_forward_pre_hook(lambda mod, args: None),
    "full_backward": lambda m: m.register_full_backward_hook(lambda mod, gi, go: None),
    "full_backward_pre": lambda m: m.register_full_backward_pre_hook(lambda mod, go: None),
    "backward": lambda m: m.register_backward_hook(lambda mod, gi, go: None),
}


def _linearized_with_quant():
    torch.manual_seed(0)
    model = WithQuant()
    return model, sll_fx.linearize_module(model, eps=1e-3, verbose=False)


@pytest.mark.parametrize("result", ["linearized", "export_hard", "deepcopy", "pickle"])
@pytest.mark.parametrize("path", ["block", "q"])
@pytest.mark.parametrize("register", list(_REGISTRATIONS.values()), ids=list(_REGISTRATIONS))
def test_a_hook_on_a_traced_through_submodule_of_the_result_warns(register, path, result):
    import copy
    import pickle

    from sll_fx.errors import InlinedModuleWarning

    model, gm = _linearized_with_quant()
    gm = {"linearized": lambda: gm, "export_hard": lambda: sll_fx.export_hard(gm, verbose=False),
          "deepcopy": lambda: copy.deepcopy(gm), "pickle": lambda: pickle.loads(pickle.dumps(gm))}[result]()
    with pytest.warns(InlinedModuleWarning, match=rf"'{path}' \({type(model.get_submodule(path)).__name__}\).*never "
                                                  r"run(.|\n)*Fix: register it on the model's module before linearize"):
        handle = register(gm.get_submodule(path))
    handle.remove()  # (a handle as any registration gives: a tool hooking every module runs, and cleans up)
    assert not model.get_submodule(path)._forward_hooks and not model.get_submodule(path)._forward_pre_hooks
    assert gm.q is not model.q  # (not the model's module: a hook on it would have landed there)


def test_a_tool_hooking_every_module_runs_on_the_result():
    """A model summary or FLOP counter registers a hook on every module: it runs (with one warning per call site);
    the hooks on the result and its torch.nn leaves fire, the inlined containers' never do."""
    from sll_fx.errors import InlinedModuleWarning

    model, gm = _linearized_with_quant()
    seen = []
    with pytest.warns(InlinedModuleWarning):
        handles = [m.register_forward_hook(lambda mod, args, out, name=name: seen.append(name))
                   for name, m in gm.named_modules()]
    out = gm(X)
    assert torch.equal(out, gm(X)) and "" in seen
    leaves = {n for n, m in gm.named_modules() if type(m).__module__.startswith("torch.nn")}
    assert leaves and leaves <= set(seen) and set(seen) <= leaves | {""}
    for h in handles:
        h.remove()


def test_hooks_on_the_result_itself_and_on_its_torch_nn_leaves_run():
    model, gm = _linearized_with_quant()
    calls = []
    gm.register_forward_hook(lambda mod, args, out: calls.append("gm"))
    gm.block.lin.register_forward_hook(lambda mod, args, out: calls.append("block.lin"))
    gm.out.register_full_backward_hook(lambda mod, gi, go: calls.append("out backward"))
    gm(X.clone().requires_grad_(True)).sum().backward()
    assert calls == ["block.lin", "gm", "out backward"]


def test_calling_a_traced_through_submodule_of_the_result_raises_a_typed_error():
    from sll_fx.errors import InlinedModuleError

    _, gm = _linearized_with_quant()
    for path in ("block", "q"):
        with pytest.raises(InlinedModuleError, match=rf"'{path}'.*cannot be called(.|\n)*Fix: call the linearized"):
            gm.get_submodule(path)(X)


def test_state_dict_hooks_on_a_traced_through_submodule_of_the_result_run():
    _, gm = _linearized_with_quant()
    calls = []
    gm.block.register_state_dict_pre_hook(lambda mod, prefix, keep_vars: calls.append(prefix))
    gm.block.register_load_state_dict_post_hook(lambda mod, incompatible: calls.append("loaded"))
    sd = gm.state_dict()
    gm.load_state_dict(sd)
    assert calls == ["block.", "loaded"]


def test_prune_on_a_traced_through_submodule_of_the_result_is_refused_before_it_changes_anything():
    import torch.nn.utils.prune as prune

    from sll_fx.errors import InlinedModuleError

    class Q(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.randn(4, 4))

        def forward(self, x):
            return torch.sign(torch.nn.functional.linear(x, self.w))

    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.q = Q()

        def forward(self, x):
            return self.q(x)

    torch.manual_seed(0)
    model = M()
    gm = sll_fx.linearize_module(model, eps=1e-3, verbose=False)
    before = gm(X)
    with pytest.raises(InlinedModuleError, match=r"'q' \(Q\)(.|\n)*prune.*before linearize_module"):
        prune.l1_unstructured(gm.q, "w", amount=0.5)
    assert list(gm.state_dict()) == list(model.state_dict()) == ["q.w"]
    assert gm.q.w is model.q.w and "w" not in gm.q.__dict__ and torch.equal(gm(X), before)
    prune.l1_unstructured(model.q, "w", amount=0.5)  # the fix: prune the model, then linearize it
    pruned = sll_fx.linearize_module(model, eps=1e-3, mode="hard", verbose=False)
    assert torch.equal(pruned(X), model(X))


def test_the_readme_recipe_for_a_hooked_submodule():
    """A hook kept on the model's module keeps it opaque, so it runs (its children rewritten); a hook wanted on a
    rewritten block goes on the result itself or on a torch.nn leaf inside the block."""
    model = _model()
    feats = []
    handle = model.block.register_forward_hook(lambda mod, args, out: feats.append(out))
    gm = sll_fx.linearize_module(model, eps=1e-3, mode="hard", verbose=False)
    assert list(_opaque(gm)) == ["block"]
    gm(X)
    assert len(feats) == 1 and torch.equal(feats[0], model.block(X))
    handle.remove()
    feats.clear()
    gm = sll_fx.linearize_module(model, eps=1e-3, mode="hard", verbose=False)
    assert _opaque(gm) == {} and [e.module for e in gm.sll_report.rewritten] == ["block"]
    gm.block.lin.register_forward_hook(lambda mod, args, out: feats.append(torch.sign(out)))
    gm(X)
    assert len(feats) == 1 and torch.equal(feats[0], torch.sign(model.block.lin(X)))

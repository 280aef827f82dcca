"""ONNX: a model trained through sll_fx deploys with ``torch.onnx.export(..., dynamo=True)``.

``export_hard(linearize_module(model))`` (and ``export_hard`` of the exported linearized
program: aten-level hard ops) exports to ONNX and runs in ONNX Runtime with outputs equal
to ``model(x)``: exactly (``torch.equal``, same dtype), no tolerance.  The models are those
of ``test_export.py``: every rule kind (sign, round, round(decimals), floor, ceil, trunc,
heaviside; comparisons cast to float; where/masked_fill; one_hot(argmax/argmin); top-k
masks) behind an elementwise affine layer.

What equality is claimed on, and why:

- finite inputs, boundaries and round's ties (``x.5``) included.  Not NaN or ``±inf``:
  ONNX Runtime's ``Sign(NaN)`` is NaN where torch gives 0, and ``heaviside(NaN)`` differs;
  and values, not sign bits: ONNX Runtime's ``Round`` returns ``+0`` for ``-0.5``, torch ``-0``.
- no ties within a row for argmax/top-k: ONNX ``TopK``/``ArgMax`` may break ties differently.
- elementwise layers only: a matrix product in ONNX Runtime may sum in another order than
  torch (a last-bit difference), which a discrete op downstream can turn into a jump.

Needs the optional extra ``pip install -e ".[onnx]"`` (onnx, onnxruntime, onnxscript); skipped
without it.
"""

from __future__ import annotations

import logging
import warnings

import pytest
import torch

pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

import sll_fx  # noqa: E402
from test_export import MODELS, X_BOUNDARIES, X_RANDOM, linearize, sll_nodes  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:.*LeafSpec.*:FutureWarning")  # torch's own, deep-copying a pytree spec

X = torch.cat([X_BOUNDARIES, X_RANDOM])  # finite; no ties in a row


def onnx_outputs(module: torch.nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        logging.disable(logging.WARNING)  # the exporter's notes (torchvision not installed, ...)
        try:
            program = torch.onnx.export(module, (x,), dynamo=True, verbose=False)
        finally:
            logging.disable(logging.NOTSET)
    session = ort.InferenceSession(program.model_proto.SerializeToString(), providers=["CPUExecutionProvider"])
    (name,) = [i.name for i in session.get_inputs()]
    return [torch.from_numpy(o) for o in session.run(None, {name: x.numpy()})]


def assert_equal_outputs(got: list[torch.Tensor], want, what: str) -> None:
    want = list(want) if isinstance(want, (tuple, list)) else [want]
    assert len(got) == len(want), what
    for i, (g, w) in enumerate(zip(got, want)):
        assert g.dtype == w.dtype and g.shape == w.shape, f"{what}[{i}]: {g.dtype}{tuple(g.shape)} != " \
                                                          f"{w.dtype}{tuple(w.shape)}"
        assert torch.equal(g, w), f"{what}[{i}]:\n{g}\n{w}"


@pytest.mark.parametrize("case", MODELS)
def test_export_hard_runs_in_onnxruntime_equal_to_the_model(case):
    model = MODELS[case]().eval()
    hard = sll_fx.export_hard(linearize(model), verbose=False)
    assert not sll_nodes(hard)
    with torch.no_grad():
        assert_equal_outputs(onnx_outputs(hard, X), model(X), case)


def test_stripped_exported_program_runs_in_onnxruntime():
    """The aten-level path: torch.export of the linearized model, export_hard, ONNX."""
    model = MODELS["select"]().eval()
    ep = torch.export.export(linearize(model, "hard"), (X,))
    hard = sll_fx.export_hard(ep, verbose=False)
    with torch.no_grad():
        assert_equal_outputs(onnx_outputs(hard, X), model(X), "select via torch.export")


def test_trained_model_exports_to_onnx():
    """Train the linearized model a few steps (the parameters move), then deploy: still exact."""
    model = MODELS["compare"]()
    gm = linearize(model)
    opt = torch.optim.SGD(gm.parameters(), lr=0.05)
    target = torch.linspace(-1, 1, X.numel()).reshape(X.shape)
    for _ in range(5):
        loss = sum(((o - target) ** 2).mean() for o in gm(X))
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert not torch.equal(model.pre.scale, torch.ones(4))
    hard = sll_fx.export_hard(gm, verbose=False)
    with torch.no_grad():
        assert_equal_outputs(onnx_outputs(hard, X), model(X), "trained")

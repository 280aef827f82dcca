"""Audit regressions: a cast of the linearized model after its first call is checked for precision again
(``sll_fx.precision.CAST_GENERATION``, counted by ``SLLGraphModule._apply``)."""

import warnings

import pytest
import torch
from torch import nn

import sll_fx


class Tokens(nn.Module):
    """Token ids -> embedding -> quantizer: the input stays int64 whatever dtype the model runs in."""

    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(50, 8)
        with torch.no_grad():
            self.emb.weight.uniform_(20, 60)

    def forward(self, ids):
        return torch.round(self.emb(ids))


IDS = torch.randint(0, 50, (4, 16), generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("cast", [lambda gm: gm.bfloat16(), lambda gm: gm.to(torch.bfloat16)])
def test_a_cast_after_the_first_call_is_checked_again(cast):
    torch.manual_seed(0)
    gm = sll_fx.linearize_module(Tokens(), eps=0.05, verbose=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error", sll_fx.PrecisionWarning)
        assert gm(IDS).dtype == torch.float32  # float32: eps 0.05 is wide enough
    cast(gm)
    with pytest.warns(sll_fx.PrecisionWarning, match=r"node 'round_1'.*runs in torch\.bfloat16") as record:
        assert gm(IDS).dtype == torch.bfloat16
    assert [w.message.spacing for w in record if issubclass(w.category, sll_fx.PrecisionWarning)] == [0.25]
    with warnings.catch_warnings():
        warnings.simplefilter("error", sll_fx.PrecisionWarning)
        gm(IDS)  # warned once per (node, dtype, eps); the signature is seen now

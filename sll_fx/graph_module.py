"""``SLLGraphModule``: the GraphModule type sll_fx returns, whose copies keep the model's state.

``copy.deepcopy`` and ``pickle`` rebuild a plain ``fx.GraphModule`` from its graph, which
keeps only the attributes the graph touches and registers them as persistent buffers:
non-persistent buffers and fx's ``_tensor_constant*`` would come back as new
``state_dict`` keys and unused submodules would vanish.  This subclass repairs the copy
with :func:`~sll_fx.state.mirror_state`, and keeps ``sll_report`` in ``meta`` so that
copies carry it.
"""

from __future__ import annotations

import torch
from torch import fx
from torch.fx.graph_module import reduce_graph_module

from .state import mirror_state


class SLLGraphModule(fx.GraphModule):
    @property
    def sll_report(self):
        """The report of the pass that made this module (RewriteReport or StripReport)."""
        return self.meta.get("sll_report")

    @sll_report.setter
    def sll_report(self, report) -> None:
        self.meta["sll_report"] = report

    def _deepcopy_init(self):
        class_name = type(self).__name__

        def init(res, fake_mod, graph):
            fx.GraphModule.__init__(res, fake_mod, graph, class_name=class_name)
            mirror_state(res, fake_mod)
        return init

    def __reduce__(self):
        _, args = super().__reduce__()
        return (_unpickle, args)


def _unpickle(body: dict, import_block: str) -> SLLGraphModule:
    twin = torch.nn.Module()  # the pickled module tree, with its persistence sets
    twin.__dict__.update(body)
    gm = reduce_graph_module(dict(body), import_block)
    res = SLLGraphModule(gm, gm.graph, class_name=body.get("_graphmodule_cls_name", type(gm).__name__))
    mirror_state(res, twin)
    res.meta.update(body.get("meta", {}))
    return res

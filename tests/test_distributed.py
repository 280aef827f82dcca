"""Distributed training of a linearized model: DDP, FSDP2 and FSDP1 with the gloo backend, 2 processes, CPU.

Each worker linearizes the same model, wraps the GraphModule, trains a few steps on its own
shard of the data (with an eps change half-way, as an annealing schedule does) and saves
its parameters.  The test checks that the ranks end bit-identical, that the parameters
moved, and that they equal a single-process run on both shards at once (DDP and FSDP
average the gradients of equal shards, which is the gradient of the whole batch).

DDP starts from *different* initial weights on the two ranks: its broadcast from rank 0
must make them equal.  FSDP does not broadcast, so there both ranks build the same model.
The processes rendezvous through a file store and gloo talks over loopback; the whole
file runs in a few seconds.
"""

from __future__ import annotations

import contextlib
import os
import socket
import tempfile
import time

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

import sll_fx

pytestmark = pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(),
                                reason="torch.distributed with gloo is not available")

WORLD = 2
STEPS = 4
EPS, EPS_LATER = 0.3, 0.2
TIMEOUT_S = 120


class Gain(nn.Module):
    """A traced-through module with a parameter of its own (a quantizer's learnable scale, a binary layer's weight):
    fx gives the GraphModule a container for it, which FSDP1 re-registers the parameter on."""

    def __init__(self):
        super().__init__()
        self.k = nn.Parameter(torch.full((16,), 1.5))

    def forward(self, h):
        return torch.round(h * self.k) / self.k


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.inp = nn.Linear(6, 16)
        self.gain = Gain()
        self.mid = nn.Linear(16, 16)
        self.out = nn.Linear(16, 1)
        self.t = nn.Parameter(torch.tensor([0.1]))  # FSDP2 shards no 0-dim parameter: a learnable threshold is 1-d
        self.register_buffer("scale", torch.tensor(2.0))
        self.register_buffer("ones", torch.ones(16), persistent=False)

    def forward(self, x):
        h = self.inp(x)
        h = torch.round(h * self.scale) / self.scale + torch.sign(h) * 0.1 + (h > self.t).float() * self.ones
        h = self.mid(self.gain(h))
        h = torch.where(h > 0.0, h, 0.1 * h)
        return self.out(h)


def shard(rank: int, step: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1000 * step + rank)
    x = torch.randn(12, 6, generator=g) * 2
    return x, x[:, :1] * 0.5 - x[:, 1:2]


def train(module: nn.Module, gm: nn.Module, batches) -> list[float]:
    """SGD on ``module`` (a wrapper of ``gm``, or ``gm``); eps lowered half-way; returns the losses."""
    opt = torch.optim.SGD(module.parameters(), lr=0.05)
    losses = []
    for step, (x, y) in enumerate(batches):
        if step == STEPS // 2:
            sll_fx.set_eps(gm, EPS_LATER)
        loss = ((module(x) - y) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    return losses


def _loopback() -> None:
    if "GLOO_SOCKET_IFNAME" not in os.environ:
        names = {name for _, name in socket.if_nameindex()}
        for name in ("lo", "lo0"):
            if name in names:
                os.environ["GLOO_SOCKET_IFNAME"] = name
                break


def _worker(rank: int, kind: str, store: str, out_dir: str) -> None:
    _loopback()
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=WORLD)
    try:
        torch.manual_seed(rank if kind == "ddp" else 0)  # DDP: different weights, its broadcast fixes that
        model = Net()
        gm = sll_fx.linearize_module(model, eps=EPS, verbose=False)
        own = {k: v.detach().clone() for k, v in gm.state_dict().items()}
        if kind == "ddp":
            from torch.nn.parallel import DistributedDataParallel

            wrapped = DistributedDataParallel(gm)  # broadcasts rank 0's parameters and buffers
            start = {k: v.detach().clone() for k, v in gm.state_dict().items()}
        elif kind == "fsdp1":
            from torch.distributed.fsdp import FullyShardedDataParallel
            from torch.distributed.fsdp.wrap import ModuleWrapPolicy

            start = {k: v.detach().clone() for k, v in gm.state_dict().items()}
            wrapped = FullyShardedDataParallel(gm, auto_wrap_policy=ModuleWrapPolicy({nn.Linear}), use_orig_params=True,
                                               device_id=torch.device("cpu"))  # (on the CPU it needs a device_id)
        else:
            from torch.distributed.device_mesh import init_device_mesh
            from torch.distributed.fsdp import fully_shard

            start = {k: v.detach().clone() for k, v in gm.state_dict().items()}
            mesh = init_device_mesh("cpu", (WORLD,))
            for node in gm.graph.nodes:  # the modules the graph calls (not the containers fx made)
                if node.op == "call_module":
                    fully_shard(gm.get_submodule(node.target), mesh=mesh)
            wrapped = fully_shard(gm, mesh=mesh)
        losses = train(wrapped, gm, [shard(rank, s) for s in range(STEPS)])
        with (wrapped.summon_full_params(wrapped) if kind == "fsdp1" else contextlib.nullcontext()):
            state = {k: (v.full_tensor() if hasattr(v, "full_tensor") else v).detach().clone()
                     for k, v in gm.state_dict().items()}
            model_state = {k: (v.full_tensor() if hasattr(v, "full_tensor") else v).detach().clone()
                           for k, v in model.state_dict().items()}
        eps = sorted({float(b) for n, b in gm.named_buffers() if n.startswith("_sll_eps_")} or
                     {n.kwargs["eps"] for n in gm.graph.nodes if isinstance(n.kwargs.get("eps"), float)})
        path = os.path.join(out_dir, f"{kind}_{rank}.pt")
        torch.save({"own": own, "start": start, "state": state, "model_state": model_state, "losses": losses, "eps": eps,
                    "keys": list(gm.state_dict())}, path + ".tmp")
        os.replace(path + ".tmp", path)   # complete when it appears (the parent watches for it)
        dist.barrier()
    finally:
        dist.destroy_process_group()


def _run(kind: str, tmp_path) -> list[dict]:
    store = os.path.join(tempfile.mkdtemp(dir=tmp_path), "store")
    ctx = mp.start_processes(_worker, args=(kind, store, str(tmp_path)), nprocs=WORLD, join=False,
                             start_method="spawn")
    files = [os.path.join(tmp_path, f"{kind}_{r}.pt") for r in range(WORLD)]
    deadline = time.monotonic() + TIMEOUT_S
    saved_at = None
    while not ctx.join(timeout=1):
        now = time.monotonic()
        if saved_at is None and all(os.path.exists(f) for f in files):
            saved_at = now
        # every rank saved its results: a worker still alive 10 s later is stuck in gloo's
        # destroy_process_group (seen about once in four runs on 2 cores): not what is tested
        if now > deadline or (saved_at is not None and now > saved_at + 10):
            for p in ctx.processes:
                if p.is_alive():
                    p.terminate()
            if saved_at is None:
                pytest.fail(f"{kind}: the workers did not finish within {TIMEOUT_S} s")
            break
    return [torch.load(f, weights_only=True) for f in files]


def _reference() -> dict:
    """One process, both shards at once, the same start as rank 0."""
    torch.manual_seed(0)
    model = Net()
    gm = sll_fx.linearize_module(model, eps=EPS, verbose=False)
    batches = []
    for s in range(STEPS):
        xs, ys = zip(*(shard(r, s) for r in range(WORLD)))
        batches.append((torch.cat(xs), torch.cat(ys)))
    losses = train(gm, gm, batches)
    return {"state": {k: v.detach().clone() for k, v in gm.state_dict().items()}, "losses": losses}


def _check(results: list[dict], reference: dict, shares_model: bool) -> None:
    r0, r1 = results
    assert r0["keys"] == r1["keys"] == list(Net().state_dict())
    for k in r0["state"]:
        assert torch.equal(r0["state"][k], r1["state"][k]), f"rank 0 and rank 1 differ in {k}"
        if shares_model:  # DDP keeps the parameter objects: training the gm trained the user's model
            assert torch.equal(r0["state"][k], r0["model_state"][k]), f"the model was not trained: {k}"
    moved = [k for k in r0["state"] if not torch.equal(r0["state"][k], r0["start"][k])]
    assert set(moved) >= {"inp.weight", "inp.bias", "mid.weight", "out.weight", "t"}, moved  # gradients crossed
    assert r0["eps"] == r1["eps"] == [EPS_LATER]
    assert r0["losses"] != r1["losses"]  # different shards
    for k, v in reference["state"].items():
        torch.testing.assert_close(r0["state"][k], v, rtol=1e-5, atol=1e-6, msg=f"reference differs in {k}")


def test_ddp_gloo_two_processes_stay_in_sync(tmp_path):
    results = _run("ddp", tmp_path)
    r0, r1 = results
    assert any(not torch.equal(r0["own"][k], r1["own"][k]) for k in r0["own"]), "the ranks built different models"
    assert all(torch.equal(r0["start"][k], r1["start"][k]) for k in r0["start"]), "DDP broadcast rank 0's state"
    _check(results, _reference(), shares_model=True)


def test_fsdp2_gloo_two_processes_stay_in_sync(tmp_path):
    pytest.importorskip("torch.distributed.fsdp")
    from torch.distributed import fsdp

    if not hasattr(fsdp, "fully_shard"):
        pytest.skip("this torch has no FSDP2 (torch.distributed.fsdp.fully_shard)")
    # fully_shard replaces the parameters by sharded ones: the gm (not the user's model) holds the result
    _check(_run("fsdp", tmp_path), _reference(), shares_model=False)


def test_fsdp1_gloo_two_processes_stay_in_sync(tmp_path):
    """FSDP1 (``FullyShardedDataParallel``, ``use_orig_params=True``) deletes each parameter and sets a view of its flat
    parameter in its place, also on the container of the traced-through ``gain``: that container refused a parameter
    it did not hold at the time (InlinedModuleError at wrapping)."""
    pytest.importorskip("torch.distributed.fsdp")
    _check(_run("fsdp1", tmp_path), _reference(), shares_model=False)

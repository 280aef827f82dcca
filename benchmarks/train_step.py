"""Training-step time: linearized model against the hard original and a straight-through model.

Two models, each written the way one writes a deployed model (plain hard ops):

- ``mlp``: 4-layer MLP with 4-bit round-quantized activations
  (``torch.round(torch.clamp(h, -1, 1) * 7) / 7``, twice) and binary ``torch.sign`` activations;
- ``cnn``: small CNN on 32x32 images with 4-bit unsigned quantized activations
  (``torch.round(torch.clamp(h, 0, 1) * 15) / 15``, twice) and a threshold gate with a
  learnable per-channel threshold (``h * (h > t).float()``).

Three variants of each, with the same initial weights:

- ``hard``: the model as written (its jumps pass zero gradient; the step still runs the full backward);
- ``STE``: the same architecture with hand-written straight-through ``autograd.Function``s in place of
  the hard ops (forward: the hard op; backward: the incoming gradient, and ``-grad`` summed for the
  gate's threshold), the usual way to train such a model;
- ``linearized``: ``sll_fx.linearize_module(hard_model, eps)`` (mode ``linear`` by default).

A training step is ``opt.zero_grad(); F.cross_entropy(model(x), y).backward(); opt.step()`` (SGD),
timed as a whole.  Eager and ``torch.compile`` (default inductor backend; the model is compiled, the
optimizer step runs eagerly) are measured in the same run: each compiled variant is compiled once
(its first step, with inductor's caches off, reported as ``compile s``), warmed up, and then all six
methods run round-robin within each repeat (random order), each sample the mean of ``--inner`` steps;
medians over the repeats and ratios as medians of per-repeat ratios; ``others`` is the number of
cores other processes kept busy meanwhile (a measurement is retimed while it exceeds 0.25, see
``bench_common``).  Targets: linearized/STE within 1.25x eager, within 1.1x compiled.

The hard model's compiled step is no reference for speed: its jumps have zero derivative, so
inductor drops the backward work that only carries those zeros (the convolutions' and linear
layers' input gradients before the first jump).

    python benchmarks/train_step.py              # full run (~2-3 minutes on 2 cores)
    python benchmarks/train_step.py --quick      # tiny models, 2 repeats, compile via aot_eager
    python benchmarks/train_step.py --models cnn --repeats 30 --mode hard --no-compile

``main(argv)`` returns the rows as a list of dicts (the printed table's columns).
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import time

import torch
from torch import nn
from torch.nn import functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_common as bc  # noqa: E402

import sll_fx  # noqa: E402

TARGETS = {"eager": 1.25, "compiled": 1.1}  # linearized / STE


# --- straight-through functions (the baseline, written by hand) ------------------------

class RoundSTE(torch.autograd.Function):
    """``torch.round`` forward, identity backward."""

    @staticmethod
    def forward(ctx, x):
        return torch.round(x)

    @staticmethod
    def backward(ctx, grad):
        return grad


class SignSTE(torch.autograd.Function):
    """``torch.sign`` forward, identity backward."""

    @staticmethod
    def forward(ctx, x):
        return torch.sign(x)

    @staticmethod
    def backward(ctx, grad):
        return grad


class GateSTE(torch.autograd.Function):
    """``(x > t).to(x.dtype)`` forward; backward: ``grad`` to ``x``, ``-grad`` summed to ``t``'s shape."""

    @staticmethod
    def forward(ctx, x, t):
        ctx.t_shape = t.shape
        return (x > t).to(x.dtype)

    @staticmethod
    def backward(ctx, grad):
        return grad, -grad.sum_to_size(ctx.t_shape)


# --- the models -------------------------------------------------------------------------

class QuantMLP(nn.Module):
    """MLP with 4-bit activations (15 levels in [-1, 1]) and binary activations before the head."""

    def __init__(self, d_in: int = 512, width: int = 1024, n_classes: int = 10):
        super().__init__()
        self.fc1 = nn.Linear(d_in, width)
        self.fc2 = nn.Linear(width, width)
        self.fc3 = nn.Linear(width, width)
        self.head = nn.Linear(width, n_classes)

    def forward(self, x):
        h = torch.round(torch.clamp(self.fc1(x), -1, 1) * 7) / 7
        h = torch.round(torch.clamp(self.fc2(h), -1, 1) * 7) / 7
        h = torch.sign(self.fc3(h))
        return self.head(h)


class QuantMLPSTE(QuantMLP):
    """The same MLP with straight-through functions in place of round and sign."""

    def forward(self, x):
        h = RoundSTE.apply(torch.clamp(self.fc1(x), -1, 1) * 7) / 7
        h = RoundSTE.apply(torch.clamp(self.fc2(h), -1, 1) * 7) / 7
        h = SignSTE.apply(self.fc3(h))
        return self.head(h)


class QuantCNN(nn.Module):
    """Small CNN: 4-bit unsigned activations after two convolutions, a learnable threshold gate after the third."""

    def __init__(self, channels: tuple[int, int, int] = (32, 64, 64), n_classes: int = 10):
        super().__init__()
        c1, c2, c3 = channels
        self.conv1 = nn.Conv2d(3, c1, 3, padding=1)
        self.conv2 = nn.Conv2d(c1, c2, 3, stride=2, padding=1)
        self.conv3 = nn.Conv2d(c2, c3, 3, stride=2, padding=1)
        self.gate_t = nn.Parameter(torch.full((c3, 1, 1), 0.1))
        self.head = nn.Linear(c3, n_classes)

    def forward(self, x):
        h = torch.round(torch.clamp(self.conv1(x), 0, 1) * 15) / 15
        h = torch.round(torch.clamp(self.conv2(h), 0, 1) * 15) / 15
        h = self.conv3(h)
        h = h * (h > self.gate_t).float()
        return self.head(h.mean((2, 3)))


class QuantCNNSTE(QuantCNN):
    """The same CNN with straight-through functions in place of round and the gate."""

    def forward(self, x):
        h = RoundSTE.apply(torch.clamp(self.conv1(x), 0, 1) * 15) / 15
        h = RoundSTE.apply(torch.clamp(self.conv2(h), 0, 1) * 15) / 15
        h = self.conv3(h)
        h = h * GateSTE.apply(h, self.gate_t)
        return self.head(h.mean((2, 3)))


class Spec:
    """One benchmark model: its hard and STE classes, constructor arguments, batch and input shape."""

    def __init__(self, name, hard_cls, ste_cls, kwargs, batch, input_shape, description):
        self.name, self.hard_cls, self.ste_cls = name, hard_cls, ste_cls
        self.kwargs, self.batch, self.input_shape, self.description = kwargs, batch, input_shape, description

    def data(self, seed: int = 0, batch: int | None = None):
        g = torch.Generator().manual_seed(seed)
        b = batch or self.batch
        x = torch.randn((b, *self.input_shape), generator=g)
        y = torch.randint(0, self.kwargs.get("n_classes", 10), (b,), generator=g)
        return x, y


def specs(quick: bool = False) -> dict[str, Spec]:
    """Full sizes: one eager step is ~10-40 ms on 2 cores.  Quick: tiny models for the smoke test."""
    if quick:
        return {
            "mlp": Spec("mlp", QuantMLP, QuantMLPSTE, dict(d_in=32, width=64), 16, (32,), "MLP 32-64-64-64-10"),
            "cnn": Spec("cnn", QuantCNN, QuantCNNSTE, dict(channels=(4, 8, 8)), 4, (3, 16, 16), "CNN 4-8-8 on 16x16"),
        }
    return {
        "mlp": Spec("mlp", QuantMLP, QuantMLPSTE, dict(d_in=512, width=1024), 256, (512,),
                    "MLP 512-1024-1024-1024-10"),
        "cnn": Spec("cnn", QuantCNN, QuantCNNSTE, dict(channels=(32, 64, 64)), 32, (3, 32, 32),
                    "CNN 32-64-64 on 32x32"),
    }


def build_variants(spec: Spec, eps: float, mode: str = "linear", seed: int = 0) -> dict[str, nn.Module]:
    """``hard``, ``STE`` and ``linearized`` models with the same initial weights (separate copies)."""
    torch.manual_seed(seed)
    hard = spec.hard_cls(**spec.kwargs)
    ste = spec.ste_cls(**spec.kwargs)
    ste.load_state_dict(hard.state_dict())
    lin = sll_fx.linearize_module(copy.deepcopy(hard), eps, mode=mode, verbose=False)
    return {"hard": hard, "STE": ste, "linearized": lin}


def make_step(model: nn.Module, x, y, lr: float = 1e-3):
    opt = torch.optim.SGD(model.parameters(), lr=lr)

    def step():
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        return loss
    return step


def sll_op_count(model: nn.Module) -> int:
    report = getattr(model, "sll_report", None)
    return report.counts.get("rewritten", 0) if report is not None else 0


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", type=lambda v: [m.strip() for m in v.split(",") if m.strip()], default=None,
                   help="comma-separated subset of mlp,cnn (default: both)")
    p.add_argument("--repeats", type=int, default=21, help="timed repeats per method; the median is reported")
    p.add_argument("--inner", type=int, default=5, help="training steps per timed sample (their mean)")
    p.add_argument("--warmup", type=int, default=2, help="untimed round-robin rounds before timing")
    p.add_argument("--eps", type=float, default=0.1, help="band half-width of every sll op")
    p.add_argument("--mode", default="linear", choices=("linear", "hard"), help="linearize_module mode")
    p.add_argument("--batch", type=int, default=None, help="override the batch size of every model")
    p.add_argument("--backend", default="inductor", help="torch.compile backend (default inductor)")
    p.add_argument("--no-compile", action="store_true", help="eager only")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: leave as is)")
    p.add_argument("--tries", type=int, default=3,
                   help="re-time a measurement (up to N times, 15 s apart) while other processes use > 0.25 cores")
    p.add_argument("--quick", action="store_true",
                   help="tiny models, 2 repeats, 1 step per sample, compile with the aot_eager backend (smoke test)")
    args = p.parse_args(argv)
    if args.quick:
        args.repeats, args.inner, args.warmup, args.tries = 2, 1, 1, 1
        if args.backend == "inductor":
            args.backend = "aot_eager"
    return args


def main(argv=None) -> list[dict]:
    args = parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    all_specs = specs(args.quick)
    names = args.models or list(all_specs)
    backends = ["eager"] if args.no_compile else ["eager", "compiled"]
    head = bc.header("sll_fx training-step benchmark",
                     f"eps={args.eps:g} mode={args.mode}, compile backend {args.backend}, "
                     f"median of {args.repeats} repeats x {args.inner} steps, all variants interleaved, "
                     f"ratios = median of per-repeat ratios")

    rows, mon = [], bc.Contention()
    with bc.no_compile_caches():  # compile s: a fresh compile, not a cache hit
        for name in names:
            spec = all_specs[name]
            if args.batch:
                spec.batch = args.batch
            x, y = spec.data()
            variants = build_variants(spec, args.eps, args.mode)
            methods, compile_s = {}, {}
            for backend in backends:
                for variant, model in variants.items():
                    if backend == "compiled":  # shares the eager variant's parameters; its own optimizer
                        model = torch.compile(model, backend=args.backend)
                    step = make_step(model, x, y)
                    if backend == "compiled":  # first step compiles forward and backward
                        start = time.perf_counter()
                        step()
                        compile_s[variant] = time.perf_counter() - start
                    methods[(backend, variant)] = bc.timed(step, args.inner)
            samples, others = bc.interleaved_quiet(methods, args.repeats, args.warmup, total=mon, tries=args.tries)
            for backend in backends:
                s = {v: samples[(backend, v)] for v in variants}
                row = {
                    "model": name,
                    "description": spec.description,
                    "batch": spec.batch,
                    "sll ops": sll_op_count(variants["linearized"]),
                    "backend": backend if backend == "eager" else f"compiled ({args.backend})",
                    "hard ms": bc.median(s["hard"]),
                    "STE ms": bc.median(s["STE"]),
                    "linearized ms": bc.median(s["linearized"]),
                    "lin/STE": bc.paired_ratio(s["linearized"], s["STE"]),
                    "lin/hard": bc.paired_ratio(s["linearized"], s["hard"]),
                    "STE/hard": bc.paired_ratio(s["STE"], s["hard"]),
                    "target": f"<= {TARGETS[backend]:.2f}x",
                    "others": others,
                }
                q1, q3 = bc.ratio_quartiles(s["linearized"], s["STE"])
                row["lin/STE IQR"] = f"{q1:.2f}-{q3:.2f}"
                row["met"] = row["lin/STE"] <= TARGETS[backend]
                row["95% CI"] = bc.ratio_ci(s["linearized"], s["STE"])
                row["verdict"] = bc.verdict([a / b for a, b in zip(s["linearized"], s["STE"])], TARGETS[backend])
                if backend == "compiled":
                    row["compile s (hard/STE/lin)"] = "/".join(f"{compile_s[v]:.1f}" for v in variants)
                rows.append(row)

    print(head)
    columns = ["model", "batch", "sll ops", "backend", "hard ms", "STE ms", "linearized ms", "lin/STE",
               "lin/STE IQR", "target", "met", "95% CI", "verdict", "lin/hard", "STE/hard", "compile s (hard/STE/lin)", "others"]
    fmt = ["", "", "", "", ".2f", ".2f", ".2f", ".3f", "", "", "", "", "", ".3f", ".3f", "", ".2f"]
    bc.print_table(rows, columns, fmt)
    print("models: " + "; ".join(f"{n} = {all_specs[n].description}" for n in names)
          + f"; {bc.load_average()} at the end; {mon.summary()} ('others' column: per model)")
    return rows


if __name__ == "__main__":
    main()

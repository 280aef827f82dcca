"""Eager-mode cost of the sll ops against the hard op and a straight-through function.

For every op this times, side by side in one run:

- ``hard fwd``: the hard op's forward alone (no autograd);
- ``STE``: forward + backward of a straight-through ``autograd.Function`` (forward: the
  hard op; backward: ``grad_output`` unchanged; for a tensor threshold also ``-grad.sum()``);
- ``sll``: forward + backward of the ``torch.ops.sll`` op, in ``linear`` and ``hard`` mode;
- for ``sign`` also a naive ``torch.where`` composite, for context.

Each timed iteration is ``x.grad = None; y = f(x); y.backward(g); del y; x.grad = None``
(every method frees its own buffers inside its own timing) on ``x = torch.randn(2**size_log2) * 2``
(float32) with one fixed ``g``; ``hard fwd`` is ``y = hard(x); del y`` under ``no_grad``.  After a warm-up the
methods of an op are run round-robin within each repeat (so machine noise hits them all
alike) and the median over the repeats is reported in milliseconds; the ratios
``sll / STE`` (target: within 3x) and ``sll / hard fwd`` are the medians of the per-repeat
ratios, so a slow spell of the machine that hits one round hits both sides of its ratio.

    python benchmarks/ops.py                 # 2^22 elements, 25 repeats
    python benchmarks/ops.py --quick         # 2^16 elements, 5 repeats (smoke test)
    python benchmarks/ops.py --repeats 40 --eps 0.01 --size-log2 20
    python benchmarks/ops.py --ops sign,round --faults   # a subset; page faults per run

``main(argv)`` returns the rows as a list of dicts (the printed table's columns).
"""

from __future__ import annotations

import argparse
import random
import os
import statistics
import sys
from typing import Callable

import torch
from tabulate import tabulate

try:
    import resource  # Unix only: page-fault counts for --faults
except ImportError:  # pragma: no cover
    resource = None

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_common as bc  # noqa: E402

import sll_fx  # noqa: F401,E402  (registers torch.ops.sll)

TARGET = 3.0  # sll fwd+bwd within this factor of the straight-through function
MODES = ("linear", "hard")


# --- straight-through baselines ------------------------------------------------------

def straight_through(hard: Callable[[torch.Tensor], torch.Tensor]) -> Callable[[torch.Tensor], torch.Tensor]:
    """``autograd.Function`` with the hard op as forward and the identity as backward."""
    class STE(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            return hard(x)

        @staticmethod
        def backward(ctx, grad):
            return grad

    return STE.apply


class ThresholdSTE(torch.autograd.Function):
    """``(x > t).float()`` forward; backward ``grad`` to ``x`` and ``-grad.sum()`` to ``t``."""

    @staticmethod
    def forward(ctx, x, t):
        return (x > t).float()

    @staticmethod
    def backward(ctx, grad):
        return grad, -grad.sum()


# --- the op table -------------------------------------------------------------------

class Case:
    """One op: its hard forward, STE, sll (per mode) and optional extra reference methods."""

    def __init__(self, name: str, eps: float, hard, ste, sll, extra=None, threshold=None):
        self.name, self.eps = name, eps
        self.hard, self.ste, self.sll = hard, ste, sll
        self.extra = extra or {}          # column name -> fwd+bwd callable
        self.threshold = threshold        # tensor threshold that requires grad (its .grad is reset too)


def cases(eps: float) -> list[Case]:
    ops = torch.ops.sll
    values = torch.tensor(0.5)
    t = torch.tensor(0.5, requires_grad=True)
    eps2 = eps / 100.0  # round(decimals=2): eps relative to the 0.01 grid (limit 0.005)

    def unary(name, hard, sll_op, e=eps, **kw):
        return Case(name, e, hard, straight_through(hard),
                    {m: (lambda x, m=m: sll_op(x, eps=e, mode=m, **kw)) for m in MODES})

    return [
        Case("sign", eps, torch.sign, straight_through(torch.sign),
             {m: (lambda x, m=m: ops.sign(x, eps=eps, mode=m)) for m in MODES},
             extra={"naive where": lambda x: torch.where(x.abs() <= eps, x / eps, torch.sign(x))}),
        Case("heaviside", eps, lambda x: torch.heaviside(x, values),
             straight_through(lambda x: torch.heaviside(x, values)),
             {m: (lambda x, m=m: ops.heaviside(x, values, eps=eps, mode=m)) for m in MODES}),
        unary("round", torch.round, ops.round),
        unary("round(decimals=2)", lambda x: torch.round(x, decimals=2), ops.round, e=eps2, decimals=2),
        unary("floor", torch.floor, ops.floor),
        unary("ceil", torch.ceil, ops.ceil),
        unary("trunc", torch.trunc, ops.trunc),
        Case("threshold x>0.5", eps, lambda x: (x > 0.5).float(), straight_through(lambda x: (x > 0.5).float()),
             {m: (lambda x, m=m: sll_fx.threshold(x, 0.5, eps, mode=m)) for m in MODES}),
        Case("threshold x>t (t grad)", eps, lambda x: (x > t).float(), lambda x: ThresholdSTE.apply(x, t),
             {m: (lambda x, m=m: sll_fx.threshold(x, t, eps, mode=m)) for m in MODES}, threshold=t),
    ]


# --- timing ---------------------------------------------------------------------------

def _minor_faults() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt if resource is not None else 0


def time_case(case: Case, x: torch.Tensor, g: torch.Tensor, repeats: int, warmup: int,
              faults: dict[str, list[int]] | None = None) -> dict[str, list[float]]:
    """Milliseconds per method of ``case`` for each repeat, the methods interleaved within each repeat.

    ``faults``, when given, receives the minor page faults of each timed run per method (a fresh
    2^22-element buffer that the allocator had to take from the OS again costs 4096 of them).
    """
    x_nograd = x.detach()
    methods = {"hard fwd": bc.fwd(case.hard, x_nograd), "STE": bc.fwd_bwd(case.ste, x, g, case.threshold)}
    for m in MODES:
        methods[f"sll {m}"] = bc.fwd_bwd(case.sll[m], x, g, case.threshold)
    for col, f in case.extra.items():
        methods[col] = bc.fwd_bwd(f, x, g, case.threshold)
    for _ in range(warmup):
        for run in methods.values():
            run()
    samples: dict[str, list[float]] = {name: [] for name in methods}
    if faults is not None:
        faults.update({name: [] for name in methods})
    rng = random.Random(0)  # (a fresh random order in each repeat, as bench_common.interleaved: no method always
    for _ in range(repeats):  # runs behind the same one, whose leftovers in the cache and allocator would bias it)
        for name in rng.sample(list(methods), len(methods)):
            run = methods[name]
            before = _minor_faults()
            samples[name].append(run())
            if faults is not None:
                faults[name].append(_minor_faults() - before)
    return samples


def check(case: Case, x: torch.Tensor) -> None:
    """Sanity: hard mode equals the hard op, gradients flow (so the timings time real work)."""
    xs = x.detach()[:4096].clone().requires_grad_(True)
    want = case.hard(xs.detach())
    got = case.sll["hard"](xs)
    if not torch.equal(got.detach(), want):
        raise AssertionError(f"{case.name}: sll hard mode differs from the hard op")
    got.sum().backward()
    if xs.grad is None:
        raise AssertionError(f"{case.name}: no gradient reached x")
    if case.threshold is not None:
        case.threshold.grad = None


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size-log2", type=int, default=22, help="number of elements is 2**N (default 22)")
    p.add_argument("--repeats", type=int, default=25, help="timed repeats per method; the median is reported")
    p.add_argument("--warmup", type=int, default=3, help="untimed round-robin rounds before timing")
    p.add_argument("--eps", type=float, default=0.05, help="band half-width (round(decimals=2) uses eps/100)")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: leave as is)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--ops", type=lambda v: [o.strip() for o in v.split(",") if o.strip()], default=None,
                   help="comma-separated subset, e.g. sign,round,threshold (default: all)")
    p.add_argument("--faults", action="store_true",
                   help="add columns: minor page faults per timed run (median), for hard fwd, STE and sll")
    p.add_argument("--quick", action="store_true", help="2**16 elements, 5 repeats, 1 warm-up (for tests)")
    args = p.parse_args(argv)
    if args.quick:
        args.size_log2, args.repeats, args.warmup = 16, 5, 1
    return args


def main(argv=None) -> list[dict]:
    args = parse_args(argv)
    x, g = bc.per_op_inputs(args)
    n = x.numel()

    rows = []
    for case in cases(args.eps):
        if args.ops and case.name.split(" ")[0].split("(")[0] not in args.ops:
            continue
        check(case, x)
        faults: dict[str, list[int]] = {}
        samples = time_case(case, x, g, args.repeats, args.warmup, faults)
        ms = {name: statistics.median(s) for name, s in samples.items()}
        for mode in MODES:
            sll = samples[f"sll {mode}"]
            row = {
                "op": case.name,
                "mode": mode,
                "eps": case.eps,
                "hard fwd ms": ms["hard fwd"],
                "STE ms": ms["STE"],
                "sll ms": ms[f"sll {mode}"],
                "sll/STE": bc.paired_ratio(sll, samples["STE"]),
                "sll/hard fwd": bc.paired_ratio(sll, samples["hard fwd"]),
            }
            row["within 3x"] = row["sll/STE"] <= TARGET
            for name in ("hard fwd", "STE", f"sll {mode}"):
                row[f"{name.split(' ')[0]} faults"] = statistics.median(faults[name])
            for col in case.extra:
                row[f"{col} ms"] = ms[col]
                row[f"{col}/STE"] = bc.paired_ratio(samples[col], samples["STE"])
            rows.append(row)

    load = f"; load average {os.getloadavg()[0]:.2f}" if hasattr(os, "getloadavg") else ""
    print(f"sll_fx eager benchmark: torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{n} float32 elements (2^{args.size_log2}), eps={args.eps:g} (round(decimals=2): eps/100), "
          f"median of {args.repeats} repeats, methods interleaved, ratios = median of per-repeat ratios; "
          f"sll, STE and references are forward+backward{load}")
    columns = ["op", "mode", "hard fwd ms", "STE ms", "sll ms", "sll/STE", "sll/hard fwd", "within 3x"]
    fmt = ["", "", ".3f", ".3f", ".3f", ".2f", ".2f", ""]
    for ref in dict.fromkeys(col for r in rows for col in r if col.endswith(" ms") and col not in columns):
        columns += [ref, ref[:-3] + "/STE"]
        fmt += [".3f", ".2f"]
    if args.faults:
        columns += ["hard faults", "STE faults", "sll faults"]
        fmt += [".0f", ".0f", ".0f"]
    table = [[r.get(c, "") for c in columns] for r in rows]
    print(tabulate(table, headers=columns, floatfmt=fmt, missingval=""))
    return rows


if __name__ == "__main__":
    main()

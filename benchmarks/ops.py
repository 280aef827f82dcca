"""Eager-mode cost of the sll ops against the hard op and a straight-through function.

For every op this times, side by side in one run:

- ``hard fwd``: the hard op's forward alone (no autograd);
- ``STE``: forward + backward of a straight-through ``autograd.Function`` (forward: the
  hard op; backward: ``grad_output`` unchanged; for a tensor threshold also ``-grad.sum()``);
- ``sll``: forward + backward of the ``torch.ops.sll`` op, in ``linear`` and ``hard`` mode;
- for ``sign`` also a naive ``torch.where`` composite, for context.

Each timed iteration is ``x.grad = None; y = f(x); y.backward(g); del y`` on
``x = torch.randn(2**size_log2) * 2`` (float32) with one fixed ``g``.  After a warm-up the
methods of an op are run round-robin within each repeat (so machine noise hits them all
alike) and the median over the repeats is reported, in milliseconds and as the ratios
``sll / STE`` (target: within 3x) and ``sll / hard fwd``.

    python benchmarks/ops.py                 # 2^22 elements, 25 repeats
    python benchmarks/ops.py --quick         # 2^16 elements, 5 repeats (smoke test)
    python benchmarks/ops.py --repeats 40 --eps 0.01 --size-log2 20

``main(argv)`` returns the rows as a list of dicts (the printed table's columns).
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Callable

import torch
from tabulate import tabulate

import sll_fx  # noqa: F401  (registers torch.ops.sll)

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

def _fwd_bwd(f, x, g, t):
    def run():
        start = time.perf_counter()
        x.grad = None
        if t is not None:
            t.grad = None
        y = f(x)
        y.backward(g)
        del y
        return time.perf_counter() - start
    return run


def _fwd(f, x):
    def run():
        start = time.perf_counter()
        with torch.no_grad():
            y = f(x)
        del y
        return time.perf_counter() - start
    return run


def time_case(case: Case, x: torch.Tensor, g: torch.Tensor, repeats: int, warmup: int) -> dict[str, float]:
    """Median milliseconds per method of ``case``, the methods interleaved within each repeat."""
    x_nograd = x.detach()
    methods = {"hard fwd": _fwd(case.hard, x_nograd), "STE": _fwd_bwd(case.ste, x, g, case.threshold)}
    for m in MODES:
        methods[f"sll {m}"] = _fwd_bwd(case.sll[m], x, g, case.threshold)
    for col, f in case.extra.items():
        methods[col] = _fwd_bwd(f, x, g, case.threshold)
    for _ in range(warmup):
        for run in methods.values():
            run()
    samples: dict[str, list[float]] = {name: [] for name in methods}
    for _ in range(repeats):
        for name, run in methods.items():
            samples[name].append(run())
    x.grad = None
    if case.threshold is not None:
        case.threshold.grad = None
    return {name: 1e3 * statistics.median(s) for name, s in samples.items()}


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
    p.add_argument("--quick", action="store_true", help="2**16 elements, 5 repeats, 1 warm-up (for tests)")
    args = p.parse_args(argv)
    if args.quick:
        args.size_log2, args.repeats, args.warmup = 16, 5, 1
    return args


def main(argv=None) -> list[dict]:
    args = parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    n = 2 ** args.size_log2
    x = (torch.randn(n) * 2).requires_grad_(True)
    g = torch.randn(n)

    rows = []
    for case in cases(args.eps):
        check(case, x)
        ms = time_case(case, x, g, args.repeats, args.warmup)
        for mode in MODES:
            sll_ms = ms[f"sll {mode}"]
            row = {
                "op": case.name,
                "mode": mode,
                "eps": case.eps,
                "hard fwd ms": ms["hard fwd"],
                "STE ms": ms["STE"],
                "sll ms": sll_ms,
                "sll/STE": sll_ms / ms["STE"],
                "sll/hard fwd": sll_ms / ms["hard fwd"],
                "within 3x": sll_ms / ms["STE"] <= TARGET,
            }
            for col in case.extra:
                row[f"{col} ms"] = ms[col]
                row[f"{col}/STE"] = ms[col] / ms["STE"]
            rows.append(row)

    print(f"sll_fx eager benchmark: torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{n} float32 elements (2^{args.size_log2}), eps={args.eps:g}, "
          f"median of {args.repeats} repeats (methods interleaved), forward+backward unless 'fwd'")
    columns = ["op", "mode", "hard fwd ms", "STE ms", "sll ms", "sll/STE", "sll/hard fwd", "within 3x"]
    table = [[r[c] for c in columns] for r in rows]
    print(tabulate(table, headers=columns, floatfmt=("", "", ".3f", ".3f", ".3f", ".2f", ".2f")))
    extra = [(r["op"], col[:-3], r[col], r[col[:-3] + "/STE"])
             for r in rows if r["mode"] == "linear" for col in r if col.endswith(" ms")
             and col not in ("hard fwd ms", "STE ms", "sll ms")]
    if extra:
        print()
        print(tabulate(extra, headers=["op", "reference (fwd+bwd)", "ms", "ratio to STE"], floatfmt=("", "", ".3f", ".2f")))
    return rows


if __name__ == "__main__":
    main()

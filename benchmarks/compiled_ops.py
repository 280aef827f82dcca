"""Per-op forward+backward under torch.compile: the sll op against a compiled straight-through function.

For every op this compiles, side by side in one run:

- ``hard fwd``: the hard op's forward alone, compiled, under ``no_grad``;
- ``STE``: a straight-through ``autograd.Function`` of the op (forward: the hard op; backward:
  ``grad`` unchanged; for a tensor threshold also ``-grad.sum()``), compiled, forward+backward;
- ``clipped STE``: the same with the clipped straight-through backward ``grad * 1{|x - c| < w}``
  (the hardtanh STE of binary networks: ``c = 0``, ``w = 1``; for a threshold ``c = t``, ``w = 1/2``,
  sll_fx's own ``method="ste"`` there).  Not a target: a reference for what any backward that reads
  ``x`` costs (the identity STE's reads only ``grad``; ``sll/clipped`` near 1 says that reading ``x``
  is the gap);
- ``sll``: the explicit sll op (``sll_fx.sign(x, eps)``, ...), compiled, forward+backward, in
  ``linear`` and ``hard`` mode;
- for context, the same sll op in eager mode (``sll eager``).

Every compiled function is ``torch.compile(f, fullgraph=True)`` of a one-line function, compiled
once (inductor's FX-graph and autograd caches off, so that ``kernels fwd/bwd``, the number of
kernels inductor generated for the forward and for the backward graph, is counted on every run).
Timing follows ``ops.py``: each iteration is ``y = f(x); y.backward(g); del y; x.grad = None``
on ``x = torch.randn(2**size_log2) * 2``; a timed sample is ``--inner`` such iterations (default 4;
its time per iteration; the intervals came out as wide as with one, 0.1-0.9: the spread is between
samples, from the allocator's page faults on each fresh tensor, and ``THP_MEM_ALLOC_ENABLE=1`` narrows
them to 0.03-0.10); after a warm-up the methods of an op run round-robin
within each repeat; medians in ms; ``sll/STE`` is the median of per-repeat ratios; ``STE fwd`` and
``sll fwd`` are the forward's share of the same runs, ``others`` the cores other processes used
meanwhile (see ``bench_common.Contention``).  Target: sll/STE within 1.1x (one fused kernel each way).

A second table, ``mask-store probe``, times compiled ``x > 0`` (a bool result) against compiled
``(x > 0).float()`` and the eager versions: inductor's vectorized bool stores are why the compiled
sll ops spell their band with float ops (with a saved bool band mask the compiled sll op was 3.7-11x
the STE in this table's first version; its forward now stores nothing more than the STE's).

    python benchmarks/compiled_ops.py                 # 2^22 elements, 25 repeats of 4 runs (~3 minutes)
    python benchmarks/compiled_ops.py --quick         # 2^12 elements, 2 ops, aot_eager backend
    python benchmarks/compiled_ops.py --ops sign,round --size-log2 20

``main(argv)`` returns the rows as a list of dicts (the main table's rows, then the probe's, with ``"table"``).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_common as bc  # noqa: E402

import sll_fx  # noqa: E402

TARGET = 1.1
MODES = ("linear", "hard")


# the straight-through baselines are benchmarks/ops.py's (the eager per-op benchmark)
from ops import ThresholdSTE, straight_through  # noqa: E402


class Case:
    def __init__(self, name, hard, ste, sll, threshold=None, center=0.0, width=1.0):
        self.name, self.hard, self.ste, self.sll, self.threshold = name, hard, ste, sll, threshold
        self.clipped = clipped_straight_through(hard, center, width, threshold)


def clipped_straight_through(hard, center, width, threshold=None):
    """``hard(x)`` forward; backward ``grad * 1{|x - c| < w}`` (``c`` the threshold tensor when given,
    which then receives the negated sum)."""
    class ClippedSTE(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, t):
            ctx.save_for_backward(x)
            return hard(x)

        @staticmethod
        def backward(ctx, grad):
            (x,) = ctx.saved_tensors
            c = center if threshold is None else threshold.detach()
            # the band as float ops, not a comparison: from a comparison the partitioner saves a
            # one-byte mask, whose store is ~25x slower compiled (probe below); the same spelling as sll's
            gx = grad * torch.sign(width - (x - c).abs()).clamp_min(0.0)
            return gx, (None if threshold is None else -gx.sum())

    return lambda x: ClippedSTE.apply(x, threshold)


def cases(eps: float) -> list[Case]:
    """The ops of ``ops.py``, through the public explicit-op API."""
    t = torch.tensor(0.5, requires_grad=True)
    values = torch.tensor(0.5)

    def unary(name, hard, sll_fn, **kw):
        return Case(name, hard, straight_through(hard), {m: (lambda x, m=m: sll_fn(x, **kw, mode=m)) for m in MODES})

    return [
        unary("sign", torch.sign, sll_fx.sign, eps=eps),
        unary("heaviside", lambda x: torch.heaviside(x, values), sll_fx.heaviside, eps=eps, values=values),
        unary("round", torch.round, sll_fx.round, eps=eps),
        unary("round(decimals=2)", lambda x: torch.round(x, decimals=2), sll_fx.round, eps=eps / 100, decimals=2),
        unary("floor", torch.floor, sll_fx.floor, eps=eps),
        unary("ceil", torch.ceil, sll_fx.ceil, eps=eps),
        unary("trunc", torch.trunc, sll_fx.trunc, eps=eps),
        Case("threshold x>0.5", lambda x: (x > 0.5).float(), straight_through(lambda x: (x > 0.5).float()),
             {m: (lambda x, m=m: sll_fx.threshold(x, 0.5, eps, mode=m)) for m in MODES}, center=0.5, width=0.5),
        Case("threshold x>t (t grad)", lambda x: (x > t).float(), lambda x: ThresholdSTE.apply(x, t),
             {m: (lambda x, m=m: sll_fx.threshold(x, t, eps, mode=m)) for m in MODES}, threshold=t, width=0.5),
    ]


# --- compiling and timing ---------------------------------------------------------------

def kernel_count() -> int:
    try:
        from torch._inductor import metrics
        return metrics.generated_kernel_count
    except (ImportError, AttributeError):  # pragma: no cover
        return 0


def compile_fwd_bwd(f, x, g, t, backend):
    """Compile ``f``; run it once forward and backward; return (compiled f, kernels fwd, kernels bwd, seconds)."""
    cf = torch.compile(f, fullgraph=True, backend=backend)
    start = time.perf_counter()
    k0 = kernel_count()
    y = cf(x)
    k1 = kernel_count()
    y.backward(g)
    k2 = kernel_count()
    seconds = time.perf_counter() - start
    del y
    x.grad = None
    if t is not None:
        t.grad = None
    return cf, k1 - k0, k2 - k1, seconds


def compile_fwd(f, x, backend):
    cf = torch.compile(f, fullgraph=True, backend=backend)
    k0 = kernel_count()
    with torch.no_grad():
        cf(x)
    return cf, kernel_count() - k0


def probe(x: torch.Tensor, repeats: int, warmup: int, backend: str, mon: bc.Contention, tries: int) -> list[dict]:
    """Compiled and eager ``x > 0`` (bool) and ``(x > 0).float()``, no grad: the cost of a bool store."""
    xs = x.detach()
    fns = {"x > 0 (bool)": lambda v: v > 0, "(x > 0).float()": lambda v: (v > 0).float()}
    methods = {}
    for name, f in fns.items():
        cf, _ = compile_fwd(f, xs, backend)
        methods[(name, "compiled")] = bc.fwd(cf, xs)
        methods[(name, "eager")] = bc.fwd(f, xs)
    samples, _ = bc.interleaved_quiet(methods, repeats, warmup, total=mon, tries=tries)
    return [{"table": "probe", "op": name, "compiled ms": bc.median(samples[(name, "compiled")]),
             "eager ms": bc.median(samples[(name, "eager")]),
             "compiled/eager": bc.paired_ratio(samples[(name, "compiled")], samples[(name, "eager")])}
            for name in fns]


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size-log2", type=int, default=22, help="number of elements is 2**N (default 22)")
    p.add_argument("--repeats", type=int, default=25, help="timed repeats per method; the median is reported")
    p.add_argument("--inner", type=int, default=4,
                   help="forward+backward runs per timed sample, its time the mean (default 4)")
    p.add_argument("--warmup", type=int, default=3, help="untimed round-robin rounds before timing")
    p.add_argument("--eps", type=float, default=0.05, help="band half-width (round(decimals=2) uses eps/100)")
    p.add_argument("--backend", default="inductor", help="torch.compile backend (default inductor)")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: leave as is)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--ops", type=lambda v: [o.strip() for o in v.split(",") if o.strip()], default=None,
                   help="comma-separated subset, e.g. sign,round,threshold (default: all)")
    p.add_argument("--tries", type=int, default=3,
                   help="re-time a measurement (up to N times, 15 s apart) while other processes use > 0.25 cores")
    p.add_argument("--no-probe", action="store_true", help="skip the bool mask-store probe")
    p.add_argument("--quick", action="store_true",
                   help="2**12 elements, sign and threshold only, 2 repeats, aot_eager backend (smoke test)")
    args = p.parse_args(argv)
    if args.quick:
        args.size_log2, args.repeats, args.warmup, args.tries, args.inner = 12, 2, 1, 1, 1
        args.ops = args.ops or ["sign", "threshold"]
        if args.backend == "inductor":
            args.backend = "aot_eager"
    return args


def main(argv=None) -> list[dict]:
    args = parse_args(argv)
    x, g = bc.per_op_inputs(args)
    n = x.numel()
    head = bc.header("sll_fx compiled per-op benchmark",
                     f"torch.compile(fullgraph=True, backend={args.backend}), {n} float32 elements "
                     f"(2^{args.size_log2}), eps={args.eps:g} (round(decimals=2): eps/100), median of "
                     f"{args.repeats} repeats of {args.inner} runs each (ms per run), methods interleaved, ratios = median of per-repeat ratios; "
                     f"STE and sll are forward+backward")

    rows, probe_rows, mon = [], [], bc.Contention()
    with bc.no_compile_caches():
        for case in cases(args.eps):
            if args.ops and case.name.split(" ")[0].split("(")[0] not in args.ops:
                continue
            t = case.threshold
            torch._dynamo.reset()  # each op starts with empty dynamo caches
            try:
                methods, kernels, fwd_ms = {}, {}, {}
                cf, kf = compile_fwd(case.hard, x.detach(), args.backend)
                methods["hard fwd"], kernels["hard fwd"] = bc.fwd(cf, x.detach(), args.inner), (kf, 0)
                cf, kf, kb, s = compile_fwd_bwd(case.ste, x, g, t, args.backend)
                fwd_ms["STE"] = []
                methods["STE"], kernels["STE"] = bc.fwd_bwd(cf, x, g, t, fwd_ms["STE"], args.inner), (kf, kb)
                cf, kf, kb, s = compile_fwd_bwd(case.clipped, x, g, t, args.backend)
                methods["clipped STE"] = bc.fwd_bwd(cf, x, g, t, inner=args.inner)
                for m in MODES:
                    cf, kf, kb, s = compile_fwd_bwd(case.sll[m], x, g, t, args.backend)
                    fwd_ms[m] = []
                    methods[f"sll {m}"], kernels[f"sll {m}"] = bc.fwd_bwd(cf, x, g, t, fwd_ms[m], args.inner), (kf, kb)
                    methods[f"eager {m}"] = bc.fwd_bwd(case.sll[m], x, g, t, inner=args.inner)
                samples, others, fwd_share = bc.interleaved_quiet(
                    methods, args.repeats, args.warmup, total=mon, tries=args.tries,
                    # the forward's share of the timed runs of this attempt (then start afresh)
                    on_result=lambda: {k: [v.pop() for _ in range(args.repeats)] for k, v in fwd_ms.items()})
            except Exception as exc:  # report and go on with the other ops
                rows.append({"op": case.name, "error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:120]}"})
                continue
            for m in MODES:
                sll = samples[f"sll {m}"]
                row = {
                    "op": case.name, "mode": m,
                    "hard fwd ms": bc.median(samples["hard fwd"]),
                    "STE ms": bc.median(samples["STE"]),
                    "sll ms": bc.median(sll),
                    "sll/STE": bc.paired_ratio(sll, samples["STE"]),
                    "clipped STE ms": bc.median(samples["clipped STE"]),
                    "sll/clipped": bc.paired_ratio(sll, samples["clipped STE"]),
                    "STE fwd ms": bc.median(fwd_share["STE"]),
                    "sll fwd ms": bc.median(fwd_share[m]),
                    "kernels fwd/bwd STE": "%d/%d" % kernels["STE"],
                    "kernels fwd/bwd sll": "%d/%d" % kernels[f"sll {m}"],
                    "sll eager ms": bc.median(samples[f"eager {m}"]),
                    "compiled/eager": bc.paired_ratio(sll, samples[f"eager {m}"]),
                    "others": others,
                }
                q1, q3 = bc.ratio_quartiles(sll, samples["STE"])
                row["sll/STE IQR"] = f"{q1:.2f}-{q3:.2f}"
                row["within 1.1x"] = row["sll/STE"] <= TARGET
                row["95% CI"] = bc.ratio_ci(sll, samples["STE"])
                row["verdict"] = bc.verdict([a / b for a, b in zip(sll, samples["STE"])], TARGET)
                rows.append(row)
        if not args.no_probe:
            probe_rows = probe(x, args.repeats, args.warmup, args.backend, mon, args.tries)

    print(head)
    columns = ["op", "mode", "hard fwd ms", "STE ms", "sll ms", "sll/STE", "sll/STE IQR", "within 1.1x",
               "95% CI", "verdict", "clipped STE ms", "sll/clipped", "STE fwd ms", "sll fwd ms", "kernels fwd/bwd STE",
               "kernels fwd/bwd sll", "sll eager ms", "compiled/eager", "others"]
    fmt = ["", "", ".3f", ".3f", ".3f", ".2f", "", "", "", "", ".3f", ".2f", ".3f", ".3f", "", "", ".3f", ".2f", ".2f"]
    if any("error" in r for r in rows):
        columns.append("error")
        fmt.append("")
    bc.print_table(rows, columns, fmt)
    if probe_rows:
        print(f"\nmask-store probe (no grad, {n} elements, compiled with {args.backend} vs eager):")
        bc.print_table(probe_rows, ["op", "compiled ms", "eager ms", "compiled/eager"], ["", ".3f", ".3f", ".2f"])
    print(f"{bc.load_average()} at the end; {mon.summary()} ('others' column: per op)")
    return rows + probe_rows


if __name__ == "__main__":
    main()

"""Time of ``linearize_module`` and ``export_hard`` against graph size, next to ``symbolic_trace``.

The models are synthetic chains whose Python loop is unrolled at trace time: block ``i`` is
``h = torch.tanh(x * 0.9 + 0.1); d = <discrete op i>(h); x = h + 0.1 * d``, the discrete op
cycling through ``torch.sign``, ``torch.round``, ``torch.floor`` and ``(h > 0.5).float()``,
so one node in about seven is rewritten.  The number of blocks is chosen so the traced graph
has about 1k, 10k and 50k nodes (the table gives the exact count).

For each size, side by side within each repeat (the garbage collector runs, untimed, before
each method, and the objects alive then are frozen, ``gc.freeze``, for the method's call: a
collection the call triggers walks what the call allocated, not the benchmark's models and the
GraphModule ``export`` works on, whose size would otherwise make each full collection slower
and favour whichever method triggers fewer; ``--no-gc-freeze`` times without freezing):

- ``trace``: ``torch.fx.symbolic_trace(model)`` (it builds the GraphModule and its code);
- ``linearize``: ``sll_fx.linearize_module(model, eps, verbose=False)``, which traces too: the
  pass's own cost is ``pass = linearize - trace`` (per repeat), and ``pass/trace`` is its
  median ratio (target: at most 0.5);
- ``export``: ``sll_fx.export_hard(gm, verbose=False)`` on the linearized GraphModule (copies
  the graph, strips it, builds a new GraphModule; no tracing).

Per-node times in microseconds; growth is read from the per-node times across sizes and
from the log-log slope between the smallest and the largest graph (1.0 is linear).

    python benchmarks/pass_scaling.py                   # 1k, 10k, 50k nodes (~1-2 minutes)
    python benchmarks/pass_scaling.py --quick           # 100 and 400 nodes, 2 repeats
    python benchmarks/pass_scaling.py --sizes 1000,5000 --repeats 7

``main(argv)`` returns the rows as a list of dicts (the printed table's columns).
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import time

import torch
from torch import fx, nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_common as bc  # noqa: E402

import sll_fx  # noqa: E402

PASS_TARGET = 0.5      # (linearize - trace) / trace
LINEAR_SLOPE = 1.15    # log-log slope read as "linear growth" up to this


class Chain(nn.Module):
    """``n_blocks`` blocks of elementwise ops, each with one discrete op; unrolled when traced."""

    def __init__(self, n_blocks: int):
        super().__init__()
        self.n_blocks = n_blocks

    def forward(self, x):
        for i in range(self.n_blocks):
            h = torch.tanh(x * 0.9 + 0.1)
            k = i % 4
            if k == 0:
                d = torch.sign(h)
            elif k == 1:
                d = torch.round(h * 2)
            elif k == 2:
                d = torch.floor(h * 2)
            else:
                d = (h > 0.5).float()
            x = h + 0.1 * d
        return x


class Block(nn.Module):
    """One block of ``Modular``: a Linear 8x8, tanh and one discrete op (which, ``self.kind``)."""

    def __init__(self, kind: int):
        super().__init__()
        self.lin = nn.Linear(8, 8)
        self.kind = kind

    def forward(self, x):
        h = torch.tanh(self.lin(x))
        if self.kind == 0:
            d = torch.sign(h)
        elif self.kind == 1:
            d = torch.round(h * 2)
        elif self.kind == 2:
            d = torch.floor(h * 2)
        else:
            d = (h > 0.5).float()
        return h + 0.1 * d


class Modular(nn.Module):
    """``n_blocks`` small modules of their own (``--modules``): the per-module work of tracing shows."""

    def __init__(self, n_blocks: int):
        super().__init__()
        self.blocks = nn.ModuleList(Block(i % 4) for i in range(n_blocks))

    def forward(self, x):
        for block in self.blocks:
            x = block(x)
        return x


def blocks_for(nodes: int, cls=Chain) -> int:
    """Blocks whose traced graph has about ``nodes`` nodes (measured on a 40-block trace)."""
    per_block = (len(fx.symbolic_trace(cls(40)).graph.nodes) - 2) / 40  # minus placeholder and output
    return max(1, round((nodes - 2) / per_block))


def timed_call(fn):
    def run():
        start = time.perf_counter()
        fn()
        return 1e3 * (time.perf_counter() - start)
    return run


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", type=lambda v: [int(s) for s in v.split(",") if s.strip()], default=[1000, 10000, 50000],
                   help="approximate node counts (default 1000,10000,50000)")
    p.add_argument("--repeats", type=int, default=9,
                   help="timed repeats per method; the median is reported (9: its 95%% interval is the 2nd to 8th value)")
    p.add_argument("--warmup", type=int, default=1, help="untimed round-robin rounds before timing")
    p.add_argument("--eps", type=float, default=0.1)
    p.add_argument("--tries", type=int, default=3,
                   help="re-time a measurement (up to N times, 15 s apart) while other processes use > 0.25 cores")
    p.add_argument("--quick", action="store_true", help="100 and 400 nodes, 2 repeats (smoke test)")
    p.add_argument("--modules", action="store_true",
                   help="a model of many small modules (Linear + tanh + one discrete op each) instead of the chain")
    p.add_argument("--no-gc-freeze", dest="freeze", action="store_false",
                   help="do not freeze the objects alive before each timed call (gc.freeze)")
    args = p.parse_args(argv)
    if args.quick:
        args.sizes, args.repeats, args.warmup, args.tries = [100, 400], 2, 0, 1
    return args


def main(argv=None) -> list[dict]:
    args = parse_args(argv)
    head = bc.header("sll_fx pass-scaling benchmark",
                     f"eps={args.eps:g}, verbose=False, median of {args.repeats} repeats, methods interleaved, "
                     f"gc before each method{' and gc.freeze for its call' if args.freeze else ' (no gc.freeze)'}; "
                     f"pass = linearize_module - symbolic_trace per repeat; model: "
                     f"{'many small modules (--modules)' if args.modules else 'one unrolled chain'}")
    rows, mon = [], bc.Contention()
    for size in args.sizes:
        cls = Modular if args.modules else Chain
        model = cls(blocks_for(size, cls))
        x = torch.randn(8)
        traced = fx.symbolic_trace(model)
        nodes = len(traced.graph.nodes)
        gm = sll_fx.linearize_module(model, args.eps, verbose=False)
        rewritten = gm.sll_report.counts.get("rewritten", 0)
        hard = sll_fx.export_hard(gm, verbose=False)
        identical = torch.equal(hard(x), model(x))
        del traced, hard
        methods = {
            "trace": timed_call(lambda: fx.symbolic_trace(model)),
            "linearize": timed_call(lambda: sll_fx.linearize_module(model, args.eps, verbose=False)),
            "export": timed_call(lambda: sll_fx.export_hard(gm, verbose=False)),
        }
        s, others = bc.interleaved_quiet(methods, args.repeats, args.warmup, collect=True, total=mon,
                                         tries=args.tries, freeze=args.freeze)
        pass_ms = [lin - tr for lin, tr in zip(s["linearize"], s["trace"])]
        row = {
            "nodes": nodes,
            "sll ops": rewritten,
            "trace ms": bc.median(s["trace"]),
            "linearize ms": bc.median(s["linearize"]),
            "pass ms": statistics.median(pass_ms),
            "export ms": bc.median(s["export"]),
            "pass/trace": statistics.median(p / t for p, t in zip(pass_ms, s["trace"])),
            "export/trace": bc.paired_ratio(s["export"], s["trace"]),
            "trace us/node": 1e3 * bc.median(s["trace"]) / nodes,
            "linearize us/node": 1e3 * bc.median(s["linearize"]) / nodes,
            "pass us/node": 1e3 * statistics.median(pass_ms) / nodes,
            "export us/node": 1e3 * bc.median(s["export"]) / nodes,
            "bit-identical": identical,
            "others": others,
        }
        row["pass <= 0.5 trace"] = row["pass/trace"] <= PASS_TARGET
        ratios = [p / t for p, t in zip(pass_ms, s["trace"])]
        lo, hi, _ = bc.median_ci(ratios)
        row["95% CI"], row["verdict"] = f"{lo:.3f}-{hi:.3f}", bc.verdict(ratios, PASS_TARGET)
        rows.append(row)

    # growth: log-log slope of total time between the smallest and the largest graph
    growth = {}
    if len(rows) >= 2:
        a, b = rows[0], rows[-1]
        for col in ("trace ms", "linearize ms", "pass ms", "export ms"):
            if a[col] > 0 and b[col] > 0:
                growth[col[:-3]] = math.log(b[col] / a[col]) / math.log(b["nodes"] / a["nodes"])

    print(head)
    columns = ["nodes", "sll ops", "trace ms", "linearize ms", "pass ms", "export ms", "pass/trace",
               "pass <= 0.5 trace", "95% CI", "verdict", "export/trace", "trace us/node", "linearize us/node", "pass us/node",
               "export us/node", "bit-identical", "others"]
    fmt = ["", "", ".1f", ".1f", ".1f", ".1f", ".3f", "", "", "", ".3f", ".1f", ".1f", ".1f", ".1f", "", ".2f"]
    bc.print_table(rows, columns, fmt)
    if growth:
        print(f"log-log slope of time against nodes, {rows[0]['nodes']} -> {rows[-1]['nodes']} nodes "
              f"(1.0 = linear; read as linear up to {LINEAR_SLOPE}): "
              + ", ".join(f"{k} {v:.2f}" for k, v in growth.items())
              + "; linear growth: " + str(all(v <= LINEAR_SLOPE for k, v in growth.items() if k != "trace")))
        for r in rows:
            r["growth slopes"] = growth
    print(f"{bc.load_average()} at the end; {mon.summary()} ('others' column: per size)")
    return rows


if __name__ == "__main__":
    main()

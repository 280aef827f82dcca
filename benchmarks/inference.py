"""Inference time of ``export_hard(linearize_module(model))`` against the original model.

``export_hard`` strips every sll op back to the hard op it came from, so the exported graph
is the original model's own traced graph and should run at the same speed.  For the
models of ``train_step.py`` (``mlp``, ``cnn``; bigger batches here) this times, under
``torch.no_grad()``, side by side in one run:

- ``original``: the hard model as written (its Python ``forward``);
- ``traced``: ``torch.fx.symbolic_trace(model)``, the plain fx GraphModule of the same model (no
  sll_fx involved): the reference for what running *any* fx graph instead of the Python
  ``forward`` changes;
- ``exported``: ``sll_fx.export_hard(sll_fx.linearize_module(model))`` (a GraphModule);
- ``original (A/A)``: the original model again, as a second method, so that the spread of
  ``original/original`` shows how large the noise of this run is;
- the same three compiled with ``torch.compile`` (forward only; each compiled once, warmed up).

Methods run round-robin within each repeat (in a fresh seeded random order, see ``bench_common.interleaved``), each
sample the mean of ``--inner`` forward passes; medians in ms, ratios as medians of per-repeat
ratios with their 25-75% spread.  Target: exported/original 1.00x within noise, read here as:
the 25-75% interval of its per-repeat ratios contains 1.00 or overlaps that of the A/A pair.  Every row also checks
``torch.equal`` of the exported and the original model's outputs, each run as that row's backend runs it (compiled:
each its own compile), and shows the node counts of ``symbolic_trace(model)``'s graph and the exported one.

    python benchmarks/inference.py              # full run (~1 minute on 2 cores)
    python benchmarks/inference.py --quick      # tiny models, 2 repeats, aot_eager backend
    python benchmarks/inference.py --no-compile --repeats 40

``main(argv)`` returns the rows as a list of dicts (the printed table's columns).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import torch
from torch import fx

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_common as bc  # noqa: E402
import train_step  # noqa: E402

import sll_fx  # noqa: E402

BATCH = {"mlp": 1024, "cnn": 128}   # one forward is ~5-20 ms on 2 cores


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", type=lambda v: [m.strip() for m in v.split(",") if m.strip()], default=None,
                   help="comma-separated subset of mlp,cnn (default: both)")
    p.add_argument("--repeats", type=int, default=31, help="timed repeats per method; the median is reported")
    p.add_argument("--inner", type=int, default=5, help="forward passes per timed sample (their mean)")
    p.add_argument("--warmup", type=int, default=3, help="untimed round-robin rounds before timing")
    p.add_argument("--eps", type=float, default=0.1)
    p.add_argument("--batch", type=int, default=None, help="override the batch size of every model")
    p.add_argument("--backend", default="inductor", help="torch.compile backend (default inductor)")
    p.add_argument("--no-compile", action="store_true", help="eager only")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: leave as is)")
    p.add_argument("--tries", type=int, default=3,
                   help="re-time a measurement (up to N times, 15 s apart) while other processes use > 0.25 cores")
    p.add_argument("--quick", action="store_true", help="tiny models, 2 repeats, aot_eager backend (smoke test)")
    args = p.parse_args(argv)
    if args.quick:
        args.repeats, args.inner, args.warmup, args.tries = 2, 1, 1, 1
        if args.backend == "inductor":
            args.backend = "aot_eager"
    return args


def forward(model, x):
    def run():
        with torch.no_grad():
            model(x)
    return run


def main(argv=None) -> list[dict]:
    args = parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    all_specs = train_step.specs(args.quick)
    names = args.models or list(all_specs)
    backends = ["eager"] if args.no_compile else ["eager", "compiled"]
    head = bc.header("sll_fx inference benchmark (export_hard vs original)",
                     f"no_grad forward, compile backend {args.backend}, median of {args.repeats} repeats x "
                     f"{args.inner} forwards, methods interleaved, ratios = median of per-repeat ratios")
    rows, mon = [], bc.Contention()
    with bc.no_compile_caches():  # compile s: a fresh compile, not a cache hit
        for name in names:
            spec = all_specs[name]
            batch = args.batch or (spec.batch if args.quick else BATCH[name])
            x, _ = spec.data(seed=1, batch=batch)
            torch.manual_seed(0)
            model = spec.hard_cls(**spec.kwargs).eval()
            exported = sll_fx.export_hard(sll_fx.linearize_module(model, args.eps, verbose=False), verbose=False)
            traced = fx.symbolic_trace(model)
            nodes_traced = len(traced.graph.nodes)
            nodes_exported = len(exported.graph.nodes)
            variants = {"original": model, "traced": traced, "exported": exported, "original (A/A)": model}
            methods, compile_s, identical = {}, {}, {}
            for backend in backends:
                run = {}
                for variant, m in variants.items():
                    if backend == "compiled":
                        m = torch.compile(m, backend=args.backend)
                        start = time.perf_counter()
                        forward(m, x)()
                        compile_s[variant] = time.perf_counter() - start
                    run[variant] = m
                    methods[(backend, variant)] = bc.timed(forward(m, x), args.inner)
                with torch.no_grad():  # (per backend: each compiled model is its own compile)
                    identical[backend] = torch.equal(run["exported"](x), run["original"](x))
            samples, others = bc.interleaved_quiet(methods, args.repeats, args.warmup, total=mon, tries=args.tries)
            for backend in backends:
                s = {v: samples[(backend, v)] for v in variants}
                q1, q3 = bc.ratio_quartiles(s["exported"], s["original"])
                t1, t3 = bc.ratio_quartiles(s["exported"], s["traced"])
                a1, a3 = bc.ratio_quartiles(s["original (A/A)"], s["original"])
                row = {
                    "model": name, "batch": batch,
                    "backend": backend if backend == "eager" else f"compiled ({args.backend})",
                    "nodes traced/exported": f"{nodes_traced}/{nodes_exported}",
                    "bit-identical": identical[backend],
                    "original ms": bc.median(s["original"]),
                    "traced ms": bc.median(s["traced"]),
                    "exported ms": bc.median(s["exported"]),
                    "exported/original": bc.paired_ratio(s["exported"], s["original"]),
                    "25-75%": f"{q1:.3f}-{q3:.3f}",
                    "exported/traced": bc.paired_ratio(s["exported"], s["traced"]),
                    "e/t 25-75%": f"{t1:.3f}-{t3:.3f}",
                    "A/A ratio": bc.paired_ratio(s["original (A/A)"], s["original"]),
                    "A/A 25-75%": f"{a1:.3f}-{a3:.3f}",
                    "others": others,
                }
                # same as the original within noise: its spread reaches 1.00 or overlaps the A/A pair's
                row["1.00x within noise"] = q1 <= 1.0 <= q3 or (q1 <= a3 and a1 <= q3)
                if backend == "compiled":
                    row["compile s (orig/exported)"] = f"{compile_s['original']:.1f}/{compile_s['exported']:.1f}"
                rows.append(row)

    print(head)
    columns = ["model", "batch", "backend", "nodes traced/exported", "bit-identical", "original ms", "traced ms",
               "exported ms", "exported/original", "25-75%", "1.00x within noise", "A/A ratio", "A/A 25-75%",
               "exported/traced", "e/t 25-75%", "compile s (orig/exported)", "others"]
    fmt = ["", "", "", "", "", ".3f", ".3f", ".3f", ".3f", "", "", ".3f", "", ".3f", "", "", ".2f"]
    bc.print_table(rows, columns, fmt)
    print(f"{bc.load_average()} at the end; {mon.summary()} ('others' column: per model)")
    return rows


if __name__ == "__main__":
    main()

"""Peak memory of one training step: linearized model against the straight-through model.

Models, variants and the training step are ``train_step.py``'s (``mlp``, ``cnn``; ``hard``,
``STE``, ``linearized``; same batch sizes).  Two measurements, because CPU tensors have no
``torch.cuda.max_memory_allocated``:

1. **Tensor bytes, from the profiler** (eager and compiled).  After two warm-up steps and
   ``opt.zero_grad(set_to_none=True)``, one step (forward, backward, ``opt.step()``) runs
   under ``torch.profiler.profile(profile_memory=True)``; every allocation and free of
   the CPU allocator in that step is an event with its size, and the running sum of those
   sizes in time order, at its maximum, is the step's peak of tensor memory above what was
   live when it started: activations, saved tensors, gradients, temporaries.  Exact and
   deterministic (same bytes every run); it does not see allocator or page overhead.
   ``tracemalloc`` would not see these allocations at all (they are not Python objects).
2. **Peak RSS in a fresh process** (eager only; Linux).  Each variant runs in its own
   ``python benchmarks/memory.py --child ...`` with glibc's mmap threshold fixed at 128 KiB
   (``MALLOC_MMAP_THRESHOLD_``: every large tensor is its own mapping and goes back to the OS
   when freed, so the resident set follows the live tensors).  It runs one full step (loading
   libraries and building oneDNN primitives for these shapes), resets the RSS high-water mark
   (``/proc/self/clear_refs``), runs a second step and reports ``VmHWM`` minus the ``VmRSS``
   before it: the step's peak as the OS saw it (page granularity, allocator and library
   scratch included).

``lin/STE`` is the ratio of the peaks; there is no target in the issue for it, the table is
for reading: the linearized ``linear`` mode keeps one ramp tensor per sll op for its backward
(the straight-through function keeps nothing), so the extra is about one activation-sized
tensor per sll op while its activation is live.

    python benchmarks/memory.py              # full run (~1 minute on 2 cores)
    python benchmarks/memory.py --quick      # tiny models, profiler only (no compile, no subprocesses)

``main(argv)`` returns the rows as a list of dicts (the printed table's columns).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_common as bc  # noqa: E402
import train_step  # noqa: E402

MiB = 2.0 ** 20
VARIANTS = ("hard", "STE", "linearized")


def profiled_peak(step, zero_grad) -> int:
    """Peak bytes of CPU tensor memory allocated by ``step()`` above the level at its start."""
    zero_grad()
    gc.collect()
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step()
    events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]
    live = peak = 0
    for e in sorted(events, key=lambda e: e.start_ns()):
        if e.device_type() != torch.autograd.DeviceType.CPU:
            continue
        live += e.nbytes()
        peak = max(peak, live)
    return peak


def _status_kib(field: str) -> int | None:
    """A ``VmRSS``/``VmHWM`` line of ``/proc/self/status``, in bytes (Linux only)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return None


def _reset_peak_rss() -> bool:
    """Reset the process's RSS high-water mark (``VmHWM``): Linux ``/proc/self/clear_refs``, value 5."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


# glibc: a fixed mmap threshold (no dynamic raising) makes every large tensor its own mapping,
# given back to the OS when freed, so the resident set follows the live tensors
CHILD_ENV = {"MALLOC_MMAP_THRESHOLD_": "131072", "MALLOC_TRIM_THRESHOLD_": "131072"}


def child(model_name: str, variant: str, eps: float, mode: str, quick: bool, batch: int | None) -> dict:
    """Run in a fresh process: peak RSS of the second of two full training steps of one variant.

    The first step loads every library and lazily built kernel (oneDNN primitives for these shapes);
    then the RSS high-water mark is reset and the second step's peak is read from ``VmHWM``."""
    spec = train_step.specs(quick)[model_name]
    model = train_step.build_variants(spec, eps, mode)[variant]
    x, y = spec.data(batch=batch)
    step = train_step.make_step(model, x, y)
    step()
    model.zero_grad(set_to_none=True)
    gc.collect()
    reset = _reset_peak_rss()
    before = _status_kib("VmRSS")
    step()
    peak = _status_kib("VmHWM")
    return {"reset": reset, "rss before": before, "peak rss": peak}


def rss_peaks(model_name: str, args) -> dict[str, float] | None:
    """Max RSS above the RSS before the step, per variant, each in a fresh process (None where unsupported)."""
    out = {}
    env = {**os.environ, **CHILD_ENV}
    for variant in VARIANTS:
        cmd = [sys.executable, os.path.abspath(__file__), "--child", f"{model_name},{variant}",
               "--eps", str(args.eps), "--mode", args.mode]
        if args.quick:
            cmd.append("--quick")
        if args.batch:
            cmd += ["--batch", str(args.batch)]
        res = subprocess.run(cmd, capture_output=True, text=True, check=True, env=env)
        r = json.loads(res.stdout.strip().splitlines()[-1])
        if not r["reset"] or r["rss before"] is None or r["peak rss"] is None:
            return None
        out[variant] = (r["peak rss"] - r["rss before"]) / MiB
    return out


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", type=lambda v: [m.strip() for m in v.split(",") if m.strip()], default=None,
                   help="comma-separated subset of mlp,cnn (default: both)")
    p.add_argument("--eps", type=float, default=0.1)
    p.add_argument("--mode", default="linear", choices=("linear", "hard"), help="linearize_module mode")
    p.add_argument("--batch", type=int, default=None, help="override the batch size of every model")
    p.add_argument("--backend", default="inductor", help="torch.compile backend (default inductor)")
    p.add_argument("--no-compile", action="store_true", help="eager only")
    p.add_argument("--no-rss", action="store_true", help="skip the fresh-process max-RSS measurement")
    p.add_argument("--quick", action="store_true", help="tiny models, profiler only: no compile, no RSS (smoke test)")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.quick and not args.child:
        args.no_compile = args.no_rss = True
    return args


def main(argv=None) -> list[dict]:
    args = parse_args(argv)
    if args.child:
        model_name, variant = args.child.split(",")
        print(json.dumps(child(model_name, variant, args.eps, args.mode, args.quick, args.batch)))
        return []
    all_specs = train_step.specs(args.quick)
    names = args.models or list(all_specs)
    backends = ["eager"] if args.no_compile else ["eager", "compiled"]
    head = bc.header("sll_fx training-step memory benchmark",
                     f"eps={args.eps:g} mode={args.mode}; peak tensor MiB of one step (forward, backward, "
                     f"SGD step) from torch.profiler memory events; RSS: peak (VmHWM, reset before the step) minus the RSS "
                     f"before it, second step in a fresh process per variant")
    rows = []
    for name in names:
        spec = all_specs[name]
        if args.batch:
            spec.batch = args.batch
        x, y = spec.data()
        params_mib = sum(p.numel() * p.element_size() for p in spec.hard_cls(**spec.kwargs).parameters()) / MiB
        rss = None
        if not args.no_rss and sys.platform.startswith("linux"):
            rss = rss_peaks(name, args)
        for backend in backends:
            variants = train_step.build_variants(spec, args.eps, args.mode)
            peaks = {}
            for variant, model in variants.items():
                runner = torch.compile(model, backend=args.backend) if backend == "compiled" else model
                step = train_step.make_step(runner, x, y)
                step()
                step()
                peaks[variant] = profiled_peak(step, lambda: model.zero_grad(set_to_none=True)) / MiB
            row = {
                "model": name, "batch": spec.batch,
                "backend": backend if backend == "eager" else f"compiled ({args.backend})",
                "sll ops": train_step.sll_op_count(variants["linearized"]),
                "params MiB": params_mib,
                "hard MiB": peaks["hard"], "STE MiB": peaks["STE"], "linearized MiB": peaks["linearized"],
                "lin/STE": peaks["linearized"] / peaks["STE"],
                "lin-STE MiB": peaks["linearized"] - peaks["STE"],
            }
            if rss is not None and backend == "eager":
                row.update({"RSS hard MiB": rss["hard"], "RSS STE MiB": rss["STE"],
                            "RSS linearized MiB": rss["linearized"],
                            "RSS lin/STE": rss["linearized"] / rss["STE"] if rss["STE"] > 0 else float("nan")})
            rows.append(row)

    print(head)
    columns = ["model", "batch", "backend", "sll ops", "params MiB", "hard MiB", "STE MiB", "linearized MiB",
               "lin/STE", "lin-STE MiB"]
    fmt = ["", "", "", "", ".2f", ".2f", ".2f", ".2f", ".3f", ".2f"]
    if any("RSS STE MiB" in r for r in rows):
        columns += ["RSS hard MiB", "RSS STE MiB", "RSS linearized MiB", "RSS lin/STE"]
        fmt += [".1f", ".1f", ".1f", ".3f"]
    bc.print_table(rows, columns, fmt)
    print(f"{bc.load_average()} at the end")
    return rows


if __name__ == "__main__":
    main()

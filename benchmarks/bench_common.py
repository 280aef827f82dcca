"""Shared helpers of the benchmarks: the header line, interleaved timing, paired ratios, tables.

The method is ``ops.py``'s: after a warm-up, the methods being compared are run
round-robin within each repeat (so a slow spell of the machine hits all of them alike),
the median over the repeats is reported, and a ratio is the median of the per-repeat
ratios of two methods timed in the same round.  A target's verdict (:func:`verdict`) is
"met", "missed" or "inconclusive" from the 95% confidence interval of that median (:func:`median_ci`).
"""

from __future__ import annotations

import contextlib
import gc
import math
import os
import platform
import random
import statistics
import subprocess
import time
from typing import Callable

import torch
from tabulate import tabulate


def load_average() -> str:
    if not hasattr(os, "getloadavg"):
        return "load average n/a"
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} {five:.2f} {fifteen:.2f}"


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def source_state() -> str:
    """``git <short hash>`` of the checkout, ``+dirty`` when sll_fx/ or passes/ have uncommitted changes."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        head = subprocess.run(["git", "-C", root, "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", root, "status", "--porcelain", "--", "sll_fx", "passes"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "git n/a"
    return f"git {head}{'+dirty' if dirty else ''}" if head else "git n/a"


def header(title: str, details: str) -> str:
    """One line: what was measured, torch version, threads, CPU, allocator settings, source state, and
    the load average now."""
    return (f"{title}: torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs "
            f"({cpu_name()}){allocator_settings()}, sll_fx {source_state()}, {details}; {load_average()}")


def allocator_settings() -> str:
    """``", NAME=value, ..."`` for the environment variables that change how CPU memory is allocated, or "".

    Eager CPU timings here depend on page faults (README, "Performance"): ``THP_MEM_ALLOC_ENABLE=1``
    (PyTorch's allocator asks for 2 MiB pages for large tensors), glibc's ``GLIBC_TUNABLES`` and
    ``MALLOC_*`` variables, and a preloaded allocator (``LD_PRELOAD``) all change them, so a table
    says which were set.
    """
    names = ["THP_MEM_ALLOC_ENABLE", "GLIBC_TUNABLES", "LD_PRELOAD"]
    names += sorted(n for n in os.environ if n.startswith("MALLOC_"))
    shown = [f"{n}={os.environ[n]}" for n in names if os.environ.get(n, "") not in ("", "0")]
    return "".join(", " + s for s in shown)


class Contention:
    """CPU used by *other* processes (and stolen by the hypervisor) while the timed parts ran.

    Linux only (``/proc/stat``); elsewhere it reports nothing.  Use as a context manager around
    each timed part (several parts add up); :meth:`summary` gives the average number of cores
    that other processes kept busy during them.  On 2 cores, a benchmark that runs 2 threads
    is badly distorted by anything else running (a parallel region waits for a descheduled
    thread for a whole scheduler slice), so every table prints this next to the load average.
    """

    def __init__(self):
        self.wall = self.others = self.steal = 0.0
        self.available = False
        self._start = None

    @staticmethod
    def _stat():
        try:
            with open("/proc/stat") as f:
                fields = [int(v) for v in f.readline().split()[1:]]
        except (OSError, ValueError):
            return None
        hz = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
        steal = fields[7] if len(fields) > 7 else 0
        busy = sum(fields[:8]) - idle - steal
        return busy / hz, steal / hz

    def __enter__(self):
        t = os.times()
        self._start = (time.perf_counter(), self._stat(), t.user + t.system)
        self.available = self._start[1] is not None
        return self

    def __exit__(self, *exc):
        wall0, stat0, own0 = self._start
        stat1 = self._stat()
        t = os.times()
        self.wall += time.perf_counter() - wall0
        if stat0 is not None and stat1 is not None:
            self.others += max(0.0, (stat1[0] - stat0[0]) - (t.user + t.system - own0))
            self.steal += stat1[1] - stat0[1]
        return False

    def add(self, other: "Contention") -> None:
        self.wall += other.wall
        self.others += other.others
        self.steal += other.steal
        self.available = self.available or other.available

    def cores(self) -> float:
        return self.others / self.wall if self.wall > 0 and self.available else float("nan")

    def summary(self) -> str:
        if self.wall <= 0 or not self.available:
            return "other processes' CPU during timing: n/a"
        return (f"other processes kept {self.cores():.2f} cores busy during the timed parts "
                f"({self.wall:.0f} s; hypervisor steal {self.steal / self.wall:.2f} cores)")


def timed(fn: Callable[[], object], inner: int = 1) -> Callable[[], float]:
    """A method for :func:`interleaved`: runs ``fn`` ``inner`` times, returns milliseconds per call."""
    def run() -> float:
        start = time.perf_counter()
        for _ in range(inner):
            fn()
        return 1e3 * (time.perf_counter() - start) / inner
    return run


def fwd_bwd(f, x, g, t=None, fwd_ms: list | None = None, inner: int = 1) -> Callable[[], float]:
    """A per-op method for :func:`interleaved`: ``inner`` forward+backward runs of ``f(x)`` with gradient ``g``,
    in milliseconds per run (several runs per sample even out the scheduler's millisecond jitter on short
    runs).  It frees its own output and gradients (``x``'s, and ``t``'s when given) inside the timed region,
    so no method pays for freeing another's buffers; ``fwd_ms``, when given, receives the forward's share of
    each sample (per run)."""
    def run():
        fwd = 0.0
        start = time.perf_counter()
        for _ in range(inner):
            begin = time.perf_counter()
            x.grad = None
            if t is not None:
                t.grad = None
            y = f(x)
            fwd += time.perf_counter() - begin
            y.backward(g)
            del y
            x.grad = None
            if t is not None:
                t.grad = None
        if fwd_ms is not None:
            fwd_ms.append(1e3 * fwd / inner)
        return 1e3 * (time.perf_counter() - start) / inner
    return run


def fwd(f, x, inner: int = 1) -> Callable[[], float]:
    """A per-op method for :func:`interleaved`: ``inner`` forwards of ``f(x)`` under ``no_grad``, in
    milliseconds per forward."""
    def run():
        start = time.perf_counter()
        with torch.no_grad():
            for _ in range(inner):
                y = f(x)
                del y
        return 1e3 * (time.perf_counter() - start) / inner
    return run


def per_op_inputs(args) -> tuple[torch.Tensor, torch.Tensor]:
    """The per-op benchmarks' set-up (``ops.py``, ``compiled_ops.py``): ``args.threads`` (when given) and
    ``args.seed`` applied; returns ``x`` (``2**args.size_log2`` elements, N(0, 4), requiring grad) and
    the gradient ``g`` fed to its backward."""
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    n = 2 ** args.size_log2
    return (torch.randn(n) * 2).requires_grad_(True), torch.randn(n)


def interleaved(methods: dict[str, Callable[[], float]], repeats: int, warmup: int = 1,
                collect: bool = False, freeze: bool = False) -> dict[str, list[float]]:
    """Milliseconds per method for each repeat; within a repeat the methods run round-robin.

    Each repeat runs the methods in a fresh random order (seeded, so the same on every run), so
    that no method always runs first or always follows the same one: what a method leaves
    behind (allocator state, the last-level cache holding its tensors) then biases no
    comparison.  (A rotation, starting one method later in each repeat, would keep each method
    behind the same predecessor in all but one of its runs.)  Each method is a callable returning its own time in ms
    (see :func:`timed`), so a method can keep set-up (or freeing) out of or inside its timed
    region as it needs.  With ``collect`` the garbage collector runs, untimed, before each method;
    with ``freeze`` too, the objects alive then move to the permanent generation (``gc.freeze``)
    for the method's call, so a collection it triggers walks only what the call allocated, not the
    benchmark's own models (the heap's size otherwise makes each full collection slower).
    """
    for _ in range(warmup):
        for run in methods.values():
            run()
    names = list(methods)
    samples: dict[str, list[float]] = {name: [] for name in names}
    rng = random.Random(0)  # (a private generator: the global one stays untouched)
    for _ in range(repeats):
        for name in rng.sample(names, len(names)):
            if collect or freeze:
                gc.collect()
            if freeze:
                gc.freeze()
            try:
                samples[name].append(methods[name]())
            finally:
                if freeze:
                    gc.unfreeze()
    return samples


def interleaved_quiet(methods: dict[str, Callable[[], float]], repeats: int, warmup: int = 1,
                      collect: bool = False, total: Contention | None = None, tries: int = 3,
                      freeze: bool = False,
                      max_others: float = 0.25, pause: float = 15.0,
                      on_result: Callable[[], object] | None = None) -> tuple[dict[str, list[float]], float]:
    """:func:`interleaved`, retried (up to ``tries`` times, ``pause`` seconds apart) while other processes
    kept more than ``max_others`` cores busy during it; returns the least disturbed attempt's samples
    and the cores others used during it.  ``total`` (optional) accumulates every attempt.
    ``on_result`` (optional) is called after each attempt's timing; its results come back as a third
    element, the kept attempt's."""
    best = None
    for attempt in range(tries):
        mon = Contention()
        with mon:
            samples = interleaved(methods, repeats, warmup if attempt == 0 else 0, collect, freeze)
        if on_result is not None:
            samples = (samples, on_result())
        if total is not None:
            total.add(mon)
        others = mon.cores() if mon.available else 0.0
        if best is None or others < best[1]:
            best = (samples, others)
        if others <= max_others:
            break
        if attempt + 1 < tries:
            time.sleep(pause)
    if on_result is not None:
        (samples, extra), others = best
        return samples, others, extra
    return best


def median(values) -> float:
    return statistics.median(values)


def paired_ratio(num: list[float], den: list[float]) -> float:
    """Median over the repeats of ``num[i] / den[i]``: both were timed in the same round-robin pass."""
    return statistics.median(a / b for a, b in zip(num, den))


def ratio_quartiles(num: list[float], den: list[float]) -> tuple[float, float]:
    """25th and 75th percentiles of the per-repeat ratios (the spread the median comes from)."""
    r = sorted(a / b for a, b in zip(num, den))
    if len(r) == 1:
        return r[0], r[0]
    q = statistics.quantiles(r, n=4, method="inclusive")
    return q[0], q[2]


def median_ci(values: list[float], level: float = 0.95) -> tuple[float, float, float]:
    """A distribution-free confidence interval for the median of ``values``: ``(lo, hi, coverage)``.

    The interval runs from the ``k``-th smallest to the ``k``-th largest value, with ``k`` the largest
    for which the binomial(n, 1/2) chance of fewer than ``k`` values below the median is at most
    ``(1 - level) / 2`` on each side (the sign test's interval; it assumes only independent repeats).
    ``coverage`` is the interval's exact confidence; with few values the whole range is the best one
    can say (5 values: min to max, 93.75%)."""
    r = sorted(values)
    n = len(r)
    tail = [math.comb(n, i) / 2 ** n for i in range(n + 1)]  # P(exactly i of n below the median)
    k, below = 1, tail[0]  # below: P(fewer than k values below the median)
    while k < n and below + tail[k] <= (1 - level) / 2 and k + 1 <= n - k:
        below += tail[k]
        k += 1
    return r[k - 1], r[n - k], 1 - 2 * below


def verdict(ratios: list[float], limit: float, level: float = 0.95) -> str:
    """``"met"`` when the median ratio's confidence interval (:func:`median_ci`) lies at or under ``limit``,
    ``"missed"`` when it lies above, else ``"inconclusive"``: one run's median alone says on which side of
    a limit a ratio falls only when the run's noise keeps the interval on that side."""
    lo, hi, _ = median_ci(ratios, level)
    return "met" if hi <= limit else "missed" if lo > limit else "inconclusive"


def ratio_ci(num: list[float], den: list[float], level: float = 0.95) -> str:
    """The per-repeat ratios' :func:`median_ci`, as text: ``"lo-hi"``."""
    lo, hi, _ = median_ci([a / b for a, b in zip(num, den)], level)
    return f"{lo:.2f}-{hi:.2f}"


def print_table(rows: list[dict], columns: list[str], fmt: list[str]) -> str:
    table = tabulate([[r.get(c, "") for c in columns] for r in rows], headers=columns, floatfmt=fmt,
                     missingval="", disable_numparse=False)
    print(table)
    return table


@contextlib.contextmanager
def no_compile_caches():
    """Inductor's FX-graph cache and AOT autograd's cache off (every compile generates its kernels, and
    ``compile s`` is a fresh compile's time, but for the C++ build of a kernel inductor built before, which its
    on-disk code cache keeps: at most a few tenths of a second); dynamo's recompile limit raised (many compiled
    functions share one lambda's code object)."""
    with contextlib.ExitStack() as stack:
        import torch._dynamo.config as dynamo_config
        import torch._inductor.config as inductor_config
        stack.enter_context(inductor_config.patch(fx_graph_cache=False))
        for name in ("recompile_limit", "cache_size_limit"):
            if hasattr(dynamo_config, name):
                stack.enter_context(dynamo_config.patch(**{name: 256}))
                break
        try:
            import torch._functorch.config as functorch_config
            if hasattr(functorch_config, "enable_autograd_cache"):
                stack.enter_context(functorch_config.patch(enable_autograd_cache=False))
        except ImportError:  # pragma: no cover
            pass
        yield

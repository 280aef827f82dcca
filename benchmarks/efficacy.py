"""Does it train? Test accuracy of hard-op models trained with sll_fx against STE, sigmoid and no estimator.

Data: scikit-learn's bundled ``load_digits`` (1797 real 8x8 handwritten digits, no download),
standardized with the training statistics, one fixed split (1347 train / 450 test, fixed
permutation). Every model is written with plain hard ops (``torch.sign``, ``torch.round``,
``(h > t).float()``, a top-k mask, a spiking threshold); nothing in them calls sll_fx.

Tasks (chance: 10% on digits):

- ``sign``: 64 -> 128 -> sign -> 10 (binary activations);
- ``round 2-bit`` / ``round 4-bit``: 64 -> 128 -> round(clamp(h, 0, 1) * L) / L -> 10, L = 3 / 15;
- ``gate``: ``head(val(x) * (gate(x) > t).float())``, a learnable threshold ``t`` per unit;
- ``lif``: an unrolled leaky integrate-and-fire layer (4 steps, ``s = (v > 1).float()``,
  soft reset), the head reads the spike counts;
- ``topk``: 64 -> 128 -> the k-hot mask of the 16 largest units -> 10 (a sparse binary code);
- ``knapsack``: 64 fixed instances of 20 items (integer weights and values in 1..20,
  capacity half the total weight); per-item logits ``theta``, selection ``(theta > 0).float()``,
  loss ``-value / optimum + 5 * overflow / capacity``. Score: value of the hard selection over
  the exact dynamic-programming optimum, an infeasible selection scoring 0; the number of
  instances over capacity is a separate row.

Methods (evaluation is always with ``sll_fx.export_hard`` of the trained model):

- ``hard``: the model trained as written (no estimator: only what is not behind a jump learns);
- ``ste``: ``linearize_module(model, eps=None, method="ste")`` (hard forward, straight-through backward);
- ``sigmoid``: ``linearize_module(model, eps=0.1, method="sigmoid")`` (hard forward, backward the
  slope of a sigmoid of temperature 0.1 in the op's input units);
- ``sll eps=...``: ``sll_fx.linearize_module(model, eps)`` (default mode ``linear``);
- ``sll auto``: ``linearize_module(model, eps="auto")``: its defaults (calibrated eps, default
  ``target``, ``linear`` mode), where the installed sll_fx has it;
- ``sll auto hard``: the same in ``mode="hard"`` (forward exactly hard, backward SLL's boxcar);
- ``fp``: a full-precision reference (the discrete op replaced by its continuous counterpart:
  tanh, clamp without round, a sigmoid gate, ReLU), where one exists;
- ``ste hand`` / ``sigmoid relax``: cross-checks written here, by swapping the targets of the
  linearized graph's sll nodes: forward hard and backward identity (``-grad`` to a threshold),
  and the sigmoid relaxation (forward and backward ``sigmoid(d / 0.1)``, as in the seed's table).

Where the installed sll_fx has no ``method=`` (or refuses it, as for top-k masks: marked ``*``),
``ste`` and ``sigmoid`` are those hand-written functions (``--hand-baselines`` forces that).

    python benchmarks/efficacy.py                   # 7 tasks x 12 methods x 3 seeds, table + plot
    python benchmarks/efficacy.py --fast --no-plot  # CI: 1 seed of sign and gate
    python benchmarks/efficacy.py --tasks sign,lif --seeds 5 --epochs 40

``main(argv)`` returns the rows (one per task, plus knapsack violations): ``task``, then per
method ``"<method>"`` (mean, in %), ``"<method> std"`` and ``"<method> runs"`` (the per-seed values).
Needs scikit-learn (the ``bench`` extra); the plot needs matplotlib.
"""

from __future__ import annotations

import argparse
import copy
import inspect
import statistics
import sys
import time
from pathlib import Path

import torch
from tabulate import tabulate
from torch import fx, nn

import sll_fx
from sll_fx.ops import hard_compare, hard_topk_mask, is_sll_target

SLL_EPS = (0.01, 0.05, 0.1, 0.25)
SIGMOID_T = 0.1                      # temperature of the sigmoid relaxation, in the op's input units
TASKS = ("sign", "round 2-bit", "round 4-bit", "gate", "lif", "topk", "knapsack")
FAST_TASKS = ("sign", "gate")
N_TRAIN, N_TEST = 1347, 450
SPLIT_SEED = 0
HIDDEN = 128


HAND = ("ste hand", "sigmoid relax")   # the hand-written cross-checks (only where method= exists)
AUTO = ("sll auto", "sll auto hard")   # eps="auto" in linear (linearize_module's defaults) and hard mode


def methods() -> list[str]:
    hand = list(HAND) if has_method_arg() else []
    return ["hard", "ste", "sigmoid", *(f"sll {e:g}" for e in SLL_EPS), *AUTO, "fp", *hand]


# --- capabilities of the installed sll_fx ----------------------------------------------

def _linearize_params() -> dict:
    return dict(inspect.signature(sll_fx.linearize_module).parameters)


def has_method_arg() -> bool:
    return "method" in _linearize_params()


def has_auto_eps() -> bool:
    """``eps="auto"`` accepted? Probed on a one-op model (the signature alone cannot tell)."""
    class _One(nn.Module):
        def forward(self, x):
            return torch.sign(x)
    try:
        sll_fx.linearize_module(_One(), eps="auto", verbose=False)
        return True
    except Exception:  # noqa: BLE001  (TypeError, ValueError, EpsError: not available)
        return False


# --- data ------------------------------------------------------------------------------

def load_data():
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.data, dtype=torch.float32)
    y = torch.tensor(d.target, dtype=torch.long)
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(SPLIT_SEED))
    tr, te = perm[:N_TRAIN], perm[N_TRAIN:N_TRAIN + N_TEST]
    mu, sd = x[tr].mean(0), x[tr].std(0).clamp_min(1e-3)   # constant pixels: sd 0 -> no blow-up
    return (x[tr] - mu) / sd, y[tr], (x[te] - mu) / sd, y[te]


# --- models (plain hard ops; fp=True gives the full-precision reference) ----------------

class SignMLP(nn.Module):
    def __init__(self, fp=False):
        super().__init__()
        self.fp = fp
        self.enc, self.head = nn.Linear(64, HIDDEN), nn.Linear(HIDDEN, 10)

    def forward(self, x):
        h = self.enc(x)
        return self.head(torch.tanh(h) if self.fp else torch.sign(h))


class QuantMLP(nn.Module):
    def __init__(self, bits, fp=False):
        super().__init__()
        self.fp, self.levels = fp, 2 ** bits - 1
        self.enc, self.head = nn.Linear(64, HIDDEN), nn.Linear(HIDDEN, 10)

    def forward(self, x):
        a = self.enc(x).clamp(0, 1)
        return self.head(a if self.fp else torch.round(a * self.levels) / self.levels)


class GateMLP(nn.Module):
    def __init__(self, fp=False):
        super().__init__()
        self.fp = fp
        self.val, self.gate, self.head = nn.Linear(64, HIDDEN), nn.Linear(64, HIDDEN), nn.Linear(HIDDEN, 10)
        self.t = nn.Parameter(torch.zeros(HIDDEN))

    def forward(self, x):
        g = self.gate(x)
        g = torch.sigmoid(g - self.t) if self.fp else (g > self.t).float()
        return self.head(self.val(x) * g)


class LIFNet(nn.Module):
    steps, beta = 4, 0.8

    def __init__(self):
        super().__init__()
        self.enc, self.head = nn.Linear(64, HIDDEN), nn.Linear(HIDDEN, 10)

    def forward(self, x):
        cur = self.enc(x)
        v = torch.zeros_like(cur)
        count = torch.zeros_like(cur)
        for _ in range(self.steps):                 # unrolled by torch.fx
            v = self.beta * v + cur
            s = (v > 1.0).float()
            v = v - s                                # soft reset
            count = count + s
        return self.head(count / self.steps)


class TopKNet(nn.Module):
    k = 16

    def __init__(self, fp=False):
        super().__init__()
        self.fp = fp
        self.enc, self.head = nn.Linear(64, HIDDEN), nn.Linear(HIDDEN, 10)

    def forward(self, x):
        h = self.enc(x)
        if self.fp:
            return self.head(torch.relu(h))
        mask = torch.zeros_like(h).scatter(-1, torch.topk(h, self.k, dim=-1).indices, 1.0)
        return self.head(mask)


class Knapsack(nn.Module):
    """Per-item selection logits for a batch of fixed instances; forward returns the selection."""

    def __init__(self, n_inst, n_items):
        super().__init__()
        self.theta = nn.Parameter(0.1 * torch.randn(n_inst, n_items))

    def forward(self, dummy):
        return (self.theta > 0).float() + 0 * dummy


def build(task: str, fp: bool):
    if task == "sign":
        return SignMLP(fp)
    if task.startswith("round"):
        return QuantMLP(int(task.split()[1].split("-")[0]), fp)
    if task == "gate":
        return GateMLP(fp)
    if task == "lif":
        return None if fp else LIFNet()
    if task == "topk":
        return TopKNet(fp)
    raise ValueError(task)


# --- hand-written baselines: swap each sll node of the linearized graph ----------------

def _topk_tau(x, k, dim, largest):
    v = torch.topk(x, k + 1, dim=dim, largest=largest).values
    return (v.narrow(dim, k - 1, 1) + v.narrow(dim, k, 1)) / 2


def _cmp_sign(cmp):
    return 1.0 if cmp in ("gt", "ge", ">", ">=") else -1.0


def _baseline(kind: str, method: str):
    """``fn(*args, **kwargs)`` with the sll op's arguments (eps and mode ignored)."""
    ste = method == "ste"
    T = SIGMOID_T

    def sign(x, **_):
        return torch.sign(x).detach() + x - x.detach() if ste else torch.tanh(x / (2 * T))

    def round_(x, decimals=0, **_):
        s = 10.0 ** decimals
        if ste:
            return torch.round(x, decimals=decimals).detach() + x - x.detach()
        z = x * s
        f = torch.floor(z).detach()
        return (f + torch.sigmoid((z - f - 0.5) / T)) / s

    def compare(x, threshold, cmp, **_):
        d = _cmp_sign(cmp) * (x - threshold)
        if ste:
            hard = hard_compare(x, threshold, cmp).to(x.dtype)
            return hard.detach() + d - d.detach()
        return torch.sigmoid(d / T)

    def topk_mask(x, k, dim, largest=True, **_):
        if ste:
            hard = hard_topk_mask(x, k, dim, largest).to(x.dtype)
            return hard.detach() + x - x.detach()
        d = (x - _topk_tau(x, k, dim, largest)) * (1.0 if largest else -1.0)
        return torch.sigmoid(d / T)

    fns = {"sign": sign, "round": round_, "compare": compare, "topk_mask": topk_mask}
    if kind not in fns:
        raise NotImplementedError(f"no hand-written {method} baseline for sll.{kind}")
    return fns[kind]


def hand_baseline(gm: fx.GraphModule, method: str) -> fx.GraphModule:
    """A copy of ``gm`` (sharing its parameters) whose sll nodes compute ``method`` instead."""
    graph = copy.deepcopy(gm.graph)
    for node in graph.nodes:
        if node.op == "call_function" and is_sll_target(node.target):
            name = getattr(node.target, "_qualified_op_name", None) or node.target.name()
            kind = name.split("::")[-1].split(".")[0]
            node.target = _baseline(kind, method)
            node.kwargs = {k: v for k, v in node.kwargs.items() if k not in ("eps", "mode")}
    out = fx.GraphModule(gm, graph)
    out.recompile()
    return out


FALLBACKS: set = set()   # (task, method) where method= refused the model and the hand-written one ran


def prepare(model: nn.Module, method: str, hand: bool, task: str = ""):
    """(module to train, module whose export_hard is evaluated)."""
    if method in ("hard", "fp"):
        return model, model
    if method in ("ste", "sigmoid") and not hand and has_method_arg():
        try:
            gm = sll_fx.linearize_module(model, eps=SIGMOID_T if method == "sigmoid" else None, method=method,
                                         verbose=False)
            return gm, gm
        except ValueError as e:             # e.g. top-k masks: "supports only method='sll'"
            if "supports only" not in str(e):
                raise
            FALLBACKS.add((task, method))
    if method in ("ste", "sigmoid", *HAND):
        gm = sll_fx.linearize_module(model, eps=0.25, verbose=False)
        return hand_baseline(gm, "ste" if method.startswith("ste") else "sigmoid"), gm
    if method == "sll auto":           # linearize_module's defaults (eps="auto" where it has it)
        gm = sll_fx.linearize_module(model, eps="auto", verbose=False)
    elif method == "sll auto hard":
        gm = sll_fx.linearize_module(model, eps="auto", mode="hard", verbose=False)
    else:
        gm = sll_fx.linearize_module(model, eps=float(method.split()[1]), verbose=False)
    return gm, gm


# --- training and scoring --------------------------------------------------------------

def train_classifier(module, x, y, epochs, seed, lr=1e-2, batch=64):
    opt = torch.optim.Adam(module.parameters(), lr=lr)
    g = torch.Generator().manual_seed(1000 + seed)
    for _ in range(epochs):
        perm = torch.randperm(len(x), generator=g)
        for i in range(0, len(x), batch):
            idx = perm[i:i + batch]
            loss = nn.functional.cross_entropy(module(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()


def accuracy(module, x, y) -> float:
    with torch.no_grad():
        return 100.0 * (module(x).argmax(-1) == y).float().mean().item()


def knapsack_instances(n_inst=64, n_items=20, seed=12345):
    g = torch.Generator().manual_seed(seed)
    w = torch.randint(1, 21, (n_inst, n_items), generator=g)
    v = torch.randint(1, 21, (n_inst, n_items), generator=g)
    cap = w.sum(1) // 2
    opt = torch.tensor([knapsack_dp(w[i].tolist(), v[i].tolist(), int(cap[i])) for i in range(n_inst)])
    return w.float(), v.float(), cap.float(), opt.float()


def knapsack_dp(w, v, cap) -> int:
    best = [0] * (cap + 1)
    for wi, vi in zip(w, v):
        for c in range(cap, wi - 1, -1):
            best[c] = max(best[c], best[c - wi] + vi)
    return best[cap]


def run_knapsack(method, seed, steps, hand, inst):
    w, v, cap, opt = inst
    torch.manual_seed(seed)
    model = Knapsack(*w.shape)
    train_m, eval_m = prepare(model, method, hand, "knapsack")
    adam = torch.optim.Adam(train_m.parameters(), lr=0.05)
    dummy = torch.zeros(())
    for _ in range(steps):
        s = train_m(dummy)
        loss = (-(s * v).sum(1) / opt + 5.0 * torch.relu((s * w).sum(1) - cap) / cap).mean()
        if not loss.requires_grad:          # "hard": no gradient reaches theta at all
            break
        adam.zero_grad()
        loss.backward()
        adam.step()
    with torch.no_grad():
        s = sll_fx.export_hard(eval_m, verbose=False)(dummy)
    value, weight = (s * v).sum(1), (s * w).sum(1)
    feasible = weight <= cap
    score = 100.0 * torch.where(feasible, value / opt, torch.zeros_like(value)).mean().item()
    return score, int((~feasible).sum())


def run_one(task, method, seed, data, args, inst):
    """Score of one (task, method, seed); None where the method does not apply."""
    if task == "knapsack":
        return None if method == "fp" else run_knapsack(method, seed, args.knapsack_steps, args.hand_baselines, inst)
    torch.manual_seed(seed)
    model = build(task, fp=method == "fp")
    if model is None:
        return None
    train_m, eval_m = prepare(model, method, args.hand_baselines, task)
    xtr, ytr, xte, yte = data
    train_classifier(train_m, xtr, ytr, args.epochs, seed)
    hard = sll_fx.export_hard(eval_m, verbose=False)
    return accuracy(hard, xte, yte), None


# --- progress, table, plot -------------------------------------------------------------

class Progress:
    def __init__(self, total, enabled=True, width=30):
        self.total, self.done, self.width, self.t0 = total, 0, width, time.perf_counter()
        self.enabled = enabled

    def step(self, label):
        self.done += 1
        if not self.enabled:
            return
        frac = self.done / self.total
        el = time.perf_counter() - self.t0
        eta = el / frac - el
        bar = "#" * int(frac * self.width) + "-" * (self.width - int(frac * self.width))
        sys.stderr.write(f"\r[{bar}] {self.done}/{self.total} {el:5.0f}s eta {eta:4.0f}s  {label[:40]:<40}")
        sys.stderr.flush()
        if self.done == self.total:
            sys.stderr.write("\n")


def fmt(vals):
    if not vals:
        return "–"
    m = statistics.fmean(vals)
    sd = statistics.stdev(vals) if len(vals) > 1 else 0.0
    return f"{m:.1f} ± {sd:.1f}"


def plot(rows, path, meths):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: no plot (pip install -e '.[bench]')")
        return None
    rows = [r for r in rows if not r["task"].endswith("violations")]
    n = len(rows)
    cols = min(4, n)
    fig, axes = plt.subplots((n + cols - 1) // cols, cols, figsize=(4 * cols, 3.2 * ((n + cols - 1) // cols)),
                             squeeze=False)
    styles = {"hard": ("k", ":"), "ste": ("tab:red", "--"), "sigmoid": ("tab:orange", "--"),
              "sll auto": ("tab:green", "-."), "sll auto hard": ("tab:purple", "-."), "fp": ("tab:gray", "-")}
    for ax, r in zip(axes.flat, rows):
        sll = [m for m in meths if m.startswith("sll ") and m not in AUTO]
        xs = [float(m.split()[1]) for m in sll if r[m] is not None]
        ax.errorbar(xs, [r[m] for m in sll if r[m] is not None], yerr=[r[f"{m} std"] for m in sll if r[m] is not None],
                    marker="o", color="tab:blue", label="sll (eps)", capsize=3)
        for m, (c, ls) in styles.items():
            if m in r and r[m] is not None:
                ax.axhline(r[m], color=c, ls=ls, lw=1, label=m)
        ax.set_xscale("log")
        ax.set_xticks(list(SLL_EPS), [f"{e:g}" for e in SLL_EPS])
        ax.set_title(r["task"])
        ax.set_xlabel("eps")
        ax.set_ylabel("score (%)" if r["task"] == "knapsack" else "test accuracy (%)")
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    print(f"plot: {path}")
    return path


# --- main --------------------------------------------------------------------------------

def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--fast", action="store_true", help="CI: 1 seed of sign and gate")
    p.add_argument("--seeds", type=int, default=None, help="number of seeds (default 3; 1 with --fast)")
    p.add_argument("--tasks", type=str, default=None, help=f"comma-separated subset of {','.join(TASKS)}")
    p.add_argument("--methods", type=str, default=None, help="comma-separated subset of the methods")
    p.add_argument("--epochs", type=int, default=15)
    p.add_argument("--knapsack-steps", type=int, default=300)
    p.add_argument("--hand-baselines", action="store_true",
                   help="use the hand-written ste/sigmoid even where linearize_module has method=")
    p.add_argument("--plot", type=str, default=str(Path(__file__).with_name("efficacy.png")))
    p.add_argument("--no-plot", action="store_true")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args(argv)
    args.seeds = args.seeds or (1 if args.fast else 3)
    args.tasks = args.tasks.split(",") if args.tasks else list(FAST_TASKS if args.fast else TASKS)
    unknown = [t for t in args.tasks if t not in TASKS]
    if unknown:
        p.error(f"unknown tasks {unknown}; choose from {TASKS}")
    args.methods = args.methods.split(",") if args.methods else methods()
    return args


def main(argv=None) -> list[dict]:
    args = parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    data = load_data()
    inst = knapsack_instances() if "knapsack" in args.tasks else None
    auto = has_auto_eps()
    meths = [m for m in args.methods if m not in AUTO or auto]
    baselines = "hand-written" if args.hand_baselines or not has_method_arg() else "linearize_module(method=...)"

    results = {(t, m): [] for t in args.tasks for m in args.methods}
    violations = {m: [] for m in args.methods}
    prog = Progress(len(args.tasks) * len(meths) * args.seeds, enabled=not args.no_progress)
    for task in args.tasks:
        for m in meths:
            for seed in range(args.seeds):
                out = run_one(task, m, seed, data, args, inst)
                if out is not None:
                    results[task, m].append(out[0])
                    if out[1] is not None:
                        violations[m].append(out[1])
                prog.step(f"{task} / {m} / seed {seed}")

    rows = []
    for task in args.tasks:
        row = {"task": task}
        for m in args.methods:
            vals = results[task, m]
            row[m] = statistics.fmean(vals) if vals else None
            row[f"{m} std"] = (statistics.stdev(vals) if len(vals) > 1 else 0.0) if vals else None
            row[f"{m} runs"] = vals
        rows.append(row)
    if "knapsack" in args.tasks:
        row = {"task": "knapsack violations"}
        for m in args.methods:
            vals = [float(v) for v in violations[m]]
            row[m] = statistics.fmean(vals) if vals else None
            row[f"{m} std"] = (statistics.stdev(vals) if len(vals) > 1 else 0.0) if vals else None
            row[f"{m} runs"] = vals
        rows.append(row)
    wall = time.perf_counter() - t0

    table = []
    for r in rows:
        line = [r["task"]]
        for m in args.methods:
            if m in AUTO and not auto:
                line.append("n/a")
            else:
                base = r["task"].replace(" violations", "")
                line.append(fmt(r[f"{m} runs"]) + (" *" if (base, m) in FALLBACKS else ""))
        table.append(line)
    print(f"sll_fx efficacy on sklearn digits ({N_TRAIN} train / {N_TEST} test, chance 10%): hard-exported test "
          f"accuracy in %, mean ± std over {args.seeds} seed(s); {args.epochs} epochs of Adam; knapsack: % of the "
          f"DP optimum (infeasible = 0), {args.knapsack_steps} steps; ste/sigmoid: {baselines}; "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads; {wall:.0f} s")
    print(tabulate(table, headers=["task", *args.methods], tablefmt="github"))
    if FALLBACKS:
        tasks = sorted({t for t, _ in FALLBACKS})
        print(f"* linearize_module(method=...) refused {', '.join(tasks)} (selections support only method='sll'): "
              f"the hand-written baseline ran instead")
    if not auto and any(m in AUTO for m in args.methods):
        print('sll auto: not available (this sll_fx has no eps="auto")')
    if not args.no_plot:
        plot(rows, args.plot, args.methods)
    return rows


if __name__ == "__main__":
    main()

"""Each benchmark runs end to end in its --quick mode and returns rows (no timing is asserted).

Quick modes use tiny sizes and 1-2 repeats; where a benchmark compiles, quick mode uses the
``aot_eager`` backend (dynamo + AOT autograd, no inductor code generation), which keeps the
whole file well under a minute on 2 cores.
"""

import importlib.util
import math
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"


def _load(name: str):
    if str(BENCH) not in sys.path:
        sys.path.insert(0, str(BENCH))  # the scripts import bench_common / train_step as siblings
    spec = importlib.util.spec_from_file_location(f"bench_{name}_under_test", BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


VERDICTS = {"met", "missed", "inconclusive"}


def test_median_ci_and_verdict():
    """The sign test's interval for the median: from the k-th smallest to the k-th largest value, k from the
    binomial(n, 1/2) tails (for 9 values: the 2nd to the 8th, 96.1%; 5: the whole range, 93.75%)."""
    bc = _load("bench_common")
    assert bc.median_ci(list(range(9))) == (1, 7, pytest.approx(0.9609375))
    assert bc.median_ci([5, 1, 4, 2, 3]) == (1, 5, pytest.approx(0.9375))
    assert bc.median_ci(list(range(25)))[:2] == (7, 17)
    assert bc.median_ci(list(range(31)))[:2] == (9, 21)
    nine = [1.0, 1.01, 1.02, 1.03, 1.04, 1.05, 1.06, 1.07, 1.3]  # interval 1.01-1.07
    assert [bc.verdict(nine, limit) for limit in (1.1, 1.07, 1.05, 1.01, 1.0)] == [
        "met", "met", "inconclusive", "inconclusive", "missed"]
    assert bc.ratio_ci([2.0, 3.0, 4.0, 5.0, 6.0], [2.0] * 5) == "1.00-3.00"


def _finite(v) -> bool:
    return isinstance(v, (int, float)) and math.isfinite(v) and v > 0


def test_train_step_quick(capsys):
    rows = _load("train_step").main(["--quick"])
    assert {(r["model"], r["backend"].split(" ")[0]) for r in rows} == {
        ("mlp", "eager"), ("mlp", "compiled"), ("cnn", "eager"), ("cnn", "compiled")}
    for r in rows:
        assert r["sll ops"] == 3
        assert all(_finite(r[c]) for c in ("hard ms", "STE ms", "linearized ms", "lin/STE"))
        assert isinstance(r["met"], bool)
        assert r["verdict"] in VERDICTS
    assert "lin/STE" in capsys.readouterr().out


def test_compiled_ops_quick(capsys):
    rows = _load("compiled_ops").main(["--quick"])
    main = [r for r in rows if r.get("table") != "probe"]
    assert not [r for r in main if "error" in r], main
    assert {r["op"].split(" ")[0] for r in main} == {"sign", "threshold"}
    assert {r["mode"] for r in main} == {"linear", "hard"}
    assert all(_finite(r["sll ms"]) and _finite(r["sll/STE"]) for r in main)
    assert all(r["verdict"] in VERDICTS for r in main)
    assert [r for r in rows if r.get("table") == "probe"]
    assert "sll/STE" in capsys.readouterr().out


def test_inference_quick():
    rows = _load("inference").main(["--quick"])
    assert len(rows) == 4
    for r in rows:
        assert r["bit-identical"] is True
        traced, exported = map(int, r["nodes traced/exported"].split("/"))
        assert exported <= traced
        assert _finite(r["exported/original"])


def test_pass_scaling_quick():
    rows = _load("pass_scaling").main(["--quick"])
    assert [r["nodes"] < s for r, s in zip(rows, (150, 500))] == [True, True]
    for r in rows:
        assert r["sll ops"] > 0 and r["bit-identical"] is True
        assert _finite(r["trace ms"]) and _finite(r["linearize ms"]) and _finite(r["export ms"])
        assert r["verdict"] in VERDICTS


def test_memory_quick():
    memory = _load("memory")
    rows = memory.main(["--quick"])
    assert {r["model"] for r in rows} == {"mlp", "cnn"}
    for r in rows:
        assert all(r[c] > 0 for c in ("hard MiB", "STE MiB", "linearized MiB"))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc/self/status, clear_refs")
def test_memory_child_measures_peak_rss_in_process():
    r = _load("memory").child("mlp", "linearized", eps=0.1, mode="linear", quick=True, batch=None)
    assert r["rss before"] > 0 and r["peak rss"] > 0
    if r["reset"]:  # the high-water mark was reset before the measured step
        assert r["peak rss"] >= r["rss before"]


@pytest.mark.parametrize("name, value, shown", [
    ("THP_MEM_ALLOC_ENABLE", "1", True), ("THP_MEM_ALLOC_ENABLE", "0", False), ("THP_MEM_ALLOC_ENABLE", None, False),
    ("GLIBC_TUNABLES", "glibc.malloc.trim_threshold=4294967295", True), ("MALLOC_ARENA_MAX", "1", True)])
def test_header_names_the_allocator_settings(monkeypatch, name, value, shown):
    bc = _load("bench_common")
    for n in ("THP_MEM_ALLOC_ENABLE", "GLIBC_TUNABLES", "LD_PRELOAD", "MALLOC_ARENA_MAX"):
        monkeypatch.delenv(n, raising=False)
    if value is not None:
        monkeypatch.setenv(name, value)
    assert (f"{name}={value}" in bc.header("t", "d")) is shown
    assert bc.allocator_settings() == (f", {name}={value}" if shown else "")

"""The quickstart (``--steps 60``) and ``benchmarks/ops.py --quick`` run end to end (no timing is asserted)."""

import importlib.util
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def _load(rel: str):
    spec = importlib.util.spec_from_file_location(Path(rel).stem + "_under_test", ROOT / rel)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_quickstart_trains_and_exports_bit_identical(capsys):
    result = _load("examples/quickstart.py").main(["--steps", "60"])
    assert result["bit_identical"] is True
    first, last = sum(result["losses"][:6]) / 6, sum(result["losses"][-6:]) / 6
    assert last < first  # the loss falls
    assert result["rewrite"].counts == {"found": 3, "rewritten": 3, "hard": 0}
    assert result["strip"].counts == {"stripped": 3, "remaining": 0}
    out = capsys.readouterr().out
    assert "sll.compare(gt)" in out and "0 sll op(s) remain" in out


def test_ops_benchmark_quick_mode_runs_every_op_in_both_modes():
    rows = _load("benchmarks/ops.py").main(["--quick"])
    ops = {r["op"] for r in rows}
    assert {"sign", "round", "floor", "ceil", "trunc", "heaviside"} <= {o.split("(")[0].split(" ")[0] for o in ops}
    assert {r["mode"] for r in rows} == {"linear", "hard"}
    assert all(r["sll ms"] > 0 and torch.isfinite(torch.tensor(r["sll/STE"])) for r in rows)

"""benchmarks/efficacy.py --fast runs end to end and returns finite scores (no accuracy is asserted).

Needs scikit-learn (the ``bench`` extra: its bundled digits data); skipped without it.
"""

import importlib.util
import math
import sys
from pathlib import Path

import pytest

pytest.importorskip("sklearn")

ROOT = Path(__file__).resolve().parents[1]


def _load():
    spec = importlib.util.spec_from_file_location("bench_efficacy_under_test", ROOT / "benchmarks" / "efficacy.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_efficacy_fast_mode():
    efficacy = _load()
    rows = efficacy.main(["--fast", "--no-plot", "--no-progress"])
    assert [r["task"] for r in rows] == list(efficacy.FAST_TASKS)
    for row in rows:
        for method in efficacy.methods():
            if method in efficacy.AUTO and not efficacy.has_auto_eps():
                continue
            vals = row[f"{method} runs"]
            assert len(vals) == 1, (row["task"], method)
            assert all(math.isfinite(v) and 0.0 <= v <= 100.0 for v in vals), (row["task"], method, vals)
        assert row["sll 0.25"] > 10.0   # above chance (10%) on digits; a collapse would sit near it

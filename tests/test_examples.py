"""Every example in examples/ runs end to end in its fast mode: it trains (the loss falls),
exports a hard model bit-identical to the original, and reports the discrete nodes we expect."""

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"

# example -> (rewrite counts, strip counts, a line the example prints)
EXPECTED = {
    "qat": ({"found": 2, "rewritten": 2, "hard": 0}, 2, "sll.round"),
    "knapsack": ({"found": 1, "rewritten": 1, "hard": 0}, 1, "sll.compare(gt)"),
    "controller": ({"found": 1, "rewritten": 1, "hard": 0}, 1, "sll.compare(gt)"),
    "pruning": ({"found": 2, "rewritten": 2, "hard": 0}, 2, "sll.compare(gt)"),
    "segmentation": ({"found": 1, "rewritten": 1, "hard": 0}, 1, "sll.compare(gt)"),
    "ternary": ({"found": 4, "rewritten": 4, "hard": 0}, 4, "sll.sign"),
    "sparse_attention": ({"found": 1, "rewritten": 1, "hard": 0}, 1, "sll.topk_mask"),
    "anneal_eps": ({"found": 5, "rewritten": 5, "hard": 0}, 5, "sll.round"),
}


def _load(name: str):
    if str(EXAMPLES) not in sys.path:   # as `python examples/<name>.py` has it: the scripts import _common
        sys.path.insert(0, str(EXAMPLES))
    spec = importlib.util.spec_from_file_location(f"sll_example_{name}_under_test", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def one_thread():
    """The fast runs use tiny tensors: one thread is as fast and immune to other processes on the cores."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_every_example_is_tested():
    scripts = {p.stem for p in EXAMPLES.glob("*.py") if not p.stem.startswith("_")} - {"quickstart"}
    # (quickstart: test_examples_and_benchmarks.py; _common.py: the scripts' shared helpers)
    assert scripts == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_example_trains_and_exports_bit_identical(name, capsys, one_thread):
    counts, stripped, marker = EXPECTED[name]
    result = _load(name).main(["--fast"])
    out = capsys.readouterr().out

    assert result["bit_identical"] is True
    losses = result["losses"]
    k = max(1, len(losses) // 10)
    assert sum(losses[-k:]) / k < sum(losses[:k]) / k, "the loss falls"
    assert result["rewrite"].counts == counts
    assert result["strip"].counts == {"stripped": stripped, "remaining": 0}
    assert marker in out and "bit for bit: True" in out and "0 sll op(s) remain" in out

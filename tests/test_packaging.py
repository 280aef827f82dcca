"""Packaging: the wheel ships ``passes/`` as ``sll_fx.passes`` and no top-level ``passes``."""

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_wheel_maps_passes_into_sll_fx(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "--no-build-isolation",
                    "-q", "-w", str(tmp_path)], check=True, cwd=tmp_path)
    (wheel,) = tmp_path.glob("sll_fx-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "sll_fx/passes/__init__.py" in names
    assert "sll_fx/passes/linearize.py" in names
    assert "sll_fx/passes/strip.py" in names
    assert not [n for n in names if n.startswith("passes/")]


def test_top_level_passes_is_not_importable(tmp_path):
    code = "import sll_fx.passes\ntry:\n    import passes\nexcept ImportError:\n    print('ok')\n"
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "ok"


def test_passes_guard_from_source_checkout():
    """Even with the repo root on sys.path, ``import passes`` refuses and says what to import."""
    code = "try:\n    import passes\nexcept ImportError as e:\n    print(e)\n"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert "sll_fx.passes" in out.stdout

"""Every benchmark script answers `--help` with its usage (and runs nothing)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
SCRIPTS = sorted(p.name for p in BENCHMARKS.glob("*.py") if 'if __name__ == "__main__":' in p.read_text())


def test_the_scripts_are_found() -> None:
    assert {"baselines.py", "compare.py", "loss_speed.py", "gpu_check.py", "lm_mce.py"} <= set(SCRIPTS)


def written() -> list[Path]:
    return sorted(p for p in BENCHMARKS.rglob("*") if "__pycache__" not in p.parts)


@pytest.mark.parametrize("script", SCRIPTS)
def test_help(script: str, tmp_path: Path) -> None:
    before = written()
    done = subprocess.run(
        [sys.executable, str(BENCHMARKS / script), "--help"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith("usage:") and "Traceback" not in done.stderr
    assert written() == before and not list(tmp_path.iterdir())  # nothing written

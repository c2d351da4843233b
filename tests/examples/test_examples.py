"""Every script in examples/ runs to the end on tiny settings, as a user would run it: a separate process
with this interpreter, from another directory, offline."""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
HELPERS = {"toy_data.py"}  # imported by the examples, not run


def run(script: str, *args: str, cwd: Path) -> str:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "MPLBACKEND": "Agg"}
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / script), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def numbers_after(label: str, text: str) -> list[float]:
    return [float(v) for v in re.findall(rf"{label}\s+(-?[\d.]+|nan|inf)", text)]


def test_every_example_is_tested_and_says_how_to_run_it() -> None:
    tested = {"plain_pytorch.py", "lightning_module.py", "functional_spectrum.py", "lm_trainer.py"}
    scripts = {p.name for p in EXAMPLES.glob("*.py")} - HELPERS
    assert scripts == tested
    for name in scripts | HELPERS:
        source = (EXAMPLES / name).read_text(encoding="utf-8")
        assert source.startswith('"""'), name
        if name in scripts:
            assert f"python examples/{name}" in source, name


def test_plain_pytorch_loop(tmp_path: Path) -> None:
    out = run("plain_pytorch.py", "--steps", "4", "--batch-size", "32", "--samples", "200", cwd=tmp_path)
    assert "MatrixSSLLoss(target_scale=1.0" in out
    losses = numbers_after("loss", out)
    assert len(losses) >= 2 and all(math.isfinite(v) for v in losses)
    assert "trained encoder: nearest-centroid accuracy" in out


def test_lightning_module(tmp_path: Path) -> None:
    pytest.importorskip("lightning")
    out = run("lightning_module.py", "--steps", "3", "--batch-size", "32", "--samples", "128", cwd=tmp_path)
    assert "after 3 steps" in out and "train/loss" in out
    assert not list(tmp_path.iterdir())  # no logs or checkpoints left behind


def test_functional_spectrum_writes_a_plot(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    plot = tmp_path / "plots" / "spectrum.png"
    out = run("functional_spectrum.py", "--batch-size", "64", "--embedding-dim", "8", "--output", str(plot),
              cwd=tmp_path)  # fmt: skip
    assert plot.read_bytes().startswith(b"\x89PNG")
    for label in ("ME\\(C1\\)", "MKL\\(C1 \\|\\| C2\\)", "MCE"):
        (value,) = numbers_after(label, out)
        assert math.isfinite(value)
    (of_covariance,) = numbers_after("effective rank of C1", out)
    assert 1.0 <= of_covariance <= 8.0


@pytest.mark.parametrize("trainer", ["project", "own"])
def test_lm_trainer(tmp_path: Path, trainer: str) -> None:
    pytest.importorskip("transformers")
    pytest.importorskip("tokenizers")
    out = run(
        "lm_trainer.py",
        *("--trainer", trainer, "--steps", "2", "--batch-size", "4", "--train-problems", "16"),
        *("--test-problems", "2", "--max-new-tokens", "4", "--top-k", "4"),
        cwd=tmp_path,
    )
    assert "held-out accuracy" in out and "of 2 problems" in out
    assert re.search(r"step\s+2\s+\{'loss'", out)
    if trainer == "project":
        assert "matrix_cross_entropy" in out
    assert not list(tmp_path.iterdir())  # the Trainer's folder was temporary

"""Between logging steps the training step never makes the host wait for the device.

On a GPU the CUDA sync debug mode would raise at such a point; here, on the CPU, every call that would read a
value back to the host (`item`, `tolist`, `bool`, `float`, `int` of a tensor) is counted during the steps that
are not logging steps, in the step itself and in the teacher update that ends it.
"""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import TINY, mnist_like, write_idx_split

from matrixssl.cli import main
from matrixssl.methods import METHODS
from matrixssl.methods.base import SSLMethod

LOG_EVERY = 3
READ_BACKS = ("item", "tolist", "__bool__", "__float__", "__int__")


def counting_step(monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    """Count host read-backs of tensors inside training steps (and teacher updates) off the logging steps."""
    counts: Counter[str] = Counter()
    active = {"on": False}
    for name in READ_BACKS:
        original = getattr(torch.Tensor, name)

        def counted(self: torch.Tensor, *args: Any, _name: str = name, _original: Any = original) -> Any:
            if active["on"]:
                counts[_name] += 1
            return _original(self, *args)

        monkeypatch.setattr(torch.Tensor, name, counted)
    for hook in ("training_step", "on_train_batch_end"):
        original = getattr(SSLMethod, hook)

        def watched(self: SSLMethod, *args: Any, _original: Any = original) -> Any:
            batch_index = args[-1]
            active["on"] = batch_index % LOG_EVERY != 0
            try:
                return _original(self, *args)
            finally:
                active["on"] = False

        monkeypatch.setattr(SSLMethod, hook, watched)
    return counts


@pytest.mark.parametrize("method", sorted(METHODS))
def test_no_host_sync_between_logging_steps(method: str, tmp_path: Path, monkeypatch) -> None:
    data = tmp_path / "data"
    write_idx_split(data / "fashion-mnist", "train", *mnist_like(96, 0), gz=True)
    write_idx_split(data / "fashion-mnist", "test", *mnist_like(16, 1), gz=True)
    local = ["data.local_views=2"] if METHODS[method].supports_local_views else []
    counts = counting_step(monkeypatch)
    argv = [
        "pretrain",
        *TINY,
        f"loss.method={method}",
        *local,
        f"trainer.log_every_n_steps={LOG_EVERY}",
        "trainer.max_epochs=1",
        "eval.linear_epochs=1",
        f"data.dir={data}",
        f"output_dir={tmp_path / 'run'}",
    ]
    assert main(argv) == 0  # 6 steps: 1, 2, 4 and 5 are not logging steps
    assert counts == Counter()


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_the_step_runs_under_cuda_sync_debug_errors(tmp_path: Path) -> None:
    """On a GPU: CUDA's own sync detector, set to raise, around every non-logging step (the real CLI)."""
    data = tmp_path / "data"
    write_idx_split(data / "fashion-mnist", "train", *mnist_like(96, 0), gz=True)
    write_idx_split(data / "fashion-mnist", "test", *mnist_like(16, 1), gz=True)
    script = Path(__file__).resolve().parents[2] / "benchmarks" / "_sync_checked_pretrain.py"
    argv = [*TINY, "data.local_views=2", f"trainer.log_every_n_steps={LOG_EVERY}", "trainer.max_epochs=1"]
    result = subprocess.run(
        [
            sys.executable,
            str(script),
            "pretrain",
            *argv,
            f"data.dir={data}",
            f"output_dir={tmp_path / 'run'}",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]


def test_gpu_check_runs_its_path_at_toy_sizes(tmp_path: Path) -> None:
    """The GPU check's CPU fallback: synthetic CIFAR-10 and image-folder data, both configs, its table."""
    script = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu_check.py"
    output = tmp_path / "gpu.md"
    result = subprocess.run(
        [sys.executable, str(script), "--smoke", f"--work={tmp_path / 'work'}", f"--output={output}"],
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    table = output.read_text()
    assert "| cifar10/matrix_ssl | 2 |" in table and "| imagenet/matrix_ssl | 2 |" in table
    assert "smoke run" in table

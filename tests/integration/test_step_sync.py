"""Between logging steps the training step never makes the host wait for the device.

On a GPU the CUDA sync debug mode would raise at such a point; here, on the CPU, every call that would read a
value back to the host (`item`, `tolist`, `bool`, `float`, `int` of a tensor) or copy host data to the device
(a tensor made from Python values: `torch.tensor`, `torch.as_tensor`, `Tensor.new_tensor`) is counted during the
batches that are not logging steps (after the first, which is set-up), from the module's batch-start hook to the
end of its batch-end hook (the step, backward, the optimiser step, the teacher update).
"""

from __future__ import annotations

import os
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

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from _sync_checked_pretrain import non_logging_batch_hooks  # noqa: E402
from gpu_check import write_cifar10  # noqa: E402

LOG_EVERY = 3
READ_BACKS = ("item", "tolist", "__bool__", "__float__", "__int__")
HOST_COPIES = ((torch.Tensor, "new_tensor"), (torch, "tensor"), (torch, "as_tensor"))


def counting_step(monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    """Count host read-backs and host-to-device copies through each non-logging batch; the windows opened are
    counted too (as "window"), so a window that never opens cannot pass for a clean one. (Copies of host
    tensors, `.to(device)`, are not seen: a step made of device tensors has none.)"""
    counts: Counter[str] = Counter()
    active = {"on": False}
    for owner, name in [*((torch.Tensor, name) for name in READ_BACKS), *HOST_COPIES]:
        original = getattr(owner, name)

        def counted(*args: Any, _name: str = name, _original: Any = original, **kwargs: Any) -> Any:
            if active["on"]:
                counts[_name] += 1
            return _original(*args, **kwargs)

        monkeypatch.setattr(owner, name, counted)
    # The window: from the module's batch-start hook to the end of its batch-end hook (the teacher update),
    # so the step, backward, the optimiser step and Lightning's work between them are all inside.

    def enter() -> None:
        active["on"] = True
        counts["window"] += 1

    started, ended = non_logging_batch_hooks(enter, lambda: active.update(on=False))
    monkeypatch.setattr(SSLMethod, "on_train_batch_start", started)
    monkeypatch.setattr(SSLMethod, "on_train_batch_end", ended)
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
    assert main(argv) == 0  # 6 steps: logs written after 2 and 5, 0 is set-up
    assert counts == Counter(window=3)


def test_no_host_sync_with_colour_views_and_the_taylor_log(tmp_path: Path, monkeypatch) -> None:
    """The CIFAR-10 config: RGB views (saturation jitter and grayscale go through the luma), Taylor log; two
    epochs."""
    write_cifar10(tmp_path / "data", 80)
    counts = counting_step(monkeypatch)
    argv = [
        "pretrain",
        "--config",
        "cifar10/matrix_ssl",
        *(option for option in TINY if not option.startswith("data.name=")),
        "data.num_workers=0",
        f"trainer.log_every_n_steps={LOG_EVERY}",
        "trainer.max_epochs=2",
        "eval.linear_epochs=1",
        f"data.dir={tmp_path / 'data'}",
        f"output_dir={tmp_path / 'run'}",
    ]
    # 80 training images: 2 epochs of 5 steps of 16, logs written after 2, 5 and 8, 0 is set-up (the second
    # epoch's first batch is an ordinary one)
    assert main(argv) == 0
    assert counts == Counter(window=6)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_the_step_runs_under_cuda_sync_debug_errors(tmp_path: Path) -> None:
    """On a GPU: CUDA's own sync detector, set to raise, through every non-logging batch (the real CLI).

    With the Taylor log and bf16: the exact log's `torch.linalg.eigh` checks its result on the host, and
    16-mixed's gradient scaler reads back whether gradients overflowed, one wait per step each (README,
    training-step throughput)."""
    data = tmp_path / "data"
    write_idx_split(data / "fashion-mnist", "train", *mnist_like(96, 0), gz=True)
    write_idx_split(data / "fashion-mnist", "test", *mnist_like(16, 1), gz=True)
    script = Path(__file__).resolve().parents[2] / "benchmarks" / "_sync_checked_pretrain.py"
    argv = [
        *TINY,
        "data.local_views=2",
        "loss.taylor_order=4",
        "loss.ridge=1.0",
        "trainer.precision=bf16-mixed",
        f"trainer.log_every_n_steps={LOG_EVERY}",
        "trainer.max_epochs=1",
    ]
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
    """The GPU check's CPU fallback, through the script a lent machine runs: synthetic CIFAR-10 and
    image-folder data, both configs, its table."""
    script = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu_check.sh"
    output = tmp_path / "gpu.md"
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"  # its python3: this one
    result = subprocess.run(
        [str(script), "--smoke", f"--work={tmp_path / 'work'}", f"--output={output}"],
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
        env={**os.environ, "PATH": path},
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    table = output.read_text()
    # 95 synthetic CIFAR images at batch 16, 48 folder images at batch 8: one epoch each
    assert "| cifar10/matrix_ssl | 5 |" in table and "| imagenet/matrix_ssl | 6 |" in table
    assert "smoke run" in table

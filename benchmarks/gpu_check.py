"""The GPU check: what only a GPU can tell, in one run that makes everything it needs.

1. the test suite's CUDA-marked tests (`pytest -m cuda`), among them the step under
   `torch.cuda.set_sync_debug_mode("error")` between logging steps;
2. a short pretraining of the CIFAR-10 config on synthetic CIFAR-format files, and of the ImageNet config
   (ResNet-50, 224 px) on a synthetic image folder, in bf16, each with the sync debug mode on through every
   non-logging step, through the real CLI;
3. images/s and step / floor of both configs (the throughput benchmark's measurement), peak memory and the
   GPU's name, written to `benchmarks/results/gpu.md`.

Without CUDA it runs the same path on the CPU at toy sizes (`--smoke`, used by the test suite) and writes its
table where `--output` says. A part that fails is reported (with its log's tail) and the rest still runs; the
exit status says whether all passed. On a machine with PyTorch but not this project, `benchmarks/gpu_check.sh`
installs what is missing from carried wheels first.

    python benchmarks/gpu_check.py [--steps 50] [--work /tmp/gpu_check] [--output gpu.md] [--smoke]
"""

from __future__ import annotations

import argparse
import pickle
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from _report import RESULTS, header
from PIL import Image
from throughput import measure

from matrixssl.config import load_config

SYNC_CHECK = Path(__file__).resolve().parent / "_sync_checked_pretrain.py"


def write_cifar10(root: Path, images: int, seed: int = 0) -> int:
    """CIFAR-10's python layout: five training batches and a test batch of pickled uint8 rows; returns the
    number of training images."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    per_batch = max(1, images // 5)
    for name, count in [*((f"data_batch_{i}", per_batch) for i in range(1, 6)), ("test_batch", per_batch)]:
        batch = {
            b"data": rng.integers(0, 256, (count, 3 * 32 * 32), dtype=np.uint8),
            b"labels": rng.integers(0, 10, count).tolist(),
        }
        (folder / name).write_bytes(pickle.dumps(batch))
    return 5 * per_batch


def write_image_folder(root: Path, images: int, size: int, seed: int = 0) -> None:
    """root/{train,val}/<class>/*.png with `images` training images over 10 classes."""
    rng = np.random.default_rng(seed)
    for split, count in (("train", images), ("val", max(10, images // 10))):
        for index in range(count):
            folder = root / split / f"class_{index % 10}"
            folder.mkdir(parents=True, exist_ok=True)
            pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(folder / f"{index}.png", compress_level=1)


def run_logged(command: list[str], log: Path) -> tuple[bool, float]:
    """Runs `command` with its output in `log`; on failure prints the log's tail (a lent machine's /tmp does
    not come back). Returns (passed, seconds)."""
    start = time.perf_counter()
    with log.open("w") as out:
        result = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT, check=False)
    if result.returncode != 0:
        print(
            f"FAILED (exit {result.returncode}): {' '.join(command)}\n{log.read_text()[-6000:]}", flush=True
        )
    return result.returncode == 0, time.perf_counter() - start


def cuda_marked_test_files() -> list[str]:
    """The test files that hold CUDA-marked tests: collecting only them needs none of the dev-only packages."""
    tests = Path(__file__).resolve().parents[1] / "tests"
    return sorted(str(f) for f in tests.rglob("test_*.py") if "pytest.mark.cuda" in f.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--steps",
        type=int,
        default=50,
        help="timed steps per config; the pretraining before them runs steps + 4 (default: %(default)s)",
    )
    parser.add_argument("--work", type=Path, default=Path("/tmp/gpu_check"), help="synthetic data and runs")
    parser.add_argument("--output", default="gpu.md", help="file name under benchmarks/results/, or a path")
    parser.add_argument(
        "--smoke", action="store_true", help="toy sizes, for a CPU (the test suite runs this)"
    )
    args = parser.parse_args()
    cuda = torch.cuda.is_available()
    smoke = args.smoke or not cuda
    for made in ("runs", "cifar", "imagenet"):  # a rerun on the same machine starts afresh
        shutil.rmtree(args.work / made, ignore_errors=True)
    args.work.mkdir(parents=True, exist_ok=True)
    rows: list[str] = []
    failures = 0
    if cuda and not args.smoke:
        command = [sys.executable, "-m", "pytest", "-q", "-m", "cuda", *cuda_marked_test_files()]
        passed, _ = run_logged(command, args.work / "cuda_tests.log")
        failures += not passed
        rows.append(f"CUDA-marked tests: {'passed' if passed else 'FAILED'}")
    steps = 2 if smoke else args.steps
    plans: list[tuple[str, str, list[str], int]] = []
    cifar_batch = 16 if smoke else 256
    imagenet_batch, imagenet_size = (8, 64) if smoke else (64, 224)
    # pretraining runs one epoch of these; the throughput measurement needs steps + 3 batches of them
    cifar_images = write_cifar10(args.work / "cifar", cifar_batch * (steps + 4))
    imagenet_images = imagenet_batch * (steps + 4)
    write_image_folder(args.work / "imagenet", imagenet_images, imagenet_size)
    common = [
        "trainer.devices=1",
        "eval.linear_epochs=2",
        "trainer.max_epochs=1",
        "trainer.progress_bar=false",
        "data.num_workers=0" if smoke else "data.num_workers=8",
    ]
    if smoke:
        common += [
            "trainer.accelerator=auto",
            "model.width=0.125",
            "model.projector_hidden_dim=32",
            "model.projector_dim=16",
            "eval.linear_epochs=1",
        ]
    plans.append(
        (
            "cifar10/matrix_ssl",
            f"data.dir={args.work / 'cifar'}",
            [f"data.batch_size={cifar_batch}"],
            cifar_images // cifar_batch,
        )
    )
    plans.append(
        (
            "imagenet/matrix_ssl",
            f"data.dir={args.work / 'imagenet'}",
            [f"data.batch_size={imagenet_batch}", f"data.image_size={imagenet_size}"],
            imagenet_images // imagenet_batch,
        )
    )
    table = [
        "| config | pretraining steps | pretrain + eval (s) | images/s | step / floor | peak memory (GiB) |",
        "|---|---|---|---|---|---|",
    ]
    for name, data_dir, extra, pretraining_steps in plans:
        overrides = [data_dir, *common, *extra, f"trainer.log_every_n_steps={max(2, steps // 5)}"]
        command = [sys.executable, str(SYNC_CHECK), "pretrain", "--config", name, *overrides]
        passed, seconds = run_logged(
            [*command, f"output_dir={args.work / 'runs' / name}"], args.work / f"{name.replace('/', '_')}.log"
        )
        if not passed:
            failures += 1
            table.append(f"| {name} | pretraining FAILED (its log's tail is in the output) | | | | |")
            continue
        config = load_config(name, overrides)
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        timing = argparse.Namespace(
            steps=steps, warmup=1, batch_size=config.data.batch_size, num_workers=config.data.num_workers
        )
        try:
            measured: dict[str, Any] = measure(config, name, timing)
        except Exception as error:  # noqa: BLE001 - one failing part must not cost the others' results
            failures += 1
            print(f"FAILED: timing {name}: {error!r}", flush=True)
            table.append(f"| {name} | {pretraining_steps} | {seconds:.0f} | timing FAILED: {error!r} | | |")
            continue
        peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else float("nan")
        table.append(
            f"| {name} | {pretraining_steps} | {seconds:.0f} | {config.data.batch_size / measured['step']:.0f} | "
            f"{measured['step'] / measured['floor']:.2f} | {peak:.1f} |"
        )
    device = torch.cuda.get_device_name() if cuda else "CPU (smoke run: toy sizes, not a measurement)"
    text = (
        header("GPU check")
        + f"Device: {device}; bf16 where supported (`trainer.precision=auto`).\n\n"
        + "\n".join([*rows, "", *table])
        + "\n"
    )
    output = Path(args.output) if "/" in args.output else RESULTS / args.output
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(text)
    print(text)
    print(f"written to {output}")
    if failures:
        raise SystemExit(f"{failures} part(s) of the GPU check failed; their logs' tails are above")


if __name__ == "__main__":
    main()

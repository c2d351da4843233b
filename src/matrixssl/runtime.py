"""What vision pretraining, evaluation and LM fine-tuning share about where and how they run.

Device choice, the precision rule, seeding and atomic writes live here once, so the two halves of the library
cannot drift apart: `auto` means the same thing in `matrixssl pretrain` and in `matrixssl lm-finetune`.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch

from matrixssl.errors import MatrixSSLError

# Lightning's names for the training precisions the library supports; the matrix functions run in float32
# under each of them. "auto" is resolved by `resolve_precision`.
PRECISIONS = ("auto", "32-true", "bf16-mixed", "16-mixed", "64-true")


def resolve_device(name: str = "auto") -> torch.device:
    """`auto`: the first CUDA device when there is one, else the CPU; a CUDA device that is not there is an
    error rather than a silent fall-back to a much slower run."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise MatrixSSLError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise MatrixSSLError(
            f"device {name} was asked for, but no CUDA device is available; use --device cpu"
        )
    return device


def auto_precision(device_type: str) -> str:
    """bf16-mixed where the device computes bf16 natively (a GPU that supports it; a CPU with AVX512-BF16 or
    AMX); on a GPU without bf16 (V100, T4) 16-mixed with loss scaling; else 32-true, since a CPU without native
    bf16 emulates it more slowly than it computes float32."""
    if device_type == "cuda":
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
    capabilities = torch.cpu.get_capabilities()
    native = bool(capabilities.get("avx512_bf16") or capabilities.get("amx_bf16"))
    return "bf16-mixed" if native else "32-true"


def resolve_precision(requested: str, device_type: str) -> str:
    """One of PRECISIONS less "auto"; "auto" follows `auto_precision`."""
    if requested not in PRECISIONS:
        raise MatrixSSLError(f"precision must be one of {', '.join(PRECISIONS)}, got {requested!r}")
    return auto_precision(device_type) if requested == "auto" else requested


def autocast(precision: str, device: torch.device) -> AbstractContextManager[Any]:
    """The autocast context of a resolved precision (none for 32-true and 64-true)."""
    dtypes = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}
    if precision not in dtypes:
        return nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtypes[precision])


def seed_everything(seed: int) -> None:
    """Python's, NumPy's and torch's generators (every device) from one seed."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _atomic(path: str | os.PathLike[str], write: Callable[[Path], object]) -> Path:
    """`write` into a temporary file beside `path`, then rename: a killed process leaves the old file or the
    new one, never half of one."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_name(f".{target.name}.tmp")
    write(temporary)
    os.replace(temporary, target)
    return target


def write_text(path: str | os.PathLike[str], text: str) -> Path:
    return _atomic(path, lambda temporary: temporary.write_text(text))


def write_json(path: str | os.PathLike[str], payload: dict[str, Any]) -> Path:
    """`payload` as indented JSON, written atomically."""
    return write_text(path, json.dumps(payload, indent=2) + "\n")


def save_torch(obj: Any, path: str | os.PathLike[str]) -> Path:
    """`torch.save`, written atomically."""
    return _atomic(path, lambda temporary: torch.save(obj, temporary))


@contextmanager
def atomic_directory(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a staging folder beside `path`; on success it replaces `path` whole (on error it is removed and
    `path` stays as it was)."""
    target = Path(path)
    staging = target.with_name(f"{target.name}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if target.exists():
        shutil.rmtree(target)
    os.replace(staging, target)

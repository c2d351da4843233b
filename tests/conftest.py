"""Shared test helpers: random SPD matrices, tiny IDX datasets, deterministic seeds."""

from __future__ import annotations

import dataclasses
import gzip
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from matrixssl.data import DATASETS


def random_spd(d: int, seed: int, floor: float = 0.1) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    a = torch.randn(d, d, generator=generator, dtype=torch.float64)
    return a @ a.T / d + floor * torch.eye(d, dtype=torch.float64)


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    """Tiny tensors: threads only add synchronisation, very costly when other work shares the 2 cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


# A very small ResNet and heads: integration tests check behaviour, not accuracy, in seconds.
TINY = [
    "data.name=fashion-mnist",
    "data.batch_size=16",
    "model.width=0.125",
    "model.projector_hidden_dim=32",
    "model.projector_dim=16",
    "model.predictor_hidden_dim=8",
    "trainer.progress_bar=false",
    "trainer.log_every_n_steps=1",
    "eval.linear_epochs=2",
]


IDX_NAMES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def idx_bytes(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 8, array.ndim]) + b"".join(d.to_bytes(4, "big") for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_idx_split(folder: Path, split: str, images: np.ndarray, labels: np.ndarray, gz: bool) -> None:
    """Write one split in the MNIST/Fashion-MNIST IDX layout."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, array in zip(IDX_NAMES[split], (images, labels), strict=True):
        if gz:
            (folder / f"{name}.gz").write_bytes(gzip.compress(idx_bytes(array)))
        else:
            (folder / name).write_bytes(idx_bytes(array))


def mnist_like(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 28, 28), dtype=np.uint8), rng.integers(0, 10, n, dtype=np.uint8)


def override(monkeypatch: pytest.MonkeyPatch, name: str, **loader_kwargs: Any) -> None:
    """Re-register dataset ``name`` with some of its loader's bound arguments replaced."""
    spec = DATASETS[name]
    replaced = dataclasses.replace(spec, loader=partial(spec.loader, **loader_kwargs))
    monkeypatch.setitem(DATASETS, name, replaced)

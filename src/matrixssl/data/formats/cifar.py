"""CIFAR's "python version": pickled batches of 32x32 colour images. CIFAR-10 and CIFAR-100 differ only in
the facts a ``CifarLayout`` holds, so one loader reads both."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from matrixssl.data.dataset import ImageDataset, InMemoryDataset
from matrixssl.data.formats.common import check_native_size, find_archive_folder, head, load_arrays_pickle
from matrixssl.errors import MatrixSSLError


@dataclass(frozen=True)
class CifarLayout:
    """One CIFAR archive: the folder it extracts to, the batch files of each split, which labels to read."""

    name: str
    title: str
    folder: str
    files: dict[str, tuple[str, ...]]
    label_key: bytes
    num_classes: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    url: str


def read_cifar_batch(path: Path, label_key: bytes) -> tuple[np.ndarray, np.ndarray]:
    """uint8 images ``(N, 3, 32, 32)`` and int64 labels from one pickled batch (unpickled without running code:
    the file was downloaded by the user)."""
    try:
        with path.open("rb") as f:
            batch = load_arrays_pickle(f, path, "a plain CIFAR batch", encoding="bytes")
        data = np.asarray(batch[b"data"], dtype=np.uint8)
        labels = np.asarray(batch[label_key], dtype=np.int64)
        if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or labels.shape != (len(data),):
            raise ValueError(f"data of shape {data.shape} with {labels.shape} labels")
    except MatrixSSLError:  # a refused global: already names the file
        raise
    except Exception as err:  # a damaged pickle can fail in many ways; all mean "bad file"
        raise MatrixSSLError(f"corrupt file {path}: {err}; delete it and extract the archive again") from err
    return data.reshape(-1, 3, 32, 32), labels


def load_cifar(
    layout: CifarLayout,
    root: Path,
    split: str,
    *,
    download: bool,
    subset: int | None,
    image_size: int | None,
) -> ImageDataset:
    """CIFAR from the "python version" archive, extracted into ``root``."""
    check_native_size(layout.name, 32, image_size)
    names = layout.files[split]
    found = find_archive_folder(
        layout.title, split, names, [root / layout.folder, root], layout.url, download
    )
    batches = [read_cifar_batch(found / n, layout.label_key) for n in names]
    images = torch.from_numpy(np.concatenate([b[0] for b in batches]))
    labels = torch.from_numpy(np.concatenate([b[1] for b in batches]))
    images, labels = head(images, labels, subset)
    return InMemoryDataset(
        layout.name, split, images, labels, num_classes=layout.num_classes, mean=layout.mean, std=layout.std
    )

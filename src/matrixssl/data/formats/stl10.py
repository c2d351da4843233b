"""STL-10's binary version: raw 3x96x96 images stored column-major, read through memory maps so the large
unlabeled split is never loaded whole."""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from matrixssl.data.dataset import ImageDataset
from matrixssl.data.formats.common import check_native_size, find_archive_folder
from matrixssl.errors import MatrixSSLError

STL10_URL = "https://ai.stanford.edu/~acoates/stl10/stl10_binary.tar.gz"
_SIDE = 96
_IMAGE_BYTES = 3 * _SIDE * _SIDE


class STL10Dataset(ImageDataset):
    """STL-10 read through memory maps: the unlabeled split alone is 2.7 GB.

    The maps are opened lazily in each process and dropped when pickled, so DataLoader workers started by
    ``spawn`` re-open the files instead of receiving a copy of the data.
    """

    def __init__(self, split: str, parts: Sequence[tuple[Path, int]], labels: np.ndarray) -> None:
        super().__init__(
            "stl10",
            split,
            num_classes=10,
            channels=3,
            image_size=_SIDE,
            mean=(0.4467, 0.4398, 0.4066),
            std=(0.2603, 0.2566, 0.2713),
        )
        self._parts = list(parts)  # (file, how many of its images are used), in order
        self._starts = list(itertools.accumulate((count for _, count in self._parts[:-1]), initial=0))
        self._maps: list[np.ndarray] | None = None
        self.labels = torch.from_numpy(labels.astype(np.int64))

    def _arrays(self) -> list[np.ndarray]:
        if self._maps is None:
            shape = (3, _SIDE, _SIDE)
            self._maps = [np.memmap(path, np.uint8, "r", shape=(n, *shape)) for path, n in self._parts]
        return self._maps

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_maps": None}

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        index = range(len(self))[index]  # negative indices and bounds, like a sequence
        part = bisect.bisect_right(self._starts, index) - 1
        image = self._arrays()[part][index - self._starts[part]]
        # Stored column-major (MATLAB order): axes are (channel, column, row); swap to (channel, row, column).
        return torch.from_numpy(np.ascontiguousarray(image.transpose(0, 2, 1))), int(self.labels[index])

    def as_tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        blocks = [np.ascontiguousarray(array.transpose(0, 1, 3, 2)) for array in self._arrays()]
        return torch.from_numpy(np.concatenate(blocks)), self.labels


def stl10_images(path: Path) -> int:
    """How many images an STL-10 ``*_X.bin`` holds, checked against its size without reading it."""
    size = path.stat().st_size
    if size == 0 or size % _IMAGE_BYTES:
        raise MatrixSSLError(
            f"corrupt or truncated file {path}: {size} bytes is not a whole number of 3x96x96 images; "
            "delete it and extract the archive again"
        )
    return size // _IMAGE_BYTES


def stl10_labels(path: Path, count: int) -> np.ndarray:
    """The ``count`` labels of a ``*_y.bin``, from the stored 1..10 to 0..9."""
    labels = np.fromfile(path, dtype=np.uint8).astype(np.int64) - 1
    if len(labels) != count or labels.min() < 0 or labels.max() > 9:
        raise MatrixSSLError(
            f"corrupt file {path}: expected {count} labels in 1..10; delete it and extract the archive again"
        )
    return labels


def load_stl10(
    root: Path, split: str, *, download: bool, subset: int | None, image_size: int | None
) -> ImageDataset:
    """STL-10 binary version; ``split`` may join parts with ``+`` (``train+unlabeled``), read in that order."""
    check_native_size("stl10", _SIDE, image_size)
    parts = split.split("+")
    names = [f"{p}_X.bin" for p in parts] + [f"{p}_y.bin" for p in parts if p != "unlabeled"]
    found = find_archive_folder("STL-10", split, names, [root / "stl10_binary", root], STL10_URL, download)
    files: list[tuple[Path, int]] = []
    labels: list[np.ndarray] = []
    remaining = subset
    for part in parts:
        if remaining == 0:
            break
        count = stl10_images(found / f"{part}_X.bin")
        part_labels = (
            np.full(count, -1, dtype=np.int64)
            if part == "unlabeled"
            else stl10_labels(found / f"{part}_y.bin", count)
        )
        if remaining is not None:
            count = min(count, remaining)
            remaining -= count
        files.append((found / f"{part}_X.bin", count))
        labels.append(part_labels[:count])
    return STL10Dataset(split, files, np.concatenate(labels))

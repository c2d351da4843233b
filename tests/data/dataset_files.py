"""Tiny files in the CIFAR and STL-10 on-disk layouts, written by the tests that read them back."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np


def cifar_batch(
    path: Path, data: np.ndarray, labels: list[int], key: bytes, extra: dict | None = None
) -> None:
    """One pickled CIFAR batch: ``data`` rows of 3072 bytes and their labels under ``key``."""
    batch = {b"data": data, key: labels, b"batch_label": b"x", **(extra or {})}
    with path.open("wb") as f:
        pickle.dump(batch, f)


def stl_images(n: int, marks: dict[tuple[int, int, int, int], int]) -> bytes:
    """``n`` images in STL-10's layout with ``marks[(image, channel, row, column)] = value``.

    Each image is stored column-major: byte ``channel * 96 * 96 + column * 96 + row`` within the image.
    """
    raw = bytearray(n * 3 * 96 * 96)
    for (image, channel, row, column), value in marks.items():
        raw[image * 27648 + channel * 9216 + column * 96 + row] = value
    return bytes(raw)


def write_stl10(root: Path, *, test: bool = False) -> Path:
    """``root/stl10_binary`` with 2 labelled train images (labels 2, 9 once read), 3 unlabeled images and,
    with ``test``, 4 test images (labels 0..3); returns ``root``."""
    folder = root / "stl10_binary"
    folder.mkdir(parents=True)
    (folder / "train_X.bin").write_bytes(stl_images(2, {(1, 2, 5, 70): 255, (0, 0, 0, 1): 9}))
    (folder / "train_y.bin").write_bytes(bytes([3, 10]))
    (folder / "unlabeled_X.bin").write_bytes(stl_images(3, {(1, 1, 95, 0): 77}))
    if test:
        (folder / "test_X.bin").write_bytes(stl_images(4, {}))
        (folder / "test_y.bin").write_bytes(bytes([1, 2, 3, 4]))
    return root

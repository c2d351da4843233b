"""CIFAR's pickled batches, written here and read back exactly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from dataset_files import cifar_batch

from matrixssl.data import load_dataset
from matrixssl.data.formats.cifar import load_cifar
from matrixssl.data.registry import CIFAR100
from matrixssl.errors import MatrixSSLError


def test_cifar10_reads_the_five_batches_in_order(tmp_path: Path) -> None:
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for i in range(1, 6):
        data = np.full((2, 3072), 10 * i, dtype=np.uint8)
        cifar_batch(folder / f"data_batch_{i}", data, [i, i + 1], b"labels")
    # Rows are the red plane, then green, then blue, each row-major: mark green (1), row 1, column 2.
    marked = np.zeros((1, 3072), dtype=np.uint8)
    marked[0, 1024 + 1 * 32 + 2] = 200
    cifar_batch(folder / "test_batch", marked, [7], b"labels")

    train = load_dataset("cifar10", tmp_path)
    images, labels = train.as_tensors()
    assert images.shape == (10, 3, 32, 32) and images.dtype == torch.uint8
    assert images[:, 0, 0, 0].tolist() == [10, 10, 20, 20, 30, 30, 40, 40, 50, 50]
    assert labels.tolist() == [1, 2, 2, 3, 3, 4, 4, 5, 5, 6]
    assert (train.channels, train.image_size, train.num_classes) == (3, 32, 10)
    assert len(train.mean) == 3 and len(train.std) == 3
    image, label = load_dataset("cifar10", tmp_path, "test")[0]
    assert label == 7 and image[1, 1, 2] == 200 and int(image.sum()) == 200


def test_cifar100_uses_fine_labels(tmp_path: Path) -> None:
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    data = np.arange(3 * 3072).reshape(3, 3072).astype(np.uint8)
    cifar_batch(folder / "train", data, [99, 0, 42], b"fine_labels", {b"coarse_labels": [19, 0, 3]})
    train = load_dataset("cifar100", tmp_path, subset=2)
    assert train.labels.tolist() == [99, 0] and train.num_classes == 100
    assert np.array_equal(train.as_tensors()[0].reshape(2, 3072).numpy(), data[:2])
    # The format's loader, called directly with the layout the registry binds, reads the same.
    direct = load_cifar(CIFAR100, tmp_path, "train", download=False, subset=None, image_size=None)
    assert direct.labels.tolist() == [99, 0, 42] and direct.name == "cifar100"


def test_corrupt_cifar_pickle_names_the_file(tmp_path: Path) -> None:
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    (folder / "test_batch").write_bytes(b"\x80\x04 definitely not a pickle")
    with pytest.raises(MatrixSSLError, match=f"corrupt file {folder / 'test_batch'}"):
        load_dataset("cifar10", tmp_path, "test")


def test_missing_cifar_names_paths_and_the_archive(tmp_path: Path) -> None:
    with pytest.raises(MatrixSSLError) as info:
        load_dataset("cifar100", tmp_path, download=True)
    message = str(info.value)
    assert str(tmp_path / "cifar-100-python") in message and f"{tmp_path}." in message
    assert "cifar-100-python.tar.gz" in message and "download=True is not available" in message

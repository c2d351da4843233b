"""STL-10's column-major binary files, written here and read back exactly through memory maps."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch
from dataset_files import write_stl10

from matrixssl.data import STL10Dataset, load_dataset
from matrixssl.data.formats.stl10 import load_stl10
from matrixssl.errors import MatrixSSLError


@pytest.fixture
def stl_root(tmp_path: Path) -> Path:
    return write_stl10(tmp_path)


def test_stl10_transposes_column_major_images(stl_root: Path) -> None:
    data = load_dataset("stl10", stl_root)
    assert isinstance(data, STL10Dataset) and len(data) == 2
    image, label = data[1]
    assert image.shape == (3, 96, 96) and image.dtype == torch.uint8 and label == 9
    assert image[2, 5, 70] == 255 and int(image.sum()) == 255  # row 5, column 70: not (70, 5)
    assert data[0][0][0, 0, 1] == 9 and data[0][1] == 2  # labels 1..10 become 0..9
    images, labels = data.as_tensors()
    assert torch.equal(images[1], image) and labels.tolist() == [2, 9]
    assert (data.num_classes, data.channels, data.image_size) == (10, 3, 96)


def test_stl10_train_plus_unlabeled_concatenates(stl_root: Path) -> None:
    data = load_dataset("stl10", stl_root, "train+unlabeled")
    assert len(data) == 5 and data.labels.tolist() == [2, 9, -1, -1, -1]
    image, label = data[3]
    assert label == -1 and image[1, 95, 0] == 77
    assert torch.equal(data[-2][0], image)
    with pytest.raises(IndexError):
        data[5]
    assert torch.equal(data.as_tensors()[0][3], image)
    # DataLoader workers get a pickled copy: it must reopen the maps, not carry the data.
    clone = pickle.loads(pickle.dumps(data))
    assert clone._maps is None and torch.equal(clone[3][0], image)


def test_stl10_subset_across_parts(stl_root: Path) -> None:
    assert load_dataset("stl10", stl_root, "train+unlabeled", subset=3).labels.tolist() == [2, 9, -1]
    assert load_dataset("stl10", stl_root, "unlabeled", subset=1).as_tensors()[0].shape == (1, 3, 96, 96)
    direct = load_stl10(stl_root, "unlabeled+train", download=False, subset=4, image_size=None)
    assert direct.labels.tolist() == [-1, -1, -1, 2]  # the loader reads parts in the order given


def test_stl10_bad_files_are_named(stl_root: Path) -> None:
    images = stl_root / "stl10_binary" / "unlabeled_X.bin"
    images.write_bytes(images.read_bytes()[:-1])
    with pytest.raises(MatrixSSLError, match=f"truncated file {images}"):
        load_dataset("stl10", stl_root, "unlabeled")
    labels = stl_root / "stl10_binary" / "train_y.bin"
    labels.write_bytes(bytes([0, 4]))
    with pytest.raises(MatrixSSLError, match=f"corrupt file {labels}"):
        load_dataset("stl10", stl_root, "train")


def test_missing_stl10_names_paths_and_files(tmp_path: Path) -> None:
    with pytest.raises(MatrixSSLError) as info:
        load_dataset("stl10", tmp_path, "test")
    message = str(info.value)
    assert "test_X.bin, test_y.bin" in message and str(tmp_path / "stl10_binary") in message
    assert "stl10_binary.tar.gz" in message

"""Image folders: classes from sub-folders, lazy decoding, resizing and the handling of bad files."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from matrixssl.data import ImageFolderDataset, load_dataset
from matrixssl.errors import MatrixSSLError


def solid(size: tuple[int, int], color: tuple[int, int, int]) -> Image.Image:
    return Image.new("RGB", size, color)


@pytest.fixture
def folder_root(tmp_path: Path) -> Path:
    train = tmp_path / "train"
    (train / "cat").mkdir(parents=True)
    (train / "dog" / "nested").mkdir(parents=True)
    pattern = np.arange(8 * 8 * 3, dtype=np.uint8).reshape(8, 8, 3)
    Image.fromarray(pattern).save(train / "cat" / "a.png")
    (train / "cat" / "notes.txt").write_text("not an image, and not warned about")
    solid((8, 8), (200, 30, 90)).save(train / "dog" / "nested" / "b.jpg", quality=95)
    (train / "dog" / "broken.jpeg").write_bytes(b"\xff\xd8\xff garbage")
    return tmp_path


def test_imagefolder_reads_classes_and_warns_once_about_bad_files(folder_root: Path) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        data = load_dataset("imagefolder", folder_root, image_size=8)
    assert [str(w.message) for w in caught] == [
        f"imagefolder: skipping 1 unreadable image file(s): {folder_root / 'train' / 'dog' / 'broken.jpeg'}"
    ]
    assert isinstance(data, ImageFolderDataset)
    assert data.classes == ["cat", "dog"] and data.num_classes == 2 and data.labels.tolist() == [0, 1]
    png, label = data[0]
    assert label == 0 and png.dtype == torch.uint8 and png.shape == (3, 8, 8)
    expected = np.arange(8 * 8 * 3, dtype=np.uint8).reshape(8, 8, 3).transpose(2, 0, 1)
    assert np.array_equal(png.numpy(), expected)
    jpeg, label = data[1]
    assert label == 1
    assert (jpeg.int() - torch.tensor([200, 30, 90]).view(3, 1, 1)).abs().max() <= 3  # JPEG is lossy
    images, labels = data.as_tensors()
    assert images.shape == (2, 3, 8, 8) and torch.equal(images[0], png) and labels.tolist() == [0, 1]


def test_imagefolder_resizes_shorter_side_and_center_crops(tmp_path: Path) -> None:
    folder = tmp_path / "train"
    folder.mkdir()
    wide = np.zeros((8, 16, 3), dtype=np.uint8)
    wide[:, 4:12] = 255  # the central 8 columns survive the crop exactly
    Image.fromarray(wide).save(folder / "wide.png")
    solid((4, 6), (10, 20, 30)).save(folder / "small.png")
    data = load_dataset("imagefolder", tmp_path, image_size=8)
    assert data.labels.tolist() == [-1, -1] and data.num_classes == 0  # flat folder: unlabeled
    small, wide_image = data[0][0], data[1][0]
    assert small.shape == (3, 8, 8) and torch.equal(
        small, torch.tensor([10, 20, 30]).view(3, 1, 1).expand(3, 8, 8)
    )
    assert wide_image.shape == (3, 8, 8) and bool((wide_image == 255).all())
    assert load_dataset("imagefolder", tmp_path, subset=1)[0][0].shape == (3, 224, 224)  # the default


def test_imagefolder_flat_root_and_grayscale(tmp_path: Path) -> None:
    Image.fromarray(np.full((5, 5), 123, dtype=np.uint8), mode="L").save(tmp_path / "x.png")
    solid((5, 5), (0, 0, 0)).save(tmp_path / "y.bmp")
    data = load_dataset("imagefolder", tmp_path, image_size=5)  # no train/ folder: root itself
    assert len(data) == 2 and data[0][0].shape == (3, 5, 5) and bool((data[0][0] == 123).all())
    gray = ImageFolderDataset(tmp_path, image_size=5, channels=1)
    assert gray.channels == 1 and len(gray.mean) == 1 and gray[0][0].shape == (1, 5, 5)


def test_imagefolder_subset_and_errors(folder_root: Path) -> None:
    data = load_dataset("imagefolder", folder_root, subset=1, image_size=8)
    assert isinstance(data, ImageFolderDataset) and len(data) == 1 and data.files[0].name == "a.png"
    with pytest.raises(MatrixSSLError, match="no folder .*val; splits found in .*: train"):
        load_dataset("imagefolder", folder_root, "val")
    with pytest.raises(MatrixSSLError, match="does not exist"):
        load_dataset("imagefolder", folder_root / "nope")
    (folder_root / "empty" / "cls").mkdir(parents=True)
    with pytest.raises(MatrixSSLError, match="no images in"):
        load_dataset("imagefolder", folder_root, "empty")


@pytest.mark.filterwarnings("ignore:imagefolder. skipping")
def test_imagefolder_info_counts_the_classes_found(folder_root: Path) -> None:
    info = load_dataset("imagefolder", folder_root, image_size=8).info
    assert (info.name, info.channels, info.image_size, info.num_classes) == ("imagefolder", 3, 8, 2)
    assert info.mean == (0.485, 0.456, 0.406) and info.std == (0.229, 0.224, 0.225)

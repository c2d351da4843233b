"""What every dataset is, whatever its storage: ``(image, label)`` items and the facts a method needs.

Every dataset yields ``(image, label)`` with ``image`` a ``torch.uint8`` tensor of shape ``(C, H, W)`` and
``label`` an ``int`` (-1 when unlabeled): augmentation and normalisation happen later, batched, on the device.
Small datasets live in memory as one ``images`` tensor (``InMemoryDataset``) so a loop can index whole batches.
``DatasetInfo`` is the plain-data summary a model is built from and a checkpoint stores.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import Dataset


@dataclass(frozen=True)
class DatasetInfo:
    """What a method needs to know of its data: shape, classes and normalisation statistics.

    ``as_dict()`` is what checkpoints store; ``DatasetInfo(**saved)`` reads it back (lists become tuples).
    """

    name: str
    channels: int
    image_size: int
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def __post_init__(self) -> None:
        # A checkpoint read back through YAML or JSON gives lists; tuples keep the object hashable and equal.
        object.__setattr__(self, "mean", tuple(self.mean))
        object.__setattr__(self, "std", tuple(self.std))

    def as_dict(self) -> dict[str, Any]:
        """The six fields by name, ``mean`` and ``std`` as tuples."""
        return dataclasses.asdict(self)


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

    @property
    def info(self) -> DatasetInfo:
        """This dataset's name, shape, classes and normalisation statistics as one value."""
        return DatasetInfo(self.name, self.channels, self.image_size, self.num_classes, self.mean, self.std)

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

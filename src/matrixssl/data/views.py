"""Two augmented views of a whole uint8 batch, made with kornia on the device the model runs on.

The official Matrix-SSL/MEC recipe is the asymmetric MoCo v3 / BYOL pair: random resized crop (scale 0.2-1),
colour jitter (0.4, 0.4, 0.2, 0.1) with p 0.8, grayscale p 0.2, horizontal flip, then view 1 always blurred
and view 2 blurred with p 0.1 and solarised with p 0.2. Grayscale data keeps the brightness/contrast part of
the jitter. Every image draws its own random parameters. Making the views batched on the training device means
GPUs are not starved by per-image CPU workers, and on a CPU it replaces thousands of small PIL calls by a few
tensor operations.

Multi-crop (Caron et al., SwAV 2020): `local_views` extra small crops per image, each from a smaller area
(DINO's convention: up to the global crops' smallest area, down to 0.05) at `local_crop_size` (half the global
size by default) with view 2's photometric ops. They have a quarter of a global view's pixels each and no
teacher pass; the loss compares them with the teachers of both global views.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import kornia.augmentation as K
import torch
from torch import Tensor, nn

from matrixssl.data.registry import DATASETS, DEFAULT_CROP_SCALE
from matrixssl.errors import MatrixSSLError


@dataclass(frozen=True)
class ViewConfig:
    """Which augmentations apply, per dataset; `color=False` for grayscale data (no grayscale op, and the
    jitter keeps only brightness and contrast, the two that mean something on one channel)."""

    crop_size: int
    channels: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    crop_scale: tuple[float, float] = DEFAULT_CROP_SCALE
    color: bool = True
    jitter: tuple[float, float, float, float] = (0.4, 0.4, 0.2, 0.1)  # brightness, contrast, saturation, hue
    jitter_probability: float = 0.8
    grayscale_probability: float = 0.2
    flip_probability: float = 0.5
    blur_probability: tuple[float, float] = (1.0, 0.1)
    solarize_probability: tuple[float, float] = (0.0, 0.2)
    local_views: int = 0
    local_crop_size: int | None = None  # None: half the crop size

    @property
    def local_crop(self) -> tuple[int, tuple[float, float]]:
        """(size, area scale) of a local crop."""
        size = self.local_crop_size or max(1, self.crop_size // 2)
        return size, (min(0.05, self.crop_scale[0]), self.crop_scale[0])

    @property
    def blur_kernel_size(self) -> int:
        """About a tenth of the crop, odd, at least 3 (the MoCo/BYOL convention)."""
        size = max(3, int(0.1 * self.crop_size))
        return size if size % 2 else size + 1


def view_config_for(
    dataset: str, image_size: int, channels: int, mean: tuple[float, ...], std: tuple[float, ...]
) -> ViewConfig:
    """The recipe for a dataset: the full official pipeline from 96 px up, no blur on tiny images. The crop's
    area range and whether to flip come from the dataset's registry entry (an unregistered name: defaults)."""
    config = ViewConfig(image_size, channels, tuple(mean), tuple(std), color=channels == 3)
    spec = DATASETS.get(dataset)
    if spec is not None:
        config = dataclasses.replace(
            config,
            crop_scale=spec.crop_scale,
            flip_probability=config.flip_probability if spec.flips else 0.0,
        )
    if not config.color:
        # Without brightness/contrast jitter two crops of one image share its intensity histogram, a shortcut
        # the network learns instead of shape (what colour jitter prevents on RGB data).
        config = ViewConfig(**{**vars(config), "jitter": (0.4, 0.4, 0.0, 0.0)})
    if image_size <= 32:
        # Blurring a 28-32 px image destroys it; the CIFAR literature drops blur and keeps solarisation.
        config = ViewConfig(**{**vars(config), "blur_probability": (0.0, 0.0)})
    return config


def _branch(config: ViewConfig, view: int, local: bool = False) -> nn.Sequential:
    size, scale = config.local_crop if local else (config.crop_size, config.crop_scale)
    ops: list[nn.Module] = [K.RandomResizedCrop((size, size), scale=scale)]
    if any(config.jitter):
        ops.append(K.ColorJitter(*config.jitter, p=config.jitter_probability))
    if config.color:
        ops.append(K.RandomGrayscale(p=config.grayscale_probability))
    if config.blur_probability[view] > 0:
        kernel = config.blur_kernel_size
        ops.append(K.RandomGaussianBlur((kernel, kernel), (0.1, 2.0), p=config.blur_probability[view]))
    if config.solarize_probability[view] > 0:
        ops.append(K.RandomSolarize(thresholds=0.0, additions=0.0, p=config.solarize_probability[view]))
    if config.flip_probability > 0:
        ops.append(K.RandomHorizontalFlip(p=config.flip_probability))
    return nn.Sequential(*ops)


class TwoViewAugmentation(nn.Module):
    """uint8 (B, C, H, W) -> two normalised float32 views (then the local views, if any), each image with its
    own random parameters."""

    def __init__(self, config: ViewConfig) -> None:
        super().__init__()
        if config.local_views < 0:
            raise MatrixSSLError(f"local_views must be >= 0 (0: no multi-crop), got {config.local_views}")
        self.config = config
        self.branches = nn.ModuleList([_branch(config, 0), _branch(config, 1)])
        self.local_branch = _branch(config, 1, local=True) if config.local_views else None
        self.mean: Tensor
        self.std: Tensor
        self.register_buffer("mean", torch.tensor(config.mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(config.std).view(1, -1, 1, 1), persistent=False)

    def _check(self, images: Tensor) -> None:
        if images.dtype != torch.uint8 or images.dim() != 4:
            raise MatrixSSLError(
                f"views expect a uint8 batch (B, C, H, W), got {images.dtype} of shape {tuple(images.shape)}"
            )
        if images.shape[1] != self.config.channels:
            raise MatrixSSLError(
                f"views are set up for {self.config.channels}-channel images, got {images.shape[1]} channels"
            )

    def _normalise(self, x: Tensor) -> Tensor:
        return (x - self.mean) / self.std

    @torch.no_grad()
    def forward(self, images: Tensor) -> list[Tensor]:
        """[view_1, view_2, local_1, ..., local_L]."""
        self._check(images)
        with torch.autocast(device_type=images.device.type, enabled=False):
            pixels = images.float().div_(255)
            views = [branch(pixels) for branch in self.branches]
            if self.local_branch is not None:
                views += [self.local_branch(pixels) for _ in range(self.config.local_views)]
            return [self._normalise(view) for view in views]

    @torch.no_grad()
    def eval_transform(self, images: Tensor) -> Tensor:
        """No augmentation: to float, resize to the crop size when needed, normalise."""
        self._check(images)
        pixels = images.float().div_(255)
        if pixels.shape[-1] != self.config.crop_size or pixels.shape[-2] != self.config.crop_size:
            pixels = nn.functional.interpolate(
                pixels, size=(self.config.crop_size, self.config.crop_size), mode="bilinear", antialias=True
            )
        return self._normalise(pixels)

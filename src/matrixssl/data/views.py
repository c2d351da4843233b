"""Two augmented views of a whole uint8 batch, made on the device the model runs on.

The official Matrix-SSL/MEC recipe is the asymmetric MoCo v3 / BYOL pair: random resized crop (scale 0.2-1),
colour jitter (0.4, 0.4, 0.2, 0.1) with p 0.8, grayscale p 0.2, horizontal flip, then view 1 always blurred
and view 2 blurred with p 0.1 and solarised with p 0.2. Grayscale data keeps the brightness/contrast part of
the jitter. Every image draws its own random parameters, on the device: each operation is a few batched tensor
operations (crop, resize and flip of a whole batch are one sampling-grid call), and nothing is read back to
the host, so a GPU is neither starved by per-image CPU workers nor stopped by the augmentation.

Multi-crop (Caron et al., SwAV 2020): `local_views` extra small crops per image, each from a smaller area
(DINO's convention: up to the global crops' smallest area, down to 0.05) at `local_crop_size` (half the global
size by default) with view 2's photometric ops. They have a quarter of a global view's pixels each and no
teacher pass; the loss compares them with the teachers of both global views.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from kornia.color import hsv_to_rgb, rgb_to_hsv
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


def random_resized_crop(
    pixels: Tensor, size: int, scale: tuple[float, float], flip_probability: float, attempts: int = 10
) -> Tensor:
    """Each image's own random crop of `scale` of its area and aspect ratio 3/4-4/3, resized to `size` and
    mirrored with `flip_probability`, all images in one sampling-grid call.

    torchvision's sampling: a crop that does not fit is drawn again, up to `attempts` times, then the whole
    (square) image is taken. Here every image draws all its attempts at once and keeps the first that fits;
    every random number is drawn on the images' device, so nothing is read back to the host."""
    batch, device = pixels.shape[0], pixels.device
    area = torch.empty(batch, attempts, device=device).uniform_(*scale)
    ratio = torch.empty(batch, attempts, device=device).uniform_(math.log(3 / 4), math.log(4 / 3)).exp_()
    width, height = (area * ratio).sqrt_(), (area / ratio).sqrt_()  # fractions of the image's side
    fits = (width <= 1) & (height <= 1)
    first = fits.float().argmax(1, keepdim=True)  # the first attempt that fits (0 when none does)
    found = fits.any(1)
    width = torch.where(found, width.gather(1, first).squeeze(1), torch.ones(batch, device=device))
    height = torch.where(found, height.gather(1, first).squeeze(1), torch.ones(batch, device=device))
    left = torch.rand(batch, device=device) * (1 - width)
    top = torch.rand(batch, device=device) * (1 - height)
    mirror = torch.where(torch.rand(batch, device=device) < flip_probability, -1.0, 1.0)
    grid = crop_grid(width * mirror, 2 * left + width - 1, height, 2 * top + height - 1, size)
    return F.grid_sample(pixels, grid, mode="bilinear", padding_mode="border", align_corners=False)


def crop_grid(x_scale: Tensor, x_shift: Tensor, y_scale: Tensor, y_shift: Tensor, size: int) -> Tensor:
    """(B, size, size, 2) sampling grid of axis-aligned crops: output pixel centre c in (-1, 1) reads input
    x = x_scale * c + x_shift (y likewise), per image. What `F.affine_grid` gives for the matrices
    [[x_scale, 0, x_shift], [0, y_scale, y_shift]] (align_corners=False), made from two (B, size) vectors
    instead of a batched matrix product over every output pixel."""
    centres = (2 * torch.arange(size, device=x_scale.device, dtype=x_scale.dtype) + 1) / size - 1
    xs = x_scale[:, None] * centres + x_shift[:, None]  # (B, size), along the width
    ys = y_scale[:, None] * centres + y_shift[:, None]  # (B, size), along the height
    batch = xs.shape[0]
    return torch.stack(
        [xs[:, None, :].expand(batch, size, size), ys[:, :, None].expand(batch, size, size)], -1
    )


def _chosen(batch: int, probability: float, device: torch.device) -> Tensor:
    """(B, 1, 1, 1) mask: True for the images an operation of `probability` applies to."""
    return torch.rand(batch, 1, 1, 1, device=device) < probability


def _gray(pixels: Tensor) -> Tensor:
    """(B, 1, H, W) luma (ITU-R 601, torchvision's weights); one channel is its own gray."""
    if pixels.shape[1] == 1:
        return pixels
    # Python-scalar weights: a weight tensor made from a list would be a blocking copy to the GPU every step.
    return 0.299 * pixels[:, 0:1] + 0.587 * pixels[:, 1:2] + 0.114 * pixels[:, 2:3]


def _factors(batch: int, strength: float, applied: Tensor) -> Tensor:
    """(B, 1, 1, 1) factors in [1 - strength, 1 + strength] where applied, 1 (no change) elsewhere."""
    drawn = torch.empty(batch, 1, 1, 1, device=applied.device).uniform_(1 - strength, 1 + strength)
    return torch.where(applied, drawn, torch.ones_like(drawn))


def _shift_hue(pixels: Tensor, turns: Tensor) -> Tensor:
    """Rotate each image's hue by `turns` (B, 1, 1, 1) of the colour wheel, in HSV."""
    hsv = rgb_to_hsv(pixels)
    hue = torch.remainder(hsv[:, :1] + turns * 2 * math.pi, 2 * math.pi)
    return hsv_to_rgb(torch.cat([hue, hsv[:, 1:]], 1))


def colour_jitter(pixels: Tensor, strengths: tuple[float, float, float, float], probability: float) -> Tensor:
    """torchvision's ColorJitter formulas (brightness scales, contrast blends with the image's mean gray,
    saturation with its gray, hue rotates), each image with its own factors and its own random order of the
    steps (as a per-image pipeline draws it), applied to each image with `probability`."""
    batch, device = pixels.shape[0], pixels.device
    applied = _chosen(batch, probability, device)
    brightness, contrast, saturation, hue = strengths
    steps: list[Callable[[Tensor], Tensor]] = []
    if brightness:
        factor_b = _factors(batch, brightness, applied)
        steps.append(lambda x: (x * factor_b).clamp(0, 1))
    if contrast:
        factor_c = _factors(batch, contrast, applied)
        steps.append(
            lambda x: (factor_c * x + (1 - factor_c) * _gray(x).mean((2, 3), keepdim=True)).clamp(0, 1)
        )
    if saturation and pixels.shape[1] == 3:
        factor_s = _factors(batch, saturation, applied)
        steps.append(lambda x: (factor_s * x + (1 - factor_s) * _gray(x)).clamp(0, 1))
    if hue and pixels.shape[1] == 3:
        turns = torch.empty(batch, 1, 1, 1, device=device).uniform_(-hue, hue) * applied
        steps.append(lambda x: _shift_hue(x, turns))
    # Slot by slot, every image takes the step its own permutation puts there: all steps are computed on the
    # whole batch and each image keeps its own step's result, which needs no value on the host.
    order = torch.rand(batch, len(steps), device=device).argsort(1).view(batch, len(steps), 1, 1, 1)
    for slot in range(len(steps)):
        results = [step(pixels) for step in steps]
        pixels = results[0]
        for index, result in enumerate(results[1:], start=1):
            pixels = torch.where(order[:, slot] == index, result, pixels)
    return pixels


def gaussian_blur(pixels: Tensor, kernel_size: int, sigma: tuple[float, float], probability: float) -> Tensor:
    """Each image blurred with its own sigma drawn from `sigma`, with `probability` (separable, reflected
    borders)."""
    batch, channels, height, width = pixels.shape
    device = pixels.device
    sigmas = torch.empty(batch, 1, device=device).uniform_(*sigma)
    offsets = torch.arange(kernel_size, device=device, dtype=pixels.dtype) - (kernel_size - 1) / 2
    kernels = torch.exp(-(offsets**2) / (2 * sigmas**2))
    kernels = (kernels / kernels.sum(1, keepdim=True)).repeat_interleave(channels, 0)  # (B*C, k)
    flat = pixels.reshape(1, batch * channels, height, width)
    pad = kernel_size // 2
    flat = F.conv2d(
        F.pad(flat, (pad, pad, 0, 0), mode="reflect"),
        kernels.view(-1, 1, 1, kernel_size),
        groups=batch * channels,
    )
    flat = F.conv2d(
        F.pad(flat, (0, 0, pad, pad), mode="reflect"),
        kernels.view(-1, 1, kernel_size, 1),
        groups=batch * channels,
    )
    return torch.where(_chosen(batch, probability, device), flat.view_as(pixels), pixels)


class TwoViewAugmentation(nn.Module):
    """uint8 (B, C, H, W) -> two normalised float32 views (then the local views, if any), each image with its
    own random parameters."""

    def __init__(self, config: ViewConfig) -> None:
        super().__init__()
        if config.local_views < 0:
            raise MatrixSSLError(f"local_views must be >= 0 (0: no multi-crop), got {config.local_views}")
        self.config = config
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
            views = [self._view(pixels, 0), self._view(pixels, 1)]
            views += [self._view(pixels, 1, local=True) for _ in range(self.config.local_views)]
            return [self._normalise(view) for view in views]

    def operations(self, view: int) -> tuple[str, ...]:
        """The operations view `view` (0 or 1; local views follow view 1) applies, in order."""
        c = self.config
        steps = {
            "crop": True,
            "flip": c.flip_probability > 0,
            "jitter": any(c.jitter) and c.jitter_probability > 0,
            "grayscale": c.color and c.grayscale_probability > 0,
            "blur": c.blur_probability[view] > 0,
            "solarize": c.solarize_probability[view] > 0,
        }
        return tuple(name for name, applies in steps.items() if applies)

    def _view(self, pixels: Tensor, view: int, local: bool = False) -> Tensor:
        c = self.config
        size, scale = c.local_crop if local else (c.crop_size, c.crop_scale)
        operations = self.operations(view)
        x = random_resized_crop(pixels, size, scale, c.flip_probability)
        if "jitter" in operations:
            x = colour_jitter(x, c.jitter, c.jitter_probability)
        if "grayscale" in operations:
            x = torch.where(_chosen(x.shape[0], c.grayscale_probability, x.device), _gray(x).expand_as(x), x)
        if "blur" in operations:
            x = gaussian_blur(x, c.blur_kernel_size, (0.1, 2.0), c.blur_probability[view])
        if "solarize" in operations:
            solarized = torch.where(x >= 0.5, 1 - x, x)
            x = torch.where(_chosen(x.shape[0], c.solarize_probability[view], x.device), solarized, x)
        return x

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

"""Light augmentation for evaluation that trains on images: random resized crop and horizontal flip only.

Linear evaluation with augmentation and semi-supervised fine-tuning use the crop/flip part of the pretraining
recipe (its crop scale, and no flips for digits) without the colour and blur distortions, with pretraining's
own batched crop (`matrixssl.data.views.random_resized_crop`). Cropping, resizing and flipping commute with the
per-channel normalisation, so they are applied to the recipe's eval transform.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from matrixssl.data.views import TwoViewAugmentation, random_resized_crop


def crop_flip(views: TwoViewAugmentation) -> Callable[[Tensor], Tensor]:
    """uint8 batch -> normalised, randomly cropped (and flipped) model input; each image draws its own crop."""
    recipe = views.config

    @torch.no_grad()
    def transform(images: Tensor) -> Tensor:
        # Square at the crop size: the crop's area and aspect-ratio fractions are the image's own.
        pixels = views.eval_transform(images)
        return random_resized_crop(pixels, recipe.crop_size, recipe.crop_scale, recipe.flip_probability)

    return transform


def image_batch(dataset: torch.utils.data.Dataset[tuple[Tensor, int]], index: Tensor) -> Tensor:
    """The uint8 images at `index`, stacked; works for lazily decoded datasets too."""
    return torch.stack([dataset[int(i)][0] for i in index])

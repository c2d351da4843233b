"""Light augmentation for evaluation that trains on images: random resized crop and horizontal flip only.

Linear evaluation with augmentation and semi-supervised fine-tuning use the crop/flip part of the pretraining
recipe (its crop scale, and no flips for digits) without the colour and blur distortions. Cropping, resizing
and flipping commute with the per-channel normalisation, so they are applied to the recipe's eval transform.
"""

from __future__ import annotations

from collections.abc import Callable

import kornia.augmentation as K
import torch
from torch import Tensor, nn

from matrixssl.data.views import TwoViewAugmentation


def crop_flip(views: TwoViewAugmentation) -> Callable[[Tensor], Tensor]:
    """uint8 batch -> normalised, randomly cropped (and flipped) model input; each image draws its own crop."""
    recipe = views.config
    ops: list[nn.Module] = [
        K.RandomResizedCrop((recipe.crop_size, recipe.crop_size), scale=recipe.crop_scale)
    ]
    if recipe.flip_probability > 0:
        ops.append(K.RandomHorizontalFlip(p=recipe.flip_probability))
    augment = nn.Sequential(*ops)

    @torch.no_grad()
    def transform(images: Tensor) -> Tensor:
        return augment(views.eval_transform(images))

    return transform


def image_batch(dataset: torch.utils.data.Dataset[tuple[Tensor, int]], index: Tensor) -> Tensor:
    """The uint8 images at `index`, stacked; works for lazily decoded datasets too."""
    return torch.stack([dataset[int(i)][0] for i in index])

"""The evaluation's crop and flip: pretraining's batched crop applied to the recipe's eval transform."""

from __future__ import annotations

import dataclasses

import torch

from matrixssl.data.views import TwoViewAugmentation, ViewConfig
from matrixssl.eval.augment import crop_flip

RECIPE = ViewConfig(crop_size=12, channels=3, mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.3))


def _images(n: int = 6, size: int = 12) -> torch.Tensor:
    return torch.randint(
        0, 256, (n, 3, size, size), generator=torch.Generator().manual_seed(3), dtype=torch.uint8
    )


def test_a_whole_image_crop_is_the_eval_transform_mirrored_as_the_recipe_says() -> None:
    # Scale 1: no crop of another aspect ratio fits, so every image falls back to itself, resized (not at all).
    whole = dataclasses.replace(RECIPE, crop_scale=(1.0, 1.0))
    images = _images()
    for flip, expected in ((0.0, lambda x: x), (1.0, lambda x: x.flip(-1))):
        views = TwoViewAugmentation(dataclasses.replace(whole, flip_probability=flip))
        out = crop_flip(views)(images)
        torch.testing.assert_close(out, expected(views.eval_transform(images)), atol=1e-5, rtol=0)


def test_each_image_draws_its_own_crop_at_the_crop_size() -> None:
    views = TwoViewAugmentation(dataclasses.replace(RECIPE, crop_size=8))
    torch.manual_seed(0)
    images = _images(1).expand(5, -1, -1, -1)  # one image five times: different outputs are different crops
    out = crop_flip(views)(images)
    assert out.shape == (5, 3, 8, 8) and out.dtype == torch.float32 and not out.requires_grad
    assert len({tuple(row.tolist()) for row in out.flatten(1)}) == 5

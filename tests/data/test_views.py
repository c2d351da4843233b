"""Batched two-view augmentation: the recipe each registry entry gives, shapes, independence per image,
determinism, identity case, errors."""

from __future__ import annotations

import dataclasses
import inspect

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from matrixssl.data import DATASETS
from matrixssl.data import views as views_module
from matrixssl.data.views import TwoViewAugmentation, ViewConfig, view_config_for
from matrixssl.errors import MatrixSSLError

GRAY = view_config_for("fashion-mnist", 28, 1, (0.286,), (0.353,))
COLOR = view_config_for("stl10", 48, 3, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))


def batch(channels: int, size: int, n: int = 8) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (n, channels, size, size), dtype=torch.uint8, generator=generator)


@pytest.mark.parametrize("config", [GRAY, COLOR])
def test_two_normalised_float_views_that_differ(config: ViewConfig) -> None:
    images = batch(config.channels, config.crop_size)
    view_1, view_2 = TwoViewAugmentation(config)(images)
    assert view_1.shape == view_2.shape == images.shape
    assert view_1.dtype == view_2.dtype == torch.float32
    assert not torch.equal(view_1, view_2)


def test_each_image_draws_its_own_parameters() -> None:
    image = batch(1, 28, n=1)
    view_1, _ = TwoViewAugmentation(GRAY)(image.repeat(16, 1, 1, 1))
    distinct = {tuple(v.flatten().tolist()) for v in view_1}
    assert len(distinct) > 8


def test_same_seed_same_views() -> None:
    images = batch(3, 48)
    augment = TwoViewAugmentation(COLOR)
    torch.manual_seed(5)
    first = augment(images)
    torch.manual_seed(5)
    second = augment(images)
    assert all(torch.equal(a, b) for a, b in zip(first, second))


def test_eval_transform_normalises_known_values() -> None:
    augment = TwoViewAugmentation(GRAY)
    out = augment.eval_transform(torch.full((2, 1, 28, 28), 255, dtype=torch.uint8))
    torch.testing.assert_close(out, torch.full_like(out, (1 - 0.286) / 0.353))
    resized = TwoViewAugmentation(dataclasses.replace(COLOR, crop_size=32)).eval_transform(batch(3, 48))
    assert resized.shape == (8, 3, 32, 32)


def test_without_random_ops_the_views_equal_the_eval_transform() -> None:
    identity = dataclasses.replace(
        COLOR,
        crop_scale=(1.0, 1.0),
        jitter_probability=0.0,
        grayscale_probability=0.0,
        flip_probability=0.0,
        blur_probability=(0.0, 0.0),
        solarize_probability=(0.0, 0.0),
    )
    augment = TwoViewAugmentation(identity)
    images = batch(3, 48)
    view_1, view_2 = augment(images)
    expected = augment.eval_transform(images)
    # the sampling grid's coordinates are computed in float32: a few 1e-5 of rounding on normalised pixels
    torch.testing.assert_close(view_1, expected, atol=5e-5, rtol=0)
    torch.testing.assert_close(view_2, expected, atol=5e-5, rtol=0)


def test_recipes_per_dataset() -> None:
    assert not GRAY.color and GRAY.blur_probability == (0.0, 0.0) and GRAY.solarize_probability == (0.0, 0.2)
    assert COLOR.color and COLOR.blur_probability == (1.0, 0.1) and COLOR.blur_kernel_size == 5
    assert view_config_for("imagenet", 224, 3, (0.5,) * 3, (0.2,) * 3).blur_kernel_size == 23
    digits = view_config_for("mnist", 28, 1, (0.13,), (0.31,))
    assert digits.flip_probability == 0.0 and digits.crop_scale == (0.3, 1.0)
    assert TwoViewAugmentation(GRAY).operations(1) == ("crop", "flip", "jitter", "solarize")
    assert TwoViewAugmentation(COLOR).operations(0) == ("crop", "flip", "jitter", "grayscale", "blur")
    # One channel: brightness and contrast jitter only.
    assert GRAY.jitter == (0.4, 0.4, 0.0, 0.0) and COLOR.jitter == (0.4, 0.4, 0.2, 0.1)


@pytest.mark.parametrize(
    ("dataset", "size", "channels", "crop_scale", "flip", "blur"),
    [
        ("fashion-mnist", 28, 1, (0.25, 1.0), 0.5, (0.0, 0.0)),
        ("mnist", 28, 1, (0.3, 1.0), 0.0, (0.0, 0.0)),
        ("cifar10", 32, 3, (0.2, 1.0), 0.5, (0.0, 0.0)),
        ("cifar100", 32, 3, (0.2, 1.0), 0.5, (0.0, 0.0)),
        ("stl10", 96, 3, (0.2, 1.0), 0.5, (1.0, 0.1)),
        ("imagefolder", 224, 3, (0.2, 1.0), 0.5, (1.0, 0.1)),
        ("not-registered", 64, 3, (0.2, 1.0), 0.5, (1.0, 0.1)),
    ],
)
def test_each_dataset_gets_the_recipe_it_always_had(
    dataset: str,
    size: int,
    channels: int,
    crop_scale: tuple[float, float],
    flip: float,
    blur: tuple[float, float],
) -> None:
    mean, std = (0.5,) * channels, (0.25,) * channels
    jitter = (0.4, 0.4, 0.2, 0.1) if channels == 3 else (0.4, 0.4, 0.0, 0.0)
    expected = ViewConfig(
        size,
        channels,
        mean,
        std,
        crop_scale=crop_scale,
        color=channels == 3,
        jitter=jitter,
        jitter_probability=0.8,
        grayscale_probability=0.2,
        flip_probability=flip,
        blur_probability=blur,
        solarize_probability=(0.0, 0.2),
    )
    assert view_config_for(dataset, size, channels, mean, std) == expected


def test_the_crop_and_flips_come_from_the_registry_entry(monkeypatch: pytest.MonkeyPatch) -> None:
    changed = dataclasses.replace(DATASETS["cifar10"], crop_scale=(0.5, 0.9), flips=False)
    monkeypatch.setitem(DATASETS, "cifar10", changed)
    config = view_config_for("cifar10", 32, 3, (0.5,) * 3, (0.25,) * 3)
    assert config.crop_scale == (0.5, 0.9) and config.flip_probability == 0.0
    assert "flip" not in TwoViewAugmentation(config).operations(0)


def test_the_views_module_names_no_dataset() -> None:
    source = inspect.getsource(views_module)
    assert [name for name in DATASETS if f'"{name}"' in source or f"'{name}'" in source] == []


def test_grayscale_jitter_changes_intensity_not_shape() -> None:
    """Two jittered copies of one image differ in brightness/contrast, but stay almost perfectly correlated."""
    jitter_only = dataclasses.replace(
        GRAY,
        crop_scale=(1.0, 1.0),
        jitter_probability=1.0,
        flip_probability=0.0,
        solarize_probability=(0.0, 0.0),
    )
    torch.manual_seed(0)
    view_1, view_2 = TwoViewAugmentation(jitter_only)(batch(1, 28)[:1].expand(64, 1, 28, 28).contiguous())
    brightness = view_1.mean((1, 2, 3))
    assert brightness.std() > 0.05  # each image drew its own factors
    a, b = view_1[0].flatten(), view_1[1].flatten()
    correlation = torch.corrcoef(torch.stack([a, b]))[0, 1]
    assert correlation > 0.95  # not 1: values pushed past black or white are clipped


def test_views_stay_float32_under_autocast() -> None:
    with torch.autocast("cpu", dtype=torch.bfloat16):
        view_1, view_2 = TwoViewAugmentation(COLOR)(batch(3, 48))
    assert view_1.dtype == view_2.dtype == torch.float32


def test_bad_input_errors() -> None:
    augment = TwoViewAugmentation(GRAY)
    with pytest.raises(MatrixSSLError, match="uint8"):
        augment(torch.rand(2, 1, 28, 28))
    with pytest.raises(MatrixSSLError, match="1-channel"):
        augment(batch(3, 28))


def test_local_views_are_smaller_crops_of_smaller_areas() -> None:
    multi = dataclasses.replace(GRAY, local_views=3, jitter_probability=0.0, solarize_probability=(0.0, 0.0))
    assert multi.local_crop == (14, (0.05, 0.25))  # half of 28 px; areas up to the global crops' smallest
    views = TwoViewAugmentation(multi)(batch(1, 28))
    assert [tuple(v.shape) for v in views] == [(8, 1, 28, 28)] * 2 + [(8, 1, 14, 14)] * 3
    assert not torch.equal(views[2], views[3])
    # A crop of at most a quarter of the area, resized to 14 px, against the whole image at 14 px: not the same.
    whole = nn.functional.interpolate(views[0], size=(14, 14), mode="bilinear", antialias=True)
    assert not torch.allclose(views[2], whole, atol=0.1)
    sized = dataclasses.replace(GRAY, local_views=1, local_crop_size=10)
    assert TwoViewAugmentation(sized)(batch(1, 28))[2].shape == (8, 1, 10, 10)
    assert len(TwoViewAugmentation(GRAY)(batch(1, 28))) == 2
    with pytest.raises(MatrixSSLError, match="local_views must be >= 0"):
        TwoViewAugmentation(dataclasses.replace(GRAY, local_views=-1))


def test_random_resized_crop_samples_like_torchvision() -> None:
    """Whole image at scale 1 (no box of another aspect ratio fits, so every attempt fails and the whole image
    is taken); otherwise crops of the asked area; flips mirror the crop."""
    torch.manual_seed(0)
    ramp = torch.linspace(0, 1, 32).expand(64, 1, 32, 32).contiguous()
    whole = views_module.random_resized_crop(ramp, 32, (1.0, 1.0), flip_probability=0.0)
    torch.testing.assert_close(whole, ramp, atol=1e-5, rtol=0)
    mirrored = views_module.random_resized_crop(ramp, 32, (1.0, 1.0), flip_probability=1.0)
    torch.testing.assert_close(mirrored, ramp.flip(-1), atol=1e-5, rtol=0)
    small = views_module.random_resized_crop(ramp, 32, (0.25, 0.25), flip_probability=0.0)
    spans = small[:, 0, 0, -1] - small[:, 0, 0, 0]  # horizontal extent of each crop, in ramp units
    assert ((spans > 0.3) & (spans < 0.62)).all()  # width sqrt(0.25 x ratio), ratio in [3/4, 4/3]


def test_crop_grid_equals_affine_grid_of_the_same_crops() -> None:
    torch.manual_seed(0)
    x_scale, x_shift, y_scale, y_shift = (torch.rand(16) * 2 - 1 for _ in range(4))
    theta = torch.zeros(16, 2, 3)
    theta[:, 0, 0], theta[:, 0, 2], theta[:, 1, 1], theta[:, 1, 2] = x_scale, x_shift, y_scale, y_shift
    for size in (1, 7, 14, 28):
        expected = F.affine_grid(theta, [16, 1, size, size], align_corners=False)
        grid = views_module.crop_grid(x_scale, x_shift, y_scale, y_shift, size)
        torch.testing.assert_close(grid, expected, atol=1e-6, rtol=0)


def test_each_image_gets_its_own_jitter_order_and_factors() -> None:
    torch.manual_seed(0)
    image = torch.rand(1, 1, 8, 8).expand(256, 1, 8, 8)
    out = views_module.colour_jitter(image, (0.4, 0.4, 0.0, 0.0), probability=1.0)
    assert len({round(float(v), 5) for v in out.mean((1, 2, 3))}) > 200
    untouched = views_module.colour_jitter(image, (0.4, 0.4, 0.0, 0.0), probability=0.0)
    torch.testing.assert_close(untouched, image)


def test_each_image_applies_the_jitter_steps_in_one_of_their_orders(monkeypatch: pytest.MonkeyPatch) -> None:
    """With the factors fixed, every image comes out as brightness-then-contrast or contrast-then-brightness
    (they differ through clamping), and the batch holds both orders."""
    fixed = iter((1.4, 0.5))  # brightness, then contrast: the order colour_jitter draws them in
    monkeypatch.setattr(
        views_module, "_factors", lambda batch, strength, applied: torch.full((batch, 1, 1, 1), next(fixed))
    )
    torch.manual_seed(0)
    image = torch.rand(1, 1, 8, 8)
    out = views_module.colour_jitter(image.expand(256, 1, 8, 8), (0.4, 0.4, 0.0, 0.0), probability=1.0)

    def brightness(x: torch.Tensor) -> torch.Tensor:
        return (1.4 * x).clamp(0, 1)

    def contrast(x: torch.Tensor) -> torch.Tensor:
        return (0.5 * x + 0.5 * x.mean()).clamp(0, 1)

    first_brightness, first_contrast = contrast(brightness(image)), brightness(contrast(image))
    assert (first_brightness - first_contrast).abs().max() > 0.05
    matches = [
        (torch.allclose(o, first_brightness[0], atol=1e-6), torch.allclose(o, first_contrast[0], atol=1e-6))
        for o in out
    ]
    assert all(a != b for a, b in matches)  # exactly one of the two orders, image by image
    assert 50 < sum(a for a, _ in matches) < 206

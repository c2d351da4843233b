"""ResNets: torchvision's exact state-dict layout, forward shapes for every option, initialisation."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from matrixssl.errors import MatrixSSLError
from matrixssl.models import BasicBlock, Bottleneck, ResNet, build_backbone


def torchvision_layout(name: str) -> dict[str, tuple[int, ...]]:
    """Key -> shape of `torchvision.models.<name>(num_classes=1000).state_dict()`, written out from its source.

    Independent of matrixssl's implementation: stages of (planes, blocks), v1.5 bottleneck (stride on the 3x3),
    a 1x1-conv + BN downsample on the first block of each stage whose shape or stride changes.
    """
    bottleneck = name == "resnet50"
    counts = {"resnet18": (2, 2, 2, 2), "resnet34": (3, 4, 6, 3), "resnet50": (3, 4, 6, 3)}[name]
    expansion = 4 if bottleneck else 1
    layout: dict[str, tuple[int, ...]] = {}

    def bn(prefix: str, channels: int) -> None:
        for key in ("weight", "bias", "running_mean", "running_var"):
            layout[f"{prefix}.{key}"] = (channels,)
        layout[f"{prefix}.num_batches_tracked"] = ()

    layout["conv1.weight"] = (64, 3, 7, 7)
    bn("bn1", 64)
    in_planes = 64
    for stage, (planes, count) in enumerate(zip((64, 128, 256, 512), counts), start=1):
        for index in range(count):
            p = f"layer{stage}.{index}"
            if bottleneck:
                layout[f"{p}.conv1.weight"] = (planes, in_planes, 1, 1)
                bn(f"{p}.bn1", planes)
                layout[f"{p}.conv2.weight"] = (planes, planes, 3, 3)
                bn(f"{p}.bn2", planes)
                layout[f"{p}.conv3.weight"] = (planes * 4, planes, 1, 1)
                bn(f"{p}.bn3", planes * 4)
            else:
                layout[f"{p}.conv1.weight"] = (planes, in_planes, 3, 3)
                bn(f"{p}.bn1", planes)
                layout[f"{p}.conv2.weight"] = (planes, planes, 3, 3)
                bn(f"{p}.bn2", planes)
            if index == 0 and (stage > 1 or in_planes != planes * expansion):
                layout[f"{p}.downsample.0.weight"] = (planes * expansion, in_planes, 1, 1)
                bn(f"{p}.downsample.1", planes * expansion)
            in_planes = planes * expansion
    layout["fc.weight"] = (1000, 512 * expansion)
    layout["fc.bias"] = (1000,)
    return layout


@pytest.mark.parametrize(
    ("name", "parameters", "keys", "features"),
    [
        ("resnet18", 11_689_512, 122, 512),
        ("resnet34", 21_797_672, 218, 512),
        ("resnet50", 25_557_032, 320, 2048),
    ],
)
def test_state_dict_matches_torchvision(name: str, parameters: int, keys: int, features: int) -> None:
    model = build_backbone(name, stem="imagenet", width=1.0, num_classes=1000)
    state = model.state_dict()
    assert sum(p.numel() for p in model.parameters()) == parameters
    assert len(state) == keys
    assert model.num_features == features
    expected = torchvision_layout(name)
    assert list(state) == list(expected)  # same names in the same order
    assert {k: tuple(v.shape) for k, v in state.items()} == expected


def test_specific_keys() -> None:
    r18 = build_backbone("resnet18", num_classes=1000, stem="imagenet").state_dict()
    assert r18["layer2.0.downsample.0.weight"].shape == (128, 64, 1, 1)
    assert r18["layer4.1.conv2.weight"].shape == (512, 512, 3, 3)
    assert "layer1.0.downsample.0.weight" not in r18
    r50 = build_backbone("resnet50", num_classes=1000, stem="imagenet").state_dict()
    assert r50["layer1.0.downsample.0.weight"].shape == (256, 64, 1, 1)  # channel change, stride 1
    assert r50["layer3.5.conv3.weight"].shape == (1024, 256, 1, 1)
    assert r50["layer4.0.conv2.weight"].shape == (512, 512, 3, 3)
    assert r50["fc.weight"].shape == (1000, 2048)


def test_cifar_stem_changes_only_conv1() -> None:
    imagenet = build_backbone("resnet18", stem="imagenet").state_dict()
    cifar = build_backbone("resnet18", stem="cifar").state_dict()
    assert list(imagenet) == list(cifar)
    assert cifar["conv1.weight"].shape == (64, 3, 3, 3)
    assert all(imagenet[k].shape == cifar[k].shape for k in imagenet if k != "conv1.weight")


def test_small_stem_is_the_cifar_stem_with_stride_2() -> None:
    small = build_backbone("resnet18", stem="small", width=0.25, in_channels=1)
    cifar = build_backbone("resnet18", stem="cifar", width=0.25, in_channels=1)
    assert {k: v.shape for k, v in small.state_dict().items()} == {
        k: v.shape for k, v in cifar.state_dict().items()
    }
    assert small.conv1.stride == (2, 2) and cifar.conv1.stride == (1, 1)
    x = torch.randn(2, 1, 28, 28)
    assert small.layer1(small.relu(small.bn1(small.conv1(x)))).shape == (2, 16, 14, 14)
    assert small(x).shape == (2, 128)


def test_no_classifier_without_num_classes() -> None:
    model = build_backbone("resnet18")
    assert model.fc is None
    assert not any(k.startswith("fc.") for k in model.state_dict())


def test_state_dict_round_trip_strict() -> None:
    source = build_backbone("resnet18", stem="cifar", width=0.25, num_classes=10)
    target = build_backbone("resnet18", stem="cifar", width=0.25, num_classes=10)
    target.load_state_dict(source.state_dict(), strict=True)
    x = torch.randn(2, 3, 16, 16)
    source.eval(), target.eval()
    torch.testing.assert_close(source(x), target(x))


@pytest.mark.parametrize(
    ("name", "stem", "width", "size", "features"),
    [
        ("resnet18", "cifar", 0.25, 32, 128),
        ("resnet18", "imagenet", 0.25, 64, 128),
        ("resnet34", "cifar", 0.125, 16, 64),
        ("resnet50", "cifar", 0.125, 16, 256),
        ("resnet50", "imagenet", 0.25, 64, 512),
    ],
)
def test_forward_shapes(name: str, stem: str, width: float, size: int, features: int) -> None:
    model = build_backbone(name, stem=stem, width=width)
    assert model.num_features == features
    out = model(torch.randn(3, 3, size, size))
    assert out.shape == (3, features)


def test_width_rounding_and_minimum() -> None:
    assert build_backbone("resnet18", width=0.25).base_width == 16
    assert build_backbone("resnet18", width=0.3).base_width == 19  # round(19.2)
    assert build_backbone("resnet18", width=0.001, blocks=(1, 1, 1, 1)).base_width == 1
    assert build_backbone("resnet50", width=0.001, blocks=(1, 1, 1, 1)).num_features == 32


def test_grayscale_input_and_logits() -> None:
    model = build_backbone("resnet18", stem="cifar", width=0.125, in_channels=1, num_classes=10)
    assert model.conv1.weight.shape == (8, 1, 3, 3)
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, 10)
    assert model.forward_features(torch.randn(2, 1, 28, 28)).shape == (2, model.num_features)


def test_blocks_override() -> None:
    model = build_backbone("resnet18", blocks=(1, 1, 1, 1), width=0.125)
    assert [len(getattr(model, f"layer{i}")) for i in range(1, 5)] == [1, 1, 1, 1]
    second = build_backbone("resnet50", blocks=(1, 2, 1, 1)).layer2[1]
    assert isinstance(second, Bottleneck) and second.conv1.weight.shape == (128, 512, 1, 1)


def test_channels_last_matches_contiguous() -> None:
    model = build_backbone("resnet18", stem="cifar", width=0.125, blocks=(1, 1, 1, 1)).eval()
    x = torch.randn(2, 3, 16, 16)
    expected = model(x)
    model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    out = model(x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-5)
    out.sum().backward()  # autograd through flatten on a channels_last tensor


@pytest.mark.parametrize("name", ["resnet18", "resnet50"])
def test_zero_init_residual_makes_blocks_shortcuts(name: str) -> None:
    model = build_backbone(name, stem="cifar", width=0.125, zero_init_residual=True)
    blocks = [m for m in model.modules() if isinstance(m, BasicBlock | Bottleneck)]
    assert len(blocks) == (8 if name == "resnet18" else 16)
    x = torch.randn(2, 3, 16, 16)
    x = model.maxpool(model.relu(model.bn1(model.conv1(x))))
    for block in blocks:
        assert torch.count_nonzero(block.last_bn.weight) == 0
        assert torch.count_nonzero(block.residual(x)) == 0
        shortcut = x if block.downsample is None else block.downsample(x)
        y = block(x)
        torch.testing.assert_close(y, torch.relu(shortcut))
        x = y


def test_default_init_like_torchvision() -> None:
    model = build_backbone("resnet50", stem="cifar", width=0.5)
    block = model.layer3[0]
    assert isinstance(block, Bottleneck)
    conv = block.conv2  # 128 -> 128, 3x3: fan_out = 128 * 9
    expected_std = math.sqrt(2.0 / (conv.out_channels * 9))
    assert conv.weight.std().item() == pytest.approx(expected_std, rel=0.05)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            assert torch.all(m.weight == 1) and torch.all(m.bias == 0)  # zero_init_residual is off by default


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"stem": "tiny"}, "stem"),
        ({"width": 0.0}, "width"),
        ({"in_channels": 0}, "in_channels"),
        ({"blocks": (2, 2, 2)}, "blocks"),
        ({"num_classes": 0}, "num_classes"),
    ],
)
def test_bad_options_are_user_errors(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(MatrixSSLError, match=message):
        build_backbone("resnet18", **kwargs)


def test_unknown_backbone_lists_valid_names() -> None:
    with pytest.raises(MatrixSSLError, match="resnet18, resnet34, resnet50"):
        build_backbone("resnet101")
    assert isinstance(build_backbone("resnet34", blocks=(1, 1, 1, 1), width=0.125), ResNet)

"""Weight export: torchvision's ResNet keys and shapes (a hand-written table), detectron2's renaming and file."""

from __future__ import annotations

import importlib.util
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from matrixssl.eval.export import (
    detectron2_key,
    detectron2_weights,
    export_backbone,
    torchvision_differences,
    torchvision_state_dict,
)
from matrixssl.models import build_backbone

# torchvision.models.resnet18/50 without fc, written out from torchvision's definition:
# (block name, input channels, bottleneck width, output channels, has a downsample branch).
RESNET18_BLOCKS = [
    ("layer1.0", 64, 64, 64, False),
    ("layer1.1", 64, 64, 64, False),
    ("layer2.0", 64, 128, 128, True),
    ("layer2.1", 128, 128, 128, False),
    ("layer3.0", 128, 256, 256, True),
    ("layer3.1", 256, 256, 256, False),
    ("layer4.0", 256, 512, 512, True),
    ("layer4.1", 512, 512, 512, False),
]
RESNET50_BLOCKS = [
    ("layer1.0", 64, 64, 256, True),
    ("layer1.1", 256, 64, 256, False),
    ("layer1.2", 256, 64, 256, False),
    ("layer2.0", 256, 128, 512, True),
    ("layer2.1", 512, 128, 512, False),
    ("layer2.2", 512, 128, 512, False),
    ("layer2.3", 512, 128, 512, False),
    ("layer3.0", 512, 256, 1024, True),
    ("layer3.1", 1024, 256, 1024, False),
    ("layer3.2", 1024, 256, 1024, False),
    ("layer3.3", 1024, 256, 1024, False),
    ("layer3.4", 1024, 256, 1024, False),
    ("layer3.5", 1024, 256, 1024, False),
    ("layer4.0", 1024, 512, 2048, True),
    ("layer4.1", 2048, 512, 2048, False),
    ("layer4.2", 2048, 512, 2048, False),
]


def batch_norm(prefix: str, channels: int) -> dict[str, tuple[int, ...]]:
    shapes = {name: (channels,) for name in ("weight", "bias", "running_mean", "running_var")}
    return {f"{prefix}.{name}": shape for name, shape in {**shapes, "num_batches_tracked": ()}.items()}


def torchvision_table(
    blocks: list[tuple[str, int, int, int, bool]], bottleneck: bool
) -> dict[str, tuple[int, ...]]:
    table = {"conv1.weight": (64, 3, 7, 7), **batch_norm("bn1", 64)}
    for name, inputs, width, outputs, downsample in blocks:
        if bottleneck:
            convs = [(width, inputs, 1, 1), (width, width, 3, 3), (outputs, width, 1, 1)]
        else:
            convs = [(width, inputs, 3, 3), (outputs, width, 3, 3)]
        for index, shape in enumerate(convs, start=1):
            table[f"{name}.conv{index}.weight"] = shape
            table.update(batch_norm(f"{name}.bn{index}", shape[0]))
        if downsample:
            table[f"{name}.downsample.0.weight"] = (outputs, inputs, 1, 1)
            table.update(batch_norm(f"{name}.downsample.1", outputs))
    return table


@pytest.mark.parametrize(
    ("name", "blocks", "bottleneck", "keys", "parameters"),
    [
        # torchvision: 122 / 320 state-dict entries and 11,689,512 / 25,557,032 parameters, fc included.
        ("resnet18", RESNET18_BLOCKS, False, 120, 11_689_512 - 513_000),
        ("resnet50", RESNET50_BLOCKS, True, 318, 25_557_032 - 2_049_000),
    ],
)
def test_torchvision_export_has_torchvisions_keys_and_shapes(
    name: str, blocks: list, bottleneck: bool, keys: int, parameters: int, tmp_path: Path
) -> None:
    backbone = build_backbone(name, stem="imagenet", num_classes=1000)  # the fc must not be exported
    expected = torchvision_table(blocks, bottleneck)
    assert len(expected) == keys
    state = torchvision_state_dict(backbone)
    assert {k: tuple(v.shape) for k, v in state.items()} == expected
    assert torchvision_differences(backbone) == []
    written = export_backbone(backbone, "torchvision", tmp_path / "backbone.pth")
    assert written["keys"] == keys and written["parameters"] == parameters
    loaded = torch.load(tmp_path / "backbone.pth", weights_only=True)
    assert all(torch.equal(loaded[k], backbone.state_dict()[k]) for k in expected)


@pytest.mark.skipif(
    importlib.util.find_spec("torchvision") is None, reason="torchvision is not importable here"
)
def test_torchvision_loads_the_export_strictly() -> None:
    import torchvision

    backbone = build_backbone("resnet50", stem="imagenet")
    model = torchvision.models.resnet50()
    del model.fc
    model.load_state_dict(torchvision_state_dict(backbone), strict=True)


def test_detectron2_renaming_follows_moco() -> None:
    renamed = {
        "conv1.weight": "stem.conv1.weight",
        "bn1.weight": "stem.conv1.norm.weight",
        "bn1.running_var": "stem.conv1.norm.running_var",
        "layer1.0.conv1.weight": "res2.0.conv1.weight",
        "layer1.0.bn3.running_mean": "res2.0.conv3.norm.running_mean",
        "layer1.0.downsample.0.weight": "res2.0.shortcut.weight",
        "layer3.0.downsample.1.bias": "res4.0.shortcut.norm.bias",
        "layer4.2.bn2.bias": "res5.2.conv2.norm.bias",
        "layer2.1.conv2.weight": "res3.1.conv2.weight",
    }
    assert {key: detectron2_key(key) for key in renamed} == renamed


def test_detectron2_file_is_the_pickled_weights_dict(tmp_path: Path) -> None:
    backbone = build_backbone("resnet50", stem="imagenet")
    state = torchvision_state_dict(backbone)
    weights = detectron2_weights(state)
    assert weights["matching_heuristics"] is True and weights["__author__"] == "matrixssl"
    model = weights["model"]
    assert len(model) == 318 - 53  # every entry but the 53 BatchNorm step counters
    assert all(isinstance(v, np.ndarray) for v in model.values())
    assert model["res4.5.conv3.weight"].shape == (1024, 256, 1, 1)
    assert model["res5.0.shortcut.weight"].shape == (2048, 1024, 1, 1)
    np.testing.assert_array_equal(model["stem.conv1.norm.running_var"], state["bn1.running_var"].numpy())
    written = export_backbone(backbone, "detectron2", tmp_path / "backbone.pkl")
    with open(tmp_path / "backbone.pkl", "rb") as handle:
        loaded = pickle.load(handle)
    assert written["keys"] == len(model) and loaded.keys() == weights.keys()
    assert all(np.array_equal(loaded["model"][k], v) for k, v in model.items())
    with pytest.raises(ValueError, match="unknown export format 'onnx'"):
        export_backbone(backbone, "onnx", tmp_path / "x")


def test_differences_from_the_standard_network_are_named() -> None:
    small = build_backbone("resnet18", stem="cifar", width=0.5, in_channels=1, blocks=(1, 1, 1, 1))
    assert torchvision_differences(small) == [
        "cifar stem (3x3 conv1 with stride 1, no max-pool)",
        "1 input channel(s)",
        "width 0.5",
        "(1, 1, 1, 1) blocks per stage",
    ]

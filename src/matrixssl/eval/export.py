"""Backbone weights for transfer: a torchvision ResNet state dict, or detectron2's pickled weights.

The backbones already use torchvision's parameter names, so the torchvision export is the backbone's state dict
(no `fc`). The detectron2 export renames keys the way MoCo's `convert-pretrain-to-detectron2.py` does, which is
what the MoCo, MEC and Matrix-SSL COCO detection recipes load (see docs/transfer.md): `conv1`/`bn1` become
`stem.conv1`/`stem.conv1.norm`, `layerN` becomes `res{N+1}`, `bnK` becomes `convK.norm` and the downsample
becomes `shortcut`/`shortcut.norm`. Values are numpy arrays, and `matching_heuristics` lets detectron2 match them.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from matrixssl.errors import MatrixSSLError
from matrixssl.models import ResNet

FORMATS = ("torchvision", "detectron2")
STANDARD_DEPTHS = {(2, 2, 2, 2): "resnet18", (3, 4, 6, 3): "resnet34 or resnet50"}


def torchvision_state_dict(backbone: nn.Module) -> dict[str, Tensor]:
    """The backbone's state dict on the CPU, without a classifier (`fc`), ready for torchvision's resnet."""
    return {
        key: value.detach().cpu().clone()
        for key, value in backbone.state_dict().items()
        if not key.startswith("fc.")
    }


def detectron2_key(key: str) -> str:
    """A torchvision ResNet key as detectron2's ResNet names it (MoCo's renaming)."""
    if "layer" not in key:
        key = f"stem.{key}"
    for stage in (1, 2, 3, 4):
        key = key.replace(f"layer{stage}", f"res{stage + 1}")
    for index in (1, 2, 3):
        key = key.replace(f"bn{index}", f"conv{index}.norm")
    return key.replace("downsample.0", "shortcut").replace("downsample.1", "shortcut.norm")


def detectron2_weights(state: dict[str, Tensor]) -> dict[str, Any]:
    """detectron2's weights dict from a torchvision state dict; BatchNorm step counters are dropped."""
    model = {
        detectron2_key(key): value.numpy()
        for key, value in state.items()
        if not key.endswith("num_batches_tracked")
    }
    return {"model": model, "__author__": "matrixssl", "matching_heuristics": True}


def torchvision_differences(backbone: nn.Module) -> list[str]:
    """Where the backbone differs from a standard torchvision/detectron2 ResNet (empty: it loads as is); for a
    `torchvision:<model>` backbone, where it differs from that torchvision model."""
    first_conv = next(m for m in backbone.modules() if isinstance(m, nn.Conv2d))
    differences = []
    if first_conv.in_channels != 3:
        differences.append(f"{first_conv.in_channels} input channel(s)")
    if not isinstance(backbone, ResNet):
        return differences
    if backbone.stem != "imagenet":
        stride = backbone.conv1.stride[0]
        differences.insert(0, f"{backbone.stem} stem (3x3 conv1 with stride {stride}, no max-pool)")
    if backbone.width != 1.0:
        differences.append(f"width {backbone.width}")
    blocks = tuple(
        len(stage) for stage in (backbone.layer1, backbone.layer2, backbone.layer3, backbone.layer4)
    )
    if blocks not in STANDARD_DEPTHS:
        differences.append(f"{blocks} blocks per stage")
    return differences


def check_exportable(backbone_name: str, fmt: str) -> None:
    """Both formats use torchvision's ResNet key names: a timm model has its own, and only a ResNet maps onto
    detectron2's ResNet."""
    source, _, architecture = backbone_name.rpartition(":")
    if source == "timm":
        raise MatrixSSLError(
            f"export writes torchvision or detectron2 weights, and {backbone_name} is a timm model: load the "
            f"checkpoint's backbone.* weights into timm.create_model({architecture!r}, num_classes=0) instead"
        )
    if fmt == "detectron2" and not architecture.startswith("resnet"):
        raise MatrixSSLError(
            f"detectron2 export needs a ResNet backbone and {backbone_name} is not one; use --format torchvision"
        )


def export_backbone(backbone: nn.Module, fmt: str, out: Path) -> dict[str, Any]:
    """Write the backbone in format `fmt` to `out`; returns what was written (keys, parameters, path)."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
    state = torchvision_state_dict(backbone)
    out.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "torchvision":
        torch.save(state, out)
        keys = len(state)
    else:
        weights = detectron2_weights(state)
        with open(out, "wb") as handle:
            pickle.dump(weights, handle)
        keys = len(weights["model"])
    return {
        "format": fmt,
        "path": str(out),
        "keys": keys,
        "parameters": sum(p.numel() for name, p in backbone.named_parameters() if not name.startswith("fc.")),
    }

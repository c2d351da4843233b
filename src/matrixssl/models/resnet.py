"""ResNet-18/34/50 backbones whose state-dict keys and shapes match torchvision's.

torchvision cannot be installed next to the CPU torch used here, so the networks are written in the project.
Module names follow `torchvision.models.resnet*` exactly (conv1, bn1, layer1.0.conv1, layer2.0.downsample.0,
fc, ...), so a backbone trained here loads into torchvision with `strict=True` (minus `fc` when the model has
no classifier). Differences are opt-in: a CIFAR stem (3x3 stride-1 conv, no max-pool; only conv1's kernel
shape changes), a "small" stem (the same conv with stride 2, for 28 px images), a width multiplier, a grayscale input and fewer blocks per stage for fast CPU runs.

The forward pass returns the pooled feature vector (B, num_features), which is what self-supervised methods
and linear probes consume; a classifier `fc` exists only when `num_classes` is given, and then the forward
pass returns its logits, as torchvision's does.

Usage::

    backbone = build_backbone("resnet18", stem="cifar", width=0.25)
    features = backbone(images)  # (B, backbone.num_features)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from matrixssl.errors import MatrixSSLError
from matrixssl.models.external import external_backbone, is_external

STEMS = ("cifar", "small", "imagenet")


def _conv3x3(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)


def _conv1x1(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    """Two 3x3 convolutions plus a shortcut (ResNet-18/34); `last_bn` is the one zeroed by zero-init."""

    expansion = 1

    def __init__(
        self, in_planes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None
    ) -> None:
        super().__init__()
        self.conv1 = _conv3x3(in_planes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = _conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    @property
    def last_bn(self) -> nn.BatchNorm2d:
        return self.bn2

    def residual(self, x: Tensor) -> Tensor:
        """The branch added to the shortcut; zero at initialisation under `zero_init_residual`."""
        out = self.relu(self.bn1(self.conv1(x)))
        return self.bn2(self.conv2(out))

    def forward(self, x: Tensor) -> Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        return self.relu(self.residual(x) + shortcut)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (stride here, as torchvision's "v1.5"), 1x1 expand by 4, plus a shortcut (ResNet-50)."""

    expansion = 4

    def __init__(
        self, in_planes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None
    ) -> None:
        super().__init__()
        self.conv1 = _conv1x1(in_planes, planes)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = _conv3x3(planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = _conv1x1(planes, planes * self.expansion)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    @property
    def last_bn(self) -> nn.BatchNorm2d:
        return self.bn3

    def residual(self, x: Tensor) -> Tensor:
        """The branch added to the shortcut; zero at initialisation under `zero_init_residual`."""
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        return self.bn3(self.conv3(out))

    def forward(self, x: Tensor) -> Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        return self.relu(self.residual(x) + shortcut)


Block = type[BasicBlock] | type[Bottleneck]


class ResNet(nn.Module):
    """A torchvision-compatible ResNet; see the module docstring for the options and what forward returns."""

    def __init__(
        self,
        block: Block,
        blocks: Sequence[int],
        *,
        stem: str = "imagenet",
        width: float = 1.0,
        in_channels: int = 3,
        num_classes: int | None = None,
        zero_init_residual: bool = False,
    ) -> None:
        super().__init__()
        _check_options(blocks, stem, width, in_channels, num_classes)
        base = max(1, int(round(64 * width)))
        self.stem, self.width, self.base_width = stem, width, base
        if stem == "imagenet":
            self.conv1 = nn.Conv2d(in_channels, base, kernel_size=7, stride=2, padding=3, bias=False)
        else:
            # "small" halves the resolution once: a 28 px image then costs a quarter, which pays for twice the width.
            stride = 2 if stem == "small" else 1
            self.conv1 = nn.Conv2d(in_channels, base, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(base)
        self.relu = nn.ReLU(inplace=True)
        # CIFAR-size images are too small to lose another factor of 2 before the first stage.
        self.maxpool: nn.Module = (
            nn.MaxPool2d(kernel_size=3, stride=2, padding=1) if stem == "imagenet" else nn.Identity()
        )
        self._in_planes = base
        self.layer1 = self._make_layer(block, base, blocks[0], stride=1)
        self.layer2 = self._make_layer(block, base * 2, blocks[1], stride=2)
        self.layer3 = self._make_layer(block, base * 4, blocks[2], stride=2)
        self.layer4 = self._make_layer(block, base * 8, blocks[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.num_features = base * 8 * block.expansion
        self.num_classes = num_classes
        self.fc: nn.Linear | None = (
            nn.Linear(self.num_features, num_classes) if num_classes is not None else None
        )
        self._init_weights(zero_init_residual)

    def _make_layer(self, block: Block, planes: int, count: int, stride: int) -> nn.Sequential:
        downsample: nn.Module | None = None
        if stride != 1 or self._in_planes != planes * block.expansion:
            downsample = nn.Sequential(
                _conv1x1(self._in_planes, planes * block.expansion, stride),
                nn.BatchNorm2d(planes * block.expansion),
            )
        layers: list[nn.Module] = [block(self._in_planes, planes, stride, downsample)]
        self._in_planes = planes * block.expansion
        layers += [block(self._in_planes, planes) for _ in range(1, count)]
        return nn.Sequential(*layers)

    def _init_weights(self, zero_init_residual: bool) -> None:
        """torchvision's scheme, so training recipes tuned for it behave the same here."""
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        if zero_init_residual:
            # Each block then starts as relu(shortcut): the network begins shallow, which helps large batches.
            for module in self.modules():
                if isinstance(module, BasicBlock | Bottleneck):
                    nn.init.zeros_(module.last_bn.weight)

    def forward_features(self, x: Tensor) -> Tensor:
        """Pooled features (B, num_features), whether or not a classifier exists."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        # flatten, not view: under channels_last the pooled tensor is not contiguous in NCHW order.
        return torch.flatten(self.avgpool(x), 1)

    def forward(self, x: Tensor) -> Tensor:
        features = self.forward_features(x)
        return features if self.fc is None else self.fc(features)


def _check_options(
    blocks: Sequence[int], stem: str, width: float, in_channels: int, num_classes: int | None
) -> None:
    if stem not in STEMS:
        raise MatrixSSLError(f"unknown ResNet stem {stem!r}; choose one of {', '.join(STEMS)}")
    if not width > 0:
        raise MatrixSSLError(f"ResNet width must be > 0 (1.0 is the standard network), got {width}")
    if in_channels < 1:
        raise MatrixSSLError(f"in_channels must be >= 1 (3 for RGB, 1 for grayscale), got {in_channels}")
    if len(blocks) != 4 or any(int(n) < 1 for n in blocks):
        raise MatrixSSLError(
            f"blocks must be four positive counts, one per stage, e.g. (2, 2, 2, 2); got {blocks}"
        )
    if num_classes is not None and num_classes < 1:
        raise MatrixSSLError(f"num_classes must be >= 1 or None (no classifier), got {num_classes}")


def resnet18(*, blocks: Sequence[int] = (2, 2, 2, 2), **kwargs: Any) -> ResNet:
    """ResNet-18 (11.7M parameters with the ImageNet stem and a 1000-way fc); 512 features at width 1."""
    return ResNet(BasicBlock, blocks, **kwargs)


def resnet34(*, blocks: Sequence[int] = (3, 4, 6, 3), **kwargs: Any) -> ResNet:
    """ResNet-34; 512 features at width 1."""
    return ResNet(BasicBlock, blocks, **kwargs)


def resnet50(*, blocks: Sequence[int] = (3, 4, 6, 3), **kwargs: Any) -> ResNet:
    """ResNet-50 (25.6M parameters with the ImageNet stem and a 1000-way fc); 2048 features at width 1."""
    return ResNet(Bottleneck, blocks, **kwargs)


BACKBONES: dict[str, Callable[..., ResNet]] = {
    "resnet18": resnet18,
    "resnet34": resnet34,
    "resnet50": resnet50,
}


def build_backbone(name: str, **kwargs: Any) -> nn.Module:
    """Backbone by name: a built-in ResNet (keyword arguments go to `ResNet`: stem, width, in_channels,
    num_classes, ...) or a `torchvision:<model>` / `timm:<model>` one (only `in_channels` applies)."""
    if is_external(name):
        return external_backbone(name, kwargs.get("in_channels", 3))
    if name not in BACKBONES:
        raise MatrixSSLError(
            f"unknown backbone {name!r}; choose one of {', '.join(sorted(BACKBONES))}, "
            "or torchvision:<model> / timm:<model> where that package is installed"
        )
    return BACKBONES[name](**kwargs)


def feature_width(backbone: nn.Module) -> int:
    """The pooled feature width of a backbone from `build_backbone` (each kind sets `num_features`)."""
    width = backbone.num_features
    assert isinstance(width, int), f"{type(backbone).__name__} has no integer num_features"
    return width

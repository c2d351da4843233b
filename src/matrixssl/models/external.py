"""Backbones from torchvision or timm, chosen by name as `torchvision:<model>` or `timm:<model>`.

Neither package installs next to the CPU torch this project is developed on, so both are optional: they are
imported only when such a name is asked for, and a missing one is one clear error. A backbone from either returns
pooled features (B, num_features) like the project's ResNets: timm's are built with `num_classes=0`, torchvision's
have their classifier (the last linear layer) replaced by an identity, so their state dict keeps torchvision's
keys minus the classifier's. Grayscale data gets a first convolution with the right number of input channels.
The project's own options (stem, width, blocks per stage, zero-init) apply to its ResNets only.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from torch import nn

from matrixssl.errors import MatrixSSLError

# source -> the module whose model constructors are used
SOURCES = {"torchvision": "torchvision.models", "timm": "timm"}


def is_external(name: str) -> bool:
    return ":" in name


def _import(source: str, name: str) -> ModuleType:
    try:
        return importlib.import_module(SOURCES[source])
    except ImportError:
        raise MatrixSSLError(
            f"model.backbone={name} needs {source}, which is not importable here; install it (pip install "
            f"{source}) or choose one of the built-in backbones (resnet18, resnet34, resnet50)"
        ) from None


def _unknown(name: str, source: str, listing: str) -> MatrixSSLError:
    return MatrixSSLError(f"{source} has no model {name.partition(':')[2]!r}; {listing} lists the names")


def _replace(model: nn.Module, path: str, module: nn.Module) -> None:
    parent, _, attribute = path.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, attribute, module)


def _torchvision(models: ModuleType, name: str, in_channels: int) -> nn.Module:
    try:
        model: nn.Module = models.get_model(name.partition(":")[2], weights=None)
    except ValueError:
        raise _unknown(name, "torchvision", "torchvision.models.list_models()") from None
    linears = [(path, m) for path, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise MatrixSSLError(f"{name} has no linear classifier to take features before; choose another model")
    head_path, head = linears[-1]
    _replace(model, head_path, nn.Identity())
    model.num_features = head.in_features  # type: ignore[assignment]
    conv_path, conv = next((p, m) for p, m in model.named_modules() if isinstance(m, nn.Conv2d))
    if conv.in_channels != in_channels:
        _replace(
            model,
            conv_path,
            nn.Conv2d(
                in_channels,
                conv.out_channels,
                conv.kernel_size,  # type: ignore[arg-type]
                conv.stride,  # type: ignore[arg-type]
                conv.padding,  # type: ignore[arg-type]
                conv.dilation,  # type: ignore[arg-type]
                bias=conv.bias is not None,
            ),
        )
    return model


def _timm(timm: ModuleType, name: str, in_channels: int) -> nn.Module:
    try:
        model: nn.Module = timm.create_model(
            name.partition(":")[2], pretrained=False, num_classes=0, in_chans=in_channels
        )
    except RuntimeError:  # timm's "Unknown model"
        raise _unknown(name, "timm", "timm.list_models()") from None
    return model


def external_backbone(name: str, in_channels: int) -> nn.Module:
    """`source:model` -> a randomly initialised feature extractor with `num_features`; never downloads weights."""
    source = name.partition(":")[0]
    if source not in SOURCES:
        raise MatrixSSLError(
            f"unknown backbone source {source!r} in {name!r}; use torchvision:<model> or timm:<model>"
        )
    module = _import(source, name)
    build = _torchvision if source == "torchvision" else _timm
    return build(module, name, in_channels)

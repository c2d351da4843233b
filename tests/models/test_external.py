"""torchvision:<model> / timm:<model> backbones, through stand-in packages (neither installs here).

The stand-ins are registered under their own module names (other libraries, torchmetrics among them, import
torchvision when they believe it is installed), and `SOURCES` points the lookup at them.

The stand-ins answer with the calls each library documents (`torchvision.models.get_model(name, weights=None)`,
`timm.create_model(name, pretrained=False, num_classes=0, in_chans=C)`) and build real networks, so what is
tested is the project's side: the classifier removed, the input channels adapted, the errors, pretraining and
export with such a backbone.
"""

from __future__ import annotations

import importlib.machinery
import json
import sys
import types
from pathlib import Path

import pytest
import torch
from conftest import TINY, mnist_like, write_idx_split
from torch import nn

from matrixssl.cli import main
from matrixssl.errors import MatrixSSLError
from matrixssl.eval.export import torchvision_differences
from matrixssl.models import build_backbone, external, feature_width, resnet18


class TinyClassifier(nn.Module):
    """A non-ResNet torchvision-style model: features, then a classifier whose last layer is linear."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1))
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(8, 12), nn.ReLU(), nn.Linear(12, 1000))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def _package(name: str, **attributes: object) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__spec__ = importlib.machinery.ModuleSpec(name, None)
    for key, value in attributes.items():
        setattr(module, key, value)
    return module


def _get_model(name: str, weights: object = None) -> nn.Module:
    assert weights is None  # never a download
    if name == "resnet18":  # torchvision's resnet18 layout (the project's ResNet matches its keys), smaller
        return resnet18(stem="imagenet", width=0.125, blocks=(1, 1, 1, 1), num_classes=1000)
    if name == "tiny_classifier":
        return TinyClassifier()
    raise ValueError(f"Unknown model {name}")


def _create_model(name: str, pretrained: bool, num_classes: int, in_chans: int) -> nn.Module:
    assert not pretrained and num_classes == 0
    if name != "resnet18":
        raise RuntimeError(f"Unknown model ({name})")
    return resnet18(stem="imagenet", width=0.125, blocks=(1, 1, 1, 1), in_channels=in_chans)


def _stand_in(monkeypatch: pytest.MonkeyPatch, source: str, **constructors: object) -> None:
    name = f"stand_in_{source}"
    monkeypatch.setitem(sys.modules, name, _package(name, **constructors))
    monkeypatch.setitem(external.SOURCES, source, name)


@pytest.fixture
def torchvision(monkeypatch: pytest.MonkeyPatch) -> None:
    _stand_in(monkeypatch, "torchvision", get_model=_get_model)


@pytest.fixture
def timm(monkeypatch: pytest.MonkeyPatch) -> None:
    _stand_in(monkeypatch, "timm", create_model=_create_model)


def test_torchvision_resnet_gives_pooled_features_with_torchvisions_keys(torchvision: None) -> None:
    model = build_backbone("torchvision:resnet18", in_channels=3)
    reference = _get_model("resnet18").state_dict()
    assert model.state_dict().keys() == {k for k in reference if not k.startswith("fc.")}
    assert feature_width(model) == 64
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 64)


def test_torchvision_grayscale_replaces_the_first_convolution(torchvision: None) -> None:
    # The built-in ResNets' options do not apply: torchvision's stem and width stay.
    model = build_backbone("torchvision:resnet18", in_channels=1, stem="small", width=0.5)
    assert model.conv1.in_channels == 1 and model.conv1.weight.shape == (8, 1, 7, 7)
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, 64)
    assert "1 input channel(s)" in torchvision_differences(model)


def test_torchvision_features_are_the_input_of_the_last_linear_layer(torchvision: None) -> None:
    model = build_backbone("torchvision:tiny_classifier", in_channels=1)
    assert feature_width(model) == 12
    assert model(torch.randn(3, 1, 16, 16)).shape == (3, 12)
    assert model.features[0].in_channels == 1
    assert torchvision_differences(model) == ["1 input channel(s)"]
    assert torchvision_differences(build_backbone("torchvision:tiny_classifier", in_channels=3)) == []


def test_timm_is_built_headless_with_its_own_input_channels(timm: None) -> None:
    model = build_backbone("timm:resnet18", in_channels=1)
    assert feature_width(model) == 64 and model.conv1.in_channels == 1
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, 64)


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("torchvision:resnet999", "torchvision has no model 'resnet999'; torchvision.models.list_models()"),
        ("timm:resnet999", "timm has no model 'resnet999'; timm.list_models() lists the names"),
        ("keras:resnet18", "unknown backbone source 'keras' in 'keras:resnet18'"),
        ("resnet19", "unknown backbone 'resnet19'; choose one of resnet18, resnet34, resnet50, or torchvi"),
    ],
)
def test_unknown_names_are_one_clear_error(torchvision: None, timm: None, name: str, message: str) -> None:
    with pytest.raises(MatrixSSLError, match=message.replace("(", r"\(").replace(")", r"\)")):
        build_backbone(name, in_channels=3)


def test_a_missing_package_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "timm", None)  # import then raises ImportError, installed or not
    with pytest.raises(MatrixSSLError, match=r"model.backbone=timm:resnet18 needs timm.*pip install timm"):
        build_backbone("timm:resnet18", in_channels=3)


def _pretrain(tmp_path: Path, backbone: str) -> Path:
    data = tmp_path / "data"
    write_idx_split(data / "fashion-mnist", "train", *mnist_like(32, 0), gz=True)
    write_idx_split(data / "fashion-mnist", "test", *mnist_like(16, 1), gz=True)
    output = tmp_path / "run"
    argv = ["pretrain", *TINY, f"data.dir={data}", f"output_dir={output}", f"model.backbone={backbone}"]
    assert main([*argv, "trainer.max_epochs=1"]) == 0
    return output


def test_pretrain_and_export_with_a_torchvision_backbone(
    torchvision: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    output = _pretrain(tmp_path, "torchvision:resnet18")
    metrics = json.loads((output / "metrics.json").read_text())
    assert metrics["global_step"] == 2 and 0.0 <= metrics["linear_top1"] <= 100.0
    checkpoint = output / "checkpoints" / "last.ckpt"
    capsys.readouterr()
    assert main(["export", str(checkpoint), str(tmp_path / "tv.pth"), "--format", "torchvision"]) == 0
    assert "1 input channel(s)" in capsys.readouterr().err
    exported = torch.load(tmp_path / "tv.pth", weights_only=True)
    assert exported.keys() == {k for k in _get_model("resnet18").state_dict() if not k.startswith("fc.")}


def test_a_timm_backbone_pretrains_but_is_not_exported_as_torchvision_weights(
    timm: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    output = _pretrain(tmp_path, "timm:resnet18")
    capsys.readouterr()
    checkpoint = output / "checkpoints" / "last.ckpt"
    assert main(["export", str(checkpoint), str(tmp_path / "x.pth")]) == 2
    err = capsys.readouterr().err
    assert "timm:resnet18 is a timm model" in err and "Traceback" not in err
    assert not (tmp_path / "x.pth").exists()

"""Load a `matrixssl pretrain` checkpoint for evaluation: the config and dataset info it was trained with come
from its hyperparameters, so evaluation needs only the file (plus `key=value` overrides such as data.dir when
the data has moved).
"""

from __future__ import annotations

import codecs
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from matrixssl.config import Config, config_from_dict
from matrixssl.data import DatasetInfo
from matrixssl.data.views import TwoViewAugmentation
from matrixssl.errors import MatrixSSLError
from matrixssl.methods import build_method


@dataclass
class Pretrained:
    """A pretrained backbone and projector (both in eval mode) with everything needed to feed them."""

    path: Path
    config: Config
    backbone: torch.nn.Module  # a built-in ResNet, or a torchvision/timm model
    projector: torch.nn.Module
    views: TwoViewAugmentation  # the pretraining recipe: normalisation, crop size, flips
    num_classes: int
    epoch: int
    global_step: int

    def eval_transform(self, images: Tensor) -> Tensor:
        """uint8 batch -> normalised model input, no augmentation."""
        return self.views.eval_transform(images)

    @property
    def run_dir(self) -> Path:
        """The pretraining output folder: the parent of `checkpoints/`, else the checkpoint's own folder."""
        folder = self.path.parent
        return folder.parent if folder.name == "checkpoints" else folder

    def to(self, device: torch.device | str) -> Pretrained:
        self.backbone.to(device)
        self.projector.to(device)
        self.views.to(device)
        return self


def _config(saved: dict[str, Any], overrides: list[str] | tuple[str, ...]) -> Config:
    """The saved config with overrides on top, checked key by key exactly like a user's YAML file."""
    return config_from_dict(saved, overrides)


def _read(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise MatrixSSLError(
            f"checkpoint {path} does not exist; pass a file written by `matrixssl pretrain`, "
            "e.g. runs/<name>/checkpoints/last.ckpt"
        )
    problem = not_a_checkpoint(path)
    if problem:
        raise MatrixSSLError(
            f"{path} {problem}; pass a checkpoint written by `matrixssl pretrain`, "
            "e.g. runs/<name>/checkpoints/last.ckpt"
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - any unreadable file is the same user-facing problem
        reason = (str(error).strip().splitlines() or [""])[0].split(". ")[0][:160]
        raise MatrixSSLError(
            f"checkpoint {path} is corrupt or unreadable ({type(error).__name__}: {reason}); "
            "use another epoch checkpoint from the same folder"
        ) from None
    hyper = state.get("hyper_parameters") if isinstance(state, dict) else None
    if (
        not isinstance(hyper, dict)
        or not isinstance(hyper.get("config"), dict)
        or not isinstance(hyper.get("info"), dict)
        or not isinstance(state.get("state_dict"), dict)
    ):
        raise MatrixSSLError(
            f"{path} is not a matrixssl pretraining checkpoint (no saved config and dataset info); "
            "pass a file written by `matrixssl pretrain`"
        )
    return state


def not_a_checkpoint(path: Path) -> str | None:
    """Why `path` cannot be a file written by `torch.save` at all (None: it may be one). torch.save writes a zip
    archive (or, in its legacy format, a pickle); anything else is the wrong file, not a damaged checkpoint."""
    with open(path, "rb") as handle:
        head = handle.read(512)
    if head.startswith(b"PK\x03\x04") or head.startswith(b"\x80"):
        return None
    if not head:
        return "is empty, not a checkpoint"
    try:  # incremental: a character cut at byte 512 is not a decoding error
        codecs.getincrementaldecoder("utf-8")().decode(head, final=False)
    except UnicodeDecodeError:
        return "is not a checkpoint (not a file written by torch.save)"
    return "is a text file, not a checkpoint"


# The augmentation's state: settings rebuilt from the config, never learnt, and changed by library versions
# (e.g. kornia's parameter buffers), so evaluation neither compares nor loads it.
AUGMENTATION_STATE = "views."


def mismatched_keys(
    model: torch.nn.Module, weights: dict[str, Tensor], ignore: tuple[str, ...] = ()
) -> list[str]:
    """State-dict keys that are missing, unexpected or of another shape (empty: the weights fit `model`); keys
    starting with a prefix in `ignore` are left out."""
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items() if not k.startswith(ignore)}
    found = {k: tuple(v.shape) for k, v in weights.items() if not k.startswith(ignore)}
    return sorted(set(expected) ^ set(found)) or [k for k in expected if expected[k] != found[k]]


def load_pretrained(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Pretrained:
    """Rebuild the method from the checkpoint's hyperparameters and load its weights (strictly).

    `overrides` are dotted `key=value` strings applied over the saved config (e.g. `data.dir=/data`); one that
    changes the model's shape is reported as a mismatch, not loaded partially.
    """
    path = Path(path)
    state = _read(path)
    hyper = state["hyper_parameters"]
    config = _config(hyper["config"], overrides)
    try:
        info = DatasetInfo(**hyper["info"])
    except TypeError:
        raise MatrixSSLError(f"{path} has unreadable dataset info {hyper['info']!r}") from None
    model = build_method(config, info=info, steps_per_epoch=1)
    weights = {k: v for k, v in state["state_dict"].items() if not k.startswith(AUGMENTATION_STATE)}
    differing = mismatched_keys(model, weights, ignore=(AUGMENTATION_STATE,))
    if differing:
        advice = (
            "drop model.* overrides"
            if overrides
            else "it was written by another version of matrixssl; evaluate it with that version"
        )
        raise MatrixSSLError(
            f"checkpoint {path} does not match the model its config describes "
            f"(first differing keys: {', '.join(differing[:3])}); {advice}"
        )
    model.load_state_dict(weights, strict=False)  # strict where it matters: checked just above
    model.eval()
    return Pretrained(
        path=path,
        config=config,
        backbone=model.backbone,
        projector=model.projector,
        views=model.views,
        num_classes=info.num_classes,
        epoch=int(state.get("epoch", -1)),
        global_step=int(state.get("global_step", -1)),
    )

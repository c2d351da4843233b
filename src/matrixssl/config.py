"""Typed run configuration: defaults in dataclasses, YAML files on top, dotted `key=value` overrides last.

Every key is checked: an unknown key or a value of the wrong type stops with one message that names the key
and what is allowed, before anything runs.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from matrixssl.errors import MatrixSSLError
from matrixssl.runtime import PRECISIONS


@dataclass
class DataConfig:
    name: str = "fashion-mnist"
    dir: str = "data"
    subset: int | None = None  # use only the first N training images
    download: bool = False
    batch_size: int = 256  # global batch, split over devices
    num_workers: int = 0
    image_size: int | None = None  # imagefolder: resize/crop size on load
    test_split: str = "test"  # split used for evaluation (imagefolder: a sub-folder name, e.g. val)
    crop_min_scale: float | None = None  # smallest random-resized-crop area; None: the dataset's recipe
    local_views: int = 0  # multi-crop: small crops per image next to the two views (methods that take them)
    local_crop_size: int | None = None  # side of a local crop in pixels; None: half the crop size


@dataclass
class ModelConfig:
    backbone: str = "resnet18"  # resnet18/34/50, or torchvision:<model> / timm:<model> where installed
    # stem, width, blocks_per_stage and zero_init_residual shape the built-in ResNets only
    stem: str = "small"  # cifar | small (stride 2, for 28 px) | imagenet
    width: float = 0.5
    blocks_per_stage: int | None = 1  # None: the architecture's own depth (2,2,2,2 for resnet18)
    zero_init_residual: bool = True
    projector_hidden_dim: int = 512
    projector_dim: int = 128
    predictor_hidden_dim: int = 64
    channels_last: bool = True  # NHWC activations: faster on GPUs and, for the quick run, on CPUs (README)


@dataclass
class SimCLRConfig:
    temperature: float = 0.1  # SimCLR's ImageNet default (its CIFAR-10 runs used 0.5)


@dataclass
class BarlowTwinsConfig:
    off_diagonal_weight: float = 0.0051  # λ of the redundancy-reduction term


@dataclass
class VICRegConfig:
    invariance_weight: float = 25.0
    variance_weight: float = 25.0
    covariance_weight: float = 1.0


@dataclass
class MECConfig:
    eps_squared: float = 64.0  # ε² of the coding length; λ = d / (B ε²)
    lambda_warmup_epochs: float = 10.0  # λ rises from λ/8 to λ over these epochs (official: 10, like the lr)


@dataclass
class TCRConfig:
    eps_squared: float = 0.2  # ε² of the total coding rate (EMP-SSL)
    invariance_weight: float = 200.0  # weight of -cos(view, mean of views) (EMP-SSL's patch_sim)


@dataclass
class LossConfig:
    """`method` names a registered method. The flat keys are Matrix-SSL's: the quick CPU run uses the exact log
    with a small ridge (better there than the official Taylor log with ridge 1; see README) and adds a
    uniformity on the online covariance (`online_uniformity`, not in the paper; it raised the quick run's probe);
    the loss classes themselves default to the official code. Each other method reads its own section, whose defaults
    are its paper's or official code's."""

    method: str = "matrix_ssl"
    target_scale: float | None = 1.0
    ridge: float = 0.05
    gamma: float = 1.0
    taylor_order: int | None = None
    trace_term: bool = False
    online_uniformity: float = 0.3
    simclr: SimCLRConfig = field(default_factory=SimCLRConfig)
    barlow_twins: BarlowTwinsConfig = field(default_factory=BarlowTwinsConfig)
    vicreg: VICRegConfig = field(default_factory=VICRegConfig)
    mec: MECConfig = field(default_factory=MECConfig)
    tcr: TCRConfig = field(default_factory=TCRConfig)


@dataclass
class OptimConfig:
    optimizer: str = "sgd"  # sgd | lars
    base_lr: float = 0.3  # lr = base_lr * batch_size / 256
    momentum: float = 0.9
    weight_decay: float = 1e-4
    warmup_epochs: float = 0.5
    probe_lr: float = 0.1


@dataclass
class TeacherConfig:
    """EMA momentum, cosine from base to final; 0 and 0 make the teacher the detached student (no copy, no
    teacher forward pass: faster, but a lower linear probe on the quick run; README)."""

    base_momentum: float = 0.99
    final_momentum: float = 1.0


@dataclass
class TrainerConfig:
    max_epochs: int = 6
    # A wall-clock budget for pretraining instead of an epoch count: the run times its first steps and plans
    # its schedules (lr, teacher momentum) for the steps that fit; max_epochs is then ignored.
    max_minutes: float | None = None
    accelerator: str = "auto"
    devices: int | str = "auto"  # a count (-1: every GPU), "auto", or device indices such as "0,1"
    num_nodes: int = 1
    strategy: str = "auto"
    precision: str = (
        "auto"  # see runtime.PRECISIONS; auto: bf16-mixed where the device computes bf16 natively
    )
    checkpoint_every_n_epochs: int = 1
    seed: int = 0
    log_every_n_steps: int = 20
    progress_bar: bool = True  # shown only on a terminal; otherwise one line per epoch
    # Next to the CSV log, which the plots read: tensorboard, wandb (Weights & Biases, offline unless
    # WANDB_MODE says otherwise) or csv (nothing else).
    logger: str = "tensorboard"


@dataclass
class EvalConfig:
    linear_epochs: int = 30
    linear_lr: float = 0.1
    knn_k: int = 20
    knn_temperature: float = 0.07


@dataclass
class Config:
    """Defaults are the quick Fashion-MNIST CPU run with two views; configs/fashion-mnist/matrix_ssl.yaml spells
    them out and adds the local views that `make run` uses."""

    output_dir: str = "runs/fashion-mnist-matrix-ssl"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


def _coerce(key: str, value: Any, annotation: Any) -> Any:
    """`value` as the annotated type (int, float, bool, str, or X | None), or a MatrixSSLError."""
    options = typing.get_args(annotation) if isinstance(annotation, types.UnionType) else (annotation,)
    if value is None and type(None) in options:
        return None
    if int in options and isinstance(value, str) and value.strip().removeprefix("-").isdigit():
        return int(value)  # "3" from a quoted YAML value is the count 3, as from the command line
    for option in options:
        if option is bool and isinstance(value, bool):
            return value
        if option is int and isinstance(value, int) and not isinstance(value, bool):
            return value
        if option is float and isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        if option is float and isinstance(value, str):
            try:  # YAML 1.1 reads 1e-4 (no dot) as a string
                return float(value)
            except ValueError:
                pass
        if option is str and isinstance(value, str | int | float) and not isinstance(value, bool):
            return str(value)
    names = " or ".join("null" if o is type(None) else o.__name__ for o in options)
    raise MatrixSSLError(f"config key '{key}' must be {names}, got {value!r}")


def _apply(target: Any, updates: dict[str, Any], prefix: str = "") -> None:
    hints = typing.get_type_hints(type(target))
    for name, value in updates.items():
        key = f"{prefix}{name}"
        if name not in hints:
            valid = ", ".join(f"{prefix}{n}" for n in hints)
            raise MatrixSSLError(f"unknown config key '{key}'; valid keys here: {valid}")
        current = getattr(target, name)
        if dataclasses.is_dataclass(current):
            if not isinstance(value, dict):
                raise MatrixSSLError(f"config key '{key}' is a section; give it a mapping, got {value!r}")
            _apply(current, value, prefix=f"{key}.")
        else:
            setattr(target, name, _coerce(key, value, hints[name]))


def _dotted(key: str, value: Any) -> dict[str, Any]:
    nested: dict[str, Any] = {}
    cursor = nested
    parts = key.split(".")
    for part in parts[:-1]:
        cursor = cursor.setdefault(part, {})
    cursor[parts[-1]] = value
    return nested


def read_yaml(path: Path) -> dict[str, Any]:
    try:
        content = yaml.safe_load(path.read_text())
    except OSError as error:
        raise MatrixSSLError(f"cannot read config file {path}: {error.strerror}") from None
    except yaml.YAMLError as error:
        raise MatrixSSLError(f"config file {path} is not valid YAML: {error}") from None
    if content is None:
        return {}
    if not isinstance(content, dict):
        raise MatrixSSLError(f"config file {path} must hold a mapping of keys, got {type(content).__name__}")
    return content


LOGGERS = ("tensorboard", "wandb", "csv")

# The configs shipped with the package, one per (dataset, method): configs/<dataset>/<method>.yaml.
SHIPPED_CONFIGS = Path(__file__).resolve().parent / "configs"


def config_file(path: str | Path) -> Path:
    """`path` itself when it exists, else the shipped config it names ("cifar10/simclr" or
    "configs/cifar10/simclr.yaml"), else `path` (whose reading then fails with its own message)."""
    given = Path(path)
    if given.exists():
        return given
    relative = given.relative_to("configs") if given.parts[:1] == ("configs",) else given
    shipped = SHIPPED_CONFIGS / relative.with_suffix(".yaml")
    return shipped if shipped.is_file() else given


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Defaults, then the YAML file at `path` (if any; see `config_file`), then `key=value` overrides (values
    parsed as YAML); `loss.method=` among them also brings that method's own settings (`method_settings`)."""
    return resolve_config(path, overrides)[0]


@dataclass
class MethodSwitch:
    """What a `loss.method=` override brought besides the method: `settings` (dotted key -> value: those the
    command line did not set itself and the method reads) from the method's shipped config `source`."""

    source: Path
    settings: dict[str, Any]


def resolve_config(
    path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()
) -> tuple[Config, MethodSwitch | None]:
    """`load_config`'s config, and what followed a method switched on the command line (None: nothing did), so
    that the command line can say what changed besides the method."""
    if path is None:
        return _resolve({}, overrides)
    file = config_file(path)
    shipped = file.resolve().parent if file.resolve().parent.parent == SHIPPED_CONFIGS else None
    return _resolve(read_yaml(file), overrides, shipped)


def config_from_dict(values: dict[str, Any], overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Defaults, then `values` (e.g. a checkpoint's saved config), then overrides; checked like a YAML file."""
    return _resolve(values, overrides)[0]


def _resolve(
    values: dict[str, Any], overrides: list[str] | tuple[str, ...], folder: Path | None = None
) -> tuple[Config, MethodSwitch | None]:
    """Defaults, `values`, the settings of a method switched by override (from the shipped configs in
    `folder`, see `method_settings`), then the overrides; checked."""
    config = Config()
    _apply(config, values)
    parsed = [_parse_override(item) for item in overrides]
    methods = [value for key, value in parsed if key == "loss.method"]
    switch = None
    if methods and isinstance(methods[-1], str) and methods[-1] != config.loss.method:
        source = _shipped(config, methods[-1], folder)
        settings = method_settings(config, methods[-1], folder)
        given = {key for key, _ in parsed}
        before = flatten(to_dict(config))
        for key, value in settings.items():
            _apply(config, _dotted(key, value))
        followed = {
            key: value
            for key, value in settings.items()
            if key not in given and before.get(key) != value and _concerns(key, methods[-1])
        }
        switch = MethodSwitch(source, followed) if source is not None and followed else None
    for key, value in parsed:
        _apply(config, _dotted(key, value))
    validate(config)
    return config, switch


def _concerns(key: str, method: str) -> bool:
    """Whether `method` reads the setting `key`, as far as the config can tell: a loss key only when it is
    the method's own (`loss.<method>.*`; the flat `loss.*` keys are Matrix-SSL's)."""
    if not key.startswith("loss."):
        return True
    name = key.removeprefix("loss.")
    return name.startswith(f"{method}.") if "." in name else method == "matrix_ssl"


def _parse_override(item: str) -> tuple[str, Any]:
    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        raise MatrixSSLError(f"override {item!r} must look like key=value, e.g. trainer.max_epochs=10")
    try:
        value = yaml.safe_load(raw) if raw else ""
    except yaml.YAMLError:
        value = raw
    return key.strip(), value


def method_settings(config: Config, method: str, folder: Path | None = None) -> dict[str, Any]:
    """What switching `config` to `method` changes besides the method itself (dotted key -> value).

    A method's own settings are those in which its shipped config, `<folder>/<method>.yaml`, differs from the
    shipped config of the method it replaces. `folder` is the shipped folder the config was loaded from; by
    default the one named after `config`'s dataset, else Fashion-MNIST's (the built-in defaults' recipe).
    VICReg brings LARS, SimSiam its learning rate. They replace the file's values; `output_dir` follows only
    while it is the replaced method's own. Empty when either method has no shipped config (an unknown name
    then fails where methods are checked).
    """
    current, target = _shipped(config, config.loss.method, folder), _shipped(config, method, folder)
    if current is None or target is None:
        return {}
    old, new = (flatten(to_dict(config_from_dict(read_yaml(file)))) for file in (current, target))
    changed = {key: value for key, value in new.items() if old[key] != value and key != "loss.method"}
    if config.output_dir != old["output_dir"]:
        changed.pop("output_dir", None)
    return changed


def _shipped(config: Config, method: str, folder: Path | None = None) -> Path | None:
    """The shipped config of `method` in `folder` (see `method_settings`), if there is one."""
    if folder is None:
        folder = SHIPPED_CONFIGS / config.data.name
        if not folder.is_dir():
            folder = SHIPPED_CONFIGS / "fashion-mnist"
    path = folder / f"{method}.yaml"
    return path if path.is_file() else None


def flatten(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested sections as one level of dotted keys: {"optim": {"base_lr": 0.3}} -> {"optim.base_lr": 0.3}."""
    flat: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def validate(config: Config) -> None:
    """Range checks that types alone cannot express, for the values this module owns. A loss's or a method's
    own values are checked once, by its constructor (`methods.build_method` names the config section), and
    whether the method exists and takes local views by `methods.check_method`."""
    positive = {
        "data.batch_size": config.data.batch_size,
        "trainer.max_epochs": config.trainer.max_epochs,
        "model.width": config.model.width,
        "optim.base_lr": config.optim.base_lr,
        "trainer.checkpoint_every_n_epochs": config.trainer.checkpoint_every_n_epochs,
    }
    _require(positive, lambda value: value > 0, "positive")
    if config.data.batch_size < 2:
        raise MatrixSSLError(
            "config key 'data.batch_size' must be at least 2: the losses use batch statistics"
        )
    scale = config.data.crop_min_scale
    if scale is not None and not 0 < scale <= 1:
        raise MatrixSSLError(f"config key 'data.crop_min_scale' must be in (0, 1], got {scale}")
    if config.data.subset is not None and config.data.subset < 2:
        raise MatrixSSLError(f"config key 'data.subset' must be at least 2 images, got {config.data.subset}")
    if not 0 <= config.teacher.base_momentum <= config.teacher.final_momentum <= 1:
        raise MatrixSSLError("teacher momenta must satisfy 0 <= base_momentum <= final_momentum <= 1")
    if config.trainer.precision not in PRECISIONS:
        raise MatrixSSLError(
            f"config key 'trainer.precision' must be one of {', '.join(PRECISIONS)}, got {config.trainer.precision!r}"
        )
    _check_devices(config.trainer.devices)
    if config.trainer.logger not in LOGGERS:
        raise MatrixSSLError(
            f"config key 'trainer.logger' must be one of {', '.join(LOGGERS)}, got {config.trainer.logger!r}"
        )
    if config.optim.optimizer not in ("sgd", "lars"):
        raise MatrixSSLError(
            f"config key 'optim.optimizer' must be sgd or lars, got {config.optim.optimizer!r}"
        )
    _require({"data.local_views": config.data.local_views}, lambda value: value >= 0, ">= 0")
    if config.data.local_crop_size is not None:
        _require({"data.local_crop_size": config.data.local_crop_size}, lambda value: value > 0, "positive")
    if config.trainer.max_minutes is not None:
        _require({"trainer.max_minutes": config.trainer.max_minutes}, lambda value: value > 0, "positive")


def _check_devices(devices: int | str) -> None:
    """A count (-1: every GPU), "auto", or device indices such as "0,1" (Lightning's spellings)."""
    if isinstance(devices, int):
        valid = devices == -1 or devices >= 1
    else:
        valid = devices == "auto" or re.fullmatch(r"\d+(,\d+)*,?", devices.replace(" ", "")) is not None
    if not valid:
        raise MatrixSSLError(
            f"config key 'trainer.devices' must be a count (-1: every GPU), auto, or device indices such as "
            f"0,1; got {devices!r}"
        )


def _require(values: dict[str, float], holds: Callable[[float], bool], what: str) -> None:
    """One message per key whose value breaks the range: "config key 'K' must be WHAT, got V"."""
    for key, value in values.items():
        if not holds(value):
            raise MatrixSSLError(f"config key '{key}' must be {what}, got {value}")


def to_dict(config: Config) -> dict[str, Any]:
    return dataclasses.asdict(config)


def to_yaml(config: Config) -> str:
    return yaml.safe_dump(to_dict(config), sort_keys=False)

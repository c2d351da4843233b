"""`matrixssl pretrain`: data -> method -> Lightning Trainer -> evaluation -> metrics.json.

Checkpoints go to `output_dir/checkpoints` (every N epochs plus `last.ckpt`), written atomically; `resume=True`
continues from `last.ckpt` with the optimiser, schedules, teacher and epoch counter restored.
"""

from __future__ import annotations

import importlib.util
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger, Logger, TensorBoardLogger
from lightning.pytorch.plugins.io import TorchCheckpointIO
from torch.utils.data import DataLoader

from matrixssl.config import Config, read_yaml, to_dict, to_yaml
from matrixssl.data import ImageDataset, splits_for
from matrixssl.errors import MatrixSSLError
from matrixssl.eval.checkpoint import mismatched_keys
from matrixssl.eval.features import extract_features
from matrixssl.eval.report import evaluate_features
from matrixssl.methods import SSLMethod, build_method, check_method
from matrixssl.methods.base import check_divisible, steps_per_epoch
from matrixssl.plots import covariance_spectrum, plot_spectra, plot_training_curves
from matrixssl.runtime import resolve_precision, save_torch, write_json, write_text


class AtomicCheckpointIO(TorchCheckpointIO):
    """Checkpoints written atomically (a killed run never leaves half a file) and read back without unpickling
    anything but tensors and plain containers."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
        save_torch(checkpoint, path)

    def load_checkpoint(
        self, path: Any, map_location: Any = None, weights_only: bool | None = None
    ) -> dict[str, Any]:
        return torch.load(path, map_location=map_location or "cpu", weights_only=True)


def _device_count(config: Config) -> int:
    devices = config.trainer.devices
    if devices == "auto":
        return (
            torch.cuda.device_count()
            if config.trainer.accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available()
            else 1
        )
    try:
        return int(devices)
    except ValueError:
        return len([d for d in devices.split(",") if d.strip()])


def _uses_gpu(config: Config) -> bool:
    accelerator = config.trainer.accelerator
    return accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())


def training_precision(config: Config) -> str:
    """`trainer.precision` with "auto" resolved by the library's one rule (`runtime.auto_precision`)."""
    return resolve_precision(config.trainer.precision, "cuda" if _uses_gpu(config) else "cpu")


def checkpoint_dir(config: Config) -> Path:
    return Path(config.output_dir) / "checkpoints"


def _check_resumable(path: Path, model: SSLMethod) -> None:
    """One clear error for a corrupt checkpoint or one written by a different configuration."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        weights = state["state_dict"]
    except Exception as error:  # noqa: BLE001 - any unreadable file is the same user-facing problem
        raise MatrixSSLError(
            f"checkpoint {path} is corrupt or unreadable ({type(error).__name__}); delete it to start over, "
            f"or restore an epoch checkpoint from {path.parent} as last.ckpt"
        ) from None
    differing = mismatched_keys(model, weights)
    if differing:
        raise MatrixSSLError(
            f"checkpoint {path} was written by a different model configuration "
            f"(first differing keys: {', '.join(differing[:3])}); resume with the same config or use another output_dir"
        )


# What a resumed run may change: where data and outputs live, the hardware, the epoch count (the schedules then
# stretch to the new end), logging and evaluation. Any other change would mix two different runs in one.
CHANGEABLE_ON_RESUME = (
    "output_dir",
    "data.dir",
    "data.num_workers",
    "trainer.accelerator",
    "trainer.devices",
    "trainer.num_nodes",
    "trainer.strategy",
    "trainer.precision",
    "trainer.max_epochs",
    "trainer.progress_bar",
    "trainer.log_every_n_steps",
    "trainer.checkpoint_every_n_epochs",
    "eval.",
)


def _check_same_settings(saved: Path, config: Config) -> None:
    """Refuse to resume a run under settings other than its own (e.g. a run left by an older quick config)."""
    if not saved.exists():
        return
    try:
        values = read_yaml(saved)
    except MatrixSSLError:  # unreadable, not YAML, or not a mapping
        values = {}
    if not values:
        raise MatrixSSLError(
            f"{saved} is not a config written by matrixssl; restore it or use another output_dir"
        )
    before = _flatten(values)
    now = _flatten(to_dict(config))
    relevant = [key for key in sorted(set(before) | set(now)) if not key.startswith(CHANGEABLE_ON_RESUME)]
    # A key the run's file lacks was added to matrixssl after the run: its value then is unknown, and loading
    # the file would fill in today's default, so resuming "with its own settings" is impossible too.
    newer = [key for key in relevant if key not in before]
    if newer:
        raise MatrixSSLError(
            f"{saved.parent} holds a run from an older matrixssl, made before the setting(s) "
            f"{', '.join(newer[:3])} existed; this version cannot continue it: start a new run in another "
            f"output_dir (or move that one away)"
        )
    differing = [
        f"{key}: {before.get(key)!r} -> {now.get(key)!r}"
        for key in relevant
        if before.get(key) != now.get(key)
    ]
    if differing:
        raise MatrixSSLError(
            f"{saved.parent} holds a run with other settings ({'; '.join(differing[:3])}); resume it with its own "
            f"settings (--config {saved}) or start a new run in another output_dir"
        )


def _flatten(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def pretrain(config: Config, resume: bool = False) -> dict[str, Any]:
    """Pretrain, evaluate the backbone (linear probe, kNN, effective rank) and write metrics.json."""
    started = time.perf_counter()
    L.seed_everything(config.trainer.seed, workers=True, verbose=False)  # Lightning's: it also seeds workers
    output, last = Path(config.output_dir), checkpoint_dir(config) / "last.ckpt"
    _check_output(output, last, resume)
    check_method(config)  # before the data is read: a typo in the method name fails at once
    pretrain_set, labelled, test = splits_for(config.data)
    devices = _device_count(config) * config.trainer.num_nodes
    check_divisible(config.data.batch_size, devices)
    if len(pretrain_set) < config.data.batch_size:
        raise MatrixSSLError(
            f"the training set has {len(pretrain_set)} images, fewer than data.batch_size={config.data.batch_size}"
        )
    model = build_method(
        config,
        info=pretrain_set.info,
        steps_per_epoch=steps_per_epoch(len(pretrain_set), config.data.batch_size, devices),
    )
    if resume:
        _check_same_settings(output / "config.yaml", config)
        _check_resumable(last, model)
    write_text(output / "config.yaml", to_yaml(config))
    per_device = config.data.batch_size // devices
    workers = config.data.num_workers
    train_loader = DataLoader(
        pretrain_set,
        batch_size=per_device,
        shuffle=True,
        drop_last=True,
        num_workers=workers,
        persistent_workers=workers > 0,
    )
    val_loader = DataLoader(test, batch_size=max(per_device, 256), num_workers=workers)
    trainer = _trainer(config, devices)
    trainer.fit(model, train_loader, val_loader, ckpt_path=str(last) if resume else None)
    if not trainer.is_global_zero:
        return {}
    metrics = _evaluate(model, trainer, config, labelled, test)
    metrics.update({"wall_time_s": round(time.perf_counter() - started, 1), "checkpoint": str(last)})
    write_json(output / "metrics.json", metrics)
    return metrics


def _check_output(output: Path, last: Path, resume: bool) -> None:
    """--resume needs a run to continue; a new run must not overwrite one."""
    if resume and not last.exists():
        raise MatrixSSLError(f"--resume: no checkpoint at {last}; run without --resume to start")
    if not resume and last.exists():
        raise MatrixSSLError(
            f"{output} already holds a run ({last}); pass --resume to continue it, or set output_dir to a new folder"
        )


def _trainer(config: Config, devices: int) -> L.Trainer:
    """Lightning's Trainer with the run's hardware, precision, atomic checkpoints and loggers."""
    t, output = config.trainer, Path(config.output_dir)
    checkpoints = ModelCheckpoint(
        dirpath=checkpoint_dir(config),
        filename="epoch={epoch}",
        auto_insert_metric_name=False,
        every_n_epochs=t.checkpoint_every_n_epochs,
        save_top_k=-1,
        save_last=True,
    )
    return L.Trainer(
        max_epochs=t.max_epochs,
        accelerator=t.accelerator,
        devices=t.devices,
        num_nodes=t.num_nodes,
        strategy=("ddp" if devices > 1 else "auto") if t.strategy == "auto" else t.strategy,
        sync_batchnorm=devices > 1 and _uses_gpu(config),  # PyTorch has no SyncBatchNorm on CPU
        precision=training_precision(config),  # type: ignore[arg-type]
        callbacks=[checkpoints],
        logger=_loggers(output),
        plugins=[AtomicCheckpointIO()],
        log_every_n_steps=t.log_every_n_steps,
        enable_progress_bar=t.progress_bar,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        default_root_dir=output,
    )


def _evaluate(
    model: SSLMethod, trainer: L.Trainer, config: Config, labelled: ImageDataset, test: ImageDataset
) -> dict[str, Any]:
    """Linear probe, kNN and effective rank of the trained backbone, its plots, and what the run was."""
    output = Path(config.output_dir)
    device = next(model.parameters()).device
    transform = model.views.eval_transform
    train_features, train_labels = extract_features(model.backbone, labelled, transform, device=device)
    test_features, test_labels = extract_features(model.backbone, test, transform, device=device)
    metrics = evaluate_features(train_features, train_labels, test_features, test_labels, config.eval)
    logs = Path(trainer.logger.log_dir) if trainer.logger and trainer.logger.log_dir else output
    spectrum = covariance_spectrum(train_features)
    plots = {
        "training_curves": str(
            plot_training_curves(log_histories(output), output / "plots" / "training.png")
        ),
        "spectrum": str(plot_spectra({"backbone features": spectrum}, output / "plots" / "spectrum.png")),
    }
    metrics.update(
        {
            "method": config.loss.method,
            "dataset": config.data.name,
            "precision": training_precision(config),
            "epochs": trainer.current_epoch,
            "global_step": trainer.global_step,
            "online_probe_top1": _last_logged(trainer, "val/probe_top1"),
            "logs": str(logs),
            "plots": plots,
            "feature_spectrum": [round(float(v), 8) for v in spectrum],
        }
    )
    return metrics


def log_histories(output: Path) -> list[Path]:
    """The run's CSV logs, oldest first: each start or resume writes a new `logs/version_N/metrics.csv`."""
    versions = (output / "logs").glob("version_*/metrics.csv")
    return sorted(versions, key=lambda path: int(path.parent.name.removeprefix("version_")))


def _loggers(output: Path) -> list[Logger]:
    """CSV (read back for the plots) and, when tensorboard is installed, TensorBoard."""
    loggers: list[Logger] = [CSVLogger(output, name="logs")]
    if importlib.util.find_spec("tensorboard") is not None:
        loggers.append(TensorBoardLogger(output, name="tensorboard", default_hp_metric=False))
    return loggers


def _last_logged(trainer: L.Trainer, key: str) -> float | None:
    value = trainer.callback_metrics.get(key)
    return None if value is None else round(float(value), 2)

"""`matrixssl pretrain`: data -> method -> Lightning Trainer -> evaluation -> metrics.json.

Checkpoints go to `output_dir/checkpoints` (every N epochs plus `last.ckpt`), written atomically; `resume=True`
continues from `last.ckpt` with the optimiser, schedules, teacher and epoch counter restored.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import os
import signal
import statistics
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger, Logger, TensorBoardLogger
from lightning.pytorch.plugins.io import TorchCheckpointIO
from torch.utils.data import DataLoader

from matrixssl.config import Config, flatten, read_yaml, to_dict, to_yaml
from matrixssl.data import ImageDataset, splits_for
from matrixssl.errors import MatrixSSLError
from matrixssl.eval.checkpoint import mismatched_keys, not_a_checkpoint
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
    """Processes per node: a count, "auto" or -1 (every GPU, else one CPU process), or a list of indices."""
    devices = config.trainer.devices
    if devices in ("auto", -1):
        return torch.cuda.device_count() if _uses_gpu(config) and torch.cuda.is_available() else 1
    if isinstance(devices, int):
        return devices
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
    problem = not_a_checkpoint(path)
    if problem:
        raise MatrixSSLError(
            f"{path} {problem}; delete it to start over, or restore an epoch checkpoint from {path.parent} as "
            "last.ckpt"
        )
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
    "trainer.logger",
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
    before = flatten(values)
    now = flatten(to_dict(config))
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


def pretrain(config: Config, resume: bool = False) -> dict[str, Any]:
    """Pretrain, evaluate the backbone (linear probe, kNN, effective rank) and write metrics.json.

    Ctrl-C raises KeyboardInterrupt (Lightning would exit with status 1); the checkpoints written so far stay.
    """
    started = time.perf_counter()
    L.seed_everything(config.trainer.seed, workers=True, verbose=False)  # Lightning's: it also seeds workers
    output, last = Path(config.output_dir), checkpoint_dir(config) / "last.ckpt"
    _check_output(output, last, resume)
    check_method(config)  # before the data is read: a typo in the method name fails at once
    if config.trainer.logger == "wandb":
        _import_wandb()  # likewise a logger that is not installed
    pretrain_set, labelled, test = splits_for(config.data)
    devices = _device_count(config) * config.trainer.num_nodes
    check_divisible(config.data.batch_size, devices)
    if len(pretrain_set) < config.data.batch_size:
        raise MatrixSSLError(
            f"the training set has {len(pretrain_set)} images, fewer than data.batch_size={config.data.batch_size}"
        )
    steps = steps_per_epoch(len(pretrain_set), config.data.batch_size, devices)
    model = build_method(config, info=pretrain_set.info, steps_per_epoch=steps)
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
    with _quiet_lightning():
        trainer = _trainer(config, devices, steps)
        if trainer.is_global_zero:
            hardware = type(trainer.accelerator).__name__.removesuffix("Accelerator").lower()
            print(
                f"{'resuming' if resume else 'pretraining'} {config.loss.method} on {config.data.name} "
                f"({len(pretrain_set)} images): {budget_text(config, steps)}, "
                f"batch {config.data.batch_size}, {hardware} x {devices}, {training_precision(config)} -> {output}",
                flush=True,
            )
        fit_started = time.perf_counter()
        _fit(trainer, model, train_loader, val_loader, last if resume else None)
        pretraining_s = time.perf_counter() - fit_started
    if not trainer.is_global_zero:
        return {}
    metrics = _evaluate(model, trainer, config, labelled, test)
    metrics["pretraining_time_s"] = round(pretraining_s, 1)
    metrics.update({"wall_time_s": round(time.perf_counter() - started, 1), "checkpoint": str(last)})
    write_json(output / "metrics.json", metrics)
    return metrics


def _fit(
    trainer: L.Trainer,
    model: SSLMethod,
    train: DataLoader[Any],
    val: DataLoader[Any],
    resume_from: Path | None,
) -> None:
    """`trainer.fit`, with Ctrl-C raised as KeyboardInterrupt: Lightning turns it into exit status 1 after its
    graceful shutdown and leaves SIGINT ignored."""
    main_thread = threading.current_thread() is threading.main_thread()
    handler = signal.getsignal(signal.SIGINT) if main_thread else None
    try:
        trainer.fit(model, train, val, ckpt_path=str(resume_from) if resume_from else None)
    except SystemExit:
        if trainer.interrupted:
            raise KeyboardInterrupt from None
        raise
    finally:
        if main_thread:
            signal.signal(signal.SIGINT, handler)


@contextmanager
def _quiet_lightning() -> Iterator[None]:
    """Lightning's info lines (hardware summary, tips about its cloud products) and warnings that are about
    Lightning or torch rather than this run are not shown; its other warnings are."""
    log = logging.getLogger("lightning.pytorch")
    level = log.level
    log.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            for message in QUIET_WARNINGS:
                warnings.filterwarnings("ignore", message=message)
            yield
    finally:
        log.setLevel(level)


# Warnings a user can do nothing about: torch deprecating a class Lightning uses, Lightning's advice for
# data loaders that the batched on-device augmentation does not need, and the checkpoint folder of a resumed run.
QUIET_WARNINGS = (
    r".*LeafSpec.*is deprecated",
    r".*does not have many workers",
    r"Checkpoint directory .* exists and is not empty",
)


def budget_text(config: Config, steps: int) -> str:
    """How long the run trains, as the start line says it."""
    minutes = config.trainer.max_minutes
    if minutes is not None:
        return (
            f"{minutes:g} minutes of steps (schedules planned after the first steps; {steps} steps per epoch)"
        )
    return f"{plural(config.trainer.max_epochs, 'epoch')} of {steps} steps"


class TimeBudget(Callback):
    """Pretraining within `trainer.max_minutes`: the first steps are timed, and the number of steps that fits
    in what is left of the budget becomes the run's length; the schedules are planned for it from then on
    (before that, only the warm-up has run, which does not depend on the length). A step's time is the median
    of the timed window's, so that a few steps slowed by something else on the machine do not shorten the
    plan. The short online-probe validation after each epoch is not in the plan. A resumed run keeps the plan
    it was started with."""

    untimed, timed = 3, 20  # steps: the first ones pay for allocations and warm-up; then the timed window
    clock = staticmethod(time.perf_counter)

    def __init__(self, minutes: float) -> None:
        self.budget_s = 60.0 * minutes
        self.started = 0.0
        self.first_step = 0
        self.step_ends: list[float] = []

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.started, self.first_step = self.clock(), trainer.global_step
        planned = getattr(pl_module, "planned_steps", None)
        if planned is not None:
            trainer.fit_loop.epoch_loop.max_steps = planned

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        if getattr(pl_module, "planned_steps", None) is not None:
            return
        if trainer.global_step - self.first_step >= self.untimed:
            self.step_ends.append(self.clock())
        if len(self.step_ends) == self.timed + 1:
            per_step = statistics.median(b - a for a, b in zip(self.step_ends, self.step_ends[1:]))
            left = max(0.0, self.budget_s - (self.step_ends[-1] - self.started))
            fitting = int(left / per_step)
            # Every process must stop at the same step: rank 0's plan is everyone's.
            planned = int(trainer.strategy.broadcast(trainer.global_step + fitting, src=0))
            pl_module.planned_steps = planned  # type: ignore[assignment]
            trainer.fit_loop.epoch_loop.max_steps = planned


class EpochLines(Callback):
    """One line per finished epoch (loss, online-probe test accuracy, effective rank, time so far): instead of a
    progress bar where stdout is not a terminal (a log file, `nohup`, CI)."""

    def __init__(self) -> None:
        self.started = time.perf_counter()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        logged = trainer.callback_metrics
        of = f"/{trainer.max_epochs}" if trainer.max_epochs and trainer.max_epochs > 0 else ""
        parts = [f"epoch {trainer.current_epoch + 1}{of}"]
        parts += [shown.format(float(logged[key])) for key, shown in EPOCH_LINE if key in logged]
        parts.append(format_duration(time.perf_counter() - self.started))
        print(", ".join(parts), flush=True)


# (logged key, how it is shown) in the per-epoch line.
EPOCH_LINE = (
    ("train/loss_epoch", "loss {:.4f}"),
    ("val/probe_top1", "online probe test top-1 {:.2f} %"),
    ("train/effective_rank", "embedding effective rank {:.1f}"),
)


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def format_duration(seconds: float) -> str:
    """A duration as people read it: 42 s, 3 min 05 s, 1 h 02 min."""
    whole = int(round(seconds))
    if whole < 60:
        return f"{whole} s"
    if whole < 3600:
        return f"{whole // 60} min {whole % 60:02d} s"
    return f"{whole // 3600} h {whole % 3600 // 60:02d} min"


def _check_output(output: Path, last: Path, resume: bool) -> None:
    """--resume needs a run to continue; a new run must not overwrite one."""
    if resume and not last.exists():
        raise MatrixSSLError(f"--resume: no checkpoint at {last}; run without --resume to start")
    if not resume and last.exists():
        raise MatrixSSLError(
            f"{output} already holds a run ({last}); pass --resume to continue it, or set output_dir to a new folder"
        )


def _trainer(config: Config, devices: int, steps: int) -> L.Trainer:
    """Lightning's Trainer with the run's hardware, precision, atomic checkpoints and loggers; a progress bar
    only on a terminal, else one line per epoch."""
    t = config.trainer
    checkpoints = ModelCheckpoint(
        dirpath=checkpoint_dir(config),
        filename="epoch={epoch}",
        auto_insert_metric_name=False,
        every_n_epochs=t.checkpoint_every_n_epochs,
        save_top_k=-1,
        save_last=True,
    )
    progress_bar = t.progress_bar and sys.stdout.isatty()
    callbacks: list[Callback] = [checkpoints] if progress_bar else [checkpoints, EpochLines()]
    if t.max_minutes is not None:
        callbacks.append(TimeBudget(t.max_minutes))
    return L.Trainer(
        max_epochs=-1 if t.max_minutes is not None else t.max_epochs,  # a budget's length is its plan's
        accelerator=t.accelerator,
        devices=t.devices,
        num_nodes=t.num_nodes,
        strategy=("ddp" if devices > 1 else "auto") if t.strategy == "auto" else t.strategy,
        sync_batchnorm=devices > 1 and _uses_gpu(config),  # PyTorch has no SyncBatchNorm on CPU
        precision=training_precision(config),  # type: ignore[arg-type]
        callbacks=callbacks,
        logger=_loggers(config),
        plugins=[AtomicCheckpointIO()],
        # An epoch shorter than the interval would log no step at all (and Lightning would warn about it).
        log_every_n_steps=max(1, min(t.log_every_n_steps, steps)),
        enable_progress_bar=progress_bar,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        default_root_dir=config.output_dir,
    )


def _evaluate(
    model: SSLMethod, trainer: L.Trainer, config: Config, labelled: ImageDataset, test: ImageDataset
) -> dict[str, Any]:
    """Linear probe, kNN and effective rank of the trained backbone, its plots, and what the run was."""
    output = Path(config.output_dir)
    device = trainer.strategy.root_device  # where it trained: Lightning hands the model back on the CPU
    model.to(device)
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
            "steps_per_epoch": model.steps_per_epoch,
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


def _loggers(config: Config) -> list[Logger]:
    """CSV (read back for the plots), then what `trainer.logger` asks for: TensorBoard (when tensorboard is
    installed), Weights & Biases, or nothing else (csv)."""
    output = Path(config.output_dir)
    loggers: list[Logger] = [CSVLogger(output, name="logs")]
    if config.trainer.logger == "tensorboard" and importlib.util.find_spec("tensorboard") is not None:
        loggers.append(TensorBoardLogger(output, name="tensorboard", default_hp_metric=False))
    elif config.trainer.logger == "wandb":
        loggers.append(_wandb_logger(config))
    return loggers


def _wandb_logger(config: Config) -> Logger:
    """Weights & Biases, imported only when asked for. It logs offline into output_dir/wandb (`wandb sync`
    uploads a run later) unless the user set WANDB_MODE: nothing reaches the network unasked."""
    _import_wandb()
    from lightning.pytorch.loggers import WandbLogger

    os.environ.setdefault("WANDB_MODE", "offline")
    output = Path(config.output_dir)
    return WandbLogger(
        name=output.resolve().name,
        save_dir=str(output),
        project=os.environ.get("WANDB_PROJECT", "matrixssl"),
    )


def _import_wandb() -> None:
    try:
        importlib.import_module("wandb")
    except ImportError:
        raise MatrixSSLError(
            "trainer.logger=wandb needs the wandb package: pip install wandb (or choose trainer.logger=tensorboard)"
        ) from None


def _last_logged(trainer: L.Trainer, key: str) -> float | None:
    value = trainer.callback_metrics.get(key)
    return None if value is None else round(float(value), 2)

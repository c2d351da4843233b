"""One LightningModule shape for every self-supervised method.

The base owns what all methods share: two views made on the training device, the backbone and projector, the
EMA teacher, the online linear probe on detached features, an effective-rank monitor, optimisers (SGD or LARS,
no weight decay on biases and norms) and the per-step warm-up + cosine schedule. A method adds its heads and its
loss in `loss_from_views` (see `matrix_ssl.py`); everything else is Lightning's (DDP, precision, checkpoints).

A training step, top to bottom: uint8 batch -> two augmented views -> online branch (backbone, projector,
predictor) and teacher branch per view -> method loss -> plus the probe's cross-entropy -> backward; after the
optimiser step the teacher moves towards the student by the scheduled momentum.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from matrixssl.config import Config, to_dict
from matrixssl.data import DatasetInfo
from matrixssl.data.views import TwoViewAugmentation, view_config_for
from matrixssl.distributed import world_size
from matrixssl.errors import MatrixSSLError
from matrixssl.functional import covariance, effective_rank
from matrixssl.models import EMATeacher, Projector, build_backbone, cosine_momentum, feature_width
from matrixssl.optim import LARS, parameter_groups, warmup_cosine


class SSLMethod(L.LightningModule):
    """Shared training machinery. A method declares `uses_teacher` (no default: an EMA copy costs a forward
    pass, so it must be asked for), may set `supports_local_views` when its loss takes multi-crop views, may
    override `build_projector`, sets `self.loss_fn` (a loss with a `gather_distributed` flag) and defines
    `loss_from_views`."""

    uses_teacher: ClassVar[bool]
    supports_local_views: ClassVar[bool] = False
    loss_fn: Any  # the method's loss module; its `gather_distributed` flag is switched on under DDP

    def __init__(self, config: Config, *, info: DatasetInfo, steps_per_epoch: int) -> None:
        if not isinstance(getattr(type(self), "uses_teacher", None), bool):
            raise TypeError(
                f"{type(self).__name__} must declare the class attribute uses_teacher = True or False"
            )
        super().__init__()
        self.config, self.info, self.steps_per_epoch = config, info, steps_per_epoch
        # Set once by a wall-clock budget (train.TimeBudget) after the first steps; saved with the checkpoints.
        self.planned_steps: int | None = None
        self.save_hyperparameters({"config": to_dict(config), "info": info.as_dict()})
        m = config.model
        recipe = view_config_for(info.name, info.image_size, info.channels, info.mean, info.std)
        if config.data.crop_min_scale is not None:
            recipe = dataclasses.replace(recipe, crop_scale=(config.data.crop_min_scale, 1.0))
        recipe = dataclasses.replace(
            recipe, local_views=config.data.local_views, local_crop_size=config.data.local_crop_size
        )
        self.views = TwoViewAugmentation(recipe)
        depth = {} if m.blocks_per_stage is None else {"blocks": (m.blocks_per_stage,) * 4}
        self.backbone = build_backbone(
            m.backbone,
            stem=m.stem,
            width=m.width,
            zero_init_residual=m.zero_init_residual,
            in_channels=info.channels,
            **depth,
        )
        features = feature_width(self.backbone)
        self.projector = self.build_projector(features)
        t = config.teacher
        # With momentum 0 throughout, the teacher is the student: its outputs are the online projections,
        # detached, so no copy is kept and no extra forward pass is made (see `teacher_outputs`).
        self.teacher_is_student = self.uses_teacher and t.base_momentum == 0 and t.final_momentum == 0
        self.teacher = (
            EMATeacher(nn.Sequential(self.backbone, self.projector))
            if self.uses_teacher and not self.teacher_is_student
            else None
        )
        self._losses_finite: Tensor | None = None  # all losses since the last check finite (on the device)
        self.probe = nn.Sequential(
            nn.BatchNorm1d(features, affine=False),
            nn.Linear(features, info.num_classes),
        )
        if m.channels_last:
            self.to(memory_format=torch.channels_last)

    # --- what a method defines -------------------------------------------------------------------------
    def build_projector(self, features: int) -> nn.Module:
        """The projector on `features`-wide backbone outputs (built before the teacher copies it)."""
        m = self.config.model
        return Projector(features, m.projector_hidden_dim, m.projector_dim)

    def loss_from_views(self, online: list[Tensor], teacher: list[Tensor]) -> dict[str, Tensor]:
        """Method loss from per-view projector outputs (`online`: the two views, then any local views) and the
        teacher outputs of the two views; key 'loss' required."""
        raise NotImplementedError

    # --- shared step -------------------------------------------------------------------------------------
    def total_steps(self) -> int:
        """The steps the schedules are planned for: the time budget's plan, else max_epochs epochs."""
        if self.planned_steps is not None:
            return self.planned_steps
        return max(1, self.config.trainer.max_epochs * self.steps_per_epoch)

    def _input(self, images: Tensor) -> Tensor:
        return (
            images.contiguous(memory_format=torch.channels_last)
            if self.config.model.channels_last
            else images
        )

    def make_views(self, batch: tuple[Tensor, Tensor]) -> tuple[list[Tensor], Tensor]:
        """([view_1, view_2, *local views], labels) from a loader batch: uint8 images augmented here, on the
        model's device."""
        images, labels = batch
        return [self._input(view) for view in self.views(images)], labels

    def training_step(self, batch: tuple[Tensor, Tensor], batch_index: int) -> Tensor:
        views, labels = self.make_views(batch)
        features = [self.backbone(v) for v in views]
        online = [self.projector(f) for f in features]
        teacher = self.teacher_outputs(views[:2], online[:2])
        try:
            terms = self.loss_from_views(online, teacher)
        except torch.linalg.LinAlgError:  # no eigendecomposition of non-finite embeddings: training diverged
            self._losses_finite = torch.zeros((), dtype=torch.bool)
            self._stop_if_diverged()
            raise
        loss = terms["loss"]
        # The host waits for the device only at logging steps: whether every loss since the last check was
        # finite is accumulated on the device, and read back then (and before a checkpoint is written).
        finite = torch.isfinite(loss.detach())
        self._losses_finite = finite if self._losses_finite is None else self._losses_finite & finite
        probe_loss, probe_top1 = self.probe_step(features[0].detach(), labels)
        self.log_dict(
            {f"train/{k}": v.detach() for k, v in terms.items()}, on_step=True, on_epoch=True, sync_dist=True
        )
        self.log_dict(
            {"train/probe_loss": probe_loss.detach(), "train/probe_top1": probe_top1},
            on_step=False,
            on_epoch=True,
            sync_dist=True,
        )
        if self.is_logging_step():
            self._stop_if_diverged()
            self.loss_fn.deferred_checks()
            reference = teacher[0] if teacher else online[0]
            self.log("train/effective_rank", effective_rank(covariance(reference.detach())), sync_dist=True)
        # Logged as a device tensor: Lightning would copy a Python float to the device, a sync on a GPU.
        lr = torch.full((), self.optimizers().param_groups[0]["lr"], device=self.device)  # type: ignore[union-attr]
        self.log("train/lr", lr, on_step=True, on_epoch=False)
        return loss + probe_loss

    def is_logging_step(self) -> bool:
        """Whether Lightning writes the logged metrics after this batch (Lightning's own rule, with
        `global_step` for its count of batches that stepped: one optimizer, no accumulation; so it holds from
        the batch-start hook through the training step, before the optimizer steps). Writing reads values back
        from the device, so the step's checks and diagnostics join that batch: the host waits once per
        interval, and the logged effective rank is the one of the step it is logged at."""
        every: int = self.trainer.log_every_n_steps  # type: ignore[attr-defined]  # set by Lightning at init
        return every > 0 and ((self.global_step + 1) % every == 0 or self.trainer.should_stop)

    def teacher_outputs(self, views: list[Tensor], online: list[Tensor]) -> list[Tensor]:
        """Targets per view: the EMA teacher's, the detached online projections, or none for such methods."""
        if self.teacher is not None:
            with torch.no_grad():
                return [self.teacher(v) for v in views]
        if self.teacher_is_student:
            return [z.detach() for z in online]
        return []

    def _stop_if_diverged(self) -> None:
        """A non-finite loss since the last check (diverged weights or bad data) stops the run with where it
        happened and what to do; nothing was saved after it (see `on_save_checkpoint`)."""
        if self._losses_finite is None:
            return
        finite, self._losses_finite = bool(self._losses_finite), None
        if finite:
            return
        checkpoint = getattr(self.trainer.checkpoint_callback, "last_model_path", "") or "none yet"
        every = self.trainer.log_every_n_steps  # type: ignore[attr-defined]  # the config's, at most an epoch
        raise MatrixSSLError(
            f"the loss became non-finite (NaN/Inf) by step {self.global_step} (epoch {self.current_epoch}; "
            f"checked every trainer.log_every_n_steps={every} steps); last good checkpoint: {checkpoint}. "
            "Lower optim.base_lr (or check the data) and start a new run in another output_dir."
        )

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self._stop_if_diverged()  # never write weights that a non-finite loss has already reached
        checkpoint["planned_steps"] = self.planned_steps

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.planned_steps = checkpoint.get("planned_steps")

    def on_train_end(self) -> None:
        self._stop_if_diverged()  # nor evaluate them

    def probe_step(self, features: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        """Cross-entropy and top-1 (%) of the online probe over the batch's labelled images (label -1: an
        unlabelled image, weight 0), computed without reading a value back from the device."""
        labelled = (labels >= 0).float()
        count = labelled.sum().clamp(min=1.0)
        logits = self.probe(features.float())
        losses = F.cross_entropy(logits, labels.clamp(min=0), reduction="none")
        correct = (logits.argmax(1) == labels).float()
        return (losses * labelled).sum() / count, 100.0 * (correct * labelled).sum() / count

    def teacher_momentum(self) -> float:
        t = self.config.teacher
        return cosine_momentum(self.global_step, self.total_steps(), t.base_momentum, t.final_momentum)

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_index: int) -> None:
        if self.teacher is not None:
            self.teacher.update(nn.Sequential(self.backbone, self.projector), self.teacher_momentum())

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_index: int) -> None:
        images, labels = batch
        features = self.backbone(self._input(self.views.eval_transform(images)))
        logits = self.probe(features.float())
        self.log("val/probe_top1", 100.0 * (logits.argmax(1) == labels).float().mean(), sync_dist=True)

    # --- optimisation ------------------------------------------------------------------------------------
    def configure_optimizers(self) -> Any:
        o = self.config.optim
        lr = o.base_lr * self.config.data.batch_size / 256
        trained = nn.ModuleList([m for m in self.children() if m is not self.probe and m is not self.teacher])
        groups = [
            *parameter_groups(trained, name="trained", lr=lr, weight_decay=o.weight_decay),
            {
                "name": "probe",
                "params": list(self.probe.parameters()),
                "lr": o.probe_lr,
                "weight_decay": 0.0,
                "lars_exclude": True,
            },
        ]
        optimizer: torch.optim.Optimizer
        if o.optimizer == "lars":
            optimizer = LARS(groups, lr=lr, momentum=o.momentum, weight_decay=o.weight_decay)
        else:
            optimizer = torch.optim.SGD(groups, lr=lr, momentum=o.momentum, weight_decay=o.weight_decay)
        warmup = int(round(o.warmup_epochs * self.steps_per_epoch))
        # total_steps() is read at every step: a time budget plans it only after the first steps.
        schedule = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: warmup_cosine(step, self.total_steps(), warmup)
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}

    def setup(self, stage: str) -> None:
        # Batch statistics must span the global batch under DDP.
        if world_size() > 1 or (self._trainer is not None and self.trainer.world_size > 1):
            self.loss_fn.gather_distributed = True
        # The loss's own value checks would make every step wait for the device; the step checks the loss at
        # logging steps instead (`_stop_if_diverged`, `deferred_checks`).
        self.loss_fn.check_values = False


def directed_pairs(views: int) -> list[tuple[int, int]]:
    """(view, target) pairs for methods that predict a target: every view against the target of each global
    view (the first two) other than itself; with two views, (0, 1) and (1, 0)."""
    return [(view, target) for view in range(views) for target in (0, 1) if target != view]


def symmetric_pairs(views: int) -> list[tuple[int, int]]:
    """View pairs for symmetric two-view losses: the two global views, then every local view with each
    global view; with two views, only (0, 1)."""
    return [(0, 1), *((view, target) for view in range(2, views) for target in (0, 1))]


def steps_per_epoch(num_images: int, batch_size: int, devices: int) -> int:
    """Optimiser steps per epoch with drop_last batches of `batch_size` split over `devices`."""
    per_device = batch_size // max(1, devices)
    return max(1, (num_images // max(1, devices)) // max(1, per_device))


def check_divisible(batch_size: int, devices: int) -> None:
    if batch_size % devices:
        raise MatrixSSLError(
            f"data.batch_size={batch_size} must be divisible by the number of devices ({devices}); "
            f"it is the global batch, split evenly over devices"
        )

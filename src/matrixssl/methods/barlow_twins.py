"""Barlow Twins as a training method: cross-correlation of the two views' projections towards the identity."""

from __future__ import annotations

import torch
from torch import Tensor

from matrixssl.config import Config
from matrixssl.data import DatasetInfo
from matrixssl.losses import BarlowTwinsLoss
from matrixssl.methods.base import SSLMethod, symmetric_pairs


class BarlowTwins(SSLMethod):
    uses_teacher = False
    supports_local_views = True  # the global pair and each local view with each global view

    def __init__(self, config: Config, *, info: DatasetInfo, steps_per_epoch: int) -> None:
        super().__init__(config, info=info, steps_per_epoch=steps_per_epoch)
        self.loss_fn = BarlowTwinsLoss(off_diagonal_weight=config.loss.barlow_twins.off_diagonal_weight)

    def loss_from_views(self, online: list[Tensor], teacher: list[Tensor]) -> dict[str, Tensor]:
        pairs = symmetric_pairs(len(online))
        return {"loss": torch.stack([self.loss_fn(online[a], online[b]) for a, b in pairs]).mean()}

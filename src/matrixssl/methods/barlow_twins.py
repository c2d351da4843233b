"""Barlow Twins as a training method: cross-correlation of the two views' projections towards the identity."""

from __future__ import annotations

from torch import Tensor

from matrixssl.config import Config
from matrixssl.data import DatasetInfo
from matrixssl.losses import BarlowTwinsLoss
from matrixssl.methods.base import SSLMethod


class BarlowTwins(SSLMethod):
    uses_teacher = False

    def __init__(self, config: Config, *, info: DatasetInfo, steps_per_epoch: int) -> None:
        super().__init__(config, info=info, steps_per_epoch=steps_per_epoch)
        self.loss_fn = BarlowTwinsLoss(off_diagonal_weight=config.loss.barlow_twins.off_diagonal_weight)

    def loss_from_views(self, online: list[Tensor], teacher: list[Tensor]) -> dict[str, Tensor]:
        return {"loss": self.loss_fn(online[0], online[1])}

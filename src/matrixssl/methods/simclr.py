"""SimCLR as a training method: NT-Xent between the two views' projections; no predictor, no teacher."""

from __future__ import annotations

from torch import Tensor

from matrixssl.config import Config
from matrixssl.data import DatasetInfo
from matrixssl.losses import NTXentLoss
from matrixssl.methods.base import SSLMethod


class SimCLR(SSLMethod):
    uses_teacher = False

    def __init__(self, config: Config, *, info: DatasetInfo, steps_per_epoch: int) -> None:
        super().__init__(config, info=info, steps_per_epoch=steps_per_epoch)
        self.loss_fn = NTXentLoss(temperature=config.loss.simclr.temperature)

    def loss_from_views(self, online: list[Tensor], teacher: list[Tensor]) -> dict[str, Tensor]:
        return {"loss": self.loss_fn(online[0], online[1])}

"""SimCLR as a training method: NT-Xent between the two views' projections; no predictor, no teacher."""

from __future__ import annotations

import torch
from torch import Tensor

from matrixssl.config import Config
from matrixssl.data import DatasetInfo
from matrixssl.losses import NTXentLoss
from matrixssl.methods.base import SSLMethod, symmetric_pairs


class SimCLR(SSLMethod):
    uses_teacher = False
    supports_local_views = True  # NT-Xent on the global pair and on each local view with each global view

    def __init__(self, config: Config, *, info: DatasetInfo, steps_per_epoch: int) -> None:
        super().__init__(config, info=info, steps_per_epoch=steps_per_epoch)
        self.loss_fn = NTXentLoss(temperature=config.loss.simclr.temperature)

    def loss_from_views(self, online: list[Tensor], teacher: list[Tensor]) -> dict[str, Tensor]:
        pairs = symmetric_pairs(len(online))
        return {"loss": torch.stack([self.loss_fn(online[a], online[b]) for a, b in pairs]).mean()}

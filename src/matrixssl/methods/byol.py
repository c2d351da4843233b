"""BYOL as a training method: the online predictor regresses the EMA teacher's projection of the other view."""

from __future__ import annotations

import torch
from torch import Tensor

from matrixssl.config import Config
from matrixssl.data import DatasetInfo
from matrixssl.losses import BYOLLoss
from matrixssl.methods.base import SSLMethod, directed_pairs
from matrixssl.models import Predictor


class BYOL(SSLMethod):
    uses_teacher = True
    supports_local_views = True  # each view predicts the teacher of every other global view

    def __init__(self, config: Config, *, info: DatasetInfo, steps_per_epoch: int) -> None:
        super().__init__(config, info=info, steps_per_epoch=steps_per_epoch)
        self.predictor = Predictor(config.model.projector_dim, config.model.predictor_hidden_dim)
        self.loss_fn = BYOLLoss()

    def loss_from_views(self, online: list[Tensor], teacher: list[Tensor]) -> dict[str, Tensor]:
        # Each (view, other global view's teacher) pair is one direction of BYOL's symmetric loss.
        predicted = [self.predictor(z) for z in online]
        pairs = directed_pairs(len(online))
        losses = [self.loss_fn(predicted[v], predicted[v], teacher[t], teacher[t]) for v, t in pairs]
        return {"loss": torch.stack(losses).mean()}

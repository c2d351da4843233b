"""SimSiam as a training method: the predictor regresses the other view's own projection, held constant.

No EMA teacher: the stop-gradient on the projections (inside `SimSiamLoss`) plus the predictor is what keeps
the two branches from collapsing (Chen & He, 2021).
"""

from __future__ import annotations

import torch
from torch import Tensor

from matrixssl.config import Config
from matrixssl.data import DatasetInfo
from matrixssl.losses import SimSiamLoss
from matrixssl.methods.base import SSLMethod, directed_pairs
from matrixssl.models import Predictor


class SimSiam(SSLMethod):
    uses_teacher = False
    supports_local_views = True  # each view predicts the projection of every other global view

    def __init__(self, config: Config, *, info: DatasetInfo, steps_per_epoch: int) -> None:
        super().__init__(config, info=info, steps_per_epoch=steps_per_epoch)
        self.predictor = Predictor(config.model.projector_dim, config.model.predictor_hidden_dim)
        self.loss_fn = SimSiamLoss()

    def loss_from_views(self, online: list[Tensor], teacher: list[Tensor]) -> dict[str, Tensor]:
        # Each (view, other global view's projection) pair is one direction of SimSiam's symmetric loss.
        predicted = [self.predictor(z) for z in online]
        pairs = directed_pairs(len(online))
        losses = [self.loss_fn(predicted[v], predicted[v], online[t], online[t]) for v, t in pairs]
        return {"loss": torch.stack(losses).mean()}

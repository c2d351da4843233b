"""BYOL as a training method: the online predictor regresses the EMA teacher's projection of the other view."""

from __future__ import annotations

from torch import Tensor

from matrixssl.config import Config
from matrixssl.data import DatasetInfo
from matrixssl.losses import BYOLLoss
from matrixssl.methods.base import SSLMethod
from matrixssl.models import Predictor


class BYOL(SSLMethod):
    uses_teacher = True

    def __init__(self, config: Config, *, info: DatasetInfo, steps_per_epoch: int) -> None:
        super().__init__(config, info=info, steps_per_epoch=steps_per_epoch)
        self.predictor = Predictor(config.model.projector_dim, config.model.predictor_hidden_dim)
        self.loss_fn = BYOLLoss()

    def loss_from_views(self, online: list[Tensor], teacher: list[Tensor]) -> dict[str, Tensor]:
        predicted = [self.predictor(z) for z in online]
        return {"loss": self.loss_fn(predicted[0], predicted[1], teacher[0], teacher[1])}

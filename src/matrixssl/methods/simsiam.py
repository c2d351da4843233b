"""SimSiam as a training method: the predictor regresses the other view's own projection, held constant.

No EMA teacher: the stop-gradient on the projections (inside `SimSiamLoss`) plus the predictor is what keeps
the two branches from collapsing (Chen & He, 2021).
"""

from __future__ import annotations

from torch import Tensor

from matrixssl.config import Config
from matrixssl.data import DatasetInfo
from matrixssl.losses import SimSiamLoss
from matrixssl.methods.base import SSLMethod
from matrixssl.models import Predictor


class SimSiam(SSLMethod):
    uses_teacher = False

    def __init__(self, config: Config, *, info: DatasetInfo, steps_per_epoch: int) -> None:
        super().__init__(config, info=info, steps_per_epoch=steps_per_epoch)
        self.predictor = Predictor(config.model.projector_dim, config.model.predictor_hidden_dim)
        self.loss_fn = SimSiamLoss()

    def loss_from_views(self, online: list[Tensor], teacher: list[Tensor]) -> dict[str, Tensor]:
        predicted = [self.predictor(z) for z in online]
        return {"loss": self.loss_fn(predicted[0], predicted[1], online[0], online[1])}

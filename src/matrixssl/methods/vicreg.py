"""VICReg as a training method: invariance, variance and covariance terms on the two views' embeddings.

VICReg's expander ends in a plain Linear layer. The shared projector ends in BatchNorm without affine, which
would pin every dimension's standard deviation at 1 and switch the variance term off, so it is dropped here.
"""

from __future__ import annotations

from torch import Tensor

from matrixssl.config import Config
from matrixssl.losses import VICRegLoss
from matrixssl.methods.base import DatasetInfo, SSLMethod


class VICReg(SSLMethod):
    uses_teacher = False

    def __init__(self, config: Config, info: DatasetInfo, steps_per_epoch: int) -> None:
        super().__init__(config, info, steps_per_epoch)
        del self.projector.layers[-1]
        weights = config.loss.vicreg
        self.loss_fn = VICRegLoss(
            weights.invariance_weight, weights.variance_weight, weights.covariance_weight
        )

    def enable_distributed_loss(self) -> None:
        self.loss_fn.gather_distributed = True  # variance and covariance over the global batch

    def loss_from_views(self, online: list[Tensor], teacher: list[Tensor]) -> dict[str, Tensor]:
        return self.loss_fn.terms(online[0], online[1])._asdict()

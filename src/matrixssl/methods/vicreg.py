"""VICReg as a training method: invariance, variance and covariance terms on the two views' embeddings.

VICReg's expander ends in a plain Linear layer. The shared projector ends in BatchNorm without affine, which
would pin every dimension's standard deviation at 1 and switch the variance term off, so VICReg builds its
projector without it.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from matrixssl.config import Config
from matrixssl.data import DatasetInfo
from matrixssl.losses import VICRegLoss
from matrixssl.methods.base import SSLMethod, symmetric_pairs
from matrixssl.models import Projector


class VICReg(SSLMethod):
    uses_teacher = False
    supports_local_views = True  # the global pair and each local view with each global view

    def __init__(self, config: Config, *, info: DatasetInfo, steps_per_epoch: int) -> None:
        super().__init__(config, info=info, steps_per_epoch=steps_per_epoch)
        weights = config.loss.vicreg
        self.loss_fn = VICRegLoss(
            invariance_weight=weights.invariance_weight,
            variance_weight=weights.variance_weight,
            covariance_weight=weights.covariance_weight,
        )

    def build_projector(self, features: int) -> nn.Module:
        m = self.config.model
        return Projector(features, m.projector_hidden_dim, m.projector_dim, final_norm=False)

    def loss_from_views(self, online: list[Tensor], teacher: list[Tensor]) -> dict[str, Tensor]:
        terms = [self.loss_fn.terms(online[a], online[b]) for a, b in symmetric_pairs(len(online))]
        return {name: torch.stack(values).mean() for name, values in zip(terms[0]._fields, zip(*terms))}

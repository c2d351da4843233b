"""Total coding rate as a training method, EMP-SSL-style on two views (Tong et al., 2023).

    L = w · ½ Σ_v -mean cos(z_v, z̄) + ½ Σ_v -TCR(z_v),    z̄ = ½ (z₁ + z₂),  rows of z_v L2-normalised

The coding rate spreads each view's embeddings over all directions; the invariance term pulls both views to
their mean (with two unit-norm views cos(z_v, z̄) = sqrt((1 + cos(z₁, z₂)) / 2), a monotone function of their
agreement). No predictor, no teacher. What differs from EMP-SSL: it uses many (20-200) fixed-size random patches
per image in one step, with the mean over patches as z̄, and evaluates on the patches' averaged features
(bag of features); here there are the library's two standard augmented views and plain backbone features.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from matrixssl.config import Config
from matrixssl.data import DatasetInfo
from matrixssl.functional import full_precision
from matrixssl.losses import TCRLoss
from matrixssl.methods.base import SSLMethod


class TCR(SSLMethod):
    uses_teacher = False

    def __init__(self, config: Config, *, info: DatasetInfo, steps_per_epoch: int) -> None:
        super().__init__(config, info=info, steps_per_epoch=steps_per_epoch)
        self.loss_fn = TCRLoss(eps_squared=config.loss.tcr.eps_squared)
        if config.loss.tcr.invariance_weight < 0:
            raise ValueError(f"invariance_weight must be >= 0, got {config.loss.tcr.invariance_weight}")
        self.invariance_weight = config.loss.tcr.invariance_weight

    def loss_from_views(self, online: list[Tensor], teacher: list[Tensor]) -> dict[str, Tensor]:
        views = [F.normalize(full_precision(z), dim=1) for z in online]
        mean = 0.5 * (views[0] + views[1])
        invariance = -0.5 * sum(F.cosine_similarity(z, mean, dim=1).mean() for z in views)
        coding_rate = -0.5 * (self.loss_fn(online[0]) + self.loss_fn(online[1]))
        loss = self.invariance_weight * invariance - coding_rate
        return {"loss": loss, "invariance": invariance, "coding_rate": coding_rate}

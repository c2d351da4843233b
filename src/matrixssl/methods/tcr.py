"""Total coding rate as a training method, EMP-SSL-style (Tong et al., 2023), over the V views of a step.

    L = w · (1/V) Σ_v -mean cos(z_v, z̄) + (1/V) Σ_v -TCR(z_v),    z̄ = (1/V) Σ_v z_v,  rows of z_v L2-normalised

The coding rate spreads each view's embeddings over all directions; the invariance term pulls both views to
their mean (with two unit-norm views cos(z_v, z̄) = sqrt((1 + cos(z₁, z₂)) / 2), a monotone function of their
agreement). No predictor, no teacher. What differs from EMP-SSL: it uses many (20-200) fixed-size random patches
per image in one step and evaluates on the patches' averaged features (bag of features); here the views are the
library's two augmented views plus any local views, and evaluation uses plain backbone features.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from matrixssl.config import Config
from matrixssl.data import DatasetInfo
from matrixssl.functional import full_precision
from matrixssl.losses import TCRLoss
from matrixssl.methods.base import SSLMethod


class TCR(SSLMethod):
    uses_teacher = False
    supports_local_views = True  # EMP-SSL is multi-view by design: local views join the mean and the rate

    def __init__(self, config: Config, *, info: DatasetInfo, steps_per_epoch: int) -> None:
        super().__init__(config, info=info, steps_per_epoch=steps_per_epoch)
        self.loss_fn = TCRLoss(eps_squared=config.loss.tcr.eps_squared)
        if config.loss.tcr.invariance_weight < 0:
            raise ValueError(f"invariance_weight must be >= 0, got {config.loss.tcr.invariance_weight}")
        self.invariance_weight = config.loss.tcr.invariance_weight

    def loss_from_views(self, online: list[Tensor], teacher: list[Tensor]) -> dict[str, Tensor]:
        # EMP-SSL's own multi-view form: every view (global or local) pulled to the mean of all of them.
        views = [F.normalize(full_precision(z), dim=1) for z in online]
        mean = torch.stack(views).mean(0)
        invariance = -torch.stack([F.cosine_similarity(z, mean, dim=1).mean() for z in views]).mean()
        coding_rate = -torch.stack([self.loss_fn(z) for z in online]).mean()
        loss = self.invariance_weight * invariance - coding_rate
        return {"loss": loss, "invariance": invariance, "coding_rate": coding_rate}

"""SimSiam's symmetrised negative cosine (Chen & He, "Exploring Simple Siamese Representation Learning", 2021).

    L = ½ D(p₁, stopgrad(z₂)) + ½ D(p₂, stopgrad(z₁)),   D(p, z) = -mean_i cos(p_i, z_i)

p = predictor outputs, z = projections of the same network (SimSiam) or of an EMA teacher (BYOL, whose loss is
built on `symmetric_cosine` too). The stop-gradient on z is what prevents collapse together with the predictor.
The loss needs no batch statistics: `gather_distributed=True` only makes the value the global-batch mean
(gradients are the same either way once DistributedDataParallel averages them).

Usage::

    loss_fn = SimSiamLoss()
    loss = loss_fn(prediction_1, prediction_2, projection_1, projection_2)
"""

from __future__ import annotations

import torch
from torch import Tensor

from matrixssl.losses._inputs import EmbeddingLoss, prepare


def symmetric_cosine(
    online_1: Tensor, online_2: Tensor, target_1: Tensor, target_2: Tensor, gather_distributed: bool
) -> Tensor:
    """½ [mean cos(online_1, target_2) + mean cos(online_2, target_1)], targets detached, in full precision.

    Args:
        online_1: (B, d) predictions of view 1.
        online_2: (B, d) predictions of view 2.
        target_1: (B, d) targets of view 1 (detached here).
        target_2: (B, d) targets of view 2 (detached here).
        gather_distributed: average over the batch gathered from all ranks.

    Returns:
        0-d tensor in [-1, 1].
    """
    with torch.autocast(device_type=online_1.device.type, enabled=False):
        p_1, p_2 = (prepare(p, gather_distributed=gather_distributed) for p in (online_1, online_2))
        z_1, z_2 = (
            prepare(z, gather_distributed=gather_distributed, detach=True) for z in (target_1, target_2)
        )
        return 0.5 * ((p_1 * z_2).sum(1).mean() + (p_2 * z_1).sum(1).mean())


class SimSiamLoss(EmbeddingLoss):
    """Symmetrised negative cosine with stop-gradient on the targets; -1 when prediction equals target.

    Args:
        gather_distributed: average over the batch gathered from all ranks.
    """

    def __init__(self, *, gather_distributed: bool = False) -> None:
        super().__init__(gather_distributed=gather_distributed)

    def forward(self, online_1: Tensor, online_2: Tensor, target_1: Tensor, target_2: Tensor) -> Tensor:
        """The SimSiam loss, in [-1, 1].

        Args:
            online_1: (B, d) predictor outputs of view 1; the gradient flows into them.
            online_2: (B, d) predictor outputs of view 2.
            target_1: (B, d) projections of view 1 (same network for SimSiam); detached here.
            target_2: (B, d) projections of view 2; detached here.

        Returns:
            0-d tensor.
        """
        self.check(online_1=online_1, online_2=online_2, target_1=target_1, target_2=target_2)
        return -symmetric_cosine(online_1, online_2, target_1, target_2, self.gather_distributed)

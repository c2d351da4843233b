"""BYOL's loss (Grill et al., "Bootstrap Your Own Latent", NeurIPS 2020).

    L = mean_i ‖p̄₁ - z̄₂‖² + mean_i ‖p̄₂ - z̄₁‖² = (2 - 2 cos(p₁, z₂)) + (2 - 2 cos(p₂, z₁))

p = online predictor outputs, z = EMA-teacher projections (no gradient), bars = L2-normalised rows. The paper
sums the two directions (L + L̃), so the loss lies in [0, 8]; it equals 4 + 4·SimSiam on the same inputs.
The loss needs no batch statistics: `gather_distributed=True` only makes the value the global-batch mean.

Usage::

    loss_fn = BYOLLoss()
    loss = loss_fn(prediction_1, prediction_2, teacher_1, teacher_2)
"""

from __future__ import annotations

from torch import Tensor

from matrixssl.losses._inputs import EmbeddingLoss
from matrixssl.losses.simsiam import symmetric_cosine


class BYOLLoss(EmbeddingLoss):
    """2 - 2 cos(prediction, teacher projection of the other view), summed over both directions.

    Args:
        gather_distributed: average over the batch gathered from all ranks.
    """

    def __init__(self, *, gather_distributed: bool = False) -> None:
        super().__init__(gather_distributed=gather_distributed)

    def forward(self, online_1: Tensor, online_2: Tensor, target_1: Tensor, target_2: Tensor) -> Tensor:
        """The symmetrised BYOL loss, in [0, 8].

        Args:
            online_1: (B, d) predictor outputs of view 1; the gradient flows into them.
            online_2: (B, d) predictor outputs of view 2.
            target_1: (B, d) teacher outputs of view 1; detached here.
            target_2: (B, d) teacher outputs of view 2; detached here.

        Returns:
            0-d tensor.
        """
        self.check(online_1=online_1, online_2=online_2, target_1=target_1, target_2=target_2)
        return 4.0 - 4.0 * symmetric_cosine(online_1, online_2, target_1, target_2, self.gather_distributed)

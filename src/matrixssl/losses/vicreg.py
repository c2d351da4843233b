"""VICReg (Bardes, Ponce & LeCun, "Variance-Invariance-Covariance Regularization", ICLR 2022).

For the two views' embeddings z₁, z₂ (B x d, raw scale, no L2 normalisation):

    invariance  s = (1 / Bd) Σ ‖z₁ - z₂‖²                              (mean squared error)
    variance    v = ½ Σ_views (1/d) Σ_j max(0, 1 - sqrt(Var(z_·j) + 1e-4))   (unbiased variance)
    covariance  c = Σ_views (1/d) Σ_{i ≠ j} Cov(z)_ij²,  Cov(z) = (z - z̄)ᵀ(z - z̄) / (B - 1)
    loss        L = 25·s + 25·v + 1·c

The variance hinge keeps every dimension spread (std >= 1), the covariance term decorrelates dimensions. With
`gather_distributed=True` all three terms use the global batch, as the official code does.

Usage::

    loss_fn = VICRegLoss()
    loss = loss_fn(projection_1, projection_2)
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from matrixssl.functional import centred
from matrixssl.losses._inputs import EmbeddingLoss, prepare

VARIANCE_EPS = 1e-4


class VICRegTerms(NamedTuple):
    """The weighted loss and its three unweighted terms, for logging; all 0-d tensors.

    Attributes:
        loss: the weighted sum, what `VICRegLoss.forward` returns.
        invariance: the mean squared error between the views.
        variance: the hinge on the standard deviations, averaged over the views.
        covariance: the off-diagonal covariance penalty, summed over the views.
    """

    loss: Tensor
    invariance: Tensor
    variance: Tensor
    covariance: Tensor


def _variance_and_covariance(z: Tensor) -> tuple[Tensor, Tensor]:
    batch, dim = z.shape
    z = centred(z)
    std = torch.sqrt(z.square().sum(0) / (batch - 1) + VARIANCE_EPS)
    cov = z.T @ z / (batch - 1)
    off_diagonal = cov.square().sum() - torch.diagonal(cov).square().sum()
    return F.relu(1 - std).mean(), off_diagonal / dim


class VICRegLoss(EmbeddingLoss):
    """λ·invariance + μ·variance + ν·covariance, by default the paper's 25, 25 and 1.

    Args:
        invariance_weight: λ.
        variance_weight: μ.
        covariance_weight: ν.
        gather_distributed: compute all three terms on the batch gathered from all ranks.
    """

    def __init__(
        self,
        *,
        invariance_weight: float = 25.0,
        variance_weight: float = 25.0,
        covariance_weight: float = 1.0,
        gather_distributed: bool = False,
    ) -> None:
        super().__init__(gather_distributed=gather_distributed)
        weights = {
            "invariance_weight": invariance_weight,
            "variance_weight": variance_weight,
            "covariance_weight": covariance_weight,
        }
        for name, value in weights.items():
            if value < 0:
                raise ValueError(f"{name} must be >= 0, got {value}")
        self.invariance_weight, self.variance_weight, self.covariance_weight = weights.values()

    def terms(self, z_1: Tensor, z_2: Tensor) -> VICRegTerms:
        """The loss and its three terms.

        Args:
            z_1: (B, d) projections of view 1, at their raw scale.
            z_2: (B, d) projections of view 2.

        Returns:
            The weighted loss and the unweighted terms.
        """
        self.check(z_1=z_1, z_2=z_2)
        with torch.autocast(device_type=z_1.device.type, enabled=False):
            a, b = (
                prepare(z, gather_distributed=self.gather_distributed, normalize=False) for z in (z_1, z_2)
            )
            invariance = F.mse_loss(a, b)
            (variance_a, covariance_a), (variance_b, covariance_b) = map(_variance_and_covariance, (a, b))
            variance = 0.5 * (variance_a + variance_b)
            covariance = covariance_a + covariance_b
            loss = (
                self.invariance_weight * invariance
                + self.variance_weight * variance
                + self.covariance_weight * covariance
            )
        return VICRegTerms(loss, invariance, variance, covariance)

    def forward(self, z_1: Tensor, z_2: Tensor) -> Tensor:
        """The VICReg loss of two views.

        Args:
            z_1: (B, d) projections of view 1, at their raw scale.
            z_2: (B, d) projections of view 2.

        Returns:
            0-d tensor.
        """
        return self.terms(z_1, z_2).loss

"""Barlow Twins (Zbontar et al., "Self-Supervised Learning via Redundancy Reduction", ICML 2021).

Each embedding dimension is standardised over the batch (BatchNorm without affine: mean 0, biased variance 1,
eps 1e-5), then C = (1/B) ẑ₁ᵀ ẑ₂ (d x d) is the cross-correlation of the two views and

    L = Σ_i (1 - C_ii)² + λ Σ_{i ≠ j} C_ij²,      λ = 0.0051

The first sum makes the views agree (invariance), the second decorrelates the dimensions (redundancy
reduction). With `gather_distributed=True` the batch statistics and C use the global batch, as the official
code does with synchronised BatchNorm. The embeddings are used at their raw scale (no L2 normalisation).

Usage::

    loss_fn = BarlowTwinsLoss()
    loss = loss_fn(projection_1, projection_2)
"""

from __future__ import annotations

import torch
from torch import Tensor

from matrixssl.functional import centred
from matrixssl.losses._inputs import EmbeddingLoss, prepare

BATCHNORM_EPS = 1e-5


def _standardised(z: Tensor) -> Tensor:
    z = centred(z)
    return z / torch.sqrt(z.square().mean(0) + BATCHNORM_EPS)


class BarlowTwinsLoss(EmbeddingLoss):
    """Σ(1 - C_ii)² + λ Σ_{i≠j} C_ij² on the cross-correlation C of the standardised views.

    Args:
        off_diagonal_weight: λ, the weight of the redundancy-reduction term.
        gather_distributed: standardise and correlate over the batch gathered from all ranks.
    """

    def __init__(self, *, off_diagonal_weight: float = 0.0051, gather_distributed: bool = False) -> None:
        super().__init__(gather_distributed=gather_distributed)
        if off_diagonal_weight < 0:
            raise ValueError(f"off_diagonal_weight must be >= 0, got {off_diagonal_weight}")
        self.off_diagonal_weight = off_diagonal_weight

    def forward(self, z_1: Tensor, z_2: Tensor) -> Tensor:
        """The Barlow Twins loss of two views.

        Args:
            z_1: (B, d) projections of view 1, at their raw scale.
            z_2: (B, d) projections of view 2.

        Returns:
            0-d tensor.
        """
        self.check(z_1=z_1, z_2=z_2)
        with torch.autocast(device_type=z_1.device.type, enabled=False):
            a, b = (
                _standardised(prepare(z, gather_distributed=self.gather_distributed, normalize=False))
                for z in (z_1, z_2)
            )
            c = a.T @ b / a.shape[0]
            diagonal = torch.diagonal(c)
            off_diagonal = c.square().sum() - diagonal.square().sum()
            return (1 - diagonal).square().sum() + self.off_diagonal_weight * off_diagonal

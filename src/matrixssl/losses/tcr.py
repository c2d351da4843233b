"""Total coding rate (Yu et al., 2020; the regulariser of EMP-SSL, Tong et al., 2023).

    TCR(Z) = ½ log det(I_d + d / (B ε²) · ZᵀZ),   Z: (B, d) with unit-norm rows

The loss is -TCR: maximising the coding rate spreads the embeddings over all directions. Computed exactly with
a Cholesky log-det on the smaller side (Sylvester: det(I_d + c ZᵀZ) = det(I_B + c ZZᵀ)); the matrix is
positive definite by construction, so no ridge is needed.
"""

from __future__ import annotations

import torch
from torch import Tensor

from matrixssl.losses._inputs import EmbeddingLoss, prepare


def total_coding_rate(z: Tensor, eps_squared: float) -> Tensor:
    """Total coding rate ½ log det(I + d/(B ε²) ZᵀZ), computed on the smaller of the B x B and d x d sides.

    Args:
        z: (B, d) embeddings, already L2-normalised by row (this function does not normalise).
        eps_squared: ε², the distortion; a smaller ε² weighs the spread more.

    Returns:
        0-d tensor.
    """
    batch, dim = z.shape
    gram = z @ z.T if batch <= dim else z.T @ z
    eye = torch.eye(gram.shape[0], dtype=z.dtype, device=z.device)
    # Every eigenvalue of I + c·Gram is at least 1, so finite input always factorises: `cholesky_ex` skips the
    # host-side check of `cholesky` (a GPU sync per call); non-finite input stays so for the finiteness check.
    factor, _ = torch.linalg.cholesky_ex(eye + dim / (batch * eps_squared) * gram)
    return torch.log(torch.diagonal(factor)).sum()


class TCRLoss(EmbeddingLoss):
    """-TCR(z) of one batch of embeddings (rows L2-normalised here): spreads them over all directions.

    Args:
        eps_squared: ε² (EMP-SSL uses 0.2).
        gather_distributed: compute on the batch gathered from all ranks.
    """

    def __init__(self, *, eps_squared: float = 0.2, gather_distributed: bool = False) -> None:
        super().__init__(gather_distributed=gather_distributed)
        if eps_squared <= 0:
            raise ValueError(f"eps_squared must be > 0, got {eps_squared}")
        self.eps_squared = eps_squared

    def forward(self, z: Tensor) -> Tensor:
        """-TCR of the batch.

        Args:
            z: (B, d) embeddings of one view (or of all views stacked), B >= 2.

        Returns:
            0-d tensor.
        """
        self.check(z=z)
        with torch.autocast(device_type=z.device.type, enabled=False):
            return -total_coding_rate(
                prepare(z, gather_distributed=self.gather_distributed), self.eps_squared
            )

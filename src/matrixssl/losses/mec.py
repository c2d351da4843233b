"""Maximum Entropy Coding (Liu et al., NeurIPS 2022), as in the official MEC code.

    L = -(1 / (m λ)) · ½ [ tr log(I + λ P₁Z₂ᵀ) + tr log(I + λ P₂Z₁ᵀ) ],   λ = d / (m ε²)

P = online (predictor) outputs, Z = teacher outputs, both with unit-norm rows, m the (global) batch size. The
log is the Taylor series Σ_k (-1)^{k+1} (λ PZᵀ)^k / k, so the first-order term is the mean cosine similarity
(SimSiam/BYOL) and higher orders spread the spectrum. The official code warms λ up from λ/8 to λ over the
first epochs to keep the series convergent: pass `lambda_scale` (e.g. 1/8 -> 1) from the training loop.
By cyclicity tr((PZᵀ)^k) = tr((ZᵀP)^k), so the traces are taken on the smaller of the m x m and d x d sides.

Usage::

    loss_fn = MECLoss()
    loss = loss_fn(online_1, online_2, teacher_1, teacher_2, lambda_scale=1.0)
"""

from __future__ import annotations

import torch
from torch import Tensor

from matrixssl.functional import taylor_log_coefficients, trace_powers
from matrixssl.losses._inputs import EmbeddingLoss, prepare


class MECLoss(EmbeddingLoss):
    """Maximum Entropy Coding: -(1/(mλ)) · ½[tr log(I + λ P₁Z₂ᵀ) + tr log(I + λ P₂Z₁ᵀ)], λ = d/(m ε²).

    Args:
        eps_squared: ε² of the paper (official default 64); a smaller ε² means a larger λ.
        taylor_order: number of terms of the Taylor series of the log.
        gather_distributed: compute on the batch gathered from all ranks (m is then the global batch).
    """

    def __init__(
        self, *, eps_squared: float = 64.0, taylor_order: int = 4, gather_distributed: bool = False
    ) -> None:
        super().__init__(gather_distributed=gather_distributed)
        if eps_squared <= 0:
            raise ValueError(f"eps_squared must be > 0, got {eps_squared}")
        self.eps_squared = eps_squared
        self.taylor_order = taylor_order
        self.coefficients = taylor_log_coefficients(taylor_order, 0.0)[1:]

    def _half(self, online: Tensor, target: Tensor, lam: float) -> Tensor:
        batch, dim = online.shape
        cross = lam * (online @ target.T if batch <= dim else target.T @ online)
        traces = trace_powers(cross, len(self.coefficients))
        return torch.stack([c * t for c, t in zip(self.coefficients, traces)]).sum()

    def forward(
        self,
        online_1: Tensor,
        online_2: Tensor,
        target_1: Tensor,
        target_2: Tensor,
        lambda_scale: float = 1.0,
    ) -> Tensor:
        """The symmetrised MEC loss of two views.

        Args:
            online_1: (B, d) predictor outputs of view 1; the gradient flows into them.
            online_2: (B, d) predictor outputs of view 2.
            target_1: (B, d) teacher outputs of view 1; detached here.
            target_2: (B, d) teacher outputs of view 2; detached here.
            lambda_scale: multiplies λ; the official code warms it up from 1/8 to 1 over the first epochs.

        Returns:
            0-d tensor.
        """
        self.check(online_1=online_1, online_2=online_2, target_1=target_1, target_2=target_2)
        if lambda_scale <= 0:
            raise ValueError(f"lambda_scale must be > 0, got {lambda_scale}")
        gather = self.gather_distributed
        with torch.autocast(device_type=online_1.device.type, enabled=False):
            p1, p2 = (prepare(p, gather_distributed=gather) for p in (online_1, online_2))
            z1, z2 = (prepare(z, gather_distributed=gather, detach=True) for z in (target_1, target_2))
            batch, dim = p1.shape
            lam = dim / (batch * self.eps_squared) * lambda_scale
            total = self._half(p1, z2, lam) + self._half(p2, z1, lam)
        return -0.5 * total / (batch * lam)

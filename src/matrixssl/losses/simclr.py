"""SimCLR's NT-Xent loss (Chen et al., "A Simple Framework for Contrastive Learning", ICML 2020).

With the 2B unit-norm embeddings of both views stacked as rows u_1..u_2B and s_ij = u_iᵀu_j / τ:

    ℓ_i = -log( exp(s_i,pos(i)) / Σ_{j ≠ i} exp(s_ij) ),      L = (1 / 2B) Σ_i ℓ_i

pos(i) is the other view of the same image, so every anchor has 1 positive and 2B - 2 negatives among its 2B - 1
candidates. With `gather_distributed=True` the rows come from all ranks (2B is then the global count) and every
rank computes the same loss on the gathered batch, which the gather's backward turns into correct gradients.

Usage::

    loss_fn = NTXentLoss(temperature=0.1)
    loss = loss_fn(projection_1, projection_2)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from matrixssl.losses._inputs import EmbeddingLoss, prepare


class NTXentLoss(EmbeddingLoss):
    """NT-Xent: cross-entropy of each embedding's cosine similarities, its other view as the right answer.

    Args:
        temperature: τ (SimCLR's ImageNet default 0.1; its CIFAR-10 runs used 0.5).
        gather_distributed: take the negatives from the batch gathered from all ranks.
    """

    def __init__(self, *, temperature: float = 0.1, gather_distributed: bool = False) -> None:
        super().__init__(gather_distributed=gather_distributed)
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.temperature = temperature

    def forward(self, z_1: Tensor, z_2: Tensor) -> Tensor:
        """NT-Xent of two views, averaged over all 2B anchors.

        Args:
            z_1: (B, d) projections of view 1; row i pairs with row i of `z_2`.
            z_2: (B, d) projections of view 2.

        Returns:
            0-d tensor.
        """
        self.check(z_1=z_1, z_2=z_2)
        with torch.autocast(device_type=z_1.device.type, enabled=False):
            u = torch.cat([prepare(z, gather_distributed=self.gather_distributed) for z in (z_1, z_2)])
            batch = u.shape[0] // 2
            self_pairs = torch.eye(2 * batch, dtype=torch.bool, device=u.device)
            logits = (u @ u.T / self.temperature).masked_fill(self_pairs, float("-inf"))
            positives = torch.arange(2 * batch, device=u.device).roll(batch)
            return F.cross_entropy(logits, positives)

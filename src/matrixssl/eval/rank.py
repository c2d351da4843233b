"""How many dimensions a representation uses: effective rank of the covariance, RankMe, and a 2-D map.

Two related numbers, both exp(entropy of a normalised spectrum): the effective rank (Roy & Vetterli, 2007) of the
centred covariance, which is what the training monitor logs, and RankMe (Garrido et al., ICML 2023) of the raw,
uncentred embedding matrix, with the paper's epsilon, which the paper shows tracks downstream accuracy.
"""

from __future__ import annotations

import torch
from torch import Tensor

from matrixssl.functional import centred, covariance, effective_rank

RANKME_EPS = 1e-7


def rankme(embeddings: Tensor, eps: float = RANKME_EPS) -> float:
    """RankMe(Z) = exp(-Σ p_k log p_k), p_k = σ_k / Σ_j σ_j + eps, σ the singular values of Z (N, D).

    The singular values are those of the triangular factor R of Z = QR, built chunk by chunk in float64
    (a tall-skinny QR): the memory of a few thousand rows, whatever N, and, unlike the eigenvalues of ZᵀZ, zero
    singular values stay at rounding level instead of its square root, which would rival `eps`.
    """
    if embeddings.dim() != 2:
        raise ValueError(f"rankme needs an (N, D) embedding matrix, got shape {tuple(embeddings.shape)}")
    dim = embeddings.shape[1]
    triangular = embeddings.new_zeros((0, dim), dtype=torch.float64)
    for chunk in embeddings.split(max(dim, 4096)):
        triangular = torch.linalg.qr(torch.cat([triangular, chunk.double()]), mode="r").R
    singular_values = torch.linalg.svdvals(triangular)
    p = singular_values / singular_values.sum().clamp_min(1e-300) + eps
    return float(torch.exp(-(p * p.log()).sum()))


def rank_metrics(embeddings: Tensor) -> dict[str, float]:
    """Effective rank of the covariance, RankMe, and the dimension, for an (N, D) embedding matrix."""
    return {
        "effective_rank": round(float(effective_rank(covariance(embeddings.double()))), 4),
        "rankme": round(rankme(embeddings), 4),
        "dim": int(embeddings.shape[1]),
    }


def embedding_2d(features: Tensor, seed: int = 0) -> tuple[Tensor, str]:
    """(N, 2) coordinates and the method's name: UMAP when umap-learn is importable, else PCA.

    umap-learn is not a dependency (it pulls numba); PCA keeps the map available everywhere.
    """
    try:
        import umap
    except ImportError:
        x = centred(features.double())
        _, _, directions = torch.linalg.svd(x, full_matrices=False)
        return (x @ directions[:2].T).float(), "pca"
    points = umap.UMAP(n_components=2, random_state=seed).fit_transform(features.float().numpy())
    return torch.as_tensor(points, dtype=torch.float32), "umap"

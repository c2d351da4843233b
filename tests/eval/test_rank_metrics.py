"""RankMe and effective rank on matrices whose spectra are known; the 2-D map's PCA and UMAP dispatch."""

from __future__ import annotations

import math
import sys
import types

import numpy as np
import pytest
import torch

from matrixssl.eval.rank import RANKME_EPS, embedding_2d, rank_metrics, rankme


def orthonormal(n: int, r: int, seed: int, centred: bool = False) -> torch.Tensor:
    """(n, r) orthonormal columns; with `centred`, also orthogonal to the all-ones vector."""
    generator = torch.Generator().manual_seed(seed)
    a = torch.randn(n, r + 1, dtype=torch.float64, generator=generator)
    if centred:
        a[:, 0] = 1.0  # QR keeps the later columns orthogonal to the first
        return torch.linalg.qr(a).Q[:, 1:]
    return torch.linalg.qr(a).Q[:, :r]


def rank_r_embedding(n: int, d: int, r: int, centred: bool = False) -> torch.Tensor:
    """Z = U Vᵀ: r singular values equal to one, the other min(n, d) - r zero."""
    return orthonormal(n, r, 0, centred) @ orthonormal(d, r, 1).T


@pytest.mark.parametrize("r", [1, 3, 8])
def test_rankme_of_an_orthonormal_rank_r_embedding_is_r(r: int) -> None:
    d = 16
    z = rank_r_embedding(200, d, r)
    # r probabilities 1/r + eps and d - r probabilities eps, written out by hand.
    p = 1 / r + RANKME_EPS
    expected = math.exp(-(r * p * math.log(p) + (d - r) * RANKME_EPS * math.log(RANKME_EPS)))
    assert rankme(z) == pytest.approx(expected, rel=1e-9)
    assert rankme(z) == pytest.approx(r, rel=1e-4)


def test_rankme_matches_an_svd_in_either_orientation_and_over_chunks() -> None:
    generator = torch.Generator().manual_seed(3)
    z = torch.randn(9000, 12, dtype=torch.float64, generator=generator) * torch.linspace(0.1, 3, 12)
    s = torch.linalg.svdvals(z)
    p = s / s.sum() + RANKME_EPS
    reference = float(torch.exp(-(p * p.log()).sum()))
    assert rankme(z) == pytest.approx(reference, rel=1e-10)
    assert rankme(z.T) == pytest.approx(reference, rel=1e-10)  # the (N < D) path uses the other Gram matrix
    with pytest.raises(ValueError, match=r"\(N, D\)"):
        rankme(torch.ones(3))


def test_effective_rank_of_the_covariance_counts_centred_directions() -> None:
    z = rank_r_embedding(300, 32, 5, centred=True) * math.sqrt(300)  # covariance: 5 unit eigenvalues
    metrics = rank_metrics(z)
    assert metrics["effective_rank"] == 5.0 and metrics["dim"] == 32
    assert metrics["rankme"] == pytest.approx(5.0, abs=1e-3)
    # A large shared offset dominates the raw matrix (RankMe drops towards 1); the covariance ignores it.
    shifted = rank_metrics(z + 10.0)
    assert shifted["effective_rank"] == 5.0 and shifted["rankme"] < 2.0


def test_pca_map_has_the_top_two_variances_uncorrelated(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "umap", None)  # import umap now raises ImportError
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(500, 6, generator=generator) * torch.tensor([5.0, 1.0, 3.0, 0.5, 0.2, 0.1]) + 7.0
    points, method = embedding_2d(x)
    assert method == "pca" and points.shape == (500, 2)
    covariance = torch.cov(points.double().T)
    top_two = torch.linalg.eigvalsh(torch.cov(x.double().T)).flip(0)[:2]
    assert torch.allclose(covariance.diagonal(), top_two, rtol=1e-5)
    assert abs(float(covariance[0, 1])) < 1e-4 * float(top_two[1])


def test_map_uses_umap_when_it_is_importable(monkeypatch: pytest.MonkeyPatch) -> None:
    """The dispatch only, with a stand-in module: umap-learn itself is not installed here."""
    calls: dict[str, object] = {}

    class FakeUMAP:
        def __init__(self, n_components: int, random_state: int) -> None:
            calls.update(n_components=n_components, random_state=random_state)

        def fit_transform(self, data: np.ndarray) -> np.ndarray:
            calls["rows"] = data.shape[0]
            return np.arange(2 * data.shape[0], dtype=np.float64).reshape(-1, 2)

    monkeypatch.setitem(sys.modules, "umap", types.SimpleNamespace(UMAP=FakeUMAP))
    points, method = embedding_2d(torch.randn(10, 4), seed=7)
    assert method == "umap" and calls == {"n_components": 2, "random_state": 7, "rows": 10}
    assert points.dtype == torch.float32 and points[4].tolist() == [8.0, 9.0]

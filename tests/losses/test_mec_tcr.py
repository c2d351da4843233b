"""MEC and TCR: known values, the Sylvester and MCE identities, numerics and errors."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from matrixssl.functional import matrix_cross_entropy
from matrixssl.losses import MECLoss, TCRLoss, total_coding_rate


def mec_reference(p: torch.Tensor, z: torch.Tensor, lam: float, order: int) -> torch.Tensor:
    """The official loop: Taylor series of log(I + λ P Zᵀ) on the batch side, then the trace."""
    c = lam * F.normalize(p, dim=1) @ F.normalize(z, dim=1).T
    power, total = c, torch.zeros_like(c)
    for k in range(1, order + 1):
        if k > 1:
            power = power @ c
        total = total + (-1) ** (k + 1) * power / k
    return torch.trace(total)


@pytest.mark.parametrize("batch,dim", [(16, 64), (64, 16)])
def test_mec_matches_the_official_formula(batch: int, dim: int) -> None:
    p1, p2, z1, z2 = (torch.randn(batch, dim, dtype=torch.float64) for _ in range(4))
    lam = dim / (batch * 64.0) * 0.5
    expected = -0.5 * (mec_reference(p1, z2, lam, 4) + mec_reference(p2, z1, lam, 4)) / (batch * lam)
    assert MECLoss()(p1, p2, z1, z2, lambda_scale=0.5).item() == pytest.approx(expected.item(), rel=1e-12)


def test_mec_first_order_is_negative_mean_cosine_and_series_approaches_logdet() -> None:
    p, z = torch.randn(32, 8, dtype=torch.float64), torch.randn(32, 8, dtype=torch.float64)
    cosine = (F.normalize(p, dim=1) * F.normalize(z, dim=1)).sum(1).mean()
    assert MECLoss(taylor_order=1)(p, p, z, z).item() == pytest.approx(-cosine.item(), rel=1e-12)
    # Small ε⁻² keeps λ·PZᵀ small: order 12 equals the exact log-det (Sylvester on the d x d side).
    lam = 8 / (32 * 4000.0)
    pn, zn = F.normalize(p, dim=1), F.normalize(z, dim=1)
    exact = torch.linalg.slogdet(torch.eye(8, dtype=torch.float64) + lam * zn.T @ pn)[1]
    series = MECLoss(eps_squared=4000.0, taylor_order=12)(p, p, z, z)
    assert series.item() == pytest.approx((-exact / (32 * lam)).item(), rel=1e-10)


def test_tcr_equals_matrix_cross_entropy_identity() -> None:
    # MCE(I/d, Σ + λI) = -(2/d) TCR(Z) - log λ + tr Σ + dλ, Σ = ZᵀZ/B, λ = ε²/d.
    batch, dim, eps_squared = 40, 12, 0.2
    z = F.normalize(torch.randn(batch, dim, dtype=torch.float64), dim=1)
    sigma, lam = z.T @ z / batch, eps_squared / dim
    eye = torch.eye(dim, dtype=torch.float64)
    lhs = matrix_cross_entropy(eye / dim, sigma + lam * eye)
    rhs = -2 / dim * total_coding_rate(z, eps_squared) - math.log(lam) + torch.trace(sigma) + dim * lam
    assert lhs.item() == pytest.approx(rhs.item(), rel=1e-12)


@pytest.mark.parametrize("batch,dim", [(10, 30), (30, 10)])
def test_tcr_both_sides_equal_direct_logdet(batch: int, dim: int) -> None:
    z = torch.randn(batch, dim, dtype=torch.float64)
    zn = F.normalize(z, dim=1)
    direct = 0.5 * torch.logdet(torch.eye(dim, dtype=torch.float64) + dim / (batch * 0.2) * zn.T @ zn)
    assert TCRLoss()(z).item() == pytest.approx(-direct.item(), rel=1e-12)


def test_collapsed_input_is_finite_for_mec_and_tcr() -> None:
    row = torch.randn(1, 8, dtype=torch.float64)
    x = row.repeat(16, 1).requires_grad_()
    for loss in (MECLoss()(x, x, x, x), TCRLoss()(x)):
        (grad,) = torch.autograd.grad(loss, [x])
        assert torch.isfinite(loss) and torch.isfinite(grad).all()


def test_errors() -> None:
    x = torch.randn(8, 4)
    with pytest.raises(ValueError, match="at least 2"):
        TCRLoss()(x[:1])
    with pytest.raises(ValueError, match="shapes must match"):
        MECLoss()(x, x, x, torch.randn(8, 3))
    with pytest.raises(ValueError, match="eps_squared"):
        TCRLoss(eps_squared=0.0)
    with pytest.raises(ValueError, match="lambda_scale"):
        MECLoss()(x, x, x, x, lambda_scale=0.0)

"""Matrix information quantities against independent float64 computations and known identities."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.linalg
import torch
from conftest import random_spd
from torch.autograd import gradcheck

from matrixssl import functional as Fm


def numpy_logm_spd(a: torch.Tensor) -> np.ndarray:
    w, v = np.linalg.eigh(a.numpy())
    return (v * np.log(w)) @ v.T


@pytest.mark.parametrize("d", [1, 2, 5, 16, 64])
def test_matrix_log_eigh_matches_numpy_and_scipy(d: int) -> None:
    a = random_spd(d, seed=d)
    ours = Fm.matrix_log(a).numpy()
    for reference in (numpy_logm_spd(a), scipy.linalg.logm(a.numpy()).real):
        assert np.linalg.norm(ours - reference) <= 1e-8 * np.linalg.norm(reference) + 1e-12


def test_matrix_log_batched() -> None:
    batch = torch.stack([random_spd(6, seed=s) for s in range(3)])
    out = Fm.matrix_log(batch)
    for i in range(3):
        torch.testing.assert_close(out[i], Fm.matrix_log(batch[i]), rtol=1e-12, atol=1e-12)


def test_taylor_log_converges_to_exact_inside_radius() -> None:
    e = random_spd(8, seed=1)
    a = torch.eye(8, dtype=torch.float64) + 0.3 * e / torch.linalg.matrix_norm(e, ord=2)
    exact = Fm.matrix_log(a)
    errors = [
        torch.linalg.matrix_norm(Fm.matrix_log(a, "taylor", k) - exact).item() for k in (1, 2, 4, 8, 16)
    ]
    assert all(later < earlier for earlier, later in zip(errors, errors[1:]))
    assert errors[-1] < 1e-8


def test_taylor_log_of_non_symmetric_matrix_matches_scipy() -> None:
    g = torch.Generator().manual_seed(3)
    n = torch.randn(6, 6, generator=g, dtype=torch.float64)
    a = torch.eye(6, dtype=torch.float64) + 0.2 * n / torch.linalg.matrix_norm(n, ord=2)
    np.testing.assert_allclose(
        Fm.matrix_log(a, "taylor", 30).numpy(), scipy.linalg.logm(a.numpy()).real, rtol=0, atol=1e-12
    )


def test_taylor_log_coefficients_reexpand_the_series() -> None:
    assert Fm.taylor_log_coefficients(4, 0.0) == pytest.approx([0.0, 1.0, -0.5, 1 / 3, -0.25])
    # Σ_k (-1)^{k+1} (s + x)^k / k == Σ_j a_j x^j as polynomials: compare at a few points.
    for shift in (-0.5, 0.0, 0.3):
        a = Fm.taylor_log_coefficients(5, shift)
        for x in (-0.4, 0.1, 0.7):
            series = sum((-1) ** (k + 1) * (shift + x) ** k / k for k in range(1, 6))
            assert sum(c * x**j for j, c in enumerate(a)) == pytest.approx(series, abs=1e-14)


@pytest.mark.parametrize("order", [1, 2, 3, 4, 5, 7])
def test_trace_powers_match_explicit_powers(order: int) -> None:
    k = torch.randn(9, 9, dtype=torch.float64)
    expected = [torch.trace(torch.linalg.matrix_power(k, j)) for j in range(1, order + 1)]
    torch.testing.assert_close(torch.stack(Fm.trace_powers(k, order)), torch.stack(expected))


def test_entropy_kl_cross_entropy_identities() -> None:
    for seed in range(4):
        p, q = random_spd(7, seed), random_spd(7, seed + 100)
        me, mkl, mce = Fm.matrix_entropy(p), Fm.matrix_kl(p, q), Fm.matrix_cross_entropy(p, q)
        assert mce.item() == pytest.approx((mkl + me + torch.trace(p)).item(), rel=1e-12)
        assert mkl.item() > 0
        assert Fm.matrix_kl(p, p).item() == pytest.approx(0.0, abs=1e-12)
        expected_me = -np.trace(p.numpy() @ numpy_logm_spd(p))
        assert me.item() == pytest.approx(expected_me, rel=1e-10)


def test_entropy_of_trace_one_matrix_is_log_effective_rank() -> None:
    d = 10
    a = random_spd(d, seed=7)
    a = a / torch.trace(a)
    uniform = torch.eye(d, dtype=torch.float64) / d
    log_erank = math.log(Fm.effective_rank(a).item())
    assert log_erank == pytest.approx(Fm.matrix_entropy(a).item(), rel=1e-10)
    assert log_erank == pytest.approx(math.log(d) - Fm.matrix_kl(a, uniform).item(), rel=1e-10)


def test_effective_rank_known_values() -> None:
    assert Fm.effective_rank(torch.eye(6)).item() == pytest.approx(6.0, rel=1e-6)
    assert Fm.effective_rank(torch.diag(torch.tensor([1.0, 1.0, 0.0, 0.0]))).item() == pytest.approx(2.0)
    v = torch.randn(5, 1, dtype=torch.float64)
    assert Fm.effective_rank(v @ v.T).item() == pytest.approx(1.0, rel=1e-6)
    # Rectangular input: singular values, not eigenvalues.
    assert Fm.effective_rank(torch.eye(3, 5)).item() == pytest.approx(3.0, rel=1e-6)


def test_entropy_taylor_path_and_zero_eigenvalues() -> None:
    p = torch.diag(torch.tensor([0.5, 0.5, 0.0], dtype=torch.float64))
    assert Fm.matrix_entropy(p).item() == pytest.approx(math.log(2.0))
    q = torch.eye(3, dtype=torch.float64) + 0.01 * random_spd(3, 1)
    assert Fm.matrix_entropy(q, "taylor", 12).item() == pytest.approx(Fm.matrix_entropy(q).item(), rel=1e-9)


def test_covariances_equal_centering_matrix_form() -> None:
    a, b = torch.randn(20, 4, dtype=torch.float64), torch.randn(20, 6, dtype=torch.float64)
    h = torch.eye(20, dtype=torch.float64) - torch.ones(20, 20, dtype=torch.float64) / 20
    torch.testing.assert_close(Fm.cross_covariance(a, b), a.T @ h @ b / 20)
    torch.testing.assert_close(Fm.covariance(a), a.T @ h @ a / 20)
    np.testing.assert_allclose(Fm.covariance(a).numpy(), np.cov(a.numpy().T, bias=True), atol=1e-12)


def _sym(x: torch.Tensor) -> torch.Tensor:
    return x @ x.T + 0.5 * torch.eye(x.shape[0], dtype=x.dtype)


def test_gradcheck_every_function() -> None:
    x = torch.randn(5, 5, dtype=torch.float64, requires_grad=True)
    y = torch.randn(5, 5, dtype=torch.float64, requires_grad=True)
    z = torch.randn(7, 3, dtype=torch.float64, requires_grad=True)
    assert gradcheck(lambda m: Fm.matrix_log(_sym(m)), (x,))
    assert gradcheck(lambda m: Fm.matrix_log(torch.eye(5, dtype=m.dtype) + 0.1 * m, "taylor"), (x,))
    assert gradcheck(lambda m: Fm.matrix_entropy(_sym(m)), (x,))
    assert gradcheck(lambda m: Fm.matrix_entropy(_sym(m), "taylor"), (x,))
    assert gradcheck(lambda m, n: Fm.matrix_kl(_sym(m), _sym(n)), (x, y))
    assert gradcheck(lambda m, n: Fm.matrix_cross_entropy(_sym(m), _sym(n)), (x, y))
    assert gradcheck(lambda m: Fm.effective_rank(m), (z,))
    assert gradcheck(lambda m: Fm.covariance(m), (z,))


def test_log_gradient_is_finite_and_exact_at_repeated_eigenvalues() -> None:
    # d tr(G log A) / dA at A = cI is G / c (autograd through eigenvectors would divide by zero here).
    a = (2.0 * torch.eye(4, dtype=torch.float64)).requires_grad_()
    g = random_spd(4, 2)
    (g * Fm.matrix_log(a)).sum().backward()
    assert a.grad is not None
    torch.testing.assert_close(a.grad, g / 2.0)
    # Nearly repeated eigenvalues: matches finite differences of the exact function.
    b = torch.diag(torch.tensor([1.0, 1.0 + 1e-9, 3.0], dtype=torch.float64)).requires_grad_()
    (g[:3, :3] * Fm.matrix_log(b)).sum().backward()
    assert b.grad is not None and torch.isfinite(b.grad).all()
    assert b.grad[0, 0].item() == pytest.approx(g[0, 0].item(), rel=1e-6)


def test_low_precision_inputs_are_computed_in_float32() -> None:
    a = random_spd(8, 0).float()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = Fm.matrix_log(a.bfloat16())
        entropy = Fm.matrix_entropy(a.bfloat16())
        cov = Fm.covariance(torch.randn(16, 8).bfloat16())
    assert out.dtype == entropy.dtype == cov.dtype == torch.float32
    torch.testing.assert_close(out, Fm.matrix_log(a.bfloat16().float()))


def test_bad_input_errors() -> None:
    with pytest.raises(ValueError, match="square"):
        Fm.matrix_log(torch.randn(3, 4))
    with pytest.raises(ValueError, match="method"):
        Fm.matrix_log(torch.eye(3), method="pade")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="same matrix size"):
        Fm.matrix_kl(torch.eye(3), torch.eye(4))
    with pytest.raises(ValueError, match="Taylor order"):
        Fm.matrix_log(torch.eye(3), "taylor", 0)
    with pytest.raises(ValueError, match="same batch"):
        Fm.cross_covariance(torch.randn(4, 2), torch.randn(5, 2))

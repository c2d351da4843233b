"""SimCLR, BYOL, SimSiam, Barlow Twins and VICReg: known values, closed forms, collapse and input errors.

The references below are plain numpy/float64 loops over samples and dimensions, written from the papers'
formulas independently of the vectorised losses.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from matrixssl.losses import BarlowTwinsLoss, BYOLLoss, NTXentLoss, SimSiamLoss, VICRegLoss


def unit(v: np.ndarray) -> np.ndarray:
    return v / math.sqrt(float(v @ v))


def ntxent_reference(z1: np.ndarray, z2: np.ndarray, temperature: float) -> float:
    rows = [unit(v) for v in np.concatenate([z1, z2])]
    n, batch = len(rows), len(z1)
    total = 0.0
    for i in range(n):
        positive = (i + batch) % n
        denominator = sum(math.exp(rows[i] @ rows[j] / temperature) for j in range(n) if j != i)
        total += -math.log(math.exp(rows[i] @ rows[positive] / temperature) / denominator)
    return total / n


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(unit(a) @ unit(b))


def byol_reference(p1: np.ndarray, p2: np.ndarray, z1: np.ndarray, z2: np.ndarray) -> float:
    first = np.mean([np.sum((unit(p) - unit(z)) ** 2) for p, z in zip(p1, z2)])
    second = np.mean([np.sum((unit(p) - unit(z)) ** 2) for p, z in zip(p2, z1)])
    return float(first + second)


def barlow_reference(z1: np.ndarray, z2: np.ndarray, weight: float) -> float:
    batch, dim = z1.shape

    def standardise(z: np.ndarray) -> np.ndarray:
        return (z - z.mean(0)) / np.sqrt(z.var(0) + 1e-5)  # numpy's var is the biased one, as BatchNorm's

    a, b = standardise(z1), standardise(z2)
    loss = 0.0
    for i in range(dim):
        for j in range(dim):
            c = sum(a[n, i] * b[n, j] for n in range(batch)) / batch
            loss += (1 - c) ** 2 if i == j else weight * c**2
    return loss


def vicreg_reference(z1: np.ndarray, z2: np.ndarray) -> tuple[float, float, float]:
    batch, dim = z1.shape
    invariance = float(np.mean((z1 - z2) ** 2))
    variance, covariance = 0.0, 0.0
    for z in (z1, z2):
        cov = np.cov(z, rowvar=False)  # unbiased, (d, d)
        variance += 0.5 * np.mean([max(0.0, 1 - math.sqrt(cov[j, j] + 1e-4)) for j in range(dim)])
        covariance += sum(cov[i, j] ** 2 for i in range(dim) for j in range(dim) if i != j) / dim
    return invariance, variance, covariance


def pair(batch: int = 6, dim: int = 5) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    base = torch.randn(batch, dim, dtype=torch.float64)
    return tuple(base + 0.7 * torch.randn(batch, dim, dtype=torch.float64) for _ in range(4))  # type: ignore[return-value]


# --- SimCLR -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("temperature", [0.1, 0.5])
def test_ntxent_matches_numpy_loop(temperature: float) -> None:
    z1, z2, _, _ = pair()
    expected = ntxent_reference(z1.numpy(), z2.numpy(), temperature)
    assert NTXentLoss(temperature=temperature)(z1, z2).item() == pytest.approx(expected, rel=1e-12)


def test_ntxent_closed_forms() -> None:
    batch, temperature = 4, 0.5
    # All embeddings equal: every candidate has the same logit, so each anchor's loss is log(2B - 1).
    same = torch.ones(batch, 3, dtype=torch.float64)
    assert NTXentLoss(temperature=temperature)(same, same).item() == pytest.approx(
        math.log(2 * batch - 1), rel=1e-12
    )
    # Orthonormal images, identical views: positive logit 1/τ, the 2B - 2 negatives have logit 0.
    eye = torch.eye(batch, 6, dtype=torch.float64)
    expected = -1 / temperature + math.log(math.exp(1 / temperature) + 2 * batch - 2)
    assert NTXentLoss(temperature=temperature)(eye, 3.0 * eye).item() == pytest.approx(expected, rel=1e-12)


# --- BYOL and SimSiam ---------------------------------------------------------------------------------------
def test_byol_matches_numpy_and_hand_value() -> None:
    p1, p2, z1, z2 = pair()
    expected = byol_reference(*(t.numpy() for t in (p1, p2, z1, z2)))
    assert BYOLLoss()(p1, p2, z1, z2).item() == pytest.approx(expected, rel=1e-12)
    # Hand-made: cos((1, 0), (1, 1)) = 1/√2 in one direction, orthogonal in the other.
    p = torch.tensor([[1.0, 0.0], [1.0, 0.0]], dtype=torch.float64)
    z = torch.tensor([[1.0, 1.0], [1.0, 1.0]], dtype=torch.float64)
    ortho = torch.tensor([[0.0, 2.0], [0.0, 2.0]], dtype=torch.float64)
    assert BYOLLoss()(p, p, ortho, z).item() == pytest.approx((2 - math.sqrt(2)) + 2, rel=1e-12)
    assert BYOLLoss()(p, p, p, p).item() == pytest.approx(0.0, abs=1e-12)


def test_simsiam_value_and_relation_to_byol() -> None:
    p1, p2, z1, z2 = pair()
    expected = -0.5 * (
        np.mean([cosine(a, b) for a, b in zip(p1.numpy(), z2.numpy())])
        + np.mean([cosine(a, b) for a, b in zip(p2.numpy(), z1.numpy())])
    )
    simsiam = SimSiamLoss()(p1, p2, z1, z2)
    assert simsiam.item() == pytest.approx(expected, rel=1e-12)
    assert BYOLLoss()(p1, p2, z1, z2).item() == pytest.approx(4 + 4 * simsiam.item(), rel=1e-12)
    # Each prediction is compared with the target of the other view: aligned predictions give -1.
    assert SimSiamLoss()(p1, p2, 3 * p2, 2 * p1).item() == pytest.approx(-1.0, rel=1e-12)


@pytest.mark.parametrize("loss_fn", [SimSiamLoss(), BYOLLoss()], ids=["simsiam", "byol"])
def test_no_gradient_flows_into_targets(loss_fn: torch.nn.Module) -> None:
    p1, p2, z1, z2 = (t.requires_grad_() for t in pair())
    loss_fn(p1, p2, z1, z2).backward()
    assert p1.grad is not None and p2.grad is not None and float(p1.grad.abs().sum()) > 0
    assert z1.grad is None and z2.grad is None


# --- Barlow Twins -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("weight", [0.0051, 0.5])
def test_barlow_twins_matches_numpy_loop(weight: float) -> None:
    z1, z2, _, _ = pair()
    expected = barlow_reference(z1.numpy(), z2.numpy(), weight)
    assert BarlowTwinsLoss(off_diagonal_weight=weight)(z1, z2).item() == pytest.approx(expected, rel=1e-12)


def hadamard_columns(scale: float) -> torch.Tensor:
    """4 samples x 3 dimensions: columns 2-4 of the 4 x 4 Hadamard matrix (mean 0, ±1, orthogonal)."""
    h = torch.tensor([[1, 1, 1, 1], [1, -1, 1, -1], [1, 1, -1, -1], [1, -1, -1, 1]], dtype=torch.float64)
    return scale * h[:, 1:]


def test_barlow_twins_closed_forms() -> None:
    z = hadamard_columns(3.0)  # variance 9, orthogonal columns: C = 9 / (9 + eps) · I, whatever the shift
    c = 9 / (9 + 1e-5)
    assert BarlowTwinsLoss()(z, z + 7.0).item() == pytest.approx(3 * (1 - c) ** 2, rel=1e-9)
    assert BarlowTwinsLoss()(z, -z).item() == pytest.approx(3 * (1 + c) ** 2, rel=1e-12)


# --- VICReg -------------------------------------------------------------------------------------------------
def test_vicreg_terms_match_numpy() -> None:
    z1, z2, _, _ = pair(8, 5)
    z1, z2 = 0.3 * z1, 0.3 * z2  # std below 1, so the variance hinge is active
    invariance, variance, covariance = vicreg_reference(z1.numpy(), z2.numpy())
    terms = VICRegLoss().terms(z1, z2)
    assert variance > 0
    assert terms.invariance.item() == pytest.approx(invariance, rel=1e-12)
    assert terms.variance.item() == pytest.approx(variance, rel=1e-12)
    assert terms.covariance.item() == pytest.approx(covariance, rel=1e-12)
    expected = 25 * invariance + 25 * variance + covariance
    assert terms.loss.item() == pytest.approx(expected, rel=1e-12)
    assert VICRegLoss(invariance_weight=1.0, variance_weight=2.0, covariance_weight=3.0)(
        z1, z2
    ).item() == pytest.approx(invariance + 2 * variance + 3 * covariance, rel=1e-12)


def test_vicreg_closed_forms() -> None:
    # Orthogonal ±1 columns: unbiased variance 4/3 (std > 1), zero covariance, identical views: loss 0.
    z = hadamard_columns(1.0)
    assert VICRegLoss()(z, z).item() == pytest.approx(0.0, abs=1e-15)
    # Halved: variance (1/4)(4/3) = 1/3 per dimension, hinge 1 - sqrt(1/3 + 1e-4); shifted views: invariance 1.
    half = hadamard_columns(0.5)
    terms = VICRegLoss().terms(half, half + 1.0)
    assert terms.invariance.item() == pytest.approx(1.0, rel=1e-12)
    assert terms.variance.item() == pytest.approx(1 - math.sqrt(1 / 3 + 1e-4), rel=1e-12)
    assert terms.covariance.item() == pytest.approx(0.0, abs=1e-15)


# --- shared: collapse, precision, errors --------------------------------------------------------------------
def all_losses() -> dict[str, tuple[torch.nn.Module, int]]:
    """Each loss with the number of (B, d) inputs its forward takes."""
    return {
        "simclr": (NTXentLoss(), 2),
        "byol": (BYOLLoss(), 4),
        "simsiam": (SimSiamLoss(), 4),
        "barlow_twins": (BarlowTwinsLoss(), 2),
        "vicreg": (VICRegLoss(), 2),
    }


@pytest.mark.parametrize("name", list(all_losses()))
def test_collapsed_input_gives_finite_loss_and_gradients(name: str) -> None:
    loss_fn, arity = all_losses()[name]
    x = torch.randn(1, 8, dtype=torch.float64).repeat(16, 1).requires_grad_()
    loss = loss_fn(*[x] * arity)
    (grad,) = torch.autograd.grad(loss, [x])
    assert torch.isfinite(loss) and torch.isfinite(grad).all()


@pytest.mark.parametrize("name", list(all_losses()))
def test_low_precision_inputs_give_float32_losses(name: str) -> None:
    loss_fn, arity = all_losses()[name]
    inputs = [torch.randn(8, 4) for _ in range(arity)]
    expected = loss_fn(*inputs)
    got = loss_fn(*[t.bfloat16() for t in inputs])
    assert got.dtype == torch.float32
    assert got.item() == pytest.approx(expected.item(), rel=0.05, abs=0.05)


@pytest.mark.parametrize("name", list(all_losses()))
def test_bad_inputs_raise_clear_errors(name: str) -> None:
    loss_fn, arity = all_losses()[name]
    x = torch.randn(8, 4)
    with pytest.raises(ValueError, match="at least 2"):
        loss_fn(*[x[:1]] * arity)
    with pytest.raises(ValueError, match="shapes must match"):
        loss_fn(*[x] * (arity - 1), torch.randn(8, 3))
    with pytest.raises(ValueError, match=r"\(batch, dim\)"):
        loss_fn(*[x[0]] * arity)
    bad = x.clone()
    bad[2, 1] = float("nan")
    with pytest.raises(ValueError, match="NaN or Inf"):
        loss_fn(*[x] * (arity - 1), bad)


def test_bad_hyperparameters() -> None:
    with pytest.raises(ValueError, match="temperature must be > 0"):
        NTXentLoss(temperature=0.0)
    with pytest.raises(ValueError, match="off_diagonal_weight must be >= 0"):
        BarlowTwinsLoss(off_diagonal_weight=-1.0)
    with pytest.raises(ValueError, match="variance_weight must be >= 0"):
        VICRegLoss(variance_weight=-0.5)

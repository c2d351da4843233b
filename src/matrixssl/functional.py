"""Matrix information quantities: matrix log, entropy, KL, cross-entropy, effective rank, covariances.

Pure functions on tensors, batched over leading dimensions where it makes sense. Matrix functions always run
in float32 or float64, also when the caller is under bf16/fp16 autocast, because eigen-solvers and Taylor
series lose all accuracy in 8 mantissa bits.

Definitions (P, Q symmetric positive definite, d x d):
    ME(P)     = -tr(P log P)
    MKL(P‖Q)  =  tr(P log P - P log Q - P + Q)
    MCE(P, Q) =  tr(-P log Q + Q)
    erank(A)  =  exp(H(p)),  p_i = s_i / Σ_j s_j over the singular values s of A   (Roy & Vetterli, 2007)

The exact path (`method="eigh"`) differentiates the matrix log through the Daleckii-Krein formula with divided
differences, so gradients stay finite when eigenvalues repeat (where autograd through eigenvectors divides by
zero). The Taylor path (`method="taylor"`) is the series log X ≈ Σ_{k=1..n} (-1)^{k+1} (X - I)^k / k that MEC
and the official Matrix-SSL code use; it is defined for any square matrix and converges when the spectral
radius of X - I is below 1.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal, TypeVar

import torch
from torch import Tensor

Method = Literal["eigh", "taylor"]
_F = TypeVar("_F", bound=Callable[..., Tensor])


def full_precision(x: Tensor) -> Tensor:
    """`x` as float32 when it is a lower-precision float; float32/float64 pass through unchanged."""
    if x.dtype in (torch.float32, torch.float64):
        return x
    return x.float()


def _no_autocast(fn: _F) -> _F:
    """Run `fn` with autocast off: matrix functions must see float32/float64 operands and produce them."""

    def wrapper(*args: object, **kwargs: object) -> Tensor:
        device_type = next((a.device.type for a in args if isinstance(a, Tensor)), "cpu")
        with torch.autocast(device_type=device_type, enabled=False):
            return fn(*args, **kwargs)

    wrapper.__name__ = fn.__name__
    wrapper.__qualname__ = fn.__qualname__
    wrapper.__doc__ = fn.__doc__
    return wrapper  # type: ignore[return-value]


def _check_square(name: str, x: Tensor) -> None:
    if x.dim() < 2 or x.shape[-1] != x.shape[-2]:
        raise ValueError(f"{name} must be a (batch of) square matrices, got shape {tuple(x.shape)}")


def _symmetric(x: Tensor) -> Tensor:
    return 0.5 * (x + x.transpose(-1, -2))


def _eye_like(x: Tensor) -> Tensor:
    return torch.eye(x.shape[-1], dtype=x.dtype, device=x.device).expand_as(x)


def _trace(x: Tensor) -> Tensor:
    return x.diagonal(dim1=-2, dim2=-1).sum(-1)


def _log_divided_differences(eigenvalues: Tensor) -> Tensor:
    """Matrix D with D_ij = (log λ_i - log λ_j) / (λ_i - λ_j), and 1/λ_i on (near-)ties.

    log1p keeps the quotient accurate for close eigenvalues; below a relative gap of sqrt(eps) the midpoint
    value 2 / (λ_i + λ_j) is exact to O(gap²).
    """
    lam_i = eigenvalues.unsqueeze(-1)
    lam_j = eigenvalues.unsqueeze(-2)
    gap = lam_i - lam_j
    midpoint = 0.5 * (lam_i + lam_j)
    tie = gap.abs() <= math.sqrt(torch.finfo(eigenvalues.dtype).eps) * midpoint.abs()
    safe_gap = torch.where(tie, torch.ones_like(gap), gap)
    quotient = torch.log1p(safe_gap / lam_j) / safe_gap
    return torch.where(tie, 1.0 / midpoint, quotient)


class _SymmetricMatrixLog(torch.autograd.Function):
    """log of a symmetric positive-definite matrix with the Daleckii-Krein backward."""

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, a: Tensor) -> Tensor:
        eigenvalues, vectors = torch.linalg.eigh(a)
        ctx.save_for_backward(eigenvalues, vectors)
        return (vectors * eigenvalues.log().unsqueeze(-2)) @ vectors.transpose(-1, -2)

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: Tensor) -> Tensor:
        eigenvalues, vectors = ctx.saved_tensors  # type: ignore[attr-defined]
        vt = vectors.transpose(-1, -2)
        inner = vt @ _symmetric(grad) @ vectors
        return vectors @ (_log_divided_differences(eigenvalues) * inner) @ vt


@_no_autocast
def matrix_log(a: Tensor, method: Method = "eigh", order: int = 4) -> Tensor:
    """Matrix logarithm of `a` (..., d, d).

    `"eigh"`: exact for symmetric positive-definite input (the symmetric part of `a` is used).
    `"taylor"`: Σ_{k=1..order} (-1)^{k+1} (a - I)^k / k, for any square matrix, accurate when the spectral
    radius of a - I is well below 1.
    """
    _check_square("matrix_log input", a)
    a = full_precision(a)
    if method == "eigh":
        out = _SymmetricMatrixLog.apply(_symmetric(a))
        assert isinstance(out, Tensor)
        return out
    if method == "taylor":
        x = a - _eye_like(a)
        coefficients = [(-1.0) ** (k + 1) / k for k in range(1, _check_order(order) + 1)]
        total = coefficients[0] * x
        power = x
        for c in coefficients[1:]:
            power = power @ x
            total = total + c * power
        return total
    raise ValueError(f"method must be 'eigh' or 'taylor', got {method!r}")


def _check_order(order: int) -> int:
    if not isinstance(order, int) or order < 1:
        raise ValueError(f"Taylor order must be a positive integer, got {order!r}")
    return order


def _trace_p_log_q(p: Tensor, q: Tensor, method: Method, order: int) -> Tensor:
    return (p.transpose(-1, -2) * matrix_log(q, method, order)).sum((-2, -1))


@_no_autocast
def matrix_entropy(p: Tensor, method: Method = "eigh", order: int = 4) -> Tensor:
    """Von Neumann entropy ME(P) = -tr(P log P) of a symmetric PSD matrix, with 0 log 0 = 0.

    The exact path needs eigenvalues only (eigvalsh), so it is cheap and its gradient is stable.
    """
    _check_square("matrix_entropy input", p)
    p = full_precision(p)
    if method == "eigh":
        eigenvalues = torch.linalg.eigvalsh(_symmetric(p)).clamp_min(0)
        return -torch.special.xlogy(eigenvalues, eigenvalues).sum(-1)
    return -_trace_p_log_q(p, p, method, order)


@_no_autocast
def matrix_cross_entropy(p: Tensor, q: Tensor, method: Method = "eigh", order: int = 4) -> Tensor:
    """Matrix cross-entropy MCE(P, Q) = tr(-P log Q + Q)."""
    _check_pair(p, q)
    p, q = full_precision(p), full_precision(q)
    return -_trace_p_log_q(p, q, method, order) + _trace(q)


@_no_autocast
def matrix_kl(p: Tensor, q: Tensor, method: Method = "eigh", order: int = 4) -> Tensor:
    """Matrix KL divergence MKL(P‖Q) = tr(P log P - P log Q - P + Q); zero iff P = Q, non-negative."""
    _check_pair(p, q)
    p, q = full_precision(p), full_precision(q)
    return -matrix_entropy(p, method, order) - _trace_p_log_q(p, q, method, order) - _trace(p) + _trace(q)


def _check_pair(p: Tensor, q: Tensor) -> None:
    _check_square("P", p)
    _check_square("Q", q)
    if p.shape[-2:] != q.shape[-2:]:
        raise ValueError(f"P and Q must have the same matrix size, got {tuple(p.shape)} and {tuple(q.shape)}")


@_no_autocast
def effective_rank(m: Tensor, eps: float = 1e-12) -> Tensor:
    """Effective rank exp(H(p)) with p the normalised singular values of `m` (..., n, k).

    For a PSD covariance the singular values are its eigenvalues. Ranges from 1 (rank one) to min(n, k).
    """
    if m.dim() < 2:
        raise ValueError(f"effective_rank needs a (batch of) matrices, got shape {tuple(m.shape)}")
    singular_values = torch.linalg.svdvals(full_precision(m))
    p = singular_values / singular_values.sum(-1, keepdim=True).clamp_min(eps)
    return torch.exp(-torch.special.xlogy(p, p).sum(-1))


def centred(x: Tensor) -> Tensor:
    """Rows minus their mean over the batch dimension (-2)."""
    return x - x.mean(dim=-2, keepdim=True)


@_no_autocast
def cross_covariance(a: Tensor, b: Tensor) -> Tensor:
    """Centred cross-covariance (1/B) (a - mean a)ᵀ (b - mean b) of (..., B, d_a) and (..., B, d_b).

    The mean is subtracted directly: the B x B centering matrix of the textbook formula costs O(B² d).
    """
    if a.dim() < 2 or a.shape[:-1] != b.shape[:-1]:
        raise ValueError(
            f"cross_covariance needs (..., B, d) inputs with the same batch, got {tuple(a.shape)}, {tuple(b.shape)}"
        )
    a, b = full_precision(a), full_precision(b)
    return centred(a).transpose(-1, -2) @ centred(b) / a.shape[-2]


def covariance(z: Tensor) -> Tensor:
    """Centred covariance (1/B) (z - mean z)ᵀ (z - mean z) of (..., B, d) embeddings."""
    return cross_covariance(z, z)


def taylor_log_coefficients(order: int, shift: float) -> list[float]:
    """Coefficients a_0..a_n with Σ_k (-1)^{k+1} (shift·I + N)^k / k = Σ_j a_j N^j, k = 1..order.

    Re-expanding the truncated series of log(I + X), X = shift·I + N, in powers of N lets the losses work
    with traces of powers of N alone (N a covariance that may be formed in the smaller B x B space).
    """
    coefficients = [0.0] * (_check_order(order) + 1)
    for k in range(1, order + 1):
        sign = (-1.0) ** (k + 1) / k
        for j in range(k + 1):
            coefficients[j] += sign * math.comb(k, j) * shift ** (k - j)
    return coefficients


def trace_powers(k: Tensor, order: int) -> list[Tensor]:
    """[tr K, tr K², ..., tr K^order] for a square (..., n, n) K with ceil(order/2) - 1 matrix products.

    Uses tr(K^{a+b}) = <(K^a)ᵀ, K^b>, so only powers up to half the order are ever formed.
    """
    powers = [k]
    while 2 * len(powers) < order:
        powers.append(powers[-1] @ k)
    traces = []
    for total in range(1, order + 1):
        a = total // 2
        if a == 0:
            traces.append(_trace(k))
        else:
            traces.append((powers[a - 1].transpose(-1, -2) * powers[total - a - 1]).sum((-2, -1)))
    return traces

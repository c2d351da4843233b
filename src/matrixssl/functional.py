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

Typical use on a batch of embeddings `z` (B, d)::

    c = covariance(F.normalize(z, dim=1))     # (d, d) covariance of the unit-norm rows
    matrix_entropy(c)                         # a 0-d tensor
    effective_rank(c)                         # the effective rank this project reports
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Literal, ParamSpec

import torch
from torch import Tensor

__all__ = [
    "Method",
    "centred",
    "covariance",
    "cross_covariance",
    "effective_rank",
    "full_precision",
    "matrix_cross_entropy",
    "matrix_entropy",
    "matrix_kl",
    "matrix_log",
    "taylor_log_coefficients",
    "trace_powers",
]

Method = Literal["eigh", "taylor"]
"""How a matrix log is computed: `"eigh"` exactly (symmetric input), `"taylor"` by its truncated series."""

_P = ParamSpec("_P")


def full_precision(x: Tensor) -> Tensor:
    """Return `x` in a dtype fit for matrix functions.

    float32 and float64 pass through unchanged (no copy); every other dtype (bf16, fp16, integers) becomes
    float32.

    Args:
        x: any tensor.

    Returns:
        `x` itself, or a float32 copy of it.
    """
    if x.dtype in (torch.float32, torch.float64):
        return x
    return x.float()


def _no_autocast(fn: Callable[_P, Tensor]) -> Callable[_P, Tensor]:
    """Run `fn` with autocast off: matrix functions must see float32/float64 operands and produce them.

    `functools.wraps` keeps the name, the docstring and, through `__wrapped__`, the signature, so `help()` and
    `inspect.signature` show the real parameters.
    """

    @functools.wraps(fn)
    def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> Tensor:
        tensors = (a for a in (*args, *kwargs.values()) if isinstance(a, Tensor))
        device_type = next((t.device.type for t in tensors), "cpu")
        with torch.autocast(device_type=device_type, enabled=False):
            return fn(*args, **kwargs)

    return wrapper


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
    """Matrix logarithm log A of a (batch of) square matrices.

    `"eigh"` is exact for symmetric positive-definite input: V diag(log λ) Vᵀ from the eigendecomposition of
    the symmetric part of `a`, differentiated with the Daleckii-Krein formula (finite at repeated
    eigenvalues). `"taylor"` is the truncated series Σ_{k=1..order} (-1)^{k+1} (A - I)^k / k, defined for any
    square matrix and accurate when the spectral radius of A - I is well below 1.

    Args:
        a: (..., d, d) matrices; for `"eigh"` symmetric positive definite.
        method: `"eigh"` (exact) or `"taylor"` (series).
        order: number of series terms for `"taylor"`; ignored by `"eigh"`.

    Returns:
        (..., d, d) tensor, float32 or float64.

    Raises:
        ValueError: `a` is not square, `method` is unknown or `order` is not a positive integer.
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
    """Matrix (von Neumann) entropy ME(P) = -tr(P log P) = -Σ_i λ_i log λ_i, with 0 log 0 = 0.

    For P with trace 1 (such as (1/B) zᵀz of unit-norm rows z) this is the entropy of its spectrum,
    between 0 (rank one) and log d (P = I/d). The exact path needs eigenvalues only (eigvalsh), so it is
    cheap and its gradient is stable; tiny negative eigenvalues from round-off count as 0.

    Args:
        p: (..., d, d) symmetric positive semi-definite matrices.
        method: `"eigh"` (exact) or `"taylor"` (P log P with the series log, which needs P near I).
        order: number of series terms for `"taylor"`.

    Returns:
        (...) tensor: one entropy per matrix.
    """
    _check_square("matrix_entropy input", p)
    p = full_precision(p)
    if method == "eigh":
        eigenvalues = torch.linalg.eigvalsh(_symmetric(p)).clamp_min(0)
        return -torch.special.xlogy(eigenvalues, eigenvalues).sum(-1)
    return -_trace_p_log_q(p, p, method, order)


@_no_autocast
def matrix_cross_entropy(p: Tensor, q: Tensor, method: Method = "eigh", order: int = 4) -> Tensor:
    """Matrix cross-entropy MCE(P, Q) = tr(-P log Q + Q).

    Over Q it is smallest at Q = P, and MCE(P, Q) = MKL(P‖Q) + ME(P) + tr P, so minimising it over Q is
    minimising the matrix KL divergence. Matrix-SSL's alignment term is this with P, Q the (ridged)
    covariances of the teacher and the student.

    Args:
        p: (..., d, d) target matrices, symmetric positive semi-definite.
        q: (..., d, d) predicted matrices, symmetric positive definite for `"eigh"`.
        method: how log Q is computed, `"eigh"` or `"taylor"`.
        order: number of series terms for `"taylor"`.

    Returns:
        (...) tensor: one value per pair.

    Raises:
        ValueError: `p` or `q` is not square, or their matrix sizes differ.
    """
    _check_pair(p, q)
    p, q = full_precision(p), full_precision(q)
    return -_trace_p_log_q(p, q, method, order) + _trace(q)


@_no_autocast
def matrix_kl(p: Tensor, q: Tensor, method: Method = "eigh", order: int = 4) -> Tensor:
    """Matrix KL divergence MKL(P‖Q) = tr(P log P - P log Q - P + Q).

    Non-negative and zero exactly when P = Q (for positive definite P, Q); not symmetric in P and Q.

    Args:
        p: (..., d, d) symmetric positive semi-definite matrices.
        q: (..., d, d) symmetric positive definite matrices.
        method: how the logs are computed, `"eigh"` or `"taylor"`.
        order: number of series terms for `"taylor"`.

    Returns:
        (...) tensor: one divergence per pair.

    Raises:
        ValueError: `p` or `q` is not square, or their matrix sizes differ.
    """
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
    """Effective rank exp(H(p)), p_i = s_i / Σ_j s_j over the singular values s of `m` (Roy & Vetterli).

    It ranges from 1 (rank one) to min(n, k) (all singular values equal). Which matrix you pass matters:

    - `effective_rank(covariance(z))`, the covariance of embeddings `z` (B, d): p comes from its
      eigenvalues, the variances along the principal axes. This is the effective rank this project reports
      (training monitor, `matrixssl rank`, benchmark tables); pass this unless you want RankMe.
    - `effective_rank(z)`, the embeddings themselves: p comes from the singular values of `z`, uncentred,
      as RankMe (Garrido et al., 2023) does. The covariance's eigenvalues are the squared singular values
      of the centred `z` (over B), and squaring concentrates a spectrum, so the covariance's effective rank
      is never above the centred embeddings' and is often far below it.

    Compare only numbers computed the same way.

    Args:
        m: (..., n, k) matrices: a covariance (d, d) or embeddings (B, d).
        eps: floor of the singular-value sum, so that an all-zero matrix gives 1 rather than NaN.

    Returns:
        (...) tensor: one effective rank per matrix.

    Raises:
        ValueError: `m` has fewer than two dimensions.
    """
    if m.dim() < 2:
        raise ValueError(f"effective_rank needs a (batch of) matrices, got shape {tuple(m.shape)}")
    singular_values = torch.linalg.svdvals(full_precision(m))
    p = singular_values / singular_values.sum(-1, keepdim=True).clamp_min(eps)
    return torch.exp(-torch.special.xlogy(p, p).sum(-1))


def centred(x: Tensor) -> Tensor:
    """Rows minus their mean over the batch dimension (-2).

    Args:
        x: (..., B, d) embeddings.

    Returns:
        (..., B, d) tensor whose rows sum to zero.
    """
    return x - x.mean(dim=-2, keepdim=True)


@_no_autocast
def cross_covariance(a: Tensor, b: Tensor) -> Tensor:
    """Centred cross-covariance C(a, b) = (1/B) (a - ā)ᵀ (b - b̄), ā the mean row of `a`.

    The normalisation is 1/B (the biased estimate, as in the Matrix-SSL paper). The mean is subtracted
    directly: the B x B centering matrix of the textbook formula costs O(B² d).

    Args:
        a: (..., B, d_a) embeddings, one row per sample.
        b: (..., B, d_b) embeddings of the same B samples.

    Returns:
        (..., d_a, d_b) tensor, float32 or float64.

    Raises:
        ValueError: the inputs are not (..., B, d) with the same leading shape.
    """
    if a.dim() < 2 or a.shape[:-1] != b.shape[:-1]:
        raise ValueError(
            f"cross_covariance needs (..., B, d) inputs with the same batch, got {tuple(a.shape)}, {tuple(b.shape)}"
        )
    a, b = full_precision(a), full_precision(b)
    return centred(a).transpose(-1, -2) @ centred(b) / a.shape[-2]


def covariance(z: Tensor) -> Tensor:
    """Centred covariance C(z) = (1/B) (z - z̄)ᵀ (z - z̄) of a batch of embeddings.

    Args:
        z: (..., B, d) embeddings, one row per sample.

    Returns:
        (..., d, d) symmetric positive semi-definite tensor, float32 or float64.
    """
    return cross_covariance(z, z)


def taylor_log_coefficients(order: int, shift: float) -> list[float]:
    """Coefficients a_0..a_n with Σ_{k=1..n} (-1)^{k+1} (shift·I + N)^k / k = Σ_{j=0..n} a_j N^j.

    Re-expanding the truncated series of log(I + X), X = shift·I + N, in powers of N lets the losses work
    with traces of powers of N alone (N a covariance that may be formed in the smaller B x B space). With
    `shift = ridge - 1` this is the series of log(N + ridge·I).

    Args:
        order: n, the number of series terms (a positive integer).
        shift: the multiple of I taken out of X.

    Returns:
        The n + 1 coefficients a_0, ..., a_n as floats.

    Raises:
        ValueError: `order` is not a positive integer.
    """
    coefficients = [0.0] * (_check_order(order) + 1)
    for k in range(1, order + 1):
        sign = (-1.0) ** (k + 1) / k
        for j in range(k + 1):
            coefficients[j] += sign * math.comb(k, j) * shift ** (k - j)
    return coefficients


def trace_powers(k: Tensor, order: int) -> list[Tensor]:
    """Traces of the first powers of a matrix: [tr K, tr K², ..., tr K^order].

    Uses tr(K^{a+b}) = <(K^a)ᵀ, K^b>, so only powers up to half the order are formed: ceil(order/2) - 1
    matrix products instead of order - 1.

    Args:
        k: (..., n, n) square matrices.
        order: the highest power (a positive integer).

    Returns:
        `order` tensors of shape (...), the j-th holding tr K^j.
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

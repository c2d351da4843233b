"""Matrix-SSL written the obvious way, term by term, for tests and the speed benchmark.

Explicit B x B centering matrix, one Taylor (or exact) log per term, P @ log Q, then the trace: a direct
transcription of the formulas, independent of the optimised code in `matrix_ssl.py`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def _covariance(a: Tensor, b: Tensor) -> Tensor:
    batch = a.shape[0]
    centering = torch.eye(batch, dtype=a.dtype) - torch.ones(batch, batch, dtype=a.dtype) / batch
    return a.T @ centering @ b / batch


def _log(x: Tensor, order: int | None) -> Tensor:
    if order is None:
        eigenvalues, vectors = torch.linalg.eig(x)
        return (vectors @ torch.diag(eigenvalues.log()) @ torch.linalg.inv(vectors)).real
    eye = torch.eye(x.shape[0], dtype=x.dtype)
    total = torch.zeros_like(x)
    for k in range(1, order + 1):
        total = total + (-1) ** (k + 1) * torch.linalg.matrix_power(x - eye, k) / k
    return total


def reference_matrix_ssl_loss(
    online_1: Tensor,
    online_2: Tensor,
    target_1: Tensor,
    target_2: Tensor,
    target_scale: float | None = 1.0,
    ridge: float = 1.0,
    gamma: float = 1.0,
    taylor_order: int | None = 4,
    trace_term: bool = False,
    online_uniformity: float = 0.0,
) -> Tensor:
    """½[U(t₂,o₁) + U(t₁,o₂) + γ(A(t₂,o₁) + A(t₁,o₂)) + β(U(o₁,o₁) + U(o₂,o₂))] from the formulas, nothing
    shared or reordered.

    The inputs are (B, d) embeddings and the settings mean what they mean for `MatrixSSLLoss`
    (`online_uniformity` is β); returns a 0-d tensor.
    """
    o1, o2 = F.normalize(online_1, dim=1), F.normalize(online_2, dim=1)
    t1, t2 = F.normalize(target_1, dim=1).detach(), F.normalize(target_2, dim=1).detach()
    dim = o1.shape[1]
    eye = torch.eye(dim, dtype=o1.dtype)
    scale = 1.0 / dim if target_scale is None else target_scale

    def cross_entropy(p: Tensor, q: Tensor) -> Tensor:
        value = -torch.trace(p @ _log(q, taylor_order))
        return value + torch.trace(q) if trace_term else value

    def uniformity(t: Tensor, o: Tensor) -> Tensor:
        return cross_entropy(scale * eye, _covariance(t, o) + ridge * eye)

    def alignment(t: Tensor, o: Tensor) -> Tensor:
        return cross_entropy(_covariance(t, t) + ridge * eye, _covariance(o, o) + ridge * eye)

    loss = 0.5 * (uniformity(t2, o1) + uniformity(t1, o2) + gamma * (alignment(t2, o1) + alignment(t1, o2)))
    if online_uniformity:
        loss = loss + 0.5 * online_uniformity * (uniformity(o1, o1) + uniformity(o2, o2))
    return loss

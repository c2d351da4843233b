"""Matrix cross-entropy for causal language models, in two readings.

The paper fine-tunes a language model with a matrix cross-entropy loss but did not publish the token-level
construction. This module offers two readings, selected by `MatrixCrossEntropyLMLoss(form=...)`:

- `"embedding"` (the default): per-position density matrices in the output-embedding space, described below
  (`token_matrix_cross_entropy`);
- `"relation"`: the batch relation matrices of the authors' earlier RelationMatch, one-hot targets against
  predicted distributions over the N supervised positions of a batch (`relation_matrix_cross_entropy`, whose
  docstring has the details).

The embedding reading, this project's own construction, documented so that it can be checked:

For a supervised position with target token y, predicted distribution q over the vocabulary and the output
embedding matrix E (LM head / tied input embeddings) with unit-normalised rows e_i,

    P = e_y e_yᵀ,   Q = Σ_i q_i e_i e_iᵀ + ridge·I   (d x d),   MCE(P, Q) = tr(-P log Q + Q).

Q is the second moment of the predicted embedding; predicting a token whose embedding is close to the target's
costs less than predicting an unrelated one, which plain cross-entropy ignores. With orthonormal embeddings the
value is -log(q_y + ridge) + 1 + ridge·d: cross-entropy smoothed by the ridge.

How it is computed (nothing of size d x d per position unless the exact path needs it):
- P has rank one, so tr(P log Q) = e_yᵀ (log Q) e_y.
- Unit rows give tr Q = Σ_i q_i ‖e_i‖² + ridge·d = 1 + ridge·d, a constant.
- Q maps the span S of the kept embeddings into itself and is ridge·I on its orthogonal complement. With an
  orthonormal basis Ψ of S and Eᵀ = Ψ R (a QR factorisation), Q restricted to S is R diag(q) Rᵀ + ridge·I, of
  size m = min(#kept tokens, d), and e_yᵀ (log Q) e_y = zᵀ log(R diag(q) Rᵀ + ridge·I) z + log(ridge)·(‖e_y‖² - ‖z‖²)
  with z = Ψᵀ e_y. So one m x m eigendecomposition per position is all the logarithm needs.
- `top_k=None` keeps every token: exact, m = min(V, d), and Ψ, R are shared by all positions (the cost is
  O(V·m²) per position, fine for small vocabularies, too slow for real ones). `top_k=k` keeps the k most probable
  tokens of q per position (q is not renormalised), so Q inside the logarithm is rank k plus ridge·I and m = k.
  Dropping tokens removes a PSD term from Q and the logarithm is operator monotone, so the truncated value is an
  upper bound of the exact one that decreases to it as k grows. tr Q is always exact (1 + ridge·d, less the
  probability of any all-zero embedding row).
- Positions go in chunks; nothing of size positions x vocabulary is kept for the backward pass (the top-k
  path rebuilds softmax per chunk there, the exact path recomputes each chunk), so memory stays bounded.

The embedding matrix is a fixed metric here (detached): letting the loss move it would reward collapsing all
embeddings onto each other, which makes every prediction look right. The gradient reaches the model through
the logits. Matrix functions run in float32 (float64 if the logits are float64), also under bf16 autocast.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from typing import Any, Literal, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from matrixssl.errors import MatrixSSLError
from matrixssl.functional import full_precision, matrix_cross_entropy, matrix_log, taylor_log_coefficients

DEFAULT_RIDGE = 0.01
DEFAULT_TOP_K = 32
# Ridge of both P and Q in the relation reading; see `relation_matrix_cross_entropy` for why.
DEFAULT_RELATION_RIDGE = 1e-3
MCEForm = Literal["embedding", "relation"]
MCE_FORMS: tuple[MCEForm, ...] = ("embedding", "relation")
# Elements of intermediate storage one chunk of positions may use (float32: 4 bytes each, so ~128 MB).
_CHUNK_ELEMENTS = 1 << 25
# Largest N x N eigendecomposition of the relation reading run on one CPU thread.
_ONE_THREAD_EIGH = 1024


def _check_settings(ridge: float, top_k: int | None, chunk_size: int | None = None) -> None:
    """The ranges of the matrix term's settings, checked where they enter (the loss module's constructor and
    the public function), not on every call."""
    if not ridge > 0 or not math.isfinite(ridge):
        raise MatrixSSLError(f"ridge must be a positive number, got {ridge!r}")
    for name, value, none_means in (("top_k", top_k, "exact"), ("chunk_size", chunk_size, "automatic")):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise MatrixSSLError(f"{name} must be None ({none_means}) or a positive integer, got {value!r}")


def _check_inputs(logits: Tensor, labels: Tensor, embedding_weight: Tensor) -> None:
    if logits.dim() < 1 or labels.shape != logits.shape[:-1]:
        raise ValueError(
            f"labels must have the shape of logits without its last (vocabulary) dimension, "
            f"got logits {tuple(logits.shape)} and labels {tuple(labels.shape)}"
        )
    if embedding_weight.dim() != 2 or embedding_weight.shape[0] != logits.shape[-1]:
        raise ValueError(
            f"embedding_weight must be (vocabulary, dim) with the vocabulary of the logits ({logits.shape[-1]}), "
            f"got {tuple(embedding_weight.shape)}"
        )
    if labels.dtype.is_floating_point or labels.dtype == torch.bool:
        raise ValueError(f"labels must be integer token ids, got dtype {labels.dtype}")


def _supervised_positions(labels: Tensor, ignore_index: int, vocabulary: int) -> Tensor:
    """Flat indices of the positions that are not ignored; out-of-range labels are an error, not a silent skip."""
    flat = labels.reshape(-1)
    keep = flat != ignore_index
    bad = keep & ((flat < 0) | (flat >= vocabulary))
    if bool(bad.any()):
        value = int(flat[bad][0])
        raise ValueError(
            f"label {value} is outside the vocabulary [0, {vocabulary}) and is not ignore_index={ignore_index}"
        )
    return keep.nonzero().squeeze(-1)


def _chunk_size(per_position: int, requested: int | None) -> int:
    return requested if requested is not None else max(1, _CHUNK_ELEMENTS // max(per_position, 1))


@contextmanager
def _small_linalg_threads(device: torch.device) -> Iterator[None]:
    """One CPU thread for batches of small LAPACK calls (eigh, QR), restored afterwards.

    Multi-threaded MKL gains nothing on 32 x 32 matrices and, on a machine whose cores are busy with other
    work, its thread barriers make a batched eigh orders of magnitude slower.
    """
    threads = torch.get_num_threads()
    if device.type != "cpu" or threads == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _log_term(probabilities: Tensor, r_factor: Tensor, z: Tensor, ridge: float) -> Tensor:
    """zᵀ log(R diag(q) Rᵀ + ridge·I) z per position; (N, k) q with (N or 1, m, k) R and (N, m) z."""
    m = r_factor.shape[-2]
    restricted = (r_factor * probabilities.unsqueeze(-2)) @ r_factor.transpose(-1, -2)
    restricted = restricted + ridge * torch.eye(m, dtype=restricted.dtype, device=restricted.device)
    with _small_linalg_threads(restricted.device):
        log_q = matrix_log(restricted)
    return ((log_q @ z.unsqueeze(-1)).squeeze(-1) * z).sum(-1)


def _rows(logits: Tensor, coordinates: Tensor) -> Tensor:
    """Rows logits[i, j, ..., :] at the given (leading-dims, N) coordinates: a copy of those rows only."""
    return logits[tuple(coordinates)]


class _KeptLogProbabilities(torch.autograd.Function):
    """log q_i for a few token ids per position, q = softmax(logits), in chunks of positions.

    Saves only the log-normalisers; the backward pass rebuilds softmax one chunk at a time and writes the
    logits gradient directly, so no (positions x vocabulary) intermediate outlives its chunk.
    """

    @staticmethod
    def forward(
        ctx: torch.autograd.function.FunctionCtx,
        logits: Tensor,
        coordinates: Tensor,
        kept: Tensor,
        step: int,
        dtype: torch.dtype,
    ) -> Tensor:
        out = logits.new_empty(kept.shape, dtype=dtype)
        log_normaliser = logits.new_empty(kept.shape[:1], dtype=dtype)
        for start in range(0, kept.shape[0], step):
            chunk = _rows(logits, coordinates[:, start : start + step]).to(dtype)
            lse = chunk.logsumexp(-1)
            out[start : start + step] = chunk.gather(-1, kept[start : start + step]) - lse.unsqueeze(-1)
            log_normaliser[start : start + step] = lse
        ctx.save_for_backward(logits, coordinates, kept, log_normaliser)
        ctx.step = step  # type: ignore[attr-defined]
        return out

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad_out: Tensor) -> tuple[Tensor | None, ...]:
        logits, coordinates, kept, log_normaliser = ctx.saved_tensors  # type: ignore[attr-defined]
        step: int = ctx.step  # type: ignore[attr-defined]
        grad = torch.zeros_like(logits)
        for start in range(0, kept.shape[0], step):
            where = coordinates[:, start : start + step]
            g_out = grad_out[start : start + step]
            chunk = _rows(logits, where).to(g_out.dtype)
            softmax = (chunk - log_normaliser[start : start + step].unsqueeze(-1)).exp()
            # d log q_i / d logit_j = [i = j] - q_j
            g = softmax.mul_(-g_out.sum(-1, keepdim=True)).scatter_add_(-1, kept[start : start + step], g_out)
            grad[tuple(where)] = g.to(grad.dtype)
        return grad, None, None, None, None


def _kept_log_probabilities(
    logits: Tensor, coordinates: Tensor, kept: Tensor, step: int, dtype: torch.dtype
) -> Tensor:
    out = _KeptLogProbabilities.apply(logits, coordinates, kept, step, dtype)
    assert isinstance(out, Tensor)
    return out


def _exact_chunk(
    logits: Tensor, coordinates: Tensor, r_factor: Tensor, z: Tensor, zero_rows: Tensor, ridge: float
) -> tuple[Tensor, Tensor]:
    """zᵀ log(Q_S) z and the probability mass on all-zero embedding rows, for one chunk of the exact path."""
    probabilities = full_precision(_rows(logits, coordinates)).to(r_factor.dtype).softmax(-1)
    return _log_term(probabilities, r_factor.unsqueeze(0), z, ridge), probabilities[:, zero_rows].sum(-1)


def token_matrix_cross_entropy(
    logits: Tensor,
    labels: Tensor,
    embedding_weight: Tensor,
    ridge: float = DEFAULT_RIDGE,
    top_k: int | None = None,
    ignore_index: int = -100,
    chunk_size: int | None = None,
) -> Tensor:
    """MCE(e_y e_yᵀ, Σ_i q_i e_i e_iᵀ + ridge·I) for every position whose label is not `ignore_index`.

    This token-level construction is the project's own reading of the Matrix-SSL paper (which did not publish
    one); the module docstring gives the derivation. `logits` (..., V) predict `labels` (...) at the same
    index (shift them before calling for a causal LM); `embedding_weight` (V, d) is the output embedding
    (detached; rows are normalised here, an all-zero row stays zero). Returns a 1-D tensor with one value per
    supervised position, in row-major order. `top_k=None` is exact; `top_k=k` keeps the k most probable tokens
    per position (an upper bound that tightens as k grows). Positions are processed in chunks of `chunk_size`
    (default: sized to ~128 MB of intermediates) so memory stays bounded for long sequences and large
    vocabularies: nothing of size positions x vocabulary is kept for the backward pass beyond the logits.
    """
    _check_settings(ridge, top_k, chunk_size)
    return _token_mce(logits, labels, embedding_weight, ridge, top_k, ignore_index, chunk_size)


def _token_mce(
    logits: Tensor,
    labels: Tensor,
    embedding_weight: Tensor,
    ridge: float,
    top_k: int | None,
    ignore_index: int,
    chunk_size: int | None,
) -> Tensor:
    """`token_matrix_cross_entropy` with its settings already checked."""
    _check_inputs(logits, labels, embedding_weight)
    vocabulary, dim = embedding_weight.shape
    labels = labels.to(logits.device)
    positions = _supervised_positions(labels, ignore_index, vocabulary)
    dtype = torch.float64 if logits.dtype == torch.float64 else torch.float32
    if positions.numel() == 0:
        return logits.new_zeros(0, dtype=dtype)
    # Index rows in place: reshaping a shifted (non-contiguous) logits tensor would copy all of it.
    coordinates = torch.stack(torch.unravel_index(positions, tuple(logits.shape[:-1])))
    with torch.autocast(device_type=logits.device.type, enabled=False):
        weight = embedding_weight.detach().to(device=logits.device, dtype=dtype)
        norms = torch.linalg.vector_norm(weight, dim=-1)
        inverse_norms = torch.where(norms > 0, 1.0 / norms, torch.zeros_like(norms))
        zero_rows = (norms == 0).nonzero().squeeze(-1)
        targets = labels.reshape(-1)[positions]
        target_sq_norm = (norms[targets] > 0).to(dtype)
        if top_k is None:
            values = _exact_path(
                logits,
                coordinates,
                targets,
                weight * inverse_norms.unsqueeze(-1),
                zero_rows,
                ridge,
                chunk_size,
            )
        else:
            values = _top_k_path(
                logits,
                coordinates,
                targets,
                weight,
                inverse_norms,
                zero_rows,
                ridge,
                top_k,
                chunk_size,
                dtype,
            )
        log_term, zero_mass, z_sq_norm = values
        # tr Q = Σ_i q_i ‖e_i‖² + ridge·d = 1 - (mass on zero rows) + ridge·d
        trace = 1.0 - zero_mass + ridge * dim
        outside_span = (target_sq_norm - z_sq_norm).clamp_min(0)
        return trace - log_term - math.log(ridge) * outside_span


def _exact_path(
    logits: Tensor,
    coordinates: Tensor,
    targets: Tensor,
    embeddings: Tensor,
    zero_rows: Tensor,
    ridge: float,
    chunk_size: int | None,
) -> tuple[Tensor, Tensor, Tensor]:
    """Every token kept: R (m x V, m = min(V, d)) shared by all positions, each chunk recomputed in backward."""
    vocabulary, dim = embeddings.shape
    if vocabulary > dim:
        r_factor = embeddings.T.contiguous()  # Ψ = I
    else:
        r_factor = torch.linalg.qr(embeddings.T, mode="reduced")[1]
    m = r_factor.shape[0]
    step = _chunk_size(2 * vocabulary + m * vocabulary + 4 * m * m, chunk_size)
    needs_grad = torch.is_grad_enabled() and logits.requires_grad
    log_terms, zero_masses = [], []
    for start in range(0, targets.numel(), step):
        where = coordinates[:, start : start + step]
        z = r_factor[:, targets[start : start + step]].T
        if needs_grad:
            # Only the chunk's inputs are kept for backward, so memory stays one chunk deep.
            out = checkpoint(_exact_chunk, logits, where, r_factor, z, zero_rows, ridge, use_reentrant=False)
        else:
            out = _exact_chunk(logits, where, r_factor, z, zero_rows, ridge)
        log_terms.append(out[0])
        zero_masses.append(out[1])
    z_sq_norm = r_factor[:, targets].square().sum(0)
    return torch.cat(log_terms), torch.cat(zero_masses), z_sq_norm


def _top_k_path(
    logits: Tensor,
    coordinates: Tensor,
    targets: Tensor,
    weight: Tensor,
    inverse_norms: Tensor,
    zero_rows: Tensor,
    ridge: float,
    top_k: int,
    chunk_size: int | None,
    dtype: torch.dtype,
) -> tuple[Tensor, Tensor, Tensor]:
    """k most probable tokens per position: a QR of its k embeddings, then one k x k log per position."""
    vocabulary, dim = weight.shape
    k = min(top_k, vocabulary)
    m = min(k, dim)
    step = _chunk_size(2 * vocabulary + 3 * k * dim + 6 * m * m, chunk_size)
    count = targets.numel()
    with torch.no_grad():
        kept = torch.cat(
            [
                _rows(logits, coordinates[:, s : s + step]).topk(k, dim=-1).indices
                for s in range(0, count, step)
            ]
        )
    log_kept = _kept_log_probabilities(logits, coordinates, kept, step, dtype)
    log_terms, z_sq_norms = [], []
    for start in range(0, count, step):
        chunk_kept = kept[start : start + step]
        with torch.no_grad():
            kept_embeddings = weight[chunk_kept] * inverse_norms[chunk_kept].unsqueeze(-1)
            with _small_linalg_threads(weight.device):
                basis, r_factor = torch.linalg.qr(kept_embeddings.transpose(-1, -2), mode="reduced")
            chunk_targets = targets[start : start + step]
            target_embeddings = weight[chunk_targets] * inverse_norms[chunk_targets].unsqueeze(-1)
            z = (basis.transpose(-1, -2) @ target_embeddings.unsqueeze(-1)).squeeze(-1)
        log_terms.append(_log_term(log_kept[start : start + step].exp(), r_factor, z, ridge))
        z_sq_norms.append(z.square().sum(-1))
    if zero_rows.numel() > 0:
        ids = zero_rows.unsqueeze(0).expand(count, -1)
        zero_mass = _kept_log_probabilities(logits, coordinates, ids, step, dtype).exp().sum(-1)
    else:
        zero_mass = log_kept.new_zeros(count)
    return torch.cat(log_terms), zero_mass, torch.cat(z_sq_norms)


# ---- the relation reading ----


def _check_relation_settings(ridge_p: float, ridge_q: float, taylor_order: int | None) -> None:
    for name, value in (("ridge_p", ridge_p), ("ridge_q", ridge_q)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < math.inf:
            raise MatrixSSLError(f"{name} must be a non-negative number, got {value!r}")
    if taylor_order is not None and (
        isinstance(taylor_order, bool) or not isinstance(taylor_order, int) or taylor_order < 1
    ):
        raise MatrixSSLError(
            f"taylor_order must be None (exact log) or a positive integer, got {taylor_order!r}"
        )
    if taylor_order is None and ridge_q == 0:
        raise MatrixSSLError(
            "ridge_q must be positive with the exact log (F Fᵀ/N alone is singular when two positions predict "
            "alike or N > V); only the Taylor series (taylor_order) accepts ridge_q = 0"
        )


def _prediction_rows(logits: Tensor, coordinates: Tensor, dtype: torch.dtype) -> Tensor:
    return full_precision(_rows(logits, coordinates)).to(dtype).softmax(-1)


def _position_gram(logits: Tensor, coordinates: Tensor, dtype: torch.dtype) -> Tensor:
    """F Fᵀ (N x N), F the predicted distributions of the supervised positions."""
    f = _prediction_rows(logits, coordinates, dtype)
    return f @ f.T


def _vocabulary_grams(
    logits: Tensor, coordinates: Tensor, group: Tensor, groups: int, dtype: torch.dtype
) -> tuple[Tensor, Tensor]:
    """Fᵀ F (V x V) and H = Yᵀ F (groups x V, row c the summed predictions of the positions with target c)."""
    f = _prediction_rows(logits, coordinates, dtype)
    summed = f.new_zeros(groups, f.shape[-1]).index_add(0, group, f)
    return f.T @ f, summed


def _maybe_checkpointed(fn: Any, *args: Any) -> Any:
    """`fn(*args)`, recomputed in the backward pass when a gradient is wanted: only the logits (alive anyway)
    are kept, not the N x V probabilities."""
    logits = args[0]
    if torch.is_grad_enabled() and logits.requires_grad:
        return checkpoint(fn, *args, use_reentrant=False)
    return fn(*args)


def relation_matrix_cross_entropy(
    logits: Tensor,
    labels: Tensor,
    *,
    ridge_p: float = DEFAULT_RELATION_RIDGE,
    ridge_q: float = DEFAULT_RELATION_RIDGE,
    taylor_order: int | None = None,
    ignore_index: int = -100,
) -> Tensor:
    """MCE(P, Q) = tr(-P log Q + Q) between the batch relation matrices of targets and predictions.

    The reading of RelationMatch (same authors): over the N positions whose label is not `ignore_index`, with
    Y the one-hot targets (N x V) and F = softmax(logits) (N x V),

        P = (1/N) Y Yᵀ + ridge_p·I_N,   Q = (1/N) F Fᵀ + ridge_q·I_N.

    P says which positions share a target token; Q how much their predicted distributions overlap. P is a
    constant (no gradient). P only sees which targets are equal, not which tokens they are, so it complements
    cross-entropy rather than replacing it. `logits` (..., V) predict `labels` (...) at the same index, as in
    `token_matrix_cross_entropy`: shift them before calling for a causal LM. Returns a 0-d tensor, float32
    (float64 for float64 logits), also under autocast.

    Defaults: equal ridges, so predicting every target with certainty (F = Y) gives Q = P, the minimiser of
    MCE(P, ·): the term then agrees with cross-entropy about what is right. The ridge keeps Q positive definite
    (log Q finite, gradients bounded by about 1/ridge_q) and is kept small against 1/N, the weight of one
    position in P, so that tokens repeated a few times in a batch still stand out from the ridge.

    `taylor_order=None` takes the exact log (eigendecomposition of the symmetric Q, differentiated with
    divided differences so that repeated eigenvalues are safe); `taylor_order=n` takes the series
    log Q ≈ Σ_{k=1..n} (-1)^{k+1} (Q - I)^k / k, accurate only while the spectrum of Q stays well inside
    (0, 2), i.e. with ridges near 1 (small ridges leave eigenvalues near 0, where the series is poor).

    How it stays cheap: nothing of size V x V is built when N ≤ V (every language-model batch), and Y Yᵀ is
    the "same target" indicator, built by comparing labels, never as a one-hot N x V tensor. The exact log
    needs the eigenvectors of Q, so it works on the N x N Gram F Fᵀ: O(N²V) for the Gram and O(N³) for the
    eigendecomposition. The series only needs traces, tr(P (F Fᵀ/N)^j) = ridge_p·tr(S^j) + ⟨Y Yᵀ/N, S^j⟩ on
    whichever Gram is smaller (S = F Fᵀ/N, or FᵀF/N with Yᵀ F in place of Y Yᵀ when V < N). The N x V
    probabilities are recomputed in the backward pass rather than stored.
    """
    _check_relation_settings(ridge_p, ridge_q, taylor_order)
    return _relation_mce(logits, labels, ridge_p, ridge_q, taylor_order, ignore_index)


def _relation_mce(
    logits: Tensor,
    labels: Tensor,
    ridge_p: float,
    ridge_q: float,
    taylor_order: int | None,
    ignore_index: int,
) -> Tensor:
    """`relation_matrix_cross_entropy` with its settings already checked."""
    if logits.dim() < 2 or labels.shape != logits.shape[:-1]:
        raise MatrixSSLError(
            f"labels must have the shape of logits without its last (vocabulary) dimension, "
            f"got logits {tuple(logits.shape)} and labels {tuple(labels.shape)}"
        )
    if labels.dtype.is_floating_point or labels.dtype == torch.bool:
        raise MatrixSSLError(f"labels must be integer token ids, got dtype {labels.dtype}")
    vocabulary = logits.shape[-1]
    labels = labels.to(logits.device)
    positions = _supervised_positions(labels, ignore_index, vocabulary)
    n = positions.numel()
    if n == 0:
        raise MatrixSSLError(f"no supervised positions: every label is ignore_index={ignore_index}")
    dtype = torch.float64 if logits.dtype == torch.float64 else torch.float32
    coordinates = torch.stack(torch.unravel_index(positions, tuple(logits.shape[:-1])))
    targets = labels.reshape(-1)[positions]
    with torch.autocast(device_type=logits.device.type, enabled=False):
        if taylor_order is not None and vocabulary < n:
            return _relation_taylor_vocabulary_side(
                logits, coordinates, targets, ridge_p, ridge_q, taylor_order, dtype
            )
        eye = torch.eye(n, dtype=dtype, device=logits.device)
        same_target = (targets.unsqueeze(0) == targets.unsqueeze(1)).to(dtype)  # Y Yᵀ
        p = same_target / n + ridge_p * eye
        q = _maybe_checkpointed(_position_gram, logits, coordinates, dtype) / n + ridge_q * eye
        if taylor_order is None:
            # Up to this size one thread is no slower, and immune to busy cores (see _small_linalg_threads).
            small = n <= _ONE_THREAD_EIGH
            with _small_linalg_threads(logits.device) if small else nullcontext():
                return matrix_cross_entropy(p, q)
        return matrix_cross_entropy(p, q, method="taylor", order=taylor_order)


def _relation_taylor_vocabulary_side(
    logits: Tensor,
    coordinates: Tensor,
    targets: Tensor,
    ridge_p: float,
    ridge_q: float,
    order: int,
    dtype: torch.dtype,
) -> Tensor:
    """The series on the V x V side (V < N): with A = F/√N, S = AᵀA and log Q ≈ Σ_j a_j (AAᵀ)^j,

    tr(P (AAᵀ)^0) = tr P = 1 + ridge_p·N,  tr(P (AAᵀ)^j) = ridge_p·tr(S^j) + ⟨HᵀH/N², S^{j-1}⟩ (j ≥ 1),

    with H = Yᵀ F, because tr(Y Yᵀ (AAᵀ)^j)/N = tr(S^{j-1} Aᵀ Y Yᵀ A)/N and Aᵀ Y = Hᵀ/√N; and
    tr Q = tr S + ridge_q·N.
    """
    n = targets.numel()
    kinds, group = torch.unique(targets, return_inverse=True)
    gram, summed = _maybe_checkpointed(_vocabulary_grams, logits, coordinates, group, kinds.numel(), dtype)
    s = gram / n
    pair = summed.T @ summed / (n * n)  # Aᵀ Y Yᵀ A / N
    coefficients = taylor_log_coefficients(order, ridge_q - 1.0)
    trace_p = 1.0 + ridge_p * n
    total = coefficients[0] * trace_p + s.new_zeros(())
    power = torch.eye(s.shape[0], dtype=s.dtype, device=s.device)  # S^{j-1}
    for j in range(1, order + 1):
        term = (pair * power).sum()  # ⟨HᵀH/N², S^{j-1}⟩ (both symmetric)
        power = power @ s
        total = total + coefficients[j] * (ridge_p * power.diagonal().sum() + term)
    return -total + s.diagonal().sum() + ridge_q * n


class LMLossTerms(NamedTuple):
    """The optimised total and its two parts (means over supervised positions), for logging."""

    total: Tensor
    cross_entropy: Tensor
    matrix_cross_entropy: Tensor


class MatrixCrossEntropyLMLoss(nn.Module):
    """Cross-entropy + gamma × matrix cross-entropy; `gamma=0` is exactly cross-entropy.

    `form` picks the reading of the matrix term (the paper reports such a loss for Llemma-7B on MetaMathQA
    without publishing how tokens enter it):

    - `"embedding"`: the mean over supervised positions of `token_matrix_cross_entropy` (this project's own
      construction; needs the output embedding, uses `ridge` and `top_k`);
    - `"relation"`: `relation_matrix_cross_entropy` over the batch's supervised positions, with
      ridge_p = ridge_q = `ridge` (equal, so that certain correct predictions reach the minimum; exact log;
      `top_k` is not used).

    `ridge=None` takes the form's default (`DEFAULT_RIDGE`, `DEFAULT_RELATION_RIDGE`).

    Usage::

        loss_fn = MatrixCrossEntropyLMLoss(gamma=1.0, ridge=0.01, top_k=32)
        logits = model(input_ids).logits[:, :-1]
        loss = loss_fn(logits, labels[:, 1:], model.get_output_embeddings().weight)
        relation = MatrixCrossEntropyLMLoss(gamma=1.0, form="relation")
        loss = relation(logits, labels[:, 1:])
    """

    def __init__(
        self,
        gamma: float = 1.0,
        ridge: float | None = None,
        top_k: int | None = DEFAULT_TOP_K,
        ignore_index: int = -100,
        chunk_size: int | None = None,
        form: MCEForm = "embedding",
    ) -> None:
        super().__init__()
        if not gamma >= 0 or not math.isfinite(gamma):
            raise MatrixSSLError(f"gamma must be a non-negative number, got {gamma!r}")
        if form not in MCE_FORMS:
            raise MatrixSSLError(f"the MCE form must be 'embedding' or 'relation', got {form!r}")
        if ridge is None:
            ridge = DEFAULT_RELATION_RIDGE if form == "relation" else DEFAULT_RIDGE
        _check_settings(ridge, top_k, chunk_size)
        self.gamma = gamma
        self.ridge = ridge
        self.top_k = top_k
        self.ignore_index = ignore_index
        self.chunk_size = chunk_size
        self.form: MCEForm = form

    @property
    def needs_embedding(self) -> bool:
        """Whether `terms` needs the output embedding weight (the embedding form with gamma > 0)."""
        return self.gamma > 0 and self.form == "embedding"

    def terms(self, logits: Tensor, labels: Tensor, embedding_weight: Tensor | None = None) -> LMLossTerms:
        """Total loss and its parts; `embedding_weight` may be None unless `needs_embedding`."""
        vocabulary = logits.shape[-1]
        with torch.autocast(device_type=logits.device.type, enabled=False):
            flat_logits = full_precision(logits.reshape(-1, vocabulary))
            flat_labels = labels.reshape(-1)
            if bool((flat_labels == self.ignore_index).all()):
                # Nothing supervised (e.g. a prompt longer than max_length): a zero that keeps the graph.
                zero = flat_logits.sum() * 0.0
                return LMLossTerms(zero, zero.detach(), zero.detach())
            cross_entropy = F.cross_entropy(flat_logits, flat_labels, ignore_index=self.ignore_index)
        if self.gamma == 0:
            return LMLossTerms(cross_entropy, cross_entropy.detach(), cross_entropy.new_zeros(()))
        if self.form == "relation":
            matrix_term = _relation_mce(logits, labels, self.ridge, self.ridge, None, self.ignore_index)
        else:
            if embedding_weight is None:
                raise ValueError("embedding_weight (the output embedding) is needed when gamma > 0")
            matrix_term = _token_mce(
                logits, labels, embedding_weight, self.ridge, self.top_k, self.ignore_index, self.chunk_size
            ).mean()
        total = cross_entropy + self.gamma * matrix_term.to(cross_entropy.dtype)
        return LMLossTerms(total, cross_entropy.detach(), matrix_term.detach())

    def forward(self, logits: Tensor, labels: Tensor, embedding_weight: Tensor | None = None) -> Tensor:
        return self.terms(logits, labels, embedding_weight).total

    def extra_repr(self) -> str:
        top_k = f", top_k={self.top_k}" if self.form == "embedding" else ""
        return f"form={self.form!r}, gamma={self.gamma}, ridge={self.ridge}{top_k}, ignore_index={self.ignore_index}"

"""Token-level matrix cross-entropy for causal language models.

The paper fine-tunes a language model with a matrix cross-entropy loss but did not publish the token-level
construction. What follows is this project's own reading of it, documented so that it can be checked:

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
  upper bound of the exact one that decreases to it as k grows. tr Q is always the exact 1 + ridge·d.

The embedding matrix is a fixed metric here (detached): letting the loss move it would reward collapsing all
embeddings onto each other, which makes every prediction look right. The gradient reaches the model through
the logits. Matrix functions run in float32 (float64 if the logits are float64), also under bf16 autocast.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from matrixssl.functional import full_precision, matrix_log

DEFAULT_RIDGE = 0.01
DEFAULT_TOP_K = 32
# Elements of intermediate storage one chunk of positions may use (float32: 4 bytes each, so ~128 MB).
_CHUNK_ELEMENTS = 1 << 25


def _check_inputs(logits: Tensor, labels: Tensor, embedding_weight: Tensor, ridge: float, top_k: int | None) -> None:
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
    if not ridge > 0 or not math.isfinite(ridge):
        raise ValueError(f"ridge must be a positive number, got {ridge!r}")
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
        raise ValueError(f"top_k must be None (exact) or a positive integer, got {top_k!r}")
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
    if requested is not None:
        if requested < 1:
            raise ValueError(f"chunk_size must be a positive integer, got {requested}")
        return requested
    return max(1, _CHUNK_ELEMENTS // max(per_position, 1))


def _log_term(probabilities: Tensor, r_factor: Tensor, z: Tensor, ridge: float) -> Tensor:
    """zᵀ log(R diag(q) Rᵀ + ridge·I) z per position; (N, k) q with (N or 1, m, k) R and (N, m) z."""
    m = r_factor.shape[-2]
    restricted = (r_factor * probabilities.unsqueeze(-2)) @ r_factor.transpose(-1, -2)
    restricted = restricted + ridge * torch.eye(m, dtype=restricted.dtype, device=restricted.device)
    log_q = matrix_log(restricted)
    return ((log_q @ z.unsqueeze(-1)).squeeze(-1) * z).sum(-1)


def _chunk_values(
    flat_logits: Tensor,
    rows: Tensor,
    kept: Tensor | None,
    r_factor: Tensor,
    z: Tensor,
    outside_span: Tensor,
    sq_norms: Tensor | None,
    ridge: float,
    ridge_trace: float,
) -> Tensor:
    """MCE values of one chunk of positions: tr Q - zᵀ log(Q_S) z - log(ridge)·(‖e_y‖² - ‖z‖²).

    `kept` None means every token (the exact path, R shared by all positions). `sq_norms` None means every
    embedding row is unit, so tr Q = 1 + ridge·d without looking at q.
    """
    chunk = full_precision(flat_logits.index_select(0, rows)).to(r_factor.dtype)
    if kept is None:
        log_term = _log_term(chunk.softmax(-1), r_factor.unsqueeze(0), z, ridge)
    else:
        log_kept = chunk.gather(-1, kept) - chunk.logsumexp(-1, keepdim=True)
        log_term = _log_term(log_kept.exp(), r_factor, z, ridge)
    if sq_norms is None:
        trace = torch.full_like(log_term, 1.0 + ridge_trace)
    else:
        trace = chunk.softmax(-1) @ sq_norms + ridge_trace
    return trace - log_term - math.log(ridge) * outside_span


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
    (detached, rows normalised here). Returns a 1-D tensor with one value per supervised position, in row-major
    order. `top_k=None` is exact; `top_k=k` keeps the k most probable tokens per position (an upper bound that
    tightens as k grows). Positions are processed in chunks of `chunk_size` (default: sized to ~128 MB) and each
    chunk is recomputed in the backward pass, so memory stays bounded for long sequences and large vocabularies.
    """
    _check_inputs(logits, labels, embedding_weight, ridge, top_k)
    vocabulary, dim = embedding_weight.shape
    flat_logits = logits.reshape(-1, vocabulary)
    positions = _supervised_positions(labels, ignore_index, vocabulary)
    dtype = torch.float64 if logits.dtype == torch.float64 else torch.float32
    device = logits.device
    with torch.autocast(device_type=device.type, enabled=False):
        embeddings = F.normalize(embedding_weight.detach().to(device=device, dtype=dtype), dim=-1)
        sq_norms = embeddings.square().sum(-1)
        all_unit = bool((sq_norms > 0.5).all())
        targets = labels.reshape(-1).index_select(0, positions)
        shared_r = None
        if top_k is None:
            shared_r = _shared_basis(embeddings)
            m = shared_r.shape[0]
            per_position = 2 * vocabulary + m + 4 * m * m
        else:
            k = min(top_k, vocabulary)
            per_position = 2 * vocabulary + 3 * k * dim + 4 * min(k, dim) ** 2
        step = _chunk_size(per_position, chunk_size)
        needs_grad = torch.is_grad_enabled() and logits.requires_grad
        values = []
        for start in range(0, positions.numel(), step):
            rows = positions[start : start + step]
            chunk_targets = targets[start : start + step]
            kept: Tensor | None
            if shared_r is not None:
                kept, r_factor, z = None, shared_r, shared_r.index_select(1, chunk_targets).T
            else:
                kept, r_factor, z = _top_k_geometry(flat_logits, rows, chunk_targets, embeddings, k)
            outside_span = (sq_norms.index_select(0, chunk_targets) - z.square().sum(-1)).clamp_min(0)
            args = (flat_logits, rows, kept, r_factor, z, outside_span, None if all_unit else sq_norms)
            if needs_grad:
                # Recompute the chunk in backward: only its inputs are kept, so memory stays one chunk deep.
                chunk_values = checkpoint(_chunk_values, *args, ridge, ridge * dim, use_reentrant=False)
            else:
                chunk_values = _chunk_values(*args, ridge, ridge * dim)
            assert isinstance(chunk_values, Tensor)
            values.append(chunk_values)
        if not values:
            return flat_logits.new_zeros(0, dtype=dtype)
        return torch.cat(values)


def _shared_basis(embeddings: Tensor) -> Tensor:
    """R with Eᵀ = Ψ R, (min(V, d), V); its column y is z = Ψᵀ e_y. Ψ = I (R = Eᵀ) when V > d."""
    vocabulary, dim = embeddings.shape
    if vocabulary > dim:
        return embeddings.T.contiguous()
    return torch.linalg.qr(embeddings.T, mode="reduced")[1]


@torch.no_grad()
def _top_k_geometry(
    flat_logits: Tensor, rows: Tensor, targets: Tensor, embeddings: Tensor, k: int
) -> tuple[Tensor, Tensor, Tensor]:
    """Kept token ids (N, k), R (N, m, k) with E_keptᵀ = Ψ R, and z = Ψᵀ e_y (N, m); no gradient needed."""
    kept = flat_logits.index_select(0, rows).topk(k, dim=-1).indices
    basis, r_factor = torch.linalg.qr(embeddings[kept].transpose(-1, -2), mode="reduced")
    z = (basis.transpose(-1, -2) @ embeddings.index_select(0, targets).unsqueeze(-1)).squeeze(-1)
    return kept, r_factor, z


class LMLossTerms(NamedTuple):
    """The optimised total and its two parts (means over supervised positions), for logging."""

    total: Tensor
    cross_entropy: Tensor
    matrix_cross_entropy: Tensor


class MatrixCrossEntropyLMLoss(nn.Module):
    """Cross-entropy + gamma × mean token matrix cross-entropy; `gamma=0` is exactly cross-entropy.

    The matrix term is this project's own token-level construction (see `token_matrix_cross_entropy`); the
    paper reports such a loss for Llemma-7B on MetaMathQA without publishing how tokens enter it.

    Usage::

        loss_fn = MatrixCrossEntropyLMLoss(gamma=1.0, ridge=0.01, top_k=32)
        logits = model(input_ids).logits[:, :-1]
        loss = loss_fn(logits, labels[:, 1:], model.get_output_embeddings().weight)
    """

    def __init__(
        self,
        gamma: float = 1.0,
        ridge: float = DEFAULT_RIDGE,
        top_k: int | None = DEFAULT_TOP_K,
        ignore_index: int = -100,
        chunk_size: int | None = None,
    ) -> None:
        super().__init__()
        if not gamma >= 0 or not math.isfinite(gamma):
            raise ValueError(f"gamma must be a non-negative number, got {gamma!r}")
        if not ridge > 0 or not math.isfinite(ridge):
            raise ValueError(f"ridge must be a positive number, got {ridge!r}")
        if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
            raise ValueError(f"top_k must be None (exact) or a positive integer, got {top_k!r}")
        self.gamma = gamma
        self.ridge = ridge
        self.top_k = top_k
        self.ignore_index = ignore_index
        self.chunk_size = chunk_size

    def terms(self, logits: Tensor, labels: Tensor, embedding_weight: Tensor | None = None) -> LMLossTerms:
        """Total loss and its parts; `embedding_weight` may be None only when gamma is 0."""
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
        if embedding_weight is None:
            raise ValueError("embedding_weight (the output embedding) is needed when gamma > 0")
        matrix_term = token_matrix_cross_entropy(
            logits,
            labels,
            embedding_weight,
            ridge=self.ridge,
            top_k=self.top_k,
            ignore_index=self.ignore_index,
            chunk_size=self.chunk_size,
        ).mean()
        total = cross_entropy + self.gamma * matrix_term.to(cross_entropy.dtype)
        return LMLossTerms(total, cross_entropy.detach(), matrix_term.detach())

    def forward(self, logits: Tensor, labels: Tensor, embedding_weight: Tensor | None = None) -> Tensor:
        return self.terms(logits, labels, embedding_weight).total

    def extra_repr(self) -> str:
        return f"gamma={self.gamma}, ridge={self.ridge}, top_k={self.top_k}, ignore_index={self.ignore_index}"

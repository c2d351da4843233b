"""Token matrix cross-entropy: against an independent float64 computation, top-k, gradients, padding, bf16,
chunking, and the CE + gamma·MCE module."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from matrixssl.lm.loss import MatrixCrossEntropyLMLoss, token_matrix_cross_entropy

pytestmark = pytest.mark.usefixtures("one_thread")


def reference_mce(
    logits: torch.Tensor, labels: torch.Tensor, weight: torch.Tensor, ridge: float
) -> torch.Tensor:
    """MCE(P, Q) = tr(-P log Q + Q) built literally in d x d, float64, one position at a time."""
    weight = weight.double()
    norms = weight.norm(dim=1, keepdim=True)
    unit = torch.where(norms > 0, weight / norms.clamp_min(1e-300), torch.zeros_like(weight))
    dim = weight.shape[1]
    values = []
    for row_logits, label in zip(logits.reshape(-1, weight.shape[0]).double(), labels.reshape(-1)):
        if label == -100:
            continue
        q = row_logits.softmax(-1)
        big_q = unit.T @ torch.diag(q) @ unit + ridge * torch.eye(dim, dtype=torch.float64)
        big_p = torch.outer(unit[label], unit[label])
        eigenvalues, vectors = torch.linalg.eigh(big_q)
        log_q = vectors @ torch.diag(eigenvalues.log()) @ vectors.T
        values.append(torch.trace(-big_p @ log_q + big_q))
    return torch.stack(values)


def make_inputs(
    vocabulary: int,
    dim: int,
    batch: int = 2,
    length: int = 5,
    seed: int = 0,
    dtype: torch.dtype = torch.float64,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    logits = 2.0 * torch.randn(batch, length, vocabulary, generator=generator, dtype=dtype)
    labels = torch.randint(0, vocabulary, (batch, length), generator=generator)
    labels[0, :2] = -100  # a padded prompt
    weight = torch.randn(vocabulary, dim, generator=generator, dtype=dtype)
    return logits, labels, weight


@pytest.mark.parametrize(("vocabulary", "dim"), [(12, 16), (40, 8)])  # V < d (QR basis) and V > d (Ψ = I)
@pytest.mark.parametrize("ridge", [0.01, 0.5])
def test_exact_matches_independent_float64(vocabulary: int, dim: int, ridge: float) -> None:
    logits, labels, weight = make_inputs(vocabulary, dim)
    values = token_matrix_cross_entropy(logits, labels, weight, ridge=ridge)
    expected = reference_mce(logits, labels, weight, ridge)
    assert values.shape == (int((labels != -100).sum()),)
    assert values.dtype == torch.float64
    torch.testing.assert_close(values, expected, rtol=1e-10, atol=1e-10)


def test_orthonormal_embeddings_give_smoothed_cross_entropy() -> None:
    """With orthonormal e_i, MCE = -log(q_y + ridge) + 1 + ridge·d: the construction reduces to CE."""
    vocabulary, ridge = 6, 0.05
    weight = torch.eye(vocabulary, dtype=torch.float64) * 3.0  # rows are normalised inside
    logits, labels, _ = make_inputs(vocabulary, vocabulary)
    keep = labels.reshape(-1) != -100
    q = logits.reshape(-1, vocabulary).softmax(-1)[keep]
    q_y = q.gather(1, labels.reshape(-1)[keep].unsqueeze(1)).squeeze(1)
    expected = -torch.log(q_y + ridge) + 1 + ridge * vocabulary
    torch.testing.assert_close(token_matrix_cross_entropy(logits, labels, weight, ridge=ridge), expected)
    # top-k: a target outside the k kept tokens counts as predicted with probability 0
    kept = logits.reshape(-1, vocabulary)[keep].topk(2, dim=-1).indices
    in_top = (kept == labels.reshape(-1)[keep].unsqueeze(1)).any(1)
    assert 0 < int(in_top.sum()) < in_top.numel()
    expected_top = -torch.log(torch.where(in_top, q_y, 0.0) + ridge) + 1 + ridge * vocabulary
    approx = token_matrix_cross_entropy(logits, labels, weight, ridge=ridge, top_k=2)
    torch.testing.assert_close(approx, expected_top)


@pytest.mark.parametrize(("vocabulary", "dim"), [(12, 16), (40, 8)])
def test_top_k_equal_to_vocabulary_is_exact(vocabulary: int, dim: int) -> None:
    logits, labels, weight = make_inputs(vocabulary, dim)
    exact = token_matrix_cross_entropy(logits, labels, weight)
    torch.testing.assert_close(
        token_matrix_cross_entropy(logits, labels, weight, top_k=vocabulary), exact, rtol=1e-10, atol=1e-10
    )
    torch.testing.assert_close(
        token_matrix_cross_entropy(logits, labels, weight, top_k=10 * vocabulary),
        exact,
        rtol=1e-10,
        atol=1e-10,
    )


def test_top_k_error_shrinks_as_k_grows() -> None:
    """Dropping tokens removes a PSD part of Q and log is operator monotone: an upper bound, tightening in k."""
    logits, labels, weight = make_inputs(64, 12, batch=4, length=8, seed=3)
    exact = token_matrix_cross_entropy(logits, labels, weight)
    errors = []
    for k in (1, 2, 4, 8, 16, 32, 64):
        approx = token_matrix_cross_entropy(logits, labels, weight, top_k=k)
        assert bool((approx >= exact - 1e-10).all())
        errors.append(float((approx - exact).mean()))
    assert all(later <= earlier + 1e-12 for earlier, later in zip(errors, errors[1:]))
    assert errors[0] > 0.1 and errors[-1] < 1e-10


@pytest.mark.parametrize("top_k", [None, 4])
def test_gradients_finite_and_correct(top_k: int | None) -> None:
    logits, labels, weight = make_inputs(10, 6, batch=1, length=3)
    labels[0, 0] = -100
    leaf = logits.clone().requires_grad_()
    assert torch.autograd.gradcheck(
        lambda x: token_matrix_cross_entropy(x, labels, weight, ridge=0.1, top_k=top_k), (leaf,)
    )
    # Peaked predictions leave many eigenvalues of Q at exactly ridge (ties): gradients must stay finite.
    peaked = (30.0 * torch.randn(2, 7, 50)).float().requires_grad_()
    targets = torch.randint(0, 50, (2, 7))
    weight32 = torch.randn(50, 16)
    token_matrix_cross_entropy(peaked, targets, weight32, top_k=top_k).sum().backward()
    assert peaked.grad is not None and bool(torch.isfinite(peaked.grad).all())


def test_embedding_is_a_fixed_metric() -> None:
    """The embedding gets no gradient from the matrix term (moving it would reward collapsing embeddings)."""
    logits, labels, weight = make_inputs(10, 6)
    weight.requires_grad_()
    logits.requires_grad_()
    token_matrix_cross_entropy(logits, labels, weight, top_k=3).sum().backward()
    assert weight.grad is None and logits.grad is not None


@pytest.mark.parametrize("top_k", [None, 5])
def test_ignored_positions_are_dropped_and_get_no_gradient(top_k: int | None) -> None:
    logits, labels, weight = make_inputs(20, 8, batch=3, length=6)
    labels[1, 3:] = -100  # right padding
    leaf = logits.clone().requires_grad_()
    values = token_matrix_cross_entropy(leaf, labels, weight, top_k=top_k)
    keep = labels.reshape(-1) != -100
    alone = token_matrix_cross_entropy(
        logits.reshape(-1, 20)[keep], labels.reshape(-1)[keep], weight, top_k=top_k
    )
    torch.testing.assert_close(values, alone)
    values.sum().backward()
    assert leaf.grad is not None
    assert bool((leaf.grad.reshape(-1, 20)[~keep] == 0).all())
    custom_labels = torch.where(labels == -100, 7, labels)
    custom = token_matrix_cross_entropy(logits, custom_labels, weight, top_k=top_k, ignore_index=7)
    assert custom.numel() == int((custom_labels != 7).sum())
    nothing = token_matrix_cross_entropy(logits, torch.full_like(labels, -100), weight, top_k=top_k)
    assert nothing.shape == (0,)


def test_zero_embedding_row_matches_reference() -> None:
    """An all-zero row (e.g. an untrained padding embedding) is a zero vector in Q and in tr Q."""
    logits, labels, weight = make_inputs(30, 8)
    weight[4] = 0.0
    labels[1, 1] = 4  # the target itself may be the zero row: P = 0
    expected = reference_mce(logits, labels, weight, 0.05)
    torch.testing.assert_close(token_matrix_cross_entropy(logits, labels, weight, ridge=0.05), expected)
    approx = token_matrix_cross_entropy(logits, labels, weight, ridge=0.05, top_k=30)
    torch.testing.assert_close(approx, expected)


@pytest.mark.parametrize("top_k", [None, 6])
def test_chunking_equals_unchunked(top_k: int | None) -> None:
    logits, labels, weight = make_inputs(24, 10, batch=3, length=7)
    results = []
    for chunk_size in (None, 1, 4):
        leaf = logits.clone().requires_grad_()
        values = token_matrix_cross_entropy(leaf, labels, weight, top_k=top_k, chunk_size=chunk_size)
        (values * torch.arange(1, values.numel() + 1)).sum().backward()
        results.append((values.detach(), leaf.grad))
    for values, grad in results[1:]:
        torch.testing.assert_close(values, results[0][0], rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(grad, results[0][1], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("top_k", [None, 8])
def test_bf16_autocast_computes_in_float32(top_k: int | None) -> None:
    logits, labels, weight = make_inputs(32, 16, dtype=torch.float32)
    hidden = torch.randn(2, 5, 16)
    head = torch.nn.Linear(16, 32, bias=False)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = head(hidden)
        assert low.dtype == torch.bfloat16
        values = token_matrix_cross_entropy(low, labels, head.weight, top_k=top_k)
    assert values.dtype == torch.float32
    expected = token_matrix_cross_entropy(low.float(), labels, head.weight.float(), top_k=top_k)
    torch.testing.assert_close(values, expected)
    values.sum().backward()
    assert head.weight.grad is not None and bool(torch.isfinite(head.weight.grad).all())


def test_module_gamma_zero_is_exactly_cross_entropy() -> None:
    logits, labels, weight = make_inputs(20, 8, dtype=torch.float32)
    loss = MatrixCrossEntropyLMLoss(gamma=0.0)(logits, labels, weight)
    assert torch.equal(loss, F.cross_entropy(logits.reshape(-1, 20), labels.reshape(-1)))
    # gamma 0 needs no embedding at all
    assert torch.equal(MatrixCrossEntropyLMLoss(gamma=0.0)(logits, labels), loss)


def test_module_adds_gamma_times_mean() -> None:
    logits, labels, weight = make_inputs(20, 8)
    loss_fn = MatrixCrossEntropyLMLoss(gamma=0.7, ridge=0.02, top_k=5)
    terms = loss_fn.terms(logits, labels, weight)
    ce = F.cross_entropy(logits.reshape(-1, 20), labels.reshape(-1))
    mce = token_matrix_cross_entropy(logits, labels, weight, ridge=0.02, top_k=5).mean()
    torch.testing.assert_close(terms.total, ce + 0.7 * mce)
    torch.testing.assert_close(terms.matrix_cross_entropy, mce)
    everything_ignored = loss_fn(logits.requires_grad_(), torch.full_like(labels, -100), weight)
    assert float(everything_ignored.detach()) == 0.0 and everything_ignored.requires_grad
    with pytest.raises(ValueError, match="embedding_weight"):
        loss_fn(logits, labels)


def test_rejects_bad_inputs() -> None:
    logits, labels, weight = make_inputs(20, 8)
    with pytest.raises(ValueError, match="shape of logits"):
        token_matrix_cross_entropy(logits, labels[:, :3], weight)
    with pytest.raises(ValueError, match="vocabulary"):
        token_matrix_cross_entropy(logits, labels, weight[:10])
    bad = labels.clone()
    bad[1, 1] = 20
    with pytest.raises(ValueError, match="outside the vocabulary"):
        token_matrix_cross_entropy(logits, bad, weight)
    with pytest.raises(ValueError, match="ridge"):
        token_matrix_cross_entropy(logits, labels, weight, ridge=0.0)
    with pytest.raises(ValueError, match="top_k"):
        token_matrix_cross_entropy(logits, labels, weight, top_k=0)
    with pytest.raises(ValueError, match="gamma"):
        MatrixCrossEntropyLMLoss(gamma=-1.0)
    with pytest.raises(ValueError, match="ridge"):
        MatrixCrossEntropyLMLoss(ridge=math.nan)


@pytest.mark.parametrize("top_k", [None, 4])
def test_shifted_non_contiguous_logits(top_k: int | None) -> None:
    """`logits[:, :-1]` (how a causal LM is scored) is read in place and matches a contiguous copy."""
    logits, labels, weight = make_inputs(16, 8, batch=2, length=6)
    full = logits.clone().requires_grad_()
    shifted = full[:, :-1]
    assert not shifted.is_contiguous()
    values = token_matrix_cross_entropy(shifted, labels[:, 1:], weight, top_k=top_k)
    values.sum().backward()
    copy = logits[:, :-1].contiguous().requires_grad_()
    expected = token_matrix_cross_entropy(copy, labels[:, 1:], weight, top_k=top_k)
    expected.sum().backward()
    torch.testing.assert_close(values, expected)
    assert full.grad is not None and copy.grad is not None
    torch.testing.assert_close(full.grad[:, :-1], copy.grad)
    assert bool((full.grad[:, -1] == 0).all())

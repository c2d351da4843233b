"""The relation reading of matrix cross-entropy: independent float64 references, the MKL identity, gradients,
masking, the Taylor option, errors, the loss module and `lm-finetune --mce-form relation`."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from matrixssl.errors import MatrixSSLError
from matrixssl.functional import matrix_entropy, matrix_kl
from matrixssl.lm import MatrixCrossEntropyLMLoss, relation_matrix_cross_entropy
from matrixssl.lm.loss import DEFAULT_RELATION_RIDGE

from . import run_command

pytestmark = pytest.mark.usefixtures("one_thread")

F64 = torch.float64


def make_inputs(
    vocabulary: int,
    batch: int = 2,
    length: int = 6,
    ignored: int = 2,
    dtype: torch.dtype = F64,
    seed: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random logits and labels drawn from a few tokens (so that targets repeat), some labels ignored."""
    generator = torch.Generator().manual_seed(seed)
    logits = (2 * torch.randn(batch, length, vocabulary, generator=generator, dtype=F64)).to(dtype)
    labels = torch.randint(0, min(vocabulary, 4), (batch, length), generator=generator)
    labels.view(-1)[torch.randperm(batch * length, generator=generator)[:ignored]] = -100
    return logits, labels


def reference_matrices(
    logits: torch.Tensor, labels: torch.Tensor, ridge_p: float, ridge_q: float, ignore_index: int = -100
) -> tuple[torch.Tensor, torch.Tensor]:
    """P and Q in float64 from an explicit one-hot Y and the softmax F of the kept rows."""
    keep = labels != ignore_index
    f = logits[keep].to(F64).softmax(-1)
    y = F.one_hot(labels[keep], logits.shape[-1]).to(F64)
    n = f.shape[0]
    eye = torch.eye(n, dtype=F64)
    return y @ y.T / n + ridge_p * eye, f @ f.T / n + ridge_q * eye


def reference_mce(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """tr(-P log Q + Q) with log Q = U diag(log λ) Uᵀ from torch.linalg.eigh."""
    eigenvalues, vectors = torch.linalg.eigh(q)
    log_q = vectors @ torch.diag(eigenvalues.log()) @ vectors.T
    return -torch.trace(p @ log_q) + torch.trace(q)


def series_mce(p: torch.Tensor, q: torch.Tensor, order: int) -> torch.Tensor:
    """tr(-P L + Q) with L = Σ_{k=1..order} (-1)^{k+1} (Q - I)^k / k, the powers multiplied out here."""
    x = q - torch.eye(q.shape[0], dtype=q.dtype)
    log_q = torch.zeros_like(q)
    for k in range(1, order + 1):
        log_q = log_q + (-1) ** (k + 1) * torch.linalg.matrix_power(x, k) / k
    return -torch.trace(p @ log_q) + torch.trace(q)


@pytest.mark.parametrize(
    ("vocabulary", "ridge_p", "ridge_q"), [(9, 1e-3, 1e-3), (30, 0.0, 0.05), (5, 0.2, 0.01)]
)
def test_exact_matches_independent_float64(vocabulary: int, ridge_p: float, ridge_q: float) -> None:
    """V ≥ N and V < N (5 tokens, 10 positions) alike."""
    logits, labels = make_inputs(vocabulary)
    value = relation_matrix_cross_entropy(logits, labels, ridge_p=ridge_p, ridge_q=ridge_q)
    assert value.shape == () and value.dtype == F64
    torch.testing.assert_close(value, reference_mce(*reference_matrices(logits, labels, ridge_p, ridge_q)))


def test_identity_with_matrix_kl_and_entropy() -> None:
    """MCE(P, Q) = MKL(P‖Q) + ME(P) + tr P; at the perfect prediction with equal ridges Q = P, so MKL = 0."""
    logits, labels = make_inputs(12, batch=3, length=5, ignored=3)
    for ridge_p, ridge_q in ((1e-3, 1e-3), (0.1, 0.02)):
        p, q = reference_matrices(logits, labels, ridge_p, ridge_q)
        value = relation_matrix_cross_entropy(logits, labels, ridge_p=ridge_p, ridge_q=ridge_q)
        torch.testing.assert_close(value, matrix_kl(p, q) + matrix_entropy(p) + torch.trace(p))
    certain = 60.0 * F.one_hot(labels.clamp_min(0), 12).to(F64)
    p, _ = reference_matrices(certain, labels, 1e-3, 1e-3)
    floor = matrix_entropy(p) + torch.trace(p)
    torch.testing.assert_close(relation_matrix_cross_entropy(certain, labels), floor)
    assert float(relation_matrix_cross_entropy(logits, labels)) > float(floor) + 0.1


@pytest.mark.parametrize("taylor_order", [None, 3])
def test_gradcheck_float64(taylor_order: int | None) -> None:
    logits, labels = make_inputs(6, batch=1, length=5, ignored=1)
    leaf = logits.clone().requires_grad_()
    assert torch.autograd.gradcheck(
        lambda x: relation_matrix_cross_entropy(
            x, labels, ridge_p=0.05, ridge_q=0.3, taylor_order=taylor_order
        ),
        (leaf,),
    )
    # V < N takes the vocabulary side of the series
    small, small_labels = make_inputs(3, batch=1, length=6, ignored=0)
    assert torch.autograd.gradcheck(
        lambda x: relation_matrix_cross_entropy(x, small_labels, ridge_q=0.5, taylor_order=4),
        (small.clone().requires_grad_(),),
    )


def test_repeated_eigenvalues_keep_gradients_finite() -> None:
    """Identical rows make F Fᵀ singular: Q has ridge_q as a repeated eigenvalue."""
    logits = torch.randn(1, 1, 7, dtype=F64).expand(2, 4, 7).clone().requires_grad_()
    labels = torch.tensor([[0, 1, 0, 2], [3, 0, 1, 1]])
    relation_matrix_cross_entropy(logits, labels).backward()
    assert logits.grad is not None and bool(torch.isfinite(logits.grad).all())


def test_ignored_positions_change_nothing() -> None:
    logits, labels = make_inputs(10, ignored=4)
    leaf = logits.clone().requires_grad_()
    value = relation_matrix_cross_entropy(leaf, labels)
    value.backward()
    assert leaf.grad is not None
    assert bool((leaf.grad[labels == -100] == 0).all())
    # other logits at ignored positions: the same value
    changed = logits.clone()
    changed[labels == -100] = torch.randn(int((labels == -100).sum()), 10, dtype=F64)
    torch.testing.assert_close(relation_matrix_cross_entropy(changed, labels), value.detach())
    # only the kept rows, in one sequence: the same value
    keep = labels != -100
    compact = relation_matrix_cross_entropy(logits[keep].unsqueeze(0), labels[keep].unsqueeze(0))
    torch.testing.assert_close(compact, value.detach())
    # another ignore_index
    other = torch.where(labels == -100, 7, labels)
    torch.testing.assert_close(relation_matrix_cross_entropy(logits, other, ignore_index=7), value.detach())


def test_shifted_non_contiguous_logits() -> None:
    """`logits[:, :-1]` against `labels[:, 1:]`, as a causal LM is scored, equals a contiguous copy."""
    logits, labels = make_inputs(8, length=7, ignored=1)
    full = logits.clone().requires_grad_()
    shifted = full[:, :-1]
    assert not shifted.is_contiguous()
    value = relation_matrix_cross_entropy(shifted, labels[:, 1:])
    value.backward()
    torch.testing.assert_close(
        value, relation_matrix_cross_entropy(logits[:, :-1].contiguous(), labels[:, 1:])
    )
    assert full.grad is not None and bool((full.grad[:, -1] == 0).all())


@pytest.mark.parametrize(("vocabulary", "ridge_p", "ridge_q"), [(12, 0.5, 0.7), (4, 0.1, 1.0), (3, 0.0, 0.0)])
@pytest.mark.parametrize("order", [1, 2, 5])
def test_taylor_matches_the_series_by_hand(
    vocabulary: int, ridge_p: float, ridge_q: float, order: int
) -> None:
    """The position side (V ≥ N) and the vocabulary side (V < N: 4 and 3 tokens, 10 positions)."""
    logits, labels = make_inputs(vocabulary)
    p, q = reference_matrices(logits, labels, ridge_p, ridge_q)
    value = relation_matrix_cross_entropy(
        logits, labels, ridge_p=ridge_p, ridge_q=ridge_q, taylor_order=order
    )
    torch.testing.assert_close(value, series_mce(p, q, order))


def test_taylor_approaches_the_exact_log_with_ridges_near_one() -> None:
    logits, labels = make_inputs(10)
    exact = relation_matrix_cross_entropy(logits, labels, ridge_p=1.0, ridge_q=1.0)
    series = relation_matrix_cross_entropy(logits, labels, ridge_p=1.0, ridge_q=1.0, taylor_order=8)
    torch.testing.assert_close(series, exact, rtol=1e-6, atol=1e-6)


def test_float32_and_bf16_autocast() -> None:
    logits, labels = make_inputs(16, dtype=torch.float32)
    value = relation_matrix_cross_entropy(logits, labels)
    assert value.dtype == torch.float32
    torch.testing.assert_close(value, relation_matrix_cross_entropy(logits.double(), labels).float())
    hidden = torch.randn(2, 6, 8)
    head = torch.nn.Linear(8, 16, bias=False)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = head(hidden)
        assert low.dtype == torch.bfloat16
        value = relation_matrix_cross_entropy(low, labels)
    assert value.dtype == torch.float32
    torch.testing.assert_close(value, relation_matrix_cross_entropy(low.float(), labels))
    value.backward()
    assert head.weight.grad is not None and bool(torch.isfinite(head.weight.grad).all())


def test_user_mistakes_are_one_line_errors() -> None:
    logits, labels = make_inputs(6)
    for kwargs, message in [
        ({"ridge_p": -0.1}, "ridge_p must be a non-negative number, got -0.1"),
        ({"ridge_q": math.nan}, "ridge_q must be a non-negative number, got nan"),
        ({"ridge_q": math.inf}, "ridge_q must be a non-negative number"),
        ({"ridge_q": 0.0}, "ridge_q must be positive with the exact log"),
        ({"taylor_order": 0}, "taylor_order must be None"),
        ({"taylor_order": True}, "taylor_order must be None"),
    ]:
        with pytest.raises(MatrixSSLError, match=message) as error:
            relation_matrix_cross_entropy(logits, labels, **kwargs)  # type: ignore[arg-type]
        assert "\n" not in str(error.value)
    relation_matrix_cross_entropy(logits, labels, ridge_q=0.0, taylor_order=2)  # the series takes it
    with pytest.raises(MatrixSSLError, match="no supervised positions"):
        relation_matrix_cross_entropy(logits, torch.full_like(labels, -100))
    with pytest.raises(MatrixSSLError, match="shape of logits"):
        relation_matrix_cross_entropy(logits, labels[:, :3])
    with pytest.raises(MatrixSSLError, match="shape of logits"):
        relation_matrix_cross_entropy(logits[0, 0], labels[0, 0])
    with pytest.raises(MatrixSSLError, match="integer token ids"):
        relation_matrix_cross_entropy(logits, labels.double())
    bad = labels.clone()
    bad[0, 0] = 6
    with pytest.raises(ValueError, match="outside the vocabulary"):
        relation_matrix_cross_entropy(logits, bad)


def test_module_relation_form() -> None:
    logits, labels = make_inputs(20, dtype=torch.float32)
    loss_fn = MatrixCrossEntropyLMLoss(gamma=0.3, form="relation")
    assert loss_fn.ridge == DEFAULT_RELATION_RIDGE and not loss_fn.needs_embedding
    assert "form='relation'" in repr(loss_fn)
    terms = loss_fn.terms(logits, labels)  # no embedding needed
    ce = F.cross_entropy(logits.reshape(-1, 20), labels.reshape(-1))
    mce = relation_matrix_cross_entropy(logits, labels)
    torch.testing.assert_close(terms.matrix_cross_entropy, mce)
    torch.testing.assert_close(terms.total, ce + 0.3 * mce)
    custom = MatrixCrossEntropyLMLoss(gamma=1.0, ridge=0.05, form="relation").terms(logits, labels)
    torch.testing.assert_close(
        custom.matrix_cross_entropy, relation_matrix_cross_entropy(logits, labels, ridge_p=0.05, ridge_q=0.05)
    )
    nothing = loss_fn(logits.requires_grad_(), torch.full_like(labels, -100))
    assert float(nothing.detach()) == 0.0 and nothing.requires_grad
    assert MatrixCrossEntropyLMLoss().form == "embedding" and MatrixCrossEntropyLMLoss().needs_embedding
    with pytest.raises(MatrixSSLError, match="MCE form must be 'embedding' or 'relation'"):
        MatrixCrossEntropyLMLoss(form="matrix")  # type: ignore[arg-type]
    with pytest.raises(MatrixSSLError, match="ridge must be a positive number"):
        MatrixCrossEntropyLMLoss(ridge=0.0, form="relation")


def test_config_resolves_the_form_and_its_ridge() -> None:
    pytest.importorskip("transformers")
    from matrixssl.lm.train import FinetuneConfig, make_loss

    assert FinetuneConfig().mce_form == "embedding" and FinetuneConfig().ridge == 0.01
    config = FinetuneConfig(mce_form="relation")
    assert config.ridge == DEFAULT_RELATION_RIDGE
    assert make_loss(config).form == "relation"
    assert make_loss(FinetuneConfig(mce_form="relation", ridge=0.02)).ridge == 0.02
    with pytest.raises(MatrixSSLError, match="MCE form"):
        FinetuneConfig(mce_form="other")  # type: ignore[arg-type]


def test_cli_finetunes_with_the_relation_form(
    tmp_path: Path, tiny_gguf: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("transformers")
    pytest.importorskip("accelerate")
    argv = ["lm-finetune", "--model", str(tiny_gguf), "--n-train", "8", "--batch-size", "4", "--steps", "2"]
    argv += ["--mce-form", "relation", "--gamma", "0.5", "--output-dir", str(tmp_path), "--no-progress"]
    assert run_command(argv) == 0
    out = capsys.readouterr().out
    assert out.startswith("mce fine-tuning: 2 steps on 8 problems, relation form, final loss")
    record = json.loads((tmp_path / "train_metrics.json").read_text())
    assert record["config"]["mce_form"] == "relation"
    assert record["config"]["ridge"] == DEFAULT_RELATION_RIDGE
    history = record["history"]
    assert record["steps"] == 2 and history["step"] == [1, 2]
    for step in range(2):
        assert history["matrix_cross_entropy"][step] > 0
        expected = history["cross_entropy"][step] + 0.5 * history["matrix_cross_entropy"][step]
        assert history["loss"][step] == pytest.approx(expected, abs=1e-3)  # the Trainer rounds it
    with pytest.raises(SystemExit):
        run_command([*argv, "--mce-form", "matrix"])
    assert "invalid choice: 'matrix'" in capsys.readouterr().err

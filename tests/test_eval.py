"""kNN and linear probe on data whose answers are known."""

from __future__ import annotations

import torch

from matrixssl.config import EvalConfig
from matrixssl.eval.knn import knn_accuracy, knn_predict
from matrixssl.eval.probe import linear_probe
from matrixssl.eval.report import evaluate_features


def clusters(n: int, seed: int, noise: float = 0.3) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    centres = torch.eye(4, 16) * 3
    labels = torch.arange(n) % 4
    return centres[labels] + noise * torch.randn(n, 16, generator=generator), labels


def test_knn_weighted_vote_known_answer() -> None:
    bank = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]])
    labels = torch.tensor([0, 0, 1])
    query = torch.tensor([[0.2, 1.0], [1.0, 0.05]])
    assert knn_predict(bank, labels, query, num_classes=2, k=1).tolist() == [1, 0]
    # k=3: two near-orthogonal class-0 votes lose to one close class-1 vote at a low temperature.
    assert knn_predict(bank, labels, query[:1], num_classes=2, k=3, temperature=0.05).tolist() == [1]


def test_knn_and_probe_separate_clusters_and_fail_on_noise() -> None:
    x_train, y_train = clusters(400, 0)
    x_test, y_test = clusters(200, 1)
    assert knn_accuracy(x_train, y_train, x_test, y_test, k=20) == 100.0
    result = linear_probe(x_train, y_train, x_test, y_test, epochs=10, lr=0.1)
    assert result.test_top1 == 100.0
    noise = torch.randn(400, 16)
    chance = linear_probe(noise, y_train, torch.randn(200, 16), y_test, epochs=10).test_top1
    assert chance < 45.0


def test_evaluate_features_reports_every_figure() -> None:
    x_train, y_train = clusters(200, 0)
    x_test, y_test = clusters(100, 1)
    report = evaluate_features(x_train, y_train, x_test, y_test, EvalConfig(linear_epochs=5))
    assert report["linear_top1"] == 100.0 and report["knn_top1"] == 100.0
    assert 3.0 < report["feature_effective_rank"] < 16.0 and report["feature_dim"] == 16

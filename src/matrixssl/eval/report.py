"""The standard evaluation of frozen features: offline linear probe, kNN and effective rank."""

from __future__ import annotations

from typing import Any

from torch import Tensor

from matrixssl.config import EvalConfig
from matrixssl.eval.knn import knn_accuracy
from matrixssl.eval.probe import linear_probe
from matrixssl.functional import covariance, effective_rank


def evaluate_features(
    train_features: Tensor,
    train_labels: Tensor,
    test_features: Tensor,
    test_labels: Tensor,
    config: EvalConfig,
) -> dict[str, Any]:
    """Test-set accuracies in percent (linear probe and weighted kNN) and the features' effective rank."""
    probe = linear_probe(
        train_features,
        train_labels,
        test_features,
        test_labels,
        epochs=config.linear_epochs,
        lr=config.linear_lr,
    )
    return {
        "linear_top1": round(probe.test_top1, 2),
        "linear_train_top1": round(probe.train_top1, 2),
        "knn_top1": round(
            knn_accuracy(
                train_features, train_labels, test_features, test_labels, config.knn_k, config.knn_temperature
            ),
            2,
        ),
        "feature_effective_rank": round(float(effective_rank(covariance(train_features.double()))), 2),
        "feature_dim": int(train_features.shape[1]),
    }

"""The linear probe's LARS option and its per-batch feature source (used for augmentation)."""

from __future__ import annotations

import math

import pytest
import torch
from test_eval import clusters

from matrixssl.eval.probe import linear_probe


def test_lars_probe_separates_clusters_and_fails_on_noise() -> None:
    x_train, y_train = clusters(400, 0)
    x_test, y_test = clusters(200, 1)
    assert (
        linear_probe(x_train, y_train, x_test, y_test, epochs=10, lr=0.03, optimizer="lars").test_top1
        == 100.0
    )
    noise = torch.randn(400, 16)
    chance = linear_probe(noise, y_train, torch.randn(200, 16), y_test, epochs=10, lr=0.03, optimizer="lars")
    assert chance.test_top1 < 45.0
    with pytest.raises(ValueError, match="optimizer must be one of sgd, lars"):
        linear_probe(x_train, y_train, x_test, y_test, optimizer="adam")


def test_train_batch_supplies_the_training_features_of_each_step() -> None:
    x_train, y_train = clusters(400, 0)
    x_test, y_test = clusters(200, 1)
    requested: list[torch.Tensor] = []

    def noisy(index: torch.Tensor) -> torch.Tensor:  # stands in for augmented images through a backbone
        requested.append(index)
        return x_train[index] + 0.1 * torch.randn(index.numel(), 16)

    result = linear_probe(x_train, y_train, x_test, y_test, epochs=3, batch_size=128, train_batch=noisy)
    assert len(requested) == 3 * math.ceil(400 / 128)
    assert torch.equal(torch.cat(requested[:4]).sort().values, torch.arange(400))  # one epoch, every sample
    assert result.test_top1 == 100.0
    # Features that ignore the samples asked for cannot be learnt from: the source is really used.
    unrelated = linear_probe(
        x_train, y_train, x_test, y_test, epochs=3, train_batch=lambda index: torch.randn(index.numel(), 16)
    )
    assert unrelated.test_top1 < 45.0

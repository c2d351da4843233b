"""Offline linear probe on cached frozen features: BatchNorm without affine, then one linear layer.

The official protocol (MoCo v3, MEC, Matrix-SSL) puts a BatchNorm1d(affine=False) before the classifier so
the probe is insensitive to the feature scale; on cached features it is a fixed standardisation, and with no
augmentation each epoch is a few matrix products, so small datasets take seconds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass
class ProbeResult:
    train_top1: float
    test_top1: float
    classifier: nn.Module


def linear_probe(
    train_features: Tensor,
    train_labels: Tensor,
    test_features: Tensor,
    test_labels: Tensor,
    epochs: int = 30,
    lr: float = 0.1,
    batch_size: int = 256,
    weight_decay: float = 0.0,
    seed: int = 0,
) -> ProbeResult:
    """Train BN(affine=False) + Linear with SGD (momentum 0.9, cosine schedule); accuracies in percent."""
    generator = torch.Generator().manual_seed(seed)
    num_classes = int(max(train_labels.max(), test_labels.max())) + 1
    x_train, x_test = train_features.float(), test_features.float()
    linear = nn.Linear(x_train.shape[1], num_classes)
    nn.init.zeros_(linear.weight)
    nn.init.zeros_(linear.bias)
    classifier = nn.Sequential(nn.BatchNorm1d(x_train.shape[1], affine=False), linear)
    optimizer = torch.optim.SGD(classifier.parameters(), lr=lr, momentum=0.9, weight_decay=weight_decay)
    steps = epochs * math.ceil(x_train.shape[0] / batch_size)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(steps, 1))
    classifier.train()
    for _ in range(epochs):
        for index in torch.randperm(x_train.shape[0], generator=generator).split(batch_size):
            if index.numel() < 2:
                continue
            loss = F.cross_entropy(classifier(x_train[index]), train_labels[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
    classifier.eval()
    with torch.no_grad():
        train_top1 = _accuracy(classifier, x_train, train_labels)
        test_top1 = _accuracy(classifier, x_test, test_labels)
    return ProbeResult(train_top1, test_top1, classifier)


def _accuracy(classifier: nn.Module, features: Tensor, labels: Tensor) -> float:
    correct = sum(
        (classifier(chunk).argmax(1) == target).sum().item()
        for chunk, target in zip(features.split(4096), labels.split(4096))
    )
    return 100.0 * correct / features.shape[0]

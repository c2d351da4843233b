"""Offline linear probe on cached frozen features: BatchNorm without affine, then one linear layer.

The official protocol (MoCo v3, MEC, Matrix-SSL) puts a BatchNorm1d(affine=False) before the classifier so
the probe is insensitive to the feature scale; on cached features it is a fixed standardisation, and with no
augmentation each epoch is a few matrix products, so small datasets take seconds. With augmentation the features
of each batch are recomputed through the frozen backbone (`train_batch`). LARS is the optimiser of the MEC/Matrix-SSL
ImageNet probe; its trust ratio shrinks every step, so it needs a far larger lr than SGD (the `linear` command's
default is `commands.LARS_LR`, measured). SGD stays the default.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from matrixssl.optim import LARS, parameter_groups

OPTIMIZERS = ("sgd", "lars")


@dataclass
class ProbeResult:
    train_top1: float
    test_top1: float
    classifier: nn.Module


def zero_linear(in_features: int, num_classes: int) -> nn.Linear:
    """A classifier head starting at zero: every class equally likely, whatever the features' scale."""
    linear = nn.Linear(in_features, num_classes)
    nn.init.zeros_(linear.weight)
    nn.init.zeros_(linear.bias)
    return linear


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
    optimizer: str = "sgd",
    train_batch: Callable[[Tensor], Tensor] | None = None,
) -> ProbeResult:
    """Train BN(affine=False) + Linear with SGD or LARS (momentum 0.9, cosine schedule); accuracies in percent.

    `train_batch(indices)` returns the training features of those samples when they change from epoch to epoch
    (augmented images through a frozen backbone); by default they are rows of `train_features`, which always
    give the reported train accuracy.
    """
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {optimizer!r}")
    generator = torch.Generator().manual_seed(seed)
    num_classes = int(max(train_labels.max(), test_labels.max())) + 1
    x_train, x_test = train_features.float(), test_features.float()
    classifier = nn.Sequential(
        nn.BatchNorm1d(x_train.shape[1], affine=False), zero_linear(x_train.shape[1], num_classes)
    )
    opt: torch.optim.Optimizer
    if optimizer == "lars":
        groups = parameter_groups(classifier, name="classifier", lr=lr, weight_decay=weight_decay)
        opt = LARS(groups, lr=lr, momentum=0.9, weight_decay=weight_decay)
    else:
        opt = torch.optim.SGD(classifier.parameters(), lr=lr, momentum=0.9, weight_decay=weight_decay)
    steps = epochs * math.ceil(x_train.shape[0] / batch_size)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(steps, 1))
    features_of = train_batch or (lambda index: x_train[index])
    classifier.train()
    for _ in range(epochs):
        for index in torch.randperm(x_train.shape[0], generator=generator).split(batch_size):
            if index.numel() < 2:
                continue
            loss = F.cross_entropy(classifier(features_of(index).float()), train_labels[index])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
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

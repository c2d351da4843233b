"""Toy data for the examples, made with torch alone (no download, no scikit-learn).

A sample has `dim` features: the first half carry its class (a class prototype plus a little noise), the
second half are a large nuisance that has nothing to do with the class, as lighting or background are in
images. An augmented view (`augment`) keeps the class half nearly as it is and redraws much of the nuisance,
so a model that gives two views similar embeddings, without collapsing, learns to ignore the nuisance; raw
features and a random network are dominated by it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def make_toy_data(n: int, dim: int = 32, classes: int = 10, seed: int = 0) -> tuple[Tensor, Tensor]:
    """`n` samples (n, dim) and their labels (n,); the same seed gives the same data set."""
    g = torch.Generator().manual_seed(seed)
    half = dim // 2
    prototypes = 0.5 * torch.randn(classes, half, generator=g)
    labels = torch.randint(classes, (n,), generator=g)
    signal = prototypes[labels] + 0.4 * torch.randn(n, half, generator=g)
    nuisance = 3.0 * torch.randn(n, dim - half, generator=g)
    return torch.cat([signal, nuisance], dim=1), labels


def augment(x: Tensor) -> Tensor:
    """One random view of a batch (B, dim): a little noise on the class half, most of the nuisance half
    redrawn, and a random scale per sample."""
    half = x.shape[1] // 2
    signal = x[:, :half] + 0.2 * torch.randn_like(x[:, :half])
    nuisance = 0.3 * x[:, half:] + 3.0 * torch.randn_like(x[:, half:])
    scale = 0.8 + 0.4 * torch.rand(x.shape[0], 1)
    return scale * torch.cat([signal, nuisance], dim=1)


def nearest_centroid_accuracy(
    train_features: Tensor, train_labels: Tensor, test_features: Tensor, test_labels: Tensor
) -> float:
    """Accuracy (%) of giving each test feature the class of the nearest (cosine) class mean of the training
    features: a cheap stand-in for a linear probe that says whether the features separate the classes."""
    train_features, test_features = F.normalize(train_features, dim=1), F.normalize(test_features, dim=1)
    present = train_labels.unique()
    centroids = torch.stack([train_features[train_labels == c].mean(0) for c in present])
    predicted = present[(test_features @ F.normalize(centroids, dim=1).T).argmax(1)]
    return 100.0 * float((predicted == test_labels).float().mean())

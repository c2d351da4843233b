"""Frozen-backbone feature extraction over a whole dataset, in eval mode and without gradients."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset


@torch.no_grad()
def extract_features(
    backbone: nn.Module,
    dataset: Dataset[tuple[Tensor, int]],
    transform: Callable[[Tensor], Tensor],
    batch_size: int = 512,
    device: torch.device | str = "cpu",
    num_workers: int = 0,
) -> tuple[Tensor, Tensor]:
    """(features (N, D) float32 on CPU, labels (N,) int64) for every image of `dataset`.

    `transform` maps a uint8 batch (already on `device`) to the normalised model input.
    """
    was_training = backbone.training
    backbone.eval()
    features, labels = [], []
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    try:
        for images, targets in loader:
            images = images.to(device, non_blocking=True)
            features.append(backbone(transform(images)).float().cpu())
            labels.append(torch.as_tensor(targets))
    finally:
        backbone.train(was_training)
    return torch.cat(features), torch.cat(labels).long()

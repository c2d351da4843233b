"""Semi-supervised evaluation: fine-tune backbone + linear head on a small class-balanced labelled subset.

The SimCLR/BYOL protocol (1% or 10% of the labels): the whole network trains with Nesterov SGD on a cosine
schedule, with random crops and flips as the only augmentation, and is tested on the full test split. The subset
depends only on the labels, the fraction and the seed, so runs of different checkpoints see the same images.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import Subset

from matrixssl.data import ImageDataset
from matrixssl.eval.augment import crop_flip, image_batch
from matrixssl.eval.checkpoint import Pretrained
from matrixssl.eval.features import extract_features
from matrixssl.eval.probe import zero_linear
from matrixssl.models import feature_width
from matrixssl.optim import parameter_groups, warmup_cosine
from matrixssl.runtime import seed_everything


def balanced_subset(labels: Tensor, fraction: float, seed: int) -> Tensor:
    """Sorted indices of a class-balanced subset holding about `fraction` of the labelled samples.

    Every class gives round(fraction * N / C) samples (at least one), drawn without replacement by a generator
    seeded with `seed`; a class with fewer samples gives all it has. Negative labels (unlabelled) are skipped.
    """
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], e.g. 0.01 or 0.1; got {fraction}")
    classes = labels[labels >= 0].unique()
    if classes.numel() == 0:
        raise ValueError("no labelled samples to draw a subset from")
    per_class = max(1, round(fraction * int((labels >= 0).sum()) / classes.numel()))
    generator = torch.Generator().manual_seed(seed)
    chosen = []
    for label in classes:
        members = (labels == label).nonzero().flatten()
        chosen.append(members[torch.randperm(members.numel(), generator=generator)[:per_class]])
    return torch.cat(chosen).sort().values


@dataclass
class FinetuneResult:
    train_top1: float  # on the labelled subset, without augmentation
    test_top1: float
    model: nn.Module  # backbone followed by the linear head


def finetune(
    pretrained: Pretrained,
    train: ImageDataset,
    test: ImageDataset,
    subset: Tensor,
    epochs: int = 30,
    lr: float = 0.05,
    batch_size: int = 256,
    weight_decay: float = 0.0,
    seed: int = 0,
    device: torch.device | str = "cpu",
) -> FinetuneResult:
    """Fine-tune a copy of the backbone plus a zero-initialised linear head on `train[subset]`; top-1 in %."""
    seed_everything(seed)  # the crops are drawn from the global generator
    backbone = copy.deepcopy(pretrained.backbone).to(device)
    head = zero_linear(feature_width(backbone), pretrained.num_classes).to(device)
    model = nn.Sequential(backbone, head)
    optimizer = torch.optim.SGD(
        parameter_groups(model, name="model", lr=lr, weight_decay=weight_decay),
        lr=lr,
        momentum=0.9,
        nesterov=True,
        weight_decay=weight_decay,
    )
    total = epochs * math.ceil(subset.numel() / batch_size)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: warmup_cosine(step, total, 0))
    augment = crop_flip(pretrained.views)
    labels = train.labels[subset]
    generator = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        for batch in torch.randperm(subset.numel(), generator=generator).split(batch_size):
            if batch.numel() < 2:  # BatchNorm needs two samples
                continue
            images = augment(image_batch(train, subset[batch]).to(device))
            loss = F.cross_entropy(model(images), labels[batch].to(device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
    model.eval()
    return FinetuneResult(
        train_top1=_top1(model, Subset(train, subset.tolist()), pretrained, device),
        test_top1=_top1(model, test, pretrained, device),
        model=model,
    )


@torch.no_grad()
def _top1(
    model: nn.Sequential,
    dataset: torch.utils.data.Dataset[tuple[Tensor, int]],
    pretrained: Pretrained,
    device: torch.device | str,
) -> float:
    backbone, head = model[0], model[1]
    features, labels = extract_features(backbone, dataset, pretrained.eval_transform, device=device)
    predicted = head(features.to(device)).argmax(1).cpu()
    return 100.0 * (predicted == labels).float().mean().item()

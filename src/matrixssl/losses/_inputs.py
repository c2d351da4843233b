"""Input checks and preparation shared by every loss: one clear error per user mistake."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from matrixssl.distributed import gather
from matrixssl.functional import full_precision


def check_embeddings(**named: Tensor) -> None:
    """Raise ValueError unless every tensor is a finite (B, d) batch with B >= 2 and all shapes agree."""
    shapes = {name: tuple(t.shape) for name, t in named.items()}
    for name, t in named.items():
        if t.dim() != 2:
            raise ValueError(
                f"{name} must be a (batch, dim) tensor of embeddings, got shape {tuple(t.shape)}"
            )
        if t.shape[0] < 2:
            raise ValueError(
                f"{name} has batch size {t.shape[0]}; batch statistics need at least 2 samples per batch"
            )
    if len(set(shapes.values())) > 1:
        raise ValueError(f"embedding shapes must match, got {shapes}")
    for name, t in named.items():
        if not bool(torch.isfinite(t).all()):
            raise ValueError(
                f"{name} contains NaN or Inf; check the learning rate and the inputs of the model"
            )


def prepare(z: Tensor, *, gather_distributed: bool, detach: bool = False, normalize: bool = True) -> Tensor:
    """Full precision, rows L2-normalised, gathered over ranks when asked (then detached if a target).

    `normalize=False` keeps the raw scale, for losses defined on it (Barlow Twins, VICReg).
    """
    z = full_precision(z)
    if normalize:
        z = F.normalize(z, dim=1)
    if gather_distributed:
        z = gather(z)
    return z.detach() if detach else z

"""Input checks and preparation shared by every loss: one clear error per user mistake."""

from __future__ import annotations

import inspect

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from matrixssl.distributed import gather
from matrixssl.functional import full_precision


class EmbeddingLoss(nn.Module):
    """Base of every loss: what they share.

    `gather_distributed` computes batch statistics over all ranks, with correct gradients. `check_values`
    switches the value checks (NaN/Inf inputs; Matrix-SSL's Taylor radius), which read a number back from
    the device and so make the host wait for it; they are on by default. A training loop that checks its
    loss itself, as `matrixssl pretrain` does at logging steps, turns them off and calls `deferred_checks`
    then. The repr lists the constructor's arguments with their values, e.g.
    `MatrixSSLLoss(target_scale=1.0, ridge=1.0, ...)`.

    Args:
        gather_distributed: compute on the batch gathered from all ranks of `torch.distributed`.
    """

    def __init__(self, *, gather_distributed: bool) -> None:
        super().__init__()
        self.gather_distributed = gather_distributed
        self.check_values = True

    def check(self, **named: Tensor) -> None:
        """Check shapes always, and finite values when `check_values` is on.

        Args:
            **named: the inputs, by the names the error messages should use; each (B, d) with B >= 2.

        Raises:
            ValueError: a shape is wrong, the shapes differ, or a value is NaN or Inf.
        """
        check_embeddings(self.check_values, **named)

    def deferred_checks(self) -> None:
        """Run the value checks that were skipped while `check_values` was off (none for most losses)."""

    def extra_repr(self) -> str:
        """The constructor's arguments with their current values, read from the attributes (or `settings`)."""
        settings = getattr(self, "settings", None)
        parts = []
        for name in list(inspect.signature(type(self).__init__).parameters)[1:]:
            if hasattr(self, name):
                parts.append(f"{name}={getattr(self, name)!r}")
            elif hasattr(settings, name):
                parts.append(f"{name}={getattr(settings, name)!r}")
        return ", ".join(parts)


def check_embeddings(finite: bool, /, **named: Tensor) -> None:
    """Raise ValueError unless every tensor is a (B, d) batch with B >= 2, all shapes agree and, if `finite`,
    no value is NaN or Inf (a check that waits for the device)."""
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
        if finite and not bool(torch.isfinite(t).all()):
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

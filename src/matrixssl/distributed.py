"""Autograd-correct all-gather and rank helpers.

Losses built on batch statistics (covariances, Gram matrices) must see the global batch. The gather below sums
the incoming gradients over ranks in its backward pass: every rank computes the same loss on the same gathered
batch, so rank r's share of the gradient is the sum of what every rank's copy of the loss sends to r's rows.
Together with DistributedDataParallel's gradient averaging this makes N processes equal one process on the full
batch. A gather whose backward only keeps the local slice scales every gradient by 1/N instead.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor


def is_distributed() -> bool:
    """True inside an initialised process group with more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


class _GatherWithGradient(torch.autograd.Function):
    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, x: Tensor) -> Tensor:
        parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, x.contiguous())
        return torch.cat(parts, dim=0)

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: Tensor) -> Tensor:
        grad = grad.contiguous()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        size = grad.shape[0] // dist.get_world_size()
        return grad[dist.get_rank() * size : (dist.get_rank() + 1) * size]


def gather(x: Tensor) -> Tensor:
    """Concatenate `x` (B, ...) from every rank along dim 0, gradients flowing back to each rank's rows.

    A no-op outside a multi-process group. Every rank must pass the same batch size.
    """
    if not is_distributed():
        return x
    out = _GatherWithGradient.apply(x)
    assert isinstance(out, Tensor)
    return out

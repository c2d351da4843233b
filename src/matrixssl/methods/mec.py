"""MEC as a training method, the official recipe: predictor, EMA teacher, 4th-order Taylor log-det, λ warm-up.

The official code warms λ = d / (B ε²) up over the first epochs (its inverse moves linearly from 8/λ to 1/λ,
per step, over the same 10 epochs as the learning-rate warm-up) so that the Taylor series stays inside its
convergence radius while the embeddings are still nearly collapsed.
"""

from __future__ import annotations

import torch
from torch import Tensor

from matrixssl.config import Config
from matrixssl.data import DatasetInfo
from matrixssl.losses import MECLoss
from matrixssl.methods.base import SSLMethod, directed_pairs
from matrixssl.models import Predictor


def lambda_scale(step: int, warmup_steps: int) -> float:
    """Multiplier of λ at `step`: 1/8 at step 0, 1 from `warmup_steps` on, 1/λ linear in between."""
    if warmup_steps <= 0:
        return 1.0
    progress = min(1.0, step / warmup_steps)
    return 1.0 / (8.0 - 7.0 * progress)


class MEC(SSLMethod):
    uses_teacher = True
    supports_local_views = True  # each view against the teacher of every other global view

    def __init__(self, config: Config, *, info: DatasetInfo, steps_per_epoch: int) -> None:
        super().__init__(config, info=info, steps_per_epoch=steps_per_epoch)
        self.predictor = Predictor(config.model.projector_dim, config.model.predictor_hidden_dim)
        self.loss_fn = MECLoss(eps_squared=config.loss.mec.eps_squared)
        if config.loss.mec.lambda_warmup_epochs < 0:
            raise ValueError(f"lambda_warmup_epochs must be >= 0, got {config.loss.mec.lambda_warmup_epochs}")
        self.lambda_warmup_steps = int(round(config.loss.mec.lambda_warmup_epochs * steps_per_epoch))

    def loss_from_views(self, online: list[Tensor], teacher: list[Tensor]) -> dict[str, Tensor]:
        predicted = [self.predictor(z) for z in online]
        scale = lambda_scale(self.global_step, self.lambda_warmup_steps)
        # Each (view, other global view's teacher) pair is one direction of MEC's symmetric loss.
        pairs = directed_pairs(len(online))
        loss = torch.stack(
            [
                self.loss_fn(predicted[v], predicted[v], teacher[t], teacher[t], lambda_scale=scale)
                for v, t in pairs
            ]
        ).mean()
        return {"loss": loss, "lambda_scale": loss.new_full((), scale)}

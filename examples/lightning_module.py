"""The Matrix-SSL loss inside a Lightning module of your own (needs `lightning`: `pip install 'matrixssl[train]'`).

What it shows: the loss is a sub-module like any layer, so it moves with the model to the device, appears in
`print(model)` with its settings, and needs nothing from `matrixssl`'s own training system. The module below
is a minimal BYOL-style learner written for this example: encoder + projector + predictor, an EMA teacher
updated after each optimizer step, and the loss on the four (B, d) embeddings. On several GPUs
(`devices=N`), build the loss with `gather_distributed=True` so that its covariances use the global batch.
The data are toy clusters made with torch (`toy_data.py` beside this file).

Run it (well under a minute on a laptop CPU)::

    python examples/lightning_module.py
    python examples/lightning_module.py --steps 10 --batch-size 64    # a quick smoke run
"""

from __future__ import annotations

import argparse
import copy
from typing import Any

import lightning as L
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset
from toy_data import augment, make_toy_data

from matrixssl.functional import covariance, effective_rank
from matrixssl.losses import MatrixSSLLoss


def mlp(*sizes: int) -> nn.Sequential:
    """Linear layers with BatchNorm and ReLU between them."""
    layers: list[nn.Module] = []
    for a, b in zip(sizes, sizes[1:]):
        layers += [nn.Linear(a, b), nn.BatchNorm1d(b), nn.ReLU()]
    return nn.Sequential(*layers[:-2])  # no BatchNorm and ReLU after the last layer


class TwoViewLearner(L.LightningModule):
    """Someone else's self-supervised module; only `self.loss_fn` comes from matrixssl."""

    def __init__(self, dim: int, width: int = 128, embedding: int = 64, lr: float = 2e-3) -> None:
        super().__init__()
        self.student = nn.Sequential(mlp(dim, width, width), mlp(width, width, embedding))
        self.predictor = mlp(embedding, width, embedding)
        self.teacher = copy.deepcopy(self.student).requires_grad_(False)
        self.loss_fn = MatrixSSLLoss(gamma=1.0)  # gather_distributed=True when training on several devices
        self.lr = lr

    def training_step(self, batch: list[Tensor], batch_idx: int) -> Tensor:
        (x,) = batch
        view_1, view_2 = augment(x), augment(x)
        online_1 = self.predictor(self.student(view_1))
        online_2 = self.predictor(self.student(view_2))
        with torch.no_grad():
            target_1, target_2 = self.teacher(view_1), self.teacher(view_2)
        loss = self.loss_fn(online_1, online_2, target_1, target_2)
        self.log("train/loss", loss, prog_bar=True)
        if batch_idx % 10 == 0:  # the teacher's effective rank: a collapse monitor
            self.log("train/effective_rank", effective_rank(covariance(target_1)))
        return loss

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        """EMA teacher, momentum 0.99 → 1 over training; BatchNorm statistics are copied."""
        progress = self.global_step / max(self.trainer.max_steps, 1)
        momentum = 0.99 + 0.01 * progress
        with torch.no_grad():
            for t, s in zip(self.teacher.parameters(), self.student.parameters()):
                t.lerp_(s, 1.0 - momentum)
            for buffer, source in zip(self.teacher.buffers(), self.student.buffers()):
                buffer.copy_(source)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        trainable = [*self.student.parameters(), *self.predictor.parameters()]
        return torch.optim.AdamW(trainable, lr=self.lr, weight_decay=1e-4)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--samples", type=int, default=4096)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    L.seed_everything(args.seed, verbose=False)

    x, _ = make_toy_data(args.samples, seed=args.seed)  # the labels are never used
    loader = DataLoader(TensorDataset(x), batch_size=args.batch_size, shuffle=True, drop_last=True)
    model = TwoViewLearner(dim=x.shape[1])
    print(model.loss_fn)
    trainer = L.Trainer(
        max_steps=args.steps,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(model, loader)
    metrics = {name: round(float(value), 4) for name, value in trainer.callback_metrics.items()}
    print(f"after {trainer.global_step} steps: {metrics}")


if __name__ == "__main__":
    main()

"""Training-step throughput of the quick config: batched on-device views + fast loss vs the usual pipeline.

"ours": uint8 batches, both views made batched on the training device (kornia), the optimised MatrixSSLLoss.
"per-image": the same model fed by per-image PIL augmentation (random resized crop, brightness/contrast, flip;
two views) in a DataLoader worker, with the loss written the obvious way (`matrixssl.losses.reference`). Both run
at the quick config's precision and memory format; a third row is "ours" in float32 with NCHW tensors, the
previous defaults. These three make the two views only; a fourth row is "ours" with the quick config's local
views (multi-crop), which count as images neither here nor in the other rows' figures. A step is everything:
views, all online branches, the teacher, loss, backward, optimiser step, EMA update. "backbone share" is the time of the backbone's forward + backward on both views (measured
alone, same batch) over the step time; the rest is views, heads, teacher, loss, optimiser and EMA.

    python benchmarks/throughput.py [--steps 20] [--batch-size 256]
"""

from __future__ import annotations

import argparse
import random
import time
from typing import Any

import lightning as L
import torch
from _report import header, write
from PIL import Image, ImageEnhance
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from matrixssl.config import load_config
from matrixssl.data import ImageDataset, load_dataset
from matrixssl.losses.reference import reference_matrix_ssl_loss
from matrixssl.methods.matrix_ssl import MatrixSSL
from matrixssl.train import training_precision


class PerImageViews(Dataset[tuple[Tensor, Tensor, int]]):
    """Two PIL-augmented views per image, produced one image at a time (the torchvision-style pipeline)."""

    def __init__(self, dataset: ImageDataset, scale: tuple[float, float] = (0.2, 1.0)) -> None:
        self.dataset, self.scale = dataset, scale
        self.mean, self.std = dataset.mean[0], dataset.std[0]

    def __len__(self) -> int:
        return len(self.dataset)

    def _view(self, image: Image.Image) -> Tensor:
        side = image.width
        area = side * side * random.uniform(*self.scale)
        crop = max(1, min(side, round(area**0.5)))
        left, top = random.randint(0, side - crop), random.randint(0, side - crop)
        view = image.resize((side, side), Image.BILINEAR, box=(left, top, left + crop, top + crop))
        if random.random() < 0.8:  # brightness and contrast jitter 0.4, in random order
            enhancers = [ImageEnhance.Brightness, ImageEnhance.Contrast]
            random.shuffle(enhancers)
            for enhancer in enhancers:
                view = enhancer(view).enhance(random.uniform(0.6, 1.4))
        if random.random() < 0.5:
            view = view.transpose(Image.FLIP_LEFT_RIGHT)
        pixels = torch.frombuffer(bytearray(view.tobytes()), dtype=torch.uint8).float().div(255)
        return ((pixels - self.mean) / self.std).view(1, side, side)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor, int]:
        image, label = self.dataset[index]
        pil = Image.fromarray(image[0].numpy())
        return self._view(pil), self._view(pil), label


class PerImageMatrixSSL(MatrixSSL):
    """Views arrive ready-made from the loader; the loss is the straightforward formula."""

    def make_views(self, batch: Any) -> tuple[list[Tensor], Tensor]:
        view_1, view_2, labels = batch
        return [self._input(view_1), self._input(view_2)], labels

    def loss_from_views(self, online: list[Tensor], teacher: list[Tensor]) -> dict[str, Tensor]:
        predicted = [self.predictor(z) for z in online]
        return {"loss": reference_matrix_ssl_loss(predicted[0], predicted[1], teacher[0], teacher[1])}


class StepTimer(L.Callback):
    def __init__(self, warmup: int) -> None:
        self.warmup, self.starts = warmup, []  # type: ignore[var-annotated]

    def on_train_batch_start(self, trainer: L.Trainer, *args: Any) -> None:
        self.starts.append(time.perf_counter())

    def seconds_per_step(self) -> float:
        times = self.starts[self.warmup :]
        return (times[-1] - times[0]) / (len(times) - 1)


def run(model: MatrixSSL, loader: DataLoader, steps: int, warmup: int, precision: str) -> float:
    timer = StepTimer(warmup)
    trainer = L.Trainer(
        max_steps=steps + warmup + 1,
        precision=precision,  # type: ignore[arg-type]
        accelerator="auto",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        callbacks=[timer],
    )
    trainer.fit(model, loader)
    return timer.seconds_per_step()


def backbone_seconds(
    model: MatrixSSL, batch_size: int, channels: int, size: int, bf16: bool, repeats: int = 5
) -> float:
    views = [model._input(torch.randn(batch_size, channels, size, size)) for _ in range(2)]
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            total = sum(model.backbone(v).float().sum() for v in views)
        total.backward()  # type: ignore[union-attr]
        best = min(best, time.perf_counter() - start)
    model.zero_grad(set_to_none=True)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=256)
    args = parser.parse_args()
    quick_overrides = [f"data.batch_size={args.batch_size}", "trainer.max_epochs=1"]
    quick = load_config("fashion-mnist/matrix_ssl", quick_overrides)
    overrides = [*quick_overrides, "data.local_views=0"]
    config = load_config(None, overrides)
    data = load_dataset(config.data.name, config.data.dir, "train", subset=args.batch_size * (args.steps + 8))
    info = data.info
    precision = training_precision(config)
    steps_per_epoch = len(data) // args.batch_size
    rows = []
    torch.manual_seed(0)
    ours = MatrixSSL(config, info=info, steps_per_epoch=steps_per_epoch)
    ours_loader = DataLoader(data, batch_size=args.batch_size, shuffle=True, drop_last=True)
    t_ours = run(ours, ours_loader, args.steps, args.warmup, precision)
    bf16 = precision == "bf16-mixed"
    t_backbone = backbone_seconds(ours, args.batch_size, info.channels, info.image_size, bf16)
    torch.manual_seed(0)
    baseline = PerImageMatrixSSL(config, info=info, steps_per_epoch=steps_per_epoch)
    baseline_loader = DataLoader(
        PerImageViews(data), batch_size=args.batch_size, shuffle=True, drop_last=True, num_workers=1
    )
    t_base = run(baseline, baseline_loader, args.steps, args.warmup, precision)
    plain_config = load_config(None, [*overrides, "model.channels_last=false", "trainer.precision=32-true"])
    torch.manual_seed(0)
    plain = MatrixSSL(plain_config, info=info, steps_per_epoch=steps_per_epoch)
    t_plain = run(plain, ours_loader, args.steps, args.warmup, "32-true")
    t_plain_backbone = backbone_seconds(plain, args.batch_size, info.channels, info.image_size, False)
    torch.manual_seed(0)
    t_multi = run(
        MatrixSSL(quick, info=info, steps_per_epoch=steps_per_epoch),
        ours_loader,
        args.steps,
        args.warmup,
        precision,
    )
    for name, seconds, backbone in (
        ("ours: batched views + fast loss", t_ours, t_backbone),
        ("per-image PIL views + straightforward loss", t_base, t_backbone),
        ("ours in float32, NCHW (no bf16 autocast, no channels_last)", t_plain, t_plain_backbone),
        (f"ours + the quick config's {quick.data.local_views} local views (multi-crop)", t_multi, t_backbone),
    ):
        rows.append(
            f"| {name} | {args.batch_size / seconds:.0f} | {1e3 * seconds:.0f} | {backbone / seconds:.2f} |"
        )
    table = "\n".join(
        [
            f"Quick config: {config.model.backbone} ({config.model.stem} stem) width {config.model.width}, blocks/stage "
            f"{config.model.blocks_per_stage}, {info.name} {info.image_size}px, batch {args.batch_size}, "
            f"precision {precision}, channels_last {config.model.channels_last}, {args.steps} timed steps after {args.warmup} warm-up steps.",
            "",
            "| pipeline | images/s | ms/step | backbone fwd+bwd share of step |",
            "|---|---|---|---|",
            *rows,
            "",
            f"Speed-up: {t_base / t_ours:.2f}x over per-image views, {t_plain / t_ours:.2f}x over float32 NCHW. Backbone forward+backward alone (both views): {1e3 * t_backbone:.0f} ms. "
            f"The local views make a step {t_multi / t_ours:.2f}x as long.",
            "",
        ]
    )
    write("throughput.md", header("Training-step throughput") + table)


if __name__ == "__main__":
    main()

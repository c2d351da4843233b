"""Training-step time against its hardware floor, with where the rest goes, for the quick and two-view configs.

"step": the real training step under Lightning (views, every online branch, the teacher, loss and probe,
backward, optimiser step, EMA update), the interval between batch starts. "floor": what no implementation can
avoid, at the same batch shapes and precision: the backbone's forward and backward on every view plus the teacher
backbone's forward on the two global views. Right after each Lightning step, on the same batch, the same step is
run by hand with a timer around each part (the parts' table), then the floor, then the floor with the heads; each
ratio is the median of the per-step ratios, so that a machine whose speed drifts (shared or throttled CPUs) moves
both sides of each ratio together. On a GPU the by-hand parts add up to a little more than the step: the host
waits for the device at each boundary.

    python benchmarks/throughput.py [--steps 10] [--warmup 3] [--batch-size 256] [key=value overrides]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from _report import header, write
from torch import Tensor
from torch.utils.data import DataLoader

from matrixssl.config import Config, load_config
from matrixssl.data import load_dataset
from matrixssl.methods import SSLMethod, build_method
from matrixssl.runtime import autocast
from matrixssl.train import training_precision

PARTS = ("views", "online forward", "teacher forward", "loss + probe", "backward", "optimiser + EMA")


def _wait(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def floor_work(model: SSLMethod, views: list[Tensor], precision: str, device: torch.device) -> None:
    """The floor: backbone forward+backward on every view, and the EMA teacher's backbone forward on the two
    global views (a teacher that is the student itself costs no forward of its own)."""
    with autocast(precision, device):
        total = sum(model.backbone(v).float().sum() for v in views)
        if model.teacher is not None:
            with torch.no_grad():
                for v in views[:2]:
                    model.teacher.module[0](v)  # type: ignore[index]
    total.backward()  # type: ignore[union-attr]
    model.zero_grad(set_to_none=True)


def floor_with_heads_work(
    model: SSLMethod, views: list[Tensor], precision: str, device: torch.device
) -> None:
    """The floor plus the heads every method of this shape must run: projector (and predictor) forward and
    backward on every view, and the teacher's projector on the two global views."""
    teacher = model.teacher.module if model.teacher is not None else None  # type: ignore[union-attr]
    predictor = getattr(model, "predictor", None)
    with autocast(precision, device):
        online = [model.projector(model.backbone(v)) for v in views]
        if predictor is not None:
            online = [predictor(z) for z in online]
        total = sum(z.float().sum() for z in online)
        if teacher is not None:
            with torch.no_grad():
                for v in views[:2]:
                    teacher(v)
    total.backward()  # type: ignore[union-attr]
    model.zero_grad(set_to_none=True)


def by_hand_step(
    model: SSLMethod,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    batch: Any,
    index: int,
    precision: str,
) -> tuple[dict[str, float], list[Tensor]]:
    """One training step written out by hand, a timer around each part (the host waits for the device at each
    boundary); the seconds of each part and the views it made. `scaler` is enabled for 16-mixed only: an
    overflowing step is then skipped, as Lightning skips it."""
    device = next(model.parameters()).device
    marks: list[float] = []
    optimizer.zero_grad(set_to_none=True)  # Lightning leaves its step's gradients in place

    def mark() -> None:
        _wait(device)
        marks.append(time.perf_counter())

    mark()
    with autocast(precision, device):
        views, labels = model.make_views(batch)
        mark()
        features = [model.backbone(v) for v in views]
        online = [model.projector(f) for f in features]
        mark()
        teacher = model.teacher_outputs(views[:2], online[:2])
        mark()
        probe_loss = model.probe_step(features[0].detach(), labels)[0]
        loss = model.loss_from_views(online, teacher)["loss"] + probe_loss
        mark()
    scaler.scale(loss).backward()
    mark()
    scaler.step(optimizer)
    scaler.update()
    optimizer.zero_grad(set_to_none=True)
    model.on_train_batch_end(None, batch, index)
    mark()
    return {part: end - start for part, start, end in zip(PARTS, marks, marks[1:])}, views


class PairedTimer(L.Callback):
    """Times each Lightning step and, right after it on the same batch, the same step by hand (part by part),
    the floor and the floor with the heads, so that the four are measured in one machine state (a shared or
    throttled CPU drifts by tens of percent between minutes). The inserted work is taken out of the interval
    between batch starts."""

    scaler: torch.amp.GradScaler  # the by-hand step's, made for the trainer's device when fitting starts

    def __init__(self, precision: str) -> None:
        self.precision = precision
        self.starts: list[float] = []
        self.inserted: list[float] = []
        self.parts: list[dict[str, float]] = []
        self.floors: list[float] = []
        self.heads: list[float] = []

    def on_fit_start(self, trainer: L.Trainer, model: L.LightningModule) -> None:
        device = trainer.strategy.root_device
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.precision == "16-mixed")

    def on_train_batch_start(self, trainer: L.Trainer, *args: Any) -> None:
        _wait(trainer.strategy.root_device)
        self.starts.append(time.perf_counter())

    def on_train_batch_end(
        self, trainer: L.Trainer, model: L.LightningModule, outputs: Any, batch: Any, batch_index: int
    ) -> None:
        device = trainer.strategy.root_device
        _wait(device)
        begin = time.perf_counter()
        optimizer = trainer.optimizers[0]
        parts, views = by_hand_step(model, optimizer, self.scaler, batch, batch_index, self.precision)  # type: ignore[arg-type]
        marks = [time.perf_counter()]
        for work in (floor_work, floor_with_heads_work):
            work(model, views, self.precision, device)  # type: ignore[arg-type]
            _wait(device)
            marks.append(time.perf_counter())
        self.parts.append(parts)
        self.floors.append(marks[1] - marks[0])
        self.heads.append(marks[2] - marks[1])
        self.inserted.append(marks[2] - begin)

    def summary(self, warmup: int) -> dict[str, Any]:
        """Medians after `warmup` steps: of the Lightning step (the interval to the next batch start less the
        work inserted after it; the last step has no next start), of the floor and of each by-hand part, and
        of the per-step ratios."""
        starts = self.starts[warmup:]
        steps = [b - a - inserted for a, b, inserted in zip(starts, starts[1:], self.inserted[warmup:])]
        end = warmup + len(steps)
        floors, heads, parts = self.floors[warmup:end], self.heads[warmup:end], self.parts[warmup:end]
        by_hand = [sum(p.values()) for p in parts]

        def median_ratio(top: list[float], bottom: list[float]) -> float:
            return statistics.median(a / b for a, b in zip(top, bottom))

        return {
            "step": statistics.median(steps),
            "floor": statistics.median(floors),
            "ratio": median_ratio(steps, floors),
            "by_hand_ratio": median_ratio(by_hand, floors),
            "lightning_ratio": median_ratio(steps, by_hand),
            "heads_ratio": median_ratio(heads, floors),
            "parts": {part: statistics.median(p[part] for p in parts) for part in PARTS},
        }


def measure(config: Config, name: str, args: argparse.Namespace) -> dict[str, Any]:
    """Medians of the Lightning step, the floor and the by-hand parts, and medians of the per-step ratios."""
    images = args.batch_size * (args.steps + args.warmup + 2)
    data = load_dataset(
        config.data.name, config.data.dir, "train", subset=images, image_size=config.data.image_size
    )
    precision = training_precision(config)
    torch.manual_seed(0)
    model = build_method(config, info=data.info, steps_per_epoch=len(data) // args.batch_size)
    loader = DataLoader(
        data, batch_size=args.batch_size, shuffle=True, drop_last=True, num_workers=args.num_workers
    )
    timer = PairedTimer(precision)
    trainer = L.Trainer(
        max_steps=args.steps + args.warmup + 1,
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
    return {
        "name": name,
        "views": 2 + config.data.local_views,
        "precision": precision,
        **timer.summary(args.warmup),
    }


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10, help="timed steps (default: %(default)s)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=256, help="default: %(default)s")
    parser.add_argument(
        "--num-workers",
        type=int,
        default=0,
        help="loader processes (default: %(default)s; images that need decoding want some)",
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=3,
        help="measure each config this many times, one row each (default: %(default)s)",
    )
    parser.add_argument("--output", default="throughput.md", help="file name under benchmarks/results/")
    parser.add_argument(
        "overrides",
        nargs="*",
        metavar="key=value",
        help="config overrides for both configs (the batch size is --batch-size's)",
    )
    args = parser.parse_args(argv)
    for name, least in (("steps", 1), ("warmup", 0), ("repeats", 1), ("batch_size", 2)):
        if getattr(args, name) < least:
            parser.error(f"--{name.replace('_', '-')} must be at least {least}, got {getattr(args, name)}")
    base = [*args.overrides, f"data.batch_size={args.batch_size}", "trainer.max_epochs=1"]
    quick = load_config("fashion-mnist/matrix_ssl", base)
    two_view = load_config("fashion-mnist/matrix_ssl", [*base, "data.local_views=0"])
    configs = [
        (quick, f"quick config ({quick.data.local_views} local views)"),
        (two_view, "two-view config (data.local_views=0)"),
    ]
    repeats = [[measure(config, name, args) for config, name in configs] for _ in range(args.repeats)]
    summary = [
        "| config | repeat | views | images/s | step (ms) | floor (ms) | step / floor | by-hand step / floor "
        "| Lightning step / by-hand step | floor with heads / floor |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ] + [
        f"| {r['name']} | {index + 1} | {r['views']} | {args.batch_size / r['step']:.0f} | {1e3 * r['step']:.0f} | "
        f"{1e3 * r['floor']:.0f} | **{r['ratio']:.2f}** | {r['by_hand_ratio']:.2f} | {r['lightning_ratio']:.2f} | "
        f"{r['heads_ratio']:.2f} |"
        for column in range(len(configs))
        for index, r in enumerate(result[column] for result in repeats)
    ]
    results = repeats[-1]
    breakdown = [
        f"| part of the step (by hand, repeat {args.repeats}) | "
        + " | ".join(r["name"] for r in results)
        + " |"
    ]
    breakdown.append("|---|" + "---|" * len(results))
    for part in PARTS:
        cells = [
            f"{1e3 * r['parts'][part]:.0f} ms ({r['parts'][part] / sum(r['parts'].values()):.0%})"
            for r in results
        ]
        breakdown.append(f"| {part} | " + " | ".join(cells) + " |")
    breakdown.append(
        "| sum of the parts | "
        + " | ".join(f"{1e3 * sum(r['parts'].values()):.0f} ms" for r in results)
        + " |"
    )
    m = quick.model
    text = (
        header("Training step against its floor")
        + f"Matrix-SSL, {m.backbone} ({m.stem} stem) width {m.width}, blocks/stage {m.blocks_per_stage}, "
        f"{quick.data.name}, batch {args.batch_size}, precision {results[0]['precision']}, channels_last "
        f"{m.channels_last}; medians over {args.steps} steps after {args.warmup} warm-up steps. Right after each "
        "Lightning step, on the same batch: the same step by hand (the parts below), the floor (backbone "
        "forward+backward on every view plus the teacher backbone's forward on the two global views, same batch "
        "shapes and precision), and the floor with heads (plus the projector and predictor forward and backward "
        "on every view and the teacher's projector on the two global views: what a step costs if views, loss, "
        "probe, optimiser and Lightning were free). Every ratio is the median of the per-step ratios. The Lightning "
        "step is the interval between batch starts, so it also holds the loader's fetch of the next batch.\n\n"
        + "\n".join(summary)
        + "\n\n"
        + "\n".join(breakdown)
        + "\n"
    )
    return write(args.output, text)


if __name__ == "__main__":
    main()

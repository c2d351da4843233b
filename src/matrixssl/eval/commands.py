"""`matrixssl linear | knn | finetune | rank | export`: evaluate a pretraining checkpoint.

Register them with `add_eval_commands(subparsers)`. Each command reads a checkpoint written by `matrixssl
pretrain` (its config and dataset come with it; `key=value` overrides such as `data.dir=...` go on top), prints a
small table and writes `metrics.json` under `--output` (default `<run dir>/eval/<command>/`): `linear`, `knn` and
`finetune` into a sub-folder named after their settings (`lars`, `sgd_lr0.05`, `fraction0.01`), so a result is
never overwritten by one made under other settings; `export` writes the weights file it is given. User
mistakes raise MatrixSSLError: the main CLI prints one line and exits with 2.
"""

from __future__ import annotations

import argparse
import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from matrixssl.errors import MatrixSSLError
from matrixssl.eval.export import FORMATS
from matrixssl.eval.probe import OPTIMIZERS
from matrixssl.runtime import resolve_device, seed_everything, write_json

if TYPE_CHECKING:  # the checkpoint loader pulls in Lightning and kornia: only when a command runs
    from matrixssl.data import ImageDataset
    from matrixssl.eval.checkpoint import Pretrained

WIDE_KNN_K = 200  # reported next to the run's own k, as in the kNN literature
FEATURE_CACHE = "features.pt"
# LARS's learning rate for the probe, measured on the quick run's checkpoints (README): the trust ratio makes
# LARS's steps far smaller than SGD's at the same lr, so the MEC recipe's 0.03 (for batch 4096 on ImageNet)
# leaves a 30-epoch probe far from converged. Like SGD's default it does not scale with the batch size,
# which measured better than scaling it.
LARS_LR = 3.0


def _add_checkpoint(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", type=Path, help="a checkpoint written by `matrixssl pretrain`")
    parser.add_argument(
        "overrides",
        nargs="*",
        metavar="key=value",
        help="dotted overrides of the checkpoint's config, e.g. data.dir=/data/fashion-mnist",
    )
    parser.add_argument("--output", type=Path, help="output folder (default: <run dir>/eval/<command>/)")
    parser.add_argument("--seed", type=int, default=0, help="seed of shuffling, augmentation and subsets")


def add_eval_commands(subparsers: Any) -> None:
    """Register `linear`, `knn`, `finetune`, `rank` and `export` on an argparse subparsers object."""
    linear = subparsers.add_parser(
        "linear",
        help="offline linear probe on frozen backbone features",
        description="BatchNorm (no affine) + linear classifier on frozen backbone features, cosine schedule. "
        "Without --augment the features are computed once and cached in the output folder.",
    )
    _add_checkpoint(linear)
    linear.add_argument("--epochs", type=int, help="default: the checkpoint's eval.linear_epochs")
    linear.add_argument(
        "--lr",
        type=float,
        help=f"default: the checkpoint's eval.linear_lr for sgd, {LARS_LR} for lars",
    )
    linear.add_argument("--optimizer", default="sgd", help=f"{' or '.join(OPTIMIZERS)} (default: sgd)")
    linear.add_argument("--batch-size", type=int, default=256, help="default: %(default)s")
    linear.add_argument(
        "--augment",
        action="store_true",
        help="random crops/flips of the training images through the frozen backbone, every epoch",
    )
    linear.set_defaults(run=run_linear)

    knn = subparsers.add_parser(
        "knn",
        help="weighted kNN on L2-normalised frozen features",
        description="Weighted k-nearest-neighbour classification (Wu et al., 2018).",
    )
    _add_checkpoint(knn)
    knn.add_argument(
        "--k", type=int, nargs="+", help=f"neighbours (default: the checkpoint's eval.knn_k and {WIDE_KNN_K})"
    )
    knn.add_argument("--temperature", type=float, help="default: the checkpoint's eval.knn_temperature")
    knn.set_defaults(run=run_knn)

    finetune = subparsers.add_parser(
        "finetune",
        help="semi-supervised fine-tuning on a class-balanced fraction of the labels",
        description="Fine-tune backbone + linear head on a class-balanced labelled subset (fixed by --seed) with "
        "random crops/flips, Nesterov SGD and a cosine schedule; tested on the full test split.",
    )
    _add_checkpoint(finetune)
    finetune.add_argument("--fraction", type=float, default=0.01, help="in (0, 1], e.g. 0.01 or 0.1")
    finetune.add_argument("--epochs", type=int, default=30, help="default: %(default)s")
    finetune.add_argument("--lr", type=float, help="default: 0.05 x batch/256 (SimCLR's recipe)")
    finetune.add_argument("--batch-size", type=int, default=256, help="default: %(default)s")
    finetune.add_argument("--weight-decay", type=float, default=0.0, help="default: %(default)s")
    finetune.set_defaults(run=run_finetune)

    rank = subparsers.add_parser(
        "rank",
        help="effective rank and RankMe of features and embeddings, spectrum and 2-D map pictures",
        description="Effective rank of the covariance and RankMe (Garrido et al., 2023) of the backbone features "
        "and projector embeddings of the training split; eigenvalue spectrum PNG; a 2-D map of the test "
        "features coloured by class (UMAP when umap-learn is installed, otherwise PCA).",
    )
    _add_checkpoint(rank)
    rank.add_argument("--map-points", type=int, default=5000, help="test images on the map (default: 5000)")
    rank.set_defaults(run=run_rank)

    export = subparsers.add_parser(
        "export",
        help="write the backbone for transfer (torchvision state dict or detectron2 weights)",
        description="torchvision: a ResNet state dict without fc, for torch.load + load_state_dict. detectron2: "
        "MoCo's pickled weights layout for the COCO detection recipe (docs/transfer.md).",
    )
    export.add_argument("checkpoint", type=Path, help="a checkpoint written by `matrixssl pretrain`")
    export.add_argument("out", type=Path, help="file to write, e.g. backbone.pth or backbone.pkl")
    export.add_argument(
        "--format", default="torchvision", help=f"{' or '.join(FORMATS)} (default: torchvision)"
    )
    export.set_defaults(run=run_export)


# --- shared steps ----------------------------------------------------------------------------------------


def _positive(**values: float) -> None:
    for name, value in values.items():
        if not value > 0:
            raise MatrixSSLError(f"--{name.replace('_', '-')} must be positive, got {value}")


def _check_batch_size(batch_size: int) -> None:
    if batch_size < 2:
        raise MatrixSSLError(
            f"--batch-size must be at least 2 (BatchNorm needs two samples), got {batch_size}"
        )


def _load(args: argparse.Namespace) -> Pretrained:
    from matrixssl.eval.checkpoint import load_pretrained

    return load_pretrained(args.checkpoint, args.overrides).to(resolve_device())


def _splits(pretrained: Pretrained) -> tuple[ImageDataset, ImageDataset]:
    """(labelled training split, test split) of the checkpoint's dataset."""
    from matrixssl.data import splits_for

    _, labelled, test = splits_for(pretrained.config.data)
    return labelled, test


def _extract(pretrained: Pretrained, dataset: ImageDataset) -> tuple[Tensor, Tensor]:
    from matrixssl.eval.features import extract_features

    return extract_features(
        pretrained.backbone,
        dataset,
        pretrained.eval_transform,
        device=resolve_device(),
        num_workers=pretrained.config.data.num_workers,
    )


def _fingerprint(pretrained: Pretrained, splits: Sequence[ImageDataset]) -> dict[str, Any]:
    """What the cached features depend on: the checkpoint file, the data options and the splits' labels."""
    stat = pretrained.path.stat()
    data = pretrained.config.data
    return {
        "checkpoint": str(pretrained.path.resolve()),
        "checkpoint_size": stat.st_size,
        "checkpoint_mtime_ns": stat.st_mtime_ns,
        "data": [
            data.name,
            str(Path(data.dir).expanduser().resolve()),
            data.subset,
            data.image_size,
            data.test_split,
        ],
        "splits": [[len(s), hashlib.sha256(s.labels.numpy().tobytes()).hexdigest()] for s in splits],
    }


def cached_features(
    pretrained: Pretrained, labelled: ImageDataset, test: ImageDataset, cache: Path
) -> tuple[tuple[Tensor, Tensor], tuple[Tensor, Tensor], bool]:
    """(train features, labels), (test features, labels) and whether they came from `cache`.

    The cache is reused only when the checkpoint file and the data are unchanged; otherwise it is rewritten.
    """
    fingerprint = _fingerprint(pretrained, (labelled, test))
    if cache.is_file():
        try:
            stored = torch.load(cache, map_location="cpu", weights_only=True)
            if stored["fingerprint"] == fingerprint:
                return stored["train"], stored["test"], True
        except Exception:  # noqa: BLE001 - an unreadable cache is simply recomputed
            pass
    train, test_features = _extract(pretrained, labelled), _extract(pretrained, test)
    cache.parent.mkdir(parents=True, exist_ok=True)
    temporary = cache.with_name(f".{cache.name}.tmp")
    torch.save({"fingerprint": fingerprint, "train": train, "test": test_features}, temporary)
    temporary.replace(cache)
    return train, test_features, False


def _output(args: argparse.Namespace, pretrained: Pretrained, command: str) -> Path:
    output: Path = args.output or pretrained.run_dir / "eval" / command
    output.mkdir(parents=True, exist_ok=True)
    return output


def settings_name(first: str, chosen: dict[str, Any], defaults: dict[str, Any]) -> str:
    """The folder of one evaluation setting: `first`, then each setting that differs from its default, e.g.
    settings_name("lars", {"lr": 0.1, "augment": True}, {"lr": 0.3, "augment": False}) -> "lars_lr0.1_augment"."""
    parts = [first]
    for key, value in chosen.items():
        if value == defaults.get(key):
            continue
        if isinstance(value, bool):
            parts.append(key if value else f"no-{key}")
        elif isinstance(value, float):
            parts.append(f"{key}{value:g}")
        else:
            parts.append(f"{key}{value}")
    return "_".join(parts)


def _finish(
    command: str, pretrained: Pretrained, output: Path, metrics: dict[str, Any], shown: Sequence[str]
) -> int:
    """Write metrics.json (with the checkpoint's identity) and print the `shown` metrics as a table."""

    record = {
        "command": command,
        "checkpoint": str(pretrained.path),
        "checkpoint_epoch": pretrained.epoch,
        "checkpoint_step": pretrained.global_step,
        "method": pretrained.config.loss.method,
        "dataset": pretrained.config.data.name,
        **metrics,
    }
    write_json(output / "metrics.json", record)
    _print_table(f"{command}: {record['method']} on {record['dataset']}", {k: metrics[k] for k in shown})
    print(f"-> {output / 'metrics.json'}")
    return 0


def _print_table(title: str, rows: dict[str, Any]) -> None:
    width = max(len(key) for key in rows)
    print(title)
    for key, value in rows.items():
        print(f"  {key:<{width}}  {value:.2f}" if isinstance(value, float) else f"  {key:<{width}}  {value}")


def _class_names(dataset: str) -> tuple[str, ...] | None:
    """The dataset's class names for legends, None where the registry has none (class indices are shown)."""
    from matrixssl.data import class_names

    return class_names(dataset)


# --- commands --------------------------------------------------------------------------------------------


def run_linear(args: argparse.Namespace) -> int:
    from matrixssl.eval.augment import crop_flip, image_batch
    from matrixssl.eval.probe import linear_probe

    if args.optimizer not in OPTIMIZERS:
        raise MatrixSSLError(f"--optimizer must be {' or '.join(OPTIMIZERS)}, got {args.optimizer!r}")
    pretrained = _load(args)
    config = pretrained.config
    epochs = config.eval.linear_epochs if args.epochs is None else args.epochs
    default_lr = config.eval.linear_lr if args.optimizer == "sgd" else LARS_LR
    lr = default_lr if args.lr is None else args.lr
    _positive(epochs=epochs, lr=lr)
    _check_batch_size(args.batch_size)
    folder = _output(args, pretrained, "linear")
    chosen = {
        "lr": lr,
        "epochs": epochs,
        "batch": args.batch_size,
        "augment": args.augment,
        "seed": args.seed,
    }
    defaults = {
        "lr": default_lr,
        "epochs": config.eval.linear_epochs,
        "batch": 256,
        "augment": False,
        "seed": 0,
    }
    output = folder / settings_name(args.optimizer, chosen, defaults)
    labelled, test = _splits(pretrained)
    # One feature cache for every setting: the features do not depend on the probe.
    (train_features, train_labels), (test_features, test_labels), reused = cached_features(
        pretrained, labelled, test, folder / FEATURE_CACHE
    )
    train_batch = None
    if args.augment:
        seed_everything(args.seed)
        augment = crop_flip(pretrained.views)

        @torch.no_grad()
        def train_batch(index: Tensor) -> Tensor:
            images = image_batch(labelled, index).to(resolve_device())
            return pretrained.backbone(augment(images)).float().cpu()

    result = linear_probe(
        train_features,
        train_labels,
        test_features,
        test_labels,
        epochs=epochs,
        lr=lr,
        batch_size=args.batch_size,
        seed=args.seed,
        optimizer=args.optimizer,
        train_batch=train_batch,
    )
    metrics = {
        "linear_top1": round(result.test_top1, 2),
        "linear_train_top1": round(result.train_top1, 2),
        "optimizer": args.optimizer,
        "lr": lr,
        "epochs": epochs,
        "batch_size": args.batch_size,
        "augment": args.augment,
        "features_from_cache": reused,
        "feature_dim": int(train_features.shape[1]),
        "train_images": int(train_features.shape[0]),
        "test_images": int(test_features.shape[0]),
    }
    return _finish(
        "linear", pretrained, output, metrics, ["linear_top1", "linear_train_top1", "features_from_cache"]
    )


def run_knn(args: argparse.Namespace) -> int:
    from matrixssl.eval.knn import knn_accuracy

    pretrained = _load(args)
    settings = pretrained.config.eval
    ks = args.k or sorted({settings.knn_k, WIDE_KNN_K})
    temperature = settings.knn_temperature if args.temperature is None else args.temperature
    _positive(k=min(ks), temperature=temperature)
    name = "_".join(f"k{k}" for k in ks)
    chosen, defaults = {"t": temperature}, {"t": settings.knn_temperature}
    output = _output(args, pretrained, "knn") / settings_name(name, chosen, defaults)
    labelled, test = _splits(pretrained)
    train_features, train_labels = _extract(pretrained, labelled)
    test_features, test_labels = _extract(pretrained, test)
    metrics: dict[str, Any] = {
        f"knn_top1_k{k}": round(
            knn_accuracy(train_features, train_labels, test_features, test_labels, k, temperature), 2
        )
        for k in ks
    }
    metrics.update({"temperature": temperature, "train_images": len(labelled), "test_images": len(test)})
    return _finish("knn", pretrained, output, metrics, [f"knn_top1_k{k}" for k in ks])


def run_finetune(args: argparse.Namespace) -> int:
    from matrixssl.eval.finetune import balanced_subset, finetune

    if not 0 < args.fraction <= 1:
        raise MatrixSSLError(f"--fraction must be in (0, 1], e.g. 0.01 or 0.1; got {args.fraction}")
    default_lr = 0.05 * args.batch_size / 256
    lr = default_lr if args.lr is None else args.lr
    _positive(epochs=args.epochs, lr=lr)
    _check_batch_size(args.batch_size)
    pretrained = _load(args)
    chosen = {
        "lr": lr,
        "epochs": args.epochs,
        "batch": args.batch_size,
        "wd": args.weight_decay,
        "seed": args.seed,
    }
    defaults = {"lr": default_lr, "epochs": 30, "batch": 256, "wd": 0.0, "seed": 0}
    name = settings_name(f"fraction{args.fraction:g}", chosen, defaults)
    output = _output(args, pretrained, "finetune") / name
    labelled, test = _splits(pretrained)
    subset = balanced_subset(labelled.labels, args.fraction, args.seed)
    result = finetune(
        pretrained,
        labelled,
        test,
        subset,
        epochs=args.epochs,
        lr=lr,
        batch_size=args.batch_size,
        weight_decay=args.weight_decay,
        seed=args.seed,
        device=resolve_device(),
    )
    per_class = torch.bincount(labelled.labels[subset])
    metrics = {
        "finetune_top1": round(result.test_top1, 2),
        "finetune_train_top1": round(result.train_top1, 2),
        "fraction": args.fraction,
        "seed": args.seed,
        "labelled_images": int(subset.numel()),
        "images_per_class": int(per_class[per_class > 0].min()),
        "epochs": args.epochs,
        "lr": lr,
        "batch_size": args.batch_size,
        "test_images": len(test),
    }
    return _finish("finetune", pretrained, output, metrics, ["finetune_top1", "labelled_images"])


def run_rank(args: argparse.Namespace) -> int:
    from matrixssl.eval.rank import embedding_2d, rank_metrics
    from matrixssl.plots import covariance_spectrum, plot_embedding_map, plot_spectra

    _positive(map_points=args.map_points)
    pretrained = _load(args)
    output = _output(args, pretrained, "rank")
    labelled, test = _splits(pretrained)
    features, _ = _extract(pretrained, labelled)
    with torch.no_grad():
        embeddings = torch.cat(
            [pretrained.projector(chunk.to(resolve_device())).float().cpu() for chunk in features.split(4096)]
        )
    metrics: dict[str, Any] = {}
    for name, values in (("backbone", features), ("projector", embeddings)):
        metrics.update({f"{name}_{key}": value for key, value in rank_metrics(values).items()})
    test_features, test_labels = _extract(pretrained, test)
    shown = torch.randperm(len(test_labels), generator=torch.Generator().manual_seed(args.seed))
    shown = shown[: args.map_points]
    points, map_method = embedding_2d(test_features[shown], seed=args.seed)
    plots = {
        "spectrum": str(
            plot_spectra(
                {
                    "backbone features": covariance_spectrum(features),
                    "projector embeddings": covariance_spectrum(embeddings),
                },
                output / "spectrum.png",
            )
        ),
        "embedding_map": str(
            plot_embedding_map(
                points,
                test_labels[shown],
                output / "embedding_map.png",
                title=f"{pretrained.config.loss.method}: test features ({map_method.upper()})",
                class_names=_class_names(pretrained.config.data.name),
            )
        ),
    }
    metrics.update({"embedding_map_method": map_method, "train_images": len(labelled), "plots": plots})
    keys = ("effective_rank", "rankme", "dim")
    return _finish(
        "rank", pretrained, output, metrics, [f"{n}_{k}" for n in ("backbone", "projector") for k in keys]
    )


def run_export(args: argparse.Namespace) -> int:
    import sys

    from matrixssl.eval.checkpoint import load_pretrained
    from matrixssl.eval.export import check_exportable, export_backbone, torchvision_differences

    if args.format not in FORMATS:
        raise MatrixSSLError(f"--format must be {' or '.join(FORMATS)}, got {args.format!r}")
    pretrained = load_pretrained(args.checkpoint)
    check_exportable(pretrained.config.model.backbone, args.format)
    written = export_backbone(pretrained.backbone, args.format, args.out)
    differences = torchvision_differences(pretrained.backbone)
    if differences:
        target = "torchvision's resnet" if args.format == "torchvision" else "detectron2's ResNet"
        print(
            f"warning: this backbone differs from {target} ({'; '.join(differences)}); build the model with the "
            "same changes before loading it",
            file=sys.stderr,
        )
    rows: dict[str, Any] = {**written, "backbone": pretrained.config.model.backbone}
    if args.format == "detectron2":
        rows["MODEL.PIXEL_MEAN"] = [round(255 * m, 3) for m in pretrained.views.config.mean]
        rows["MODEL.PIXEL_STD"] = [round(255 * s, 3) for s in pretrained.views.config.std]
        rows["INPUT.FORMAT"] = "RGB"
    _print_table(f"export: {pretrained.config.loss.method} backbone", rows)
    return 0

"""Reference rows for the main job: linear probe and kNN on raw pixels and on the untrained backbone.

A learnt representation is only worth something if it beats both. Same evaluation code and settings as
`matrixssl pretrain` (BatchNorm + linear probe on frozen features, weighted kNN k=20, T=0.07).

    python benchmarks/baselines.py [key=value overrides of the pretraining config]
"""

from __future__ import annotations

import sys

import torch
from _report import header, write

from matrixssl.config import load_config
from matrixssl.eval.features import extract_features
from matrixssl.eval.report import evaluate_features
from matrixssl.methods import method_class
from matrixssl.train import dataset_info, load_splits


def main() -> None:
    config = load_config(None, sys.argv[1:])
    torch.manual_seed(config.trainer.seed)
    pretrain_set, labelled, test = load_splits(config)
    train_images, train_labels = labelled.as_tensors()
    test_images, test_labels = test.as_tensors()
    rows = []
    raw = evaluate_features(
        train_images.flatten(1).float() / 255,
        train_labels,
        test_images.flatten(1).float() / 255,
        test_labels,
        config.eval,
    )
    rows.append(("raw pixels", raw))
    model = method_class(config.loss.method)(config, dataset_info(pretrain_set), steps_per_epoch=1)
    transform = model.views.eval_transform
    random_train = extract_features(model.backbone, labelled, transform)
    random_test = extract_features(model.backbone, test, transform)
    rows.append(
        ("untrained backbone (random weights)", evaluate_features(*random_train, *random_test, config.eval))
    )
    lines = [
        f"Dataset {config.data.name}: probe trained on {len(labelled)} images, tested on {len(test)}; "
        f"backbone {config.model.backbone} width {config.model.width}, blocks/stage {config.model.blocks_per_stage}.",
        "",
        "| features | dim | linear top-1 (%) | kNN top-1 (%) | effective rank |",
        "|---|---|---|---|---|",
    ]
    for name, report in rows:
        lines.append(
            f"| {name} | {report['feature_dim']} | {report['linear_top1']:.2f} | {report['knn_top1']:.2f} | "
            f"{report['feature_effective_rank']:.1f} |"
        )
    write(f"{config.data.name}_baselines.md", header("Reference baselines") + "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()

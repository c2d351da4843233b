"""Reference rows every learnt representation must beat: raw pixels and the same backbone untrained.

Same evaluation as `matrixssl pretrain` (BatchNorm + linear probe on frozen features, weighted kNN), so the
figures are directly comparable with a run's metrics.json.
"""

from __future__ import annotations

from typing import Any

from matrixssl.config import Config
from matrixssl.data import splits_for
from matrixssl.eval.features import extract_features
from matrixssl.eval.report import evaluate_features
from matrixssl.methods import build_method
from matrixssl.runtime import seed_everything


def reference_baselines(config: Config) -> dict[str, dict[str, Any]]:
    """{"raw pixels": report, "random weights": report} for the configured dataset and backbone."""
    seed_everything(config.trainer.seed)
    pretrain_set, labelled, test = splits_for(config.data)
    train_images, train_labels = labelled.as_tensors()
    test_images, test_labels = test.as_tensors()
    raw = evaluate_features(
        train_images.flatten(1).float() / 255,
        train_labels,
        test_images.flatten(1).float() / 255,
        test_labels,
        config.eval,
    )
    model = build_method(config, info=pretrain_set.info, steps_per_epoch=1)
    transform = model.views.eval_transform
    untrained = evaluate_features(
        *extract_features(model.backbone, labelled, transform),
        *extract_features(model.backbone, test, transform),
        config.eval,
    )
    return {"raw pixels": raw, "random weights": untrained}

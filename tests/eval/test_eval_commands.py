"""Every evaluation command end to end on one tiny pretraining checkpoint (tiny synthetic IDX data).

What is checked is behaviour: exit codes, metrics.json keys and ranges, that the CLI's numbers equal the library
functions' on independently extracted features, the feature cache, the exported tensors, and one-line errors.
"""

from __future__ import annotations

import json
import os
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from conftest import TINY, mnist_like, override, write_idx_split

import matrixssl.data
import matrixssl.eval.features as features_module
import matrixssl.plots
from matrixssl.cli import main
from matrixssl.eval.checkpoint import load_pretrained
from matrixssl.eval.commands import LARS_LR
from matrixssl.eval.features import extract_features
from matrixssl.eval.knn import knn_accuracy
from matrixssl.functional import covariance, effective_rank


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One pretraining run per session: 64 training and 32 test images, a width-0.125 ResNet, one epoch."""
    root = tmp_path_factory.mktemp("eval")
    write_idx_split(root / "data" / "fashion-mnist", "train", *mnist_like(64, 0), gz=True)
    write_idx_split(root / "data" / "fashion-mnist", "test", *mnist_like(32, 1), gz=True)
    argv = [
        "pretrain",
        *TINY,
        "trainer.max_epochs=1",
        f"data.dir={root / 'data'}",
        f"output_dir={root / 'run'}",
    ]
    assert main(argv) == 0
    return root / "run" / "checkpoints" / "last.ckpt"


def run(capsys: pytest.CaptureFixture[str], *argv: Any) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def metrics_of(folder: Path) -> dict[str, Any]:
    return json.loads((folder / "metrics.json").read_text())


def frozen_features(checkpoint: Path) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Train/test features computed here, independently of the commands."""
    from matrixssl.data import splits_for

    pretrained = load_pretrained(checkpoint)
    _, labelled, test = splits_for(pretrained.config.data)
    return {
        split: extract_features(pretrained.backbone, dataset, pretrained.eval_transform)
        for split, dataset in (("train", labelled), ("test", test))
    }


@pytest.fixture
def extractions(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts calls of extract_features made by the commands."""
    calls: list[int] = []
    real: Callable[..., Any] = features_module.extract_features

    def counting(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(features_module, "extract_features", counting)
    return calls


def test_linear_probe_caches_features_until_the_checkpoint_changes(
    checkpoint: Path, extractions: list[int], capsys: pytest.CaptureFixture[str]
) -> None:
    folder = checkpoint.parent.parent / "eval" / "linear"  # the default folder
    output = folder / "sgd_epochs3"  # the settings that differ from the defaults name the result's folder
    code, out, _ = run(capsys, "linear", checkpoint, "--epochs", 3)
    assert code == 0 and "linear_top1" in out and f"-> {output / 'metrics.json'}" in out
    first = metrics_of(output)
    assert first["features_from_cache"] is False and len(extractions) == 2
    assert 0 <= first["linear_top1"] <= 100 and 0 <= first["linear_train_top1"] <= 100
    assert (first["feature_dim"], first["train_images"], first["test_images"]) == (64, 64, 32)
    assert (first["optimizer"], first["lr"], first["epochs"], first["augment"]) == ("sgd", 0.1, 3, False)
    assert first["command"] == "linear" and first["method"] == "matrix_ssl" and first["checkpoint_step"] == 4
    cache = folder / "features.pt"  # shared by every setting
    written = cache.stat().st_mtime_ns

    assert run(capsys, "linear", checkpoint, "--epochs", 3)[0] == 0
    second = metrics_of(output)
    assert len(extractions) == 2 and cache.stat().st_mtime_ns == written  # nothing recomputed
    assert second["features_from_cache"] is True and second["linear_top1"] == first["linear_top1"]

    stat = checkpoint.stat()
    os.utime(checkpoint, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # a rewritten checkpoint
    assert run(capsys, "linear", checkpoint, "--epochs", 3)[0] == 0
    assert len(extractions) == 4 and metrics_of(output)["features_from_cache"] is False


def test_linear_probe_with_augmentation_and_lars(
    checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["linear", checkpoint, "--augment", "--optimizer", "lars", "--epochs", 2, "--output", tmp_path]
    assert run(capsys, *argv)[0] == 0
    metrics = metrics_of(tmp_path / "lars_augment")  # 2 epochs: the checkpoint's eval.linear_epochs
    assert metrics["augment"] is True and metrics["optimizer"] == "lars"
    assert metrics["lr"] == pytest.approx(LARS_LR)
    assert 0 <= metrics["linear_top1"] <= 100


def test_each_linear_setting_keeps_its_own_result(
    checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for argv in ([], ["--optimizer", "lars"], ["--optimizer", "lars", "--lr", 0.5, "--batch-size", 32]):
        assert run(capsys, "linear", checkpoint, "--output", tmp_path, *argv)[0] == 0
    results = {path.parent.name: json.loads(path.read_text()) for path in tmp_path.glob("*/metrics.json")}
    assert sorted(results) == ["lars", "lars_lr0.5_batch32", "sgd"]
    assert [results[name]["optimizer"] for name in sorted(results)] == ["lars", "lars", "sgd"]
    assert results["lars"]["lr"] == pytest.approx(LARS_LR) and results["sgd"]["lr"] == pytest.approx(0.1)
    assert results["lars_lr0.5_batch32"]["batch_size"] == 32
    assert [path.name for path in tmp_path.glob("*.pt")] == ["features.pt"]  # one cache for all of them


def test_knn_equals_the_library_on_the_same_features(
    checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(capsys, "knn", checkpoint, "--output", tmp_path)
    assert code == 0 and "knn_top1_k200" in out
    metrics = metrics_of(tmp_path / "k20_k200")
    features = frozen_features(checkpoint)
    for k in (20, 200):
        expected = knn_accuracy(*features["train"], *features["test"], k=k, temperature=0.07)
        assert metrics[f"knn_top1_k{k}"] == round(expected, 2)
    assert metrics["temperature"] == 0.07 and metrics["train_images"] == 64


def test_finetune_on_a_class_balanced_subset(
    checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["finetune", checkpoint, "--fraction", 0.1, "--epochs", 2, "--output", tmp_path]
    assert run(capsys, *argv)[0] == 0
    metrics = metrics_of(tmp_path / "fraction0.1_epochs2")
    # 64 images of 10 classes: round(0.1 * 64 / 10) = 1 image from each class.
    assert metrics["labelled_images"] == 10 and metrics["images_per_class"] == 1
    assert 0 <= metrics["finetune_top1"] <= 100 and metrics["test_images"] == 32
    assert metrics["lr"] == pytest.approx(0.05) and metrics["seed"] == 0


def test_rank_reports_ranks_and_draws_the_pictures(
    checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(capsys, "rank", checkpoint, "--output", tmp_path)[0] == 0
    metrics = metrics_of(tmp_path)
    assert (metrics["backbone_dim"], metrics["projector_dim"]) == (64, 16)
    for name in ("backbone", "projector"):
        for key in ("effective_rank", "rankme"):
            assert 1.0 <= metrics[f"{name}_{key}"] <= metrics[f"{name}_dim"]
    train_features, _ = frozen_features(checkpoint)["train"]
    expected = float(effective_rank(covariance(train_features.double())))
    assert metrics["backbone_effective_rank"] == pytest.approx(expected, abs=1e-4)
    assert metrics["embedding_map_method"] == "pca"  # umap-learn is not installed here
    for picture in ("spectrum.png", "embedding_map.png"):
        assert (tmp_path / picture).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_embedding_maps_legend_names_the_classes(
    checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    names = matrixssl.data.class_names("fashion-mnist")  # the checkpoint's dataset
    assert names is not None
    legends: dict[str, list[str]] = {}
    real_save = matrixssl.plots.save_figure

    def recording(plt: Any, figure: Any, out: Path) -> Path:
        shown = [axis.get_legend() for axis in figure.axes if axis.get_legend() is not None]
        legends[out.name] = [text.get_text() for legend in shown for text in legend.get_texts()]
        return real_save(plt, figure, out)

    monkeypatch.setattr(matrixssl.plots, "save_figure", recording)
    assert run(capsys, "rank", checkpoint, "--output", tmp_path)[0] == 0
    labels = set(matrixssl.data.splits_for(load_pretrained(checkpoint).config.data)[2].labels.tolist())
    assert legends["embedding_map.png"] == [names[label] for label in sorted(labels)]


def test_export_writes_the_checkpoints_backbone(
    checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    saved = torch.load(checkpoint, weights_only=True)["state_dict"]
    backbone = {k.removeprefix("backbone."): v for k, v in saved.items() if k.startswith("backbone.")}
    code, _, err = run(capsys, "export", checkpoint, tmp_path / "tv.pth", "--format", "torchvision")
    assert code == 0 and "width 0.125" in err  # not torchvision's network
    assert "small stem (3x3 conv1 with stride 2" in err
    exported = torch.load(tmp_path / "tv.pth", weights_only=True)
    assert exported.keys() == backbone.keys() and all(torch.equal(exported[k], backbone[k]) for k in backbone)

    code, out, _ = run(capsys, "export", checkpoint, tmp_path / "d2.pkl", "--format", "detectron2")
    assert code == 0 and "[72.93]" in out  # MODEL.PIXEL_MEAN: 255 x Fashion-MNIST's mean 0.286
    with open(tmp_path / "d2.pkl", "rb") as handle:
        weights = pickle.load(handle)["model"]
    np.testing.assert_array_equal(weights["stem.conv1.weight"], backbone["conv1.weight"].numpy())
    np.testing.assert_array_equal(
        weights["res5.0.shortcut.norm.bias"], backbone["layer4.0.downsample.1.bias"].numpy()
    )


def test_bad_input_exits_2_with_one_line(
    checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    override(monkeypatch, "fashion-mnist", system_dir=None)  # the machine's own copy must not be found
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(checkpoint.read_bytes()[:5000])
    foreign = tmp_path / "foreign.ckpt"
    torch.save({"state_dict": {"fc.weight": torch.zeros(2, 2)}}, foreign)
    missing = tmp_path / "missing.ckpt"
    text = tmp_path / "notes.txt"
    text.write_text("epoch 5: loss 1.2\n")
    out = ["--output", tmp_path / "out"]
    cases = [
        (["knn", missing, *out], "does not exist"),
        (["export", missing, tmp_path / "x.pth"], "does not exist"),
        (["linear", truncated, *out], "is corrupt or unreadable"),
        (["linear", text, *out], f"{text} is a text file, not a checkpoint; pass a checkpoint written by"),
        (["rank", foreign, *out], "is not a matrixssl pretraining checkpoint"),
        (["finetune", checkpoint, "--fraction", 0, *out], "--fraction must be in (0, 1]"),
        (["finetune", checkpoint, "--fraction", 1.5, *out], "--fraction must be in (0, 1]"),
        (["finetune", checkpoint, "--fraction=-0.1", *out], "--fraction must be in (0, 1]"),
        (
            ["export", checkpoint, tmp_path / "x.onnx", "--format", "onnx"],
            "--format must be torchvision or detectron2",
        ),
        (["linear", checkpoint, "--optimizer", "adam", *out], "--optimizer must be sgd or lars"),
        (["linear", checkpoint, "--batch-size", 1, *out], "--batch-size must be at least 2"),
        (["knn", checkpoint, "--k", 0, *out], "--k must be positive"),
        (["knn", checkpoint, "model.width=0.25", *out], "does not match the model its config describes"),
        (["knn", checkpoint, "data.nme=1", *out], "unknown config key 'data.nme'"),
        (
            ["knn", checkpoint, f"data.dir={tmp_path / 'nowhere'}", *out],
            "apt-get install dataset-fashion-mnist",
        ),
    ]
    for argv, message in cases:
        code, _, err = run(capsys, *argv)
        assert code == 2, argv
        assert message in err and "Traceback" not in err and err.count("\n") == 1, err


def test_a_checkpoint_with_other_augmentation_state_still_evaluates(
    checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Older versions kept kornia's parameter buffers in the views' state: settings rebuilt from the config,
    # not weights, so evaluation ignores them rather than refusing the checkpoint.
    state = torch.load(checkpoint, weights_only=True)
    state["state_dict"]["views.branches.1.2._param_generator.thresholds"] = torch.zeros(2)
    older = tmp_path / "older.ckpt"
    torch.save(state, older)
    assert run(capsys, "knn", older, "--output", tmp_path / "out")[0] == 0
    state["state_dict"]["backbone.extra.weight"] = torch.zeros(2)  # a weight that does not fit still does not
    torch.save(state, older)
    code, _, err = run(capsys, "knn", older, "--output", tmp_path / "out")
    assert code == 2 and "backbone.extra.weight" in err and "another version of matrixssl" in err

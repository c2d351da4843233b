"""The figures' words: legends that say what a curve is, and no empty legend (nor matplotlib's warning)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

import matrixssl.plots as plots


@pytest.fixture
def legends(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[list[str]]]:
    """For each saved figure (by file name): per axis, its legend's texts, or its other texts when it has none."""
    seen: dict[str, list[list[str]]] = {}
    real = plots.save_figure

    def recording(plt: Any, figure: Any, out: Path) -> Path:
        seen[out.name] = [
            [t.get_text() for t in (axis.get_legend().get_texts() if axis.get_legend() else axis.texts)]
            for axis in figure.axes
        ]
        return real(plt, figure, out)

    monkeypatch.setattr(plots, "save_figure", recording)
    return seen


def test_training_curves_name_the_test_accuracy_and_mark_what_was_not_logged(
    tmp_path: Path, legends: dict[str, list[list[str]]], recwarn: pytest.WarningsRecorder
) -> None:
    log = tmp_path / "metrics.csv"
    log.write_text(
        "epoch,step,train/loss_epoch,train/probe_top1,val/probe_top1\n"
        "0,3,2.5,30.0,\n0,3,,,35.0\n1,7,2.1,45.0,\n1,7,,,50.0\n"
    )
    out = plots.plot_training_curves([log], tmp_path / "training.png")
    assert out.read_bytes()[:4] == b"\x89PNG"
    loss, probe, rank = legends["training.png"]
    assert loss == ["training loss (epoch mean)"]
    assert probe == ["test accuracy", "training accuracy (epoch mean)"]
    assert rank == ["not logged in this run"]  # a short run logs no effective rank: said, not an empty box
    assert not [str(w.message) for w in recwarn]


def test_embedding_map_legend_uses_class_names_when_given(
    tmp_path: Path, legends: dict[str, list[list[str]]]
) -> None:
    points, labels = torch.randn(30, 2), torch.arange(30) % 3
    plots.plot_embedding_map(points, labels, tmp_path / "named.png", class_names=("coat", "bag", "shirt"))
    plots.plot_embedding_map(points, labels, tmp_path / "indices.png")
    assert legends["named.png"] == [["coat", "bag", "shirt"]]
    assert legends["indices.png"] == [["0", "1", "2"]]

"""PNG figures: training curves from the CSV log, and eigenvalue spectra of embedding covariances.

matplotlib is imported inside each function (an optional dependency of the `train` extra) with the Agg backend,
so nothing needs a display.
"""

from __future__ import annotations

import csv
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from matrixssl.functional import covariance


def pyplot():  # noqa: ANN202
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(plt: Any, figure: Any, out: Path) -> Path:
    figure.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=110)
    plt.close(figure)
    return out


def read_epoch_curves(*metrics_csvs: Path) -> dict[str, list[tuple[int, float]]]:
    """Per-epoch series from Lightning's metrics.csv: {column: [(epoch, value), ...]}, the last value per epoch.

    Several files (the log versions of a resumed run, oldest first) make one history."""
    series: dict[str, dict[int, float]] = defaultdict(dict)
    for metrics_csv in metrics_csvs:
        with open(metrics_csv, newline="") as handle:
            for row in csv.DictReader(handle):
                if not row.get("epoch"):
                    continue
                epoch = int(float(row["epoch"]))
                for key, value in row.items():
                    if key not in ("epoch", "step") and value:
                        series[key][epoch] = float(value)
    return {key: sorted(values.items()) for key, values in series.items()}


# Panels of the training figure: (title, [(logged key, legend label), ...]).
TRAINING_PANELS = (
    ("loss", [("train/loss_epoch", "training loss (epoch mean)")]),
    (
        "online probe top-1 (%)",
        [("val/probe_top1", "test accuracy"), ("train/probe_top1", "training accuracy (epoch mean)")],
    ),
    ("effective rank", [("train/effective_rank", "embeddings (teacher's where there is one)")]),
)


def plot_training_curves(metrics_csvs: Sequence[Path], out: Path) -> Path:
    """Loss, online-probe accuracy (on the test split and on the training batches) and effective rank against
    epoch, side by side; a panel without logged values says so."""
    curves = read_epoch_curves(*metrics_csvs)
    plt = pyplot()
    from matplotlib.ticker import MaxNLocator

    figure, axes = plt.subplots(1, len(TRAINING_PANELS), figsize=(4 * len(TRAINING_PANELS), 3.2))
    for axis, (title, series) in zip(axes, TRAINING_PANELS):
        for key, label in series:
            if key in curves:
                epochs, values = zip(*curves[key])
                axis.plot([e + 1 for e in epochs], values, marker="o", label=label)  # counted from 1
        axis.set_title(title)
        axis.set_xlabel("epoch")
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        legend(axis, empty="not logged in this run")
    return save_figure(plt, figure, out)


def legend(axis: Any, empty: str = "nothing to show", **options: Any) -> None:
    """The axis's legend, or, when nothing on it has a label, `empty` written in its middle (matplotlib would
    warn and draw an empty box)."""
    if axis.get_legend_handles_labels()[0]:
        axis.legend(**{"fontsize": 7, **options})
    else:
        axis.text(0.5, 0.5, empty, ha="center", va="center", transform=axis.transAxes, color="grey")


def covariance_spectrum(features: Tensor) -> Tensor:
    """Eigenvalues of the centred covariance, largest first, normalised to sum to one."""
    eigenvalues = torch.linalg.eigvalsh(covariance(features.double())).flip(0).clamp_min(0)
    return eigenvalues / eigenvalues.sum().clamp_min(1e-300)


def plot_spectra(spectra: Mapping[str, Tensor], out: Path, title: str = "covariance spectrum") -> Path:
    """Normalised eigenvalues on a log scale, one line per named representation."""
    plt = pyplot()
    figure, axis = plt.subplots(figsize=(5, 3.5))
    for name, spectrum in spectra.items():
        axis.semilogy(range(1, len(spectrum) + 1), spectrum.clamp_min(1e-12).numpy(), label=name)
    axis.set_xlabel("index")
    axis.set_ylabel("normalised eigenvalue")
    axis.set_title(title)
    legend(axis, fontsize=8)
    return save_figure(plt, figure, out)


def plot_embedding_map(
    points: Tensor,
    labels: Tensor,
    out: Path,
    title: str = "embedding map",
    class_names: Sequence[str] | None = None,
) -> Path:
    """(N, 2) points as a scatter plot coloured by class; a legend, with `class_names` when given (else the
    class indices), when there are at most 20 classes."""
    plt = pyplot()
    classes = labels.unique().tolist()
    colours = plt.get_cmap("tab10" if len(classes) <= 10 else "turbo", len(classes))
    figure, axis = plt.subplots(figsize=(5, 4.5))
    for i, label in enumerate(classes):
        chosen = labels == label
        name = class_names[label] if class_names is not None and 0 <= label < len(class_names) else str(label)
        axis.scatter(*points[chosen].T.numpy(), s=4, alpha=0.7, color=colours(i), label=name)
    axis.set_title(title)
    axis.set_xticks([])
    axis.set_yticks([])
    if len(classes) <= 20:
        legend(axis, markerscale=3, loc="best", title="class")
    return save_figure(plt, figure, out)

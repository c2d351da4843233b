"""`matrixssl bench`: several methods on one dataset, same backbone, budget and seeds, one comparison table.

Each run is `matrixssl pretrain --config configs/<dataset>/<method>.yaml` in its own process, so a crash is
one failed row, not the end of the comparison. Finished runs (metrics.json present) are reused and
interrupted ones resumed, so re-running the same command after an interruption loses nothing.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from matrixssl.errors import MatrixSSLError

SUMMARY_KEYS = ("linear_top1", "knn_top1", "feature_effective_rank")
DEFAULT_EPOCHS = 2


@dataclass
class Run:
    """One (method, seed) pretraining run and what it produced."""

    method: str
    seed: int
    output: Path
    metrics: dict[str, Any] | None = None
    error: str | None = None
    wall_s: float = 0.0
    curves: dict[str, list[tuple[int, float]]] = field(default_factory=dict)


def parse_methods(spec: str, default_seeds: int) -> list[tuple[str, int]]:
    """'matrix_ssl:3,simclr' -> [('matrix_ssl', 3), ('simclr', default_seeds)]."""
    plan = []
    for item in filter(None, (part.strip() for part in spec.split(","))):
        name, _, count = item.partition(":")
        try:
            seeds = int(count) if count else default_seeds
        except ValueError:
            raise MatrixSSLError(
                f"--methods: {item!r} must be NAME or NAME:SEEDS, e.g. matrix_ssl:3"
            ) from None
        if seeds < 1:
            raise MatrixSSLError(f"--methods: {item!r} asks for {seeds} seeds; give at least 1")
        plan.append((name, seeds))
    if not plan:
        raise MatrixSSLError("--methods is empty; name at least one method, e.g. --methods matrix_ssl,simclr")
    return plan


def config_path(configs: Path, dataset: str, method: str) -> Path:
    path = configs / dataset / f"{method}.yaml"
    if not path.is_file():
        available = sorted(p.stem for p in (configs / dataset).glob("*.yaml"))
        raise MatrixSSLError(
            f"no config {path} for method {method!r} on {dataset!r}; available there: {', '.join(available) or 'none'}"
        )
    return path


def budget_overrides(epochs: int, minutes: float | None) -> list[str]:
    """A run's length as config overrides: a wall-clock budget (the run plans its schedules for the steps that
    fit) or an epoch count."""
    if minutes is not None:
        return [f"trainer.max_minutes={minutes:g}"]
    return [f"trainer.max_epochs={epochs}"]


def budget_text(epochs: int, minutes: float | None) -> str:
    if minutes is None:
        return f"{epochs} epochs"
    return (
        f"{minutes:g} minutes of pretraining per run (equal compute: each run times its first steps and "
        "plans its schedules for the steps that fit; the epochs column says how many that was)"
    )


def pretrain_command(config: Path, output: Path, seed: int, overrides: list[str]) -> list[str]:
    command = [
        sys.executable,
        "-m",
        "matrixssl.cli",
        "pretrain",
        "--config",
        str(config),
        f"output_dir={output}",
        f"trainer.seed={seed}",
        "trainer.progress_bar=false",
        *overrides,
    ]
    if (output / "checkpoints" / "last.ckpt").exists():
        command.append("--resume")
    return command


def load_finished(run: Run) -> bool:
    """Fill `run` from its folder (metrics.json, and the curves of every start and resume of its training);
    False when the run has not finished."""
    metrics_file = run.output / "metrics.json"
    if not metrics_file.exists():
        return False
    run.metrics = json.loads(metrics_file.read_text())
    run.wall_s = float(run.metrics.get("wall_time_s", run.wall_s))
    from matrixssl.plots import read_epoch_curves
    from matrixssl.train import log_histories

    histories = log_histories(run.output)
    if histories:
        run.curves = read_epoch_curves(*histories)
    return True


def execute(run: Run, command: list[str], log: Path) -> None:
    """Run one pretraining process (or reuse its finished result); record metrics or the error line."""
    if load_finished(run):
        return
    started = time.perf_counter()
    run.output.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as handle:
        status = subprocess.run(command, stdout=handle, stderr=subprocess.STDOUT, check=False).returncode
    run.wall_s = time.perf_counter() - started
    if status != 0 or not load_finished(run):
        lines = [line for line in log.read_text().splitlines() if line.strip()]
        run.error = f"exit {status}: {lines[-1][:200] if lines else 'no output'} (log: {log})"


def epochs_done(metrics: dict[str, Any]) -> str:
    """Epochs a run trained, fractional for a wall-clock budget that ended inside an epoch."""
    if metrics.get("steps_per_epoch"):
        done = metrics["global_step"] / metrics["steps_per_epoch"]
        return str(int(done)) if done == int(done) else f"{done:.1f}"
    return str(metrics["epochs"])


def mean_std(values: list[float]) -> str:
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}"


def precision_cell(runs: list[Run]) -> str:
    """The precisions the finished runs of one row trained at: seeds may come from machines whose "auto"
    precision differs, and the cell then says so."""
    return ", ".join(
        sorted({str(run.metrics.get("precision", "not recorded")) for run in runs if run.metrics})
    )


def summary_table(runs: list[Run], references: dict[str, dict[str, Any]]) -> str:
    """Markdown: one row per method (mean ± std over its seeds), failures named, reference rows last."""
    lines = [
        "| method | seeds | epochs | precision | wall time / run | linear top-1 (%) | kNN top-1 (%) | effective rank |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for method in dict.fromkeys(run.method for run in runs):
        mine = [run for run in runs if run.method == method]
        done = [run for run in mine if run.metrics is not None]
        if done:
            epochs = sorted({epochs_done(run.metrics) for run in done if run.metrics})
            columns = [
                mean_std([float(run.metrics[key]) for run in done if run.metrics]) for key in SUMMARY_KEYS
            ]
            wall = statistics.mean(run.wall_s for run in done)
            lines.append(
                f"| {method} | {len(done)} | {'/'.join(map(str, epochs))} | {precision_cell(done)} | "
                f"{wall / 60:.1f} min | " + " | ".join(columns) + " |"
            )
        for run in mine:
            if run.error is not None:
                lines.append(f"| {method} (seed {run.seed}) | failed | | | | {run.error} | | |")
            elif run.metrics is None:
                lines.append(f"| {method} (seed {run.seed}) | not run yet | | | | | | |")
    for name, report in references.items():
        lines.append(
            f"| *{name}* (reference) | | 0 | | | {report['linear_top1']:.2f} | {report['knn_top1']:.2f} | "
            f"{report['feature_effective_rank']:.2f} |"
        )
    return "\n".join(lines) + "\n"


def plot_comparison(runs: list[Run], out_dir: Path, dataset: str) -> dict[str, Path]:
    """Online-probe accuracy and effective rank against epoch (mean over seeds), and final spectra."""
    import torch

    from matrixssl.plots import legend, plot_spectra, pyplot, save_figure

    paths: dict[str, Path] = {}
    plt = pyplot()
    figure, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    panels = (
        ("val/probe_top1", "online probe test top-1 (%)"),
        ("train/effective_rank", "embedding effective rank"),
    )
    for axis, (key, title) in zip(axes, panels):
        for method in dict.fromkeys(run.method for run in runs):
            series = [dict(run.curves[key]) for run in runs if run.method == method and key in run.curves]
            if not series:
                continue
            epochs = sorted(set.intersection(*(set(s) for s in series)))
            axis.plot(
                epochs, [statistics.mean(s[e] for s in series) for e in epochs], marker="o", label=method
            )
        axis.set_title(title)
        axis.set_xlabel("epoch")
        legend(axis, empty="not logged")
    paths["curves"] = save_figure(plt, figure, out_dir / f"{dataset}_curves.png")
    spectra = {}
    for run in runs:
        if run.metrics and "feature_spectrum" in run.metrics and run.method not in spectra:
            spectra[run.method] = torch.tensor(run.metrics["feature_spectrum"], dtype=torch.float64)
    if spectra:
        paths["spectra"] = plot_spectra(
            spectra, out_dir / f"{dataset}_spectra.png", title="backbone feature spectrum (seed of first run)"
        )
    return paths


def device_name(device: str = "auto") -> str:
    """What a timing was taken on: the GPU's name ("auto": when there is one), else the CPU's model (from
    /proc/cpuinfo where there is one) and torch's thread count."""
    import torch

    if device.startswith("cuda") or (device == "auto" and torch.cuda.is_available()):
        return str(torch.cuda.get_device_name(device if device.startswith("cuda") else None))
    cpuinfo = Path("/proc/cpuinfo")
    lines = cpuinfo.read_text().splitlines() if cpuinfo.is_file() else []
    models = [line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")]
    model = models[0] if models else platform.processor() or platform.machine()
    return f"CPU ({model}), {torch.get_num_threads()} torch threads"


def machine_header(title: str) -> str:
    """Title plus the exact command, date and machine, so every committed table says how it was measured."""
    import torch

    return "\n".join(
        [
            f"# {title}",
            "",
            f"- command: `{' '.join([Path(sys.executable).name, *sys.argv])}`",
            f"- date: {datetime.date.today().isoformat()}",
            f"- machine: {device_name()}, Python {platform.python_version()}, torch {torch.__version__}",
            "",
            "",
        ]
    )


def run_directory(root: Path, method: str, seed: int, settings: dict[str, Any]) -> Path:
    """One folder per (method, seed, resolved settings, budget included): a changed budget, override, config
    file or built-in default never reuses a stale result."""
    tag = hashlib.sha1(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:8]
    t = settings.get("trainer", {})
    budget = f"m{t['max_minutes']:g}" if t.get("max_minutes") is not None else f"e{t.get('max_epochs')}"
    return root / f"{method}_{budget}_{tag}_seed{seed}"


def resolved_settings(config: Path, overrides: list[str]) -> dict[str, Any]:
    """The run's full settings (minus where it is written); a config that does not load still gets its run,
    which then fails with the config's own message and becomes a failed row."""
    from matrixssl.config import load_config, to_dict

    try:
        settings = to_dict(load_config(config, overrides))
    except MatrixSSLError as error:
        return {"unloadable": str(error)}
    settings.pop("output_dir")
    return settings


def run_once(config: Path, method: str, seed: int, overrides: list[str], root: Path, label: str = "") -> Run:
    """One pretraining run in its own folder (keyed on its resolved settings), reused when it finished and
    resumed when it was interrupted; progress on stderr."""
    settings = resolved_settings(config, overrides)
    run = Run(label or method, seed, run_directory(root, method, seed, settings))
    print(f"{run.method} seed {seed} -> {run.output}", file=sys.stderr, flush=True)
    execute(run, pretrain_command(config, run.output, seed, overrides), run.output / "bench.log")
    result = (
        f"linear {run.metrics['linear_top1']:.2f}%, kNN {run.metrics['knn_top1']:.2f}%"
        if run.metrics
        else f"FAILED {run.error}"
    )
    print(f"    {run.wall_s / 60:.1f} min: {result}", file=sys.stderr, flush=True)
    return run


def run_bench(args: Any) -> int:
    from matrixssl.config import SHIPPED_CONFIGS, load_config
    from matrixssl.eval.baselines import reference_baselines

    epochs = DEFAULT_EPOCHS if args.epochs is None else args.epochs
    if epochs < 1:
        raise MatrixSSLError(f"--epochs must be at least 1, got {epochs}")
    if args.minutes is not None and args.minutes <= 0:
        raise MatrixSSLError(f"--minutes must be positive, got {args.minutes:g}")
    plan = parse_methods(args.methods, args.seeds)
    folder = args.configs or SHIPPED_CONFIGS
    configs = {method: config_path(folder, args.dataset, method) for method, _ in plan}
    overrides = [*budget_overrides(epochs, args.minutes), *args.overrides]
    first = load_config(configs[plan[0][0]], overrides)  # bad overrides fail here, before any run
    runs: list[Run] = []
    total = sum(seeds for _, seeds in plan)
    for method, seeds in plan:
        for seed in range(seeds):
            print(f"[{len(runs) + 1}/{total}] ", end="", file=sys.stderr)
            runs.append(run_once(configs[method], method, seed, overrides, Path(args.runs) / args.dataset))
    references = {} if args.no_references else reference_baselines(first)
    out_dir = Path(args.output)
    plots = plot_comparison(runs, out_dir, args.dataset)
    d, m = first.data, first.model
    text = (
        machine_header(f"Method comparison on {args.dataset}")
        + f"Same budget for every method: {budget_text(epochs, args.minutes)} on "
        + (f"the first {d.subset} training images" if d.subset else "the whole training set")
        + f", batch {d.batch_size}, backbone {m.backbone} ({m.stem} stem, width {m.width}, blocks/stage {m.blocks_per_stage}, "
        + f"channels_last {m.channels_last}), precision {precision_cell(runs) or 'none (no run finished)'}; "
        + "each method's own config from `configs/<dataset>/<method>.yaml`, untuned. Linear probe and kNN "
        + "(k=20) test top-1 (probes trained on the same training images) and the backbone-feature effective "
        + f"rank; mean ± std over seeds. Pretraining + evaluation, all runs: {sum(r.wall_s for r in runs) / 60:.0f} min.\n\n"
        + summary_table(runs, references)
        + "\n"
        + "".join(f"![{name}]({path.name})\n" for name, path in plots.items())
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    report = out_dir / f"{args.dataset}.md"
    report.write_text(text)
    print(text)
    print(f"written to {report}")
    failed = [run for run in runs if run.error is not None]
    return 1 if failed else 0


def add_bench_command(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "bench", help="compare methods on one dataset (same backbone, budget, seeds) and write a table"
    )
    parser.add_argument("--dataset", default="fashion-mnist", help="a folder under --configs")
    parser.add_argument(
        "--methods",
        default="matrix_ssl:3,matrix_ssl_paper,simclr,byol,simsiam,barlow_twins,vicreg,mec,tcr",
        help="comma-separated NAME[:SEEDS] (config names under configs/<dataset>/)",
    )
    parser.add_argument("--seeds", type=int, default=1, help="seeds for methods given without :SEEDS")
    budget = parser.add_mutually_exclusive_group()
    budget.add_argument(
        "--epochs", type=int, help=f"pretraining epochs of every run (equal epochs; default {DEFAULT_EPOCHS})"
    )
    budget.add_argument(
        "--minutes",
        type=float,
        help="pretraining wall-clock minutes of every run instead (equal compute; time it on an idle machine)",
    )
    parser.add_argument(
        "--configs", type=Path, help="folder of <dataset>/<method>.yaml files (default: the shipped configs)"
    )
    parser.add_argument("--runs", default="runs/bench", help="where the runs go (finished ones are reused)")
    parser.add_argument("--output", default="benchmarks/results", help="where the table and plots go")
    parser.add_argument("--no-references", action="store_true", help="skip the raw-pixel/random-weights rows")
    parser.add_argument(
        "overrides", nargs="*", metavar="key=value", help="applied to every run, e.g. data.subset=20000"
    )
    parser.set_defaults(run=run_bench)

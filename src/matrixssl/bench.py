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


def pretrain_command(config: Path, output: Path, seed: int, epochs: int, overrides: list[str]) -> list[str]:
    command = [
        sys.executable,
        "-m",
        "matrixssl.cli",
        "pretrain",
        "--config",
        str(config),
        f"output_dir={output}",
        f"trainer.seed={seed}",
        f"trainer.max_epochs={epochs}",
        "trainer.progress_bar=false",
        *overrides,
    ]
    if (output / "checkpoints" / "last.ckpt").exists():
        command.append("--resume")
    return command


def execute(run: Run, command: list[str], log: Path) -> None:
    """Run one pretraining process (or reuse its finished result); record metrics or the error line."""
    metrics_file = run.output / "metrics.json"
    if metrics_file.exists():
        run.metrics = json.loads(metrics_file.read_text())
    else:
        started = time.perf_counter()
        run.output.mkdir(parents=True, exist_ok=True)
        with open(log, "w") as handle:
            status = subprocess.run(command, stdout=handle, stderr=subprocess.STDOUT, check=False).returncode
        run.wall_s = time.perf_counter() - started
        if status != 0 or not metrics_file.exists():
            lines = [line for line in log.read_text().splitlines() if line.strip()]
            run.error = f"exit {status}: {lines[-1][:200] if lines else 'no output'} (log: {log})"
            return
        run.metrics = json.loads(metrics_file.read_text())
    run.wall_s = float(run.metrics.get("wall_time_s", run.wall_s))
    from matrixssl.plots import read_epoch_curves

    csv = Path(run.metrics["logs"]) / "metrics.csv"
    if csv.exists():
        run.curves = read_epoch_curves(csv)


def mean_std(values: list[float]) -> str:
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}"


def summary_table(runs: list[Run], references: dict[str, dict[str, Any]]) -> str:
    """Markdown: one row per method (mean ± std over its seeds), failures named, reference rows last."""
    lines = [
        "| method | seeds | epochs | wall time / run | linear top-1 (%) | kNN top-1 (%) | effective rank |",
        "|---|---|---|---|---|---|---|",
    ]
    for method in dict.fromkeys(run.method for run in runs):
        mine = [run for run in runs if run.method == method]
        done = [run for run in mine if run.metrics is not None]
        if done:
            epochs = sorted({int(run.metrics["epochs"]) for run in done if run.metrics})
            columns = [
                mean_std([float(run.metrics[key]) for run in done if run.metrics]) for key in SUMMARY_KEYS
            ]
            wall = statistics.mean(run.wall_s for run in done)
            lines.append(
                f"| {method} | {len(done)} | {'/'.join(map(str, epochs))} | {wall / 60:.1f} min | "
                + " | ".join(columns)
                + " |"
            )
        for run in mine:
            if run.error is not None:
                lines.append(f"| {method} (seed {run.seed}) | failed | | | {run.error} | | |")
    for name, report in references.items():
        lines.append(
            f"| *{name}* (reference) | | 0 | | {report['linear_top1']:.2f} | {report['knn_top1']:.2f} | "
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


def machine_header(title: str) -> str:
    """Title plus the exact command, date and machine, so every committed table says how it was measured."""
    import torch

    device = (
        torch.cuda.get_device_name()
        if torch.cuda.is_available()
        else f"CPU ({platform.processor() or platform.machine()})"
    )
    return "\n".join(
        [
            f"# {title}",
            "",
            f"- command: `{' '.join([Path(sys.executable).name, *sys.argv])}`",
            f"- date: {datetime.date.today().isoformat()}",
            f"- machine: {device}, {torch.get_num_threads()} torch threads, Python {platform.python_version()}, "
            f"torch {torch.__version__}",
            "",
            "",
        ]
    )


def run_directory(
    root: Path, dataset: str, method: str, seed: int, epochs: int, settings: dict[str, Any]
) -> Path:
    """One folder per (method, seed, budget, resolved settings): a changed budget, override, config file or
    built-in default never reuses a stale result."""
    tag = hashlib.sha1(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:8]
    return root / dataset / f"{method}_e{epochs}_{tag}_seed{seed}"


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


def run_bench(args: Any) -> int:
    from matrixssl.config import SHIPPED_CONFIGS, load_config
    from matrixssl.eval.baselines import reference_baselines

    if args.epochs < 1:
        raise MatrixSSLError(f"--epochs must be at least 1, got {args.epochs}")
    plan = parse_methods(args.methods, args.seeds)
    folder = args.configs or SHIPPED_CONFIGS
    configs = {method: config_path(folder, args.dataset, method) for method, _ in plan}
    first = load_config(configs[plan[0][0]], args.overrides)  # bad overrides fail here, before any run
    runs: list[Run] = []
    total = sum(seeds for _, seeds in plan)
    for method, seeds in plan:
        settings = resolved_settings(configs[method], args.overrides)
        for seed in range(seeds):
            output = run_directory(Path(args.runs), args.dataset, method, seed, args.epochs, settings)
            run = Run(method, seed, output)
            print(f"[{len(runs) + 1}/{total}] {method} seed {seed} -> {output}", file=sys.stderr, flush=True)
            command = pretrain_command(configs[method], output, seed, args.epochs, args.overrides)
            execute(run, command, output / "bench.log")
            result = (
                f"linear {run.metrics['linear_top1']:.2f}%, kNN {run.metrics['knn_top1']:.2f}%"
                if run.metrics
                else f"FAILED {run.error}"
            )
            print(f"    {run.wall_s / 60:.1f} min: {result}", file=sys.stderr, flush=True)
            runs.append(run)
    references = {} if args.no_references else reference_baselines(first)
    out_dir = Path(args.output)
    plots = plot_comparison(runs, out_dir, args.dataset)
    d, m = first.data, first.model
    precisions = sorted({str(r.metrics.get("precision", "not recorded")) for r in runs if r.metrics})
    text = (
        machine_header(f"Method comparison on {args.dataset}")
        + f"Same budget for every method: {args.epochs} epochs on "
        + (f"the first {d.subset} training images" if d.subset else "the whole training set")
        + f", batch {d.batch_size}, backbone {m.backbone} ({m.stem} stem, width {m.width}, blocks/stage {m.blocks_per_stage}, "
        + f"channels_last {m.channels_last}), precision {', '.join(precisions) or 'none (no run finished)'}; "
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
    parser.add_argument("--epochs", type=int, default=2, help="pretraining epochs of every run")
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

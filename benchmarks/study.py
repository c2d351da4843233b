"""Does Matrix-SSL work? Every method with local views, the same tuning effort for each, then the comparison
at the main job's budget, Matrix-SSL's ablations at half of it, and a 60-minute run of the best two.

Phases, each reusing every run already finished and resuming any interrupted one (`matrixssl bench`'s run
folders, keyed on the resolved settings), so the study can stop at any point and continue later. Each finished
run also leaves a small record (metrics and curves) in benchmarks/results/study_runs/, committed with the tables,
so a fresh clone continues the study where it stopped instead of training every run again:

    tune      per method, the base lr over x{1/3, 1, 3} at its default knob, then the other knob value at the
              best lr: 4 proxy runs per method (2 epochs on 20,000 images), 1 seed
    main      every method, tuned, at the main job's budget (6 epochs, 60,000 images), 2 seeds, a 3rd for the top 3
    ablate    Matrix-SSL ablations at half that budget (3 epochs), 2 seeds
    long      60 minutes of pretraining for the best Matrix-SSL recipe and the best other method (idle machine!);
              --long-baseline METHOD names the other method instead of reading main's runs
    report    rewrite every table from the runs that exist, training nothing

    python benchmarks/study.py PHASE [PHASE ...] [--runs runs/study] [key=value overrides of every run]

One run at a time (the phases run in order); tables and plots go to benchmarks/results/study_*.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from _report import RESULTS, header

from matrixssl.bench import (
    Run,
    load_finished,
    mean_std,
    plot_comparison,
    precision_cell,
    resolved_settings,
    run_directory,
    run_once,
    summary_table,
)
from matrixssl.config import SHIPPED_CONFIGS, flatten, load_config, to_dict
from matrixssl.errors import MatrixSSLError

DATASET = "fashion-mnist"
METHODS = ("matrix_ssl", "simclr", "byol", "simsiam", "barlow_twins", "vicreg", "mec", "tcr", "tcr_two_views")
# Extra rows, each (the config it runs, the overrides it adds). TCR was the best method of the two-view proxy
# table but collapsed with local views in this study's search, so it is also compared at two views.
VARIANTS = {"tcr_two_views": ("tcr", ["data.local_views=0"])}
# The one knob each method's paper calls sensitive, and the value tried next to the config's own.
KNOBS = {
    "matrix_ssl": ("loss.gamma", 2.0),  # the paper's γ ablation
    "simclr": ("loss.simclr.temperature", 0.2),
    "byol": ("teacher.base_momentum", 0.996),
    "simsiam": ("optim.weight_decay", 5e-4),  # SimSiam's CIFAR value next to its ImageNet 1e-4
    "barlow_twins": ("loss.barlow_twins.off_diagonal_weight", 0.02),
    "vicreg": ("loss.vicreg.invariance_weight", 10.0),  # λ against μ = 25
    "mec": ("loss.mec.eps_squared", 16.0),
    "tcr": ("loss.tcr.eps_squared", 0.5),
    "tcr_two_views": ("loss.tcr.eps_squared", 0.5),
}
LR_FACTORS = (1 / 3, 1.0, 3.0)
EVERY_RUN = ["data.local_views=4"]  # multi-crop for every method, as make run gives Matrix-SSL
PROXY = ["data.subset=20000", "trainer.max_epochs=2"]
MAIN = ["trainer.max_epochs=6"]
HALF = ["trainer.max_epochs=3"]
LONG = ["trainer.max_minutes=60"]
MAIN_SEEDS, TOP_SEEDS, TOP, ABLATION_SEEDS = 2, 3, 3, 2
# (row, overrides on the tuned Matrix-SSL recipe)
OFFICIAL = [
    "loss.target_scale=1.0",
    "loss.ridge=1.0",
    "loss.taylor_order=4",
    "loss.gamma=1.0",
    "loss.trace_term=false",
    "loss.online_uniformity=0",
]
# In the order they run (seed-major), most telling first: what the online uniformity and the matrix cross-entropy
# term buy, then the paper's own settings, then the γ and Taylor sweeps.
ABLATIONS = [
    ("tuned recipe", []),
    ("no online uniformity (β = 0)", ["loss.online_uniformity=0"]),
    ("γ = 0 (uniformity only: the paper's MEC-equivalent point)", ["loss.gamma=0"]),
    ("official setting (λ = μ = 1, Taylor order 4, no tr Q, β = 0)", OFFICIAL),
    (
        "paper variant (target I/d, with tr Q, exact log, β = 0)",
        [
            "loss.target_scale=null",
            "loss.trace_term=true",
            "loss.taylor_order=null",
            "loss.online_uniformity=0",
        ],
    ),
    ("γ = 0.5", ["loss.gamma=0.5"]),
    ("γ = 1", ["loss.gamma=1.0"]),
    ("γ = 2", ["loss.gamma=2.0"]),
    ("official setting, Taylor order 2", [*OFFICIAL, "loss.taylor_order=2"]),
    ("official setting, exact log", [*OFFICIAL, "loss.taylor_order=null"]),
]


@dataclass
class Study:
    """Where runs go, whether missing runs are trained (or only reported as pending), and the user's overrides."""

    runs: Path
    train: bool
    overrides: list[str]

    def run(self, method: str, overrides: Sequence[str], seed: int, label: str = "") -> Run:
        config, base = recipe(method)
        every = [*base, *overrides, *self.overrides]
        run = Run(
            label or method, seed, run_directory(self.runs, method, seed, resolved_settings(config, every))
        )
        if load_record(run):
            return run
        if self.train:
            run = run_once(config, method, seed, every, self.runs, label)
        else:
            load_finished(run)  # else neither metrics nor an error: not run yet
        if run.metrics:
            save_record(run, every)
        return run


def record_path(run: Run) -> Path:
    return RESULTS / "study_runs" / f"{run.output.name}.json"


LOCAL_PATHS = ("checkpoint", "logs", "plots")  # metrics that name files on the machine that ran them


def code_version() -> str:
    """The commit the study runs from (records outlive code changes, so each says what made it)."""
    found = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
        check=False,
        cwd=Path(__file__).resolve().parent,
    )
    return found.stdout.strip() or "unknown"


def save_record(run: Run, overrides: list[str]) -> None:
    """What the tables and plots need of a finished run, small enough to commit."""
    record = {
        "label": run.method,
        "seed": run.seed,
        "overrides": overrides,
        "commit": code_version(),
        "wall_s": run.wall_s,
        "metrics": {k: v for k, v in (run.metrics or {}).items() if k not in LOCAL_PATHS},
        "curves": run.curves,
    }
    path = record_path(run)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=1) + "\n")


def load_record(run: Run) -> bool:
    """Fill `run` from its committed record; False when the run has none. The file name carries the resolved
    settings (two rows whose overrides resolve alike, such as γ = 1 and the tuned recipe, share a record); a
    record whose seed is not the run's is ignored."""
    path = record_path(run)
    if not path.exists():
        return False
    record = json.loads(path.read_text())
    if record["seed"] != run.seed:
        print(f"ignoring {path}: it holds seed {record['seed']}, not {run.seed}", file=sys.stderr)
        return False
    run.metrics, run.wall_s = record["metrics"], float(record["wall_s"])
    run.curves = {key: [(int(x), float(y)) for x, y in points] for key, points in record["curves"].items()}
    return True


def set_aside(runs: list[Run]) -> str:
    """The page's list of runs made and then set aside, each with its reason (`study_runs/set_aside/<run>.json`
    or `<run>.<n>.json`: a record with a "set_aside" key), so that no run made goes unreported."""
    lines = []
    for run in runs:
        kept = record_path(run)
        folder = kept.parent / "set_aside"
        for path in [folder / kept.name, *sorted(folder.glob(f"{kept.stem}.*.json"))]:
            if not path.exists():
                continue
            record = json.loads(path.read_text())
            m = record["metrics"]
            lines.append(
                f"- {record['label']} seed {record['seed']}, {m['global_step']} steps, {record['wall_s'] / 60:.1f} "
                f"min: linear {m['linear_top1']:.2f}, kNN {m['knn_top1']:.2f}, effective rank "
                f"{m['feature_effective_rank']:.2f} (`study_runs/set_aside/{path.name}`): {record['set_aside']}"
            )
    return (
        "\nRuns made and set aside (not in the table above):\n\n" + "\n".join(lines) + "\n" if lines else ""
    )


def recipe(method: str) -> tuple[Path, list[str]]:
    """The config file a study row runs and the overrides every run of that row starts from."""
    config, extra = VARIANTS.get(method, (method, []))
    return SHIPPED_CONFIGS / DATASET / f"{config}.yaml", [*EVERY_RUN, *extra]


def default_value(method: str, key: str) -> Any:
    return flatten(to_dict(load_config(*recipe(method))))[key]


def linear(run: Run) -> float:
    return float(run.metrics["linear_top1"]) if run.metrics else float("-inf")


def tune(study: Study, method: str) -> tuple[list[str], list[tuple[Run, list[str]]]]:
    """The tuned overrides of a method and every search run with its overrides."""
    base_lr = default_value(method, "optim.base_lr")
    key, other = KNOBS[method]
    tried: list[tuple[Run, list[str]]] = []
    for factor in LR_FACTORS:
        overrides = [f"optim.base_lr={base_lr * factor:.4g}"]
        tried.append((study.run(method, [*PROXY, *overrides], 0), overrides))
    best_lr = max(tried, key=lambda pair: linear(pair[0]))[1]
    overrides = [*best_lr, f"{key}={other:g}"]
    tried.append((study.run(method, [*PROXY, *overrides], 0), overrides))
    return max(tried, key=lambda pair: linear(pair[0]))[1], tried


def metric_cells(run: Run) -> str:
    if run.metrics is None:
        return f"{run.error or 'not run yet'} | | | "
    m = run.metrics
    return (
        f"{m['linear_top1']:.2f} | {m['knn_top1']:.2f} | {m['feature_effective_rank']:.2f} | "
        f"{run.wall_s / 60:.1f} min"
    )


def tuning_table(study: Study) -> tuple[dict[str, list[str]], bool]:
    """The search's table; each method's chosen overrides, and whether every search run has finished."""
    lines = [
        "| method | settings | linear top-1 (%) | kNN top-1 (%) | effective rank | wall / run |",
        "|---|---|---|---|---|---|",
    ]
    chosen: dict[str, list[str]] = {}
    searched: list[Run] = []
    for method in METHODS:
        best, tried = tune(study, method)
        chosen[method] = best
        searched += [run for run, _ in tried]
        for run, overrides in tried:
            mark = " **(chosen)**" if overrides == best and run.metrics else ""
            lines.append(f"| {method} | `{' '.join(overrides)}`{mark} | {metric_cells(run)} |")
    key_list = ", ".join(f"{m}: `{k}` ({default_value(m, k):g} or {v:g})" for m, (k, v) in KNOBS.items())
    write_table(
        "study_tuning.md",
        "Study, step 1: equal tuning effort",
        "Every method gets the same search at a proxy budget (2 epochs on the first 20,000 training images, "
        "four 14 px local views next to the two views, 1 seed): its config's base lr times 1/3, 1 and 3, then "
        f"the one knob its paper calls sensitive at its other value, at the best lr. Knobs: {key_list}. "
        "The chosen setting (best linear top-1) goes to the main table. `tcr_two_views` is TCR without the local "
        "views (an extra row: TCR collapsed with them).",
        "\n".join(lines),
        searched,
    )
    return chosen, all(run.metrics for run in searched)


def main_table(study: Study, chosen: dict[str, list[str]]) -> list[Run]:
    # Seed-major order: a table with one seed of every method exists before any method's second seed.
    runs = [study.run(m, [*MAIN, *chosen[m]], seed) for seed in range(MAIN_SEEDS) for m in METHODS]

    def mean_linear(method: str) -> float:
        done = [linear(r) for r in runs if r.method == method and r.metrics]
        return statistics.mean(done) if len(done) == MAIN_SEEDS else float("-inf")

    top = sorted(METHODS, key=mean_linear, reverse=True)[:TOP]
    if all(mean_linear(m) > float("-inf") for m in METHODS):
        runs += [
            study.run(m, [*MAIN, *chosen[m]], seed) for m in top for seed in range(MAIN_SEEDS, TOP_SEEDS)
        ]
    references = reference_rows(study)
    plots = figures(runs, "study_main")
    settings = "\n".join(f"- {m}: `{' '.join(chosen[m])}`" for m in METHODS)
    write_table(
        "study_main.md",
        "Study, step 2: every method at the main job's budget",
        "Equal epochs: 6 epochs on all 60,000 training images (the budget of `make run`), batch 256, the quick "
        "backbone, two 28 px views and four 14 px local views for every method (and TCR also at two views, "
        "`tcr_two_views`), each with its tuned setting "
        "(step 1); 2 seeds each, a 3rd for the top three; mean ± std. Linear probe and kNN (k=20) on the "
        "10,000 test images. Wall time includes evaluation, and runs shared the 2 cores with other work.\n\n"
        f"Tuned settings:\n{settings}",
        summary_table(runs, references) + "".join(f"\n![{n}]({p.name})" for n, p in plots.items()),
        runs,
    )
    return runs


def reference_rows(study: Study) -> dict[str, dict[str, Any]]:
    """Raw pixels and the untrained backbone under the same evaluation, computed once and kept with the records."""
    config = SHIPPED_CONFIGS / DATASET / "matrix_ssl.yaml"
    named = run_directory(RESULTS / "study_runs", "references", 0, resolved_settings(config, study.overrides))
    saved = named.with_name(f"{named.name}.json")
    if saved.exists():
        return dict(json.loads(saved.read_text()))
    if not study.train:
        print(f"no reference rows: {saved.name} is missing (the main phase computes it)", file=sys.stderr)
        return {}
    from matrixssl.eval.baselines import reference_baselines

    rows = reference_baselines(load_config(config, study.overrides))
    keep = {
        name: {k: row[k] for k in ("linear_top1", "knn_top1", "feature_effective_rank")}
        for name, row in rows.items()
    }
    saved.parent.mkdir(parents=True, exist_ok=True)
    saved.write_text(json.dumps(keep))
    return keep


def ablation_table(study: Study, chosen: dict[str, list[str]]) -> list[Run]:
    tuned = chosen["matrix_ssl"]
    runs = [
        study.run("matrix_ssl", [*HALF, *tuned, *overrides], seed, label)
        for seed in range(ABLATION_SEEDS)
        for label, overrides in ABLATIONS
    ]
    rows = [
        "| variant | overrides | seeds | linear top-1 (%) | kNN top-1 (%) | effective rank | precision | wall / run |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for label, overrides in ABLATIONS:
        mine = [r for r in runs if r.method == label]
        done = [r for r in mine if r.metrics]
        cells = [
            mean_std([float(r.metrics[k]) for r in done if r.metrics])
            for k in ("linear_top1", "knn_top1", "feature_effective_rank")
        ]
        failed = [r.error for r in mine if r.error]
        note = f" (failed: {'; '.join(failed)})" if failed else ""
        wall = f"{statistics.mean(r.wall_s for r in done) / 60:.1f} min" if done else ""
        rows.append(
            f"| {label}{note} | `{' '.join(overrides) or '-'}` | {len(done)} | {' | '.join(cells)} | {precision_cell(done)} "
            f"| {wall} |"
        )
    write_table(
        "study_ablation.md",
        "Study, step 3: what each part of Matrix-SSL buys",
        "Matrix-SSL's tuned recipe (`"
        + " ".join(tuned)
        + "`) at half the main budget (3 epochs on all 60,000 "
        "images, local views), 2 seeds, one change per row. λ is the target scale, μ the ridge, β the online "
        "uniformity weight (not in the paper). Precision is what `trainer.precision=auto` chose on the machine "
        "that ran them (bf16-mixed where the CPU has native bf16, else 32-true). Wall time includes evaluation; "
        "runs may have shared the 2 cores with other work (it does not change their accuracy), and a run resumed "
        "from a checkpoint counts only the time after the resume.",
        "\n".join(rows),
        runs,
    )
    return runs


def long_runs(
    study: Study, chosen: dict[str, list[str]], main: list[Run], ablation: list[Run], baseline: str | None
) -> list[Run]:
    """The best Matrix-SSL recipe of the ablation and `baseline`, by default the best other method of the main
    table, for 60 minutes each."""
    picked = "the best other method of the main table"
    if baseline is None:
        baseline = max(
            (m for m in METHODS if m != "matrix_ssl"),
            key=lambda m: statistics.mean([linear(r) for r in main if r.method == m] or [float("-inf")]),
        )
    else:
        picked = f"`{baseline}`, named with --long-baseline"
    rows = {label: overrides for label, overrides in ABLATIONS}
    best_row = max(
        rows,
        key=lambda label: statistics.mean(
            [linear(r) for r in ablation if r.method == label] or [float("-inf")]
        ),
    )
    runs = [
        study.run(
            "matrix_ssl", [*LONG, *chosen["matrix_ssl"], *rows[best_row]], 0, f"matrix_ssl ({best_row})"
        ),
        study.run(baseline, [*LONG, *chosen[baseline]], 0),
    ]
    plots = figures(runs, "study_long")
    write_table(
        "study_long.md",
        "Study, step 4: 60 minutes of pretraining",
        "Equal compute: 60 minutes of pretraining each (the run times its first steps and plans its schedules "
        "for the steps that fit), all 60,000 images, local views, 1 seed, on an otherwise idle machine: the "
        f"best Matrix-SSL recipe of the ablation and {picked}.",
        summary_table(runs, {}) + "".join(f"\n![{n}]({p.name})" for n, p in plots.items()),
        runs,
    )
    return runs


def figures(runs: list[Run], name: str) -> dict[str, Path]:
    """The curves (and spectra) of the finished runs; none while no run has finished."""
    done = [run for run in runs if run.metrics]
    return plot_comparison(done, RESULTS, name) if done else {}


def write_table(name: str, title: str, intro: str, table: str, runs: list[Run]) -> None:
    """Write one page, unless none of its runs has finished or failed: then the page already there is kept (a
    study restarted without its records must not blank the tables it made). A page whose text below the header
    would not change is kept too, so its header still names the command and date that made its figures."""
    path = RESULTS / name
    if not any(run.metrics or run.error for run in runs):
        print(f"kept {path}: none of its runs has finished here", file=sys.stderr)
        return
    made_by = "Runs made by `make study` (`python benchmarks/study.py tune main ablate`; resumable).\n\n"
    body = made_by + intro + "\n\n" + table + "\n" + set_aside(runs)
    if path.exists() and (old := path.read_text()).startswith(f"# {title}\n") and old.endswith(body):
        print(f"kept {path}: unchanged", file=sys.stderr)
        return
    RESULTS.mkdir(parents=True, exist_ok=True)
    path.write_text(header(title) + body)
    print(f"written to {path}", file=sys.stderr)


PHASES = ("tune", "main", "ablate", "long")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__,
    )
    parser.add_argument(
        "words", nargs="+", metavar="PHASE", help="tune, main, ablate, long or report; then key=value"
    )
    parser.add_argument(
        "--runs", type=Path, default=Path("runs/study"), help="where the runs go (default: %(default)s)"
    )
    parser.add_argument(
        "--long-baseline",
        choices=[m for m in METHODS if m != "matrix_ssl"],
        help="the other method of the long phase (default: the best of the main table, whose runs must all "
        "have finished)",
    )
    args = parser.parse_intermixed_args(argv)
    asked = [word for word in args.words if "=" not in word]
    overrides = [word for word in args.words if "=" in word]
    unknown = sorted(set(asked) - {*PHASES, "report"})
    if unknown:
        parser.error(f"unknown phase(s) {', '.join(unknown)}; choose from {', '.join(PHASES)} or report")
    # Every phase up to the last one asked for is walked (the earlier ones only to read what they chose);
    # only the asked ones train. `report` walks them all and trains nothing.
    last = len(PHASES) - 1 if "report" in asked else max(PHASES.index(phase) for phase in asked)
    if args.long_baseline and last < PHASES.index("long"):
        parser.error("--long-baseline names the long phase's other method: ask for long (or report) as well")
    study = {phase: Study(args.runs / DATASET, phase in asked, overrides) for phase in PHASES}
    try:
        chosen, complete = tuning_table(study["tune"])
        if last == 0:
            return 0
        if not complete and any(study[phase].train for phase in PHASES[1:]):
            raise MatrixSSLError("the tuning search has runs left: run the tune phase first")
        main_runs = main_table(study["main"], chosen)
        if last >= 2:
            ablation = ablation_table(study["ablate"], chosen)
        if last >= 3:
            picks_from = ablation + (main_runs if args.long_baseline is None else [])
            if all(r.metrics for r in picks_from):
                long_runs(study["long"], chosen, main_runs, ablation, args.long_baseline)
            elif study["long"].train:
                raise MatrixSSLError(
                    "the long runs pick the best of main (unless --long-baseline names a method) and of ablate: "
                    "run those phases first"
                )
            else:  # which runs the page shows is not known yet (or needs --long-baseline)
                print(
                    "kept study_long.md: main or ablate has runs left (or pass --long-baseline)",
                    file=sys.stderr,
                )
    except MatrixSSLError as error:
        print(f"study.py: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

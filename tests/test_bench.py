"""`matrixssl bench`: the plan parser, the summary arithmetic, and a tiny comparison with a crashing method."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from conftest import TINY, mnist_like, write_idx_split

from matrixssl.bench import (
    Run,
    device_name,
    epochs_done,
    load_finished,
    machine_header,
    parse_methods,
    run_directory,
    summary_table,
)
from matrixssl.cli import main
from matrixssl.config import load_config, to_dict
from matrixssl.errors import MatrixSSLError
from matrixssl.train import training_precision


def test_parse_methods_reads_seed_counts_and_rejects_nonsense() -> None:
    assert parse_methods("matrix_ssl:3, simclr", 2) == [("matrix_ssl", 3), ("simclr", 2)]
    with pytest.raises(MatrixSSLError, match="NAME:SEEDS"):
        parse_methods("simclr:x", 1)
    with pytest.raises(MatrixSSLError, match="at least 1"):
        parse_methods("simclr:0", 1)
    with pytest.raises(MatrixSSLError, match="empty"):
        parse_methods(" , ", 1)


def test_the_machine_of_a_timing_names_the_cpu_model_and_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch, "get_num_threads", lambda: 3)
    name = device_name("cpu")
    cpuinfo = Path("/proc/cpuinfo")
    lines = cpuinfo.read_text().splitlines() if cpuinfo.is_file() else []
    models = [line for line in lines if line.startswith("model name")]
    if models:  # Linux: the model, not just the architecture
        assert name == f"CPU ({models[0].split(':', 1)[1].strip()}), 3 torch threads"
    assert name.startswith("CPU (") and name.endswith("), 3 torch threads")
    if not torch.cuda.is_available():
        assert device_name() == name  # "auto": the CPU where there is no GPU
    assert f"- machine: {name}, Python " in machine_header("T") or torch.cuda.is_available()


def test_run_directory_changes_with_budget_and_settings() -> None:
    root = Path("runs")
    settings = lambda *overrides: to_dict(load_config(None, list(overrides)))  # noqa: E731
    base = run_directory(root, "m", 0, settings("trainer.max_epochs=2"))
    assert base == run_directory(root, "m", 0, settings("trainer.max_epochs=2"))
    assert base.name.startswith("m_e2_") and base.name.endswith("_seed0")
    assert base != run_directory(root, "m", 0, settings("trainer.max_epochs=3"))
    assert base != run_directory(root, "m", 1, settings("trainer.max_epochs=2"))
    minutes = run_directory(root, "m", 0, settings("trainer.max_epochs=2", "trainer.max_minutes=1.5"))
    assert minutes.name.startswith("m_m1.5_")
    # An override, an edited config file or a new built-in default all change the resolved settings.
    assert base != run_directory(root, "m", 0, settings("trainer.max_epochs=2", "data.subset=10"))
    assert base != run_directory(root, "m", 0, settings("trainer.max_epochs=2", "model.width=0.25"))


def test_epochs_done_is_fractional_for_a_budget_that_ends_inside_an_epoch() -> None:
    assert epochs_done({"epochs": 2, "global_step": 8, "steps_per_epoch": 4}) == "2"
    assert epochs_done({"epochs": 2, "global_step": 9, "steps_per_epoch": 4}) == "2.2"
    assert epochs_done({"epochs": 3}) == "3"  # a run from before steps_per_epoch was recorded


def test_summary_table_mean_std_failures_and_references() -> None:
    def done(seed: int, linear: float, precision: str) -> Run:
        metrics = {"linear_top1": linear, "knn_top1": 50.0, "feature_effective_rank": 4.0, "epochs": 2}
        return Run("a", seed, Path("x"), metrics=metrics | {"precision": precision}, wall_s=120.0)

    runs = [
        done(0, 80.0, "bf16-mixed"),
        done(1, 82.0, "32-true"),
        Run("b", 0, Path("y"), error="exit 2: boom"),
        Run("c", 1, Path("z")),
    ]
    reference = {"linear_top1": 70.0, "knn_top1": 60.0, "feature_effective_rank": 9.0}
    table = summary_table(runs, {"raw pixels": reference})
    # sample std of (80, 82) is sqrt(2) = 1.41
    # the seeds ran at two precisions (two machines' "auto"): the row says so
    assert (
        "| a | 2 | 2 | 32-true, bf16-mixed | 2.0 min | 81.00 ± 1.41 | 50.00 ± 0.00 | 4.00 ± 0.00 |" in table
    )
    assert "| b (seed 0) | failed | | | | exit 2: boom | | |" in table
    assert "| c (seed 1) | not run yet | | | | | | |" in table  # neither metrics nor an error
    assert "| *raw pixels* (reference) | | 0 | | | 70.00 | 60.00 | 9.00 |" in table


def test_bench_end_to_end_reports_a_crashed_method_and_reuses_finished_runs(tmp_path: Path, capsys) -> None:
    data = tmp_path / "data"
    write_idx_split(data / "fashion-mnist", "train", *mnist_like(48, 0), gz=True)
    write_idx_split(data / "fashion-mnist", "test", *mnist_like(32, 1), gz=True)
    configs = tmp_path / "configs" / "fashion-mnist"
    configs.mkdir(parents=True)
    shutil.copy(Path(__file__).parents[1] / "configs" / "fashion-mnist" / "matrix_ssl.yaml", configs)
    (configs / "broken.yaml").write_text("loss:\n  method: nope\n")  # the run itself exits 2
    command = [
        "bench",
        "--methods=matrix_ssl:2,broken",
        "--epochs=1",
        f"--configs={tmp_path / 'configs'}",
        f"--runs={tmp_path / 'runs'}",
        f"--output={tmp_path / 'results'}",
        f"data.dir={data}",
        *TINY,
    ]
    assert main(command) == 1  # one method failed: reported, not fatal
    report = (tmp_path / "results" / "fashion-mnist.md").read_text()
    assert "| matrix_ssl | 2 | 1 |" in report
    assert "| broken (seed 0) | failed | | | | exit 2: matrixssl: error: unknown method 'nope'" in report
    assert "*raw pixels* (reference)" in report and "*random weights* (reference)" in report
    assert f"channels_last True), precision {training_precision(load_config(None, []))};" in report
    assert (tmp_path / "results" / "fashion-mnist_curves.png").stat().st_size > 0
    assert (tmp_path / "results" / "fashion-mnist_spectra.png").stat().st_size > 0
    progress = capsys.readouterr().err
    assert "[1/3] matrix_ssl seed 0" in progress and "[3/3] broken seed 0" in progress
    first = report
    # A second identical command reuses the two finished runs (no retraining) and reports the same numbers.
    finished = sorted((tmp_path / "runs" / "fashion-mnist").glob("matrix_ssl_*/metrics.json"))
    stamps = [path.stat().st_mtime_ns for path in finished]
    reread = Run("matrix_ssl", 0, finished[0].parent)  # what `study.py report` reads, training nothing
    assert load_finished(reread) and reread.metrics and "train/loss_epoch" in reread.curves
    assert not load_finished(Run("x", 0, tmp_path / "never-ran"))
    assert main(command) == 1
    assert [path.stat().st_mtime_ns for path in finished] == stamps
    table = lambda text: text[text.index("| method |") :]  # noqa: E731
    assert table((tmp_path / "results" / "fashion-mnist.md").read_text()) == table(first)


def test_bench_minutes_gives_every_run_the_same_wall_clock_budget(tmp_path: Path, capsys) -> None:
    data = tmp_path / "data"
    write_idx_split(data / "fashion-mnist", "train", *mnist_like(48, 0), gz=True)
    write_idx_split(data / "fashion-mnist", "test", *mnist_like(32, 1), gz=True)
    command = [
        "bench",
        "--methods=simclr,byol",
        "--minutes=0.02",
        f"--runs={tmp_path / 'runs'}",
        f"--output={tmp_path / 'results'}",
        "--no-references",
        f"data.dir={data}",
        *TINY,
    ]
    assert main(command) == 0
    report = (tmp_path / "results" / "fashion-mnist.md").read_text()
    assert "Same budget for every method: 0.02 minutes of pretraining per run (equal compute" in report
    folders = sorted(path.name for path in (tmp_path / "runs" / "fashion-mnist").iterdir())
    assert [name.split("_")[:2] for name in folders] == [["byol", "m0.02"], ["simclr", "m0.02"]]
    for folder in folders:
        metrics = json.loads((tmp_path / "runs" / "fashion-mnist" / folder / "metrics.json").read_text())
        checkpoint = torch.load(Path(metrics["checkpoint"]), weights_only=False)
        assert checkpoint["planned_steps"] == metrics["global_step"] >= 13  # planned after the timed steps
    assert main([*command[:2], "--minutes=0", *command[3:]]) == 2
    assert "--minutes must be positive, got 0" in capsys.readouterr().err
    with pytest.raises(SystemExit) as stop:  # one budget or the other
        main([*command, "--epochs=2"])
    assert stop.value.code == 2
    assert "argument --epochs: not allowed with argument --minutes" in capsys.readouterr().err


def test_bench_unknown_method_config_is_one_clear_error(tmp_path: Path, capsys) -> None:
    assert main(["bench", "--methods=nope", f"--configs={tmp_path}"]) == 2
    assert "no config" in capsys.readouterr().err

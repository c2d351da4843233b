"""benchmarks/study.py on tiny data: the equal-effort search picks by linear top-1, the later phases read what it
chose, every run is reused, and `report` rewrites the tables without training."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
from conftest import TINY, mnist_like, write_idx_split

from matrixssl.config import load_config
from matrixssl.train import training_precision

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import study  # noqa: E402


@pytest.fixture
def tiny_study(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    data = tmp_path / "data"
    write_idx_split(data / "fashion-mnist", "train", *mnist_like(48, 0), gz=True)
    write_idx_split(data / "fashion-mnist", "test", *mnist_like(32, 1), gz=True)
    monkeypatch.setattr(study, "RESULTS", tmp_path / "results")
    monkeypatch.setattr(study, "METHODS", ("matrix_ssl", "simclr"))
    monkeypatch.setattr(study, "EVERY_RUN", ["data.local_views=2"])
    monkeypatch.setattr(study, "PROXY", ["data.subset=32", "trainer.max_epochs=1"])
    monkeypatch.setattr(study, "MAIN", ["trainer.max_epochs=1"])
    monkeypatch.setattr(study, "HALF", ["trainer.max_epochs=1"])
    monkeypatch.setattr(study, "LONG", ["trainer.max_minutes=0.01"])
    monkeypatch.setattr(study, "MAIN_SEEDS", 1)
    monkeypatch.setattr(study, "TOP_SEEDS", 1)
    monkeypatch.setattr(study, "ABLATION_SEEDS", 1)
    # γ = 1 resolves like the tuned recipe: the two rows share one run and one record.
    ablations = [("tuned recipe", []), ("γ = 0", ["loss.gamma=0"]), ("γ = 1", ["loss.gamma=1.0"])]
    monkeypatch.setattr(study, "ABLATIONS", ablations)
    return [f"--runs={tmp_path / 'runs'}", f"data.dir={data}", *TINY]


def test_the_study_tunes_compares_ablates_and_reports(
    tiny_study: list[str], tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    results, runs = tmp_path / "results", tmp_path / "runs" / "fashion-mnist"
    assert study.main(["main", *tiny_study]) == 2  # the search must come first
    assert "run the tune phase first" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # a flag for a phase that is not walked would be silently ignored
        study.main(["tune", "--long-baseline=simclr", *tiny_study])
    assert "ask for long (or report) as well" in capsys.readouterr().err
    assert study.main(["tune", *tiny_study]) == 0
    tuning = (results / "study_tuning.md").read_text()
    # 3 learning rates (x 1/3, 1, 3 of the config's) then the knob's other value at the best one, per method.
    for method, lr in (("matrix_ssl", 0.3), ("simclr", 0.3)):
        rows = [line for line in tuning.splitlines() if line.startswith(f"| {method} |")]
        assert len(rows) == 4 and sum("(chosen)" in row for row in rows) == 1
        assert [row.split("`")[1].split()[0] for row in rows[:3]] == [
            f"optim.base_lr={lr * f:.4g}" for f in (1 / 3, 1, 3)
        ]
        linears = [float(row.split("|")[3]) for row in rows]
        chosen = next(i for i, row in enumerate(rows) if "(chosen)" in row)
        assert linears[chosen] == max(linears)
    assert "loss.simclr.temperature=0.2" in tuning and "loss.gamma=2" in tuning
    assert len(list(runs.glob("*/metrics.json"))) == 8
    # The long phase can take its baseline by name instead of from the main table (whose runs it then skips).
    assert study.main(["ablate", "long", "--long-baseline=simclr", *tiny_study]) == 0
    assert not (results / "study_main.md").exists()  # none of the main table's runs was made
    assert "and `simclr`, named with --long-baseline" in (results / "study_long.md").read_text()
    assert study.main(["main", "ablate", "long", *tiny_study]) == 0
    main_table = (results / "study_main.md").read_text()
    assert "| matrix_ssl | 1 | 1 |" in main_table and "| simclr | 1 | 1 |" in main_table
    assert "*raw pixels* (reference)" in main_table
    ablation = (results / "study_ablation.md").read_text()
    precision = training_precision(load_config("fashion-mnist/matrix_ssl", []))
    assert "| tuned recipe | `-` | 1 |" in ablation and "| γ = 0 | `loss.gamma=0` | 1 |" in ablation
    for row in (line for line in ablation.splitlines() if line.startswith("| γ = 0 |")):
        assert row.split("|")[-3].strip() == precision and row.endswith(" min |")  # precision, wall / run
    long = (results / "study_long.md").read_text()
    assert "matrix_ssl (" in long and "60 minutes" in long
    for metrics in runs.glob("*_m0.01_*/metrics.json"):
        assert json.loads(metrics.read_text())["global_step"] >= 23
    # A run set aside (its record moved to study_runs/set_aside/ with a reason) is listed under its table.
    (kept,) = (results / "study_runs").glob("simclr_m0.01_*_seed0.json")
    record = json.loads(kept.read_text()) | {"set_aside": "planned under load"}
    (results / "study_runs" / "set_aside").mkdir()
    (results / "study_runs" / "set_aside" / f"{kept.stem}.2.json").write_text(json.dumps(record))
    assert study.main(["report", *tiny_study]) == 0
    m = record["metrics"]
    assert (
        (results / "study_long.md")
        .read_text()
        .endswith(
            f"\nRuns made and set aside (not in the table above):\n\n- simclr seed 0, {m['global_step']} steps, "
            f"{record['wall_s'] / 60:.1f} min: linear {m['linear_top1']:.2f}, kNN {m['knn_top1']:.2f}, effective "
            f"rank {m['feature_effective_rank']:.2f} (`study_runs/set_aside/{kept.stem}.2.json`): planned under load\n"
        )
    )
    finished = {path: path.stat().st_mtime_ns for path in runs.glob("*/metrics.json")}
    tables = {path.name: path.read_text() for path in results.glob("study_*.md")}
    # `report` trains nothing and leaves the pages as they were, headers included (their command and date are
    # those of the call that made the figures).
    with monkeypatch.context() as later:
        later.setattr(study, "header", lambda title: f"# {title}\n\n- command: a later one\n\n")
        assert study.main(["report", *tiny_study]) == 0
    assert {path: path.stat().st_mtime_ns for path in runs.glob("*/metrics.json")} == finished
    assert {path.name: path.read_text() for path in results.glob("study_*.md")} == tables
    table = lambda text: text[text.index("\n|") :]  # noqa: E731
    for name, text in tables.items():
        assert table((results / name).read_text()) == table(text), name
    # A fresh clone has the committed records but no run folders: every phase continues without training, and
    # the tables come out the same.
    shutil.rmtree(runs)
    assert study.main(["tune", "main", "ablate", "long", *tiny_study]) == 0
    assert not runs.exists()
    for name, text in tables.items():
        assert table((results / name).read_text()) == table(text), name
    # Without records or run folders, nothing has finished: the pages already there are kept, not blanked.
    shutil.rmtree(results / "study_runs")
    capsys.readouterr()
    assert study.main(["report", *tiny_study]) == 0
    err = capsys.readouterr().err
    assert "no reference rows: references_" in err and "kept study_long.md" in err
    assert {path.name: path.read_text() for path in results.glob("study_*.md")} == tables

"""benchmarks/lm_mce.py: per-seed data, the γ search, stored and reused runs, and the results page (end to end on
the tiny random Llama of the LM tests, and with hand-made runs)."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

import pytest

from matrixssl.errors import MatrixSSLError
from matrixssl.lm.data import Problem, generate_problems

pytestmark = pytest.mark.usefixtures("one_thread")

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
CELL = r"(\d+\.\d\d) \((\d+)/(\d+)\)"  # an accuracy cell: percent (correct/total)


def table_row(text: str, task: str, section: str, name: str) -> list[str]:
    """The cells of the row named `name` (or `name (...)`) in the table under `### {section}` of `## {task}`."""
    part = text.split(f"\n## {task}\n", 1)[1].split("\n## ", 1)[0]
    part = part.split(f"\n### {section}", 1)[1].split("\n### ", 1)[0]
    rows = [
        [cell.strip() for cell in line.strip("|").split("|")]
        for line in part.splitlines()
        if line.startswith("|")
    ]
    (row,) = [row for row in rows if row[0] == name or row[0].startswith(f"{name} (")]
    return row


def accuracy(cell: str) -> float:
    match = re.fullmatch(CELL, cell.removesuffix(" **picked**"))
    assert match, cell
    value, correct, total = match.groups()
    assert float(value) == pytest.approx(100 * int(correct) / int(total))
    return float(value)


@pytest.fixture
def lm_mce(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Any:
    """The benchmark script as a module, writing its page into tmp_path."""
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    import _report
    import lm_mce

    monkeypatch.setattr(_report, "RESULTS", tmp_path)
    return lm_mce


@pytest.mark.parametrize("task", ["arithmetic", "gsm_symbolic"])
def test_each_seed_draws_its_own_disjoint_data(lm_mce: Any, task: str) -> None:
    if task == "gsm_symbolic":
        pytest.importorskip("reasoning_gym")
    args = lm_mce.parse_args(["--n-train", "30", "--n-test", "10", "--n-val", "5", "--seeds", "2", "0", "1"])
    data = lm_mce.task_data(args, task)
    questions = {seed: {p.question for p in data.test[seed]} for seed in args.seeds}
    trained = {p.question for seed in args.seeds for p in data.train[seed]}
    assert all(len(data.train[seed]) == 30 and len(questions[seed]) == 10 for seed in args.seeds)
    assert len({frozenset(q) for q in questions.values()}) == 3  # every seed its own held-out set
    assert len(trained) == 90  # and its own training set
    assert not trained & set().union(*questions.values())
    # the validation slice continues the search seed's (the first seed's) train stream
    assert data.train[2] + data.validation == generate_problems(task, 35, 2, "train")
    assert data.train[0] == generate_problems(task, 30, 0, "train")
    assert (data.max_length, data.max_new_tokens) == lm_mce.TASK_LENGTHS[task]


def test_a_shared_question_stops_the_benchmark(lm_mce: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """The held-out sets are checked against every training set, not trusted to the generator's exclusion."""
    real = lm_mce.generate_problems
    monkeypatch.setattr(
        lm_mce, "generate_problems", lambda task, n, seed, split, exclude=(): real(task, n, 0)
    )
    args = lm_mce.parse_args(["--n-train", "6", "--n-test", "3", "--n-val", "2", "--seeds", "0", "1"])
    with pytest.raises(MatrixSSLError, match="held-out set of seed 0 and training set of seed 0: 3"):
        lm_mce.task_data(args, "arithmetic")


def fail(*args: Any, **kwargs: Any) -> None:
    raise AssertionError("nothing should be trained, evaluated or loaded")


def test_runs_are_stored_reused_and_reported(
    lm_mce: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    saved_model: Path,
) -> None:
    runs = tmp_path / "runs"
    argv = ["--model", str(saved_model), "--tasks", "arithmetic", "--n-train", "8", "--n-test", "4"]
    argv += ["--n-val", "4", "--seeds", "0", "1", "--gammas", "0.3", "1", "--steps", "2", "--batch-size", "4"]
    argv += [
        "--lr",
        "1e-3",
        "--top-k",
        "8",
        "--max-new-tokens",
        "6",
        "--device",
        "cpu",
        "--eval-batch-size",
        "4",
    ]
    argv += [
        "--train-top-layers",
        "1",
        "--runs",
        str(runs),
        "--work",
        str(tmp_path / "work"),
        "--output",
        "out.md",
    ]
    monkeypatch.setattr(sys, "argv", ["benchmarks/lm_mce.py", *argv])

    # --report before any run: every row pending, nothing loaded or trained
    real = {
        name: getattr(lm_mce, name) for name in ("finetune", "evaluate_accuracy", "load_model_and_tokenizer")
    }
    for name in real:
        monkeypatch.setattr(lm_mce, name, fail)
    text = lm_mce.main([*argv, "--report"]).read_text()
    assert "- runs: 0 of 10 made (10 pending, 0 failed)" in text  # 2 base, 2 CE, 2 x 2 search, 2 picked
    for name in ("before fine-tuning", "CE"):
        assert table_row(text, "arithmetic", "Held-out", name)[1:] == ["-", "pending", "pending"]
    assert (
        table_row(text, "arithmetic", "Held-out", "CE + relation-MCE")[0]
        == "CE + relation-MCE (γ search pending)"
    )
    assert not runs.exists()
    for name, function in real.items():
        monkeypatch.setattr(lm_mce, name, function)

    # the benchmark: 8 fine-tunes (2 x 2 search runs, CE at 2 seeds, each picked form at seed 1)
    trained = []

    def counting_finetune(model: Any, tokenizer: Any, problems: list[Problem], config: Any, **kw: Any) -> Any:
        trained.append((config.loss, config.mce_form, config.gamma, config.seed, problems[0].question))
        return real["finetune"](model, tokenizer, problems, config, **kw)

    monkeypatch.setattr(lm_mce, "finetune", counting_finetune)
    path = lm_mce.main(argv)
    assert path == tmp_path / "out.md"
    text = path.read_text()
    assert len(trained) == 8 == len(set(trained))
    assert {(loss, seed) for loss, _, _, seed, _ in trained} == {("ce", 0), ("ce", 1), ("mce", 0), ("mce", 1)}
    assert len({question for *_, seed, question in trained if seed == 0}) == 1
    assert len({question for _, _, _, _, question in trained}) == 2  # each seed its own training problems
    assert len(list((runs / "arithmetic").glob("*.json"))) == 10
    assert "- runs: 10 of 10 made (0 pending, 0 failed)" in text
    assert f"- command: `{Path(sys.executable).name} benchmarks/lm_mce.py {' '.join(argv)}`" in text
    assert "2 steps, batch 4 (1.00 passes" in text and "top_k 8" in text and "ridge 0.001 (P and Q)" in text
    assert "parameters trained: top 1 decoder block + final norm" in text

    # the search: CE as reference, then every γ of each form; one picked per form, on the validation slice
    for form in ("CE + embedding-MCE", "CE + relation-MCE"):
        part = text.split("### γ search", 1)[1].split("\n### ", 1)[0]
        rows = [line for line in part.splitlines() if line.startswith(f"| {form} |")]
        assert len(rows) == 2 and sum("**picked**" in row for row in rows) == 1
        picked = next(row for row in rows if "**picked**" in row).split("|")[2].strip()
        name, mean, seed_0, seed_1 = table_row(text, "arithmetic", "Held-out", form)
        assert name == f"{form} (γ = {picked})"
        values = [accuracy(seed_0), accuracy(seed_1)]
        assert mean == f"{sum(values) / 2:.2f} ± {abs(values[0] - values[1]) / 2**0.5:.2f}"
        _, gain, *gains = table_row(text, "arithmetic", "Difference against CE", form)
        ce = [accuracy(cell) for cell in table_row(text, "arithmetic", "Held-out", "CE")[2:]]
        assert [float(g) for g in gains] == pytest.approx([v - c for v, c in zip(values, ce)])
    reference = table_row(text, "arithmetic", "γ search", "CE")
    assert reference[0] == "CE (reference)" and accuracy(reference[2]) >= 0 and accuracy(reference[3]) >= 0
    for cell in table_row(text, "arithmetic", "Held-out", "before fine-tuning")[2:]:
        assert accuracy(cell) >= 0  # the base model on each seed's held-out set
    for name in ("CE", "CE + embedding-MCE", "CE + relation-MCE"):
        _, mean, seed_0, seed_1, train_ce, per_answer, overhead = table_row(text, "arithmetic", "Time", name)
        # the tiny model's steps take milliseconds; its CE is near log(300)
        assert float(seed_0) >= 0 and float(per_answer) >= 0 and 3 < float(train_ce) < 7
        assert overhead == "–" if name == "CE" else re.fullmatch(r"[+-]\d+\.\d%", overhead)
    assert text.count("\n  - before fine-tuning: `") == 3 and text.count("\n  - CE + relation-MCE (γ = ") == 3
    record = json.loads(next((runs / "arithmetic").glob("relation_g1_seed0_*.json")).read_text())
    assert record["key"]["finetune"]["ridge"] == 1e-3 and record["validation"]["total"] == 4
    assert record["key"]["finetune"]["precision"] == "32-true"  # the benchmark's default on every machine
    assert record["device"].startswith("CPU (") and record["device"].endswith(" torch threads")
    assert len(record["scored"]) == 4 and record["total"] == 4
    log = capsys.readouterr().err
    assert log.count("loading the model") == 1
    assert "arithmetic base seed 0: evaluating" in log and "arithmetic base seed 1: evaluating" in log

    # again: everything is reused, nothing loaded, trained or evaluated; the same page
    for name in real:
        monkeypatch.setattr(lm_mce, name, fail)
    assert lm_mce.main(argv).read_text() == text
    assert lm_mce.main([*argv, "--report"]).read_text() == text


def test_a_stopped_fine_tune_goes_on_from_its_last_checkpoint(
    lm_mce: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, saved_model: Path
) -> None:
    """Stopped (Ctrl-C) after step 5 of 6 with a checkpoint every 2 steps, the run restarts from step 4; stopped
    again while evaluating, it restarts from its last step; it ends with the record an uninterrupted run gets.
    Only the newest checkpoint is kept, and none once the record is stored."""
    from transformers import TrainerCallback

    argv = ["--model", str(saved_model), "--tasks", "arithmetic", "--n-train", "24", "--n-test", "4"]
    argv += ["--n-val", "4", "--seeds", "0", "--gammas", "1", "--steps", "6", "--batch-size", "4"]
    argv += ["--lr", "1e-3", "--max-new-tokens", "6", "--device", "cpu", "--eval-batch-size", "4"]
    argv += ["--checkpoint-every", "2", "--output", "out.md"]
    stopping = [*argv, "--runs", str(tmp_path / "runs"), "--work", str(tmp_path / "work")]
    real_finetune, real_evaluate = lm_mce.finetune, lm_mce.evaluate_accuracy

    class StopAfterStep5(TrainerCallback):  # type: ignore[misc]
        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if state.global_step == 5:
                raise KeyboardInterrupt

    def stopped_in_training(*args: Any, **kwargs: Any) -> Any:
        return real_finetune(*args, **kwargs, callbacks=[StopAfterStep5()])

    def stopped_in_evaluation(*args: Any, **kwargs: Any) -> Any:
        raise KeyboardInterrupt

    def only_ce(args: Any, runs: Any, task: str) -> list[Any]:
        return [lm_mce.Spec(task, "ce", 0)]

    def checkpoints() -> list[str]:
        (progress,) = (tmp_path / "work" / "arithmetic").iterdir()
        return sorted(path.name for path in progress.glob("checkpoint-*"))

    monkeypatch.setattr(lm_mce, "plan", only_ce)
    monkeypatch.setattr(lm_mce, "finetune", stopped_in_training)
    with pytest.raises(KeyboardInterrupt):
        lm_mce.main(stopping)
    assert checkpoints() == ["checkpoint-4"]
    monkeypatch.setattr(lm_mce, "finetune", real_finetune)
    monkeypatch.setattr(lm_mce, "evaluate_accuracy", stopped_in_evaluation)
    with pytest.raises(KeyboardInterrupt):
        lm_mce.main(stopping)
    assert checkpoints() == ["checkpoint-6"]  # the last step's state
    assert not (tmp_path / "runs").exists()

    monkeypatch.setattr(lm_mce, "evaluate_accuracy", real_evaluate)
    lm_mce.main(stopping)
    lm_mce.main([*argv, "--runs", str(tmp_path / "whole"), "--work", str(tmp_path / "work-whole")])
    (resumed,) = (tmp_path / "runs" / "arithmetic").glob("ce_*.json")
    (whole,) = (tmp_path / "whole" / "arithmetic").glob("ce_*.json")
    assert resumed.name == whole.name  # the same key: saving is not a setting of the result
    resumed_record, whole_record = json.loads(resumed.read_text()), json.loads(whole.read_text())
    assert resumed_record["resumed_from_step"] == 6 and whole_record["resumed_from_step"] is None
    assert resumed_record["seconds_per_step"] > 0
    assert resumed_record["train_cross_entropy"] == pytest.approx(
        whole_record["train_cross_entropy"], rel=1e-5
    )
    assert resumed_record["scored"] == whole_record["scored"]
    assert resumed_record["outputs"] == whole_record["outputs"]
    assert not any((tmp_path / "work" / "arithmetic").iterdir())
    assert not any((tmp_path / "work-whole" / "arithmetic").iterdir())
    # its time counts the steps made before the stop, from the step times the checkpoint kept
    history = {"step": [1, 2, 3, 4], "seconds": [0.5, 1.0, 2.0, 4.0]}
    assert lm_mce.earlier_steps_seconds({"resumed_from_step": 2, "history": history}) == 1.5
    assert lm_mce.earlier_steps_seconds({"resumed_from_step": None, "history": history}) == 0


def made_run(correct: int, seconds: float | None = None, valid: int = -1, **extra: Any) -> dict[str, Any]:
    """A hand-made run record on 20 problems, its first `correct` right: a fine-tune when `seconds` (per step)
    is given, scored on the validation slice when `valid` is."""
    record: dict[str, Any] = {"accuracy": correct / 20, "correct": correct, "total": 20, "eval_seconds": 10.0}
    record |= {
        "outputs": ["a\nb"] * 3,
        "model_file": "m.gguf",
        "scored": "1" * correct + "0" * (20 - correct),
    }
    if seconds is not None:
        record |= {
            "seconds_per_step": seconds,
            "train_cross_entropy": 0.5,
            "train_seconds": 50.0,
            "trained": 10,
        }
        record |= {"parameters": 100, "tokens": 48.0, "answer_tokens": 19.0, "precision": "32-true"}
    if valid >= 0:
        record["validation"] = {"accuracy": valid / 20, "correct": valid, "total": 20, "eval_seconds": 1.0}
    return record | extra


def test_page_numbers_over_three_seeds(lm_mce: Any, tmp_path: Path) -> None:
    """Means, sample stds, same-seed differences, the γ pick, partial rows and the overhead, worked by hand."""
    args = lm_mce.parse_args(
        ["--tasks", "arithmetic", "--n-train", "60", "--n-test", "20", "--runs", str(tmp_path)]
    )
    test = [Problem(f"q{i}", f"#### {i}", str(i)) for i in range(20)]
    sets = {seed: test for seed in (0, 1, 2)}
    runs = lm_mce.Runs(args, {"arithmetic": lm_mce.TaskData("arithmetic", sets, sets, test, 256, 40)})

    def store(
        row: str, seed: int, correct: int, seconds: float = 0.0, gamma: float | None = None, valid: int = -1
    ) -> None:
        record = made_run(correct, None if row == "base" else seconds, valid)
        runs._store(lm_mce.Spec("arithmetic", row, seed, gamma), record)

    for seed in range(3):
        store("base", seed, 2 + seed)  # 10, 15, 20 %: mean 15, std 5
    for seed, (ce, embedding) in enumerate([(6, 7), (7, 9), (8, 8)]):  # correct answers out of 20
        store("ce", seed, ce, 4.0 + 0.2 * seed, valid=10 if seed == 0 else -1)
        if seed:
            store("embedding", seed, embedding, 5.0 + 0.2 * seed, 0.3)
    # the search on seed 0: embedding's validation 10, 12, 12 of 20 (a tie: the smaller γ); relation's γ 0.1 failed
    for gamma, valid, held_out in ((0.1, 10, 5), (0.3, 12, 7), (1.0, 12, 9)):
        store("embedding", 0, held_out, 5.0, gamma, valid)
    failure = {"error": "the loss became nan at step 3; lower --lr", "model_file": "m.gguf"}
    runs._store(lm_mce.Spec("arithmetic", "relation", 0, 0.1), failure)
    store("relation", 0, 4, 6.3, 0.3, valid=5)
    store("relation", 0, 4, 6.3, 1.0, valid=9)
    store("relation", 1, 6, 6.3, 1.0)  # seed 2 not run yet
    text = lm_mce.markdown(args, runs)

    search = text.split("### γ search", 1)[1].split("\n### ", 1)[0]
    assert "| CE (reference) | – | 50.00 (10/20) | 30.00 (6/20) | 0.5000 | 4.00 |" in search
    assert "| CE + embedding-MCE | 0.1 | 50.00 (10/20) | 25.00 (5/20) | 0.5000 | 5.00 |" in search
    assert "| CE + embedding-MCE | 0.3 | 60.00 (12/20) **picked** | 35.00 (7/20) |" in search
    assert "| CE + embedding-MCE | 1 | 60.00 (12/20) | 45.00 (9/20) |" in search
    assert "| CE + relation-MCE | 0.1 | failed | failed | – | – |" in search
    assert "| CE + relation-MCE | 1 | 45.00 (9/20) **picked** | 20.00 (4/20) |" in search
    held_out = {name: table_row(text, "arithmetic", "Held-out", name) for name in lm_mce.ROW_NAMES.values()}
    assert held_out["before fine-tuning"][1:] == [
        "15.00 ± 5.00",
        "10.00 (2/20)",
        "15.00 (3/20)",
        "20.00 (4/20)",
    ]
    assert held_out["CE"][1:] == ["35.00 ± 5.00", "30.00 (6/20)", "35.00 (7/20)", "40.00 (8/20)"]
    # embedding at γ 0.3: 35, 45, 40 (seed 0 is the search run)
    assert held_out["CE + embedding-MCE"][:2] == ["CE + embedding-MCE (γ = 0.3)", "40.00 ± 5.00"]
    assert held_out["CE + relation-MCE"] == [
        "CE + relation-MCE (γ = 1)", "25.00 ± 7.07 (2 of 3 seeds)", "20.00 (4/20)", "30.00 (6/20)", "pending"
    ]  # fmt: skip
    assert table_row(text, "arithmetic", "Difference", "CE + embedding-MCE")[1:] == [
        "5.00 ± 5.00", "+5.00", "+10.00", "+0.00"
    ]  # fmt: skip
    assert table_row(text, "arithmetic", "Difference", "CE + relation-MCE")[1:] == [
        "-7.50 ± 3.54 (2 of 3 seeds)", "-10.00", "-5.00", "pending"
    ]  # fmt: skip
    # answer by answer (each run's first `correct` problems right), MCE v CE: embedding 7 v 6, 9 v 7, 8 v 8
    # right; relation 4 v 6, 6 v 7 (seed 2 pending)
    assert table_row(text, "arithmetic", "The same problems", "CE + embedding-MCE")[1:] == [
        "3", "21", "0", "3", "36", "0.25"
    ]  # fmt: skip
    assert table_row(text, "arithmetic", "The same problems", "CE + relation-MCE")[1:] == [
        "2", "10", "3", "0", "27", "0.25"
    ]  # fmt: skip
    assert table_row(text, "arithmetic", "Time", "CE")[1:] == [
        "4.20 ± 0.20",
        "4.00",
        "4.20",
        "4.40",
        "0.5000",
        "0.500",
        "–",
    ]
    assert table_row(text, "arithmetic", "Time", "CE + embedding-MCE")[-1] == "+23.8%"  # 5.2 / 4.2 - 1
    assert table_row(text, "arithmetic", "Time", "CE + relation-MCE")[1:5] == [
        "6.30 ± 0.00 (2 of 3 seeds)",
        "6.30",
        "6.30",
        "pending",
    ]
    assert (
        table_row(text, "arithmetic", "Time", "CE + relation-MCE")[-1] == "+53.8%"
    )  # (6.3/4 + 6.3/4.2) / 2 - 1
    assert "Base model evaluation: 0.500 s/answer." in text
    # 3 base + 3 CE + 6 search + 2 x 2 other seeds of the picked forms; 30 + 183 + 183 + 120 + 122 + 60 s
    assert "- runs: 15 of 16 made (1 pending, 1 failed), 11.6 min" in text
    assert "120 steps, batch 8 (16.00 passes over the training problems)" in text  # 120 x 8 / 60 problems
    assert "parameters trained: all, 10 of 100" in text and "precision 32-true;" in text
    assert "48.0 tokens per training example on average, 19.0 of them supervised" in text
    assert "  - before fine-tuning: `a ⏎ b`" in text and "- q0 (answer 0)" in text


def test_the_exact_mcnemar_p_value(lm_mce: Any) -> None:
    """Two-sided: twice the binomial(n, 1/2) tail of the smaller count, at most 1."""
    assert lm_mce.sign_test_p(0, 5) == 2 / 32
    assert lm_mce.sign_test_p(9, 1) == lm_mce.sign_test_p(1, 9) == 2 * (1 + 10) / 1024
    assert lm_mce.sign_test_p(3, 3) == lm_mce.sign_test_p(0, 0) == 1.0
    ce, mce = {"scored": "1100"}, {"scored": "1010"}
    assert lm_mce.paired_answers([(ce, mce), (mce, mce)]) == {
        "both": 3,
        "only_ce": 1,
        "only_mce": 1,
        "neither": 3,
    }


def test_run_records_are_kept_beside_the_page_by_default(lm_mce: Any, tmp_path: Path) -> None:
    """The records are committed with the page, so a fresh clone goes on where the last machine stopped."""
    assert lm_mce.parse_args([]).runs == tmp_path / "lm_mce_runs"
    # The committed page names the folder relative to the repository, the same on every clone.
    assert lm_mce.shown_path(BENCHMARKS / "results" / "lm_mce_runs") == "benchmarks/results/lm_mce_runs"
    assert lm_mce.shown_path(tmp_path) == str(tmp_path)


def test_bad_settings_stop_before_anything_is_made(lm_mce: Any, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(MatrixSSLError, match="steps must be a positive integer, got 0"):
        lm_mce.main(["--model", "/nonexistent", "--steps", "0"])
    with pytest.raises(MatrixSSLError, match="top_k must be None \\(exact\\) or a positive integer"):
        lm_mce.main(["--model", "/nonexistent", "--top-k", "-1"])
    for flags, message in (
        (["--n-val", "0"], "--n-val must be a positive integer, got 0"),
        (["--checkpoint-every", "-1"], "--checkpoint-every must be 0 or more, got -1"),
        (["--seeds", "0", "0"], "--seeds has a value twice"),
        (["--precision", "auto"], "argument --precision: invalid choice: 'auto'"),
        (
            ["--tasks", "gsm_symbolic"],
            "--search-task arithmetic is not among --tasks (gsm_symbolic): add it to --tasks, or pick γ on one of "
            "them with --search-task gsm_symbolic",
        ),
    ):
        with pytest.raises(SystemExit) as exit_info:
            lm_mce.main(flags)
        assert exit_info.value.code == 2 and message in capsys.readouterr().err


def test_the_other_tasks_take_the_gamma_picked_on_the_first(lm_mce: Any, tmp_path: Path) -> None:
    """Only the first task searches γ; the second runs CE and each form at the first task's pick, at every seed
    (its search seed's fine-tunes scored on its own validation slice), and waits for a form whose search is
    not complete."""
    # the search task is arithmetic (the default), whatever the order of --tasks
    args = lm_mce.parse_args(["--tasks", "gsm_symbolic", "arithmetic", "--runs", str(tmp_path)])
    test = [Problem(f"q{i}", f"#### {i}", str(i)) for i in range(20)]
    sets = {seed: test for seed in (0, 1, 2)}
    data = {task: lm_mce.TaskData(task, sets, sets, test, 256, 40) for task in args.tasks}
    runs = lm_mce.Runs(args, data)
    Spec = lm_mce.Spec

    def store(
        task: str, row: str, seed: int, gamma: float | None, correct: int, valid: int = -1, device: str = "A"
    ) -> None:
        runs._store(Spec(task, row, seed, gamma), made_run(correct, 2.0, valid, device=device))

    base_and_ce = [Spec("gsm_symbolic", "base", s) for s in (0, 1, 2)]
    assert lm_mce.plan(args, runs, "gsm_symbolic") == base_and_ce + [
        Spec("gsm_symbolic", "ce", s) for s in (0, 1, 2)
    ]
    for gamma, valid in ((0.1, 9), (0.3, 12), (1.0, 11)):  # embedding's search is complete: γ 0.3
        store("arithmetic", "embedding", 0, gamma, 10, valid)
    store("arithmetic", "relation", 0, 0.1, 10, 9)  # relation's is not
    assert lm_mce.plan(args, runs, "gsm_symbolic") == base_and_ce + [
        spec
        for s in (0, 1, 2)
        for spec in (Spec("gsm_symbolic", "ce", s), Spec("gsm_symbolic", "embedding", s, 0.3))
    ]
    store("gsm_symbolic", "ce", 0, None, 2, valid=3)
    store("gsm_symbolic", "embedding", 0, 0.3, 4, valid=1)
    store("gsm_symbolic", "embedding", 1, 0.3, 5, device="B")
    text = lm_mce.markdown(args, runs)

    assert "γ is searched per MCE form on arithmetic, seed 0," in text
    assert ", on every task (the other tasks take the γ picked there)" in text
    section = text.split("\n## gsm_symbolic\n", 1)[1].split("\n## ", 1)[0]
    assert "### γ search" not in section
    validation = section.split(
        "### Validation slice (seed 0; γ as picked on arithmetic, not searched here)", 1
    )
    rows = [line for line in validation[1].split("\n### ", 1)[0].splitlines() if line.startswith("| CE")]
    assert rows == [
        "| CE (reference) | – | 15.00 (3/20) | 10.00 (2/20) | 0.5000 | 2.00 |",
        "| CE + embedding-MCE | 0.3 | 5.00 (1/20) | 20.00 (4/20) | 0.5000 | 2.00 |",
        "| CE + relation-MCE | pending | pending | pending | – | – |",
    ]
    assert table_row(text, "gsm_symbolic", "Held-out", "CE + embedding-MCE")[:2] == [
        "CE + embedding-MCE (γ = 0.3)", "22.50 ± 3.54 (2 of 3 seeds)"
    ]  # fmt: skip
    # time per step: compared with CE only on the same seed and machine (seed 0: 2.0 s against 2.0 s)
    assert table_row(text, "gsm_symbolic", "Time", "CE + embedding-MCE")[-1] == "+0.0%"
    assert "\nMachines: A (2 runs); B (1 run)\n" in section
    store("gsm_symbolic", "embedding", 0, 0.3, 4, valid=1, device="B")
    assert table_row(lm_mce.markdown(args, runs), "gsm_symbolic", "Time", "CE + embedding-MCE")[-1] == "–"
    # arithmetic: 3 base + 13 fine-tunes; gsm_symbolic: 3 base + 9 fine-tunes (no search)
    assert "- runs: 7 of 28 made (21 pending, 0 failed)" in text


@pytest.mark.parametrize("tasks", [["arithmetic"], ["arithmetic", "gsm_symbolic"]])
@pytest.mark.parametrize("seeds", [["0"], ["0", "1"], ["0", "1", "2"]])
def test_the_stated_counts_are_the_plan(
    lm_mce: Any, tmp_path: Path, tasks: list[str], seeds: list[str]
) -> None:
    """Once every γ is picked, the plan makes as many fine-tunes and evaluations as run_counts says."""
    args = lm_mce.parse_args(
        ["--tasks", *tasks, "--seeds", *seeds, "--gammas", "0.1", "1", "--runs", str(tmp_path)]
    )
    test = [Problem("q", "#### 1", "1")]
    sets = {int(seed): test for seed in seeds}
    runs = lm_mce.Runs(args, {task: lm_mce.TaskData(task, sets, sets, test, 256, 40) for task in tasks})
    validation = {"accuracy": 1.0, "correct": 1, "total": 1, "eval_seconds": 1.0}
    for form in lm_mce.FORMS:
        for gamma in args.gammas:
            runs._store(lm_mce.Spec("arithmetic", form, 0, gamma), {"validation": validation})
    specs = [spec for task in tasks for spec in lm_mce.plan(args, runs, task)]
    n = lm_mce.run_counts(len(tasks), len(seeds), len(args.gammas))
    assert len(specs) == len(set(specs)) == n["all_finetunes"] + len(tasks) * n["base"]
    assert len(specs) + sum(lm_mce.validates(args, spec) for spec in specs) == n["all_evaluations"]


def test_help_states_the_number_of_runs(lm_mce: Any) -> None:
    assert lm_mce.run_counts(2, 3, 3) == {
        "search": 6, "finetunes": 13, "other_finetunes": 9, "base": 3, "all_finetunes": 22, "all_evaluations": 38
    }  # fmt: skip
    assert lm_mce.run_counts(1, 3, 3)["all_finetunes"] == 13
    assert "13 fine-tunes on the search task" in lm_mce.EPILOG and "9 on each other task" in lm_mce.EPILOG
    assert "22 in all for 2 tasks" in lm_mce.EPILOG and "38 evaluations" in lm_mce.EPILOG

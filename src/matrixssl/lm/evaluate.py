"""Exact-match accuracy of greedy answers to math word problems (GSM8K-style answer extraction).

The model sees `format_prompt(question)` (the fine-tuning prompt), answers greedily, and its output is cut
at the next `Question:` if it starts another problem; generation stops there too (as lm-eval-harness's GSM8K
task does), since nothing after it is scored. The final answer is the number after `####`, else the last
number (`extract_answer`), compared numerically with the gold answer.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from matrixssl.errors import MatrixSSLError
from matrixssl.lm.data import Problem, answers_match, extract_answer, format_prompt

STOP_TEXT = "\nQuestion:"


@torch.no_grad()
def generate_answers(
    model: nn.Module,
    tokenizer: Any,
    questions: Sequence[str],
    max_new_tokens: int = 256,
    batch_size: int = 16,
    progress: bool = False,
) -> list[str]:
    """Greedy completions of the prompts, left-padded in batches, without the prompt and special tokens."""
    for name, value in (("max_new_tokens", max_new_tokens), ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise MatrixSSLError(f"{name} must be a positive integer, got {value!r}")
    device = next(model.parameters()).device
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    was_training = model.training
    model.eval()
    previous_side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    bar = _progress_bar(len(questions), progress)
    outputs: list[str] = []
    try:
        for start in range(0, len(questions), batch_size):
            prompts = [format_prompt(q) for q in questions[start : start + batch_size]]
            encoded = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=True).to(
                device
            )
            generated = model.generate(  # type: ignore[operator]
                input_ids=encoded["input_ids"],
                attention_mask=encoded["attention_mask"],
                max_new_tokens=max_new_tokens,
                do_sample=False,
                pad_token_id=pad_id,
                eos_token_id=tokenizer.eos_token_id,
                stop_strings=[STOP_TEXT],  # what follows it is cut anyway: no need to generate it
                tokenizer=tokenizer,
            )
            new_tokens = generated[:, encoded["input_ids"].shape[1] :]
            for text in tokenizer.batch_decode(new_tokens, skip_special_tokens=True):
                outputs.append(text.split(STOP_TEXT, 1)[0].strip())
            if bar is not None:
                bar.update(len(prompts))
    finally:
        tokenizer.padding_side = previous_side
        if bar is not None:
            bar.close()
        model.train(was_training)
    return outputs


def score(outputs: Sequence[str], problems: Sequence[Problem]) -> dict[str, Any]:
    """Accuracy of model outputs against the problems' answers, with every prediction for inspection."""
    if len(outputs) != len(problems):
        raise ValueError(f"{len(outputs)} outputs for {len(problems)} problems")
    predictions: list[dict[str, Any]] = []
    for output, problem in zip(outputs, problems):
        predicted = extract_answer(output)
        predictions.append(
            {
                "question": problem.question,
                "gold": problem.answer,
                "predicted": predicted,
                "correct": answers_match(predicted, problem.answer),
                "output": output,
            }
        )
    correct = sum(bool(p["correct"]) for p in predictions)
    total = len(predictions)
    return {
        "accuracy": correct / total if total else 0.0,
        "correct": correct,
        "total": total,
        "predictions": predictions,
    }


def evaluate_accuracy(
    model: nn.Module,
    tokenizer: Any,
    problems: Sequence[Problem],
    max_new_tokens: int = 256,
    batch_size: int = 16,
    progress: bool = False,
) -> dict[str, Any]:
    """Greedy generation + answer extraction + exact match: accuracy, counts, seconds and predictions."""
    start = time.perf_counter()
    outputs = generate_answers(
        model, tokenizer, [p.question for p in problems], max_new_tokens, batch_size, progress
    )
    result = score(outputs, problems)
    result["seconds"] = time.perf_counter() - start
    return result


def _progress_bar(total: int, enabled: bool) -> Any:
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="evaluating", unit="problem", dynamic_ncols=True)

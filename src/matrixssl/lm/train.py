"""Fine-tuning a causal LM with cross-entropy or cross-entropy + matrix cross-entropy, on the Hugging Face
Trainer (accelerate underneath: device placement, mixed precision, accumulation, clipping, the linear schedule,
checkpoints and resuming).

What is added here is what the Trainer does not do by itself:
- the loss: `compute_loss` scores shifted logits with `MatrixCrossEntropyLMLoss` (whose embedding form needs the
  LM head's weight) and reports its cross-entropy and matrix terms;
- the examples: a training example is `format_prompt(question)` + `format_target(solution)` + EOS, and only
  the answer tokens (and EOS) are supervised; the prompt and the padding carry label -100;
- a per-step record (loss terms, seconds per step) kept in the Trainer's log history, so a resumed run's
  record covers the steps before the interruption too;
- a loss that stops being finite ends training with a message (the Trainer would filter it out and go on);
- resuming from the newest checkpoint that was written to the end (one cut short by a kill is skipped);
- a progress bar with the loss terms, and no output at all without it.
"""

from __future__ import annotations

import math
import os
import statistics
import tempfile
import time
from collections.abc import Iterable, Sequence
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor, nn

from matrixssl.errors import MatrixSSLError
from matrixssl.lm.data import Problem, format_prompt, format_target
from matrixssl.lm.loss import DEFAULT_TOP_K, LMLossTerms, MatrixCrossEntropyLMLoss, MCEForm
from matrixssl.lm.model import (
    output_embedding_weight,
    progress_bars,
    save_checkpoint,
    trainable_parameters,
)
from matrixssl.runtime import resolve_precision, write_json

IGNORE_INDEX = -100
# runtime.PRECISIONS less 64-true, which the Trainer has no setting for.
PRECISIONS = ("auto", "32-true", "bf16-mixed", "16-mixed")
# The Trainer writes this file last into a checkpoint-STEP folder.
_TRAINER_STATE = "trainer_state.json"
# What the training record keeps of each optimizer step's log entry.
_HISTORY = ("step", "loss", "cross_entropy", "matrix_cross_entropy", "learning_rate", "seconds")


# ---- the settings ----


def _check_int(name: str, value: object, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        kind = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        raise MatrixSSLError(f"{name} must be {kind}, got {value!r}")


@dataclass(frozen=True)
class FinetuneConfig:
    """Fine-tuning settings, checked once when the config is made; `loss="ce"` is plain cross-entropy,
    `"mce"` adds gamma × MCE in the reading `mce_form` (`MatrixCrossEntropyLMLoss`: "embedding" per token,
    "relation" over the batch). `ridge=None` becomes the form's default when the config is made; `top_k`
    applies to the embedding form only. `precision` takes the runtime's names (`auto` follows
    `runtime.resolve_precision`)."""

    loss: Literal["ce", "mce"] = "mce"
    gamma: float = 1.0
    ridge: float | None = None
    top_k: int | None = DEFAULT_TOP_K
    mce_form: MCEForm = "embedding"
    steps: int = 100
    batch_size: int = 8
    grad_accum: int = 1
    lr: float = 5e-5
    weight_decay: float = 0.0
    warmup_steps: int = 0
    max_grad_norm: float = 1.0
    max_length: int = 256
    seed: int = 0
    precision: str = "auto"
    save_every: int = 0
    # None: every parameter that requires grad; k: only the last k decoder blocks and the final norm.
    train_top_layers: int | None = None

    def __post_init__(self) -> None:
        if self.loss not in ("ce", "mce"):
            raise MatrixSSLError(f"loss must be 'ce' or 'mce', got {self.loss!r}")
        for name in ("steps", "batch_size", "grad_accum", "max_length"):
            _check_int(name, getattr(self, name), 1)
        for name in ("warmup_steps", "save_every", "seed"):
            _check_int(name, getattr(self, name), 0)
        if self.train_top_layers is not None:
            _check_int("train_top_layers", self.train_top_layers, 1)
        if not self.lr > 0 or not math.isfinite(self.lr):
            raise MatrixSSLError(f"lr must be a positive number, got {self.lr!r}")
        if not self.weight_decay >= 0 or not self.max_grad_norm >= 0:
            raise MatrixSSLError("weight_decay and max_grad_norm must be >= 0 (max_grad_norm 0: no clipping)")
        if self.precision not in PRECISIONS:
            raise MatrixSSLError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        # The loss's constructor checks gamma, ridge, top_k and the form, and resolves ridge=None.
        loss = MatrixCrossEntropyLMLoss(self.gamma, self.ridge, self.top_k, form=self.mce_form)
        object.__setattr__(self, "ridge", loss.ridge)


def make_loss(config: FinetuneConfig) -> MatrixCrossEntropyLMLoss:
    """The loss module of a config: gamma 0 (exactly cross-entropy) when `loss="ce"`."""
    gamma = config.gamma if config.loss == "mce" else 0.0
    return MatrixCrossEntropyLMLoss(
        gamma=gamma, ridge=config.ridge, top_k=config.top_k, ignore_index=IGNORE_INDEX, form=config.mce_form
    )


# ---- examples and batches ----


def encode_problems(
    tokenizer: Any, problems: Sequence[Problem], max_length: int
) -> list[dict[str, list[int]]]:
    """Token ids and labels per problem: prompt ids (label -100), answer ids + EOS (labels = ids).

    Prompt and answer are tokenized separately so that the prompt ids equal those used for generation.
    Examples longer than `max_length` are cut from the end; one with no answer token left is dropped.
    """
    if tokenizer.eos_token_id is None:
        raise MatrixSSLError("the tokenizer has no end-of-sequence token; set tokenizer.eos_token")
    examples = []
    for problem in problems:
        prompt = tokenizer(format_prompt(problem.question), add_special_tokens=True)["input_ids"]
        answer = tokenizer(format_target(problem.solution), add_special_tokens=False)["input_ids"]
        answer = [*answer, tokenizer.eos_token_id]
        input_ids = (prompt + answer)[:max_length]
        labels = ([IGNORE_INDEX] * len(prompt) + answer)[:max_length]
        if any(label != IGNORE_INDEX for label in labels[1:]):
            examples.append({"input_ids": input_ids, "labels": labels})
    if not examples:
        raise MatrixSSLError(f"no example fits in max_length={max_length} tokens; raise --max-length")
    return examples


def collate(examples: Sequence[dict[str, list[int]]], pad_token_id: int) -> dict[str, Tensor]:
    """Right-padded `input_ids`, `attention_mask` and `labels` (padding labelled -100)."""
    length = max(len(e["input_ids"]) for e in examples)
    input_ids = torch.full((len(examples), length), pad_token_id, dtype=torch.long)
    labels = torch.full((len(examples), length), IGNORE_INDEX, dtype=torch.long)
    attention_mask = torch.zeros((len(examples), length), dtype=torch.long)
    for row, example in enumerate(examples):
        n = len(example["input_ids"])
        input_ids[row, :n] = torch.tensor(example["input_ids"])
        labels[row, :n] = torch.tensor(example["labels"])
        attention_mask[row, :n] = 1
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


class Collator:
    """Picklable collate function for the Trainer's DataLoader."""

    def __init__(self, pad_token_id: int) -> None:
        self.pad_token_id = pad_token_id

    def __call__(self, examples: Sequence[dict[str, list[int]]]) -> dict[str, Tensor]:
        return collate(examples, self.pad_token_id)


# ---- the loss on a batch ----


def _forward_terms(
    model: nn.Module, batch: dict[str, Tensor], loss_fn: MatrixCrossEntropyLMLoss
) -> tuple[LMLossTerms, Any]:
    outputs = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    weight = output_embedding_weight(model) if loss_fn.needs_embedding else None
    return loss_fn.terms(outputs.logits[:, :-1], batch["labels"][:, 1:], weight), outputs


def causal_lm_terms(
    model: nn.Module, batch: dict[str, Tensor], loss_fn: MatrixCrossEntropyLMLoss
) -> LMLossTerms:
    """Forward a batch and score position t's logits against the token at t + 1."""
    return _forward_terms(model, batch, loss_fn)[0]


# ---- the Trainer ----


def training_arguments(
    config: FinetuneConfig, output_dir: str | os.PathLike[str], device: torch.device, **overrides: Any
) -> Any:
    """The `TrainingArguments` of a config on `device`; keywords override any of them."""
    from transformers import TrainingArguments

    precision = resolve_precision(config.precision, device.type)
    arguments: dict[str, Any] = {
        "output_dir": str(output_dir),
        "max_steps": config.steps,
        "per_device_train_batch_size": config.batch_size,
        "gradient_accumulation_steps": config.grad_accum,
        "learning_rate": config.lr,
        "weight_decay": config.weight_decay,
        "warmup_steps": config.warmup_steps,
        "lr_scheduler_type": "linear",
        "max_grad_norm": config.max_grad_norm,
        "seed": config.seed,
        "bf16": precision == "bf16-mixed",
        "fp16": precision == "16-mixed",
        "use_cpu": device.type == "cpu",
        "logging_steps": 1,
        "logging_nan_inf_filter": False,
        "save_strategy": "steps" if config.save_every else "no",
        "report_to": [],
        "remove_unused_columns": False,
        "dataloader_num_workers": 0,
        "disable_tqdm": True,
    }
    if config.save_every:
        arguments["save_steps"] = config.save_every
    arguments.update(overrides)
    return TrainingArguments(**arguments)


_TRAINER_CLASS: type | None = None


def __getattr__(name: str) -> Any:
    """`MatrixCrossEntropyTrainer` is created on first access (it subclasses transformers.Trainer)."""
    if name == "MatrixCrossEntropyTrainer":
        return _trainer_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _trainer_class() -> type:
    """The Trainer subclass, defined on first use so that importing this module does not import transformers."""
    global _TRAINER_CLASS
    if _TRAINER_CLASS is not None:
        return _TRAINER_CLASS
    try:
        from transformers import Trainer
    except ImportError:
        raise MatrixSSLError("fine-tuning needs transformers: pip install 'matrixssl[lm]'") from None

    class MatrixCrossEntropyTrainer(Trainer):
        """`transformers.Trainer` whose loss is `MatrixCrossEntropyLMLoss` on shifted labels.

        Each optimizer step's log entry also holds the mean cross-entropy and matrix terms of its micro-batches
        and its `seconds`; `progress` shows a bar with them.
        """

        # compute_loss returns a per-batch mean: the Trainer divides it by the accumulation steps.
        loss_is_scaled_for_ga = False

        def __init__(
            self, *args: Any, lm_loss: MatrixCrossEntropyLMLoss, progress: bool = False, **kwargs: Any
        ) -> None:
            super().__init__(*args, **kwargs)
            self.lm_loss = lm_loss
            self.progress = progress
            # Older transformers decide the accumulation scaling from this flag alone.
            self.model_accepts_loss_kwargs = False
            self.last_terms: LMLossTerms | None = None
            self._step_terms: list[Tensor] = []
            self._step_start: float | None = None
            self._bar: Any = None

        def compute_loss(
            self,
            model: nn.Module,
            inputs: dict[str, Tensor],
            return_outputs: bool = False,
            num_items_in_batch: Tensor | int | None = None,
        ) -> Tensor | tuple[Tensor, Any]:
            terms, outputs = _forward_terms(model, inputs, self.lm_loss)
            self.last_terms = terms
            return (terms.total, outputs) if return_outputs else terms.total

        def training_step(
            self, model: nn.Module, inputs: dict[str, Tensor], *args: Any, **kwargs: Any
        ) -> Tensor:
            if self._step_start is None:
                self._step_start = time.perf_counter()
            loss = super().training_step(model, inputs, *args, **kwargs)
            assert self.last_terms is not None
            self._step_terms.append(torch.stack([term.detach().float() for term in self.last_terms]))
            return loss

        def log(self, logs: dict[str, float], *args: Any, **kwargs: Any) -> None:
            if "loss" in logs and self._step_terms:  # the entry of an optimizer step
                logs = {**logs, **self._end_step()}
            super().log(logs, *args, **kwargs)
            if "seconds" in logs:
                self._show(logs)

        def _end_step(self) -> dict[str, float]:
            total, cross_entropy, matrix_cross_entropy = torch.stack(self._step_terms).mean(0).tolist()
            assert self._step_start is not None
            seconds = time.perf_counter() - self._step_start
            self._step_terms, self._step_start = [], None
            if not math.isfinite(total):
                raise MatrixSSLError(f"the loss became {total} at step {self.state.global_step}; lower --lr")
            return {
                "cross_entropy": cross_entropy,
                "matrix_cross_entropy": matrix_cross_entropy,
                "seconds": seconds,
            }

        def _show(self, logs: dict[str, float]) -> None:
            if not self.progress:
                return
            if self._bar is None:
                from tqdm.auto import tqdm

                done = self.state.global_step - 1
                self._bar = tqdm(
                    total=self.state.max_steps,
                    initial=done,
                    desc="fine-tuning",
                    unit="step",
                    dynamic_ncols=True,
                )
            self._bar.set_postfix(
                loss=f"{logs['loss']:.4f}", ce=f"{logs['cross_entropy']:.4f}", refresh=False
            )
            self._bar.update(self.state.global_step - self._bar.n)

        def train(self, *args: Any, **kwargs: Any) -> Any:
            """`Trainer.train`, leaving the model as it came: accelerate wraps its forward in autocast for
            mixed precision, which would otherwise stay for evaluation."""
            try:
                return super().train(*args, **kwargs)
            finally:
                self.accelerator.unwrap_model(self.model, keep_fp32_wrapper=False)
                if self._bar is not None:
                    self._bar.close()
                    self._bar = None

    _TRAINER_CLASS = MatrixCrossEntropyTrainer
    return MatrixCrossEntropyTrainer


def make_trainer(
    model: nn.Module,
    tokenizer: Any,
    problems: Sequence[Problem],
    config: FinetuneConfig,
    output_dir: str | os.PathLike[str],
    progress: bool = False,
    callbacks: Iterable[Any] = (),
    **training_arguments_overrides: Any,
) -> Any:
    """A `MatrixCrossEntropyTrainer` for `make_loss(config)` on the model's device; extra keywords override
    TrainingArguments. It trains the parameters `trainable_parameters(model, config.train_top_layers)` picks."""
    from transformers import PrinterCallback

    examples = encode_problems(tokenizer, problems, config.max_length)
    trainable_parameters(model, config.train_top_layers)  # the Trainer optimises what requires grad
    device = next(model.parameters()).device
    if device.type == "cuda" and device.index is not None:
        torch.cuda.set_device(device)  # the Trainer trains on the current CUDA device
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    trainer = _trainer_class()(
        model=model,
        args=training_arguments(config, output_dir, device, **training_arguments_overrides),
        train_dataset=examples,
        data_collator=Collator(pad_id),
        processing_class=tokenizer,
        callbacks=list(callbacks),
        lm_loss=make_loss(config),
        progress=progress,
    )
    trainer.remove_callback(PrinterCallback)  # it would print every step's log entry
    return trainer


def last_checkpoint(output_dir: str | os.PathLike[str]) -> Path | None:
    """The newest `checkpoint-STEP` in `output_dir` that was written to the end (the Trainer writes its state
    file last), so a save cut short by a kill is skipped; None if there is none."""
    found = []
    for path in Path(output_dir).glob("checkpoint-*"):
        step = path.name.removeprefix("checkpoint-")
        if step.isdigit() and (path / _TRAINER_STATE).is_file():
            found.append((int(step), path))
    return max(found)[1] if found else None


def finetune(
    model: nn.Module,
    tokenizer: Any,
    problems: Sequence[Problem],
    config: FinetuneConfig,
    output_dir: str | os.PathLike[str] | None = None,
    resume: bool = False,
    progress: bool = False,
    callbacks: Iterable[Any] = (),
    **training_arguments_overrides: Any,
) -> dict[str, Any]:
    """Fine-tune `model` in place up to `config.steps` optimizer steps and return the training record
    (extra keywords override TrainingArguments, as in `make_trainer`).

    With `output_dir`: `checkpoint-STEP` every `save_every` steps (the Trainer's full state: what `resume=True`
    continues from, at the step it was saved), then the final model and tokenizer in `output_dir/checkpoint`
    and the record in `output_dir/train_metrics.json`. Without it nothing is written. The record holds the
    per-step loss terms, learning rate and seconds, and the mean seconds per step of this call's steps after
    its first (which pays for warm-up; all of the run's if this call resumed at the last step).
    """
    if resume and output_dir is None:
        raise MatrixSSLError("resuming needs the output directory of the interrupted run")
    folder = nullcontext(str(output_dir)) if output_dir is not None else tempfile.TemporaryDirectory()
    with folder as run_dir, progress_bars(progress):
        trainer = make_trainer(
            model, tokenizer, problems, config, run_dir, progress, callbacks, **training_arguments_overrides
        )
        checkpoint = last_checkpoint(run_dir) if resume else None
        if resume and checkpoint is None:
            raise MatrixSSLError(
                f"no complete checkpoint-STEP in {run_dir} to resume from (they are saved with --save-every)"
            )
        result = trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
        model.eval()
        if output_dir is not None:
            save_checkpoint(model, tokenizer, Path(output_dir) / "checkpoint")
    start = int(checkpoint.name.removeprefix("checkpoint-")) if checkpoint else 0
    entries = [entry for entry in trainer.state.log_history if "seconds" in entry]
    history = {key: [entry[key] for entry in entries] for key in _HISTORY}
    # A run resumed from its last step made none in this call: then the whole run's steps are timed.
    seconds = [entry["seconds"] for entry in entries if entry["step"] > start] or history["seconds"]
    summary: dict[str, Any] = {
        "steps": trainer.state.global_step,
        "resumed_from_step": start if checkpoint else None,
        "examples": len(trainer.train_dataset),
        "precision": resolve_precision(config.precision, trainer.args.device.type),
        "final_loss": history["loss"][-1],
        "final_cross_entropy": history["cross_entropy"][-1],
        "training_loss": float(result.training_loss),
        "seconds_per_step": statistics.mean(seconds[1:] or seconds) if seconds else None,
        "config": asdict(config),
        "history": history,
    }
    if output_dir is not None:
        write_json(Path(output_dir) / "train_metrics.json", summary)
    return summary

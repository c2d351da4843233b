"""Fine-tune a Hugging Face causal LM with cross-entropy + matrix cross-entropy on the `transformers` Trainer.

What it shows, in two ways (needs `pip install 'matrixssl[lm]'`):

- `--trainer project` (default): the project's public LM API. `lm.make_trainer` returns a
  `transformers.Trainer` subclass whose loss is `lm.MatrixCrossEntropyLMLoss` and whose log history also holds
  the cross-entropy and matrix terms of every step; `lm.evaluate_accuracy` scores greedy answers.
- `--trainer own`: the loss in a Trainer of your own: override `compute_loss`, score the shifted logits and
  pass the LM head's weight (the token embeddings the matrix term measures distances with).

The data are arithmetic word problems generated offline (`lm.train_test_problems`). By default the model is a
tiny random Llama with a byte-level BPE trained here on those problems, so the script runs anywhere in
seconds and shows the plumbing, not a useful model; `--model default` fine-tunes SmolLM2-135M-Instruct
(install its local file once with `make lm-model`), `--model DIR` a model saved with `save_pretrained`.
Nothing is downloaded.

Run it::

    python examples/lm_trainer.py                                   # tiny random model, a few seconds
    python examples/lm_trainer.py --trainer own --steps 20
    python examples/lm_trainer.py --model default --steps 30 --top-k 32    # a real model (minutes on a CPU)
"""

from __future__ import annotations

import argparse
import os
import tempfile
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # local files only: never reach for the Hub

import torch  # noqa: E402
from torch import Tensor, nn  # noqa: E402

from matrixssl import lm  # noqa: E402


def tiny_model_and_tokenizer(problems: list[lm.Problem], seed: int) -> tuple[Any, Any]:
    """A random 2-block Llama and a ~300-token byte-level BPE trained on the problems' text."""
    import tokenizers
    import transformers

    bpe = tokenizers.Tokenizer(tokenizers.models.BPE())
    bpe.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = tokenizers.decoders.ByteLevel()
    trainer = tokenizers.trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=["<|eos|>", "<|pad|>"],
        initial_alphabet=tokenizers.pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(
        [lm.format_prompt(p.question) + lm.format_target(p.solution) for p in problems], trainer
    )
    tokenizer = transformers.PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        eos_token="<|eos|>",
        pad_token="<|pad|>",
        model_input_names=["input_ids", "attention_mask"],
    )
    torch.manual_seed(seed)
    config = transformers.LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        tie_word_embeddings=True,
        bos_token_id=None,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return transformers.LlamaForCausalLM(config), tokenizer


def own_trainer(
    model: Any, tokenizer: Any, problems: list[lm.Problem], args: argparse.Namespace, output_dir: str
) -> Any:
    """A plain `transformers.Trainer` whose `compute_loss` adds the matrix cross-entropy."""
    import transformers

    loss_fn = lm.MatrixCrossEntropyLMLoss(gamma=args.gamma, ridge=0.01, top_k=args.top_k)
    head = model.get_output_embeddings().weight  # (V, d): taken here, the Trainer may wrap the model

    class MatrixCrossEntropyTrainer(transformers.Trainer):
        def compute_loss(
            self,
            model: nn.Module,
            inputs: dict[str, Any],
            return_outputs: bool = False,
            num_items_in_batch: Tensor | int | None = None,
        ) -> Tensor | tuple[Tensor, Any]:
            outputs = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"])
            # Position t predicts token t + 1; labels are -100 on the prompt and the padding.
            loss = loss_fn(outputs.logits[:, :-1], inputs["labels"][:, 1:], head)
            return (loss, outputs) if return_outputs else loss

    arguments = transformers.TrainingArguments(
        output_dir=output_dir,
        max_steps=args.steps,
        per_device_train_batch_size=args.batch_size,
        learning_rate=args.lr,
        logging_steps=max(args.steps // 5, 1),
        save_strategy="no",
        report_to=[],
        use_cpu=True,
        remove_unused_columns=False,
        disable_tqdm=True,
    )
    trainer = MatrixCrossEntropyTrainer(
        model=model,
        args=arguments,
        train_dataset=lm.encode_problems(tokenizer, problems, max_length=256),  # prompt tokens labelled -100
        data_collator=transformers.DataCollatorForSeq2Seq(tokenizer, label_pad_token_id=-100),
    )
    trainer.remove_callback(transformers.PrinterCallback)  # the log history is printed at the end instead
    return trainer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model", default="tiny", help="'tiny' (random, built here), 'default' or a directory"
    )
    parser.add_argument("--trainer", choices=["project", "own"], default="project")
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--gamma", type=float, default=1.0, help="weight of the matrix cross-entropy")
    parser.add_argument("--top-k", type=int, default=16, help="tokens kept per position in the matrix term")
    parser.add_argument("--train-problems", type=int, default=256)
    parser.add_argument("--test-problems", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    train, test = lm.train_test_problems(
        "arithmetic", n_train=args.train_problems, n_test=args.test_problems, seed=args.seed
    )
    if args.model == "tiny":
        model, tokenizer = tiny_model_and_tokenizer(train, args.seed)
    else:
        model, tokenizer = lm.load_model_and_tokenizer(args.model, progress=False)

    with tempfile.TemporaryDirectory() as output_dir:  # the Trainer wants a folder; nothing is saved here
        if args.trainer == "project":
            config = lm.FinetuneConfig(
                loss="mce", gamma=args.gamma, top_k=args.top_k, steps=args.steps,
                batch_size=args.batch_size, lr=args.lr, seed=args.seed, precision="32-true",
            )  # fmt: skip
            trainer = lm.make_trainer(model, tokenizer, train, config, output_dir)
            print(trainer.lm_loss)
        else:
            trainer = own_trainer(model, tokenizer, train, args, output_dir)
        trainer.train()

    every = max(args.steps // 5, 1)
    for entry in trainer.state.log_history:
        if "loss" in entry and (entry["step"] % every == 0 or entry["step"] == args.steps):
            terms = {
                k: round(entry[k], 4) for k in ("loss", "cross_entropy", "matrix_cross_entropy") if k in entry
            }
            print(f"step {entry['step']:4d}  {terms}")
    model.eval()
    result = lm.evaluate_accuracy(model, tokenizer, test, max_new_tokens=args.max_new_tokens)
    print(f"held-out accuracy: {100 * result['accuracy']:.1f}% of {len(test)} problems")


if __name__ == "__main__":
    main()

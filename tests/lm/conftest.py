"""Tiny causal LMs for the LM tests: a byte-level BPE trained here on the problems, random Llama and GPT-2
models, the Llama saved as a checkpoint directory, and the same kind of Llama written as a Q4_1 GGUF file (the
format of the default model) with the `gguf` package. No network, nothing downloaded."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from matrixssl.lm.data import Problem, format_prompt, format_target, generate_problems

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"


def train_bpe(problems: list[Problem], special_tokens: list[str], vocab_size: int = 300) -> Any:
    """A byte-level BPE (a `tokenizers.Tokenizer`) on the problems' text, special tokens first (well under a
    second)."""
    tokenizers = pytest.importorskip("tokenizers")
    bpe = tokenizers.Tokenizer(tokenizers.models.BPE())
    bpe.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = tokenizers.decoders.ByteLevel()
    trainer = tokenizers.trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=special_tokens,
        initial_alphabet=tokenizers.pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(
        [format_prompt(p.question) + format_target(p.solution) for p in problems], trainer
    )
    return bpe


@pytest.fixture(scope="session")
def problems() -> list[Problem]:
    return generate_problems("arithmetic", 64, seed=0)


@pytest.fixture(scope="session")
def tokenizer(problems: list[Problem]) -> Any:
    """A ~300-token byte-level BPE with separate EOS and padding tokens."""
    transformers = pytest.importorskip("transformers")
    return transformers.PreTrainedTokenizerFast(
        tokenizer_object=train_bpe(problems, ["<|eos|>", "<|pad|>"]),
        eos_token="<|eos|>",
        pad_token="<|pad|>",
        model_input_names=["input_ids", "attention_mask"],
    )


@pytest.fixture(scope="session")
def tiny_llama(tokenizer: Any) -> Callable[..., Any]:
    """Make a random 2-block Llama (hidden 32, tied embeddings) for the tokenizer: `tiny_llama(seed=0)`."""
    transformers = pytest.importorskip("transformers")

    def make(seed: int = 0) -> Any:
        torch.manual_seed(seed)
        config = transformers.LlamaConfig(
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
        return transformers.LlamaForCausalLM(config)

    return make


@pytest.fixture(scope="session")
def tiny_gpt2(tokenizer: Any) -> Callable[..., Any]:
    """Make a random 2-block GPT-2 (hidden 32, no dropout) for the tokenizer: `tiny_gpt2(seed=0)`."""
    transformers = pytest.importorskip("transformers")

    def make(seed: int = 0) -> Any:
        torch.manual_seed(seed)
        config = transformers.GPT2Config(
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
        return transformers.GPT2LMHeadModel(config)

    return make


@pytest.fixture(scope="session")
def saved_model(tmp_path_factory: pytest.TempPathFactory, tokenizer: Any, tiny_llama: Any) -> Path:
    """The tiny Llama and its tokenizer saved by save_pretrained."""
    folder = tmp_path_factory.mktemp("tiny-llama")
    tiny_llama().save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_gguf(tmp_path_factory: pytest.TempPathFactory, problems: list[Problem]) -> Path:
    """A 2-block Llama (hidden 64, 4 heads, 2 key-value heads, tied embeddings) as a GGUF file laid out like
    the default model's: Q4_1 matrices, float32 norms, and a byte-level BPE ("gpt2") tokenizer with merges
    whose token 0, `<|endoftext|>`, is BOS, EOS and padding."""
    gguf = pytest.importorskip("gguf")
    bpe = train_bpe(problems, ["<|endoftext|>"])
    vocabulary = bpe.get_vocab()
    tokens = sorted(vocabulary, key=vocabulary.__getitem__)
    pairs = json.loads(bpe.to_str())["model"]["merges"]
    merges = [pair if isinstance(pair, str) else " ".join(pair) for pair in pairs]
    hidden, ffn, blocks, heads, kv_heads = 64, 128, 2, 4, 2
    path = tmp_path_factory.mktemp("tiny-gguf") / "tiny-llama.Q4_1.gguf"
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name("tiny-llama")
    writer.add_context_length(256)
    writer.add_embedding_length(hidden)
    writer.add_block_count(blocks)
    writer.add_feed_forward_length(ffn)
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv_heads)
    writer.add_rope_dimension_count(hidden // heads)
    writer.add_rope_freq_base(10000.0)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_vocab_size(len(tokens))
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list(tokens)
    writer.add_token_types([3 if token == "<|endoftext|>" else 1 for token in tokens])  # 3: control
    writer.add_token_merges(merges)
    for add_id in (writer.add_bos_token_id, writer.add_eos_token_id, writer.add_pad_token_id):
        add_id(vocabulary["<|endoftext|>"])
    rng = torch.Generator().manual_seed(0)
    q4_1 = gguf.GGMLQuantizationType.Q4_1

    def matrix(name: str, rows: int, columns: int) -> None:
        weight = (0.05 * torch.randn(rows, columns, generator=rng)).numpy()
        writer.add_tensor(name, gguf.quants.quantize(weight, q4_1), raw_dtype=q4_1)

    def norm(name: str) -> None:
        writer.add_tensor(name, torch.ones(hidden).numpy())

    matrix("token_embd.weight", len(tokens), hidden)
    kv_width = kv_heads * hidden // heads
    for block in range(blocks):
        norm(f"blk.{block}.attn_norm.weight")
        matrix(f"blk.{block}.attn_q.weight", hidden, hidden)
        matrix(f"blk.{block}.attn_k.weight", kv_width, hidden)
        matrix(f"blk.{block}.attn_v.weight", kv_width, hidden)
        matrix(f"blk.{block}.attn_output.weight", hidden, hidden)
        norm(f"blk.{block}.ffn_norm.weight")
        matrix(f"blk.{block}.ffn_gate.weight", ffn, hidden)
        matrix(f"blk.{block}.ffn_up.weight", ffn, hidden)
        matrix(f"blk.{block}.ffn_down.weight", hidden, ffn)
    norm("output_norm.weight")
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path

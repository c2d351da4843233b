"""`matrixssl ...` with CUDA's sync debug mode set to "error" inside every non-logging training step.

Any call in the step (or in the teacher update that ends it) that makes the host wait for the GPU then raises
instead of passing silently. Without CUDA this is plain `matrixssl`.

    python benchmarks/_sync_checked_pretrain.py pretrain --config cifar10/matrix_ssl ...
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import torch

from matrixssl.cli import main
from matrixssl.methods import SSLMethod


def _strict_off_logging_steps(hook: Callable[..., Any]) -> Callable[..., Any]:
    def checked(self: SSLMethod, *args: Any) -> Any:
        logging_step = args[-1] % max(1, self.config.trainer.log_every_n_steps) == 0
        torch.cuda.set_sync_debug_mode(0 if logging_step else "error")
        try:
            return hook(self, *args)
        finally:
            torch.cuda.set_sync_debug_mode(0)

    return checked


if __name__ == "__main__":
    if torch.cuda.is_available():
        for name in ("training_step", "on_train_batch_end"):
            setattr(SSLMethod, name, _strict_off_logging_steps(getattr(SSLMethod, name)))
    sys.exit(main(sys.argv[1:]))

"""Exponential-moving-average teacher (BYOL / MoCo / official Matrix-SSL) and its momentum schedule.

The teacher is a frozen deep copy of the student (backbone + projector, no predictor) that, after every
optimiser step, moves towards the student: θ_t <- m·θ_t + (1 - m)·θ_s. Buffers (BatchNorm running statistics)
are copied, not averaged, as in the official code. It is an `nn.Module`, so it follows its parent's
train/eval mode, device and dtype, and its weights are saved in checkpoints.

Usage::

    teacher = EMATeacher(nn.Sequential(backbone, projector))
    with torch.no_grad():
        target = teacher(images)
    ...  # optimiser step
    teacher.update(nn.Sequential(backbone, projector), cosine_momentum(step, total_steps))
"""

from __future__ import annotations

import copy
import math
from typing import Any

import torch
from torch import Tensor, nn


class EMATeacher(nn.Module):
    """Holds `module`, a copy of the student without gradients; call it like the student."""

    def __init__(self, student: nn.Module) -> None:
        super().__init__()
        self.module = copy.deepcopy(student)
        self.module.requires_grad_(False)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self.module(*args, **kwargs)

    @torch.no_grad()
    def update(self, student: nn.Module, momentum: float) -> None:
        """θ_teacher <- m·θ_teacher + (1 - m)·θ_student for parameters; buffers copied from the student.

        `student` must have the architecture the teacher was copied from (parameters in the same order).
        """
        if not 0.0 <= momentum <= 1.0:
            raise ValueError(f"momentum must be in [0, 1], got {momentum}")
        teacher_params: list[Tensor] = list(self.module.parameters())
        student_params = [p.detach() for p in student.parameters()]
        teacher_buffers = list(self.module.buffers())
        student_buffers = list(student.buffers())
        if len(teacher_params) != len(student_params) or len(teacher_buffers) != len(student_buffers):
            raise ValueError(
                f"student does not match the teacher: {len(student_params)} parameters and "
                f"{len(student_buffers)} buffers, expected {len(teacher_params)} and {len(teacher_buffers)}"
            )
        if teacher_params:
            # lerp(t, s, 1 - m) = t + (1 - m)(s - t) = m·t + (1 - m)·s, one fused kernel per device and dtype.
            torch._foreach_lerp_(teacher_params, student_params, 1.0 - momentum)
        for target, source in zip(teacher_buffers, student_buffers):
            target.copy_(source)


def cosine_momentum(step: int, total_steps: int, base: float = 0.996, final: float = 1.0) -> float:
    """BYOL's schedule: `base` at step 0 rising to `final` at `total_steps` on a half cosine.

    m = final - (final - base)·(cos(π·step/total) + 1)/2; steps past the end stay at `final`.
    """
    if total_steps < 1:
        raise ValueError(f"total_steps must be >= 1, got {total_steps}")
    progress = min(max(step, 0), total_steps) / total_steps
    return final - (final - base) * (math.cos(math.pi * progress) + 1.0) / 2.0

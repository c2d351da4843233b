"""EMA teacher: the cosine momentum schedule, the update arithmetic, frozen weights, copied buffers."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from matrixssl.models import EMATeacher, Projector, cosine_momentum


def test_cosine_momentum_known_values() -> None:
    assert cosine_momentum(0, 100) == pytest.approx(0.996)
    assert cosine_momentum(50, 100) == pytest.approx(0.998)
    assert cosine_momentum(100, 100) == pytest.approx(1.0)
    assert cosine_momentum(25, 100) == pytest.approx(1 - 0.004 * (math.cos(math.pi / 4) + 1) / 2)
    assert cosine_momentum(500, 100) == pytest.approx(1.0)  # past the end stays final
    assert cosine_momentum(0, 10, base=0.99, final=0.999) == pytest.approx(0.99)
    values = [cosine_momentum(s, 20) for s in range(21)]
    assert values == sorted(values)
    with pytest.raises(ValueError):
        cosine_momentum(0, 0)


def _linear(weight: float, bias: float) -> nn.Linear:
    layer = nn.Linear(2, 1)
    with torch.no_grad():
        layer.weight.fill_(weight)
        layer.bias.fill_(bias)
    return layer


def test_update_arithmetic() -> None:
    student = _linear(1.0, -2.0)
    teacher = EMATeacher(student)
    with torch.no_grad():
        student.weight.fill_(3.0)
        student.bias.fill_(2.0)
    teacher.update(student, 0.75)  # 0.75·1 + 0.25·3 = 1.5; 0.75·(-2) + 0.25·2 = -1
    torch.testing.assert_close(teacher.module.weight, torch.full((1, 2), 1.5))
    torch.testing.assert_close(teacher.module.bias, torch.tensor([-1.0]))
    teacher.update(student, 1.0)  # frozen
    torch.testing.assert_close(teacher.module.weight, torch.full((1, 2), 1.5))
    teacher.update(student, 0.0)  # copy
    torch.testing.assert_close(teacher.module.weight, torch.full((1, 2), 3.0))
    torch.testing.assert_close(teacher.module.bias, torch.tensor([2.0]))
    with pytest.raises(ValueError, match="momentum"):
        teacher.update(student, 1.5)


def test_teacher_is_a_frozen_copy() -> None:
    student = nn.Sequential(nn.Linear(4, 8), Projector(8, 8, 4))
    teacher = EMATeacher(student)
    assert all(not p.requires_grad for p in teacher.parameters())
    assert all(p.requires_grad for p in student.parameters())
    assert all(t.data_ptr() != s.data_ptr() for t, s in zip(teacher.parameters(), student.parameters()))
    out = teacher(torch.randn(6, 4))
    assert out.shape == (6, 4) and not out.requires_grad
    # Training the student leaves the teacher alone until update() is called.
    student(torch.randn(6, 4)).pow(2).sum().backward()
    assert all(p.grad is None for p in teacher.parameters())


def test_mode_follows_parent() -> None:
    student = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4))
    teacher = EMATeacher(student)
    parent = nn.ModuleDict({"student": student, "teacher": teacher})
    inner = list(teacher.module.modules())
    parent.eval()
    assert not teacher.training and not any(m.training for m in inner)
    parent.train()
    assert all(m.training for m in inner)


def test_buffers_are_copied_not_averaged() -> None:
    bn_s = nn.BatchNorm1d(5)
    student = nn.Sequential(nn.Linear(3, 5), bn_s)
    teacher = EMATeacher(student)
    bn_t = list(teacher.module.modules())[-1]
    assert isinstance(bn_t, nn.BatchNorm1d) and bn_t.running_mean is not None and bn_t.running_var is not None
    assert bn_s.running_mean is not None and bn_s.running_var is not None
    student.train()
    student(torch.randn(16, 3) * 4 + 2)  # moves the running statistics
    assert not torch.equal(bn_s.running_mean, bn_t.running_mean)
    teacher.update(student, 0.99)
    torch.testing.assert_close(bn_t.running_mean, bn_s.running_mean, rtol=0, atol=0)
    torch.testing.assert_close(bn_t.running_var, bn_s.running_var, rtol=0, atol=0)
    assert bn_t.num_batches_tracked is not None and bn_s.num_batches_tracked is not None
    assert int(bn_t.num_batches_tracked) == int(bn_s.num_batches_tracked) == 1


def test_update_rejects_a_different_architecture() -> None:
    teacher = EMATeacher(nn.Linear(2, 2))
    with pytest.raises(ValueError, match="does not match"):
        teacher.update(nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2)), 0.5)

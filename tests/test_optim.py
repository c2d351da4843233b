"""Schedules, parameter groups and LARS against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from matrixssl.optim import LARS, parameter_groups, warmup_cosine


def test_warmup_cosine_values() -> None:
    assert warmup_cosine(0, 100, 10) == pytest.approx(0.1)
    assert warmup_cosine(9, 100, 10) == pytest.approx(1.0)
    assert warmup_cosine(10, 100, 10) == pytest.approx(1.0)
    assert warmup_cosine(55, 100, 10) == pytest.approx(0.5)
    assert warmup_cosine(100, 100, 10) == pytest.approx(0.0, abs=1e-12)
    assert warmup_cosine(25, 100, 0) == pytest.approx(0.5 * (1 + math.cos(math.pi / 4)))


def test_parameter_groups_exclude_biases_and_norms() -> None:
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    decay, no_decay = parameter_groups(model, name="head", lr=0.5, weight_decay=1e-4)
    assert [p.shape for p in decay["params"]] == [torch.Size([4, 3])]
    assert (decay["name"], decay["lr"], decay["weight_decay"]) == ("head", 0.5, 1e-4)
    assert len(no_decay["params"]) == 3 and no_decay["weight_decay"] == 0.0 and no_decay["lars_exclude"]
    assert (no_decay["name"], no_decay["lr"]) == ("head/no_decay", 0.5)


def test_lars_step_uses_the_trust_ratio() -> None:
    weight = nn.Parameter(torch.tensor([[3.0, 4.0]]))  # norm 5
    bias = nn.Parameter(torch.tensor([1.0]))
    weight.grad = torch.tensor([[0.0, 2.0]])  # norm 2 (no weight decay)
    bias.grad = torch.tensor([0.5])
    optimizer = LARS(
        [{"params": [weight]}, {"params": [bias], "lars_exclude": True}],
        lr=1.0,
        momentum=0.9,
        trust_coefficient=0.1,
    )
    optimizer.step()
    # trust ratio 0.1 * 5 / 2 = 0.25: step = lr * 0.25 * grad.
    torch.testing.assert_close(weight.detach(), torch.tensor([[3.0, 3.5]]))
    torch.testing.assert_close(bias.detach(), torch.tensor([0.5]))

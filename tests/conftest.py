"""Shared fixtures: deterministic random SPD matrices and embeddings in float64."""

from __future__ import annotations

import pytest
import torch


def random_spd(d: int, seed: int, floor: float = 0.1) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    a = torch.randn(d, d, generator=generator, dtype=torch.float64)
    return a @ a.T / d + floor * torch.eye(d, dtype=torch.float64)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)

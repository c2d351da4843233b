"""Projector and predictor heads in the shape of the official Matrix-SSL / MEC code.

Projector (2048-2048-2048 for ResNet-50): (Linear without bias, BatchNorm1d, ReLU) x (num_layers - 1), then
Linear without bias and BatchNorm1d(affine=False). Biases are dropped because a BatchNorm follows every Linear;
the last BatchNorm has no affine parameters so the head cannot rescale its way out of the loss's normalisation.
Predictor (2048 -> 512 -> 2048): Linear without bias, BatchNorm1d, ReLU, Linear with bias; a bottleneck on the
online branch only, which with the EMA teacher is what keeps BYOL-style training from collapsing.
"""

from __future__ import annotations

from torch import Tensor, nn


class Projector(nn.Module):
    """Maps backbone features (B, in_dim) to embeddings (B, out_dim); the layers live in `layers`.

    `final_norm=False` ends in the plain Linear layer (VICReg's expander, whose variance term needs it)."""

    def __init__(
        self, in_dim: int, hidden_dim: int, out_dim: int, num_layers: int = 3, *, final_norm: bool = True
    ) -> None:
        if num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {num_layers}")
        for name, value in (("in_dim", in_dim), ("hidden_dim", hidden_dim), ("out_dim", out_dim)):
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        layers: list[nn.Module] = []
        dim = in_dim
        for _ in range(num_layers - 1):
            layers += [
                nn.Linear(dim, hidden_dim, bias=False),
                nn.BatchNorm1d(hidden_dim),
                nn.ReLU(inplace=True),
            ]
            dim = hidden_dim
        layers.append(nn.Linear(dim, out_dim, bias=False))
        if final_norm:
            layers.append(nn.BatchNorm1d(out_dim, affine=False))
        super().__init__()
        self.layers = nn.Sequential(*layers)
        self.in_dim, self.hidden_dim, self.out_dim, self.num_layers = in_dim, hidden_dim, out_dim, num_layers

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x)


class Predictor(nn.Module):
    """Maps embeddings (B, dim) to predictions (B, dim) through a `hidden_dim` bottleneck; see `layers`."""

    def __init__(self, dim: int, hidden_dim: int) -> None:
        for name, value in (("dim", dim), ("hidden_dim", hidden_dim)):
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        super().__init__()
        self.layers = nn.Sequential(
            nn.Linear(dim, hidden_dim, bias=False),
            nn.BatchNorm1d(hidden_dim),
            nn.ReLU(inplace=True),
            nn.Linear(hidden_dim, dim),
        )
        self.dim, self.hidden_dim = dim, hidden_dim

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x)

"""Projector and predictor: the official layer structure, shapes, and an affine-free final BatchNorm."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from matrixssl.models import Predictor, Projector


def test_projector_structure_matches_official() -> None:
    projector = Projector(512, 2048, 2048)
    kinds = [type(m) for m in projector.layers]
    assert kinds == [nn.Linear, nn.BatchNorm1d, nn.ReLU] * 2 + [nn.Linear, nn.BatchNorm1d]
    linears = [m for m in projector.layers if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(512, 2048), (2048, 2048), (2048, 2048)]
    assert all(m.bias is None for m in linears)
    final = projector.layers[-1]
    assert isinstance(final, nn.BatchNorm1d)
    assert not final.affine and final.weight is None and final.bias is None
    assert all(m.affine for m in projector.layers[:-1] if isinstance(m, nn.BatchNorm1d))


@pytest.mark.parametrize("num_layers", [1, 2, 3, 4])
def test_projector_shapes(num_layers: int) -> None:
    projector = Projector(32, 64, 16, num_layers=num_layers)
    assert sum(isinstance(m, nn.Linear) for m in projector.layers) == num_layers
    out = projector(torch.randn(8, 32))
    assert out.shape == (8, 16)
    # Training-mode BatchNorm without affine parameters: every output column has zero mean and unit variance.
    torch.testing.assert_close(out.mean(0), torch.zeros(16), atol=1e-5, rtol=0)
    torch.testing.assert_close(out.var(0, unbiased=False), torch.ones(16), atol=1e-3, rtol=0)


def test_predictor_structure_and_shapes() -> None:
    predictor = Predictor(2048, 512)
    assert [type(m) for m in predictor.layers] == [nn.Linear, nn.BatchNorm1d, nn.ReLU, nn.Linear]
    first, last = predictor.layers[0], predictor.layers[3]
    assert (first.in_features, first.out_features, first.bias) == (2048, 512, None)
    assert (last.in_features, last.out_features) == (512, 2048) and last.bias is not None
    small = Predictor(16, 4)
    assert small(torch.randn(5, 16)).shape == (5, 16)


def test_bad_sizes_raise() -> None:
    with pytest.raises(ValueError, match="num_layers"):
        Projector(8, 8, 8, num_layers=0)
    with pytest.raises(ValueError, match="hidden_dim"):
        Predictor(8, 0)

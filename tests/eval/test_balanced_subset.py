"""The semi-supervised subsets: class-balanced, the same for the same seed, every index valid."""

from __future__ import annotations

import pytest
import torch

from matrixssl.eval.finetune import balanced_subset


def unbalanced_labels() -> torch.Tensor:
    """Class c has 50 + 10c samples (950 in all), shuffled."""
    labels = torch.cat([torch.full((50 + 10 * c,), c) for c in range(10)])
    return labels[torch.randperm(len(labels), generator=torch.Generator().manual_seed(5))]


def test_subsets_are_class_balanced_and_sized_by_the_fraction() -> None:
    labels = unbalanced_labels()
    for fraction, per_class in ((0.2, 19), (0.01, 1)):  # round(f * 950 / 10), at least 1
        subset = balanced_subset(labels, fraction, seed=0)
        assert torch.bincount(labels[subset], minlength=10).tolist() == [per_class] * 10
        assert subset.unique().numel() == subset.numel() and torch.equal(subset, subset.sort().values)
    # fraction 1: 95 asked of every class; the five smallest classes give all they have.
    everything = balanced_subset(labels, 1.0, seed=0)
    assert torch.bincount(labels[everything]).tolist() == [50, 60, 70, 80, 90, 95, 95, 95, 95, 95]


def test_subsets_depend_only_on_the_seed() -> None:
    labels = unbalanced_labels()
    first = balanced_subset(labels, 0.1, seed=3)
    assert torch.equal(first, balanced_subset(labels, 0.1, seed=3))
    assert not torch.equal(first, balanced_subset(labels, 0.1, seed=4))


def test_small_classes_give_what_they_have_and_unlabelled_samples_are_skipped() -> None:
    labels = torch.tensor([0] * 30 + [1] * 2 + [-1] * 8)
    subset = balanced_subset(labels, 0.5, seed=0)  # round(0.5 * 32 / 2) = 8 per class
    assert torch.bincount(labels[subset]).tolist() == [8, 2]
    with pytest.raises(ValueError, match=r"fraction must be in \(0, 1\]"):
        balanced_subset(labels, 0.0, seed=0)
    with pytest.raises(ValueError, match=r"fraction must be in \(0, 1\]"):
        balanced_subset(labels, 1.5, seed=0)

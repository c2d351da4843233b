"""Datasets (registry and readers for the standard on-disk formats)."""

from matrixssl.data.datasets import (
    DATASETS,
    DatasetSpec,
    ImageDataset,
    ImageFolderDataset,
    InMemoryDataset,
    STL10Dataset,
    load_dataset,
)

__all__ = [
    "DATASETS",
    "DatasetSpec",
    "ImageDataset",
    "ImageFolderDataset",
    "InMemoryDataset",
    "STL10Dataset",
    "load_dataset",
]

"""Datasets: the registry of named datasets (``registry``), readers of their on-disk formats (``formats``)
and the batched two-view augmentation (``views``)."""

from matrixssl.data.dataset import DatasetInfo, ImageDataset, InMemoryDataset
from matrixssl.data.formats import ImageFolderDataset, STL10Dataset
from matrixssl.data.registry import (
    DATASETS,
    DatasetSpec,
    DataSettings,
    class_names,
    dataset_spec,
    load_dataset,
    load_splits,
    splits_for,
)

__all__ = [
    "DATASETS",
    "DataSettings",
    "DatasetInfo",
    "DatasetSpec",
    "ImageDataset",
    "ImageFolderDataset",
    "InMemoryDataset",
    "STL10Dataset",
    "class_names",
    "dataset_spec",
    "load_dataset",
    "load_splits",
    "splits_for",
]

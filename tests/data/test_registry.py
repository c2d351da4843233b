"""The registry: names and splits checked before any file is read, what each entry says about its dataset,
the three splits a run uses, and the ``DatasetInfo`` a dataset hands to a model."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from conftest import mnist_like, write_idx_split
from dataset_files import cifar_batch, write_stl10

from matrixssl.data import (
    DATASETS,
    DatasetInfo,
    DatasetSpec,
    class_names,
    dataset_spec,
    load_dataset,
    load_splits,
)
from matrixssl.errors import MatrixSSLError

KNOWN = ("fashion-mnist", "mnist", "cifar10", "cifar100", "stl10", "imagefolder")

# ------------------------------------------------------------------------------------------ names, splits


def test_unknown_name_lists_known_datasets(tmp_path: Path) -> None:
    with pytest.raises(MatrixSSLError, match="unknown dataset 'imagenet'") as info:
        load_dataset("imagenet", tmp_path)
    for name in KNOWN:
        assert name in str(info.value)


def test_dataset_spec_returns_the_entry_or_lists_the_known_names() -> None:
    assert dataset_spec("stl10") is DATASETS["stl10"]
    with pytest.raises(MatrixSSLError, match="unknown dataset 'imagenet'; known datasets: ") as info:
        dataset_spec("imagenet")
    assert str(info.value).endswith(", ".join(DATASETS))
    assert sorted(DATASETS) == sorted(KNOWN)


def test_unknown_split_lists_valid_splits(tmp_path: Path) -> None:
    with pytest.raises(
        MatrixSSLError, match="'val'.*valid splits: train, test, unlabeled, train\\+unlabeled"
    ):
        load_dataset("stl10", tmp_path, "val")


@pytest.mark.parametrize("subset", [0, -3])
def test_subset_must_be_positive(tmp_path: Path, subset: int) -> None:
    with pytest.raises(MatrixSSLError, match="subset"):
        load_dataset("cifar10", tmp_path, subset=subset)


def test_image_size_is_refused_for_fixed_size_datasets(tmp_path: Path) -> None:
    with pytest.raises(MatrixSSLError, match="32x32.*image_size=64"):
        load_dataset("cifar10", tmp_path, image_size=64)


# ---------------------------------------------------------------------------------------- what an entry says


def test_each_entry_carries_its_pretraining_split_and_view_recipe() -> None:
    facts = {name: (s.pretraining_split, s.crop_scale, s.flips) for name, s in DATASETS.items()}
    assert facts == {
        "fashion-mnist": ("train", (0.25, 1.0), True),
        "mnist": ("train", (0.3, 1.0), False),
        "cifar10": ("train", (0.2, 1.0), True),
        "cifar100": ("train", (0.2, 1.0), True),
        "stl10": ("train+unlabeled", (0.2, 1.0), True),
        "imagefolder": ("train", (0.2, 1.0), True),
    }
    for spec in DATASETS.values():
        assert spec.splits is None or spec.pretraining_split in spec.splits


def test_a_spec_rejects_inconsistent_entries() -> None:
    spec = DATASETS["cifar10"]
    with pytest.raises(ValueError, match="pretraining split 'unlabeled'"):
        dataclasses.replace(spec, pretraining_split="unlabeled")
    with pytest.raises(ValueError, match="crop_scale"):
        dataclasses.replace(spec, crop_scale=(0.5, 0.2))
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.flips = False  # type: ignore[misc]
    assert DatasetSpec(spec.loader, None, "any split", None).pretraining_split == "train"


# ------------------------------------------------------------------------------------------- class names


def _one_test_image_of_each(root: Path) -> dict[str, Path]:
    """A root per registered dataset (bar imagefolder) holding a readable test split."""
    write_idx_split(root / "idx", "test", *mnist_like(1, seed=14), gz=False)
    for name, key in (
        ("cifar-10-batches-py/test_batch", b"labels"),
        ("cifar-100-python/test", b"fine_labels"),
    ):
        (root / name).parent.mkdir(parents=True)
        cifar_batch(root / name, np.zeros((1, 3072), dtype=np.uint8), [0], key)
    write_stl10(root / "stl", test=True)
    return {
        "fashion-mnist": root / "idx",
        "mnist": root / "idx",
        "cifar10": root,
        "cifar100": root,
        "stl10": root / "stl",
    }


def test_class_names_match_each_dataset_s_classes(tmp_path: Path) -> None:
    for name, root in _one_test_image_of_each(tmp_path).items():
        names = class_names(name)
        assert names is not None and len(names) == load_dataset(name, root, "test").num_classes, name
        assert len(set(names)) == len(names), name
    assert class_names("imagefolder") is None  # the folders' names: known only from the data


def test_class_names_at_known_labels() -> None:
    known = {
        "fashion-mnist": {0: "T-shirt/top", 3: "Dress", 6: "Shirt", 9: "Ankle boot"},
        "mnist": dict(enumerate("0123456789")),
        "cifar10": {0: "airplane", 1: "automobile", 6: "frog", 9: "truck"},
        "stl10": {0: "airplane", 2: "car", 7: "monkey", 9: "truck"},
        "cifar100": {
            0: "apple",
            1: "aquarium_fish",
            19: "cattle",
            39: "keyboard",
            58: "pickup_truck",
            99: "worm",
        },
    }
    for name, labels in known.items():
        names = class_names(name)
        assert names is not None and {i: names[i] for i in labels} == labels, name
    cifar100 = DATASETS["cifar100"].classes
    assert cifar100 is not None and list(cifar100) == sorted(cifar100)  # the meta file's order: alphabetical


def test_class_names_of_an_unknown_dataset_list_the_known_ones() -> None:
    with pytest.raises(MatrixSSLError, match="unknown dataset 'imagenet'; known datasets: fashion-mnist"):
        class_names("imagenet")


# ------------------------------------------------------------------------------------------- load_splits


def test_load_splits_pretrains_stl10_on_train_plus_unlabeled(tmp_path: Path) -> None:
    root = write_stl10(tmp_path, test=True)
    pretrain, labelled, test = load_splits("stl10", root)
    assert pretrain.split == "train+unlabeled" and pretrain.labels.tolist() == [2, 9, -1, -1, -1]
    assert labelled.split == "train" and labelled.labels.tolist() == [2, 9]
    assert test.split == "test" and test.labels.tolist() == [0, 1, 2, 3]


def test_load_splits_subset_shortens_the_pretraining_set_only(tmp_path: Path) -> None:
    root = write_stl10(tmp_path, test=True)
    pretrain, labelled, test = load_splits("stl10", root, subset=3)
    assert pretrain.labels.tolist() == [2, 9, -1]
    assert len(labelled) == 2 and len(test) == 4
    pretrain, labelled, test = load_splits("stl10", root, subset=1)
    assert len(pretrain) == 1 and len(labelled) == 2 and len(test) == 4


def test_load_splits_labels_the_pretraining_set_itself_when_it_is_train(tmp_path: Path) -> None:
    train, test = mnist_like(6, seed=11), mnist_like(5, seed=12)
    write_idx_split(tmp_path, "train", *train, gz=True)
    write_idx_split(tmp_path, "test", *test, gz=True)
    pretrain, labelled, held_out = load_splits("fashion-mnist", tmp_path, subset=3)
    assert labelled is pretrain and pretrain.split == "train" and len(pretrain) == 3
    assert held_out.split == "test" and held_out.labels.tolist() == test[1].tolist()  # not shortened
    assert len(load_splits("fashion-mnist", tmp_path, test_split="train")[2]) == 6


def test_load_splits_checks_names_and_splits(tmp_path: Path) -> None:
    with pytest.raises(MatrixSSLError, match="unknown dataset 'imagenet'"):
        load_splits("imagenet", tmp_path)
    write_stl10(tmp_path)
    with pytest.raises(MatrixSSLError, match="unknown split 'val' for stl10"):
        load_splits("stl10", tmp_path, test_split="val")
    with pytest.raises(MatrixSSLError, match=r"STL-10 \(test split\) not found"):
        load_splits("stl10", tmp_path)


# ------------------------------------------------------------------------------------------- DatasetInfo


def test_dataset_info_round_trips_through_its_dict() -> None:
    info = DatasetInfo("fashion-mnist", 1, 28, 10, (0.286,), (0.353,))
    saved = info.as_dict()
    assert saved == {
        "name": "fashion-mnist",
        "channels": 1,
        "image_size": 28,
        "num_classes": 10,
        "mean": (0.286,),
        "std": (0.353,),
    }
    assert DatasetInfo(**saved) == info
    # Read back from YAML or JSON, the statistics are lists: they become tuples again.
    listed = DatasetInfo(**{**saved, "mean": [0.286], "std": [0.353]})
    assert listed == info and isinstance(listed.mean, tuple) and hash(listed) == hash(info)
    with pytest.raises(dataclasses.FrozenInstanceError):
        info.channels = 3  # type: ignore[misc]


def test_a_dataset_describes_itself(tmp_path: Path) -> None:
    write_idx_split(tmp_path, "test", *mnist_like(2, seed=13), gz=False)
    fashion = load_dataset("fashion-mnist", tmp_path, "test")
    assert fashion.info == DatasetInfo("fashion-mnist", 1, 28, 10, (0.2860,), (0.3530,))
    stl = load_dataset("stl10", write_stl10(tmp_path / "stl"), "unlabeled")
    assert stl.info == DatasetInfo("stl10", 3, 96, 10, stl.mean, stl.std) and len(stl.info.mean) == 3

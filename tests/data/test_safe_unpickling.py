"""The pickled formats (CIFAR batches, the classic mnist.pkl.gz) are downloaded files: they are read with an
unpickler that resolves only numpy's array globals, so a file carrying code is refused and the code never
runs."""

from __future__ import annotations

import builtins
import gzip
import io
import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from dataset_files import cifar_batch

from matrixssl.data import load_dataset
from matrixssl.data.formats.common import load_arrays_pickle
from matrixssl.data.formats.idx import read_mnist_pickle
from matrixssl.errors import MatrixSSLError


class ShellPayload:
    """Unpickling this runs a shell command that creates ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return os.system, (f"touch {self.marker}",)


class ExecPayload:
    """Unpickling this runs Python code that creates ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return builtins.exec, (f"open({str(self.marker)!r}, 'w').close()",)


PAYLOADS = {
    "os.system": (ShellPayload, f"{os.system.__module__}.system"),  # posix.system on Linux
    "builtins.exec": (ExecPayload, "builtins.exec"),
}


@pytest.mark.parametrize("payload", PAYLOADS, ids=list(PAYLOADS))
def test_a_cifar_batch_carrying_code_is_refused_unrun(tmp_path: Path, payload: str) -> None:
    kind, reference = PAYLOADS[payload]
    marker = tmp_path / "payload-ran"
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    data = np.zeros((1, 3072), dtype=np.uint8)
    cifar_batch(folder / "test_batch", data, [3], b"labels", {b"batch_label": kind(marker)})
    with pytest.raises(MatrixSSLError) as info:
        load_dataset("cifar10", tmp_path, "test")
    assert str(info.value) == (
        f"{folder / 'test_batch'} is not a plain CIFAR batch: it references {reference}; "
        "refusing to unpickle it"
    )
    assert not marker.exists()


@pytest.mark.parametrize("payload", PAYLOADS, ids=list(PAYLOADS))
def test_an_mnist_pickle_carrying_code_is_refused_unrun(tmp_path: Path, payload: str) -> None:
    kind, reference = PAYLOADS[payload]
    marker = tmp_path / "payload-ran"
    split = (np.zeros((1, 784), dtype=np.float32), np.zeros(1, dtype=np.int64))
    path = tmp_path / "mnist.pkl.gz"
    with gzip.open(path, "wb") as f:
        pickle.dump((split, split, (kind(marker), split[1])), f)
    with pytest.raises(MatrixSSLError) as info:
        read_mnist_pickle(path, "test")
    assert str(info.value) == (
        f"{path} is not a plain MNIST pickle: it references {reference}; refusing to unpickle it"
    )
    assert not marker.exists()


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_plain_arrays_load_at_every_protocol(protocol: int) -> None:
    # Protocols 0-2 spell bytes as _codecs.encode(text, "latin1") and arrays as _reconstruct; 5 as _frombuffer.
    batch = {b"data": np.arange(6, dtype=np.uint8).reshape(2, 3), b"labels": [1, 2], b"batch_label": b"x"}
    loaded = load_arrays_pickle(
        io.BytesIO(pickle.dumps(batch, protocol=protocol)), Path("batch"), "a batch", encoding="bytes"
    )
    assert loaded.keys() == batch.keys() and loaded[b"labels"] == [1, 2] and loaded[b"batch_label"] == b"x"
    assert np.array_equal(loaded[b"data"], batch[b"data"]) and loaded[b"data"].dtype == np.uint8


def test_numpy_1_spellings_load() -> None:
    # Files written by numpy 1 (as the real CIFAR and MNIST pickles were) name numpy.core, not numpy._core.
    arrays = (np.linspace(0, 1, 4, dtype=np.float32), np.arange(4, dtype=np.int64))
    old = pickle.dumps(arrays, protocol=2).replace(b"numpy._core.", b"numpy.core.")
    assert b"numpy.core.multiarray" in old
    loaded = load_arrays_pickle(io.BytesIO(old), Path("old"), "arrays", encoding="latin1")
    assert all(np.array_equal(a, b) and a.dtype == b.dtype for a, b in zip(loaded, arrays))


def test_only_latin1_bytes_are_decoded() -> None:
    # _codecs.encode is allowed only as what pickle itself writes for bytes: latin-1.
    crafted = b"\x80\x02c_codecs\nencode\nX\x03\x00\x00\x00abcX\x06\x00\x00\x00base64\x86R."
    with pytest.raises(pickle.UnpicklingError, match="unexpected bytes encoding 'base64'"):
        load_arrays_pickle(io.BytesIO(crafted), Path("crafted"), "arrays", encoding="bytes")

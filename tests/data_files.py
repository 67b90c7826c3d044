"""Writers of the data sets' distribution formats (IDX, CIFAR's pickles): tests write small files exactly as
the distributions lay them out, since the real ones cannot be downloaded here."""

from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np


_IDX_CODES = {np.dtype("uint8"): 0x08, np.dtype("int16"): 0x0B, np.dtype("float32"): 0x0D}


def write_idx(path: Path, array: np.ndarray, *, gz: bool = False) -> Path:
    """Write ``array`` as an IDX file: zero, zero, type code, ndim, big-endian uint32 dims, big-endian data."""
    header = bytes([0, 0, _IDX_CODES[array.dtype], array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    payload = header + array.astype(array.dtype.newbyteorder(">")).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(payload) if gz else payload)
    return path


def write_mnist_folder(folder: Path, *, seed: int, n_train: int = 12, n_test: int = 5, gz: bool = True) -> dict:
    """The four IDX files of a tiny 28x28 MNIST-style data set; returns the arrays written."""
    rng = np.random.default_rng(seed)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": (np.arange(n_train) % 10).astype(np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_test, dtype=np.uint8),
    }
    for name, array in arrays.items():
        write_idx(folder / (name + (".gz" if gz else "")), array, gz=gz)
    return arrays


def write_pickle(path: Path, obj: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh:
        pickle.dump(obj, fh, protocol=2)  # the protocol of the official CIFAR files


def write_cifar10(folder: Path, *, per_batch: int = 3, n_test: int = 4, str_keys: bool = False) -> dict:
    """A CIFAR-10 ``cifar-10-batches-py`` folder with tiny batches; returns the rows and labels written."""
    rng = np.random.default_rng(10)
    key = (lambda k: k) if str_keys else (lambda k: k.encode())
    written: dict[str, tuple[np.ndarray, list[int]]] = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        n = n_test if name == "test_batch" else per_batch
        data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        labels = [int(x) for x in rng.integers(0, 10, n)]
        write_pickle(folder / name, {
            key("batch_label"): b"training batch", key("labels"): labels,
            key("data"): data, key("filenames"): [b"x.png"] * n,
        })
        written[name] = (data, labels)
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    write_pickle(folder / "batches.meta", {
        key("num_cases_per_batch"): per_batch, key("label_names"): [n.encode() for n in names],
        key("num_vis"): 3072,
    })
    return written


def write_cifar100(folder: Path) -> dict:
    """A CIFAR-100 ``cifar-100-python`` folder (train, test, meta) with fine and coarse labels."""
    rng = np.random.default_rng(100)
    written = {}
    for name, n in (("train", 7), ("test", 3)):
        data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        fine = [int(x) for x in rng.integers(0, 100, n)]
        write_pickle(folder / name, {
            b"filenames": [b"x.png"] * n, b"batch_label": name.encode(), b"fine_labels": fine,
            b"coarse_labels": [f // 5 for f in fine], b"data": data,
        })
        written[name] = (data, fine)
    write_pickle(folder / "meta", {
        b"fine_label_names": [f"fine{i}".encode() for i in range(100)],
        b"coarse_label_names": [f"coarse{i}".encode() for i in range(20)],
    })
    return written


class MarkerPayload:
    """Unpickling this runs ``touch marker``: the shape of a malicious pickle, for loaders that must refuse it."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        import os

        return os.system, (f"touch {self.marker}",)

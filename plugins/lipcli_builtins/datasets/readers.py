"""Offline readers of the distribution formats of MNIST, Fashion-MNIST (IDX) and CIFAR (Python pickles).

lipcli reads these files itself rather than through torchvision's dataset classes so that there is one
reading path whether the files came from a download, a Debian package or a copy on a shared disk, and so
that CIFAR's pickles are never handed to an unrestricted :func:`pickle.load`. Everything is parsed with
numpy in whole-array operations: no per-sample Python loops. Only the built-in data sets read these
formats, so the readers belong to their plugin, not to the engine.
"""

from __future__ import annotations

import codecs
import gzip
import pickle
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from lipcli.api import DataError

# -- IDX (MNIST, Fashion-MNIST) ---------------------------------------------------------------------------

_IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
"""IDX type code -> the big-endian numpy dtype of its data."""

IDX_FILES: tuple[str, ...] = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
"""The four files of an MNIST-style data set, as distributed (each may also carry a ``.gz`` suffix)."""

IDX_SUBDIRS: tuple[str, ...] = (".", "raw", "MNIST/raw", "FashionMNIST/raw")
"""Where under a root the IDX files may lie: the folder itself, and torchvision's download layouts."""

_GZIP_MAGIC = b"\x1f\x8b"


def read_idx(path: str | Path) -> np.ndarray:
    """Read one IDX file (gzipped or not) into a native-endian, writable numpy array.

    Compression is recognised by the gzip magic bytes rather than the file name, so a decompressed file
    that kept its ``.gz`` name (or the reverse) still reads. The declared dimensions must account for the
    data exactly: a truncated or padded file is a :class:`DataError` naming it.
    """
    path = Path(path)
    try:
        with open(path, "rb") as raw:
            compressed = raw.read(2) == _GZIP_MAGIC
        opener: Callable[..., Any] = gzip.open if compressed else open
        with opener(path, "rb") as fh:
            data = fh.read()
    except (OSError, EOFError, zlib.error) as exc:  # missing, unreadable, or a gzip stream cut or corrupt
        raise DataError(f"cannot read IDX file {path}: {_one_line(exc)}") from None

    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise DataError(f"{path} is not an IDX file (its first two bytes must be zero)")
    dtype = _IDX_DTYPES.get(data[2])
    if dtype is None:
        raise DataError(f"{path} has unknown IDX type code 0x{data[2]:02X}")
    ndim = data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{path} is truncated: its header declares {ndim} dimensions but the file ends first")
    shape = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    count = int(np.prod(shape, dtype=np.int64))
    expected = header + count * dtype.itemsize
    if len(data) != expected:
        state = "truncated" if len(data) < expected else "longer than its header says"
        raise DataError(
            f"{path} is {state}: shape {shape} of {dtype.name} needs {expected} bytes, found {len(data)}"
        )
    array = np.frombuffer(data, dtype=dtype, count=count, offset=header).reshape(shape)
    # astype copies: the result is writable (torch.from_numpy warns on read-only arrays) and native-endian.
    return array.astype(dtype.newbyteorder("="))


def find_idx_files(root: str | Path, subdirs: Sequence[str] = IDX_SUBDIRS) -> dict[str, Path]:
    """The four IDX files of the first folder among ``root/<subdir>`` that holds all of them, or ``{}``.

    Keys are the names in :data:`IDX_FILES`. All four must come from one folder, so that a root holding
    both ``MNIST/raw`` and ``FashionMNIST/raw`` never mixes the two; a data set passes its own ``subdirs``
    to skip the other's layout. An uncompressed file is preferred to its ``.gz`` (torchvision keeps both).
    """
    for subdir in subdirs:
        folder = Path(root) / subdir
        found: dict[str, Path] = {}
        for name in IDX_FILES:
            for candidate in (folder / name, folder / f"{name}.gz"):
                if candidate.is_file():
                    found[name] = candidate
                    break
        if len(found) == len(IDX_FILES):
            return found
    return {}


# -- CIFAR python batches ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class CifarLayout:
    """Where a CIFAR variant keeps its batches inside the extracted archive."""

    folder: str
    train: tuple[str, ...]
    test: str
    meta: str
    labels_key: str
    names_key: str


CIFAR_LAYOUTS: dict[str, CifarLayout] = {
    "cifar10": CifarLayout(
        folder="cifar-10-batches-py",
        train=tuple(f"data_batch_{i}" for i in range(1, 6)),
        test="test_batch",
        meta="batches.meta",
        labels_key="labels",
        names_key="label_names",
    ),
    "cifar100": CifarLayout(
        folder="cifar-100-python",
        train=("train",),
        test="test",
        meta="meta",
        labels_key="fine_labels",
        names_key="fine_label_names",
    ),
}


@dataclass(frozen=True)
class CifarArrays:
    """A CIFAR data set as numpy arrays: uint8 images ``[N, 3, 32, 32]`` and int64 labels ``[N]``."""

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    class_names: tuple[str, ...]


_RECONSTRUCT = np.ndarray((0,), np.uint8).__reduce__()[0]
"""numpy's array-rebuilding function, taken from numpy itself so no module is imported by name."""

_PICKLE_ALLOWED: dict[tuple[str, str], Any] = {
    ("numpy.core.multiarray", "_reconstruct"): _RECONSTRUCT,  # numpy 1.x pickles (the official files)
    ("numpy._core.multiarray", "_reconstruct"): _RECONSTRUCT,  # numpy 2.x pickles
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): codecs.encode,  # how Python 3 writes bytes at pickle protocol 2
    ("codecs", "encode"): codecs.encode,
}
"""The only globals a CIFAR pickle may name: what rebuilding a numpy array needs, nothing that runs code."""


class _RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that resolves only :data:`_PICKLE_ALLOWED`, so a crafted file cannot execute code."""

    def __init__(self, file: Any, path: Path) -> None:
        super().__init__(file, encoding="bytes")  # the official batches were pickled by Python 2
        self._path = path

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _PICKLE_ALLOWED[(module, name)]
        except KeyError:
            raise DataError(
                f"{self._path} refers to {module}.{name}, which a CIFAR batch never needs; refusing to load it"
            ) from None


def _load_pickle(path: Path) -> dict[str, Any]:
    """Load one CIFAR pickle as a dict with str keys (Python 2 files have bytes keys, Python 3 ones str)."""
    try:
        with open(path, "rb") as fh:
            obj = _RestrictedUnpickler(fh, path).load()
    except DataError:
        raise
    except Exception as exc:  # noqa: BLE001 - a malformed pickle can fail in many ways; all mean "bad file"
        raise DataError(f"cannot read CIFAR file {path}: {type(exc).__name__}: {_one_line(exc)}") from None
    if not isinstance(obj, dict):
        raise DataError(f"{path} is not a CIFAR batch: it holds a {type(obj).__name__}, not a dict")
    return {_text(key): value for key, value in obj.items()}


def _read_batch(path: Path, labels_key: str, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Images ``[N, 3, 32, 32]`` and labels of one batch file, checked for shape, type and label range."""
    batch = _load_pickle(path)
    data, labels = batch.get("data"), batch.get(labels_key)
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        raise DataError(f"{path} has no uint8 'data' array of shape [N, 3072]")
    if labels is None:
        raise DataError(f"{path} has no {labels_key!r} list")
    labels = np.asarray(labels, dtype=np.int64)
    if labels.shape != (data.shape[0],):
        raise DataError(f"{path} has {labels.size} labels for {data.shape[0]} images")
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise DataError(f"{path} has labels outside 0..{num_classes - 1}")
    # Each row is three 32x32 channel planes (R, G, B), each row-major: exactly C-order [3, 32, 32].
    return data.reshape(-1, 3, 32, 32), labels


def cifar_folder(root: str | Path, variant: str) -> Path | None:
    """The folder holding ``variant``'s batches: ``root`` itself or ``root/<archive folder>``; None if neither."""
    layout = CIFAR_LAYOUTS[variant]
    for folder in (Path(root), Path(root) / layout.folder):
        if (folder / layout.meta).is_file():
            return folder
    return None


def read_cifar(root: str | Path, variant: str) -> CifarArrays:
    """Read CIFAR-10 (``variant="cifar10"``) or CIFAR-100 (``"cifar100"``, fine labels) from its python batches.

    ``root`` is the extracted folder (``cifar-10-batches-py`` / ``cifar-100-python``) or its parent.
    """
    if variant not in CIFAR_LAYOUTS:
        raise ValueError(f"unknown CIFAR variant {variant!r}; known: {', '.join(CIFAR_LAYOUTS)}")
    layout = CIFAR_LAYOUTS[variant]
    folder = cifar_folder(root, variant)
    if folder is None:
        raise DataError(
            f"no {layout.meta} in {root} or {Path(root) / layout.folder}: not an extracted {variant} archive"
        )
    missing = [name for name in (*layout.train, layout.test) if not (folder / name).is_file()]
    if missing:
        raise DataError(f"{folder} lacks {', '.join(missing)} of {variant}")

    meta_path = folder / layout.meta
    names = _load_pickle(meta_path).get(layout.names_key)
    if not isinstance(names, (list, tuple)) or not names:
        raise DataError(f"{meta_path} has no {layout.names_key!r} list")
    class_names = tuple(_text(name) for name in names)

    parts = [_read_batch(folder / name, layout.labels_key, len(class_names)) for name in layout.train]
    test_images, test_labels = _read_batch(folder / layout.test, layout.labels_key, len(class_names))
    return CifarArrays(
        train_images=np.concatenate([images for images, _ in parts]),
        train_labels=np.concatenate([labels for _, labels in parts]),
        test_images=test_images,
        test_labels=test_labels,
        class_names=class_names,
    )


def _text(value: Any) -> Any:
    """Decode Python 2 byte strings (keys and class names of the official files); leave other values alone."""
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def _one_line(exc: BaseException) -> str:
    """An exception's message squeezed onto one line, because lipcli prints errors as a single line."""
    return " ".join(str(exc).split()) or type(exc).__name__

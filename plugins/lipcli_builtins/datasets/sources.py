"""The built-in data set factories: ``factory(*, data_dir, download, **options) -> DataSplits``.

File-based data sets (CIFAR-10/100, MNIST, Fashion-MNIST, and the user's own ``image-folder`` and ``npz``) are
always read by lipcli's own readers (:mod:`lipcli_builtins.datasets.readers`). torchvision is used only to
*fetch* missing files into the cache folder, so a downloaded copy, a Debian package and a folder on a shared disk
all go through one reading path. Images stay uint8 in memory; :meth:`lipcli.api.ImageSet.as_float` scales them
to [0, 1] per batch.
"""

from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from lipcli.api import ConfigError, DataError, DatasetInfo, DataSplits, ImageFiles, ImageSet
from lipcli_builtins.datasets.readers import (
    ARRAY_KEYS,
    CIFAR_LAYOUTS,
    FOLDER_LAYOUT,
    IDX_FILES,
    LAYOUTS,
    SplitArrays,
    cifar_folder,
    find_idx_files,
    read_arrays,
    read_cifar,
    read_idx,
    scan_image_folder,
)

ENV_DATA_DIR = "LIPCLI_DATA_DIR"
"""Overrides the cache root ``~/.cache/lipcli/data``; each data set keeps its own subfolder below it."""

MNIST_CLASSES = tuple(str(digit) for digit in range(10))
FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)

DIGITS_SPLIT_SEED = 20240611
"""Seed of the digits train/test split: fixed so every run, whatever its own seed, tests on the same images."""


# -- file-based data sets ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class _FileSource:
    """How to find, fetch and read one file-based data set, and what to tell a user who lacks it."""

    name: str
    torchvision_class: str
    expected: str
    """The files looked for, as a user should read them in an error message."""
    how_to_get: str
    """Instructions that complete the error message when the files are missing."""
    subdirs: tuple[str, ...]
    """Folders under a root that may hold the files (the root itself and torchvision's layouts)."""
    present: Callable[[Path], bool]
    read: Callable[[Path], DataSplits]

    def looked_in(self, root: Path) -> str:
        return ", ".join(str(root / subdir) for subdir in self.subdirs)


def cache_dir(name: str) -> Path:
    """The folder where ``name``'s files are looked for (and downloaded to) when no data_dir is given."""
    base = os.environ.get(ENV_DATA_DIR) or str(Path.home() / ".cache" / "lipcli" / "data")
    return Path(base).expanduser() / name


def _load(source: _FileSource, data_dir: str | None, download: bool) -> DataSplits:
    """Read ``source`` from ``data_dir`` or the cache folder, fetching it into the cache when allowed."""
    if data_dir is not None:
        folder = Path(data_dir).expanduser()
        if not folder.exists():
            raise DataError(f"data_dir {folder} does not exist; {source.how_to_get}")
        if not folder.is_dir():
            raise DataError(f"data_dir {folder} is not a folder; {source.how_to_get}")
        if not source.present(folder):
            raise DataError(
                f"no {source.name} files in data_dir {folder} (looked in {source.looked_in(folder)} for "
                f"{source.expected}); {source.how_to_get}"
            )
        return source.read(folder)

    folder = cache_dir(source.name)
    if not source.present(folder):
        if not download:
            raise DataError(
                f"{source.name} is not in the cache folder {folder} (looked in {source.looked_in(folder)} for "
                f"{source.expected}) and downloading is off; {source.how_to_get}, or enable downloading "
                f"to fetch it into {folder} (set {ENV_DATA_DIR} to move the cache)"
            )
        _download(source, folder)
    return source.read(folder)


def _download(source: _FileSource, folder: Path) -> None:
    """Let torchvision fetch and check the files into ``folder``; the object it builds is discarded."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        import torchvision.datasets

        getattr(torchvision.datasets, source.torchvision_class)(root=str(folder), train=True, download=True)
    except Exception as exc:  # noqa: BLE001 - offline, a proxy, a checksum: all leave the user the same options
        reason = " ".join(f"{type(exc).__name__}: {exc}".split())
        raise DataError(
            f"could not download {source.name} into {folder} ({reason}); {source.how_to_get}"
        ) from None
    if not source.present(folder):
        raise DataError(
            f"downloading {source.name} left no {source.expected} in {source.looked_in(folder)}; "
            f"{source.how_to_get}"
        )


def _image_set(images: np.ndarray, labels: np.ndarray) -> ImageSet:
    return ImageSet(torch.from_numpy(images), torch.from_numpy(labels.astype(np.int64, copy=False)))


def _idx_split(images_path: Path, labels_path: Path, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """One split of an MNIST-style data set as uint8 images ``[N, 1, H, W]`` and labels, checked together."""
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.dtype != np.uint8 or images.ndim != 3:
        raise DataError(f"{images_path} holds {images.dtype} of shape {images.shape}, not uint8 images [N, H, W]")
    if labels.ndim != 1 or labels.shape[0] != images.shape[0]:
        raise DataError(f"{labels_path} holds labels of shape {labels.shape} for {images.shape[0]} images")
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise DataError(f"{labels_path} has labels outside 0..{num_classes - 1}")
    return images[:, None], labels


def _read_idx_dataset(
    name: str, class_names: tuple[str, ...], subdirs: tuple[str, ...], root: Path
) -> DataSplits:
    files = find_idx_files(root, subdirs)
    train_images, train_labels = _idx_split(
        files["train-images-idx3-ubyte"], files["train-labels-idx1-ubyte"], len(class_names)
    )
    test_images, test_labels = _idx_split(
        files["t10k-images-idx3-ubyte"], files["t10k-labels-idx1-ubyte"], len(class_names)
    )
    if train_images.shape[1:] != test_images.shape[1:]:
        raise DataError(
            f"{name} train images are {train_images.shape[2:]} but test images {test_images.shape[2:]} "
            f"({files['t10k-images-idx3-ubyte']})"
        )
    _, channels, height, width = train_images.shape
    info = DatasetInfo(name, channels, height, width, len(class_names), class_names)
    return DataSplits(info, _image_set(train_images, train_labels), _image_set(test_images, test_labels))


def _splits(name: str, arrays: SplitArrays, num_classes: int) -> DataSplits:
    """The data set of arrays read from files; the image shape is the training images' (the readers check the
    test images against it)."""
    _, channels, height, width = arrays.train_images.shape
    info = DatasetInfo(name, channels, height, width, num_classes, arrays.class_names)
    return DataSplits(
        info,
        _image_set(arrays.train_images, arrays.train_labels),
        _image_set(arrays.test_images, arrays.test_labels),
    )


def _read_cifar_dataset(name: str, root: Path) -> DataSplits:
    arrays = read_cifar(root, name)
    return _splits(name, arrays, len(arrays.class_names))


def _idx_source(name: str, torchvision_class: str, class_names: tuple[str, ...], how_to_get: str) -> _FileSource:
    # Only this data set's torchvision layout: a root holding both MNIST/raw and FashionMNIST/raw stays unambiguous.
    subdirs = (".", "raw", f"{torchvision_class}/raw")
    return _FileSource(
        name=name,
        torchvision_class=torchvision_class,
        expected=", ".join(IDX_FILES) + " (each optionally .gz)",
        how_to_get=how_to_get,
        subdirs=subdirs,
        present=lambda root: bool(find_idx_files(root, subdirs)),
        read=lambda root: _read_idx_dataset(name, class_names, subdirs, root),
    )


def _cifar_source(name: str, torchvision_class: str, archive: str) -> _FileSource:
    layout = CIFAR_LAYOUTS[name]
    files = ", ".join((*layout.train, layout.test, layout.meta))
    return _FileSource(
        name=name,
        torchvision_class=torchvision_class,
        expected=files,
        how_to_get=f"pass --data-dir to the {layout.folder} folder extracted from {archive} (or to its parent)",
        subdirs=(".", layout.folder),
        present=lambda root: cifar_folder(root, name) is not None,
        read=lambda root: _read_cifar_dataset(name, root),
    )


_MNIST = _idx_source(
    "mnist", "MNIST", MNIST_CLASSES,
    "pass --data-dir to a folder holding the four MNIST IDX files (train-images, train-labels, t10k-images, "
    "t10k-labels), flat or in torchvision's MNIST/raw layout",
)
_FASHION_MNIST = _idx_source(
    "fashion-mnist", "FashionMNIST", FASHION_MNIST_CLASSES,
    "pass --data-dir to a folder holding the four IDX files, e.g. /usr/share/datasets/fashion-mnist from "
    "Debian's dataset-fashion-mnist package (apt-get install dataset-fashion-mnist)",
)
_CIFAR10 = _cifar_source("cifar10", "CIFAR10", "cifar-10-python.tar.gz")
_CIFAR100 = _cifar_source("cifar100", "CIFAR100", "cifar-100-python.tar.gz")


def cifar10(*, data_dir: str | None = None, download: bool = False) -> DataSplits:
    """CIFAR-10 from its python batches: 50,000 + 10,000 uint8 images 3x32x32, 10 classes."""
    return _load(_CIFAR10, data_dir, download)


def cifar100(*, data_dir: str | None = None, download: bool = False) -> DataSplits:
    """CIFAR-100 from its python batches, with the 100 fine labels."""
    return _load(_CIFAR100, data_dir, download)


def mnist(*, data_dir: str | None = None, download: bool = False) -> DataSplits:
    """MNIST from its IDX files: 60,000 + 10,000 uint8 images 1x28x28, digits 0-9."""
    return _load(_MNIST, data_dir, download)


def fashion_mnist(*, data_dir: str | None = None, download: bool = False) -> DataSplits:
    """Fashion-MNIST from its IDX files: 60,000 + 10,000 uint8 images 1x28x28, 10 kinds of clothing."""
    return _load(_FASHION_MNIST, data_dir, download)


# -- option values ----------------------------------------------------------------------------------------

def _int_option(key: str, value: object, minimum: int) -> int:
    """``value`` as an int >= ``minimum``; bools and floats are refused rather than silently converted."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ConfigError(f"data.options.{key} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _float_option(key: str, value: object, valid: Callable[[float], bool], requirement: str) -> float:
    """``value`` as a finite float for which ``valid`` holds; ``requirement`` says so in the error."""
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float, np.integer, np.floating))
        or not math.isfinite(float(value))
        or not valid(float(value))
    ):
        raise ConfigError(f"data.options.{key} must be {requirement}, got {value!r}")
    return float(value)


# -- the user's own files ---------------------------------------------------------------------------------

_IMAGE_FOLDER_FILES = f"a folder of images laid out as {FOLDER_LAYOUT}"
_NPZ_FILES = (f"an .npz file of {', '.join(ARRAY_KEYS)} (or a folder holding one, or holding "
              f"{', '.join(f'{key}.npy' for key in ARRAY_KEYS)})")


def _own_path(name: str, data_dir: str | None, expected: str) -> Path:
    """``data_dir``, which must exist: the user's own data has no cache folder and nothing to download."""
    if data_dir is None:
        raise DataError(f"{name} reads your own files: pass --data-dir (data.data_dir) with {expected}")
    path = Path(data_dir).expanduser()
    if not path.exists():
        raise DataError(f"data_dir {path} does not exist; {name} reads {expected}")
    return path


def image_folder(
    *,
    data_dir: str | None = None,
    download: bool = False,
    resize: int | None = None,
    crop: int | None = None,
    grayscale: bool | None = None,
    max_memory_gb: float = 8.0,
    stream: bool | None = None,
    workers: int | None = None,
) -> DataSplits:
    """Your own images in torchvision's ImageFolder layout, ``data_dir/{train,test}/CLASS/*``, as uint8.

    Classes are the class folders' names, sorted; both splits must have the same ones. ``resize`` scales each
    image's central square to resize x resize; ``crop`` then keeps the central crop x crop; without either,
    every image must have the same size. ``grayscale`` true or false reads one or three channels; unset, one
    when every image is grey. The images are held in memory unless they take more than ``max_memory_gb``;
    then (or with ``stream = true``) they are read from their files a batch at a time by ``workers``
    DataLoader processes (default: one per CPU core, shared among torchrun's processes, at most 8). ``download`` is ignored: there is nothing
    to download.
    """
    resize = None if resize is None else _int_option("resize", resize, 1)
    crop = None if crop is None else _int_option("crop", crop, 1)
    if resize is not None and crop is not None and crop > resize:
        raise ConfigError(f"data.options.crop = {crop} is larger than data.options.resize = {resize}; the crop "
                          "is taken from the resized image")
    limit = _float_option("max_memory_gb", max_memory_gb, lambda f: f > 0.0, "a number > 0")
    workers = _default_workers() if workers is None else _int_option("workers", workers, 0)
    for key, flag in (("grayscale", grayscale), ("stream", stream)):
        if flag is not None and not isinstance(flag, bool):  # "False" or "no" would read as true
            raise ConfigError(f"data.options.{key} must be true or false, got {flag!r}")
    folder = _own_path("image-folder", data_dir, _IMAGE_FOLDER_FILES)
    if not folder.is_dir():
        raise DataError(f"data_dir {folder} is not a folder; image-folder reads {_IMAGE_FOLDER_FILES}")
    scan = scan_image_folder(folder, resize=resize, crop=crop, grayscale=grayscale)
    if stream is None and scan.nbytes > limit * 1e9:
        warnings.warn(f"image-folder: the {sum(map(len, scan.files.values()))} images of {folder} take "
                      f"{scan.nbytes / 1e9:.3g} GB as uint8 {'x'.join(map(str, scan.shape))}, more than "
                      f"data.options.max_memory_gb = {limit:g}: they are read from their files a batch at a time",
                      stacklevel=2)
        stream = True
    if not stream:
        return _splits("image-folder", scan.read(), len(scan.class_names))
    channels, height, width = scan.shape
    info = DatasetInfo("image-folder", channels, height, width, len(scan.class_names), scan.class_names)
    read = scan.reader()
    train, test = (ImageSet(ImageFiles(scan.files[split], scan.shape, read, workers),
                            torch.from_numpy(scan.labels[split])) for split in ("train", "test"))
    return DataSplits(info, train, test)


def _default_workers() -> int:
    """DataLoader processes reading a streamed set: the CPU cores this process may use, shared with the other
    processes of this machine under torchrun (``LOCAL_WORLD_SIZE``), at most 8."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, min(8, cores // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))))


def npz(
    *,
    data_dir: str | None = None,
    download: bool = False,
    file: str | None = None,
    layout: str | None = None,
    num_classes: int | None = None,
) -> DataSplits:
    """Your own arrays: ``x_train``, ``y_train``, ``x_test``, ``y_test`` in an ``.npz`` file, or as ``.npy`` files.

    ``data_dir`` is the ``.npz`` file, or a folder holding one (``file`` names it when there are several) or
    the four ``.npy`` files. Images are uint8 (0-255) or float in [0, 1]; ``[N, H, W]`` (grey), or NCHW or
    NHWC as ``layout`` says, else as their shapes show (a warning says which). Labels are integers
    0..K-1; ``num_classes`` defaults to the largest label plus one. Files are loaded without unpickling.
    """
    if layout is not None and layout not in LAYOUTS:
        raise ConfigError(f"data.options.layout must be {' or '.join(map(repr, LAYOUTS))}, got {layout!r}")
    classes = None if num_classes is None else _int_option("num_classes", num_classes, 2)
    arrays = read_arrays(_own_path("npz", data_dir, _NPZ_FILES), file=file, layout=layout)
    largest = int(max(arrays.train_labels.max(), arrays.test_labels.max()))
    if classes is not None and largest >= classes:
        raise ConfigError(f"data.options.num_classes = {classes}, but the labels go up to {largest}")
    return _splits("npz", arrays, largest + 1 if classes is None else classes)


# -- bundled and generated data sets ----------------------------------------------------------------------

def digits(*, data_dir: str | None = None, download: bool = False, test_fraction: float = 0.25) -> DataSplits:
    """scikit-learn's bundled 8x8 digits (1,797 images, 1 channel, 10 classes): real data that needs no files.

    ``data_dir`` and ``download`` are part of every factory's signature and ignored: the data ships with
    scikit-learn. The split is stratified (each class keeps ``test_fraction`` of its images for testing, at
    least one on each side) and uses its own fixed seed with NumPy's legacy ``RandomState``, whose stream
    NumPy keeps frozen: the test set never changes with the run's seed or with the NumPy version.
    """
    fraction = _float_option("test_fraction", test_fraction, lambda f: 0.0 < f < 1.0, "a number in (0, 1)")
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = (np.asarray(bunch.data, dtype=np.float32) / 16.0).reshape(-1, 1, 8, 8)
    labels = np.asarray(bunch.target, dtype=np.int64)

    rng = np.random.RandomState(DIGITS_SPLIT_SEED)
    is_test = np.zeros(labels.shape[0], dtype=bool)
    for cls in range(10):
        members = rng.permutation(np.flatnonzero(labels == cls))
        n_test = min(max(round(members.size * fraction), 1), members.size - 1)
        is_test[members[:n_test]] = True

    class_names = tuple(str(c) for c in range(10))
    info = DatasetInfo("digits", 1, 8, 8, 10, class_names)
    return DataSplits(
        info,
        _image_set(images[~is_test], labels[~is_test]),
        _image_set(images[is_test], labels[is_test]),
    )


def synthetic(
    *,
    data_dir: str | None = None,
    download: bool = False,
    train_size: int = 1024,
    test_size: int = 256,
    channels: int = 3,
    size: int = 32,
    num_classes: int = 10,
    seed: int = 0,
    noise: float = 0.15,
) -> DataSplits:
    """A learnable data set generated from ``seed``, for tests and smoke runs with any image shape.

    Each class has one uniform random prototype image; a sample is its class's prototype plus Gaussian noise
    of standard deviation ``noise``, clipped to [0, 1]. Classes are balanced in both splits. ``data_dir``
    and ``download`` are part of every factory's signature and ignored.
    """
    train_size = _int_option("train_size", train_size, 1)
    test_size = _int_option("test_size", test_size, 1)
    channels = _int_option("channels", channels, 1)
    size = _int_option("size", size, 1)
    num_classes = _int_option("num_classes", num_classes, 2)
    seed = _int_option("seed", seed, 0)
    noise = _float_option("noise", noise, lambda f: f >= 0.0, "a number >= 0")

    rng = np.random.default_rng(seed)
    prototypes = rng.random((num_classes, channels, size, size), dtype=np.float32)

    def draw(count: int) -> ImageSet:
        labels = rng.permutation(np.arange(count) % num_classes)
        images = prototypes[labels] + np.float32(noise) * rng.standard_normal(
            (count, channels, size, size), dtype=np.float32
        )
        return _image_set(np.clip(images, 0.0, 1.0, out=images), labels)

    train = draw(train_size)
    test = draw(test_size)
    class_names = tuple(f"class-{k}" for k in range(num_classes))
    info = DatasetInfo("synthetic", channels, size, size, num_classes, class_names)
    return DataSplits(info, train, test)

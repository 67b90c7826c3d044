"""Offline readers of the files the built-in data sets read: MNIST and Fashion-MNIST (IDX), CIFAR (Python
pickles), and the user's own images (an ImageFolder tree) and arrays (``.npz``/``.npy``).

lipcli reads these files itself rather than through torchvision's dataset classes so that there is one
reading path whether the files came from a download, a Debian package or a copy on a shared disk, and so
that no pickle is ever handed to an unrestricted :func:`pickle.load` (CIFAR's go through a restricted
unpickler; numpy files are loaded with ``allow_pickle=False``). Arrays are parsed with numpy in whole-array
operations; images are decoded one file at a time into one preallocated array, with no per-pixel Python.
Only the built-in data sets read these formats, so the readers belong to their plugin, not to the engine.
"""

from __future__ import annotations

import codecs
import gzip
import pickle
import warnings
import zlib
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
from PIL import Image

from lipcli.api import DataError


@dataclass(frozen=True)
class SplitArrays:
    """A data set read from files as numpy arrays: images ``[N, C, H, W]`` (uint8, or float32 in [0, 1]) and
    int64 labels ``[N]`` of each split, and the class names where the files name the classes (else empty)."""

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    class_names: tuple[str, ...]


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


def read_cifar(root: str | Path, variant: str) -> SplitArrays:
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
    return SplitArrays(
        train_images=np.concatenate([images for images, _ in parts]),
        train_labels=np.concatenate([labels for _, labels in parts]),
        test_images=test_images,
        test_labels=test_labels,
        class_names=class_names,
    )


# -- image folders (torchvision's ImageFolder layout) -----------------------------------------------------

IMAGE_SUFFIXES: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
"""The files a class folder is read for (in any case); other files, and hidden ones, are ignored."""

FOLDER_LAYOUT = "train/CLASS/*.png and test/CLASS/*.png (also .jpg, .jpeg, .bmp, .webp)"
"""An image folder's layout, as an error message shows it."""

_GREY_MODES = frozenset({"1", "L", "LA"})
"""PIL modes read as one channel when the channels are detected; every other 8-bit mode is read as RGB."""


def _visible(folder: Path) -> list[Path]:
    """The entries of ``folder`` by name, without hidden ones (``.DS_Store``, ``.ipynb_checkpoints``)."""
    return sorted((entry for entry in folder.iterdir() if not entry.name.startswith(".")), key=lambda e: e.name)


def _folder_files(root: Path) -> tuple[tuple[str, ...], dict[str, list[list[Path]]]]:
    """The class names (the class folders' names, sorted) and, per split, each class's image files.

    Both splits must have the same classes: a class missing from one split would silently shift the
    labels of every later class, or leave a class untested, so it is an error naming the class.
    """
    classes: dict[str, list[str]] = {}
    for split in ("train", "test"):
        folder = root / split
        if not folder.is_dir():
            raise DataError(f"no {split} folder in {root}: image-folder reads {FOLDER_LAYOUT} under it")
        classes[split] = [entry.name for entry in _visible(folder) if entry.is_dir()]
        if not classes[split]:
            raise DataError(f"{folder} holds no class folders, so no images: put each class's images in "
                            f"{folder}/CLASS_NAME/")
    for split, other in (("train", "test"), ("test", "train")):
        lone = sorted(set(classes[split]) - set(classes[other]))
        if lone:
            raise DataError(f"class {', '.join(map(repr, lone))} has a folder in {root / split} but not in "
                            f"{root / other}: every class needs images in both train and test")
    files: dict[str, list[list[Path]]] = {}
    for split in ("train", "test"):
        files[split] = []
        for name in classes["train"]:
            folder = root / split / name
            images = [entry for entry in _visible(folder)
                      if entry.suffix.lower() in IMAGE_SUFFIXES and entry.is_file()]
            if not images:
                raise DataError(f"class folder {folder} holds no images ({', '.join(IMAGE_SUFFIXES)})")
            files[split].append(images)
    return tuple(classes["train"]), files


def _image_error(path: Path, exc: BaseException) -> DataError:
    return DataError(f"cannot read image {path}: {type(exc).__name__}: {_one_line(exc)}")


def _probe(path: Path) -> tuple[str, tuple[int, int]]:
    """An image's PIL mode and (width, height), from its header alone: nothing is decoded yet."""
    try:
        with Image.open(path) as image:
            return image.mode, image.size
    except Exception as exc:  # noqa: BLE001 - not an image, a broken header, a decompression bomb: all "bad file"
        raise _image_error(path, exc) from None


def _target_mode(paths: Sequence[Path], modes: Sequence[str], grayscale: bool | None, root: Path) -> str:
    """The PIL mode every image is read in: "L" or "RGB" as ``grayscale`` says, else "L" when every image is
    grey. 16-bit and float images are refused: converting them to 8 bits clips their values unnoticed."""
    for path, mode in zip(paths, modes):
        if mode in ("I", "F") or mode.startswith("I;"):
            raise DataError(f"{path} has {mode} pixels (16-bit or float); image-folder reads 8-bit images: "
                            "convert it first")
    if grayscale is not None:
        return "L" if grayscale else "RGB"
    grey = sum(mode in _GREY_MODES for mode in modes)
    if grey == len(modes):
        return "L"
    if grey:
        warnings.warn(f"image-folder: {root} holds {grey} grey and {len(modes) - grey} colour images; all are "
                      "read as RGB (set data.options.grayscale = true to read them grey)", stacklevel=2)
    return "RGB"


def _target_size(paths: Sequence[Path], sizes: np.ndarray, resize: int | None, crop: int | None) -> tuple[int, int]:
    """(height, width) of every image once read; ``sizes`` are the images' (width, height), one row each."""
    if crop is not None:
        if resize is None:
            small = np.flatnonzero(sizes.min(axis=1) < crop)
            if small.size:
                width, height = sizes[small[0]]
                raise DataError(f"{paths[small[0]]} is {width}x{height}, smaller than data.options.crop = {crop}; "
                                "set data.options.resize to scale the images first")
        return crop, crop
    if resize is not None:
        return resize, resize
    other = np.flatnonzero((sizes != sizes[0]).any(axis=1))
    if other.size:
        (width, height), (other_width, other_height) = sizes[0], sizes[other[0]]
        raise DataError(f"images differ in size: {paths[0]} is {width}x{height} but {paths[other[0]]} is "
                        f"{other_width}x{other_height} (width x height); set data.options.resize (or crop) "
                        "to read them at one size")
    width, height = sizes[0]
    return int(height), int(width)


def _fit(image: Image.Image, resize: int | None, crop: int | None) -> Image.Image:
    """``resize``: the central square scaled to resize x resize (the same as scaling the shorter side to
    ``resize`` and keeping the centre), in one resampling; ``crop``: then the central crop x crop."""
    if resize is not None:
        width, height = image.size
        side = min(width, height)
        box = ((width - side) / 2, (height - side) / 2, (width + side) / 2, (height + side) / 2)
        image = image.resize((resize, resize), Image.Resampling.BILINEAR, box=box)
    if crop is not None:
        width, height = image.size
        left, top = (width - crop) // 2, (height - crop) // 2
        image = image.crop((left, top, left + crop, top + crop))
    return image


def read_image(path: str, *, mode: str, shape: tuple[int, int, int], resize: int | None,
               crop: int | None) -> np.ndarray:
    """One image file as uint8 ``[C, H, W]``, read in ``mode`` and fitted (:func:`_fit`) to ``shape``; a file
    that cannot be decoded, or decodes to another size, is a :class:`DataError` naming it."""
    try:
        with Image.open(path) as image:
            pixels = np.asarray(_fit(image.convert(mode), resize, crop))
    except Exception as exc:  # noqa: BLE001 - a truncated or corrupt file fails only when decoded
        raise _image_error(Path(path), exc) from None
    pixels = pixels[None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1)
    if pixels.shape != shape:
        raise DataError(f"{path} reads as {pixels.shape[2]}x{pixels.shape[1]}, not {shape[2]}x{shape[1]} like "
                        "the other images (its header said otherwise); set data.options.resize to read it")
    return pixels


@dataclass(frozen=True)
class FolderScan:
    """An ImageFolder tree as found from the image headers alone: per split, the image files (ordered by class,
    then by file name) and their labels (the class's index), and how every image is read."""

    class_names: tuple[str, ...]
    files: dict[str, list[str]]
    labels: dict[str, np.ndarray]
    mode: str
    """The PIL mode every image is read in: "L" (one channel) or "RGB"."""
    shape: tuple[int, int, int]
    resize: int | None
    crop: int | None

    @property
    def nbytes(self) -> int:
        """The memory the images of both splits take as uint8."""
        return sum(map(len, self.files.values())) * int(np.prod(self.shape))

    def reader(self) -> Callable[[str], np.ndarray]:
        """:func:`read_image` with this folder's settings (a partial, so that DataLoader workers receive it)."""
        return partial(read_image, mode=self.mode, shape=self.shape, resize=self.resize, crop=self.crop)

    def read(self) -> SplitArrays:
        """Every image, decoded into one uint8 array per split."""
        read = self.reader()
        images = {}
        for split, files in self.files.items():
            images[split] = np.empty((len(files), *self.shape), dtype=np.uint8)
            for row, path in enumerate(files):
                images[split][row] = read(path)
        return SplitArrays(images["train"], self.labels["train"], images["test"], self.labels["test"],
                           self.class_names)


def scan_image_folder(root: Path, *, resize: int | None, crop: int | None, grayscale: bool | None) -> FolderScan:
    """The files and labels of an ImageFolder tree ``root/{train,test}/CLASS/*`` and the mode and size every image
    will be read in, from the headers alone, so that mixed sizes or 16-bit images are refused before any pixel
    is decoded."""
    class_names, files = _folder_files(root)
    paths = {split: [path for images in per_class for path in images] for split, per_class in files.items()}
    every = [*paths["train"], *paths["test"]]
    modes, sizes = zip(*(_probe(path) for path in every))
    mode = _target_mode(every, modes, grayscale, root)
    height, width = _target_size(every, np.array(sizes), resize, crop)
    labels = {
        split: np.repeat(np.arange(len(class_names), dtype=np.int64), [len(class_paths) for class_paths in per_class])
        for split, per_class in files.items()
    }
    return FolderScan(class_names, {split: [str(p) for p in found] for split, found in paths.items()}, labels,
                      mode, (len(mode), height, width), resize, crop)  # "L": one channel, "RGB": three


# -- numpy arrays (.npz, .npy) ----------------------------------------------------------------------------

ARRAY_KEYS: tuple[str, ...] = ("x_train", "y_train", "x_test", "y_test")
"""The arrays of an ``.npz`` archive, or the names (plus ``.npy``) of the four files in a folder."""

LAYOUTS: dict[str, int] = {"nchw": 1, "nhwc": 3}
"""Image layouts of 4-d arrays, with the axis of their channels."""


def _array_source(path: Path, file: str | None) -> Path | dict[str, Path]:
    """The ``.npz`` archive to read, or the four ``.npy`` files by key; anything ambiguous is an error."""
    if path.is_file():
        if file is not None:
            raise DataError(f"data.options.file = {file!r} names a file in a folder, but data_dir {path} is a file")
        return path
    if file is not None:
        if not (path / file).is_file():
            raise DataError(f"data.options.file: there is no file {path / file}")
        return path / file
    archives = sorted(entry.name for entry in path.glob("*.npz") if entry.is_file())
    arrays = {key: path / f"{key}.npy" for key in ARRAY_KEYS}
    present = [f"{key}.npy" for key, npy in arrays.items() if npy.is_file()]
    if len(archives) == 1 and not present:
        return path / archives[0]
    if not archives and len(present) == len(ARRAY_KEYS):
        return arrays
    if not archives and not present:
        raise DataError(f"no .npz file and no {', '.join(f'{key}.npy' for key in ARRAY_KEYS)} in {path}")
    if not archives:
        raise DataError(f"{path} holds {', '.join(present)} but not "
                        f"{', '.join(f'{key}.npy' for key, npy in arrays.items() if not npy.is_file())}")
    raise DataError(f"{path} holds {', '.join([*archives, *present])}: set data.options.file to the .npz to read")


def _numpy_read(read: Callable[[], Any], what: str) -> Any:
    """``read()``, any failure a :class:`DataError` naming ``what``. numpy raises ValueError for a pickle (a
    file of pickled data, an object array) because lipcli loads with ``allow_pickle=False``: it is refused,
    never run."""
    try:
        return read()
    except Exception as exc:  # noqa: BLE001 - a bad zip, a bad header, a pickle: all mean "cannot use this file"
        hint = " (lipcli never unpickles: save plain numeric arrays)" if isinstance(exc, ValueError) else ""
        raise DataError(f"cannot read {what}: {_one_line(exc)}{hint}") from None


def load_arrays(path: Path, file: str | None) -> dict[str, tuple[np.ndarray, str]]:
    """The arrays :data:`ARRAY_KEYS` of ``path`` (an ``.npz`` archive, or a folder holding one or the four
    ``.npy`` files), each with how a message names it."""
    source = _array_source(path, file)
    if isinstance(source, dict):
        loaded = {key: (_numpy_read(lambda npy=npy: np.load(npy, allow_pickle=False), str(npy)), str(npy))
                  for key, npy in source.items()}
        for array, what in loaded.values():
            if not isinstance(array, np.ndarray):
                raise DataError(f"{what} is an .npz archive, not one .npy array")
        return loaded
    archive = _numpy_read(lambda: np.load(source, allow_pickle=False), str(source))
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise DataError(f"{source} is one .npy array, not an .npz archive of {', '.join(ARRAY_KEYS)}")
    with archive:
        missing = [key for key in ARRAY_KEYS if key not in archive.files]
        if missing:
            raise DataError(f"{source} has no {', '.join(missing)} (it holds {', '.join(archive.files) or 'nothing'}); "
                            f"lipcli reads {', '.join(ARRAY_KEYS)}")
        return {key: (_numpy_read(lambda key=key: archive[key], f"{key} in {source}"), f"{key} in {source}")
                for key in ARRAY_KEYS}


def _pixels(images: np.ndarray, what: str) -> np.ndarray:
    """``images`` checked: 3-d or 4-d, not empty, uint8 or float in [0, 1] (made float32, native byte order)."""
    if images.ndim not in (3, 4):
        raise DataError(f"{what} has shape {images.shape}: images must be [N, H, W] (grey), [N, C, H, W] "
                        "or [N, H, W, C]")
    if images.shape[0] == 0:
        raise DataError(f"{what} holds no images")
    if images.dtype == np.uint8:
        return images
    if not np.issubdtype(images.dtype, np.floating):
        raise DataError(f"{what} holds {images.dtype}: images must be uint8 (0-255) or float in [0, 1]")
    low, high = float(images.min()), float(images.max())
    if not (0.0 <= low and high <= 1.0):  # NaN fails too
        raise DataError(f"{what} holds values in [{low:g}, {high:g}]: float images must lie in [0, 1] "
                        "(or be uint8 in 0-255)")
    return images.astype(np.float32, copy=False)


def _layout(images: Sequence[tuple[np.ndarray, str]]) -> str | None:
    """The one layout the shapes of the 4-d arrays allow (channels, 1 or 3 of them, on axis 1 or on axis 3);
    None when every array is 3-d (grey)."""
    shaped = [(array, what) for array, what in images if array.ndim == 4]
    if not shaped:
        return None
    allowed = set(LAYOUTS)
    for array, _ in shaped:
        allowed &= {layout for layout, axis in LAYOUTS.items() if array.shape[axis] in (1, 3)}
    if len(allowed) == 1:
        return allowed.pop()
    shapes = " and ".join(f"{what} of shape {array.shape}" for array, what in shaped)
    reason = ("could be NCHW or NHWC" if allowed
              else "have no common channel axis of size 1 or 3 (axis 1: NCHW, axis 3: NHWC)")
    raise DataError(f"the layout of {shapes} is unclear: the shapes {reason}; set data.options.layout = "
                    "\"nchw\" or \"nhwc\"")


def _nchw(images: np.ndarray, layout: str | None) -> np.ndarray:
    """``images`` as ``[N, C, H, W]``: a grey 3-d array gains its channel axis, an NHWC one is transposed."""
    if images.ndim == 3:
        return images[:, None]
    return np.ascontiguousarray(images.transpose(0, 3, 1, 2)) if layout == "nhwc" else images


def _labels(labels: np.ndarray, what: str, count: int, images: str) -> np.ndarray:
    """``labels`` checked as ``count`` integers >= 0 (``[N]``, or ``[N, 1]`` as Keras gives them), as int64."""
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    if labels.ndim != 1:
        raise DataError(f"{what} has shape {labels.shape}: labels must be [N] (or [N, 1])")
    if not np.issubdtype(labels.dtype, np.integer):
        raise DataError(f"{what} holds {labels.dtype}: labels must be integers 0..K-1")
    if labels.shape[0] != count:
        raise DataError(f"{what} has {labels.shape[0]} labels for the {count} images of {images}")
    if labels.min() < 0:
        raise DataError(f"{what} has negative labels (down to {labels.min()}): labels must be 0..K-1")
    return labels.astype(np.int64)


def read_arrays(path: Path, *, file: str | None, layout: str | None) -> SplitArrays:
    """Images and labels from numpy files (see :func:`load_arrays`), images as ``[N, C, H, W]``.

    ``layout`` ("nchw" or "nhwc") says how 4-d image arrays are laid out; unset, it is detected from their
    shapes and a warning says what was found, so a wrong guess cannot pass unseen. 3-d arrays are grey.
    """
    arrays = load_arrays(path, file)
    images = [(_pixels(*arrays[key]), arrays[key][1]) for key in ("x_train", "x_test")]
    chosen = layout or _layout(images)
    if layout is None and chosen is not None:
        array, what = next((array, what) for array, what in images if array.ndim == 4)
        warnings.warn(f"npz: images read as {chosen.upper()} ({what} has shape {array.shape}); set "
                      f"data.options.layout = {chosen!r} to state it and silence this", stacklevel=2)
    (train, train_what), (test, test_what) = ((_nchw(array, chosen), what) for array, what in images)
    if train.shape[1:] != test.shape[1:]:
        raise DataError(f"{train_what} images are {'x'.join(map(str, train.shape[1:]))} but {test_what} images "
                        f"{'x'.join(map(str, test.shape[1:]))} (C x H x W)")
    return SplitArrays(
        train, _labels(*arrays["y_train"], len(train), train_what),
        test, _labels(*arrays["y_test"], len(test), test_what),
        class_names=(),
    )


def _text(value: Any) -> Any:
    """Decode Python 2 byte strings (keys and class names of the official files); leave other values alone."""
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def _one_line(exc: BaseException) -> str:
    """An exception's message squeezed onto one line, because lipcli prints errors as a single line."""
    return " ".join(str(exc).split()) or type(exc).__name__

"""The user's own data sets: ``image-folder`` (an ImageFolder tree of PNG/JPEG files) and ``npz`` (numpy arrays),
from the readers to a CLI run that trains on them and measures a curve."""

from __future__ import annotations

import json
import pickle
import shutil
import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
import torch
from data_files import MarkerPayload
from PIL import Image

from lipcli.contracts import CHECKS, run_check
from lipcli.errors import ConfigError, DataError
from lipcli.plugin_host import PluginHost
from lipcli.registry import Component
from lipcli_builtins.datasets import sources

FAST_CURVE = ["-a", "deepfool", "--masking-check", "0", "--device", "cpu", "--quiet"]


def write_images(root: Path, layout: dict[str, dict[str, int]], *, size: tuple[int, int] = (32, 32),
                 mode: str = "RGB", seed: int = 0) -> dict[Path, np.ndarray]:
    """``layout[split][class]`` random PNG images per class folder, named 0.png, 1.png, ...; returns their
    pixels (``[H, W]`` grey, ``[H, W, 3]`` RGB) by path. ``size`` is (width, height), as PIL gives it."""
    rng = np.random.default_rng(seed)
    channels = {"L": (), "RGB": (3,)}[mode]
    written: dict[Path, np.ndarray] = {}
    for split, classes in layout.items():
        for name, count in classes.items():
            (root / split / name).mkdir(parents=True, exist_ok=True)
            for index in range(count):
                pixels = rng.integers(0, 256, (size[1], size[0], *channels), dtype=np.uint8)
                path = root / split / name / f"{index}.png"
                Image.fromarray(pixels).save(path)  # 2-d: mode L, [H, W, 3]: RGB
                written[path] = pixels
    return written


TWO_CLASSES = {"train": {"dog": 3, "cat": 2}, "test": {"cat": 1, "dog": 2}}


def one_line_error(call: Callable[[], Any], *fragments: str, kind: type[Exception] = DataError) -> str:
    """The message of the error ``call()`` raises: of ``kind``, one line, holding every fragment."""
    with pytest.raises(kind) as info:
        call()
    message = str(info.value)
    assert "\n" not in message, message
    for fragment in fragments:
        assert fragment in message, message
    return message


# -- image-folder -----------------------------------------------------------------------------------------

def test_png_pixels_class_order_and_labels_round_trip(tmp_path: Path) -> None:
    written = write_images(tmp_path, {"train": {"zebra": 2, "ant": 1, "moth": 2}, "test": {"moth": 1, "ant": 1,
                                                                                             "zebra": 1}})
    splits = sources.image_folder(data_dir=str(tmp_path))
    assert splits.info.class_names == ("ant", "moth", "zebra")
    assert splits.info.input_shape == (3, 32, 32) and splits.info.num_classes == 3
    assert splits.train.images.dtype == torch.uint8 and splits.train.images.shape == (5, 3, 32, 32)
    assert splits.train.labels.tolist() == [0, 1, 1, 2, 2] and splits.test.labels.tolist() == [0, 1, 2]
    expected = [written[tmp_path / "train" / name / f"{i}.png"] for name, i in
                (("ant", 0), ("moth", 0), ("moth", 1), ("zebra", 0), ("zebra", 1))]
    assert torch.equal(splits.train.images, torch.from_numpy(np.stack(expected).transpose(0, 3, 1, 2)))


def test_grey_images_are_one_channel_unless_asked(tmp_path: Path) -> None:
    written = write_images(tmp_path, TWO_CLASSES, mode="L", size=(8, 6))
    grey = sources.image_folder(data_dir=str(tmp_path))
    assert grey.info.input_shape == (1, 6, 8)
    assert torch.equal(grey.test.images[0, 0], torch.from_numpy(written[tmp_path / "test" / "cat" / "0.png"]))
    colour = sources.image_folder(data_dir=str(tmp_path), grayscale=False)
    assert colour.info.input_shape == (3, 6, 8)
    assert torch.equal(colour.train.images, grey.train.images.expand(-1, 3, -1, -1))


def test_colour_images_read_grey_when_asked(tmp_path: Path) -> None:
    written = write_images(tmp_path, TWO_CLASSES)
    splits = sources.image_folder(data_dir=str(tmp_path), grayscale=True)
    expected = np.array(Image.fromarray(written[tmp_path / "test" / "cat" / "0.png"]).convert("L"))
    assert splits.info.channels == 1 and torch.equal(splits.test.images[0, 0], torch.from_numpy(expected))
    for text in ("False", "no", 0):  # not a bool (--data-option grayscale=False arrives as a string): refused
        with pytest.raises(ConfigError, match="grayscale must be true or false"):
            sources.image_folder(data_dir=str(tmp_path), grayscale=text)


def test_mixed_grey_and_colour_are_read_as_rgb_and_said(tmp_path: Path) -> None:
    write_images(tmp_path, TWO_CLASSES)
    Image.new("L", (32, 32), 7).save(tmp_path / "train" / "dog" / "grey.png")
    with pytest.warns(UserWarning, match="1 grey and 8 colour images; all are read as RGB"):
        splits = sources.image_folder(data_dir=str(tmp_path))
    assert splits.info.channels == 3
    assert bool((splits.train.images[-1] == 7).all())  # grey.png sorts after 0.png..2.png of dog, the last class


def test_jpeg_any_case_and_other_files_ignored(tmp_path: Path) -> None:
    smooth = np.broadcast_to(np.linspace(0, 255, 32, dtype=np.uint8)[None, :, None], (32, 32, 3)).copy()
    for split, suffix in (("train", ".JPG"), ("test", ".jpeg")):
        for name in ("a", "b"):
            (tmp_path / split / name).mkdir(parents=True)
            Image.fromarray(smooth).save(tmp_path / split / name / f"x{suffix}", "JPEG", quality=95)
            (tmp_path / split / name / "notes.txt").write_text("not an image")
            (tmp_path / split / name / ".hidden.png").write_bytes(b"not an image either")
    (tmp_path / "train" / ".ipynb_checkpoints").mkdir()
    splits = sources.image_folder(data_dir=str(tmp_path))
    assert splits.info.class_names == ("a", "b") and len(splits.train) == 2 and len(splits.test) == 2
    assert float((splits.train.images[0].permute(1, 2, 0).float() - torch.from_numpy(smooth).float()).abs().mean()) < 3


def test_resize_takes_the_central_square_and_crop_the_centre(tmp_path: Path) -> None:
    written = write_images(tmp_path, TWO_CLASSES, size=(48, 32))  # wider than high
    wide = written[tmp_path / "test" / "cat" / "0.png"]
    same_scale = sources.image_folder(data_dir=str(tmp_path), resize=32)
    assert same_scale.info.input_shape == (3, 32, 32)  # no scaling: exactly the central 32 columns
    assert torch.equal(same_scale.test.images[0], torch.from_numpy(wide[:, 8:40].transpose(2, 0, 1).copy()))
    cropped = sources.image_folder(data_dir=str(tmp_path), crop=16)
    assert torch.equal(cropped.test.images[0], torch.from_numpy(wide[8:24, 16:32].transpose(2, 0, 1).copy()))
    both = sources.image_folder(data_dir=str(tmp_path), resize=16, crop=8)
    assert both.info.input_shape == (3, 8, 8) and both.train.images.dtype == torch.uint8


def test_resize_brings_mixed_sizes_to_one(tmp_path: Path) -> None:
    write_images(tmp_path, TWO_CLASSES, size=(20, 12))
    write_images(tmp_path, {"train": {"cat": 1}}, size=(9, 30), seed=1)  # replaces train/cat/0.png
    splits = sources.image_folder(data_dir=str(tmp_path), resize=10)
    assert splits.info.input_shape == (3, 10, 10) and len(splits.train) == 5


def test_the_registered_sets_keep_the_dataset_contract(tmp_path: Path, host: PluginHost) -> None:
    """With their files the new sets pass the check every data set passes; without, they are skipped."""
    write_images(tmp_path / "folder", TWO_CLASSES)
    np.savez(tmp_path / "arrays.npz", x_train=np.zeros((4, 8, 8), np.uint8), y_train=np.array([0, 1, 0, 1]),
             x_test=np.ones((2, 8, 8), np.float32), y_test=np.array([1, 0]))
    check = dict(CHECKS["dataset"])["splits"]
    for name, data_dir in (("image-folder", tmp_path / "folder"), ("npz", tmp_path / "arrays.npz")):
        registered = host.registry("dataset").get(name)
        assert registered.plugin == "lipcli-datasets" and registered.metadata.get("files") is not False
        skipped = run_check("dataset", "splits", check, registered, host)
        assert skipped.status == "skip" and "--data-dir" in skipped.detail, skipped
        def with_data_dir(*, data_dir: None, download: bool, factory: Any = registered.factory,
                          path: str = str(data_dir)) -> Any:
            return factory(data_dir=path, download=download)  # the check passes data_dir=None: point it here

        with_files = Component(name, with_data_dir, "", "test")
        result = run_check("dataset", "splits", check, with_files, host)
        assert result.status == "pass", result.detail


def _truncated(root: Path) -> Path:
    path = root / "train" / "cat" / "0.png"
    path.write_bytes(path.read_bytes()[:200])  # the header reads; the pixels do not
    return path


def _damage(root: Path, damage: str) -> tuple[dict[str, Any], tuple[str, ...]]:
    """Damage the two-class folder at ``root``: the options to read it with and what the error must say."""
    if damage == "no-test":
        shutil.rmtree(root / "test")
        return {}, ("no test folder in", str(root))
    if damage == "no-classes":
        for folder in (root / "train").iterdir():
            shutil.rmtree(folder)
        return {}, (f"{root / 'train'} holds no class folders",)
    if damage == "lone-class":
        write_images(root, {"test": {"bird": 1}})
        return {}, ("class 'bird' has a folder in", str(root / "test"), "not in", str(root / "train"))
    if damage == "empty-class":
        for path in (root / "test" / "dog").iterdir():
            path.unlink()
        (root / "test" / "dog" / "readme.txt").write_text("no images here")
        return {}, (f"class folder {root / 'test' / 'dog'} holds no images",)
    if damage == "not-an-image":
        (root / "test" / "dog" / "1.png").write_bytes(b"this is no PNG")
        return {}, ("cannot read image", str(root / "test" / "dog" / "1.png"))
    if damage == "truncated":
        return {}, ("cannot read image", str(_truncated(root)))
    if damage == "mixed-sizes":
        write_images(root, {"test": {"dog": 1}}, size=(28, 20))
        return {}, ("images differ in size", f"{root / 'train' / 'cat' / '0.png'} is 32x32",
                    f"{root / 'test' / 'dog' / '0.png'} is 28x20", "data.options.resize")
    if damage == "smaller-than-crop":
        write_images(root, {"test": {"dog": 1}}, size=(28, 20))
        return {"crop": 24}, (f"{root / 'test' / 'dog' / '0.png'} is 28x20, smaller than data.options.crop = 24",)
    if damage == "16-bit":
        Image.fromarray(np.full((32, 32), 1000, np.uint16)).save(root / "train" / "dog" / "0.png")
        return {}, (str(root / "train" / "dog" / "0.png"), "16-bit")
    raise AssertionError(damage)


@pytest.mark.parametrize("damage", ["no-test", "no-classes", "lone-class", "empty-class", "not-an-image", "truncated",
                                    "mixed-sizes", "smaller-than-crop", "16-bit"])
def test_a_damaged_image_folder_is_a_one_line_error(tmp_path: Path, damage: str) -> None:
    write_images(tmp_path, TWO_CLASSES)
    options, fragments = _damage(tmp_path, damage)
    one_line_error(lambda: sources.image_folder(data_dir=str(tmp_path), **options), *fragments)


@pytest.mark.parametrize(
    ("data_dir", "options", "fragments", "kind"),
    [
        (None, {}, ("image-folder reads your own files", "--data-dir"), DataError),
        ("missing", {}, ("does not exist",), DataError),
        ("file", {}, ("is not a folder",), DataError),
        (".", {"resize": 0}, ("data.options.resize",), ConfigError),
        (".", {"crop": 1.5}, ("data.options.crop",), ConfigError),
        (".", {"resize": 8, "crop": 16}, ("data.options.crop = 16 is larger than data.options.resize = 8",),
         ConfigError),
        (".", {"max_memory_gb": 0}, ("data.options.max_memory_gb",), ConfigError),
        (".", {"stream": "yes"}, ("data.options.stream must be true or false",), ConfigError),
        (".", {"workers": -1}, ("data.options.workers",), ConfigError),
    ],
)
def test_image_folder_arguments_are_checked(tmp_path: Path, data_dir: str | None, options: dict[str, Any],
                                            fragments: tuple[str, ...], kind: type[Exception]) -> None:
    write_images(tmp_path, TWO_CLASSES)
    (tmp_path / "file").write_text("x")
    path = None if data_dir is None else str(tmp_path / data_dir)
    one_line_error(lambda: sources.image_folder(data_dir=path, **options), *fragments, kind=kind)


# -- npz --------------------------------------------------------------------------------------------------

def _arrays(x_train: np.ndarray, x_test: np.ndarray, y_train: Any = None, y_test: Any = None) -> dict[str, Any]:
    """The four arrays, labels 0, 1, 2, ... cycling over two classes unless given."""
    return {
        "x_train": x_train, "x_test": x_test,
        "y_train": np.arange(len(x_train)) % 2 if y_train is None else y_train,
        "y_test": np.arange(len(x_test)) % 2 if y_test is None else y_test,
    }


def _npz(tmp_path: Path, **arrays: Any) -> str:
    np.savez(tmp_path / "data.npz", **arrays)
    return str(tmp_path / "data.npz")


def _silently(call: Callable[[], Any]) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return call()


def test_npz_uint8_nchw_round_trip(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    x_train, x_test = rng.integers(0, 256, (6, 3, 8, 8), dtype=np.uint8), rng.integers(0, 256, (3, 3, 8, 8),
                                                                                         dtype=np.uint8)
    path = _npz(tmp_path, **_arrays(x_train, x_test, y_train=np.array([0, 1, 2, 0, 1, 2], np.uint8)))
    with pytest.warns(UserWarning, match=r"images read as NCHW \(x_train in .*data.npz has shape \(6, 3, 8, 8\)\)"):
        splits = sources.npz(data_dir=path)
    assert splits.info.input_shape == (3, 8, 8) and splits.info.num_classes == 3 and splits.info.name == "npz"
    assert splits.train.images.dtype == torch.uint8 and torch.equal(splits.train.images, torch.from_numpy(x_train))
    assert torch.equal(splits.test.images, torch.from_numpy(x_test))
    assert splits.train.labels.dtype == torch.int64 and splits.train.labels.tolist() == [0, 1, 2, 0, 1, 2]


def test_npz_float_nhwc_is_transposed(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    x_train, x_test = rng.random((5, 6, 7, 3)), rng.random((2, 6, 7, 3)).astype(np.float32)
    path = _npz(tmp_path, **_arrays(x_train, x_test, y_test=np.array([[1], [0]])))  # Keras-style [N, 1] labels
    with pytest.warns(UserWarning, match="images read as NHWC"):
        splits = sources.npz(data_dir=path)
    assert splits.info.input_shape == (3, 6, 7)
    assert splits.train.images.dtype == torch.float32
    assert torch.equal(splits.train.images, torch.from_numpy(x_train.astype(np.float32).transpose(0, 3, 1, 2)))
    assert splits.test.labels.tolist() == [1, 0]


def test_npz_3d_arrays_are_grey_without_a_warning(tmp_path: Path) -> None:
    x_train = np.arange(4 * 5 * 5, dtype=np.uint8).reshape(4, 5, 5)
    splits = _silently(lambda: sources.npz(data_dir=_npz(tmp_path, **_arrays(x_train, x_train[:2]))))
    assert splits.info.input_shape == (1, 5, 5) and torch.equal(splits.train.images[:, 0], torch.from_numpy(x_train))


@pytest.mark.parametrize(("layout", "shape"), [("nchw", (3, 3, 3)), ("nhwc", (3, 3, 3))])
def test_an_ambiguous_layout_is_an_error_unless_given(tmp_path: Path, layout: str, shape: tuple[int, ...]) -> None:
    x = np.random.default_rng(2).integers(0, 256, (4, 3, 8, 3), dtype=np.uint8)
    path = _npz(tmp_path, **_arrays(x, x[:2]))
    one_line_error(lambda: sources.npz(data_dir=path), "(4, 3, 8, 3)", "could be NCHW or NHWC",
                        'data.options.layout = "nchw" or "nhwc"')
    splits = _silently(lambda: sources.npz(data_dir=path, layout=layout))
    assert splits.info.input_shape == ((3, 8, 3) if layout == "nchw" else (3, 3, 8))
    if layout == "nhwc":
        assert torch.equal(splits.train.images, torch.from_numpy(x.transpose(0, 3, 1, 2).copy()))


def test_a_layout_the_shapes_do_not_allow_is_an_error(tmp_path: Path) -> None:
    path = _npz(tmp_path, **_arrays(np.zeros((4, 5, 8, 8), np.uint8), np.zeros((2, 5, 8, 8), np.uint8)))
    one_line_error(lambda: sources.npz(data_dir=path), "no common channel axis")
    assert sources.npz(data_dir=path, layout="nchw").info.channels == 5  # an explicit layout takes any channels


def test_num_classes_spans_both_splits_or_is_given(tmp_path: Path) -> None:
    x = np.zeros((4, 6, 6), np.uint8)
    path = _npz(tmp_path, **_arrays(x, x[:2], y_test=np.array([4, 0])))
    assert sources.npz(data_dir=path).info.num_classes == 5
    assert sources.npz(data_dir=path, num_classes=10).info.num_classes == 10
    one_line_error(lambda: sources.npz(data_dir=path, num_classes=3),
                        "data.options.num_classes = 3, but the labels go up to 4", kind=ConfigError)


def test_npy_files_and_folders_holding_an_npz(tmp_path: Path) -> None:
    x = np.random.default_rng(3).integers(0, 256, (4, 6, 6), dtype=np.uint8)
    arrays = _arrays(x, x[:2])
    (tmp_path / "npy").mkdir()
    for key, array in arrays.items():
        np.save(tmp_path / "npy" / f"{key}.npy", array)
    assert torch.equal(sources.npz(data_dir=str(tmp_path / "npy")).train.images[:, 0], torch.from_numpy(x))
    (tmp_path / "one").mkdir()
    np.savez(tmp_path / "one" / "mine.npz", **arrays)
    assert len(sources.npz(data_dir=str(tmp_path / "one")).test) == 2
    np.savez_compressed(tmp_path / "one" / "other.npz", **_arrays(x[:3], x[:1]))
    one_line_error(lambda: sources.npz(data_dir=str(tmp_path / "one")), "mine.npz, other.npz",
                        "set data.options.file")
    assert len(sources.npz(data_dir=str(tmp_path / "one"), file="other.npz").train) == 3


@pytest.mark.parametrize(
    ("arrays", "fragments"),
    [
        (_arrays(np.full((4, 6, 6), 1.5), np.zeros((2, 6, 6))), ("x_train in", "values in [1.5, 1.5]", "[0, 1]")),
        (_arrays(np.zeros((4, 6, 6)), np.full((2, 6, 6), np.nan)), ("x_test in", "values in [nan, nan]")),
        (_arrays(np.zeros((4, 6, 6), np.int64), np.zeros((2, 6, 6), np.int64)), ("x_train in", "holds int64",
                                                                                  "uint8")),
        (_arrays(np.zeros((4, 6), np.uint8), np.zeros((2, 6), np.uint8)), ("x_train in", "shape (4, 6)",)),
        (_arrays(np.zeros((0, 6, 6), np.uint8), np.zeros((2, 6, 6), np.uint8), y_train=np.zeros(0, int)),
         ("x_train in", "holds no images")),
        (_arrays(np.zeros((4, 6, 6), np.uint8), np.zeros((2, 6, 6), np.uint8), y_train=np.array([0, 1, 0])),
         ("y_train in", "has 3 labels for the 4 images of x_train")),
        (_arrays(np.zeros((4, 6, 6), np.uint8), np.zeros((2, 6, 6), np.uint8), y_test=np.array([0.0, 1.0])),
         ("y_test in", "holds float64", "integers")),
        (_arrays(np.zeros((4, 6, 6), np.uint8), np.zeros((2, 6, 6), np.uint8), y_train=np.array([0, -1, 2, 1])),
         ("y_train in", "negative labels (down to -1)")),
        (_arrays(np.zeros((4, 6, 6), np.uint8), np.zeros((2, 6, 6), np.uint8), y_train=np.zeros((4, 2), int)),
         ("y_train in", "shape (4, 2)")),
        (_arrays(np.zeros((4, 6, 6), np.uint8), np.zeros((2, 7, 6), np.uint8)),
         ("x_train in", "images are 1x6x6 but x_test in", "images 1x7x6")),
        ({"x_train": np.zeros((4, 6, 6), np.uint8), "y_train": np.zeros(4, int)},
         ("has no x_test, y_test (it holds x_train, y_train)",)),
    ],
    ids=["above-one", "nan", "int-images", "2d-images", "empty", "length", "float-labels", "negative-labels",
         "2d-labels", "shapes-differ", "missing-keys"],
)
def test_bad_arrays_are_one_line_data_errors(tmp_path: Path, arrays: dict[str, Any],
                                             fragments: tuple[str, ...]) -> None:
    path = _npz(tmp_path, **arrays)
    one_line_error(lambda: sources.npz(data_dir=path), *fragments)


@pytest.mark.parametrize(
    ("setup", "options", "fragments", "kind"),
    [
        ("none", {}, ("npz reads your own files", "--data-dir"), DataError),
        ("empty", {}, ("no .npz file and no x_train.npy, y_train.npy, x_test.npy, y_test.npy in",), DataError),
        ("some-npy", {}, ("holds x_train.npy, y_train.npy but not x_test.npy, y_test.npy",), DataError),
        ("npz-and-npy", {}, ("holds data.npz, x_train.npy, y_train.npy", "data.options.file"), DataError),
        ("npz", {"file": "data.npz"}, ("data.options.file = 'data.npz' names a file in a folder",), DataError),
        ("empty", {"file": "gone.npz"}, ("data.options.file: there is no file",), DataError),
        ("npy-as-npz", {}, ("is one .npy array, not an .npz archive",), DataError),
        ("not-numpy", {}, ("cannot read", "data.npz"), DataError),
        ("npz", {"layout": "NHWC"}, ("data.options.layout must be 'nchw' or 'nhwc', got 'NHWC'",), ConfigError),
        ("npz", {"num_classes": 1}, ("data.options.num_classes",), ConfigError),
    ],
)
def test_npz_sources_and_options_are_checked(tmp_path: Path, setup: str, options: dict[str, Any],
                                             fragments: tuple[str, ...], kind: type[Exception]) -> None:
    arrays = _arrays(np.zeros((4, 6, 6), np.uint8), np.zeros((2, 6, 6), np.uint8))
    data_dir: Path | None = tmp_path
    if setup == "none":
        data_dir = None
    elif setup in ("some-npy", "npz-and-npy"):
        np.save(tmp_path / "x_train.npy", arrays["x_train"])
        np.save(tmp_path / "y_train.npy", arrays["y_train"])
    if setup in ("npz", "npz-and-npy"):
        np.savez(tmp_path / "data.npz", **arrays)
    if setup == "npz":
        data_dir = tmp_path / "data.npz"
    if setup == "npy-as-npz":
        with open(tmp_path / "data.npz", "wb") as handle:
            np.save(handle, arrays["x_train"])
    if setup == "not-numpy":
        (tmp_path / "data.npz").write_text("hello")
    one_line_error(lambda: sources.npz(data_dir=None if data_dir is None else str(data_dir), **options),
                        *fragments, kind=kind)


@pytest.mark.parametrize("where", ["npz", "npy", "raw-pickle"])
def test_pickles_are_refused_and_never_run(tmp_path: Path, where: str) -> None:
    marker = tmp_path / "pwned"
    evil = np.array([MarkerPayload(marker)], dtype=object)
    arrays = _arrays(np.zeros((4, 6, 6), np.uint8), np.zeros((2, 6, 6), np.uint8))
    if where == "npz":
        np.savez(tmp_path / "data.npz", **{**arrays, "y_test": evil})
        fragments: tuple[str, ...] = ("y_test in", "allow_pickle=False", "lipcli never unpickles")
    elif where == "npy":
        for key, array in {**arrays, "x_train": evil}.items():
            np.save(tmp_path / f"{key}.npy", array)
        fragments = (str(tmp_path / "x_train.npy"), "lipcli never unpickles")
    else:
        (tmp_path / "data.npz").write_bytes(pickle.dumps(arrays | {"x_train": MarkerPayload(marker)}))
        fragments = ("data.npz", "lipcli never unpickles")
    one_line_error(lambda: sources.npz(data_dir=str(tmp_path)), *fragments)
    assert not marker.exists()


def test_the_pickle_payload_is_real(tmp_path: Path) -> None:
    """Guards the test above: numpy loading the same archive with allow_pickle=True does run its code."""
    marker = tmp_path / "pwned"
    np.savez(tmp_path / "data.npz", y_test=np.array([MarkerPayload(marker)], dtype=object))
    with np.load(tmp_path / "data.npz", allow_pickle=True) as archive:
        archive["y_test"]
    assert marker.exists()


# -- through the CLI --------------------------------------------------------------------------------------

def _train_and_curve(run: Callable[..., Any], tmp_path: Path, data_dir: Path, *flags: str) -> dict[str, Any]:
    """Train a small CNN for one epoch on ``data_dir``, measure its curve on 8 test images; the summary."""
    trained = run("train", "--data-dir", data_dir, "--arch", "small-cnn", "--epochs", 1, "--max-steps", 2,
                  "--batch-size", 8, "--set", "model.options={width=8}", "--set", "data.validation=0",
                  "--device", "cpu", "--quiet", "--out", tmp_path / "run", *flags)
    assert trained.exit_code == 0, trained.output
    curve = run("curve", tmp_path / "run" / "last.pt", "--limit", 8, "--out", tmp_path / "curve", *FAST_CURVE)
    assert curve.exit_code == 0, curve.output
    return json.loads((tmp_path / "curve" / "summary.json").read_text())


def test_train_and_curve_on_an_image_folder(run: Callable[..., Any], tmp_path: Path) -> None:
    write_images(tmp_path / "images", {"train": {"cat": 8, "dog": 8}, "test": {"cat": 4, "dog": 4}})
    summary = _train_and_curve(run, tmp_path, tmp_path / "images", "--dataset", "image-folder",
                               "--set", "data.options.resize=16")
    assert summary["settings"]["dataset"] == "image-folder" and summary["settings"]["images"] == 8, summary


def test_train_and_curve_on_an_npz_file(run: Callable[..., Any], tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    x = rng.integers(0, 256, (24, 16, 16, 3), dtype=np.uint8)
    np.savez(tmp_path / "mine.npz", **_arrays(x[:16], x[16:]))
    with pytest.warns(UserWarning, match="images read as NHWC"):
        summary = _train_and_curve(run, tmp_path, tmp_path / "mine.npz", "--dataset", "npz")
    assert summary["settings"]["dataset"] == "npz" and summary["settings"]["images"] == 8, summary


def test_a_missing_data_dir_through_the_cli_is_one_line(run: Callable[..., Any], tmp_path: Path) -> None:
    result = run("train", "--dataset", "image-folder", "--device", "cpu", "--quiet", "--out", tmp_path / "run")
    assert result.exit_code == 1, result.output
    assert "image-folder reads your own files: pass --data-dir" in result.output.strip().splitlines()[0]
    assert "Traceback" not in result.output and not (tmp_path / "run" / "last.pt").exists()

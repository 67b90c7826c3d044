"""The data set readers and the built-in data set plugin, on files these tests write in each format's own layout.

CIFAR and MNIST cannot be downloaded here, so their code paths are exercised on small files written exactly
as the distributions lay them out; the real Fashion-MNIST files are used when Debian's package is installed.
"""

from __future__ import annotations

import gzip
import importlib.util
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from lipcli.data import DataSplits
from lipcli.errors import ConfigError, DataError
from lipcli.plugin_host import PluginHost

PLUGINS_DIR = Path(__file__).resolve().parents[1] / "plugins"
if importlib.util.find_spec("lipcli_builtins") is None:
    # An editable install made before plugins/lipcli_builtins existed does not map it; `pip install -e .` does.
    sys.path.insert(0, str(PLUGINS_DIR))

from data_files import (  # noqa: E402
    write_cifar10,
    write_cifar100,
    write_idx,
    write_mnist_folder,
    write_pickle,
)
from lipcli_builtins.datasets import sources  # noqa: E402
from lipcli_builtins.datasets.readers import (  # noqa: E402
    IDX_FILES,
    find_idx_files,
    read_cifar,
    read_idx,
)

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
DATASET_NAMES = ("cifar10", "cifar100", "mnist", "fashion-mnist", "image-folder", "npz", "digits", "synthetic")


class _Payload:
    """An object whose unpickling calls ``func(*args)``: the shape of a malicious pickle."""

    def __init__(self, func: object, args: tuple) -> None:
        self.func, self.args = func, args

    def __reduce__(self) -> tuple:
        return self.func, self.args


# -- IDX --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gzip"])
@pytest.mark.parametrize(
    "array",
    [
        np.arange(2 * 5 * 7, dtype=np.uint8).reshape(2, 5, 7),
        np.array([-1.5, 0.0, 3.25, 1e6, -2e-3, 7.0], dtype=np.float32).reshape(3, 2),
        np.array([-32768, -1, 0, 258, 32767], dtype=np.int16),
    ],
    ids=["uint8-3d", "float32-2d", "int16-1d"],
)
def test_idx_round_trip(tmp_path: Path, array: np.ndarray, gz: bool) -> None:
    path = write_idx(tmp_path / ("data.idx" + (".gz" if gz else "")), array, gz=gz)
    read = read_idx(path)
    assert read.dtype == array.dtype and read.dtype.isnative
    assert read.shape == array.shape
    np.testing.assert_array_equal(read, array)
    assert read.flags.writeable  # torch.from_numpy warns on read-only arrays


def test_idx_compression_is_detected_by_content_not_name(tmp_path: Path) -> None:
    array = np.arange(12, dtype=np.uint8).reshape(3, 4)
    np.testing.assert_array_equal(read_idx(write_idx(tmp_path / "named-plain", array, gz=True)), array)
    np.testing.assert_array_equal(read_idx(write_idx(tmp_path / "named.gz", array, gz=False)), array)


@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gzip"])
def test_truncated_idx_file_is_a_data_error_naming_it(tmp_path: Path, gz: bool) -> None:
    full = write_idx(tmp_path / "full", np.zeros((10, 28, 28), dtype=np.uint8))
    cut = tmp_path / ("cut-images-idx3-ubyte" + (".gz" if gz else ""))
    payload = full.read_bytes()[:-100]
    cut.write_bytes(gzip.compress(payload) if gz else payload)
    with pytest.raises(DataError, match="truncated") as info:
        read_idx(cut)
    assert str(cut) in str(info.value)
    assert "\n" not in str(info.value)


def test_truncated_gzip_stream_is_a_data_error(tmp_path: Path) -> None:
    data = gzip.compress(write_idx(tmp_path / "a", np.ones((50, 9), np.uint8)).read_bytes())
    cut = tmp_path / "cut.gz"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="cut.gz"):
        read_idx(cut)


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b"\x01\x00\x08\x01\x00\x00\x00\x01\x07", "first two bytes"),
        (b"\x00\x00\x07\x01\x00\x00\x00\x01\x07", "type code 0x07"),
        (b"\x00\x00\x08\x03\x00\x00", "header declares 3 dimensions"),
        (b"\x00\x00\x08\x01\x00\x00\x00\x01\x07\x08", "longer than its header says"),
    ],
    ids=["magic", "dtype", "short-header", "trailing-bytes"],
)
def test_malformed_idx_is_a_data_error(tmp_path: Path, payload: bytes, message: str) -> None:
    path = tmp_path / "bad-idx"
    path.write_bytes(payload)
    with pytest.raises(DataError, match=message):
        read_idx(path)


@pytest.mark.parametrize("subdir", [".", "raw", "MNIST/raw", "FashionMNIST/raw"])
def test_find_idx_files_in_torchvision_layouts(tmp_path: Path, subdir: str) -> None:
    write_mnist_folder(tmp_path / subdir, seed=0, gz=(subdir != "raw"))
    found = find_idx_files(tmp_path)
    assert set(found) == set(IDX_FILES)
    assert {path.parent for path in found.values()} == {tmp_path / subdir}


def test_find_idx_files_needs_all_four_in_one_folder(tmp_path: Path) -> None:
    write_mnist_folder(tmp_path, seed=0)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").rename(tmp_path / "elsewhere.gz")
    assert find_idx_files(tmp_path) == {}


def test_find_idx_files_prefers_the_uncompressed_copy(tmp_path: Path) -> None:
    write_mnist_folder(tmp_path, seed=0, gz=True)
    write_mnist_folder(tmp_path, seed=0, gz=False)
    assert all(path.suffix != ".gz" for path in find_idx_files(tmp_path).values())


# -- CIFAR ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("str_keys", [False, True], ids=["python2-bytes-keys", "python3-str-keys"])
def test_read_cifar10_layout_labels_and_names(tmp_path: Path, str_keys: bool) -> None:
    written = write_cifar10(tmp_path / "cifar-10-batches-py", str_keys=str_keys)
    arrays = read_cifar(tmp_path, "cifar10")

    assert arrays.train_images.shape == (15, 3, 32, 32) and arrays.train_images.dtype == np.uint8
    assert arrays.test_images.shape == (4, 3, 32, 32)
    assert arrays.class_names[:3] == ("airplane", "automobile", "bird") and len(arrays.class_names) == 10
    # Training batches are concatenated in order 1..5.
    expected_train_labels = sum((written[f"data_batch_{i}"][1] for i in range(1, 6)), [])
    assert arrays.train_labels.tolist() == expected_train_labels and arrays.train_labels.dtype == np.int64
    assert arrays.test_labels.tolist() == written["test_batch"][1]
    # CIFAR rows are three 1024-byte channel planes (R, G, B), each 32 rows of 32 pixels.
    test_rows = written["test_batch"][0]
    for n, c, h, w in [(0, 0, 0, 0), (1, 2, 31, 31), (3, 1, 5, 7), (2, 0, 31, 0)]:
        assert arrays.test_images[n, c, h, w] == test_rows[n, c * 1024 + h * 32 + w]
    batch3_rows = written["data_batch_3"][0]
    assert arrays.train_images[2 * 3 + 1, 2, 10, 20] == batch3_rows[1, 2 * 1024 + 10 * 32 + 20]


def test_read_cifar10_accepts_the_batches_folder_itself(tmp_path: Path) -> None:
    folder = tmp_path / "cifar-10-batches-py"
    write_cifar10(folder)
    np.testing.assert_array_equal(
        read_cifar(folder, "cifar10").test_images, read_cifar(tmp_path, "cifar10").test_images
    )


def test_read_cifar10_single_marked_pixel(tmp_path: Path) -> None:
    folder = tmp_path / "cifar-10-batches-py"
    write_cifar10(folder)
    data = np.zeros((2, 3072), dtype=np.uint8)
    data[1, 2 * 1024 + 4 * 32 + 9] = 200  # blue plane, row 4, column 9 of image 1
    write_pickle(folder / "test_batch", {b"batch_label": b"test", b"labels": [0, 1], b"data": data})
    images = read_cifar(folder, "cifar10").test_images
    assert images[1, 2, 4, 9] == 200
    assert int(images.sum()) == 200


def test_read_cifar100_fine_labels_and_names(tmp_path: Path) -> None:
    written = write_cifar100(tmp_path / "cifar-100-python")
    arrays = read_cifar(tmp_path, "cifar100")
    assert arrays.train_images.shape == (7, 3, 32, 32) and arrays.test_images.shape == (3, 3, 32, 32)
    assert arrays.train_labels.tolist() == written["train"][1]
    assert arrays.test_labels.tolist() == written["test"][1]
    assert arrays.class_names == tuple(f"fine{i}" for i in range(100))
    rows = written["train"][0]
    assert arrays.train_images[6, 1, 0, 31] == rows[6, 1024 + 31]


def test_cifar_labels_out_of_range_are_a_data_error(tmp_path: Path) -> None:
    folder = tmp_path / "cifar-10-batches-py"
    write_cifar10(folder)
    data = np.zeros((2, 3072), dtype=np.uint8)
    write_pickle(folder / "test_batch", {b"labels": [3, 10], b"data": data})
    with pytest.raises(DataError, match="test_batch.*labels outside 0..9"):
        read_cifar(folder, "cifar10")


def test_cifar_missing_batch_is_a_data_error(tmp_path: Path) -> None:
    folder = tmp_path / "cifar-10-batches-py"
    write_cifar10(folder)
    (folder / "data_batch_4").unlink()
    with pytest.raises(DataError, match="data_batch_4"):
        read_cifar(tmp_path, "cifar10")


@pytest.mark.parametrize("attack", ["os.system", "builtins.exec", "nested-in-data"])
def test_malicious_cifar_pickle_is_refused_without_running(tmp_path: Path, attack: str) -> None:
    folder = tmp_path / "cifar-10-batches-py"
    write_cifar10(folder)
    marker = tmp_path / "pwned"
    if attack == "os.system":
        payload: object = _Payload(os.system, (f"touch {marker}",))
    else:
        payload = _Payload(exec, (f"open({str(marker)!r}, 'w').write('x')",))
    batch = {b"labels": [0], b"data": payload} if attack == "nested-in-data" else payload
    write_pickle(folder / "test_batch", batch)

    with pytest.raises(DataError, match="test_batch.*refusing") as info:
        read_cifar(tmp_path, "cifar10")
    assert not marker.exists()
    assert "\n" not in str(info.value)
    # The same file through the data set factory: refused as well.
    with pytest.raises(DataError):
        sources.cifar10(data_dir=str(tmp_path), download=False)
    assert not marker.exists()


def test_malicious_payload_is_real(tmp_path: Path) -> None:
    """Guards the test above: an unrestricted pickle.load of such a file does run its code."""
    marker = tmp_path / "pwned"
    pickle.loads(pickle.dumps(_Payload(exec, (f"open({str(marker)!r}, 'w').write('x')",)), protocol=2))
    assert marker.exists()


def test_cifar_factories_build_uint8_splits(tmp_path: Path) -> None:
    write_cifar10(tmp_path / "c10" / "cifar-10-batches-py")
    write_cifar100(tmp_path / "c100" / "cifar-100-python")
    c10 = sources.cifar10(data_dir=str(tmp_path / "c10"), download=False)
    c100 = sources.cifar100(data_dir=str(tmp_path / "c100"), download=False)
    assert c10.info.input_shape == (3, 32, 32) and c10.info.num_classes == 10
    assert c10.info.class_names[-1] == "truck"
    assert c10.train.images.dtype == torch.uint8 and len(c10.train) == 15 and len(c10.test) == 4
    assert c100.info.num_classes == 100 and len(c100.train) == 7


# -- MNIST and Fashion-MNIST factories --------------------------------------------------------------------

@pytest.mark.parametrize(
    ("name", "subdir"),
    [("mnist", "."), ("mnist", "MNIST/raw"), ("fashion-mnist", "."), ("fashion-mnist", "FashionMNIST/raw")],
)
def test_idx_factories_read_a_data_dir(tmp_path: Path, name: str, subdir: str) -> None:
    arrays = write_mnist_folder(tmp_path / subdir, seed=1)
    factory = PluginHost().registry("dataset").get(name).factory
    splits = factory(data_dir=str(tmp_path), download=False)

    assert isinstance(splits, DataSplits)
    assert splits.info.name == name and splits.info.input_shape == (1, 28, 28) and splits.info.num_classes == 10
    assert splits.train.images.dtype == torch.uint8 and splits.train.images.shape == (12, 1, 28, 28)
    assert splits.test.images.shape == (5, 1, 28, 28)
    np.testing.assert_array_equal(splits.train.images[:, 0].numpy(), arrays["train-images-idx3-ubyte"])
    np.testing.assert_array_equal(splits.test.labels.numpy(), arrays["t10k-labels-idx1-ubyte"])
    assert splits.train.labels.dtype == torch.int64
    expected_names = sources.MNIST_CLASSES if name == "mnist" else sources.FASHION_MNIST_CLASSES
    assert splits.info.class_names == expected_names


def test_idx_factories_do_not_mix_torchvision_folders(tmp_path: Path) -> None:
    digits_arrays = write_mnist_folder(tmp_path / "MNIST" / "raw", seed=1)
    fashion_arrays = write_mnist_folder(tmp_path / "FashionMNIST" / "raw", seed=2)
    mnist = sources.mnist(data_dir=str(tmp_path), download=False)
    fashion = sources.fashion_mnist(data_dir=str(tmp_path), download=False)
    np.testing.assert_array_equal(mnist.test.images[:, 0].numpy(), digits_arrays["t10k-images-idx3-ubyte"])
    np.testing.assert_array_equal(fashion.test.images[:, 0].numpy(), fashion_arrays["t10k-images-idx3-ubyte"])


def test_idx_label_count_mismatch_is_a_data_error(tmp_path: Path) -> None:
    write_mnist_folder(tmp_path, seed=0)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.zeros(4, np.uint8), gz=True)
    with pytest.raises(DataError, match="t10k-labels"):
        sources.mnist(data_dir=str(tmp_path), download=False)


@pytest.mark.skipif(not FASHION_MNIST_DIR.is_dir(), reason="Debian's dataset-fashion-mnist is not installed")
def test_real_fashion_mnist() -> None:
    splits = PluginHost().registry("dataset").get("fashion-mnist").factory(
        data_dir=str(FASHION_MNIST_DIR), download=False
    )
    assert splits.train.images.shape == (60000, 1, 28, 28) and splits.test.images.shape == (10000, 1, 28, 28)
    assert splits.train.images.dtype == torch.uint8
    assert splits.info.num_classes == 10 and splits.info.class_names[0] == "T-shirt/top"
    assert torch.bincount(splits.train.labels).tolist() == [6000] * 10
    assert torch.bincount(splits.test.labels).tolist() == [1000] * 10
    assert int(splits.train.images.max()) == 255


@pytest.mark.parametrize("name", ["cifar10", "cifar100", "mnist", "fashion-mnist"])
def test_missing_data_dir_is_a_data_error_with_the_path(tmp_path: Path, name: str) -> None:
    missing = tmp_path / "no-such-folder"
    with pytest.raises(DataError, match="does not exist") as info:
        PluginHost().registry("dataset").get(name).factory(data_dir=str(missing), download=True)
    assert str(missing) in str(info.value) and "\n" not in str(info.value)


def test_data_dir_without_the_files_says_what_and_how(tmp_path: Path) -> None:
    with pytest.raises(DataError) as info:
        sources.fashion_mnist(data_dir=str(tmp_path), download=False)
    message = str(info.value)
    assert str(tmp_path) in message and "train-images-idx3-ubyte" in message
    assert "--data-dir" in message and "dataset-fashion-mnist" in message and "\n" not in message


def test_cifar10_cache_without_files_and_no_download(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(sources.ENV_DATA_DIR, str(tmp_path))
    with pytest.raises(DataError) as info:
        sources.cifar10(data_dir=None, download=False)
    message = str(info.value)
    assert str(tmp_path) in message and "data_batch_1" in message and "--data-dir" in message
    assert "\n" not in message


def test_cache_folder_is_read_without_downloading(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(sources.ENV_DATA_DIR, str(tmp_path))
    write_mnist_folder(tmp_path / "mnist" / "MNIST" / "raw", seed=3)

    def no_download(*args: object) -> None:
        raise AssertionError("must not download when the files are cached")

    monkeypatch.setattr(sources, "_download", no_download)
    assert len(sources.mnist(data_dir=None, download=True).train) == 12


def test_download_only_fetches_then_lipcli_reads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torchvision.datasets

    calls = []

    class FakeFashionMNIST:
        """Stands in for torchvision's class: writes the files where torchvision would."""

        def __init__(self, root: str, train: bool, download: bool) -> None:
            calls.append((root, download))
            write_mnist_folder(Path(root) / "FashionMNIST" / "raw", seed=4)

    monkeypatch.setattr(torchvision.datasets, "FashionMNIST", FakeFashionMNIST)
    monkeypatch.setenv(sources.ENV_DATA_DIR, str(tmp_path))
    splits = sources.fashion_mnist(data_dir=None, download=True)
    assert calls == [(str(tmp_path / "fashion-mnist"), True)]
    assert splits.train.images.shape == (12, 1, 28, 28)


def test_failed_download_is_a_one_line_data_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torchvision.datasets

    class OfflineMNIST:
        def __init__(self, **kwargs: object) -> None:
            raise RuntimeError("Error downloading train-images-idx3-ubyte.gz:\nTried a mirror, got: no network")

    monkeypatch.setattr(torchvision.datasets, "MNIST", OfflineMNIST)
    monkeypatch.setenv(sources.ENV_DATA_DIR, str(tmp_path))
    with pytest.raises(DataError) as info:
        sources.mnist(data_dir=None, download=True)
    message = str(info.value)
    assert "\n" not in message and "no network" in message and str(tmp_path / "mnist") in message
    assert "--data-dir" in message


# -- digits -----------------------------------------------------------------------------------------------

def test_digits_split_is_deterministic_stratified_and_complete() -> None:
    first, second = sources.digits(data_dir=None, download=False), sources.digits(data_dir=None, download=False)
    torch.testing.assert_close(first.test.images, second.test.images)
    assert torch.equal(first.train.labels, second.train.labels)

    assert len(first.train) + len(first.test) == 1797
    assert first.info.input_shape == (1, 8, 8) and first.info.num_classes == 10
    for split in (first.train, first.test):
        assert split.images.dtype == torch.float32
        assert float(split.images.min()) == 0.0 and float(split.images.max()) == 1.0
    train_counts = torch.bincount(first.train.labels, minlength=10)
    test_counts = torch.bincount(first.test.labels, minlength=10)
    assert bool((train_counts > 0).all()) and bool((test_counts > 0).all())
    fractions = test_counts.double() / (train_counts + test_counts).double()
    assert float((fractions - 0.25).abs().max()) < 0.01  # per class, up to rounding of ~180 images


def test_digits_test_fraction_option_and_independence_from_torch_seed() -> None:
    torch.manual_seed(123)
    np.random.seed(123)
    small = sources.digits(data_dir=None, download=False, test_fraction=0.1)
    torch.manual_seed(7)
    np.random.seed(7)
    again = sources.digits(data_dir=None, download=False, test_fraction=0.1)
    assert 170 <= len(small.test) <= 190
    assert torch.equal(small.test.images, again.test.images)


@pytest.mark.parametrize("fraction", [0, 1, 1.5, -0.1, "0.2", True, float("nan")])
def test_digits_bad_test_fraction_is_a_config_error(fraction: object) -> None:
    with pytest.raises(ConfigError, match="data.options.test_fraction"):
        sources.digits(data_dir=None, download=False, test_fraction=fraction)


# -- synthetic --------------------------------------------------------------------------------------------

def test_synthetic_honours_options_and_range() -> None:
    splits = sources.synthetic(
        data_dir=None, download=False, train_size=50, test_size=20, channels=1, size=12, num_classes=5, seed=3
    )
    assert splits.train.images.shape == (50, 1, 12, 12) and splits.test.images.shape == (20, 1, 12, 12)
    assert splits.info.input_shape == (1, 12, 12) and splits.info.num_classes == 5
    assert len(splits.info.class_names) == 5
    assert splits.train.images.dtype == torch.float32
    assert float(splits.train.images.min()) >= 0.0 and float(splits.train.images.max()) <= 1.0
    assert torch.bincount(splits.train.labels).tolist() == [10] * 5


def test_synthetic_defaults() -> None:
    splits = sources.synthetic(data_dir=None, download=False)
    assert splits.train.images.shape == (1024, 3, 32, 32) and splits.test.images.shape == (256, 3, 32, 32)
    assert splits.info.num_classes == 10


def test_synthetic_is_deterministic_per_seed() -> None:
    a = sources.synthetic(data_dir=None, download=False, train_size=40, test_size=10, size=8, seed=5)
    b = sources.synthetic(data_dir=None, download=False, train_size=40, test_size=10, size=8, seed=5)
    c = sources.synthetic(data_dir=None, download=False, train_size=40, test_size=10, size=8, seed=6)
    assert torch.equal(a.train.images, b.train.images) and torch.equal(a.test.labels, b.test.labels)
    assert not torch.equal(a.train.images, c.train.images)


def test_synthetic_is_learnable() -> None:
    """A nearest-class-mean classifier fitted on train must do far better than chance on test."""
    splits = sources.synthetic(data_dir=None, download=False, train_size=200, test_size=100, size=8, seed=1)
    train = splits.train.images.flatten(1)
    means = torch.stack([train[splits.train.labels == k].mean(0) for k in range(10)])
    predicted = torch.cdist(splits.test.images.flatten(1), means).argmin(1)
    assert float((predicted == splits.test.labels).double().mean()) > 0.9


@pytest.mark.parametrize(
    ("key", "value"),
    [("train_size", 0), ("test_size", -1), ("channels", 1.5), ("size", "32"), ("num_classes", 1),
     ("seed", -3), ("noise", -0.1), ("train_size", True), ("noise", float("inf"))],
)
def test_synthetic_bad_option_is_a_config_error_naming_it(key: str, value: object) -> None:
    with pytest.raises(ConfigError, match=f"data.options.{key}"):
        sources.synthetic(data_dir=None, download=False, **{key: value})


@pytest.mark.parametrize("name", DATASET_NAMES)
def test_unknown_option_is_a_type_error(name: str) -> None:
    factory = PluginHost().registry("dataset").get(name).factory
    with pytest.raises(TypeError):
        factory(data_dir=None, download=False, no_such_option=1)


# -- the plugin -------------------------------------------------------------------------------------------

def test_all_datasets_are_registered_by_the_plugin() -> None:
    registry = PluginHost().registry("dataset")
    for name in DATASET_NAMES:
        component = registry.get(name)
        assert component.plugin == "lipcli-datasets"
        assert component.description


@pytest.mark.parametrize("name", ["digits", "synthetic"])
def test_bundled_datasets_through_the_registry(name: str) -> None:
    splits = PluginHost().registry("dataset").get(name).factory(data_dir=None, download=False)
    assert isinstance(splits, DataSplits)
    assert tuple(splits.train.images.shape[1:]) == splits.info.input_shape
    assert int(splits.train.labels.max()) < splits.info.num_classes


def test_plugin_module_is_light_at_import() -> None:
    code = "import sys, lipcli_builtins.datasets; assert 'torch' not in sys.modules, 'torch imported'"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(PLUGINS_DIR), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr

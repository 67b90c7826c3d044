"""Image folders too large for memory are read from their files a batch at a time (``ImageFiles``, DataLoader
workers): the same pixels, batches, digests, trained weights and distances as the same folder held in memory,
nothing decoded until a batch is needed, and a damaged file still a one-line error naming it."""

from __future__ import annotations

import json
import os
from functools import partial
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
import torch
from test_own_data import FAST_CURVE, write_images

from lipcli.checkpoint import load_checkpoint
from lipcli.data import batches as batches_module
from lipcli.data.batches import elsewhere, epoch_order, iterate_batches
from lipcli.data.image_files import ImageFiles
from lipcli.data.selection import Selection
from lipcli.data.types import ImageSet
from lipcli.data.validation import hold_out
from lipcli.errors import DataError
from lipcli_builtins.datasets import sources

LAYOUT = {"train": {"ant": 7, "bee": 6, "cat": 7}, "test": {"ant": 4, "bee": 5, "cat": 3}}
CPU = torch.device("cpu")


def _value(path: str, *, table: dict[str, int]) -> np.ndarray:
    if path not in table:
        raise DataError(f"cannot read image {path}: missing")
    return np.full((1, 2, 2), table[path], dtype=np.uint8)


READ: list[str] = []
"""Files :func:`_counted` read, in this process."""


def _counted(path: str) -> np.ndarray:
    READ.append(path)
    return np.full((1, 2, 2), int(path[1:]), dtype=np.uint8)


def _files(count: int, workers: int = 0) -> ImageFiles:
    table = {f"f{i}": i for i in range(count)}
    return ImageFiles(list(table), (1, 2, 2), partial(_value, table=table), workers)


def test_indexing_chooses_files_without_reading_them() -> None:
    files = _files(6)
    assert files.shape == (6, 1, 2, 2) and files.dtype == torch.uint8 and len(files) == 6
    assert files[1:5:2].files == ("f1", "f3")
    assert files[torch.tensor([4, 0])].files == ("f4", "f0")
    assert files[torch.tensor([True, False, False, True, False, False])].files == ("f0", "f3")
    assert files[torch.tensor([5, 2])].read()[:, 0, 0, 0].tolist() == [5, 2]
    with pytest.raises(ValueError, match="workers"):
        ImageFiles([], (1, 1, 1), partial(_value, table={}), workers=-1)


@pytest.mark.parametrize("workers", [0, 2])
def test_a_streamed_folder_gives_the_pixels_batches_and_digest_of_the_folder_in_memory(
    tmp_path: Path, workers: int,
) -> None:
    write_images(tmp_path, LAYOUT, size=(9, 7))
    held = sources.image_folder(data_dir=str(tmp_path))
    streamed = sources.image_folder(data_dir=str(tmp_path), stream=True, workers=workers)
    assert isinstance(streamed.train.images, ImageFiles) and isinstance(held.train.images, torch.Tensor)
    assert streamed.info == held.info and streamed.train.images.shape == held.train.images.shape
    for split in ("train", "test"):
        assert torch.equal(getattr(streamed, split).labels, getattr(held, split).labels)
        assert getattr(streamed, split).sha256() == getattr(held, split).sha256()
    order = epoch_order(len(held.train), seed=3, epoch=1, batch_size=6)
    for (a, y), (b, z) in zip(iterate_batches(held.train, 6, CPU, order, start=1),
                              iterate_batches(streamed.train, 6, CPU, order, start=1), strict=True):
        assert torch.equal(a, b) and torch.equal(y, z) and b.dtype == torch.float32
    chosen = Selection(offset=3, limit=5)
    assert chosen.apply(streamed.test).sha256() == chosen.apply(held.test).sha256()
    train, kept = hold_out(streamed.train, 4, seed=0), hold_out(held.train, 4, seed=0)
    for part, same in zip(train, kept):
        assert isinstance(part.images, ImageFiles)
        assert torch.equal(part.read(slice(None)), same.images)


def test_a_folder_larger_than_the_memory_limit_is_streamed_and_nothing_is_decoded_first(tmp_path: Path) -> None:
    write_images(tmp_path, LAYOUT)
    damaged = tmp_path / "test" / "bee" / "4.png"
    damaged.write_bytes(damaged.read_bytes()[:200])  # the header reads; the pixels do not
    with pytest.warns(UserWarning, match=r"the 32 images .* take 9.83e-05 GB as uint8 3x32x32, more than "
                                         r"data.options.max_memory_gb = 1e-05: they are read from their files"):
        splits = sources.image_folder(data_dir=str(tmp_path), max_memory_gb=1e-5, workers=0)
    assert isinstance(splits.test.images, ImageFiles)
    first = Selection(limit=8).apply(splits.test)  # images 0-7; the damaged one is the last of its class, 8
    assert first.read(slice(None)).shape == (8, 3, 32, 32)
    with pytest.raises(DataError) as error:
        list(iterate_batches(splits.test, 4, CPU))
    assert str(error.value) .startswith(f"cannot read image {damaged}") and "\n" not in str(error.value)


def test_only_the_batches_a_process_uses_are_read(monkeypatch: pytest.MonkeyPatch) -> None:
    """Under torchrun each process reads its own batches; a batch with nothing to attack is not read at all."""
    data = ImageSet(ImageFiles([f"f{i}" for i in range(10)], (1, 2, 2), _counted), torch.zeros(10))
    attacked = torch.tensor([True, False, False, False, False, True, False, False, False, True])
    READ.clear()
    batches = list(iterate_batches(data, 2, CPU, skip=elsewhere(2, attacked)))  # one process: batches 0, 2, 4
    assert READ == ["f0", "f1", "f4", "f5", "f8", "f9"]
    assert [images is None for images, _ in batches] == [False, True, False, True, False]
    assert [len(labels) for _, labels in batches] == [2] * 5
    assert (batches[2][0].flatten(1)[:, 0] * 255).round().tolist() == [4, 5]
    READ.clear()
    monkeypatch.setattr(batches_module, "owned", lambda number: number % 2 == 1)  # the second of two processes
    list(iterate_batches(data, 2, CPU, skip=elsewhere(2, attacked)))
    assert READ == []  # its batches 1 and 3 hold nothing to attack
    list(iterate_batches(data, 2, CPU, skip=elsewhere(2)))
    assert READ == ["f2", "f3", "f6", "f7"]


MAIN = os.getpid()


def _elsewhere(path: str) -> np.ndarray:
    if os.getpid() == MAIN:
        raise DataError(f"{path} read in the main process")
    return np.zeros((1, 2, 2), dtype=np.uint8)


def test_workers_read_the_batches_in_other_processes() -> None:
    files = ImageFiles([f"f{i}" for i in range(6)], (1, 2, 2), _elsewhere, workers=2)
    assert [len(images) for images in files.stream(torch.arange(6).split(2))] == [2, 2, 2]
    with pytest.raises(DataError, match="f0 read in the main process"):
        list(ImageFiles(files.files, (1, 2, 2), _elsewhere, workers=0).stream(torch.arange(6).split(2)))


def test_a_damaged_file_read_by_a_worker_is_a_one_line_error_naming_it() -> None:
    files = _files(9, workers=2)
    table = dict(files.decode.keywords["table"])
    del table["f7"]
    broken = ImageFiles(files.files, (1, 2, 2), partial(_value, table=table), workers=2)
    with pytest.raises(DataError) as error:
        list(broken.stream(torch.arange(9).split(3)))
    assert str(error.value) == "cannot read image f7: missing"


def _train(run: Callable[..., Any], folder: Path, data: Path, *options: str) -> Path:
    result = run("train", "--dataset", "image-folder", "--data-dir", data, "--arch", "small-cnn", "--epochs", "1",
                 "--batch-size", "8", "--set", "model.options={width=4}", "--set", "data.validation=4",
                 *(item for option in options for item in ("--set", option)),
                 "--device", "cpu", "--quiet", "--out", folder)
    assert result.exit_code == 0, result.output
    return folder / "last.pt"


def test_training_and_a_curve_on_a_streamed_folder_equal_those_in_memory(
    run: Callable[..., Any], tmp_path: Path,
) -> None:
    write_images(tmp_path / "data", LAYOUT, size=(8, 8))
    held = _train(run, tmp_path / "held", tmp_path / "data")
    streamed = _train(run, tmp_path / "streamed", tmp_path / "data", "data.options.stream=true",
                      "data.options.workers=1")
    weights, same = load_checkpoint(held)["model"], load_checkpoint(streamed)["model"]
    assert weights.keys() == same.keys() and all(torch.equal(weights[k], same[k]) for k in weights)
    for checkpoint in (held, streamed):
        done = run("curve", checkpoint, *FAST_CURVE, "--out", checkpoint.parent / "curve")
        assert done.exit_code == 0, done.output
    assert (tmp_path / "held" / "curve" / "distances.csv").read_text() == \
        (tmp_path / "streamed" / "curve" / "distances.csv").read_text()
    settings = [json.loads((tmp_path / f / "curve" / "summary.json").read_text())["settings"]
                for f in ("held", "streamed")]
    assert settings[0]["images_sha256"] == settings[1]["images_sha256"]


def test_data_lipschitz_refuses_a_streamed_folder(run: Callable[..., Any], tmp_path: Path) -> None:
    write_images(tmp_path, LAYOUT, size=(8, 8))
    common = ["data-lipschitz", "--dataset", "image-folder", "--data-dir", tmp_path, "--quiet"]
    refused = run(*common, "--data-option", "stream=true", "--out", tmp_path / "out")
    assert refused.exit_code == 1 and "needs them in memory" in refused.output, refused.output
    held = run(*common, "--data-option", "stream=false", "--data-option", "grayscale=true", "--out", tmp_path / "b",
               "--json")
    assert held.exit_code == 0, held.output
    report = json.loads(held.output)
    grey = sources.image_folder(data_dir=str(tmp_path), grayscale=True)
    colour = sources.image_folder(data_dir=str(tmp_path))
    assert report["settings"]["images_sha256"] == grey.train.sha256() != colour.train.sha256()
    assert report["data_options"] == {"stream": False, "grayscale": True}


def test_torchrun_evaluates_chosen_images_of_a_streamed_folder_like_one_process(
    run: Callable[..., Any], tmp_path: Path,
) -> None:
    """Two processes, each reading its own batches through DataLoader workers, write the files one process
    writes, images named by their test index."""
    from test_distributed import curve_in_one_and_two_processes

    write_images(tmp_path / "data", LAYOUT, size=(8, 8))
    checkpoint = _train(run, tmp_path / "run", tmp_path / "data", "data.options.stream=true",
                        "data.options.workers=1")
    flags = [checkpoint, "--offset", 2, "--limit", 9, "--batch-size", 2, "-a", "min-norm", "-O", "min-norm.steps=5",
             "--masking-check", "0", "--device", "cpu", "-q"]
    written = curve_in_one_and_two_processes(run, flags, tmp_path)
    assert [line.split(",")[0] for line in written.splitlines()[1:]] == [str(i) for i in range(2, 11)]


def test_how_images_are_read_is_not_part_of_a_results_identity(run: Callable[..., Any], tmp_path: Path) -> None:
    """``stream``, ``workers`` and ``max_memory_gb`` change how the images are read, not which: results of a
    model lipcli did not train, measured either way, are one result; ``resize`` is still part of it."""
    write_images(tmp_path / "data", LAYOUT, size=(8, 8))
    (tmp_path / "net.py").write_text(
        "from torch import nn\n\n\ndef build(num_classes):\n"
        "    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, num_classes))\n")
    common = ["curve", "--model", f"{tmp_path / 'net.py'}:build", "--dataset", "image-folder", "--data-dir",
              tmp_path / "data", *FAST_CURVE, "--out", tmp_path / "curve"]
    first = run(*common, "--data-option", "workers=0")
    assert first.exit_code == 0, first.output
    before = (tmp_path / "curve" / "distances.csv").read_text()
    again = run(*common, "--data-option", "stream=true", "--data-option", "workers=1")
    assert again.exit_code == 0, again.output
    assert (tmp_path / "curve" / "distances.csv").read_text() == before
    assert json.loads((tmp_path / "curve" / "summary.json").read_text())["settings"]["model"]["data_options"] == {}
    other = run(*common, "--data-option", "resize=8")
    assert other.exit_code == 1 and "model.data_options" in other.output, other.output


def test_no_batch_is_yielded_past_the_end() -> None:
    for images in (torch.zeros(4, 1, 2, 2, dtype=torch.uint8), _files(4)):
        data = ImageSet(images, torch.zeros(4))
        assert list(iterate_batches(data, 2, CPU, start=2)) == []
        assert len(list(iterate_batches(data, 3, CPU))) == 2

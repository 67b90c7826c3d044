"""Choosing the test images an evaluation measures (``--limit``, ``--offset``, ``--indices FILE``): each image
keeps its index in the test split in every file written, results of two selections never pass for one
another, and a curve of more images serves ``lipcli robust`` on a few of them."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
import torch

from lipcli.data.selection import Selection, read_indices
from lipcli.data.types import ImageSet
from lipcli.engine import Engine
from lipcli.errors import ConfigError, DataError
from lipcli.evaluation.robust import read_curve
from lipcli.experiments.grid import EvaluationPlan
from lipcli.experiments.grid_runner import _describes
from lipcli.models.targets import load_target

FAST = ["--attack", "deepfool", "--masking-check", "0", "--device", "cpu", "--quiet"]


def _split(size: int = 10) -> ImageSet:
    """Images whose first pixel is their index (so a selection can be read back from the pixels)."""
    images = torch.zeros(size, 1, 2, 2, dtype=torch.uint8)
    images[:, 0, 0, 0] = torch.arange(size, dtype=torch.uint8)
    return ImageSet(images, torch.arange(size) % 3)


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.mark.parametrize(("selection", "expected"), [
    (Selection(), list(range(10))),
    (Selection(limit=4), [0, 1, 2, 3]),
    (Selection(offset=7), [7, 8, 9]),
    (Selection(limit=2, offset=3), [3, 4]),
    (Selection(limit=20, offset=8), [8, 9]),
    (Selection(indices=(9, 2, 5)), [9, 2, 5]),
    (Selection(limit=2, indices=(9, 2, 5)), [9, 2]),
])
def test_a_selection_takes_the_images_at_their_split_positions(selection: Selection, expected: list[int]) -> None:
    chosen = selection.apply(_split())
    assert chosen.index.tolist() == expected
    assert chosen.images[:, 0, 0, 0].tolist() == expected  # the pixels are those of the split's images
    assert chosen.labels.tolist() == [i % 3 for i in expected]


def test_the_first_images_keep_their_digest_and_any_other_choice_changes_it() -> None:
    """``--limit 4`` as before; the same images listed by file are the same result; a choice of the same bytes
    at other positions is not (the CSV's index column would differ)."""
    split = _split()
    first = Selection(limit=4).apply(split)
    assert first.positions is None and first.sha256() == ImageSet(split.images[:4], split.labels[:4]).sha256()
    assert Selection(indices=(0, 1, 2, 3)).apply(split).sha256() == first.sha256()
    same_bytes = ImageSet(torch.zeros(6, 1, 2, 2, dtype=torch.uint8), torch.zeros(6))
    assert Selection(limit=3).apply(same_bytes).sha256() != Selection(offset=3).apply(same_bytes).sha256()
    assert Selection(indices=(1, 0)).apply(split).sha256() != Selection(indices=(0, 1)).apply(split).sha256()


def test_a_selection_of_a_selection_keeps_the_split_positions() -> None:
    chosen = Selection(offset=4).apply(_split())
    assert chosen.subset(2).index.tolist() == [4, 5]
    assert chosen.take(torch.tensor([3, 0])).index.tolist() == [7, 4]


@pytest.mark.parametrize(("make", "error", "message"), [
    (lambda: Selection(offset=-1), ConfigError, "offset: must be at least 0"),
    (lambda: Selection(limit=0), ConfigError, "limit: must be at least 1"),
    (lambda: Selection(offset=2, indices=(1,)), ConfigError, "with --indices"),
    (lambda: Selection(indices=()), DataError, "names no image"),
    (lambda: Selection(indices=(3, -1)), DataError, "-1 is negative"),
    (lambda: Selection(indices=(4, 1, 4)), DataError, "image 4 is listed twice"),
    (lambda: Selection(offset=10).apply(_split()), DataError, "offset: 10 is beyond the 10 test images"),
    (lambda: Selection(indices=(2, 10)).apply(_split()), DataError, "image 10 is beyond the 10 test images"),
])
def test_bad_selections_are_refused(make: Callable[[], Any], error: type, message: str) -> None:
    with pytest.raises(error, match=message.replace("(", r"\(")):
        make()


def test_indices_are_read_from_text_npy_and_another_results_csv(tmp_path: Path) -> None:
    text = tmp_path / "chosen.txt"
    text.write_text("# the hard ones\n7, 3\n12 0  # and these\n\n5\n")
    assert read_indices(text) == (7, 3, 12, 0, 5)
    array = tmp_path / "chosen.npy"
    np.save(array, np.array([4, 1], dtype=np.int32))
    assert read_indices(array) == (4, 1)
    table = tmp_path / "distances.csv"
    table.write_text("index,label,prediction,min\n8,1,1,0.5\n2,0,0,inf\n")
    assert read_indices(table) == (8, 2)
    for name, content, expected in (
        ("excel.csv", "\ufeffindex,label\r\n4,1\r\n9,0\r\n", (4, 9)),  # a spreadsheet's UTF-8 CSV
        ("tabs.tsv", "label\tindex\n1\t6\n0\t3\n", (6, 3)),
        ("semicolons.csv", "index;label\n2;1\n", (2,)),
        ("bom.txt", "\ufeff3 1\n", (3, 1)),
    ):
        path = tmp_path / name
        path.write_text(content, encoding="utf-8")
        assert read_indices(path) == expected
    for name, content, message in (
        ("floats.npy", np.array([1.0, 2.0]), "float64 array"),
        ("table.csv", "image,label\n1,2\n", "has no 'index' column"),
        ("words.txt", "1 2 three\n", "'three' is not an index"),
        ("typo.txt", "+3 4_0\n", r"'\+3' is not an index"),
        ("typo2.txt", "3 4_0\n", "'4_0' is not an index"),
        ("arabic.txt", "\u0663\n", "is not an index"),
    ):
        path = tmp_path / name
        np.save(path, content) if name.endswith(".npy") else path.write_text(content)
        with pytest.raises(DataError, match=message):
            read_indices(path)


def test_curve_with_an_offset_measures_those_images_and_names_them(
    run: Callable[..., Any], checkpoint: Path, tmp_path: Path,
) -> None:
    """``--offset 5 --limit 6`` measures test images 5 to 10 (the labels and predictions of a run over the first
    11, and the same distances as when listed with ``--indices``), and every file names them by test index."""
    whole = run("curve", checkpoint, "--limit", 11, *FAST, "--out", tmp_path / "whole")
    assert whole.exit_code == 0, whole.output
    part = run("curve", checkpoint, "--offset", 5, "--limit", 6, *FAST, "--out", tmp_path / "part",
               "--save-adversarials")
    assert part.exit_code == 0, part.output
    listed = tmp_path / "listed.txt"
    listed.write_text("5 6 7 8 9 10")
    assert run("curve", checkpoint, "--indices", listed, *FAST, "--out", tmp_path / "listed").exit_code == 0
    everything, rows = _rows(tmp_path / "whole" / "distances.csv"), _rows(tmp_path / "part" / "distances.csv")
    assert [row["index"] for row in rows] == [str(i) for i in range(5, 11)]
    assert [(r["label"], r["prediction"]) for r in rows] == [(r["label"], r["prediction"]) for r in everything[5:]]
    assert rows == _rows(tmp_path / "listed" / "distances.csv")
    summary = json.loads((tmp_path / "part" / "summary.json").read_text())
    assert (summary["limit"], summary["offset"], summary["indices_file"], summary["images"]) == (6, 5, None, 6)
    assert summary["settings"] == json.loads((tmp_path / "listed" / "summary.json").read_text())["settings"]
    saved = torch.load(tmp_path / "part" / "adversarials.pt", weights_only=True)
    assert saved["indices"].tolist() == list(range(5, 11))


def test_indices_from_another_results_csv_measure_the_same_images(
    run: Callable[..., Any], checkpoint: Path, tmp_path: Path,
) -> None:
    chosen = tmp_path / "chosen.txt"
    chosen.write_text("9\n2\n30\n")
    first = run("curve", checkpoint, "--indices", chosen, *FAST, "--out", tmp_path / "a")
    assert first.exit_code == 0, first.output
    again = run("curve", checkpoint, "--indices", tmp_path / "a" / "distances.csv", *FAST, "--out", tmp_path / "b")
    assert again.exit_code == 0, again.output
    assert [r["index"] for r in _rows(tmp_path / "a" / "distances.csv")] == ["9", "2", "30"]
    assert (tmp_path / "a" / "distances.csv").read_text() == (tmp_path / "b" / "distances.csv").read_text()
    summary = json.loads((tmp_path / "a" / "summary.json").read_text())
    assert summary["indices_file"] == str(chosen) and summary["offset"] == 0


def test_a_folder_of_one_selection_refuses_another_of_as_many_images(
    run: Callable[..., Any], checkpoint: Path, tmp_path: Path,
) -> None:
    assert run("curve", checkpoint, "--limit", 4, *FAST, "--out", tmp_path / "c").exit_code == 0
    before = (tmp_path / "c" / "distances.csv").read_text()
    refused = run("curve", checkpoint, "--limit", 4, "--offset", 4, *FAST, "--out", tmp_path / "c")
    assert refused.exit_code == 1 and "images_sha256" in refused.output, refused.output
    assert (tmp_path / "c" / "distances.csv").read_text() == before


def test_robust_takes_a_larger_curve_and_finds_its_images_by_index(
    run: Callable[..., Any], checkpoint: Path, tmp_path: Path,
) -> None:
    assert run("curve", checkpoint, "--norm", "linf", "--limit", 30, *FAST, "--out", tmp_path / "curve").exit_code == 0
    curve = {row["index"]: float(row["min"]) for row in _rows(tmp_path / "curve" / "distances.csv")}
    common = ["--norm", "linf", "--eps", "0.1", "--version", "fast", "-O", "apgd-ce.steps=2", "-O", "apgd-t.steps=2",
              "-O", "apgd-t.targets=1", "--device", "cpu", "--quiet", "--curve", tmp_path / "curve"]
    done = run("robust", checkpoint, *common, "--offset", 20, "--limit", 10, "--out", tmp_path / "r")
    assert done.exit_code == 0, done.output
    rows = _rows(tmp_path / "r" / "robust.csv")
    assert [row["index"] for row in rows] == [str(i) for i in range(20, 30)]
    assert [row["0.1"] == "curve" for row in rows] == [0 < curve[row["index"]] <= 0.1 for row in rows]
    refused = run("robust", checkpoint, *common, "--offset", 25, "--limit", 10, "--out", tmp_path / "s")
    assert refused.exit_code == 1 and "test index 30 is the first" in refused.output, refused.output


def test_stats_name_the_images_by_their_test_index(run: Callable[..., Any], checkpoint: Path, tmp_path: Path) -> None:
    done = run("stats", checkpoint, "--offset", 100, "--limit", 3, "--device", "cpu", "--quiet", "--out", tmp_path)
    assert done.exit_code == 0, done.output
    assert [row["index"] for row in _rows(tmp_path / "stats.csv")] == ["100", "101", "102"]


def test_the_grid_does_not_take_a_curve_of_other_images_for_its_own(tmp_path: Path) -> None:
    plan = EvaluationPlan(limit=4)
    summary = {"settings": {"checkpoint_sha256": "abc", "attacks": {"min-norm": None}, "seed": plan.seed},
               "limit": 4, "offset": 0, "indices_file": None}
    path = tmp_path / "summary.json"
    for changes, trusted in (({}, True), ({"offset": 2}, False), ({"indices_file": "x.txt"}, False)):
        path.write_text(json.dumps({**summary, **changes}))
        assert _describes(path, "abc", plan, "curve-l2") is trusted


def test_robust_refuses_a_curve_of_other_images_at_the_same_indices(
    run: Callable[..., Any], checkpoint: Path, tmp_path: Path, engine: Engine,
) -> None:
    """A curve is taken only for the images it measured: other pixels at its indices (another data folder,
    files changed), or an index listed twice, are refused; a mismatch names the test index."""
    assert run("curve", checkpoint, "--norm", "linf", "--offset", 20, "--limit", 10, *FAST,
               "--out", tmp_path / "curve").exit_code == 0
    target = load_target(checkpoint, engine, data_dir=None, selection=Selection(offset=22, limit=5))
    common = dict(norm="linf", checkpoint=checkpoint, digest=target.sha256, source=None, dataset="digits",
                  data=target.test)
    known = read_curve(tmp_path / "curve", split=target.split, **common)
    rows = _rows(tmp_path / "curve" / "distances.csv")[2:7]
    assert known.distances.tolist() == [float(row["min"]) for row in rows]
    changed = target.split.images.clone()
    changed[27, 0, 0, 0] += 1 / 1024  # one pixel of one image the curve measured (not one evaluated here)
    other = ImageSet(changed, target.split.labels)
    with pytest.raises(DataError, match="measured on other images than those of this data set at its indices"):
        read_curve(tmp_path / "curve", split=other, **common)
    table = tmp_path / "curve" / "distances.csv"
    lines = table.read_text().splitlines()
    table.write_text("\n".join([*lines, lines[5].replace(lines[5].split(",")[-1], "1e-09")]) + "\n")
    with pytest.raises(DataError, match="test index 24 has two rows"):
        read_curve(tmp_path / "curve", split=target.split, **common)


def test_robust_takes_the_curve_of_a_model_given_by_its_factory(run: Callable[..., Any], tmp_path: Path) -> None:
    (tmp_path / "net.py").write_text(
        "from torch import nn\n\n\ndef build(num_classes):\n"
        "    return nn.Sequential(nn.Flatten(), nn.Linear(64, num_classes))\n")
    model = ["--model", f"{tmp_path / 'net.py'}:build", "--dataset", "digits", "--offset", 5, "--limit", 8]
    assert run("curve", *model, "--norm", "linf", *FAST, "--out", tmp_path / "curve").exit_code == 0
    done = run("robust", *model, "--norm", "linf", "--eps", "0.05", "--version", "fast", "-O", "apgd-ce.steps=2",
               "-O", "apgd-t.steps=2", "-O", "apgd-t.targets=1", "--device", "cpu", "--quiet",
               "--curve", tmp_path / "curve", "--out", tmp_path / "robust")
    assert done.exit_code == 0, done.output
    assert [row["index"] for row in _rows(tmp_path / "robust" / "robust.csv")] == [str(i) for i in range(5, 13)]

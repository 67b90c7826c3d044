"""``lipcli report`` over hand-written run folders: cells over seeds (mean ± sample std (n)) against hand
arithmetic, seeds counted by value, image counts, rows measured on other images."""

from __future__ import annotations

import csv
import io
import json
import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from lipcli.config import dumps, resolve
from lipcli.errors import LipcliError
from lipcli.experiments.report import (
    collect,
    csv_text,
    latex,
    markdown,
    summary_json,
    write_report,
)


def run_folder(root: Path, name: str, *, seed: int, distances: list[float], labels: list[int] | None = None,
               defence: str = "j0", grad_loss_l2: float | None = None, offset: int = 0) -> Path:
    """A run folder with a config.toml and a curve-l2/distances.csv written out line by line (no lipcli code)."""
    config = resolve(None, {}, ["data.dataset='digits'", f"defence.name={defence!r}", f"training.seed={seed}"])
    folder = root / name
    (folder / "curve-l2").mkdir(parents=True)
    (folder / "config.toml").write_text(dumps(config.to_dict()))
    labels = labels or [i % 10 for i in range(len(distances))]
    lines = ["index,label,prediction,min-norm,min"]
    for index, (label, distance) in enumerate(zip(labels, distances), offset):
        prediction = label + 1 if distance == 0 else label
        lines.append(f"{index},{label},{prediction},{distance},{distance}")
    (folder / "curve-l2" / "distances.csv").write_text("\n".join(lines) + "\n")
    if grad_loss_l2 is not None:
        (folder / "stats").mkdir()
        (folder / "stats" / "stats.json").write_text(json.dumps({
            "images": len(distances), "clean_error": 0.25, "grad_loss_l2": {"max": grad_loss_l2},
            "grad_loss_l1": {"max": 1.0}, "jac_f_2inf_max": 1.0, "jac_f_11_max": 1.0}))
    return folder


SEEDS = {  # per seed, four images: one misclassified (distance 0), the 2nd smallest is the median
    0: [0.0, 0.2, 0.3, math.inf],  # error 1/4, median 0.2, error at l2 1.5: 3/4
    1: [0.0, 0.4, 0.7, 0.9],  # 1/4, 0.4, 4/4
    2: [0.0, 0.6, 0.8, 3.0],  # 1/4, 0.6, 3/4
}


def three_seeds(root: Path) -> None:
    for seed, distances in SEEDS.items():
        run_folder(root, f"j0-s{seed}", seed=seed, distances=distances, grad_loss_l2=(10.0, 12.0, 17.0)[seed])
    run_folder(root, "j2-s0", seed=0, distances=[0.0, 0.5, 0.6, 0.7], defence="j2", grad_loss_l2=4.0)


def test_a_cell_over_three_seeds_is_mean_plus_minus_sample_std_by_hand(tmp_path: Path) -> None:
    three_seeds(tmp_path)
    report = collect([tmp_path])
    j0, j2 = report.rows["digits"]
    assert j0.seeds == [0, 1, 2] and j2.seeds == [0]
    md = markdown(report)
    # l2 median: 0.2, 0.4, 0.6 -> mean 0.4, std sqrt((0.04 + 0 + 0.04) / 2) = 0.2
    # % err l2 1.5: 75, 100, 75 -> mean 83.33, std sqrt((8.333² + 16.667² + 8.333²) / 2) = sqrt(208.33) = 14.43
    # % err at 0 and at 0.1: 25 on every seed -> std 0; one seed (j2): the value alone, no ± and no (n)
    # (best: the larger median, the smaller error, compared as printed)
    assert ("| small-cnn | j0 | 3 | 4 | 25.00 ± 0.00 (3) | 0.4 ± 0.2 (3) | 25.00 ± 0.00 (3) | **83.33 ± 14.43 (3)** "
            "|  |  |") in md
    assert "| small-cnn | j2 | 1 | 4 | 25.00 | **0.5** | 25.00 | 100.00 |  |  |" in md
    # max ‖∇ℓ‖₂: 10, 12, 17 -> mean 13, std sqrt((9 + 1 + 16) / 2) = sqrt(13) = 3.606
    assert "| small-cnn | j0 | 3 | 4 | 13 ± 3.61 (3) | 1 ± 0 (3) | 1 ± 0 (3) | 1 ± 0 (3) |" in md
    assert "25.00 $\\pm$ 0.00 (3) & 0.4 $\\pm$ 0.2 (3)" in latex(report)
    rows = list(csv.DictReader(io.StringIO(csv_text(report))))
    assert rows[0]["seeds"] == "3" and rows[0]["robustness_images"] == "4" and rows[0]["stability_images"] == "4"
    assert float(rows[0]["l2_median"]) == pytest.approx(0.4) and float(rows[0]["l2_median_std"]) == pytest.approx(0.2)
    assert rows[0]["l2_median_n"] == "3" and rows[1]["l2_median_std"] == "" and rows[1]["l2_median_n"] == "1"
    assert float(rows[0]["l2_err_1.5_std"]) == pytest.approx(math.sqrt(((0.75 - 5 / 6) ** 2 * 2 + (1 - 5 / 6) ** 2) / 2))
    write_report(report, tmp_path / "out")
    assert "small-cnn j0 (3 seeds)" in re.findall(r"<!-- (.*?) -->", (tmp_path / "out" / "digits-l2.svg").read_text())
    listed = summary_json(report)["digits"][0]
    assert listed["seeds"] == [0, 1, 2] and listed["grad_loss_l2_std"] == pytest.approx(math.sqrt(13))


def test_seeds_are_counted_by_value(tmp_path: Path) -> None:
    """A copied run folder is one seed twice: refused, both folders named; other seeds count once each."""
    run_folder(tmp_path, "a", seed=0, distances=[0.0, 0.2])
    run_folder(tmp_path, "b", seed=1, distances=[0.0, 0.4])
    assert collect([tmp_path]).rows["digits"][0].seeds == [0, 1]
    run_folder(tmp_path, "copy-of-a", seed=0, distances=[0.0, 0.2])
    with pytest.raises(LipcliError, match="seed 0; two folders of one seed are not two seeds") as caught:
        collect([tmp_path])
    assert str(tmp_path / "a") in str(caught.value) and str(tmp_path / "copy-of-a") in str(caught.value)


@pytest.mark.parametrize(("distances", "labels", "offset", "message"), [
    ([0.0, 0.3, 0.5], None, 0, r"l2: 4 images in .*, 3 in "),  # another limit
    ([0.0, 0.3, 0.5, 0.7], [5, 5, 5, 5], 0, r"l2: 4 images in .*, 4 other in "),  # other images, as many
    ([0.0, 0.3, 0.5, 0.7], [5, 5, 5, 5], 20, r"l2: 4 images in .*, 4 other in "),  # --offset, the same labels
])
def test_seeds_measured_on_other_images_are_refused(tmp_path: Path, distances: list[float], labels: list[int] | None,
                                                    offset: int, message: str) -> None:
    run_folder(tmp_path, "s0", seed=0, distances=[0.0, 0.2, 0.4, 0.6], labels=[5, 5, 5, 5] if offset else None)
    run_folder(tmp_path, "s1", seed=1, distances=distances, labels=labels, offset=offset)
    with pytest.raises(LipcliError, match="its seeds were measured on different test images") as caught:
        collect([tmp_path])
    assert caught.match(message)


def test_rows_on_other_images_are_marked_and_not_ranked(tmp_path: Path) -> None:
    """Two rows on the same 4 images, one on 2 images with the best values: marked †, footnoted, not bold."""
    run_folder(tmp_path, "j0", seed=0, distances=[0.0, 0.2, 0.4, 0.6])
    run_folder(tmp_path, "j1", seed=0, distances=[0.0, 0.3, 0.5, 0.7], defence="j1")
    run_folder(tmp_path, "j2", seed=0, distances=[3.0, 4.0], defence="j2")
    report = collect([tmp_path])
    md = markdown(report)
    assert "| small-cnn | j0 | 1 | 4 | 25.00 | 0.2 |" in md
    assert "| small-cnn | j1 | 1 | 4 | 25.00 | **0.3** |" in md  # the best among the comparable rows
    assert "| small-cnn | j2 | 1 | 2† | 0.00 | 3 |" in md  # larger, yet not bold
    assert "† measured on other test images than the table's other rows (4 images)" in md
    assert "2$^\\dagger$" in latex(report)
    rows = list(csv.DictReader(io.StringIO(csv_text(report))))
    assert [(r["defence"], r["robustness_images"], r["robustness_other_images"]) for r in rows] == [
        ("j0", "4", "0"), ("j1", "4", "0"), ("j2", "2", "1")]
    written = write_report(report, tmp_path / "out")
    assert (tmp_path / "out" / "digits-l2.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and len(written) == 5
    texts = re.findall(r"<!-- (.*?) -->", (tmp_path / "out" / "digits-l2.svg").read_text())
    assert "digits · l2 · attack min-norm · 4/2 test images (they differ)" in texts  # the title
    assert {"ε=0.1", "ε=1.5", "small-cnn j0", "small-cnn j2"} <= set(texts)


def test_the_report_command_prints_spread_images_and_marks(run: Callable[..., Any], tmp_path: Path) -> None:
    three_seeds(tmp_path / "runs")
    result = run("report", tmp_path / "runs")
    assert result.exit_code == 0, result.output
    assert "0.4 ± 0.2 (3)" in result.stdout and "images" in result.stdout
    run_folder(tmp_path / "runs", "j0-again", seed=2, distances=SEEDS[2])
    result = run("report", tmp_path / "runs")
    assert result.exit_code == 1 and "two folders of one seed are not two seeds" in result.output


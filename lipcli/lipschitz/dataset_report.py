"""``lipcli data-lipschitz`` as an engine call: the data Lipschitz constant of one split, and the distance from
each test image to the nearest training image of another class, in the file formats of ``lipcli curve``
(distances.csv, summary.json, curve.png/.svg; :mod:`lipcli.result_files`) so that it reads like a model's curve."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

from lipcli import figures
from lipcli.config.schema import DataConfig
from lipcli.curves import default_eps
from lipcli.data.image_files import ImageFiles
from lipcli.data.load import load_data
from lipcli.data.types import DataSplits, ImageSet
from lipcli.engine import Engine
from lipcli.errors import ConfigError, DataError
from lipcli.layout import CURVE_FILE, DATA_LIPSCHITZ_FILE, DISTANCES_FILE, SUMMARY_FILE
from lipcli.lipschitz.data import closest_pair, conflicting_duplicates, nearest_distinct
from lipcli.reporting import Reporter
from lipcli.result_files import curve_summary, write_per_image, write_summary
from lipcli.results_folder import Layout, claim, provenance

NEAREST = "nearest-distinct"
"""The name of the nearest-neighbour distances' column in distances.csv and of the measure in summary.json."""
SPLITS = ("train", "test")
"""The splits whose constant can be measured."""
LAYOUT = Layout(DATA_LIPSCHITZ_FILE, (DISTANCES_FILE, SUMMARY_FILE, *(f"{CURVE_FILE}.{kind}" for kind in ("png", "svg"))))


def drop_conflicts(data: ImageSet) -> tuple[ImageSet, torch.Tensor, torch.Tensor]:
    """(``data`` without exact duplicates that carry different labels, the dropped indices, the original index
    of every kept image)."""
    dropped = conflicting_duplicates(data)
    keep = torch.ones(len(data), dtype=torch.bool)
    keep[dropped] = False
    return ImageSet(data.images[keep], data.labels[keep]), dropped, keep.nonzero().flatten()


def data_lipschitz(
    config: DataConfig,
    engine: Engine,
    *,
    split: str,
    out: Path,
    limit: int | None = None,
    curve: bool = True,
    chunk: int = 4096,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Measure ``split`` (train or test), write ``out/data-lipschitz.json`` (and the curve files when
    ``curve``), return the report. A folder holding results of other settings is refused before any work
    unless ``overwrite``."""
    split = split.strip().lower()
    if split not in SPLITS:
        raise ConfigError(f"split: unknown split {split!r}; use {' or '.join(SPLITS)}")
    splits = load_data(config, engine.plugins)
    data = splits.train if split == "train" else splits.test
    if isinstance(data.images, ImageFiles) or isinstance(splits.test.images, ImageFiles):
        raise DataError(f"data-lipschitz compares every pair of images, so it needs them in memory; "
                        f"{splits.info.name} is read from its files a batch at a time (set --data-option "
                        "stream=false to hold it in memory)")
    test = splits.test.subset(limit)
    settings = {
        "dataset": splits.info.name, "split": split, "images": len(data), "images_sha256": data.sha256(),
        "curve": {"images": len(test), "images_sha256": test.sha256()} if curve else None,
    }
    with claim({out: settings}, LAYOUT, overwrite=overwrite):
        return _measure(splits, data, test, settings, out=out, curve=curve, chunk=chunk, device=engine.device,
                        reporter=engine.reporter, data_dir=config.data_dir, data_options=dict(config.options))


def _measure(
    splits: DataSplits, data: ImageSet, test: ImageSet, settings: dict[str, Any], *, out: Path, curve: bool,
    chunk: int, device: torch.device, reporter: Reporter, data_dir: str | None, data_options: dict[str, Any],
) -> dict[str, Any]:
    split = settings["split"]
    reporter.info(f"{splits.info.name} {split}: {len(data)} images, on {device}")
    started = time.perf_counter()
    kept, dropped, original = drop_conflicts(data)
    pair = closest_pair(kept, chunk=chunk, device=device, reporter=reporter)
    seconds = time.perf_counter() - started
    first, second = (int(original[pair.first]), int(original[pair.second])) if pair.first >= 0 else (None, None)
    report: dict[str, Any] = {
        "settings": settings, "dataset": splits.info.name, "split": split, "images": len(data),
        "data_dir": data_dir, "data_options": data_options, **provenance(device),
        "dropped_duplicates": {"count": int(dropped.numel()), "indices": dropped.tolist()},
        "min_distance": pair.distance if first is not None else None,
        "lipschitz_2inf": pair.lipschitz if first is not None else None,
        "pair": None if first is None else {
            "indices": [first, second], "labels": [int(data.labels[first]), int(data.labels[second])],
        },
        "seconds": seconds,
    }
    if curve:
        report["nearest_distinct"] = _nearest_curve(
            test, drop_conflicts(splits.train)[0], out,
            chunk=chunk, device=device, reporter=reporter, dataset=splits.info.name,
        )
    write_summary(out / DATA_LIPSCHITZ_FILE, report)
    return report


def _nearest_curve(
    test: ImageSet, train: ImageSet, out: Path, *, chunk: int, device: torch.device, reporter: Reporter,
    dataset: str,
) -> dict[str, Any]:
    """Per test image, the distance to the nearest training image of another class, as curve files."""
    started = time.perf_counter()
    distances = nearest_distinct(test, train, chunk=chunk, device=device, reporter=reporter)
    seconds = time.perf_counter() - started
    eps = default_eps("l2")
    summary = {
        "label": f"{dataset} {NEAREST}", "dataset": dataset, **provenance(device), "norm": "l2",
        "images": len(test), **curve_summary(distances, eps), "eps": dict(eps), "measure": NEAREST, "seconds": seconds,
    }
    # The labels stand in for the predictions: every test image counts, as if classified correctly.
    write_per_image(out / DISTANCES_FILE, test.labels, test.labels, {NEAREST: distances, "min": distances})
    write_summary(out / SUMMARY_FILE, summary)
    figures.draw(out / CURVE_FILE, [figures.Series(NEAREST, (distances,))], norm="l2",
                 title=f"{dataset} · nearest training image of another class · {len(test)} test images",
                 xlabel="distance to the nearest training image of another class (l2)",
                 ylabel="% of test images within the distance")
    return {"images": len(test), "median_distance": summary["median_distance"], "seconds": seconds}

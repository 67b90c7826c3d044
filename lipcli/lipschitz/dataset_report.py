"""``lipcli data-lipschitz`` as an engine call: the data Lipschitz constant of one split, and the
nearest-distinct-neighbour "attack" from each test image to the training set, written in ``lipcli curve``'s
format (distances.csv, summary.json, curve.png/.svg) so that it can be drawn beside the models' curves."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

import lipcli
from lipcli.config.schema import DataConfig
from lipcli.data.load import load_data
from lipcli.data.types import ImageSet
from lipcli.evaluation import figures, results
from lipcli.evaluation.curves import DEFAULT_EPS, parse_eps
from lipcli.evaluation.runner import AttackResult, RobustnessResult
from lipcli.lipschitz.data import closest_pair, conflicting_duplicates, nearest_distinct
from lipcli.plugins import PluginHost
from lipcli.progress import Reporter

REPORT_FILE = "data-lipschitz.json"
NEAREST = "nearest-distinct"
"""The name of the nearest-neighbour "attack" in distances.csv and summary.json."""


def drop_conflicts(data: ImageSet) -> tuple[ImageSet, torch.Tensor, torch.Tensor]:
    """(``data`` without exact duplicates that carry different labels, the dropped indices, the original index
    of every kept image)."""
    dropped = conflicting_duplicates(data)
    keep = torch.ones(len(data), dtype=torch.bool)
    keep[dropped] = False
    return ImageSet(data.images[keep], data.labels[keep]), dropped, keep.nonzero().flatten()


def data_lipschitz(
    config: DataConfig,
    *,
    split: str,
    out: Path,
    limit: int | None = None,
    curve: bool = True,
    chunk: int = 4096,
    device: torch.device,
    host: PluginHost | None = None,
    reporter: Reporter | None = None,
) -> dict[str, Any]:
    """Measure, write ``out/data-lipschitz.json`` (and the curve files when ``curve``), return the report."""
    reporter = reporter or Reporter()
    splits = load_data(config, host)
    data = splits.train if split == "train" else splits.test
    reporter.info(f"{splits.info.name} {split}: {len(data)} images, on {device}")
    started = time.perf_counter()
    kept, dropped, original = drop_conflicts(data)
    pair = closest_pair(kept, chunk=chunk, device=device, reporter=reporter)
    seconds = time.perf_counter() - started
    first, second = (int(original[pair.first]), int(original[pair.second])) if pair.first >= 0 else (None, None)
    report: dict[str, Any] = {
        "dataset": splits.info.name, "split": split, "images": len(data), "lipcli_version": lipcli.__version__,
        "dropped_duplicates": {"count": int(dropped.numel()), "indices": dropped.tolist()},
        "min_distance": pair.distance if first is not None else None,
        "lipschitz_2inf": pair.lipschitz if first is not None else None,
        "pair": None if first is None else {
            "indices": [first, second], "labels": [int(data.labels[first]), int(data.labels[second])],
        },
        "seconds": seconds, "device": str(device),
    }
    if curve:
        report["nearest_distinct"] = _nearest_curve(
            splits.test.subset(limit), drop_conflicts(splits.train)[0], out,
            chunk=chunk, device=device, reporter=reporter, dataset=splits.info.name,
        )
    results.write_summary(out / REPORT_FILE, report)
    return report


def _nearest_curve(
    test: ImageSet, train: ImageSet, out: Path, *, chunk: int, device: torch.device, reporter: Reporter,
    dataset: str,
) -> dict[str, Any]:
    """Per test image, the distance to the nearest training image of another class, as curve files."""
    started = time.perf_counter()
    distances = nearest_distinct(test, train, chunk=chunk, device=device, reporter=reporter)
    seconds = time.perf_counter() - started
    result = RobustnessResult("l2", test.labels.clone(), test.labels.clone(),
                              [AttackResult(NEAREST, distances, seconds, queries=0)])
    eps = parse_eps(",".join(DEFAULT_EPS["l2"]))
    summary = results.summarise(result, eps, label=f"{dataset} {NEAREST}",
                                dataset=dataset, device=str(device), lipcli_version=lipcli.__version__)
    results.write_distances(out / results.DISTANCES_FILE, result)
    results.write_summary(out / results.SUMMARY_FILE, summary)
    figures.draw(out / results.CURVE_FILE, [figures.Series(NEAREST, (distances,))], norm="l2",
                 title=f"{dataset} · nearest training image of another class · {len(test)} test images",
                 xlabel="distance to the nearest training image of another class (l2)",
                 ylabel="% of test images within the distance")
    return {"images": len(test), "median_distance": summary["median_distance"], "seconds": seconds}

"""The files ``lipcli curve`` and ``lipcli attack`` write: distances.csv, summary.json, with
``--save-adversarials`` adversarials.pt (the figure: :mod:`lipcli.evaluation.figures`).

JSON has no infinity: a median that is +inf (fewer than half the images broken) is written as null, and
``failures`` counts the images no attack broke. In the CSV a failure is ``inf``.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from lipcli.evaluation.curves import error_at, median_distance
from lipcli.evaluation.runner import RobustnessResult
from lipcli.files import atomic_write, write_text

DISTANCES_FILE = "distances.csv"
SUMMARY_FILE = "summary.json"
ADVERSARIALS_FILE = "adversarials.pt"
CURVE_FILE = "curve"


def _number(value: float) -> float | None:
    return value if math.isfinite(value) else None


def write_distances(path: Path, result: RobustnessResult) -> None:
    """One row per image: test index, label, clean prediction, each attack's distance, the minimum."""
    columns = {a.name: a.distances for a in result.attacks}
    write_per_image(path, result.labels, result.predictions, {**columns, "min": result.minimum})


def write_per_image(
    path: Path, labels: torch.Tensor, predictions: torch.Tensor, columns: dict[str, torch.Tensor]
) -> None:
    """A CSV with one row per image: index, label, prediction, then each column (floats as Python writes
    them, so ``inf`` and ``nan`` read back)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["index", "label", "prediction", *columns])
    values = [column.tolist() for column in columns.values()]
    for index, (label, prediction) in enumerate(zip(labels.tolist(), predictions.tolist())):
        writer.writerow([index, label, prediction, *(repr(float(column[index])) for column in values)])
    write_text(path, buffer.getvalue())


def summarise(
    result: RobustnessResult,
    eps: list[tuple[str, float]],
    options: Mapping[str, Mapping[str, Any]] | None = None,
    **context: Any,
) -> dict[str, Any]:
    """The summary of one model's evaluation: clean error, median, error at each eps, cost, per attack (with
    ``options[name]``, the options its factory was called with, or null where they are not known)."""
    attacked = int((result.predictions == result.labels).sum())

    def curve_summary(distances: Any) -> dict[str, Any]:
        return {
            "median_distance": _number(median_distance(distances)),
            "error_at": {text: error_at(distances, value) for text, value in eps},
            "failures": int(distances.isinf().sum()),
        }

    minimum = result.minimum
    broken = torch.isfinite(minimum) & (minimum > 0)
    per_attack = {}
    for attack in result.attacks:
        per_attack[attack.name] = {
            **curve_summary(attack.distances),
            "best_on": int((broken & (attack.distances <= minimum)).sum()),
            "seconds": attack.seconds,
            "queries": attack.queries,
            "queries_per_image": attack.queries / attacked if attacked else 0.0,
            "outside_box": attack.outside_box,
            "options": (options or {}).get(attack.name),
        }
    return {
        **context,
        "norm": result.norm,
        "images": int(result.labels.numel()),
        "attacked": attacked,
        "clean_error": result.clean_error,
        **curve_summary(minimum),
        "eps": {text: value for text, value in eps},
        "attacks": [a.name for a in result.attacks],
        "seconds": sum(a.seconds for a in result.attacks),
        "queries": sum(a.queries for a in result.attacks),
        "per_attack": per_attack,
        "strongest": strongest(per_attack),
        "warnings": list(result.warnings),
    }


def strongest(per_attack: dict[str, dict[str, Any]]) -> str:
    """The attack with the smallest median distance; ties go to the one best on the most images."""

    def key(name: str) -> tuple[float, int]:
        median = per_attack[name]["median_distance"]
        return (math.inf if median is None else median, -per_attack[name]["best_on"])

    return min(per_attack, key=key)


def write_summary(path: Path, summary: dict[str, Any] | list[Any]) -> None:
    write_text(path, json.dumps(summary, indent=2, allow_nan=False) + "\n")  # NaN or inf is a bug here


def write_adversarials(path: Path, result: RobustnessResult, seed: int) -> None:
    """``adversarials.pt``, a dict that loads with ``torch.load(path, weights_only=True)``, one row per row of
    distances.csv: ``indices`` (test-set index), ``labels``, ``adversarials`` (float32, the input whose
    distance is the ``min`` column: the clean image where the model misclassifies it, NaN where every attack
    failed), ``distances`` (float64, the ``min`` column), ``norm`` and ``seed``."""
    if result.adversarials is None:
        raise ValueError("the attacks ran without keep_adversarials: there are no adversarials to write")
    payload = {
        "indices": torch.arange(result.labels.numel()),
        "labels": result.labels,
        "adversarials": result.adversarials,
        "distances": result.minimum,
        "norm": result.norm,
        "seed": seed,
    }
    atomic_write(path, lambda handle: torch.save(payload, handle))

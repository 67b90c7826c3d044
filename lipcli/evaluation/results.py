"""The files ``lipcli curve`` and ``lipcli attack`` write: distances.csv, summary.json, curve.png/.svg.

JSON has no infinity: a median that is +inf (fewer than half the images broken) is written as null, and
``failures`` counts the images no attack broke. In the CSV a failure is ``inf``.
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Any

import torch

from lipcli.evaluation.curves import curve_points, error_at, median_distance
from lipcli.evaluation.runner import RobustnessResult
from lipcli.files import atomic_write, write_text

DISTANCES_FILE = "distances.csv"
SUMMARY_FILE = "summary.json"
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


def summarise(result: RobustnessResult, eps: list[tuple[str, float]], **context: Any) -> dict[str, Any]:
    """The summary of one model's evaluation: clean error, median, error at each eps, cost, per attack."""
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


def plot_curves(
    stem: Path, curves: list[tuple[str, Any]], norm: str, title: str, overall: tuple[str, Any] | None = None
) -> list[Path]:
    """Error curves (fraction of images broken vs distance, log-scale distance axis) as PNG and SVG.

    Each curve starts at its clean error (distance 0 is off a log axis, so the curve begins flat at the
    left edge) and stops at its largest finite distance. ``overall`` (the minimum over attacks) is drawn
    dashed on top, so the attack it coincides with stays visible beneath it.
    """
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    drawn = curves + ([overall] if overall else [])
    finite = [x for _, distances in drawn for x in curve_points(distances)[0] if x > 0]
    low = min(finite) / 2 if finite else 1e-3
    high = max(finite) * 1.5 if finite else 1.0
    figure, axes = pyplot.subplots(figsize=(6.4, 4.4))
    for index, (label, distances) in enumerate(drawn):
        xs, ys = curve_points(distances)
        clean = error_at(distances, 0.0)
        points_x = [low] + [x for x in xs if x > 0]
        points_y = [clean * 100] + [y * 100 for x, y in zip(xs, ys) if x > 0]
        style = {"color": "black", "linestyle": "--", "linewidth": 1.0} if index == len(curves) else {}
        axes.step(points_x, points_y, where="post", label=label, **style)
    axes.set_xscale("log")
    axes.set_xlim(low, high)
    axes.set_ylim(0, 100)
    axes.set_xlabel(f"adversarial distance ({'l2' if norm == 'l2' else 'l-inf'})")
    axes.set_ylabel("% error")
    axes.set_title(title)
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(loc="upper left", fontsize="small")
    figure.tight_layout()
    written = []
    for suffix in (".png", ".svg"):
        target = stem.with_suffix(suffix)
        atomic_write(target, lambda handle, kind=suffix[1:]: figure.savefig(handle, format=kind, dpi=150))
        written.append(target)
    pyplot.close(figure)
    return written

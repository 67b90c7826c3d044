"""File formats shared by every command that writes per-image distances or a summary (``curve``, ``attack``,
``stats``, ``data-lipschitz``): the per-image CSV, the JSON summary and the curve's numbers in it.

JSON has no infinity: a median that is +inf (fewer than half the images broken) is written as null. In the CSV a
failure is ``inf``, written as Python writes floats, so that it reads back.
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Any

import torch

from lipcli.curves import error_at, median_distance
from lipcli.files import write_text


def _number(value: float) -> float | None:
    return value if math.isfinite(value) else None


def write_per_image(
    path: Path, labels: torch.Tensor, predictions: torch.Tensor, columns: dict[str, torch.Tensor], *,
    index: torch.Tensor | None = None,
) -> None:
    """A CSV with one row per image: its index in the test split (``index``; default 0 to N-1), label,
    prediction, then each column (floats as Python writes them, so ``inf`` and ``nan`` read back)."""
    write_rows(path, labels, predictions, {name: [repr(float(v)) for v in column.tolist()]
                                           for name, column in columns.items()}, index=index)


def write_rows(
    path: Path, labels: torch.Tensor, predictions: torch.Tensor, columns: dict[str, list[str]], *,
    index: torch.Tensor | None = None,
) -> None:
    """A CSV with one row per image: its index in the test split (default 0 to N-1), label, prediction, then
    each column's text."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["index", "label", "prediction", *columns])
    positions = range(len(labels)) if index is None else index.tolist()
    for row, (position, label, prediction) in enumerate(zip(positions, labels.tolist(), predictions.tolist())):
        writer.writerow([position, label, prediction, *(column[row] for column in columns.values())])
    write_text(path, buffer.getvalue())


def curve_summary(distances: torch.Tensor, eps: list[tuple[str, float]]) -> dict[str, Any]:
    """A distance curve's numbers: its median (null when +inf), the error at each eps, and its failures."""
    return {
        "median_distance": _number(median_distance(distances)),
        "error_at": {text: error_at(distances, value) for text, value in eps},
        "failures": int(distances.isinf().sum()),
    }


def write_summary(path: Path, summary: dict[str, Any] | list[Any]) -> None:
    write_text(path, json.dumps(summary, indent=2, allow_nan=False) + "\n")  # NaN or inf is a bug here

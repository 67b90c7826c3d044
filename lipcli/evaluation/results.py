"""The files ``lipcli curve`` and ``lipcli attack`` write: distances.csv, summary.json, the curve's figure, with
``--save-adversarials`` adversarials.pt. The formats shared with other commands are in :mod:`lipcli.result_files`
(``failures`` counts the images no attack broke; in the CSV a failure is ``inf``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from lipcli.evaluation.attack_set import RobustnessResult
from lipcli.figures import Series, describe, draw
from lipcli.files import atomic_write
from lipcli.result_files import curve_summary, write_per_image


def write_distances(path: Path, result: RobustnessResult) -> None:
    """One row per image: test index, label, clean prediction, each attack's distance, the minimum."""
    columns = {a.name: a.distances for a in result.attacks}
    write_per_image(path, result.labels, result.predictions, {**columns, "min": result.minimum},
                    index=result.positions)


def summarise(
    result: RobustnessResult,
    eps: list[tuple[str, float]],
    options: Mapping[str, Mapping[str, Any]] | None = None,
    **context: Any,
) -> dict[str, Any]:
    """The summary of one model's evaluation: clean error, median, error at each eps, cost, per attack (with
    ``options[name]``, the options its factory was called with, or null where they are not known)."""
    attacked = int((result.predictions == result.labels).sum())

    minimum = result.minimum
    broken = torch.isfinite(minimum) & (minimum > 0)
    per_attack = {}
    for attack in result.attacks:
        per_attack[attack.name] = {
            **curve_summary(attack.distances, eps),
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
        **curve_summary(minimum, eps),
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


def write_adversarials(path: Path, result: RobustnessResult, seed: int) -> None:
    """``adversarials.pt``, a dict that loads with ``torch.load(path, weights_only=True)``, one row per row of
    distances.csv: ``indices`` (test-set index), ``labels``, ``adversarials`` (float32, the input whose
    distance is the ``min`` column: the clean image where the model misclassifies it, NaN where every attack
    failed), ``distances`` (float64, the ``min`` column), ``norm`` and ``seed``."""
    if result.adversarials is None:
        raise ValueError("the attacks ran without keep_adversarials: there are no adversarials to write")
    payload = {
        "indices": torch.arange(result.labels.numel()) if result.positions is None else result.positions.clone(),
        "labels": result.labels,
        "adversarials": result.adversarials,
        "distances": result.minimum,
        "norm": result.norm,
        "seed": seed,
    }
    atomic_write(path, lambda handle: torch.save(payload, handle))



def draw_evaluations(
    stem: Path, evaluated: Sequence[tuple[str, RobustnessResult, dict[str, Any]]], *, by: str,
    eps: Sequence[tuple[str, float]],
) -> list[Path]:
    """``lipcli curve``'s figure (``by="model"``: each checkpoint's minimum over attacks) or ``lipcli attack``'s
    (``by="attack"``: the first checkpoint's attacks over the grey band of their minimum), from (label, result,
    summary as in summary.json) per checkpoint."""
    first_label, first, first_summary = evaluated[0]
    title = describe((s["dataset"] for _, _, s in evaluated), first.norm, (a.name for a in first.attacks),
                     (int(r.labels.numel()) for _, r, _ in evaluated))
    if by == "model":
        series = [Series(label, (result.minimum,)) for label, result, _ in evaluated]
        return draw(stem, series, norm=first.norm, title=title, eps=eps)
    best_on = {name: attack["best_on"] for name, attack in first_summary["per_attack"].items()}
    series = [Series(f"{a.name} (smallest on {best_on[a.name]} image{'' if best_on[a.name] == 1 else 's'})",
                     (a.distances,)) for a in first.attacks]
    return draw(stem, series, norm=first.norm, title=f"attacks on {first_label}\n{title}", eps=eps,
                floor=first.minimum if len(series) > 1 else None)

"""``lipcli curve`` and ``lipcli attack`` as engine calls: checkpoints in, result folders and summaries out.

Per checkpoint: load the model and its test images, run the attacks (:func:`lipcli.evaluation.runner.attack_set`),
write ``distances.csv`` and ``summary.json``; then draw the error curves, one per checkpoint (``by="model"``,
the paper's Figure 2) or one per attack (``by="attack"``, Figure 1).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import torch

import lipcli
from lipcli.attacks import NORMS, Attack
from lipcli.components import call_factory
from lipcli.distributed import barrier, current
from lipcli.errors import ConfigError
from lipcli.evaluation import results
from lipcli.evaluation.runner import RobustnessResult, attack_set
from lipcli.evaluation.targets import load_target, output_folders
from lipcli.plugins import PluginHost, get_host
from lipcli.progress import Reporter


@dataclass
class Evaluation:
    """One checkpoint's result: its label, the folder written, the summary (as in summary.json)."""

    label: str
    folder: Path
    result: RobustnessResult
    summary: dict[str, Any]


def build_attacks(
    names: list[str], options: Mapping[str, Mapping[str, Any]], host: PluginHost
) -> dict[str, Attack]:
    """Attack objects by registered name; ``options[name]`` are passed to the factory (``attack.<name>.<key>``)."""
    registry = host.registry("attack")
    # Option keys name attacks as the user wrote them: resolve them like --attack names (any case).
    options = {registry.get(key).name if key in registry else key: value for key, value in options.items()}
    attacks: dict[str, Attack] = {}
    for name in names:
        component = registry.get(name)
        if component.name in attacks:
            raise ConfigError(f"attack {component.name!r} is given twice")
        attack = call_factory(component, options.get(component.name, {}), f"attack.{component.name}")
        if not callable(getattr(attack, "run", None)):
            raise ConfigError(f"attack {component.name!r}: its factory returned {type(attack).__name__}, no run()")
        attacks[component.name] = attack
    unknown = set(options) - set(attacks)
    if unknown:
        raise ConfigError(f"attack.{sorted(unknown)[0]}: options given for an attack that is not run")
    return attacks


def evaluate_checkpoints(
    paths: list[Path],
    *,
    norm: str,
    attacks: dict[str, Attack],
    eps: list[tuple[str, float]],
    out: Path,
    by: str = "model",
    limit: int | None = None,
    batch_size: int | None = None,
    data_dir: Path | None = None,
    device: torch.device,
    host: PluginHost | None = None,
    reporter: Reporter | None = None,
) -> list[Evaluation]:
    """Attack every checkpoint and write its files under ``out`` (directly for one checkpoint, else one
    sub-folder per checkpoint), then ``out/curve.png`` and ``.svg``."""
    if norm not in NORMS:
        raise ConfigError(f"norm: unknown norm {norm!r}; use one of {', '.join(NORMS)}")
    if by not in ("model", "attack"):
        raise ValueError(f"by must be 'model' or 'attack', not {by!r}")
    host = host or get_host()
    reporter = reporter or Reporter()
    evaluations = []
    for path, (label, folder) in zip(paths, output_folders(paths, out)):
        target = load_target(path, data_dir=data_dir, limit=limit, device=device, host=host)
        reporter.info(f"{label}: {len(target.test)} test images of {target.info.name}, norm {norm}, on {device}")
        result = attack_set(
            target.model, target.test, attacks, norm, batch_size=batch_size or target.config.evaluation.batch_size,
            device=device, reporter=reporter,
        )
        summary = results.summarise(
            result, eps, checkpoint=str(path), label=label, dataset=target.info.name,
            device=str(device), lipcli_version=lipcli.__version__,
        )
        if current().main:  # every process holds the joined result; one writes it
            results.write_distances(folder / results.DISTANCES_FILE, result)
            results.write_summary(folder / results.SUMMARY_FILE, summary)
        evaluations.append(Evaluation(label, folder, result, summary))
    overall = None
    if by == "model":
        curves = [(e.label, e.result.minimum) for e in evaluations]
        title = f"error curves ({', '.join(attacks)})"
    else:
        only = evaluations[0]
        curves = [(a.name, a.distances) for a in only.result.attacks]
        if len(curves) > 1:
            overall = ("min over attacks", only.result.minimum)
        title = f"attacks on {only.label}"
    if current().main:
        results.plot_curves(out / results.CURVE_FILE, curves, norm, title, overall=overall)
    barrier()  # the files exist for every process once this returns
    return evaluations


"""``lipcli stats`` as an engine call: checkpoints in, ``stats.json`` and ``stats.csv`` per checkpoint out."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lipcli.attacks import NORMS
from lipcli.curves import default_eps
from lipcli.data.selection import EVERY, Selection
from lipcli.engine import Engine
from lipcli.layout import STATS_CSV, STATS_FILE
from lipcli.lipschitz.statistics import Statistics, model_statistics
from lipcli.models.each_checkpoint import Planned, for_each_checkpoint
from lipcli.models.targets import ModelSpec, load_targets, target_settings
from lipcli.result_files import write_per_image, write_summary
from lipcli.results_folder import Layout, provenance

LAYOUT = Layout(STATS_FILE, (STATS_CSV,))


@dataclass
class Measured:
    """One checkpoint's statistics: its label, the folder written, the summary (as in stats.json)."""

    label: str
    folder: Path
    summary: dict[str, Any]


def measure_checkpoints(
    paths: list[Path],
    engine: Engine,
    *,
    out: Path,
    eps: Mapping[str, list[tuple[str, float]]] | None = None,
    selection: Selection = EVERY,
    batch_size: int | None = None,
    data_dir: Path | None = None,
    spec: ModelSpec = ModelSpec(),
    overwrite: bool = False,
) -> list[Measured]:
    """Measure every checkpoint on its test images and write its files under ``out`` (directly for one
    checkpoint, else one sub-folder per checkpoint); a folder holding results of other settings is refused
    before any work unless ``overwrite``. ``eps``: the sizes per norm of the Lemma 2.2 table; a norm not
    given has the paper's (:func:`lipcli.curves.default_eps`)."""
    eps = {norm: (eps or {}).get(norm) or default_eps(norm) for norm in NORMS}
    planned = [
        Planned(label, folder, target, {**target_settings(target), "eps": {n: dict(p) for n, p in eps.items()}})
        for label, folder, target in load_targets(paths, out, engine, data_dir=data_dir, selection=selection,
                                                  spec=spec)
    ]

    def evaluate(plan: Planned) -> tuple[Statistics, Measured]:
        target = plan.target
        engine.reporter.info(f"{plan.label}: {len(target.test)} test images of {target.info.name}, on {engine.device}")
        statistics = model_statistics(
            target.model, target.test, target.info, eps=eps,
            batch_size=batch_size or target.config.evaluation.batch_size, device=engine.device,
            reporter=engine.reporter,
        )
        summary = {
            "settings": plan.settings, "checkpoint": str(target.path), "label": plan.label,
            "dataset": target.info.name, **selection.describe(),
            "data_dir": target.config.data.data_dir if data_dir is None else str(data_dir),
            **provenance(engine.device), **statistics.summary,
        }
        return statistics, Measured(plan.label, plan.folder, summary)

    def write(plan: Planned, measured: tuple[Statistics, Measured]) -> None:
        statistics, result = measured
        write_per_image(plan.folder / STATS_CSV, statistics.labels, statistics.predictions, statistics.per_image,
                        index=plan.target.test.positions)
        write_summary(plan.folder / STATS_FILE, result.summary)

    done = for_each_checkpoint(planned, LAYOUT, engine, evaluate=evaluate, write=write, overwrite=overwrite)
    return [result for _, result in done]

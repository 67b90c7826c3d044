"""``lipcli stats`` as an engine call: checkpoints in, ``stats.json`` and ``stats.csv`` per checkpoint out."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from lipcli.distributed import barrier, current
from lipcli.layout import STATS_CSV, STATS_FILE
from lipcli.lipschitz.statistics import model_statistics
from lipcli.models.targets import load_targets, target_settings
from lipcli.plugin_host import PluginHost, get_host
from lipcli.reporting import Reporter
from lipcli.result_files import write_per_image, write_summary
from lipcli.results_folder import Layout, claim, provenance

LAYOUT = Layout(STATS_FILE, (STATS_CSV,))


@dataclass
class Measured:
    """One checkpoint's statistics: its label, the folder written, the summary (as in stats.json)."""

    label: str
    folder: Path
    summary: dict[str, Any]


def measure_checkpoints(
    paths: list[Path],
    *,
    out: Path,
    eps: dict[str, list[tuple[str, float]]],
    limit: int | None = None,
    batch_size: int | None = None,
    data_dir: Path | None = None,
    device: torch.device,
    host: PluginHost | None = None,
    reporter: Reporter | None = None,
    overwrite: bool = False,
) -> list[Measured]:
    """Measure every checkpoint on its test images and write its files under ``out`` (directly for one
    checkpoint, else one sub-folder per checkpoint); a folder holding results of other settings is refused
    before any work unless ``overwrite``."""
    host = host or get_host()
    reporter = reporter or Reporter()
    planned = load_targets(paths, out, data_dir=data_dir, limit=limit, device=device, host=host)
    settings = {folder: {**target_settings(target), "eps": {norm: dict(points) for norm, points in eps.items()}}
                for _, folder, target in planned}
    measured = []
    with claim(settings, LAYOUT, overwrite=overwrite):
        for label, folder, target in planned:
            reporter.info(f"{label}: {len(target.test)} test images of {target.info.name}, on {device}")
            statistics = model_statistics(
                target.model, target.test, target.info, eps=eps,
                batch_size=batch_size or target.config.evaluation.batch_size, device=device, reporter=reporter,
            )
            summary = {
                "settings": settings[folder], "checkpoint": str(target.path), "label": label,
                "dataset": target.info.name, "limit": limit,
                "data_dir": target.config.data.data_dir if data_dir is None else str(data_dir),
                **provenance(device), **statistics.summary,
            }
            if current().main:  # every process holds the joined statistics; one writes them
                write_per_image(folder / STATS_CSV, statistics.labels, statistics.predictions, statistics.per_image)
                write_summary(folder / STATS_FILE, summary)
            measured.append(Measured(label, folder, summary))
        barrier()
    return measured

"""``lipcli stats`` as an engine call: checkpoints in, ``stats.json`` and ``stats.csv`` per checkpoint out."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

import lipcli
from lipcli.distributed import barrier, current
from lipcli.evaluation.results import write_per_image, write_summary
from lipcli.evaluation.targets import load_target, output_folders
from lipcli.lipschitz.statistics import model_statistics
from lipcli.plugins import PluginHost, get_host
from lipcli.progress import Reporter

STATS_FILE = "stats.json"
STATS_CSV = "stats.csv"


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
) -> list[Measured]:
    """Measure every checkpoint on its test images and write its files under ``out`` (directly for one
    checkpoint, else one sub-folder per checkpoint)."""
    host = host or get_host()
    reporter = reporter or Reporter()
    measured = []
    for path, (label, folder) in zip(paths, output_folders(paths, out)):
        target = load_target(path, data_dir=data_dir, limit=limit, device=device, host=host)
        reporter.info(f"{label}: {len(target.test)} test images of {target.info.name}, on {device}")
        statistics = model_statistics(
            target.model, target.test, target.info, eps=eps,
            batch_size=batch_size or target.config.evaluation.batch_size, device=device, reporter=reporter,
        )
        summary = {
            "checkpoint": str(path), "label": label, "dataset": target.info.name, "device": str(device),
            "lipcli_version": lipcli.__version__, **statistics.summary,
        }
        if current().main:  # every process holds the joined statistics; one writes them
            write_per_image(folder / STATS_CSV, statistics.labels, statistics.predictions, statistics.per_image)
            write_summary(folder / STATS_FILE, summary)
        measured.append(Measured(label, folder, summary))
    barrier()
    return measured

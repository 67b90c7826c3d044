"""Run folders: named from the settings and the time, never silently overwritten."""

from __future__ import annotations

import re
import time
from pathlib import Path

from lipcli.config.schema import ExperimentConfig
from lipcli.config.toml_writer import dumps
from lipcli.errors import LipcliError

CONFIG_FILE = "config.toml"
METRICS_FILE = "metrics.jsonl"
LAST = "last.pt"
BEST = "best.pt"


def default_run_name(config: ExperimentConfig, now: float | None = None) -> str:
    """``<dataset>-<arch>-<defence>-<YYYYmmdd-HHMMSS>``, safe as a folder name."""
    defence = config.defence.label
    if config.model.tanh_head and "tanh" not in defence:
        defence += "+tanh"
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(now))
    name = f"{config.data.dataset}-{config.model.arch}-{defence}-{stamp}"
    return re.sub(r"[^A-Za-z0-9+._-]+", "_", name)


def prepare_run_dir(config: ExperimentConfig) -> Path:
    """Create the run folder and write the resolved configuration into it.

    A folder that already holds a checkpoint is refused: a finished or interrupted run is never overwritten.
    """
    if config.output.dir:
        run_dir = Path(config.output.dir)
    else:
        run_dir = Path(config.output.root) / default_run_name(config)
        suffix = 1
        while run_dir.exists():
            suffix += 1
            run_dir = Path(config.output.root) / f"{default_run_name(config)}-{suffix}"
    for name in (LAST, BEST):
        if (run_dir / name).exists():
            raise LipcliError(f"{run_dir} already holds a run ({name}); choose another --out")
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / CONFIG_FILE).write_text(dumps(config.to_dict()))
        (run_dir / METRICS_FILE).write_text("")
    except OSError as exc:
        raise LipcliError(f"cannot write run folder {run_dir}: {exc.strerror}") from None
    return run_dir

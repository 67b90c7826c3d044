"""Run folders: named from the settings and the time, never silently overwritten."""

from __future__ import annotations

import re
import time
from pathlib import Path

from lipcli.config.schema import ExperimentConfig
from lipcli.config.toml_writer import dumps
from lipcli.errors import LipcliError
from lipcli.files import write_text
from lipcli.layout import BEST, CONFIG_FILE, ERROR_FILE, LAST, LOCK_FILE, METRICS_FILE


def default_run_name(config: ExperimentConfig, now: float | None = None) -> str:
    """``<dataset>-<arch>-<defence>-<YYYYmmdd-HHMMSS>``, safe as a folder name."""
    defence = config.defence_label
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(now))
    name = f"{config.data.dataset}-{config.model.arch}-{defence}-{stamp}"
    return re.sub(r"[^A-Za-z0-9+._-]+", "_", name)


CONFIG_HEADER = "# lipcli run configuration: written by lipcli train, read by lipcli train --resume\n"
"""The first line of a run's config.toml: what tells a lipcli run folder from a folder of the user's."""


def run_folder(config: ExperimentConfig) -> Path:
    """The run folder ``config`` asks for: ``output.dir``, else a new name under ``output.root``."""
    if config.output.dir is not None:
        if not config.output.dir.strip():
            raise LipcliError("output.dir: an empty path; name a folder (--out)")
        return Path(config.output.dir)
    run_dir = Path(config.output.root) / default_run_name(config)
    suffix = 1
    while run_dir.exists():
        suffix += 1
        run_dir = Path(config.output.root) / f"{default_run_name(config)}-{suffix}"
    return run_dir


def prepare_run_dir(config: ExperimentConfig, run_dir: Path) -> Path:
    """Create the run folder and write the resolved configuration into it.

    A folder that already holds a checkpoint is refused: a finished or interrupted run is never overwritten;
    so is any other non-empty folder that is not a lipcli run (its files are the user's). A lipcli run stopped
    before its first epoch ended (no checkpoint) starts again.
    """
    for name in (LAST, BEST):
        if (run_dir / name).exists():
            raise LipcliError(f"{run_dir} already holds a run ({name}); choose another --out")
    if run_dir.exists() and not run_dir.is_dir():
        raise LipcliError(f"{run_dir} is a file, not a folder; choose another --out")
    if run_dir.is_dir() and any(p.name not in (LOCK_FILE, ERROR_FILE) for p in run_dir.iterdir()) \
            and not is_run_folder(run_dir):
        raise LipcliError(f"{run_dir} is not empty and is not a lipcli run folder; choose a new or empty --out")
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        write_text(run_dir / CONFIG_FILE, CONFIG_HEADER + dumps(config.to_dict()))
        write_text(run_dir / METRICS_FILE, "")
    except OSError as exc:
        raise LipcliError(f"cannot write run folder {run_dir}: {exc.strerror}") from None
    return run_dir


def is_run_folder(folder: Path) -> bool:
    """Whether ``folder`` holds a lipcli run: a config.toml lipcli wrote (its header line; an older lipcli wrote
    none, but always every section, beside an empty metrics.jsonl until the first epoch ended)."""
    try:
        text = (folder / CONFIG_FILE).read_text(encoding="utf-8")
        metrics = (folder / METRICS_FILE).stat().st_size if (folder / METRICS_FILE).exists() else None
    except (OSError, UnicodeDecodeError):
        return False
    if text.startswith(CONFIG_HEADER):
        return True
    sections = {line.strip() for line in text.splitlines() if line.startswith("[")}
    return metrics == 0 and {"[data]", "[model]", "[defence]", "[training]", "[evaluation]", "[output]"} <= sections

"""Every file and folder name lipcli writes, in one place: run folders, evaluation folders, grids.

Training, evaluation, the Lipschitz commands, grids and reports all read what the others write, so each name is
defined once here and imported, never spelled again.
"""

from __future__ import annotations

from pathlib import Path

# A training run's folder.
CONFIG_FILE = "config.toml"
METRICS_FILE = "metrics.jsonl"
LAST = "last.pt"
BEST = "best.pt"
ERROR_FILE = "error.txt"
"""A grid's record of a run that failed (its traceback)."""
TRAINED = "trained.json"
"""A grid's record of the epochs and steps a run was trained for."""

# An evaluation's folder (``lipcli curve``, ``attack``, ``robust``, ``stats``, ``data-lipschitz``).
DISTANCES_FILE = "distances.csv"
SUMMARY_FILE = "summary.json"
ADVERSARIALS_FILE = "adversarials.pt"
CURVE_FILE = "curve"
"""The curve's figure, without its extension (``.png`` and ``.svg`` are written)."""
FIGURE_FILE = "figure.json"
"""Which checkpoints a figure of several shows."""
ROBUST_FILE = "robust.csv"
STATS_FILE = "stats.json"
STATS_CSV = "stats.csv"
DATA_LIPSCHITZ_FILE = "data-lipschitz.json"
LOCK_FILE = ".lipcli.lock"
PARTIAL = ".partial"
"""Per-(attack, batch) results of an unfinished evaluation, taken back by an identical rerun."""

# Evaluations inside a run folder (a grid's stages; ``lipcli curve RUN/best.pt`` writes there too).
STATS_FOLDER = "stats"
PLAN_FILE = "plan.json"
"""Beside each grid evaluation result: the ``[evaluate]`` settings it was measured with."""


CURVE_PREFIX = "curve-"
ROBUST_PREFIX = "robust-"
"""The folders of curves and robust accuracies are these prefixes and the norm; a grid's stages are named so."""


def curve_folder(norm: str) -> str:
    """The folder of a ``lipcli curve`` in ``norm``: ``curve-l2``, ``curve-linf``."""
    return CURVE_PREFIX + norm


def robust_folder(norm: str) -> str:
    """The folder of a ``lipcli robust`` in ``norm``."""
    return ROBUST_PREFIX + norm


def data_lipschitz_folder(dataset: str) -> str:
    """The folder of a ``lipcli data-lipschitz`` of ``dataset``."""
    return f"data-lipschitz-{dataset}"


def attacks_folder(norm: str) -> str:
    """The folder of a ``lipcli attack`` comparison in ``norm``."""
    return f"attacks-{norm}"


def default_out(checkpoints: list[Path], folder: str) -> Path:
    """Where an evaluation of ``checkpoints`` writes without ``--out``: ``folder`` beside a single checkpoint,
    else ``folder`` in the working directory."""
    return checkpoints[0].parent / folder if len(checkpoints) == 1 else Path(folder)

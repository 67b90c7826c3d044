"""What an evaluation command attacks: a checkpoint's model and the test images of the data set it was
trained on, read the same way training read them (``--data-dir`` points at local files)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from lipcli.config import ExperimentConfig
from lipcli.data.load import load_data
from lipcli.data.types import DatasetInfo, ImageSet
from lipcli.engine import Engine
from lipcli.errors import DataError
from lipcli.files import sha256
from lipcli.layout import CONFIG_FILE
from lipcli.models.loading import restore


@dataclass
class Target:
    """A model to evaluate: where it came from, a short label for tables and plots, and its test images."""

    path: Path
    label: str
    model: nn.Module
    config: ExperimentConfig
    info: DatasetInfo
    test: ImageSet


def load_target(path: Path, engine: Engine, *, data_dir: Path | None, limit: int | None) -> Target:
    """The checkpoint's model on the engine's device (eval mode) and the first ``limit`` test images (all if
    None)."""
    model, config, info = restore(path, engine.device, engine.plugins)
    data_config = config.data if data_dir is None else dataclasses.replace(config.data, data_dir=str(data_dir))
    splits = load_data(data_config, engine.plugins)
    found, trained = splits.info, info
    if (found.input_shape, found.num_classes) != (trained.input_shape, trained.num_classes):
        raise DataError(
            f"{path}: the data read{f' from {data_dir}' if data_dir else ''} has images of shape "
            f"{list(found.input_shape)} in {found.num_classes} classes; the model was trained on "
            f"{list(trained.input_shape)} in {trained.num_classes} classes"
        )
    test = splits.test.subset(limit)
    return Target(Path(path), run_label(Path(path)), model, config, info, test)


def load_targets(
    paths: list[Path], out: Path, engine: Engine, *, data_dir: Path | None, limit: int | None
) -> list[tuple[str, Path, Target]]:
    """(label, output folder, target) per checkpoint, all loaded before any work, so that every folder can be
    checked (:func:`lipcli.results_folder.claim`) before the first attack runs."""
    return [(label, folder, load_target(path, engine, data_dir=data_dir, limit=limit))
            for path, (label, folder) in zip(paths, output_folders(paths, out))]


def target_settings(target: Target) -> dict[str, Any]:
    """What any result measured on ``target`` depends on: the checkpoint's bytes and the exact images."""
    return {
        "checkpoint_sha256": sha256(target.path), "dataset": target.info.name, "images": len(target.test),
        "images_sha256": target.test.sha256(),
    }


def run_label(path: Path) -> str:
    """The run folder's name for a checkpoint inside a run folder (``runs/x/best.pt`` -> ``x``), else its stem."""
    if (path.parent / CONFIG_FILE).is_file() and path.parent.name:
        return path.parent.name
    return path.stem


def output_folders(paths: list[Path], out: Path) -> list[tuple[str, Path]]:
    """(label, folder) per checkpoint: ``out`` itself for one checkpoint, else ``out/<label>`` with distinct
    labels, so no checkpoint's files overwrite another's."""
    labels = unique_labels([run_label(Path(path)) for path in paths])
    return [(label, out if len(paths) == 1 else out / label) for label in labels]


def unique_labels(labels: list[str]) -> list[str]:
    """``labels`` with repeats numbered (``a``, ``a-2``, ``a-3``), so every file and curve name is distinct,
    also where a label itself looks numbered (``a``, ``a-2``, ``a`` gives ``a``, ``a-2``, ``a-3``)."""
    issued: set[str] = set()
    unique = []
    for label in labels:
        candidate, number = label, 1
        while candidate in issued:
            number += 1
            candidate = f"{label}-{number}"
        issued.add(candidate)
        unique.append(candidate)
    return unique

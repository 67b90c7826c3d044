"""What an evaluation command attacks: a checkpoint's model and the test images of the data set it was
trained on, read the same way training read them (``--data-dir`` points at local files)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from lipcli.config import ExperimentConfig
from lipcli.data.load import load_data
from lipcli.data.types import DatasetInfo, ImageSet
from lipcli.models.loading import restore
from lipcli.plugins import PluginHost
from lipcli.training.run_dir import CONFIG_FILE


@dataclass
class Target:
    """A model to evaluate: where it came from, a short label for tables and plots, and its test images."""

    path: Path
    label: str
    model: nn.Module
    config: ExperimentConfig
    info: DatasetInfo
    test: ImageSet


def load_target(
    path: Path, *, data_dir: Path | None, limit: int | None, device: torch.device, host: PluginHost | None = None
) -> Target:
    """The checkpoint's model on ``device`` (eval mode) and the first ``limit`` test images (all if None)."""
    model, config, info = restore(path, device, host)
    data_config = config.data if data_dir is None else dataclasses.replace(config.data, data_dir=str(data_dir))
    test = load_data(data_config, host).test.subset(limit)
    return Target(Path(path), run_label(Path(path)), model, config, info, test)


def run_label(path: Path) -> str:
    """The run folder's name for a checkpoint inside a run folder (``runs/x/best.pt`` -> ``x``), else its stem."""
    if (path.parent / CONFIG_FILE).is_file() and path.parent.name:
        return path.parent.name
    return path.stem


def unique_labels(labels: list[str]) -> list[str]:
    """``labels`` with repeats numbered (``a``, ``a-2``), so every file and curve name is distinct."""
    seen: dict[str, int] = {}
    unique = []
    for label in labels:
        seen[label] = seen.get(label, 0) + 1
        unique.append(label if seen[label] == 1 else f"{label}-{seen[label]}")
    return unique

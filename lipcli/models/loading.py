"""``lipcli.load_model``: a trained model back from its checkpoint, ready for evaluation."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from lipcli.checkpoint import load_checkpoint
from lipcli.config import ExperimentConfig, build_stored
from lipcli.data.types import DatasetInfo
from lipcli.errors import CheckpointError
from lipcli.models.build import build_model
from lipcli.plugins import PluginHost


def load_model(path: str | Path, device: str | torch.device = "cpu", host: PluginHost | None = None) -> nn.Module:
    """The model saved in ``path`` (tanh head included), in eval mode, taking inputs in [0, 1].

    The architecture is rebuilt from the configuration and data metadata stored in the checkpoint, so the
    plugin that provided it must be installed.
    """
    return restore(path, device, host)[0]


def restore(
    path: str | Path, device: str | torch.device = "cpu", host: PluginHost | None = None
) -> tuple[nn.Module, ExperimentConfig, DatasetInfo]:
    """(model in eval mode, the run's configuration, its data set's metadata) from a checkpoint."""
    payload = load_checkpoint(Path(path), map_location=device)
    try:
        config = build_stored(payload["config"])
        info = DatasetInfo.from_dict(payload["dataset"])
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: checkpoint metadata is incomplete ({exc})") from None
    model = build_model(config, info, host)
    try:
        model.load_state_dict(payload["model"])
    except (KeyError, RuntimeError) as exc:
        first = str(exc).strip().splitlines()[0]
        raise CheckpointError(f"{path}: weights do not fit architecture {config.model.arch!r}: {first}") from None
    return model.to(device).eval(), config, info

"""A trained model back from its checkpoint, ready for evaluation (``lipcli.load_model`` and every
evaluation command)."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from lipcli.checkpoint import load_checkpoint
from lipcli.config import ExperimentConfig, build_stored
from lipcli.data.types import DatasetInfo
from lipcli.errors import CheckpointError
from lipcli.models.build import build_model
from lipcli.plugin_host import PluginHost


def restore(
    path: str | Path, device: str | torch.device, plugins: PluginHost
) -> tuple[nn.Module, ExperimentConfig, DatasetInfo]:
    """(model in eval mode, the run's configuration, its data set's metadata) from a checkpoint."""
    payload = load_checkpoint(Path(path), map_location=device)
    try:
        config = build_stored(payload["config"])
        info = DatasetInfo.from_dict(payload["dataset"])
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: checkpoint metadata is incomplete ({exc})") from None
    model = build_model(config, info, plugins)
    weights = payload.get("model")
    if not isinstance(weights, dict):
        raise CheckpointError(f"{path}: checkpoint holds no model weights")
    mismatch = state_dict_mismatch(model, weights)
    if mismatch:
        raise CheckpointError(f"{path}: weights do not fit architecture {config.model.arch!r}: {mismatch}")
    model.load_state_dict(weights)
    return model.to(device).eval(), config, info


def state_dict_mismatch(model: nn.Module, weights: dict[str, object], shown: int = 3) -> str | None:
    """The first differences between ``model``'s parameters and buffers and ``weights``, by key and shape."""
    expected = model.state_dict()
    problems = []
    for key, tensor in expected.items():
        given = weights.get(key)
        if given is None:
            problems.append(f"missing {key} {_shape(tensor)}")
        elif not isinstance(given, torch.Tensor) or given.shape != tensor.shape:
            problems.append(f"{key} is {_shape(given)} in the file, {_shape(tensor)} in the model")
    problems += [f"unexpected {key} {_shape(weights[key])}" for key in weights if key not in expected]
    if not problems:
        return None
    more = f" (and {len(problems) - shown} more)" if len(problems) > shown else ""
    return "; ".join(problems[:shown]) + more


def _shape(value: object) -> str:
    return f"[{', '.join(map(str, value.shape))}]" if isinstance(value, torch.Tensor) else type(value).__name__

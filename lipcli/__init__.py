"""lipcli: train and measure adversarially robust image classifiers (Lipschitz regularisation of the loss).

Plugins import from :mod:`lipcli.api`, the one public namespace for them (``hookimpl`` is also kept here,
where plugins written before it found it). :func:`train` and :func:`load_model` are the Python API. Importing
this package is cheap: torch is imported only by the engine modules that need it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pluggy

from lipcli.version import VERSION

if TYPE_CHECKING:
    from pathlib import Path

    import torch
    from torch import nn

    from lipcli.config import ExperimentConfig
    from lipcli.engine import Engine
    from lipcli.plugin_host import PluginHost
    from lipcli.training.trainer import TrainResult

hookimpl = pluggy.HookimplMarker("lipcli")
"""Marks a plugin's implementation of a hook in :mod:`lipcli.hookspecs`."""

__version__ = VERSION

__all__ = ["hookimpl", "__version__", "load_model", "train"]


def train(config: ExperimentConfig, *, engine: Engine | None = None) -> TrainResult:
    """Train ``config`` into a new run folder (:func:`lipcli.training.trainer.train`); ``engine`` defaults to
    the installed plugins with silent progress."""
    from lipcli.engine import make_engine
    from lipcli.training.trainer import train as run

    return run(config, engine or make_engine())


def load_model(path: str | Path, device: str | torch.device = "cpu", plugins: PluginHost | None = None) -> nn.Module:
    """The model saved in ``path`` (tanh head included), in eval mode, taking inputs in [0, 1].

    The architecture is rebuilt from the configuration and data metadata stored in the checkpoint, so the
    plugin that provided it must be installed (``plugins``: default, the installed ones).
    """
    from lipcli.models.loading import restore
    from lipcli.plugin_host import get_host

    return restore(path, device, plugins or get_host())[0]

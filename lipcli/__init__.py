"""lipcli: train and measure adversarially robust image classifiers (Lipschitz regularisation of the loss).

Plugins import from :mod:`lipcli.api`, the one public namespace for them (``hookimpl`` is also kept here,
where plugins written before it found it). Importing this package is cheap: torch is imported only by the
engine modules that need it.
"""

from __future__ import annotations

import pluggy

from lipcli.version import VERSION

hookimpl = pluggy.HookimplMarker("lipcli")
"""Marks a plugin's implementation of a hook in :mod:`lipcli.hookspecs`."""

__version__ = VERSION

__all__ = ["hookimpl", "__version__", "load_model", "train"]


def __getattr__(name: str) -> object:
    """The engine's entry points, imported on first use so that ``import lipcli`` stays light."""
    if name == "load_model":
        from lipcli.models.loading import load_model

        return load_model
    if name == "train":
        from lipcli.training.trainer import train

        return train
    raise AttributeError(f"module 'lipcli' has no attribute {name!r}")

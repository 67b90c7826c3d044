"""Shared fixtures: one plugin host with the installed first-party plugins, tiny experiment configs."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import pytest

from lipcli.config import ExperimentConfig, resolve
from lipcli.plugins import PluginHost


@pytest.fixture(scope="session")
def host() -> PluginHost:
    """The installed plugins, independent of the developer's LIPCLI_* environment variables."""
    return PluginHost(environ={})


def _tiny_config(tmp_path: Path, *overrides: str) -> ExperimentConfig:
    """A seconds-long run on synthetic 8x8 data, written under ``tmp_path``."""
    base = [
        "data.dataset=synthetic",
        "data.options={train_size=256, test_size=128, channels=1, size=8, num_classes=4, noise=0.1}",
        "model.arch=small-cnn", "model.options={width=8}",
        "training.epochs=2", "training.batch_size=32", "training.lr=0.05", "training.device=cpu",
        f"output.dir={str(tmp_path / 'run')!r}",
    ]
    return resolve(None, {}, [*base, *overrides])


@pytest.fixture
def tiny_config() -> Callable[..., ExperimentConfig]:
    """``tiny_config(tmp_path, "section.key=value", ...)``: a seconds-long synthetic run with overrides."""
    return _tiny_config

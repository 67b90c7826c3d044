"""Shared fixtures: one plugin host with the installed first-party plugins, tiny experiment configs, small
trained checkpoints and a CLI runner."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import pytest
from typer.testing import CliRunner

from lipcli.cli.app import build_app
from lipcli.config import ExperimentConfig, resolve
from lipcli.engine import Engine, make_engine
from lipcli.plugin_host import PluginHost


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests marked ``cuda`` skip, with the reason, where there is no CUDA device."""
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device (benchmarks/gpu-check.sh runs these on a GPU machine)")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def host() -> PluginHost:
    """The installed plugins, independent of the developer's LIPCLI_* environment variables."""
    return PluginHost(environ={})


@pytest.fixture(scope="session")
def engine(host: PluginHost) -> Engine:
    """The engine context of the tests: those plugins, on the CPU, silent."""
    return make_engine("cpu", plugins=host)


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


def _train_digits(folder: Path, *flags: str) -> Path:
    app = build_app(PluginHost(environ={}))
    result = CliRunner().invoke(app, [
        "train", "--dataset", "digits", "--epochs", "2", "--out", str(folder), "--device", "cpu", "--quiet",
        "--set", "model.options={width=8}", *flags,
    ])
    assert result.exit_code == 0, result.output
    return folder / "best.pt"


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small CNN trained for two epochs on digits (8x8, 10 classes), in a run folder named digits-run."""
    return _train_digits(tmp_path_factory.mktemp("curve") / "digits-run")


@pytest.fixture(scope="session")
def tanh_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same with the tanh logit head (BatchNorm over the logits and a learnt scale)."""
    return _train_digits(tmp_path_factory.mktemp("tanh") / "digits-tanh", "--tanh-head")


@pytest.fixture
def run(host: PluginHost) -> Callable[..., Any]:
    """``run(*args)``: invoke the CLI in-process; arguments are turned into strings."""
    app = build_app(host)
    return lambda *args: CliRunner().invoke(app, [str(a) for a in args])

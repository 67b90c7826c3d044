"""Plain (J0) training: it learns, writes a complete run folder, is reproducible and stops safely."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Callable

import pytest
import torch
from torch import nn

from lipcli import hookimpl
from lipcli.checkpoint import load_checkpoint
from lipcli.config import build
from lipcli.defence import Perturbation, StepLoss, plain_loss
from lipcli.errors import LipcliError
from lipcli.layout import LOCK_FILE as LOCK
from lipcli.plugin_host import PluginHost
from lipcli.training.optim import build_optimizer
from lipcli.training.trainer import TrainingDiverged, train
from lipcli.engine import Engine, make_engine

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib


def test_training_learns_and_writes_the_run_folder(tmp_path: Path, engine: Engine, tiny_config: Callable[..., Any]) -> None:
    cfg = tiny_config(tmp_path, "training.epochs=4")
    result = train(cfg, engine)
    run = result.run_dir
    assert sorted(p.name for p in run.iterdir() if p.name != LOCK) == ["best.pt", "config.toml", "last.pt", "metrics.jsonl"]
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4]
    assert rows[-1]["test_error"] < 0.1 < rows[0]["loss"]  # synthetic prototypes are easy to learn
    assert result.best_val_error == min(r["val_error"] for r in rows)  # chosen on held-out images
    assert load_checkpoint(run / "best.pt")["metrics"]["val_error"] == result.best_val_error
    assert build(tomllib.loads((run / "config.toml").read_text())) == cfg
    last = load_checkpoint(run / "last.pt")
    assert last["epoch"] == 4 and last["step"] == rows[-1]["step"] == 4 * 8
    assert last["dataset"]["num_classes"] == 4 and last["config"] == cfg.to_dict()


def test_same_seed_gives_the_same_weights(tmp_path: Path, engine: Engine, tiny_config: Callable[..., Any]) -> None:
    a = train(tiny_config(tmp_path / "a", "data.crop_padding=1", "data.flip=true", "data.cutout=2"), engine)
    b = train(tiny_config(tmp_path / "b", "data.crop_padding=1", "data.flip=true", "data.cutout=2"), engine)
    wa, wb = load_checkpoint(a.run_dir / "last.pt")["model"], load_checkpoint(b.run_dir / "last.pt")["model"]
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    c = train(tiny_config(tmp_path / "c", "training.seed=1"), engine)
    wc = load_checkpoint(c.run_dir / "last.pt")["model"]
    assert not all(torch.equal(wa[k], wc[k]) for k in wa)


def test_max_steps_and_train_limit(tmp_path: Path, engine: Engine, tiny_config: Callable[..., Any]) -> None:
    result = train(tiny_config(tmp_path, "training.max_steps=3", "data.train_limit=64"), engine)
    # 64 images, 6 held out: 2 batches in epoch 1, 1 step in epoch 2
    assert result.steps == 3 and len(result.history) == 2
    assert load_checkpoint(result.run_dir / "last.pt")["step"] == 3


@pytest.mark.parametrize("arch,options", [("allcnn", "{width=8}"), ("resnet34", "{}"), ("resnext34", "{width=8}")])
def test_paper_architectures_train_on_32x32_synthetic(
    tmp_path: Path, engine: Engine, tiny_config: Callable[..., Any], arch: str, options: str
) -> None:
    cfg = tiny_config(
        tmp_path, f"model.arch={arch}", f"model.options={options}", "training.max_steps=2", "training.batch_size=8",
        "data.options={train_size=16, test_size=8, channels=3, size=32, num_classes=10}", "model.tanh_head=true",
        "data.crop_padding=4", "data.flip=true", "data.cutout=16",
    )
    result = train(cfg, engine)
    assert result.steps == 2
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in result.history)
    assert "head.t" in load_checkpoint(result.run_dir / "last.pt")["model"]


def test_weight_decay_applies_to_weights_only() -> None:
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.Flatten(), nn.Linear(2, 3))
    optimizer = build_optimizer(model, build({"training": {"weight_decay": 5e-4}}).training)
    decayed = {id(p) for g in optimizer.param_groups if g["weight_decay"] > 0 for p in g["params"]}
    assert decayed == {id(model[0].weight), id(model[3].weight)}
    # the explicit penalty wd * ||W||^2 has gradient 2 * wd * W
    assert {g["weight_decay"] for g in optimizer.param_groups} == {1e-3, 0.0}


class _ExplodingDefence:
    """Returns a NaN loss from the eleventh step on."""

    def __init__(self) -> None:
        self.calls = 0

    def training_loss(
        self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor, perturbation: Perturbation | None
    ) -> StepLoss:
        self.calls += 1
        out = plain_loss(model, images, labels)
        if self.calls >= 11:
            out.total = out.total * float("nan")
        return out


class _ExplodingPlugin:
    @hookimpl
    def register_defences(self, register):  # type: ignore[no-untyped-def]
        register("explode", _ExplodingDefence, "test defence whose loss becomes NaN")


def test_nan_loss_stops_with_the_step_and_keeps_the_last_good_checkpoint(
    tmp_path: Path, tiny_config: Callable[..., Any]
) -> None:
    host = PluginHost(environ={})
    host.register(_ExplodingPlugin(), "exploding")
    cfg = tiny_config(tmp_path, "defence.name=explode")  # 8 steps per epoch: step 11 is in epoch 2
    with pytest.raises(TrainingDiverged, match="step 11 .epoch 2.") as info:
        train(cfg, make_engine("cpu", plugins=host))
    assert "last.pt" in str(info.value)
    assert load_checkpoint(tmp_path / "run" / "last.pt")["epoch"] == 1


def test_an_existing_run_is_never_overwritten(tmp_path: Path, engine: Engine, tiny_config: Callable[..., Any]) -> None:
    cfg = tiny_config(tmp_path, "training.max_steps=1")
    train(cfg, engine)
    before = (tmp_path / "run" / "last.pt").read_bytes()
    with pytest.raises(LipcliError, match="already holds a run"):
        train(cfg, engine)
    assert (tmp_path / "run" / "last.pt").read_bytes() == before


def test_load_model_reproduces_the_recorded_test_error(
    tmp_path: Path, host: PluginHost, engine: Engine, tiny_config: Callable[..., Any]
) -> None:
    import lipcli
    from lipcli.data.load import load_data
    from lipcli.training.clean_error import clean_error_and_loss

    cfg = tiny_config(tmp_path, "model.tanh_head=true")
    result = train(cfg, engine)
    model = lipcli.load_model(result.run_dir / "last.pt", plugins=host)
    assert not model.training
    error, loss = clean_error_and_loss(model, load_data(cfg.data, host).test, 64, torch.device("cpu"))
    assert error == result.final["test_error"] and loss == pytest.approx(result.final["test_loss"], rel=1e-6)


def test_a_last_batch_of_one_example_is_skipped_not_a_crash(
    tmp_path: Path, engine: Engine, tiny_config: Callable[..., Any]
) -> None:
    # 33 images at batch 32 leave one: BatchNorm (here the tanh head's) cannot train on a single value.
    result = train(tiny_config(tmp_path, "data.train_limit=33", "data.validation=0", "defence.name=j0+tanh"), engine)
    assert [r["step"] for r in result.history] == [1, 2]
    assert load_checkpoint(result.run_dir / "last.pt")["step"] == 2


def test_the_public_train_function_survives_engine_imports() -> None:
    """``lipcli.train`` is the function, also after the engine's modules are imported (a subpackage of the
    same name would replace it on the package as soon as anything imported it)."""
    import lipcli

    public = lipcli.train
    from lipcli.training import trainer

    assert trainer.train is not public and callable(public)
    assert lipcli.train is public and public.__module__ == "lipcli"  # after the engine's import, still the API

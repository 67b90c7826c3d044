"""Held-out validation images: a stratified, seeded split of the training set; best.pt is chosen on them,
never on the test set."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import pytest
import torch
from torch import nn

from lipcli import hookimpl
from lipcli.checkpoint import load_checkpoint
from lipcli.config import resolve
from lipcli.data.load import load_data
from lipcli.data.types import ImageSet
from lipcli.data.validation import (
    class_quotas,
    hold_out,
    split_indices,
    validation_size,
)
from lipcli.defence import Perturbation, StepLoss, plain_loss
from lipcli.errors import ConfigError
from lipcli.experiments.grid import load_grid
from lipcli.layout import LOCK_FILE as LOCK
from lipcli.plugin_host import PluginHost
from lipcli.training import trainer
from lipcli.engine import Engine, make_engine

# 20 labels: class 0 x 9, class 1 x 6, class 2 x 4, class 3 x 1
LABELS = torch.tensor([0, 1, 0, 2, 0, 1, 0, 3, 0, 1, 2, 0, 1, 0, 2, 0, 1, 0, 2, 1])


def test_class_quotas_are_largest_remainder_shares() -> None:
    # 7 of 20: exact shares 63/20 = 3.15, 42/20 = 2.1, 28/20 = 1.4, 7/20 = 0.35; floors 3, 2, 1, 0 (6), the one
    # left goes to the largest remainder, 0.4 (class 2)
    assert class_quotas(LABELS, 7).tolist() == [3, 2, 2, 0]
    # 10 of 20: 4.5, 3, 2, 0.5; floors 9, remainders tie at 0.5: the lower class (0) gets it
    assert class_quotas(LABELS, 10).tolist() == [5, 3, 2, 0]
    # 19 of 20: 8.55, 5.7, 3.8, 0.95: floors 8, 5, 3, 0 (16), three more to remainders 0.95, 0.8, 0.7
    # (classes 3, 2, 1), not to class 0's 0.55
    assert class_quotas(LABELS, 19).tolist() == [8, 6, 4, 1]
    assert class_quotas(LABELS, 1).tolist() == [1, 0, 0, 0]


@pytest.mark.parametrize("count", [1, 7, 10, 19])
def test_split_is_stratified_disjoint_and_seeded(count: int) -> None:
    train, held = split_indices(LABELS, count, seed=0)
    assert torch.bincount(LABELS[held], minlength=4).tolist() == class_quotas(LABELS, count).tolist()
    assert sorted(train.tolist() + held.tolist()) == list(range(20))  # disjoint, nothing lost
    assert held.tolist() == sorted(held.tolist()) and train.tolist() == sorted(train.tolist())
    again, held_again = split_indices(LABELS, count, seed=0)
    assert torch.equal(held_again, held) and torch.equal(again, train)


def test_another_seed_holds_out_other_images() -> None:
    draws = {tuple(split_indices(LABELS, 7, seed=s)[1].tolist()) for s in range(10)}
    assert len(draws) > 5


@pytest.mark.parametrize(("request_", "size", "count"), [
    (None, 1347, 135), (None, 50_000, 5000), (None, 60_000, 5000), (None, 256, 26), (None, 5, 1),
    (0.25, 1347, 337), (0.1, 8, 1), (0.01, 30, 1), (40, 1347, 40), (0, 1347, 0), (0.0, 1347, 0),
])
def test_validation_size(request_: Any, size: int, count: int) -> None:
    assert validation_size(request_, size) == count


@pytest.mark.parametrize(("value", "size"), [(1347, 1347), (2000, 1347), (None, 1)])
def test_holding_out_everything_is_an_error_naming_the_key(value: Any, size: int) -> None:
    with pytest.raises(ConfigError, match=r"^data\.validation: holding out"):
        validation_size(value, size)


@pytest.mark.parametrize(("value", "message"), [
    ("1.5", "data.validation: a count of images must be a whole number"),
    ("-1", "data.validation: must be at least 0"),
    ("-0.1", "data.validation: must be at least 0"),
    ("'ten'", "data.validation: expected an integer or a number"),
    ("true", "data.validation: expected an integer or a number"),
])
def test_bad_validation_values_name_the_key(value: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        resolve(None, {}, [f"data.validation={value}"])


def test_a_whole_count_stays_a_count() -> None:
    assert resolve(None, {}, ["data.validation=5000"]).data.validation == 5000
    assert resolve(None, {}, ["data.validation=300.0"]).data.validation == 300
    assert resolve(None, {}, ["data.validation=0.2"]).data.validation == 0.2
    assert resolve().data.validation is None and resolve().data.validation_seed == 0


def test_hold_out_follows_train_limit(host: PluginHost, tiny_config: Callable[..., Any], tmp_path: Path) -> None:
    """The split is drawn from the training images left after data.train_limit."""
    cfg = tiny_config(tmp_path, "data.train_limit=100", "data.validation=0.3")
    full = load_data(cfg.data, host).train.subset(100)
    train, held = hold_out(full, cfg.data.validation, cfg.data.validation_seed)
    assert held is not None and len(held) == 30 and len(train) == 70
    _, indices = split_indices(full.labels, 30, 0)
    assert torch.equal(held.images, full.images[indices]) and torch.equal(held.labels, full.labels[indices])
    unchanged, none = hold_out(full, 0, 0)
    assert none is None and unchanged is full


class _RecordingDefence:
    """Plain training that remembers every training batch's images."""

    batches: list[torch.Tensor] = []

    def training_loss(
        self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor, perturbation: Perturbation | None
    ) -> StepLoss:
        _RecordingDefence.batches.append(images.detach().clone())
        return plain_loss(model, images, labels)


class _RecordingPlugin:
    @hookimpl
    def register_defences(self, register):  # type: ignore[no-untyped-def]
        register("record", _RecordingDefence, "test defence recording its batches")


def test_no_held_out_image_is_ever_trained_on(tmp_path: Path, tiny_config: Callable[..., Any]) -> None:
    host = PluginHost(environ={})
    host.register(_RecordingPlugin(), "recording")
    _RecordingDefence.batches = []
    cfg = tiny_config(tmp_path, "defence.name=record", "data.validation=40", "data.validation_seed=3")
    trainer.train(cfg, make_engine("cpu", plugins=host))
    data = load_data(cfg.data, host).train
    train, held = split_indices(data.labels, 40, 3)
    seen = torch.cat(_RecordingDefence.batches).flatten(1)
    images = data.as_float(data.images).flatten(1)
    matches = (seen[:, None, :] == images[None, :, :]).all(-1)  # [trained image, data set image]
    assert bool((matches.sum(1) == 1).all())  # the synthetic images are distinct: each batch image is one of them
    trained_on = matches.any(0)
    assert not bool(trained_on[held].any())
    assert bool(trained_on[train].all())  # and every other image is trained on (two epochs of 216)
    assert len(seen) == 2 * 216


def _scripted_clean_error(val: list[float], test: list[float]) -> Callable[..., tuple[float, float]]:
    """clean_error_and_loss() returning the given errors, epoch after epoch, for the validation and the test images."""
    calls = {"validation": iter(val), "test": iter(test)}

    def clean_error_and_loss(model: nn.Module, data: ImageSet, batch_size: int, device: Any, reporter: Any = None,
                             description: str = "test") -> tuple[float, float]:
        error = next(calls[description])
        return error, 2 * error

    return clean_error_and_loss


def test_best_pt_is_the_epoch_of_lowest_validation_error_not_test_error(
    tmp_path: Path, engine: Engine, tiny_config: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    # validation picks epoch 2 (0.2; epoch 4 ties it and an earlier epoch is kept); the test set would pick 3
    monkeypatch.setattr(trainer, "clean_error_and_loss", _scripted_clean_error([0.5, 0.2, 0.3, 0.2], [0.1, 0.4, 0.05, 0.3]))
    result = trainer.train(tiny_config(tmp_path, "training.epochs=4"), engine)
    rows = [json.loads(line) for line in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["val_error"] for r in rows] == [0.5, 0.2, 0.3, 0.2] and [r["val_loss"] for r in rows] == [1.0, 0.4, 0.6, 0.4]
    assert [r["test_error"] for r in rows] == [0.1, 0.4, 0.05, 0.3]  # still recorded every epoch
    best = load_checkpoint(result.run_dir / "best.pt")
    assert best["epoch"] == 2 and best["best_val_error"] == 0.2 and result.best_val_error == 0.2
    assert load_checkpoint(result.run_dir / "last.pt")["best_val_error"] == 0.2


def test_without_held_out_images_there_is_no_best_pt(
    tmp_path: Path, engine: Engine, tiny_config: Callable[..., Any], run: Callable[..., Any]
) -> None:
    result = trainer.train(tiny_config(tmp_path, "data.validation=0"), engine)
    assert sorted(p.name for p in result.run_dir.iterdir() if p.name != LOCK) == ["config.toml", "last.pt", "metrics.jsonl"]
    rows = [json.loads(line) for line in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["val_error"] for r in rows] == [None, None] and all(r["test_error"] is not None for r in rows)
    assert result.best_val_error is None and result.steps == 2 * 8  # all 256 images: 8 steps per epoch
    summary = run("train", "-c", result.run_dir / "config.toml", "--out", tmp_path / "again", "--quiet", "--json")
    assert summary.exit_code == 0, summary.output
    assert json.loads(summary.stdout)["best_val_error"] is None


def test_a_grid_evaluating_best_needs_held_out_images(tmp_path: Path) -> None:
    grid = tmp_path / "g.toml"
    grid.write_text('[data]\ndataset = "digits"\n[grid]\n"data.validation" = [100, 0]\n[evaluate]\ncheckpoint = "best"\n')
    with pytest.raises(ConfigError, match=r"evaluate\.checkpoint: 'best' .* run digits-small-cnn-j0-validation0-s0 "
                                          r"holds none \(data\.validation = 0\)"):
        load_grid(grid, tmp_path / "runs")
    grid.write_text('recipe = "cifar10-paper"\n[evaluate]\ncheckpoint = "best"\n')
    with pytest.raises(ConfigError, match="evaluate.checkpoint"):
        load_grid(grid, tmp_path / "runs")
    grid.write_text('[data]\ndataset = "digits"\n[grid]\n"data.validation" = [100, 0.2]\n[evaluate]\ncheckpoint = "best"\n')
    assert [r.config.data.validation for r in load_grid(grid, tmp_path / "runs").runs] == [100, 0.2]


def test_the_paper_recipes_train_on_everything_with_the_multistep_schedule() -> None:
    for recipe in ("cifar10-paper", "cifar100-paper"):
        config = resolve(None, {"recipe": recipe})
        assert config.data.validation == 0 and config.training.lr_schedule == "multistep"
        assert config.training.warmup_epochs == 0

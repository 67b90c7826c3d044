"""Learning-rate schedules: multistep (bit-identical to PyTorch's MultiStepLR stepped per epoch), cosine and
one-cycle, each with an optional linear warm-up, set before every optimiser step; a function of the step only."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
import torch

from lipcli.config import build, resolve
from lipcli.config.schema import TrainingConfig
from lipcli.data.batches import epoch_order, num_batches, shard, steps_per_epoch
from lipcli.errors import ConfigError
from lipcli.training.optim import learning_rate
from lipcli.training.trainer import train
from lipcli.engine import Engine


def training(**values: Any) -> TrainingConfig:
    return build({"training": values}).training


def test_multistep_is_pytorchs_multisteplr_stepped_after_each_epoch() -> None:
    """The old trainer's schedule, value for value (==, not approx): repeated and zero milestones included."""
    tc = training(epochs=10, lr=0.1, lr_schedule="multistep", lr_milestones=[7, 2, 5, 5, 0], lr_gamma=0.2)
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=tc.lr)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=sorted(tc.lr_milestones), gamma=tc.lr_gamma)
    per_epoch = 3
    for epoch in range(tc.epochs):
        for i in range(per_epoch):
            assert learning_rate(epoch * per_epoch + i, per_epoch, tc) == optimizer.param_groups[0]["lr"], (epoch, i)
            optimizer.step()
        scheduler.step()
    # by hand: 0.1 * 0.2 (milestone 0), then * 0.2 after epoch 2, * 0.04 after epoch 5, * 0.2 after epoch 7
    assert learning_rate(0, 3, tc) == 0.1 * 0.2
    assert learning_rate(3 * 5, 3, tc) == pytest.approx(0.1 * 0.2**4, rel=1e-15)
    assert learning_rate(3 * 7 - 1, 3, tc) == pytest.approx(0.1 * 0.2**4, rel=1e-15)
    assert learning_rate(3 * 7, 3, tc) == pytest.approx(0.1 * 0.2**5, rel=1e-15)


def test_cosine_by_hand() -> None:
    """lr * (1 + cos(pi t / E)) / 2, t the epochs done before the step: 4 epochs of 5 steps at lr 0.2."""
    tc = training(epochs=4, lr=0.2, lr_schedule="cosine")
    half = math.sqrt(0.5)
    assert learning_rate(0, 5, tc) == 0.2
    assert learning_rate(5, 5, tc) == pytest.approx(0.1 * (1 + half), rel=1e-14)  # t = 1: cos(pi/4)
    assert learning_rate(10, 5, tc) == pytest.approx(0.1, rel=1e-14)  # half way
    assert learning_rate(12, 5, tc) == pytest.approx(0.1 * (1 + math.cos(math.pi * 2.4 / 4)), rel=1e-14)
    assert learning_rate(15, 5, tc) == pytest.approx(0.1 * (1 - half), rel=1e-14)
    assert learning_rate(19, 5, tc) == pytest.approx(0.1 * (1 + math.cos(math.pi * 3.8 / 4)), rel=1e-14)


def test_cyclic_is_wong_et_al_one_cycle() -> None:
    """Up from 0 to lr at 2E/5, down to 0 at E, at t = epoch + (i + 1) / steps as their code sets it."""
    tc = training(epochs=5, lr=0.1, lr_schedule="cyclic")
    assert learning_rate(0, 4, tc) == pytest.approx(0.1 * 0.25 / 2)  # t = 1/4, peak at t = 2
    assert learning_rate(7, 4, tc) == pytest.approx(0.1)  # t = 2
    assert learning_rate(11, 4, tc) == pytest.approx(0.1 * 2 / 3)  # t = 3: a third of the way down
    assert learning_rate(19, 4, tc) == 0.0  # the last step, t = 5
    # their code: lr_schedule(epoch + (i + 1) / len(loader)) = np.interp(t, [0, 2E/5, E], [0, lr_max, 0])
    for epoch in range(5):
        for i in range(4):
            reference = np.interp(epoch + (i + 1) / 4, [0, 2 * 5 / 5, 5], [0, 0.1, 0])
            assert learning_rate(epoch * 4 + i, 4, tc) == pytest.approx(reference, abs=1e-16)


def test_warmup_multiplies_any_schedule() -> None:
    """min(1, (step + 1) / warm-up steps): 1.5 epochs of 4 steps are 6 steps."""
    flat = training(epochs=4, lr=0.1, lr_schedule="multistep", warmup_epochs=1.5)
    assert [learning_rate(k, 4, flat) for k in (0, 2, 4, 5, 9)] == pytest.approx([0.1 / 6, 0.05, 0.1 * 5 / 6, 0.1, 0.1])
    cosine = training(epochs=4, lr=0.1, lr_schedule="cosine", warmup_epochs=1.5)
    t = 1 / 4  # step 1: 2/6 of the cosine rate at a quarter epoch
    assert learning_rate(1, 4, cosine) == pytest.approx(2 / 6 * 0.05 * (1 + math.cos(math.pi * t / 4)))
    assert learning_rate(8, 4, cosine) == learning_rate(8, 4, training(epochs=4, lr=0.1, lr_schedule="cosine"))


@pytest.mark.parametrize(("size", "batch", "world", "steps"), [
    (256, 32, 1, 8), (230, 32, 1, 8), (33, 32, 1, 1), (70, 32, 1, 3), (70, 32, 2, 2), (64, 32, 4, 2), (1212, 128, 2, 9),
])
def test_steps_per_epoch_counts_the_global_batches_an_epoch_takes(size: int, batch: int, world: int, steps: int) -> None:
    local = shard(epoch_order(size, 0, 1, batch), batch, world, 0)
    assert num_batches(len(local), batch // world) == steps_per_epoch(size, batch, world) == steps


def test_unknown_schedule_and_negative_warmup_name_their_key() -> None:
    with pytest.raises(ConfigError, match=r"training\.lr_schedule: unknown schedule 'cosin'\. Did you mean 'cosine'"):
        resolve(None, {}, ["training.lr_schedule=cosin"])
    with pytest.raises(ConfigError, match="training.warmup_epochs: must be at least 0"):
        resolve(None, {}, ["training.warmup_epochs=-1"])
    with pytest.raises(ConfigError, match="training.lr_milestones: epochs must be at least 0"):
        resolve(None, {}, ["training.lr_milestones=[-3]"])


def test_the_rate_of_every_step_and_the_metrics_lr_column(
    tmp_path: Path, engine: Engine, tiny_config: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A tiny one-cycle run with warm-up: every step's rate, in every parameter group, is the schedule's, and
    the lr column is the rate of each epoch's first step."""
    used: list[list[float]] = []
    real_step = torch.optim.SGD.step

    def recording_step(self: torch.optim.SGD, *args: Any, **kwargs: Any) -> Any:
        used.append([group["lr"] for group in self.param_groups])
        return real_step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.SGD, "step", recording_step)
    cfg = tiny_config(tmp_path, "training.lr_schedule=cyclic", "training.warmup_epochs=0.5", "training.lr=0.05")
    result = train(cfg, engine)
    # 256 images, 26 held out: 230 at batch 32 are 8 steps per epoch, 16 in all; the peak is at 0.8 epochs
    assert result.steps == 16 and len(used) == 16 and all(len(set(rates)) == 1 for rates in used)
    rates = [rates[0] for rates in used]
    assert rates == [learning_rate(k, 8, cfg.training) for k in range(16)]
    assert rates[0] == pytest.approx(0.05 * (1 / 8) / 0.8 * (1 / 4))  # t = 1/8 of the way up, warm-up 1/4
    assert rates[8] == pytest.approx(0.05 * (2 - 9 / 8) / 1.2)  # t = 9/8, past the warm-up, going down
    rows = [json.loads(line) for line in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["lr"] for r in rows] == [rates[0], rates[8]]


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed is not available")
def test_several_processes_follow_the_schedule_of_the_global_batches(tmp_path: Path) -> None:
    """Two processes: 230 images at a global batch of 32 make 7 global steps an epoch (a short last one is left
    out), and the one-cycle rate is that of 7 steps per epoch (one process would take 8)."""
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "lipcli", "train",
        "--dataset", "synthetic", "--set", "data.options={train_size=256, test_size=64, channels=1, size=8, num_classes=4}",
        "--set", "model.options={width=8}", "--epochs", "2", "--batch-size", "32", "--lr", "0.05", "--device", "cpu",
        "--set", "training.lr_schedule=cyclic", "--out", str(tmp_path / "run"), "--quiet",
    ]
    done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"},
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [7, 14]
    # peak at 0.8 epochs; first steps at t = 1/7 and t = 1 + 1/7
    assert [r["lr"] for r in rows] == pytest.approx([0.05 * (1 / 7) / 0.8, 0.05 * (2 - 8 / 7) / 1.2], rel=1e-12)

"""The training loop: plain PyTorch, driven by an :class:`ExperimentConfig`, reporting through a Reporter."""

from __future__ import annotations

import contextlib
import json
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import torch
from torch import nn

import lipcli
from lipcli.checkpoint import save_checkpoint
from lipcli.components import call_factory
from lipcli.config.schema import ExperimentConfig
from lipcli.data.augment import Augmentation
from lipcli.data.batches import epoch_order, iterate_batches, num_batches
from lipcli.data.load import load_data
from lipcli.data.types import DatasetInfo
from lipcli.device import select_device
from lipcli.errors import ConfigError, LipcliError
from lipcli.models.build import build_model
from lipcli.plugins import PluginHost, get_host
from lipcli.progress import Reporter
from lipcli.train import run_dir as runs
from lipcli.train.defence import Defence
from lipcli.train.evaluate import evaluate
from lipcli.train.optim import build_optimizer, build_scheduler


class TrainingDiverged(LipcliError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


@dataclass
class TrainResult:
    """Where a run was written and what it measured."""

    run_dir: Path
    history: list[dict[str, Any]] = field(default_factory=list)
    best_test_error: float = float("nan")
    steps: int = 0

    @property
    def final(self) -> dict[str, Any]:
        return self.history[-1] if self.history else {}


def build_defence(config: ExperimentConfig, host: PluginHost) -> Defence:
    """The configured defence from the defence registry."""
    component = host.registry("defence").get(config.defence.name)
    defence = call_factory(component, config.defence.options, "defence.options")
    if not isinstance(defence, Defence):
        raise ConfigError(f"defence.name: {config.defence.name!r} did not return a Defence (no training_loss)")
    return defence


@contextlib.contextmanager
def reproducibility(seed: int, deterministic: bool) -> Iterator[None]:
    """Seed every generator; in deterministic mode also force deterministic kernels (restored afterwards)."""
    random.seed(seed)
    torch.manual_seed(seed)
    previous = (torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.benchmark)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous[0])
        torch.backends.cudnn.benchmark = previous[1]


def train(
    config: ExperimentConfig, *, host: PluginHost | None = None, reporter: Reporter | None = None
) -> TrainResult:
    """Train the configured model; writes the run folder (config, metrics.jsonl, last.pt, best.pt)."""
    host = host or get_host()
    reporter = reporter or Reporter()
    tc = config.training
    device = select_device(tc.device)
    with reproducibility(tc.seed, tc.deterministic):
        data = load_data(config.data, host)
        train_set = data.train.subset(config.data.train_limit)
        test_set = data.test.subset(config.evaluation.limit)
        model = build_model(config.model, data.info, tc.seed, host).to(device)
        defence = build_defence(config, host)
        run_dir = runs.prepare_run_dir(config)
        reporter.info(
            f"run folder {run_dir} | {data.info.name}: {len(train_set)} train / {len(test_set)} test images | "
            f"{config.model.arch} ({sum(p.numel() for p in model.parameters()):,} parameters) | device {device}"
        )
        optimizer = build_optimizer(model, tc)
        scheduler = build_scheduler(optimizer, tc)
        augment = Augmentation(config.data.crop_padding, config.data.flip, config.data.cutout)
        result = TrainResult(run_dir)
        step = 0
        for epoch in range(1, tc.epochs + 1):
            started = time.perf_counter()
            order = epoch_order(len(train_set), tc.seed, epoch)
            generator = torch.Generator(device=device).manual_seed(tc.seed * 1_000_003 + epoch)
            sums = torch.zeros(3, device=device, dtype=torch.float64)  # loss * n, wrong, n
            model.train()
            total = num_batches(len(train_set), tc.batch_size)
            if tc.max_steps is not None:
                total = min(total, tc.max_steps - step)
            with reporter.task(f"epoch {epoch}/{tc.epochs}", total) as task:
                for images, labels in iterate_batches(train_set, tc.batch_size, device, order):
                    if tc.max_steps is not None and step >= tc.max_steps:
                        break
                    if augment.active:
                        images = augment(images, generator)
                    out = defence.training_loss(model, images, labels)
                    if not torch.isfinite(out.total):
                        raise TrainingDiverged(
                            f"loss became {out.total.item()} at step {step + 1} (epoch {epoch}); training stopped, "
                            f"the last good checkpoint is {run_dir / runs.LAST if step else 'none (first epoch)'}"
                        )
                    optimizer.zero_grad(set_to_none=True)
                    out.total.backward()
                    optimizer.step()
                    step += 1
                    n = labels.shape[0]
                    sums += torch.stack(
                        [out.data_loss.detach().double() * n, (out.logits.argmax(1) != labels).sum().double(),
                         torch.tensor(float(n), device=device, dtype=torch.float64)]
                    )
                    task.advance(1, loss=out.data_loss.detach())
            lr = optimizer.param_groups[0]["lr"]
            scheduler.step()
            train_seconds = time.perf_counter() - started
            test_error, test_loss = evaluate(model, test_set, config.evaluation.batch_size, device, reporter)
            loss_sum, wrong, seen = sums.tolist()
            row = {
                "epoch": epoch, "step": step, "loss": loss_sum / max(seen, 1), "train_error": wrong / max(seen, 1),
                "test_error": test_error, "test_loss": test_loss, "lr": lr, "seconds": train_seconds,
                "images_per_second": seen / train_seconds if train_seconds > 0 else float("nan"),
            }
            result.history.append(row)
            with open(run_dir / runs.METRICS_FILE, "a") as handle:
                handle.write(json.dumps(row) + "\n")
            payload = _checkpoint_payload(config, data.info, model, optimizer, scheduler, epoch, step, row)
            save_checkpoint(run_dir / runs.LAST, payload)
            if not test_error >= result.best_test_error:  # also true while best is nan
                result.best_test_error = test_error
                save_checkpoint(run_dir / runs.BEST, payload)
            reporter.epoch(row)
            if tc.max_steps is not None and step >= tc.max_steps:
                break
        result.steps = step
    return result


def _checkpoint_payload(
    config: ExperimentConfig,
    info: DatasetInfo,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    epoch: int,
    step: int,
    metrics: dict[str, Any],
) -> dict[str, Any]:
    """Everything needed to rebuild the model (config, data metadata) and to continue training."""
    return {
        "lipcli_version": lipcli.__version__,
        "config": config.to_dict(),
        "dataset": info.to_dict(),
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "epoch": epoch,
        "step": step,
        "metrics": metrics,
        "rng": {"torch": torch.get_rng_state(), "python": list(random.getstate()[1])},
    }

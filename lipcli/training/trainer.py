"""The training loop: plain PyTorch, driven by an :class:`ExperimentConfig`, reporting through a Reporter.

Everything a run needs to continue is in ``last.pt`` (written atomically at the end of every epoch):
weights, optimiser state, the epoch and step (the learning rate is a function of the step), the best
validation error so far and the random generator states. The epoch's shuffling and augmentation are
functions of (seed, epoch), so a run resumed after a crash replays the interrupted epoch exactly; on the CPU
in deterministic mode it ends with the same weights as an uninterrupted run.

Model selection never looks at the test set: ``best.pt`` is the epoch with the lowest error on training
images held out by ``data.validation`` (see :mod:`lipcli.data.validation`); the test error is recorded only.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lipcli.checkpoint import load_checkpoint, save_checkpoint, save_checkpoints
from lipcli.config import build_stored, dumps
from lipcli.config.schema import ExperimentConfig, TrainingConfig
from lipcli.data.augment import Augmentation
from lipcli.data.batches import (
    epoch_order,
    iterate_batches,
    num_batches,
    shard,
    steps_per_epoch,
)
from lipcli.data.load import load_data
from lipcli.data.types import DatasetInfo
from lipcli.data.validation import hold_out
from lipcli.defence import build_defence
from lipcli.device import select_device
from lipcli.distributed import all_reduce, barrier, broadcast, current
from lipcli.engine import Engine
from lipcli.errors import CheckpointError, ConfigError, LipcliError, LipcliWarning
from lipcli.files import write_text
from lipcli.layout import BEST, CONFIG_FILE, LAST, METRICS_FILE
from lipcli.models.build import build_model
from lipcli.results_folder import locked, locked_everywhere
from lipcli.training import run_dir as runs
from lipcli.training.clean_error import clean_error_and_loss
from lipcli.training.optim import PLANNED_SCHEDULES, build_optimizer, learning_rate
from lipcli.version import VERSION

_FINITE_CHECK_EVERY = 50
"""Steps between looks at the loss's finiteness (each look waits for the device)."""


class TrainingDiverged(LipcliError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


@dataclass
class TrainResult:
    """Where a run was written and what it measured."""

    run_dir: Path
    history: list[dict[str, Any]] = field(default_factory=list)
    best_val_error: float | None = None
    """The lowest validation error of the run (that of ``best.pt``); None without held-out images."""
    steps: int = 0

    @property
    def final(self) -> dict[str, Any]:
        return self.history[-1] if self.history else {}


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


def train(config: ExperimentConfig, engine: Engine) -> TrainResult:
    """Train the configured model into a new run folder: config.toml, metrics.jsonl, last.pt and, when
    ``data.validation`` holds images out, best.pt (the epoch of lowest validation error)."""
    return _Run(config, engine).fit(None, None)


def resume(
    run_dir: Path, engine: Engine, *, device: str | None = None,
    epochs: int | None = None,
) -> TrainResult:
    """Continue a run from its ``last.pt``, with the configuration stored in it.

    ``epochs`` (at least the epochs done) makes it a run planned for that many epochs, continued from where it
    stopped and recorded as such in ``config.toml`` and the checkpoints: a finished run is extended. The
    learning rate follows the new plan from the step reached: ``multistep`` keeps its milestones (past the
    last one, training goes on at the last rate); ``cosine`` and ``cyclic`` take the values of an
    ``epochs``-epoch run at that step, so the rate jumps there (up, for a finished cosine run) and ends at 0,
    and the earlier plan is kept in ``training.earlier_plans`` for the epochs it covered.
    """
    run_dir = Path(run_dir)
    if not (run_dir / LAST).exists() and runs.is_run_folder(run_dir):
        raise LipcliError(
            f"{run_dir}: the run was interrupted before its first epoch ended, so there is nothing to resume; start "
            f"it again with lipcli train --config {run_dir / CONFIG_FILE} --out {run_dir}"
        )
    payload = load_checkpoint(run_dir / LAST)
    config = build_stored(payload["config"])
    if device is not None:
        config.training.device = device
    if epochs is not None:
        _extend(config.training, run_dir, int(payload["epoch"]), int(payload["step"]), epochs)
    return _Run(config, engine).fit(payload, run_dir)


def _extend(tc: TrainingConfig, run_dir: Path, done: int, step: int, epochs: int) -> None:
    """Make ``tc`` a run planned for ``epochs`` epochs after ``done`` (``step`` steps); a cosine or cyclic
    run keeps its earlier plan for the epochs it covered (``training.earlier_plans``)."""
    if epochs < done:
        raise ConfigError(
            f"training.epochs: {run_dir} has trained {done} epochs; it can go on to {done} or more, not {epochs}"
        )
    if tc.max_steps is not None and step >= tc.max_steps:
        raise ConfigError(
            f"training.max_steps: {run_dir} stopped at its max_steps ({tc.max_steps}); more epochs cannot extend it"
        )
    if epochs != tc.epochs and tc.lr_schedule in PLANNED_SCHEDULES:
        tc.earlier_plans = [*tc.earlier_plans, [tc.epochs, done]]
    tc.epochs = epochs


class _Run:
    """One training run's state, from setup to the last epoch."""

    def __init__(self, config: ExperimentConfig, engine: Engine) -> None:
        self.config, self.plugins, self.reporter = config, engine.plugins, engine.reporter

    def fit(self, checkpoint: dict[str, Any] | None, run_dir: Path | None) -> TrainResult:
        """Train from scratch into a new folder (no checkpoint), or on from ``checkpoint`` in ``run_dir``; the
        main process holds the run folder's lock throughout, so two runs never write one folder."""
        with ExitStack() as self._held:
            if run_dir is not None:
                self._held.enter_context(locked_everywhere(run_dir))
            return self._fit(checkpoint, run_dir)

    def _fit(self, checkpoint: dict[str, Any] | None, run_dir: Path | None) -> TrainResult:
        config, tc = self.config, self.config.training
        device = select_device(tc.device)
        group = current()
        if tc.batch_size % group.world:
            raise ConfigError(
                f"training.batch_size: the global batch ({tc.batch_size}) must be a multiple of the "
                f"{group.world} processes"
            )
        if tc.sync_batchnorm and group.enabled and device.type != "cuda":
            raise ConfigError("training.sync_batchnorm: PyTorch's SyncBatchNorm needs CUDA devices")
        # every process draws its own random numbers (PGD's random starts, ...); rank 0 draws a single process's
        with reproducibility(tc.seed + _RANK_SEED_STRIDE * group.rank, tc.deterministic):
            data = load_data(config.data, self.plugins)
            train_set, val_set = hold_out(
                data.train.subset(config.data.train_limit), config.data.validation, config.data.validation_seed
            )
            test_set = data.test.subset(config.evaluation.limit)
            if group.enabled and len(train_set) < tc.batch_size:
                raise ConfigError(
                    f"training.batch_size: {len(train_set)} training images make no global batch of "
                    f"{tc.batch_size}; with several processes a short last batch is left out"
                )
            if len(train_set) < tc.batch_size and group.main:
                warnings.warn(f"training.batch_size: {tc.batch_size} is more than the {len(train_set)} training "
                              "images; every epoch is one step", LipcliWarning, stacklevel=2)
            defence = build_defence(config.defence, self.plugins, tanh_head=config.model.tanh_head)
            model = build_model(config, data.info, self.plugins, defence).to(device)
            if tc.channels_last:
                model = model.to(memory_format=torch.channels_last)
            optimizer = build_optimizer(model, tc)
            per_epoch = steps_per_epoch(len(train_set), tc.batch_size, group.world)

            def schedule(epoch: int, index: int) -> float:
                """The rate of the epoch's index-th step: by its position in the run, not the steps taken, so a
                run resumed on another number of processes (other steps per epoch) stays on schedule."""
                return learning_rate((epoch - 1) * per_epoch + index, per_epoch, tc)

            result = TrainResult(run_dir if run_dir is not None else _shared_run_dir(config, self._held))
            start_epoch = 1
            if checkpoint is not None:
                start_epoch = self._restore(checkpoint, model, optimizer, result, device)
            trained = _parallel(model, tc.sync_batchnorm, device)
            amp = tc.amp and device.type == "cuda"
            if tc.amp and not amp:
                self.reporter.info(f"training.amp needs CUDA; training in float32 on {device}")
            batches = (
                f"batch {tc.batch_size} = {group.world} processes x {tc.batch_size // group.world}"
                if group.enabled else f"batch {tc.batch_size}"
            )
            self.reporter.info(
                f"run folder {result.run_dir} | {data.info.name}: {len(train_set)} train / "
                f"{0 if val_set is None else len(val_set)} validation / {len(test_set)} test images | "
                f"{config.model.arch} ({sum(p.numel() for p in model.parameters()):,} parameters) | "
                f"defence {'+'.join(defence.names) or 'none'} | {batches} | device {device}"
            )
            augment = Augmentation(config.data.crop_padding, config.data.flip, config.data.cutout)
            for epoch in range(start_epoch, tc.epochs + 1):
                if tc.max_steps is not None and result.steps >= tc.max_steps:
                    break
                started = time.perf_counter()
                lr = schedule(epoch, 0)  # the rate of the epoch's first step
                stats = self._epoch(
                    epoch, trained, defence, optimizer, schedule, train_set, augment, device, amp, result
                )
                seconds = time.perf_counter() - started
                images = stats.pop("images")
                _average_buffers(model)  # one model to test and to save, whichever process measures it
                val_error, val_loss = (
                    clean_error_and_loss(model, val_set, config.evaluation.batch_size, device, self.reporter, "validation")
                    if val_set is not None else (None, None)
                )
                test_error, test_loss = clean_error_and_loss(model, test_set, config.evaluation.batch_size, device, self.reporter)
                row = {
                    "epoch": epoch, "step": result.steps, **stats, "val_error": val_error, "val_loss": val_loss,
                    "test_error": test_error, "test_loss": test_loss, "lr": lr, "seconds": seconds,
                    "images_per_second": images / seconds,
                }
                self._record(row, model, optimizer, data.info, result)
        return result

    def _epoch(
        self, epoch: int, model: nn.Module, defence: Any, optimizer: torch.optim.Optimizer,
        schedule: Callable[[int, int], float], train_set: Any, augment: Augmentation, device: torch.device, amp: bool,
        result: TrainResult,
    ) -> dict[str, Any]:
        """One pass over the training set, each step at the rate ``schedule(epoch, index)``; returns the epoch's
        training statistics."""
        tc = self.config.training
        group = current()
        order = shard(epoch_order(len(train_set), tc.seed, epoch, tc.batch_size), tc.batch_size, group.world, group.rank)
        batch_size = tc.batch_size // group.world
        generator = torch.Generator(device=device).manual_seed((tc.seed * 1_000_003 + epoch) * group.world + group.rank)
        sums = torch.zeros(3, device=device, dtype=torch.float64)  # loss * n, wrong, penalty * n
        seen = 0
        worst = torch.full((), float("nan"), device=device)
        measured = penalised = False
        first_bad = torch.full((), -1, device=device, dtype=torch.long)
        total = num_batches(len(order), batch_size)
        if tc.max_steps is not None:
            total = min(total, tc.max_steps - result.steps)
        model.train()
        with self.reporter.task(f"epoch {epoch}/{tc.epochs}", total) as task:
            for index, (images, labels) in enumerate(iterate_batches(train_set, batch_size, device, order)):
                if tc.max_steps is not None and result.steps >= tc.max_steps:
                    break
                if augment.active:
                    images = augment(images, generator)
                if tc.channels_last:
                    images = images.contiguous(memory_format=torch.channels_last)
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                    out = defence.training_loss(model, images, labels)
                # remember the first non-finite step on the device; looking costs a sync, so look rarely
                bad = ~torch.isfinite(out.total.detach())
                first_bad = torch.where(bad & (first_bad < 0), result.steps + 1, first_bad)
                if (result.steps + 1) % _FINITE_CHECK_EVERY == 0:
                    self._check_finite(first_bad, epoch, result)
                optimizer.zero_grad(set_to_none=True)
                out.total.backward()
                lr = schedule(epoch, index)
                for param_group in optimizer.param_groups:
                    param_group["lr"] = lr
                optimizer.step()
                result.steps += 1
                n = labels.shape[0]
                seen += n
                penalty = out.penalty.detach().double() if out.penalty is not None else sums.new_zeros(())
                sums += torch.stack([
                    out.data_loss.detach().double() * n, (out.logits.argmax(1) != labels).sum().double(), penalty * n,
                ])
                if out.grad_norm_max is not None:
                    worst = torch.fmax(worst, out.grad_norm_max.detach().float())
                    measured = True
                penalised |= out.penalty is not None
                task.advance(1, loss=out.data_loss.detach())
        self._check_finite(first_bad, epoch, result)  # before anything of this epoch is saved
        totals = all_reduce(torch.cat([sums, sums.new_tensor([seen, float(measured), float(penalised)])]))
        loss_sum, wrong, penalty_sum, seen_all, measured_any, penalised_any = totals.tolist()
        worst = all_reduce(torch.where(torch.isnan(worst), -torch.inf, worst), "max")
        measured, penalised, seen = measured_any > 0, penalised_any > 0, int(seen_all)
        count = max(seen, 1)
        return {
            "loss": loss_sum / count, "penalty": penalty_sum / count if penalised else None,
            "grad_norm_max": worst.item() if measured else None, "train_error": wrong / count, "images": seen,
        }

    @staticmethod
    def _check_finite(first_bad: torch.Tensor, epoch: int, result: TrainResult) -> None:
        """Stop with the first step whose loss was NaN or infinite (on any process: all stop together);
        nothing after the last epoch is saved."""
        step = int(all_reduce(first_bad.clone(), "max").item())
        if step >= 0:
            kept = result.run_dir / LAST
            raise TrainingDiverged(
                f"loss became NaN or infinite at step {step} (epoch {epoch}); training stopped, the last good "
                f"checkpoint is {kept if kept.exists() else 'none yet'}"
            )

    def _record(
        self, row: dict[str, Any], model: nn.Module, optimizer: torch.optim.Optimizer, info: DatasetInfo,
        result: TrainResult,
    ) -> None:
        """Append the epoch's metrics, then write last.pt (and best.pt when the validation error fell below the
        best so far: a tie keeps the earlier epoch); only the main process writes."""
        result.history.append(row)
        error = row["val_error"]
        improved = error is not None and (result.best_val_error is None or error < result.best_val_error)
        if improved:
            result.best_val_error = error
        if not current().main:
            return
        payload = {
            "lipcli_version": VERSION, "config": self.config.to_dict(), "dataset": info.to_dict(),
            "model": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": row["epoch"],
            "step": result.steps, "metrics": row, "best_val_error": result.best_val_error, "rng": _rng_state(),
        }
        try:
            with open(result.run_dir / METRICS_FILE, "a") as handle:  # rows past last.pt are dropped on resume
                handle.write(json.dumps(row) + "\n")
            # both files are written in full before either replaces the old one: a full disk leaves both old
            names = ((BEST,) if improved else ()) + (LAST,)
            save_checkpoints({result.run_dir / name: payload for name in names})
        except OSError as exc:
            kept = result.run_dir / LAST
            then = (f"{kept} still holds epoch {row['epoch'] - 1}; free space, then lipcli train --resume "
                    f"{result.run_dir}") if kept.exists() else "no epoch was saved; free space and start the run again"
            raise LipcliError(f"cannot write epoch {row['epoch']}'s checkpoint in {result.run_dir}: "
                              f"{exc.strerror or exc}; {then}") from None
        self.reporter.epoch(row)

    def _restore(
        self, checkpoint: dict[str, Any], model: nn.Module, optimizer: torch.optim.Optimizer, result: TrainResult,
        device: torch.device,
    ) -> int:
        """Load the checkpoint's state; drop metrics rows written after it; record a new total of epochs.
        Returns the next epoch.

        A checkpoint from before held-out validation (``best_test_error``, a MultiStepLR ``scheduler``) resumes
        too: its rate is the step's multistep rate, which is the scheduler's, and its run holds out nothing."""
        legacy = "best_val_error" not in checkpoint
        try:
            model.load_state_dict(checkpoint["model"])
            optimizer.load_state_dict(checkpoint["optimizer"])
            epoch, result.steps = int(checkpoint["epoch"]), int(checkpoint["step"])
            best = None if legacy else checkpoint["best_val_error"]
            result.best_val_error = None if best is None else float(best)
            _set_rng_state(checkpoint["rng"], device)
            if current().rank:  # the checkpoint holds rank 0's generators; the others must draw their own
                torch.manual_seed(self.config.training.seed + _RANK_SEED_STRIDE * current().rank + epoch)
        except (KeyError, RuntimeError, ValueError, TypeError) as exc:
            raise CheckpointError(f"{result.run_dir / LAST}: cannot resume from it ({exc})") from None
        metrics = result.run_dir / METRICS_FILE
        result.history = [r for r in _read_rows(metrics) if r.get("epoch", epoch + 1) <= epoch]
        barrier()  # every process has read the rows before the main one rewrites the file
        if current().main:
            partial = metrics.with_name(metrics.name + ".tmp")
            partial.write_text("".join(json.dumps(r) + "\n" for r in result.history))
            os.replace(partial, metrics)
            if checkpoint["config"]["training"]["epochs"] != self.config.training.epochs:
                self._replan(checkpoint, result.run_dir)
        if legacy and (result.run_dir / BEST).exists():
            self.reporter.info(
                f"{result.run_dir / BEST} was chosen on the test error by an older lipcli; it is left as it "
                "is and no longer updated"
            )
        self.reporter.info(
            f"resuming {result.run_dir} after epoch {epoch} (step {result.steps}) of {self.config.training.epochs}"
        )
        return epoch + 1

    def _replan(self, checkpoint: dict[str, Any], run_dir: Path) -> None:
        """Record the run's new total of epochs in last.pt, then config.toml, before it trains on: a crash
        after this resumes to the new total (resuming reads last.pt), and a grid sees the run as it now is."""
        tree = build_stored(checkpoint["config"]).to_dict()
        tree["training"]["epochs"] = self.config.training.epochs
        tree["training"]["earlier_plans"] = self.config.training.earlier_plans
        save_checkpoint(run_dir / LAST, {**checkpoint, "config": tree})
        write_text(run_dir / CONFIG_FILE, runs.CONFIG_HEADER + dumps(tree))


def _shared_run_dir(config: ExperimentConfig, held: ExitStack) -> Path:
    """The new run folder, created (and locked, in ``held``) by the main process; every process gets its path
    (or its error)."""
    made: tuple[str, str] | None = None
    if current().main:
        try:
            folder = runs.run_folder(config)
            held.enter_context(locked(folder))
            made = ("ok", str(runs.prepare_run_dir(config, folder)))
        except LipcliError as exc:
            made = ("error", str(exc))
    status, value = broadcast(made)
    if status == "error":
        raise LipcliError(value)
    return Path(value)


def _parallel(model: nn.Module, sync_batchnorm: bool, device: torch.device) -> nn.Module:
    """The model as trained: itself with one process; with several, wrapped in DistributedDataParallel (which
    averages gradients over the processes), its BatchNorms synchronised when asked."""
    if not current().enabled:
        return model
    if sync_batchnorm:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


_RANK_SEED_STRIDE = 1_000_003


def _average_buffers(model: nn.Module) -> None:
    """Running statistics averaged over the processes: each process updated them with its own share of the
    batches (DDP copies rank 0's into every forward), so without this the processes would test, and save,
    different models."""
    if not current().enabled:
        return
    world = current().world
    for buffer in model.buffers():
        if buffer.is_floating_point():
            all_reduce(buffer).div_(world)


def _read_rows(metrics: Path) -> list[dict[str, Any]]:
    """The metrics rows that parse; a line cut short by a crash while it was written is dropped."""
    rows = []
    for line in metrics.read_text().splitlines() if metrics.exists() else []:
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


def _rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state(), "python": list(random.getstate()[1])}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any], device: torch.device) -> None:
    torch.set_rng_state(state["torch"].cpu())
    version, _, gauss = random.getstate()
    random.setstate((version, tuple(state["python"]), gauss))
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])

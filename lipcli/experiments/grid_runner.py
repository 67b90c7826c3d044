"""Running a grid: each run trained, then evaluated (error curves per norm, Lipschitz statistics), each stage
skipped when its result is already on disk, so that running the same file again finishes what is missing.

A run's stages and what marks them done:

* training: ``trained.json``, written once training has returned (an interrupted run has ``last.pt`` but no
  marker and is resumed from it; a run folder without ``last.pt`` starts over);
* ``curve-<norm>/summary.json`` for each norm of ``[evaluate]``, as ``lipcli curve`` writes it;
* ``robust-<norm>/summary.json`` for each norm of ``[evaluate.robust]``, as ``lipcli robust`` writes it (run after
  the curves, whose minimal distances of the same norm it counts);
* ``stats/stats.json``, as ``lipcli stats`` writes it.

Each result says itself which checkpoint (by content hash) and how many images it measured (its summary's
``settings``, :mod:`lipcli.results_folder`): one that does not match is pending, whatever else the folder
holds. Beside each evaluation result, ``plan.json`` records the ``[evaluate]`` settings it was measured with
(checkpoint, image limit, attacks and their options, eps) and the step of the checkpoint it measured; a
stage whose settings changed, or whose checkpoint has trained on since (``lipcli train --resume RUN
--epochs N``), is run again, and any training makes every evaluation stage pending. A run whose ``last.pt``
has fewer epochs than its configuration (an extension cut short) is resumed. A run whose folder holds a different
configuration than the file now asks for (where and how fast it runs aside: device, folders, batch size of
evaluation; a key the stored run predates counts as what that run did, see
:func:`lipcli.config.loader.build_stored`) is not touched: it fails with a message, since mixing two
configurations in one folder would silently corrupt its results. A run that fails for any reason is reported, its traceback written to
``error.txt``, and the grid goes on with the next.

Under torchrun every process runs the grid: training and evaluation are data-parallel, rank 0 decides what
each run needs and writes the files, and the processes meet after each run. A failed run then stops the
grid (its traceback in ``error.txt``): the other processes may be waiting inside a collective, and only
torchrun can stop them. Run the file again to go on.
"""

from __future__ import annotations

import json
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lipcli.checkpoint import load_checkpoint
from lipcli.config.loader import build_stored
from lipcli.config.schema import TrainingConfig
from lipcli.config.toml_reader import load_toml
from lipcli.defence import build_defence
from lipcli.device import select_device
from lipcli.data.selection import Selection
from lipcli.distributed import barrier, broadcast
from lipcli.engine import Engine
from lipcli.errors import ConfigError, LipcliError
from lipcli.evaluation.minimal_distances import build_attacks, evaluate_checkpoints
from lipcli.evaluation.robust import VERSIONS, build_ensemble, evaluate_robust
from lipcli.experiments.grid import EvaluationPlan, Grid, PlannedRun, identity_tree
from lipcli.files import sha256, write_text
from lipcli.layout import (
    BEST,
    CONFIG_FILE,
    CURVE_PREFIX,
    ERROR_FILE,
    LAST,
    PLAN_FILE,
    ROBUST_PREFIX,
    STATS_FILE,
    SUMMARY_FILE,
    TRAINED,
    curve_folder,
    robust_folder,
)
from lipcli.lipschitz.measure import measure_checkpoints
from lipcli.plugin_host import PluginHost
from lipcli.results_folder import SETTINGS_KEY
from lipcli.training import trainer


@dataclass
class Outcome:
    """What happened to one run: ``done`` (its missing stages ran), ``skipped`` (nothing was missing) or
    ``failed`` (with the reason)."""

    run: PlannedRun
    status: str
    stages: list[str]
    seconds: float
    message: str = ""


def pending_stages(run: PlannedRun, plan: EvaluationPlan) -> list[str]:
    """The stages of ``run`` whose results are not on disk, or were measured under another ``[evaluate]``
    plan: ``train`` (or ``resume``), ``curve-<norm>``, ``stats``; empty when the run is complete. A run that
    trains from scratch has every evaluation stage pending (old results belong to an old model)."""
    folder = Path(run.config.output.dir)
    stages = []
    last = _trained_so_far(folder / LAST)
    if not (folder / TRAINED).is_file() or (last is not None and _unfinished(last, run.config.training)):
        stages.append("resume" if last is not None else "train")
    checkpoint = folder / (LAST if plan.checkpoint == "last" else BEST)
    measured = _trained_so_far(checkpoint)
    evaluations = [curve_folder(n) for n in plan.norms] + [robust_folder(n) for n in plan.robust]
    evaluations += ["stats"] if plan.stats else []
    checkpoint_hash = sha256(checkpoint) if measured is not None else None
    for stage in evaluations:
        result = folder / stage / (STATS_FILE if stage == "stats" else SUMMARY_FILE)
        expected = _as_json(_measured_plan(plan, stage, measured))
        if (stages[:1] in (["train"], ["resume"]) or not _describes(result, checkpoint_hash, plan, stage)
                or _recorded_plan(folder, stage) != expected):
            stages.append(stage)
    return stages


def _describes(result: Path, checkpoint_hash: str | None, plan: EvaluationPlan, stage: str) -> bool:
    """Whether the result file itself says it measured this checkpoint (by hash), on the planned images, with
    the planned attacks and seed: a result another command wrote into the folder since (``lipcli curve
    RUN/last.pt --limit 10 --overwrite``, or with ``--offset``) is stale whatever ``plan.json`` says. A summary
    from before results recorded their settings is judged by ``plan.json`` (and its checkpoint hash, where it
    has one)."""
    try:
        summary = json.loads(result.read_text())
    except (OSError, ValueError):
        return False
    if not isinstance(summary, dict):
        return False
    settings = summary.get(SETTINGS_KEY)
    if not isinstance(settings, dict):
        return summary.get("checkpoint_sha256", checkpoint_hash) == checkpoint_hash
    if settings.get("checkpoint_sha256") != checkpoint_hash or summary.get("limit") != plan.limit:
        return False
    if summary.get("offset", 0) != 0 or summary.get("indices_file") is not None:  # not the first images
        return False
    if stage.startswith(CURVE_PREFIX):
        planned = {name.lower() for name in plan.attacks_for(stage.removeprefix(CURVE_PREFIX))}
        return {name.lower() for name in settings.get("attacks", {})} == planned and settings.get("seed") == plan.seed
    return True


def _trained_so_far(checkpoint: Path) -> tuple[int, int] | None:
    """(epoch, step) of a checkpoint, or None where there is none that loads."""
    try:
        payload = load_checkpoint(checkpoint)
        return int(payload["epoch"]), int(payload["step"])
    except (LipcliError, KeyError, TypeError, ValueError):
        return None


def _unfinished(trained: tuple[int, int], tc: TrainingConfig) -> bool:
    """Whether a checkpoint at (epoch, step) is short of the epochs its run is configured for."""
    epoch, step = trained
    return epoch < tc.epochs and (tc.max_steps is None or step < tc.max_steps)


def _measured_plan(plan: EvaluationPlan, stage: str, trained: tuple[int, int] | None) -> dict[str, Any]:
    """What ``plan.json`` records for a stage: its ``[evaluate]`` settings and the step of the checkpoint."""
    return {**plan.stage_plan(stage), "checkpoint_step": None if trained is None else trained[1]}


def _recorded_plan(folder: Path, stage: str) -> Any:
    try:
        return json.loads((folder / stage / PLAN_FILE).read_text())
    except (OSError, ValueError):
        return None


def _as_json(value: Any) -> Any:
    return json.loads(json.dumps(value))


def check_components(grid: Grid, plugins: PluginHost) -> None:
    """Every run's data set, architecture and defence, and every attack with its options, exist: a typo fails
    before hours of training, with the run named."""
    for run in grid.runs:
        try:
            plugins.registry("dataset").get(run.config.data.dataset)
            plugins.registry("architecture").get(run.config.model.arch)
            build_defence(run.config.defence, plugins, tanh_head=run.config.model.tanh_head)
        except LipcliError as exc:
            raise type(exc)(f"{grid.path}: run {run.name}: {exc}") from None
    plan = grid.evaluation
    listed = {name.lower() for norm in ("l2", "linf") for name in plan.attacks_for(norm)}
    for name in plan.attack_options:
        if name.lower() not in listed:
            raise ConfigError(f"{grid.path}: evaluate.attack_options.{name}: not an attack of evaluate.attacks")
    for norm in plan.norms:
        build_attacks(plan.attacks_for(norm), plan.options_for(norm), plugins)
    if plan.robust:
        build_ensemble(list(VERSIONS[plan.robust_version]), {}, plugins)


def run_grid(grid: Grid, engine: Engine, *, device: str = "auto") -> list[Outcome]:
    """Bring every run of ``grid`` to completion, one after the other; failures do not stop the others.
    ``device`` (not ``auto``) overrides every run's ``training.device``; a run is evaluated where it trained."""
    reporter = engine.reporter
    outcomes = []
    with reporter.task("runs", len(grid.runs)) as task:
        for number, run in enumerate(grid.runs, start=1):
            stages = broadcast(pending_stages(run, grid.evaluation))  # one decision for every process
            started = time.perf_counter()
            reporter.info(f"run {number}/{len(grid.runs)} {run.name}: " + (", ".join(stages) or "complete, skipped"))
            error_file = Path(run.config.output.dir) / ERROR_FILE
            try:
                _run_stages(run, stages, grid.evaluation, device, engine)
                if engine.main:
                    error_file.unlink(missing_ok=True)
                outcomes.append(Outcome(run, "done" if stages else "skipped", stages, time.perf_counter() - started))
            except Exception as exc:  # noqa: BLE001 - one failed run must not stop the grid
                if engine.process.enabled:  # the others may be inside a collective: only torchrun can stop them
                    _write_error(error_file, traceback.format_exc())
                    raise
                message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                if not isinstance(exc, LipcliError):
                    message = f"{type(exc).__name__}: {message}"
                if engine.main:
                    _write_error(error_file, traceback.format_exc())
                reporter.info(f"run {run.name} failed: {message}")
                outcomes.append(Outcome(run, "failed", stages, time.perf_counter() - started, message))
            barrier()  # every process sees this run's files before deciding what the next one needs
            task.advance(1)
    return outcomes


def _run_stages(
    run: PlannedRun, stages: list[str], plan: EvaluationPlan, device: str, engine: Engine
) -> None:
    folder = Path(run.config.output.dir)
    conflict = broadcast(configuration_conflict(run) if engine.main else None)
    if conflict:
        raise LipcliError(f"{folder}: {conflict}; remove the folder or write the grid elsewhere with --out")
    if not stages:
        return
    if device != "auto":
        run.config.training.device = device
    if "train" in stages:
        (folder / BEST).unlink(missing_ok=True)  # left by a crash before the first last.pt: start over
        trainer.train(run.config, engine)
    elif "resume" in stages:
        trainer.resume(folder, engine, device=run.config.training.device)
    if stages[0] in ("train", "resume") and engine.main:
        write_text(folder / TRAINED, json.dumps({"finished": time.strftime("%Y-%m-%dT%H:%M:%S")}) + "\n")
    evaluations = [stage for stage in stages if stage not in ("train", "resume")]
    if not evaluations:
        return
    checkpoint = folder / (LAST if plan.checkpoint == "last" else BEST)
    where = engine.on(select_device(run.config.training.device))
    images = Selection(plan.limit)
    for stage in evaluations:
        out = folder / stage
        if stage == "stats":
            measure_checkpoints(
                [checkpoint], where, out=out, eps={n: plan.eps_for(n) for n in ("l2", "linf")}, selection=images,
                batch_size=plan.batch_size, overwrite=True,
            )
        elif stage.startswith(ROBUST_PREFIX):
            norm = stage.removeprefix(ROBUST_PREFIX)
            attacks, options = build_ensemble(list(VERSIONS[plan.robust_version]), {}, engine.plugins)
            evaluate_robust(
                [checkpoint], where, norm=norm, attacks=attacks, options=options, eps=plan.robust[norm], out=out,
                version=plan.robust_version, seed=plan.seed,
                curves=[folder / curve_folder(norm)] if norm in plan.norms else None, selection=images,
                batch_size=plan.batch_size, overwrite=True,
            )
        else:
            norm = stage.removeprefix(CURVE_PREFIX)
            attacks = build_attacks(plan.attacks_for(norm), plan.options_for(norm), engine.plugins)
            evaluate_checkpoints(
                [checkpoint], where, norm=norm, attacks=attacks, eps=plan.eps_for(norm), out=out, selection=images,
                batch_size=plan.batch_size, seed=plan.seed, overwrite=True,
            )
        if engine.main:
            measured = _measured_plan(plan, stage, _trained_so_far(checkpoint))
            write_text(out / PLAN_FILE, json.dumps(measured, indent=2) + "\n")


def configuration_conflict(run: PlannedRun) -> str | None:
    """Why the run's folder cannot take this run (it holds another configuration), or None."""
    stored_file = Path(run.config.output.dir) / CONFIG_FILE
    if not stored_file.is_file():
        return None
    stored, planned = identity_tree(build_stored(load_toml(stored_file))), identity_tree(run.config)
    if stored == planned:
        return None
    changed = sorted(
        f"{section}.{key}" for section in planned for key in planned[section] or {}
        if isinstance(planned[section], dict) and stored.get(section, {}).get(key) != planned[section][key]
    )
    return f"it holds a run with another configuration ({', '.join(changed) or 'recipe'} differ)"


def _write_error(path: Path, text: str) -> None:
    try:
        write_text(path, text)
    except OSError:  # the folder itself may be what failed
        pass

"""Running a grid: each run trained, then evaluated (error curves per norm, Lipschitz statistics), each stage
skipped when its result is already on disk, so that running the same file again finishes what is missing.

A run's stages and what marks them done:

* training: ``trained.json``, written once training has returned (an interrupted run has ``last.pt`` but no
  marker and is resumed from it; a run folder without ``last.pt`` starts over);
* ``curve-<norm>/summary.json`` for each norm of ``[evaluate]``, as ``lipcli curve`` writes it;
* ``stats/stats.json``, as ``lipcli stats`` writes it.

A run whose folder holds a different configuration than the file now asks for is not touched: it fails with
a message, since mixing two configurations in one folder would silently corrupt its results. A run that
fails for any reason is reported and the grid goes on with the next.
"""

from __future__ import annotations

import json
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

from lipcli.config.loader import build, load_toml
from lipcli.device import select_device
from lipcli.errors import ConfigError, LipcliError
from lipcli.evaluation.evaluate import build_attacks, evaluate_checkpoints
from lipcli.evaluation.results import SUMMARY_FILE
from lipcli.experiments.grid import EvaluationPlan, Grid, PlannedRun
from lipcli.files import write_text
from lipcli.lipschitz.measure import STATS_FILE, measure_checkpoints
from lipcli.plugins import PluginHost, get_host
from lipcli.progress import Reporter
from lipcli.training import trainer
from lipcli.training.defence import build_defence
from lipcli.training.run_dir import BEST, CONFIG_FILE, LAST

TRAINED = "trained.json"
STATS_FOLDER = "stats"


def curve_folder(norm: str) -> str:
    return f"curve-{norm}"


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
    """The stages of ``run`` whose results are not on disk yet: ``train`` (or ``resume``), ``curve-<norm>``,
    ``stats``; empty when the run is complete."""
    folder = Path(run.config.output.dir)
    stages = []
    if not (folder / TRAINED).is_file():
        stages.append("resume" if (folder / LAST).is_file() else "train")
    stages += [curve_folder(n) for n in plan.norms if not (folder / curve_folder(n) / SUMMARY_FILE).is_file()]
    if plan.stats and not (folder / STATS_FOLDER / STATS_FILE).is_file():
        stages.append("stats")
    return stages


def check_components(grid: Grid, host: PluginHost) -> None:
    """Every run's data set, architecture and defence, and every attack with its options, exist: a typo fails
    before hours of training, with the run named."""
    for run in grid.runs:
        try:
            host.registry("dataset").get(run.config.data.dataset)
            host.registry("architecture").get(run.config.model.arch)
            build_defence(run.config.defence, host)
        except LipcliError as exc:
            raise type(exc)(f"{grid.path}: run {run.name}: {exc}") from None
    plan = grid.evaluation
    used = {name.lower() for norm in plan.norms for name in plan.attacks_for(norm)}
    for name in plan.attack_options:
        if name.lower() not in used:
            raise ConfigError(f"{grid.path}: evaluate.attack_options.{name}: not an attack of evaluate.attacks")
    for norm in plan.norms:
        build_attacks(plan.attacks_for(norm), plan.options_for(norm), host)


def run_grid(
    grid: Grid, *, device: str = "auto", host: PluginHost | None = None, reporter: Reporter | None = None
) -> list[Outcome]:
    """Bring every run of ``grid`` to completion, one after the other; failures do not stop the others."""
    host = host or get_host()
    reporter = reporter or Reporter()
    outcomes = []
    with reporter.task("runs", len(grid.runs)) as task:
        for number, run in enumerate(grid.runs, start=1):
            stages = pending_stages(run, grid.evaluation)
            started = time.perf_counter()
            reporter.info(f"run {number}/{len(grid.runs)} {run.name}: " + (", ".join(stages) or "complete, skipped"))
            try:
                _run_stages(run, stages, grid.evaluation, device, host, reporter)
                status = "done" if stages else "skipped"
                outcomes.append(Outcome(run, status, stages, time.perf_counter() - started))
            except Exception as exc:  # noqa: BLE001 - one failed run must not stop the grid
                message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                if not isinstance(exc, LipcliError):
                    message = f"{type(exc).__name__}: {message}"
                    _write_error(run, traceback.format_exc())
                reporter.info(f"run {run.name} failed: {message}")
                outcomes.append(Outcome(run, "failed", stages, time.perf_counter() - started, message))
            task.advance(1)
    return outcomes


def _run_stages(
    run: PlannedRun, stages: list[str], plan: EvaluationPlan, device: str, host: PluginHost, reporter: Reporter
) -> None:
    folder = Path(run.config.output.dir)
    conflict = configuration_conflict(run)
    if conflict:
        raise LipcliError(f"{folder}: {conflict}; remove the folder or write the grid elsewhere with --out")
    if device != "auto":
        run.config.training.device = device
    if "train" in stages:
        trainer.train(run.config, host=host, reporter=reporter)
    elif "resume" in stages:
        trainer.resume(folder, host=host, reporter=reporter, device=run.config.training.device)
    if stages and stages[0] in ("train", "resume"):
        write_text(folder / TRAINED, json.dumps({"finished": time.strftime("%Y-%m-%dT%H:%M:%S")}) + "\n")
    checkpoint = folder / (LAST if plan.checkpoint == "last" else BEST)
    target_device = select_device(run.config.training.device)
    for norm in plan.norms:
        if curve_folder(norm) in stages:
            evaluate_checkpoints(
                [checkpoint], norm=norm, attacks=build_attacks(plan.attacks_for(norm), plan.options_for(norm), host),
                eps=plan.eps_for(norm), out=folder / curve_folder(norm), limit=plan.limit,
                batch_size=plan.batch_size, device=target_device, host=host, reporter=reporter,
            )
    if "stats" in stages:
        measure_checkpoints(
            [checkpoint], out=folder / STATS_FOLDER, eps={n: plan.eps_for(n) for n in ("l2", "linf")},
            limit=plan.limit, batch_size=plan.batch_size, device=target_device, host=host, reporter=reporter,
        )


def configuration_conflict(run: PlannedRun) -> str | None:
    """Why the run's folder cannot take this run (it holds another configuration), or None."""
    stored_file = Path(run.config.output.dir) / CONFIG_FILE
    if not stored_file.is_file():
        return None
    stored = build(load_toml(stored_file)).to_dict()
    planned = run.config.to_dict()
    for tree in (stored, planned):  # where it runs and how the folder was spelt change no result
        tree["training"]["device"] = None
        tree["output"]["dir"] = None
    if stored == planned:
        return None
    changed = sorted(
        f"{section}.{key}" for section in planned for key in planned[section] or {}
        if isinstance(planned[section], dict) and stored.get(section, {}).get(key) != planned[section][key]
    )
    return f"it holds a run with another configuration ({', '.join(changed) or 'recipe'} differ)"


def _write_error(run: PlannedRun, text: str) -> None:
    try:
        write_text(Path(run.config.output.dir) / "error.txt", text)
    except OSError:
        pass

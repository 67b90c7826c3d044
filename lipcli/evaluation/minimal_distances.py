"""``lipcli curve`` and ``lipcli attack`` as engine calls: checkpoints in, result folders and summaries out.

Per checkpoint: load the model and its test images, run the attacks (:func:`lipcli.evaluation.attack_set.attack_set`),
write ``distances.csv`` and ``summary.json`` (and, asked for, ``adversarials.pt``); then draw the error curves,
one per checkpoint (``by="model"``, the paper's Figure 2) or one per attack (``by="attack"``, Figure 1).

``summary.json`` records what a rerun needs to give the same numbers: the seed, the batch size (a random
attack's draws are per batch) and every attack's options with the factory's defaults filled in.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Mapping
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from lipcli.attacks import NORMS, Attack, AttackAtBudget
from lipcli.components import call_factory, option_defaults
from lipcli.curves import default_eps
from lipcli.data.selection import EVERY, Selection
from lipcli.data.types import ImageSet
from lipcli.engine import Engine
from lipcli.errors import ConfigError
from lipcli.evaluation import results
from lipcli.evaluation.attack_set import RobustnessResult, attack_set
from lipcli.evaluation.journal import Journal
from lipcli.evaluation.masking import (
    CHECK_ATTACK,
    CHECK_IMAGES,
    CHECK_QUERIES,
    MaskingCheck,
    gradient_free_check,
)
from lipcli.evaluation.seeding import DEFAULT_SEED
from lipcli.gradients import frozen_eval
from lipcli.layout import (
    ADVERSARIALS_FILE,
    CURVE_FILE,
    DISTANCES_FILE,
    FIGURE_FILE,
    SUMMARY_FILE,
)
from lipcli.models.each_checkpoint import Planned, for_each_checkpoint
from lipcli.models.targets import ModelSpec, load_targets, target_settings
from lipcli.plugin_host import PluginHost
from lipcli.references import resolved
from lipcli.registry import Component
from lipcli.result_files import write_summary
from lipcli.results_folder import Layout, claim, provenance, resume_settings

LAYOUT = Layout(SUMMARY_FILE, (DISTANCES_FILE, ADVERSARIALS_FILE,
                                       *(f"{CURVE_FILE}.{kind}" for kind in ("png", "svg"))))
"""What ``lipcli curve`` and ``lipcli attack`` write in a result folder."""
FIGURE_LAYOUT = Layout(FIGURE_FILE, tuple(f"{CURVE_FILE}.{kind}" for kind in ("png", "svg")))
"""The figure of several checkpoints in the folder above theirs, with the settings it was drawn from."""

PROGRESS_BATCHES = 8
"""Without ``--batch-size``, a test set is cut into at least this many batches (of at least
:data:`SMALLEST_BATCH` images): progress, reported per batch, then moves every eighth of an attack, and
torchrun's processes, which take whole batches, all get some. Smaller batches cost time only where a batch
does not fill the device, that is on short runs (a small model, a few hundred images)."""
SMALLEST_BATCH = 64


@dataclass
class Evaluation:
    """One checkpoint's result: its label, the folder written, the summary (as in summary.json)."""

    label: str
    folder: Path
    result: RobustnessResult
    summary: dict[str, Any]


class AttackSet(dict[str, Attack]):
    """Attacks by name, as :func:`build_attacks` made them, with ``options``: per attack, the options its factory
    was called with and the defaults of those it was not (values JSON cannot hold as their ``repr``)."""

    def __init__(self, attacks: Mapping[str, Attack], options: Mapping[str, dict[str, Any]]) -> None:
        super().__init__(attacks)
        self.options = dict(options)


def resolved_options(component: Component, given: Mapping[str, Any]) -> dict[str, Any]:
    """``given`` with the defaults of the factory's other parameters: what the attack ran with, for any
    plugin's factory (its signature is the one source of its defaults)."""
    defaults = {k: v for k, v in option_defaults(component).items() if v is not inspect.Parameter.empty}
    return {key: _json_value(value) for key, value in {**defaults, **given}.items()}


def _json_value(value: Any) -> Any:
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError):
        return repr(value)
    return value


DEFAULT_ATTACK = "min-norm"
"""The attack of ``lipcli curve`` and of a grid's curves when none is named."""


def native_norm_notes(attacks: Mapping[str, Attack], norm: str) -> list[str]:
    """One line per attack that minimises another norm than ``norm`` (its ``norms``): its distances in ``norm`` are
    those of the adversarials it found for its own norm, an upper bound only."""
    notes = []
    for name, attack in attacks.items():
        native = getattr(attack, "norms", None)
        if native and norm not in native:
            notes.append(f"{name} minimises {'/'.join(native)}; its {norm} distances are measured on those adversarials")
    return notes


def _builds_budget_attacks(factory: Any) -> bool:
    """Whether a factory is a class of :class:`AttackAtBudget` (a broken plugin's reference is not)."""
    try:
        target = resolved(factory)
    except Exception:  # noqa: BLE001 - a plugin that cannot be imported offers nothing here
        return False
    return isinstance(target, type) and issubclass(target, AttackAtBudget)


def build_attacks(
    names: list[str] | None, options: Mapping[str, Mapping[str, Any]], plugins: PluginHost, *,
    at_budget: bool = False,
) -> AttackSet:
    """Attack objects by registered name (none given: :data:`DEFAULT_ATTACK`); ``options[name]`` are passed to
    the factory (``attack.<name>.<key>``).

    ``at_budget``: every attack must run at a fixed eps (an :class:`AttackAtBudget`, for ``lipcli robust``);
    one that cannot is refused, naming those that can.
    """
    names = names or [DEFAULT_ATTACK]
    registry = plugins.registry("attack")
    # Option keys name attacks as the user wrote them: resolve them like --attack names (any case).
    options = {registry.get(key).name if key in registry else key: value for key, value in options.items()}
    attacks: dict[str, Attack] = {}
    resolved: dict[str, dict[str, Any]] = {}
    for name in names:
        component = registry.get(name)
        if component.name in attacks:
            raise ConfigError(f"attack {component.name!r} is given twice")
        given = options.get(component.name, {})
        attack = call_factory(component, given, f"attack.{component.name}")
        if at_budget and not isinstance(attack, AttackAtBudget):
            able = [c.name for c in registry if _builds_budget_attacks(c.factory)]
            raise ConfigError(f"attack {component.name!r} cannot run at a fixed eps (not an AttackAtBudget); "
                              f"use one of {', '.join(able) or 'none registered'}")
        if not at_budget and not callable(getattr(attack, "run", None)):
            raise ConfigError(f"attack {component.name!r}: its factory returned {type(attack).__name__}, no run()")
        attacks[component.name] = attack
        resolved[component.name] = resolved_options(component, given)
    unknown = set(options) - set(attacks)
    if unknown:
        raise ConfigError(f"attack.{sorted(unknown)[0]}: options given for an attack that is not run")
    return AttackSet(attacks, resolved)


def evaluation_batch_size(images: int, configured: int) -> int:
    """The batch size when none is given: the configured one, cut to give :data:`PROGRESS_BATCHES` batches."""
    return min(configured, max(SMALLEST_BATCH, -(-images // PROGRESS_BATCHES)))


def evaluate_checkpoints(
    paths: list[Path],
    engine: Engine,
    *,
    norm: str,
    attacks: dict[str, Attack],
    out: Path,
    eps: list[tuple[str, float]] | None = None,
    by: str = "model",
    selection: Selection = EVERY,
    batch_size: int | None = None,
    data_dir: Path | None = None,
    seed: int | None = None,
    save_adversarials: bool = False,
    masking_check: int = CHECK_IMAGES,
    spec: ModelSpec = ModelSpec(),
    overwrite: bool = False,
) -> list[Evaluation]:
    """Attack every checkpoint and write its files under ``out`` (directly for one checkpoint, else one
    sub-folder per checkpoint), then ``out/curve.png`` and ``.svg``. ``attacks`` made by :func:`build_attacks`
    have their options recorded in summary.json (others: null). ``eps``: the distances to report the error at
    (default: the paper's, :func:`lipcli.curves.default_eps`); ``seed``: default :data:`DEFAULT_SEED`. An
    attack that minimises another norm than ``norm`` gets a note (:func:`native_norm_notes`).

    Every folder is checked before any attack runs (:func:`lipcli.results_folder.claim`): one holding results
    of other settings is refused unless ``overwrite``; partial results of the same settings are resumed.
    """
    if norm not in NORMS:
        raise ConfigError(f"norm: unknown norm {norm!r}; use one of {', '.join(NORMS)}")
    if by not in ("model", "attack"):
        raise ValueError(f"by must be 'model' or 'attack', not {by!r}")
    eps = default_eps(norm) if eps is None else eps
    seed = DEFAULT_SEED if seed is None else seed
    for note in native_norm_notes(attacks, norm):
        engine.reporter.info(f"note: {note}")
    options = getattr(attacks, "options", None) or {}
    planned = []
    for label, folder, target in load_targets(paths, out, engine, data_dir=data_dir,
                                                  selection=selection, spec=spec):
        size = batch_size or evaluation_batch_size(len(target.test), target.config.evaluation.batch_size)
        planned.append(Planned(label, folder, target, {
            **target_settings(target), "norm": norm, "attacks": {name: options.get(name) for name in attacks},
            "seed": seed, "batch_size": size,
        }))

    def evaluate(plan: Planned) -> Evaluation:
        target, journal = plan.target, Journal(plan.folder)
        engine.reporter.info(f"{plan.label}: {len(target.test)} test images of {target.info.name}, norm {norm}, "
                             f"on {engine.device}")
        result = attack_set(
            target.model, target.test, attacks, norm, batch_size=plan.settings["batch_size"], device=engine.device,
            reporter=engine.reporter, seed=seed, keep_adversarials=save_adversarials, journal=journal,
        )
        if journal.resumed:
            engine.reporter.info(f"{plan.label}: resumed {journal.resumed} attack batches measured by an "
                                 f"interrupted run in {plan.folder}")
        check = _masking_check(target.model, target.test, result, attacks, engine, images=masking_check, seed=seed)
        if check and check.warning():
            result.warnings.append(check.warning())
        summary = results.summarise(
            result, eps, options, settings=plan.settings, checkpoint=str(target.path), label=plan.label,
            dataset=target.info.name, data_dir=target.config.data.data_dir if data_dir is None else str(data_dir),
            **selection.describe(), **provenance(engine.device), masking_check=asdict(check) if check else None,
        )
        return Evaluation(plan.label, plan.folder, result, summary)

    def write(plan: Planned, evaluation: Evaluation) -> None:
        results.write_distances(plan.folder / DISTANCES_FILE, evaluation.result)
        if save_adversarials:
            results.write_adversarials(plan.folder / ADVERSARIALS_FILE, evaluation.result, seed)
        else:  # an earlier run's points are not this run's
            (plan.folder / ADVERSARIALS_FILE).unlink(missing_ok=True)
        write_summary(plan.folder / SUMMARY_FILE, evaluation.summary)  # last: it marks the folder complete
        Journal(plan.folder).finish()

    figure = {"norm": norm, "checkpoints": {p.label: p.settings["checkpoint_sha256"] for p in planned}}

    def draw(evaluations: list[Evaluation]) -> None:
        results.draw_evaluations(out / CURVE_FILE, [(e.label, e.result, e.summary) for e in evaluations], by=by,
                                 eps=eps)
        if len(planned) > 1:
            write_summary(out / FIGURE_FILE, {"settings": figure})

    with ExitStack() as held:
        if len(planned) > 1:  # the figure of several checkpoints, in ``out`` itself
            held.enter_context(claim({out: figure}, FIGURE_LAYOUT, overwrite=overwrite))
        return for_each_checkpoint(planned, LAYOUT, engine, evaluate=evaluate, write=write, finish=draw,
                                   overwrite=overwrite, partial=resume_settings(engine.device))


def _masking_check(
    model: torch.nn.Module, data: ImageSet, result: RobustnessResult, attacks: Mapping[str, Attack],
    engine: Engine, *, images: int, seed: int,
) -> MaskingCheck | None:
    """The gradient-free check (:mod:`lipcli.evaluation.masking`) against the gradient attacks' per-image
    minimum; None when disabled (``images = 0``) or when no gradient attack ran."""
    blind = {name for name, attack in attacks.items()
             if getattr(attack, "decision_based", False) or getattr(attack, "score_based", False)}
    sighted = [a.distances for a in result.attacks if a.name not in blind]
    if images <= 0 or not sighted:
        return None
    attack = engine.plugins.registry("attack").get(CHECK_ATTACK).factory(queries=CHECK_QUERIES)
    with frozen_eval(model):
        return gradient_free_check(model, data, torch.stack(sighted).min(0).values, attack, CHECK_ATTACK,
                                   result.norm, images=images, device=engine.device, seed=seed)

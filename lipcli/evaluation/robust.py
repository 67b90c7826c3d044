"""``lipcli robust``: robust accuracy at fixed eps, the way AutoAttack and RobustBench count it.

An image is robust at eps only if the model classifies it correctly and no attack of the ensemble finds an
adversarial within eps. The attacks (:class:`lipcli.attacks.AttackAtBudget`, looked up by name: the standard
ensemble is APGD-CE, APGD-T, FAB-T, Square) run in sequence, each on the images still robust after the ones
before it; lipcli judges every proposal itself (eval mode, re-classified, in [0, 1], float64 distance at most
``eps`` up to float32 rounding, :func:`lipcli.attacks.within_budget`). Minimal distances from ``lipcli curve`` (``distances.csv``) count too: an image whose
distance is at most eps is broken before any attack runs.

What the numbers mean, per eps:

* ``robust_accuracy_after`` of attack k: AutoAttack's "robust accuracy after attack k", the share of all images
  still robust after the curve distances and attacks 1..k, in sequence; the last one is the ensemble's, but for
  ``carried`` images (below);
* ``attacked`` / ``broken`` of attack k: how many images it was run on (those still robust when its turn came)
  and how many of those it broke on its own; ``robust.csv`` names, per image, the attack that broke it;
* eps are run in increasing order, each from scratch, so every per-attack number is AutoAttack's at that eps.
  An image an attack broke at a smaller eps that the whole ensemble misses at a larger one is still broken
  there (its adversarial lies within the larger eps too): ``robust.csv`` names it ``<attack>@<smaller eps>``
  and ``robust_accuracy`` counts it as broken, so robust accuracy never grows with eps.

Each attack call on a batch runs under :func:`lipcli.evaluation.seeding.seeded` with the attack's name and eps:
two runs with the same seed are identical. With several processes (torchrun) each attacks every N-th batch, as
:mod:`lipcli.evaluation.attack_set` does, and the results are joined on every process.
"""

from __future__ import annotations

import csv
import json
import math
import os
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lipcli.attacks import NORMS, AttackAtBudget, within_budget
from lipcli.data.batches import elsewhere, iterate_batches, num_batches
from lipcli.data.selection import EVERY, Selection
from lipcli.data.types import ImageSet
from lipcli.distributed import all_reduce
from lipcli.engine import Engine
from lipcli.errors import ConfigError, DataError
from lipcli.evaluation.accounting import QueryCounter, measured_distances
from lipcli.evaluation.minimal_distances import build_attacks
from lipcli.evaluation.seeding import DEFAULT_SEED, seeded
from lipcli.files import sha256
from lipcli.gradients import frozen_eval
from lipcli.layout import DISTANCES_FILE, ROBUST_FILE, SUMMARY_FILE
from lipcli.models.each_checkpoint import Planned, for_each_checkpoint
from lipcli.models.targets import ModelSpec, load_targets, target_settings
from lipcli.plugin_host import PluginHost
from lipcli.reporting import SILENT, Reporter
from lipcli.result_files import write_rows, write_summary
from lipcli.results_folder import Layout, provenance
from lipcli.suggestions import did_you_mean

VERSIONS = {"standard": ("apgd-ce", "apgd-t", "fab-t", "square"), "fast": ("apgd-ce", "apgd-t")}
"""AutoAttack's ensembles by name; each attack's defaults are AutoAttack's settings for it."""
CUSTOM = "custom"
"""The version recorded when ``--attack`` names the ensemble."""
LAYOUT = Layout(SUMMARY_FILE, (ROBUST_FILE,))
"""What ``lipcli robust`` writes in a result folder."""

ROBUST, MISCLASSIFIED, CURVE = "robust", "misclassified", "curve"
"""Per-image outcomes besides the name of the attack that broke the image."""


@dataclass
class MemberResult:
    """One attack of the ensemble at one eps (see the module docstring for what each number means)."""

    name: str
    attacked: int
    broken: int
    robust_accuracy_after: float
    seconds: float
    queries: int
    outside_box: int


@dataclass
class EpsResult:
    """The ensemble at one eps: per image, who broke it (:data:`ROBUST` where nobody did), and per attack."""

    text: str
    value: float
    outcome: list[str]
    members: list[MemberResult]

    @property
    def robust_accuracy(self) -> float:
        return self.outcome.count(ROBUST) / len(self.outcome) if self.outcome else math.nan

    def count(self, outcome: str) -> int:
        return self.outcome.count(outcome)


@dataclass
class RobustResult:
    """Every eps's result on the same images, in the order the user gave the eps."""

    norm: str
    labels: torch.Tensor
    predictions: torch.Tensor
    attacks: list[str]
    per_eps: dict[str, EpsResult]
    warnings: list[str] = field(default_factory=list)
    positions: torch.Tensor | None = None
    """Each image's index in the test split (None: 0 to N-1), as :attr:`lipcli.data.types.ImageSet.positions`."""

    @property
    def clean_accuracy(self) -> float:
        return float((self.predictions == self.labels).double().mean())


@dataclass
class KnownDistances:
    """Minimal distances found earlier (``lipcli curve``), with the clean predictions they were found for."""

    source: Path
    distances: torch.Tensor
    predictions: torch.Tensor


def ensemble_names(version: str | None, attacks: list[str] | None) -> tuple[str, list[str]]:
    """(version as recorded, attack names): ``--version`` picks AutoAttack's ensemble, ``--attack`` any."""
    if version is not None and attacks:
        raise ConfigError("give --version or --attack, not both")
    if attacks:
        return CUSTOM, list(attacks)
    version = version or "standard"
    if version not in VERSIONS:
        raise ConfigError(f"version: unknown version {version!r}; use {' or '.join(VERSIONS)}."
                          + did_you_mean(version, list(VERSIONS)))
    return version, list(VERSIONS[version])


def build_ensemble(
    names: list[str], options: Mapping[str, Mapping[str, Any]], plugins: PluginHost
) -> tuple[dict[str, AttackAtBudget], dict[str, dict[str, Any]]]:
    """(attacks by registered name, each one's options with every default filled in), in the order given; an
    attack that cannot run at a fixed eps is refused (:func:`lipcli.evaluation.minimal_distances.build_attacks`)."""
    attacks = build_attacks(names, options, plugins, at_budget=True)
    return dict(attacks), attacks.options


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.no_grad()
def _predictions(model: nn.Module, data: ImageSet, batch_size: int, device: torch.device) -> torch.Tensor:
    predictions = torch.zeros(len(data), dtype=torch.int64)
    for number, (images, labels) in enumerate(iterate_batches(data, batch_size, device, skip=elsewhere(batch_size))):
        if images is not None:
            predictions[number * batch_size : number * batch_size + labels.shape[0]] = model(images).argmax(1).cpu()
    return all_reduce(predictions)


def robust_accuracy(
    model: nn.Module,
    data: ImageSet,
    attacks: Mapping[str, AttackAtBudget],
    norm: str,
    eps: list[tuple[str, float]],
    *,
    batch_size: int,
    device: torch.device,
    seed: int = DEFAULT_SEED,
    known: KnownDistances | None = None,
    reporter: Reporter = SILENT,
) -> RobustResult:
    """Run the ensemble ``attacks`` (in order) at each eps ``(as written, value)``; restores the model's mode."""
    if norm not in NORMS:
        raise ConfigError(f"norm: unknown norm {norm!r}; use one of {', '.join(NORMS)}")
    if not attacks or not eps:
        raise ValueError("need at least one attack and one eps")
    values = [value for _, value in eps]
    if len(set(values)) < len(values):
        raise ConfigError(f"eps: a value is given twice in {', '.join(text for text, _ in eps)}")
    if len(data) == 0:
        raise DataError("no test images to attack")
    batches = num_batches(len(data), batch_size)
    results: dict[str, EpsResult] = {}
    with frozen_eval(model):
        predictions = _predictions(model, data, batch_size, device)
        correct = predictions == data.labels
        if known is not None and not torch.equal(known.predictions, predictions):
            row = int((known.predictions != predictions).nonzero()[0])
            raise DataError(f"{known.source}: test image {int(data.index[row])} was classified "
                            f"{int(known.predictions[row])} there and "
                            f"{int(predictions[row])} now: not the same checkpoint (or device) as this evaluation")
        previous: EpsResult | None = None
        for text, value in sorted(eps, key=lambda point: point[1]):
            broken_by = torch.full((len(data),), -1, dtype=torch.int64)  # -1: robust so far; else attack index
            robust = correct.clone()
            if known is not None:
                robust &= ~(known.distances <= value)
            members = []
            for index, (name, attack) in enumerate(attacks.items()):
                member, broke = _run_member(
                    model, data, name, attack, norm, text, value, robust,
                    batch_size=batch_size, batches=batches, device=device, seed=seed, reporter=reporter,
                )
                broken_by[broke] = index
                robust &= ~broke
                member.robust_accuracy_after = float(robust.double().mean())
                members.append(member)
            outcome = [
                _outcome(ok, list(attacks), by, still)
                for ok, by, still in zip(correct.tolist(), broken_by.tolist(), robust.tolist())
            ]
            if previous is not None:  # an adversarial within a smaller eps is one within this eps too
                outcome = [
                    (earlier if "@" in earlier else f"{earlier}@{previous.text}")
                    if now == ROBUST and earlier not in (ROBUST, MISCLASSIFIED, CURVE) else now
                    for now, earlier in zip(outcome, previous.outcome)
                ]
            previous = results[text] = EpsResult(text, value, outcome, members)
    result = RobustResult(norm, data.labels.clone(), predictions, list(attacks), {t: results[t] for t, _ in eps},
                          positions=data.positions)
    result.warnings = masking_warnings(result, attacks)
    return result


def _outcome(correct: bool, names: list[str], broken_by: int, robust: bool) -> str:
    if not correct:
        return MISCLASSIFIED
    if broken_by >= 0:
        return names[broken_by]
    return ROBUST if robust else CURVE


def _run_member(
    model: nn.Module, data: ImageSet, name: str, attack: AttackAtBudget, norm: str, text: str, value: float,
    robust: torch.Tensor, *, batch_size: int, batches: int, device: torch.device, seed: int, reporter: Reporter,
) -> tuple[MemberResult, torch.Tensor]:
    """One attack on the images ``robust`` (bool ``[N]``) at eps ``value``: its result, and which it broke."""
    counter = QueryCounter(model)
    broke = torch.zeros(len(data), dtype=torch.bool)
    seconds, outside = 0.0, 0
    with reporter.task(f"{name} ({norm} {text})", batches) as task:
        batches = iterate_batches(data, batch_size, device, skip=elsewhere(batch_size, robust))
        for number, (images, labels) in enumerate(batches):
            first = number * batch_size
            keep = robust[first : first + labels.shape[0]].to(device)
            if images is not None:
                budget = torch.full((int(keep.sum()),), value, dtype=torch.float64, device=device)
                _sync(device)
                started = time.perf_counter()
                with seeded(seed, f"{name}@{text}", number):
                    proposals = attack.run_at(counter, images[keep], labels[keep], norm, budget).detach()
                _sync(device)
                seconds += time.perf_counter() - started
                measured, bad = measured_distances(model, images[keep], labels[keep], proposals, norm)
                outside += bad
                rows = torch.arange(first, first + labels.shape[0])[keep.cpu()]
                broke[rows] = within_budget(measured, value).cpu()
            task.advance(1)
    broke = all_reduce(broke.to(torch.int64)) > 0  # each process filled its own batches' rows
    queries, outside = (int(v) for v in all_reduce(torch.tensor([counter.queries, outside])).tolist())
    seconds = float(all_reduce(torch.tensor(seconds, dtype=torch.float64), "max"))
    member = MemberResult(name, int(robust.sum()), int(broke.sum()), math.nan, seconds, queries, outside)
    return member, broke


def masking_warnings(result: RobustResult, attacks: Mapping[str, AttackAtBudget]) -> list[str]:
    """A gradient-free attack that breaks images every gradient attack before it missed: a sign of masking."""
    warnings = []
    blind = {name for name, attack in attacks.items() if attack.score_based or attack.decision_based}
    for point in result.per_eps.values():
        sighted = []
        for member in point.members:
            if member.name in blind and sighted and member.broken:
                warnings.append(
                    f"possible gradient masking: {member.name} (no gradients) broke {member.broken} images at eps "
                    f"{point.text} that {', '.join(sighted)} could not"
                )
            elif member.name not in blind:
                sighted.append(member.name)
    return warnings


def read_curve(
    path: Path, *, norm: str, checkpoint: Path, digest: str, source: dict[str, Any] | None, dataset: str,
    data: ImageSet, split: ImageSet | None = None,
) -> KnownDistances:
    """The ``min`` column of ``lipcli curve``'s ``distances.csv`` (``path`` or the folder holding it) for the
    images of ``data`` (found by their index in the test split, so a curve of more images serves), checked to
    describe the same model (``digest``: its SHA-256, :attr:`lipcli.models.targets.Target.sha256`; ``source``:
    how a model lipcli did not train was loaded, normalisation included), data set, norm and images as this
    evaluation: with ``split`` (the whole test split), the curve's images are taken from it by their indices
    and must have the digest the curve recorded. Anything else is refused."""
    csv_path = Path(path) / DISTANCES_FILE if Path(path).is_dir() else Path(path)
    summary_path = csv_path.parent / SUMMARY_FILE
    if not csv_path.is_file() or not summary_path.is_file():
        raise DataError(f"{path}: expected lipcli curve's {DISTANCES_FILE} with its {SUMMARY_FILE} beside it")
    try:
        summaries = json.loads(summary_path.read_text())
    except ValueError as exc:
        raise DataError(f"{summary_path}: not JSON ({exc})") from None
    summary = summaries[0] if isinstance(summaries, list) and summaries else summaries
    if not isinstance(summary, dict):
        raise DataError(f"{summary_path}: not a lipcli curve summary")
    recorded = Path(str(summary.get("checkpoint", "")))
    settings = summary.get("settings") if isinstance(summary.get("settings"), dict) else {}
    hashed = settings.get("checkpoint_sha256", summary.get("checkpoint_sha256"))
    if hashed:  # the checkpoint's bytes, wherever either command was run from
        same = hashed == digest
    else:  # a curve from before checkpoints were hashed: its path as written, from the current folder
        same = recorded.is_file() and os.path.samefile(recorded, checkpoint)
    if not same:
        raise DataError(f"{csv_path}: measured on checkpoint {str(recorded)!r}, not {str(checkpoint)!r}")
    if settings.get("model") != source:
        raise DataError(f"{csv_path}: measured on the model loaded as {settings.get('model')}, not as {source}")
    for key, wanted in (("norm", norm), ("dataset", dataset)):
        if summary.get(key) != wanted:
            raise DataError(f"{csv_path}: measured with {key} {summary.get(key)!r}, not {wanted!r}")
    with csv_path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    if not rows or "min" not in rows[0]:
        raise DataError(f"{csv_path}: no images with a 'min' column; not a lipcli curve distances file")
    try:
        listed = [int(row["index"]) for row in rows]
        by_index = dict(zip(listed, rows))
        if len(by_index) < len(listed):
            twice = min(index for index, count in Counter(listed).items() if count > 1)
            raise DataError(f"{csv_path}: test index {twice} has two rows; not a file lipcli wrote")
        wanted = data.index.tolist()
        missing = [index for index in wanted if index not in by_index]
        if missing:
            raise DataError(f"{csv_path}: {len(missing)} of the {len(wanted)} images evaluated here are not in it "
                            f"(test index {missing[0]} is the first); run lipcli curve on these images too")
        chosen = [by_index[index] for index in wanted]
        found = torch.tensor([int(row["label"]) for row in chosen], dtype=torch.int64)
        predictions = torch.tensor([int(row["prediction"]) for row in chosen], dtype=torch.int64)
        distances = torch.tensor([float(row["min"]) for row in chosen], dtype=torch.float64)
    except (KeyError, TypeError, ValueError) as exc:
        raise DataError(f"{csv_path}: not a lipcli curve distances file ({exc})") from None
    if not torch.equal(found, data.labels.cpu()):
        row = int((found != data.labels.cpu()).nonzero()[0])
        raise DataError(f"{csv_path}: its images are not this evaluation's (test index {wanted[row]} has label "
                        f"{int(found[row])} there, {int(data.labels[row])} here)")
    images = settings.get("images_sha256")
    if split is not None and images and (max(listed) >= len(split) or min(listed) < 0
                                         or split.take(torch.tensor(listed)).sha256() != images):
        raise DataError(f"{csv_path}: measured on other images than those of this data set at its indices (their "
                        "digest differs: another data folder, or files added or changed)")
    return KnownDistances(csv_path, distances, predictions)


def summarise(result: RobustResult, options: Mapping[str, Mapping[str, Any]], **context: Any) -> dict[str, Any]:
    """summary.json: what was run (context, every attack's options) and, per eps, the ensemble and each attack."""
    per_eps = {}
    for text, point in result.per_eps.items():
        per_eps[text] = {
            "value": point.value,
            "robust_accuracy": point.robust_accuracy,
            "robust": point.count(ROBUST),
            "broken_by_curve": point.count(CURVE),
            "carried": sum("@" in outcome for outcome in point.outcome),
            "robust_accuracy_after": {m.name: m.robust_accuracy_after for m in point.members},
            "attacks": {
                m.name: {"attacked": m.attacked, "broken": m.broken, "seconds": m.seconds, "queries": m.queries,
                         "outside_box": m.outside_box}
                for m in point.members
            },
        }
    members = [m for point in result.per_eps.values() for m in point.members]
    return {
        **context,
        "norm": result.norm,
        "eps": {text: point.value for text, point in result.per_eps.items()},
        "attacks": result.attacks,
        "options": {name: dict(options.get(name, {})) for name in result.attacks},
        "images": int(result.labels.numel()),
        "clean_accuracy": result.clean_accuracy,
        "robust_accuracy": {text: point.robust_accuracy for text, point in result.per_eps.items()},
        "per_eps": per_eps,
        "meaning": "robust_accuracy_after[k]: share of all images still robust after the curve distances and "
                   "attacks 1..k in sequence (AutoAttack's); attacks[k].broken: images attack k broke among the "
                   "attacked ones still robust when its turn came",
        "seconds": sum(m.seconds for m in members),
        "queries": sum(m.queries for m in members),
        "warnings": list(result.warnings),
    }


def write_outcomes(path: Path, result: RobustResult) -> None:
    """robust.csv: index in the test split, label, prediction, then per eps (as written) ``robust``,
    ``misclassified``, ``curve`` or the attack that broke the image."""
    write_rows(path, result.labels, result.predictions,
               {text: point.outcome for text, point in result.per_eps.items()}, index=result.positions)


@dataclass
class RobustEvaluation:
    """One checkpoint's result: its label, the folder written, the result and its summary."""

    label: str
    folder: Path
    result: RobustResult
    summary: dict[str, Any]


def evaluate_robust(
    paths: list[Path],
    engine: Engine,
    *,
    norm: str,
    attacks: Mapping[str, AttackAtBudget],
    options: Mapping[str, Mapping[str, Any]],
    eps: list[tuple[str, float]],
    out: Path,
    version: str,
    seed: int | None = None,
    curves: list[Path] | None = None,
    selection: Selection = EVERY,
    batch_size: int | None = None,
    data_dir: Path | None = None,
    spec: ModelSpec = ModelSpec(),
    overwrite: bool = False,
) -> list[RobustEvaluation]:
    """Robust accuracy of every checkpoint; writes robust.csv and summary.json under ``out`` (directly for one
    checkpoint, else one sub-folder each). ``curves``: one ``lipcli curve`` result per checkpoint, or none.
    A folder holding results of other settings is refused before any work unless ``overwrite``; ``seed``:
    default :data:`DEFAULT_SEED`."""
    seed = DEFAULT_SEED if seed is None else seed
    models = len(paths) or 1  # no path: the one model of --model
    if curves and len(curves) != models:
        raise ConfigError(f"curve: give one curve result per checkpoint ({models}), not {len(curves)}")
    planned, knowns = [], {}
    for number, (label, folder, target) in enumerate(load_targets(paths, out, engine, data_dir=data_dir,
                                                                  selection=selection, spec=spec)):
        size = batch_size or target.config.evaluation.batch_size
        known = None
        if curves:
            known = read_curve(curves[number], norm=norm, checkpoint=target.path, digest=target.sha256,
                               source=target.source, dataset=target.info.name, data=target.test,
                               split=target.split)
        knowns[folder] = known
        planned.append(Planned(label, folder, target, {
            **target_settings(target), "norm": norm, "eps": dict(eps), "version": version,
            "attacks": {name: dict(options.get(name, {})) for name in attacks}, "seed": seed, "batch_size": size,
            "curve_sha256": None if known is None else sha256(known.source),
        }))

    def evaluate(plan: Planned) -> RobustEvaluation:
        target, known = plan.target, knowns[plan.folder]
        engine.reporter.info(f"{plan.label}: {len(target.test)} test images of {target.info.name}, {norm} eps "
                             f"{', '.join(text for text, _ in eps)}, {version} ({', '.join(attacks)}), on "
                             f"{engine.device}")
        result = robust_accuracy(
            target.model, target.test, attacks, norm, eps, batch_size=plan.settings["batch_size"],
            device=engine.device, seed=seed, known=known, reporter=engine.reporter,
        )
        summary = summarise(
            result, options, settings=plan.settings, checkpoint=str(target.path), label=plan.label,
            dataset=target.info.name, version=version, curve=None if known is None else str(known.source),
            data_dir=target.config.data.data_dir if data_dir is None else str(data_dir), **selection.describe(),
            **provenance(engine.device),
        )
        return RobustEvaluation(plan.label, plan.folder, result, summary)

    def write(plan: Planned, evaluation: RobustEvaluation) -> None:
        write_outcomes(plan.folder / ROBUST_FILE, evaluation.result)
        write_summary(plan.folder / SUMMARY_FILE, evaluation.summary)

    return for_each_checkpoint(planned, LAYOUT, engine, evaluate=evaluate, write=write, overwrite=overwrite)

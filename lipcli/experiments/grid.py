"""An experiment grid: one TOML file, expanded into runs.

The file is an ordinary experiment file (its sections are every run's base configuration) with two more
tables:

* ``[grid]``: configuration keys, each with a list of values; the runs are every combination, in file
  order. Keys are dotted (``"defence.name" = [...]`` or ``defence.name = [...]``); any configuration key
  can vary, ``recipe`` included.
* ``[evaluate]``: what is measured once a run is trained (see :class:`EvaluateTable` and :class:`EvaluationPlan`).

Every run gets a folder named from its settings (data set, architecture, defence, seed, and any other key the
grid varies), so that running the file again finds it: a finished run is skipped, an interrupted one resumes.
"""

from __future__ import annotations

import itertools
import json
import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal, Mapping, Sequence

from lipcli.attacks import NORMS
from lipcli.config.loader import parse_override, resolve_layers, validate
from lipcli.config.schema import ExperimentConfig, NonNegativeInt, PositiveInt
from lipcli.config.toml_reader import load_toml
from lipcli.curves import default_eps, parse_eps
from lipcli.errors import ConfigError
from lipcli.evaluation.minimal_distances import DEFAULT_ATTACK
from lipcli.evaluation.robust import VERSIONS
from lipcli.evaluation.seeding import DEFAULT_SEED
from lipcli.layout import CURVE_PREFIX, ROBUST_PREFIX, curve_folder

EpsText = str | int | float
"""One eps or several as a grid writes them: ``"8/255"``, ``"0.1,1.5"`` or a number."""


@dataclass
class EvaluationSettings:
    """The keys of ``[evaluate]`` that :class:`EvaluationPlan` keeps as written, with their defaults."""

    norms: list[str] = field(default_factory=lambda: list(NORMS))
    attacks: dict[str, list[str]] = field(default_factory=dict)
    attack_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    limit: PositiveInt | None = None
    batch_size: PositiveInt | None = None
    stats: bool = True
    checkpoint: Literal["last", "best"] = "last"
    """``last`` (the final model) or ``best`` (lowest validation error: runs need ``data.validation`` > 0).
    Neither is chosen on the test set."""
    seed: NonNegativeInt = DEFAULT_SEED
    """The attacks' seed (``lipcli curve --seed``)."""


@dataclass
class RobustTable:
    """``[evaluate.robust]`` as written: the eps per norm (a list, or one comma-separated string) at which to
    measure robust accuracy, and AutoAttack's version."""

    l2: list[EpsText] | EpsText = field(default_factory=list)
    linf: list[EpsText] | EpsText = field(default_factory=list)
    version: str = "standard"


@dataclass
class EvaluateTable(EvaluationSettings):
    """``[evaluate]`` as written: its schema, checked as every configuration table is
    (:func:`lipcli.config.loader.validate`), before :func:`_evaluation` reads its norms, eps and version."""

    eps: dict[str, EpsText] = field(default_factory=dict)
    robust: RobustTable = field(default_factory=RobustTable)


@dataclass
class EvaluationPlan(EvaluationSettings):
    """``[evaluate]``: the norms to draw error curves in, with their attacks, eps and attack options, the
    image limit, whether to measure Lipschitz statistics, and which checkpoint is measured; ``[evaluate.robust]``:
    the eps per norm at which to measure robust accuracy (``lipcli robust``) and AutoAttack's version."""

    eps: dict[str, list[tuple[str, float]]] = field(default_factory=dict)
    robust: dict[str, list[tuple[str, float]]] = field(default_factory=dict)
    robust_version: str = "standard"

    def attacks_for(self, norm: str) -> list[str]:
        return self.attacks.get(norm, [DEFAULT_ATTACK])

    def options_for(self, norm: str) -> dict[str, dict[str, Any]]:
        """``attack_options`` of the attacks run in ``norm`` (any case), the others left out."""
        names = {name.lower() for name in self.attacks_for(norm)}
        return {name: options for name, options in self.attack_options.items() if name.lower() in names}

    def eps_for(self, norm: str) -> list[tuple[str, float]]:
        return self.eps.get(norm) or default_eps(norm)

    def stage_plan(self, stage: str) -> dict[str, Any]:
        """What a stage's result depends on (besides the model): recorded beside the result, so that a
        changed ``[evaluate]`` reruns exactly the stages it changes."""
        common = {"checkpoint": self.checkpoint, "limit": self.limit}
        if stage == "stats":
            return {**common, "eps": {n: self.eps_for(n) for n in NORMS}}
        if stage.startswith(ROBUST_PREFIX):
            norm = stage.removeprefix(ROBUST_PREFIX)
            curve = self.stage_plan(curve_folder(norm)) if norm in self.norms else None  # its distances count too
            return {**common, "version": self.robust_version, "attacks": list(VERSIONS[self.robust_version]),
                    "eps": self.robust[norm], "seed": self.seed, "curve": curve}
        norm = stage.removeprefix(CURVE_PREFIX)
        attacks = self.attacks_for(norm)
        plan = {**common, "attacks": attacks, "attack_options": self.options_for(norm), "eps": self.eps_for(norm)}
        if self.seed != DEFAULT_SEED:  # recorded only when set, so curves measured before seeds existed stay current
            plan["seed"] = self.seed
        return plan


@dataclass
class PlannedRun:
    """One run of the grid: its folder name, resolved configuration and the grid values that made it."""

    name: str
    config: ExperimentConfig
    settings: dict[str, Any]


@dataclass
class Grid:
    """An expanded experiment file."""

    path: Path
    runs: list[PlannedRun]
    evaluation: EvaluationPlan


def load_grid(path: Path, out: Path | None = None, overrides: Sequence[str] = ()) -> Grid:
    """Read and expand ``path``; every run is resolved (and so validated) now, with its folder under ``out``
    (default: ``<output.root>/<file name without .toml>``). ``overrides`` (``lipcli run --set KEY=VALUE``) are
    the top layer of every run, above the file and the grid's values; a key the grid varies, or ``output.dir``,
    cannot be overridden."""
    data = dict(load_toml(path))
    axes = _axes(data.pop("grid", {}), path)
    evaluation = _evaluation(data.pop("evaluate", {}), path)
    keys = [key for key, _ in axes]
    if "dir" in data.get("output", {}) or "output.dir" in keys:
        raise ConfigError(f"{path}: output.dir: a grid gives each run its own folder, under --out or "
                          f"<output.root>/{path.stem}; set output.root instead")
    forced = [(f"--set {text}", *parse_override(text)) for text in overrides]
    for _, key, _ in forced:
        if key == "output.dir":
            raise ConfigError("--set output.dir: a grid gives each run its own folder; use --out for their parent")
        for axis in keys:
            if key == axis or key.startswith(f"{axis}.") or axis.startswith(f"{key}."):
                raise ConfigError(f"--set {key}: the grid varies {axis}; change its values in {path}")
    runs: list[PlannedRun] = []
    names: dict[str, dict[str, Any]] = {}
    identities: dict[str, dict[str, Any]] = {}
    for values in itertools.product(*(values for _, values in axes)):
        settings = dict(zip(keys, values, strict=True))
        layers = [(f"{path}: grid {key} = {value!r}", key, value) for key, value in settings.items()]
        config = resolve_layers(data, str(path), layers + forced)
        name = run_name(config, settings)
        if name in names:
            raise ConfigError(f"{path}: grid: the runs {names[name]} and {settings} both get the folder name {name!r}")
        names[name] = settings
        identity = json.dumps(identity_tree(config), sort_keys=True, default=str)
        if identity in identities:
            raise ConfigError(f"{path}: grid: the runs {identities[identity]} and {settings} have the same configuration")
        identities[identity] = settings
        if evaluation.checkpoint == "best" and config.data.validation == 0:
            raise ConfigError(
                f"{path}: evaluate.checkpoint: 'best' is chosen on held-out images, and run {name} holds none "
                f"(data.validation = 0): evaluate 'last'"
            )
        config.output.dir = str((out or Path(config.output.root) / path.stem) / name)
        runs.append(PlannedRun(name, config, settings))
    return Grid(path, runs, evaluation)


def _axes(table: Any, path: Path, prefix: str = "") -> list[tuple[str, list[Any]]]:
    """``[grid]`` as (dotted key, values) pairs; nested tables (``defence.name = [...]``) are flattened."""
    if not isinstance(table, Mapping):
        raise ConfigError(f"{path}: grid: expected a table of key = [values]")
    axes: list[tuple[str, list[Any]]] = []
    for key, value in table.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping):
            axes.extend(_axes(value, path, f"{dotted}."))
        elif isinstance(value, list) and value:
            axes.append((dotted, value))
        else:
            raise ConfigError(f"{path}: grid.{dotted}: expected a non-empty list of values, got {value!r}")
    return axes


NOT_A_SETTING = (
    ("training", "device"), ("output", "dir"), ("output", "root"), ("data", "data_dir"), ("data", "download"),
    ("evaluation", "batch_size"),
)
"""Configuration keys that change where or how fast a run is computed, not its results."""


def identity_tree(config: ExperimentConfig) -> dict[str, Any]:
    """The configuration as a tree with :data:`NOT_A_SETTING` blanked: equal trees, equal runs."""
    tree = config.to_dict()
    for section, key in NOT_A_SETTING:
        tree[section][key] = None
    return tree


def _evaluation(table: Any, path: Path) -> EvaluationPlan:
    """``[evaluate]`` checked against :class:`EvaluateTable` like every configuration table (errors name
    ``evaluate.<key>``), then read with what only the engine knows: its norms, eps and AutoAttack's versions."""
    written = validate(EvaluateTable, table, str(path), "evaluate")
    norms = written.norms
    if not all(n in NORMS for n in norms) or len(set(norms)) < len(norms):
        raise ConfigError(f"{path}: evaluate.norms: expected a list of distinct {', '.join(NORMS)}, got {norms!r}")
    for norm, names in written.attacks.items():
        if norm not in NORMS or not names:
            raise ConfigError(f"{path}: evaluate.attacks.{norm}: expected l2 or linf = [attack names]")
    eps = {}
    for norm, text in written.eps.items():
        if norm not in NORMS:
            raise ConfigError(f"{path}: evaluate.eps.{norm}: expected l2 or linf")
        eps[norm] = _eps(text, path, f"eps.{norm}")
    version = written.robust.version
    if version not in VERSIONS:
        raise ConfigError(f"{path}: evaluate.robust.version: expected {' or '.join(VERSIONS)}, got {version!r}")
    robust = {}
    for norm in (n for n in NORMS if n in table.get("robust", {})):  # measured only where written
        robust[norm] = _eps(getattr(written.robust, norm), path, f"robust.{norm}")
        if not robust[norm]:
            raise ConfigError(f"{path}: evaluate.robust.{norm}: expected eps values, e.g. [\"8/255\"]")
    kept = {f.name: getattr(written, f.name) for f in fields(EvaluationSettings)}
    return EvaluationPlan(**kept, eps=eps, robust=robust, robust_version=version)


def _eps(written: EpsText | list[EpsText], path: Path, key: str) -> list[tuple[str, float]]:
    """Eps as written (one text or number, or a list of them) parsed; errors name ``evaluate.<key>``."""
    items = written if isinstance(written, list) else [written]
    try:
        return parse_eps(",".join(str(item) for item in items))
    except ValueError as exc:
        raise ConfigError(f"{path}: evaluate.{key}: {exc}") from None


_NAMED = ("data.dataset", "model.arch", "defence.name", "model.tanh_head", "training.seed")
"""Settings always in a run's name (through the data set, architecture, defence label and seed)."""


def run_name(config: ExperimentConfig, settings: Mapping[str, Any]) -> str:
    """``<dataset>-<arch>-<defence>[-<key><value>...]-s<seed>``, safe as a folder name."""
    parts = [config.data.dataset, config.model.arch, config.defence_label]
    parts += [f"{key.rsplit('.', 1)[-1]}{_compact(value)}" for key, value in _leaves(settings) if key not in _NAMED]
    parts.append(f"s{config.training.seed}")
    return re.sub(r"[^A-Za-z0-9+._=-]+", "_", "-".join(parts))


def _leaves(settings: Mapping[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    """Table values spread into dotted leaves (``model = {arch = "x", options = {width = 8}}`` gives
    ``model.arch`` and ``model.options.width``), so a name shows each setting once, by its own key."""
    leaves: list[tuple[str, Any]] = []
    for key, value in settings.items():
        if isinstance(value, Mapping):  # an empty table sets nothing, and names nothing
            leaves += _leaves(value, f"{prefix}{key}.")
        else:
            leaves.append((f"{prefix}{key}", value))
    return leaves


def _compact(value: Any) -> str:
    if isinstance(value, list):
        return "_".join(_compact(v) for v in value)
    return str(value)

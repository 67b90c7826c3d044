"""Resolving an experiment: defaults < TOML file < explicit flags < ``--set section.key=value``.

Every layer is checked against the schema as it is merged, so an error names the dotted key and where the
bad value came from (the file, the flag, or the ``--set``). Nothing is silently ignored: an unknown key is
an error with the closest valid key suggested.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import types
import typing
from pathlib import Path
from typing import Any, Iterable, Mapping, TypeVar

from lipcli.config.recipes import load_recipe
from lipcli.config.schema import LR_SCHEDULES, AtLeast, ExperimentConfig
from lipcli.config.toml_reader import load_toml, tomllib
from lipcli.errors import ConfigError
from lipcli.suggestions import did_you_mean, did_you_mean_any, suggest

T = TypeVar("T")

_TYPE_NAMES = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}
_PYTHON_TYPES: dict[Any, type | tuple[type, ...]] = {int: int, float: (int, float), bool: bool, str: str}
"""What each scalar annotation accepts from TOML (a bool is never taken for a number)."""


def parse_override(text: str, option: str = "--set", form: str = "section.key=value") -> tuple[str, Any]:
    """Split ``section.key=value``; the value is read as a TOML value, else taken as a bare string. Errors
    name the command-line ``option`` the text came from and the ``form`` it takes."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"{option} {text!r}: expected {form}")
    raw = raw.strip()
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    return key, value


def resolve(
    config_file: Path | None = None,
    flags: Mapping[str, Any] | None = None,
    overrides: Iterable[str] = (),
) -> ExperimentConfig:
    """The resolved configuration; ``flags`` maps dotted keys to explicitly given flag values.

    A ``recipe`` named by any layer is applied first, just above the defaults, so that the file, the flags
    and the overrides all refine it.
    """
    flags = {k: v for k, v in (flags or {}).items() if v is not None}
    file_data = load_toml(config_file) if config_file is not None else {}
    grid_tables = [key for key in ("grid", "evaluate") if key in file_data]
    if grid_tables:
        raise ConfigError(
            f"{config_file}: [{grid_tables[0]}] belongs to an experiment grid; run the file with `lipcli run {config_file}`"
        )
    layers = [(f"flag for {key}", key, value) for key, value in flags.items()]
    layers += [(f"--set {text}", *parse_override(text)) for text in overrides]
    return resolve_layers(file_data, str(config_file) if config_file is not None else None, layers)


def resolve_layers(
    file_data: Mapping[str, Any], file_source: str | None, layers: Iterable[tuple[str, str, Any]]
) -> ExperimentConfig:
    """Defaults < recipe < ``file_data`` (already parsed; errors name ``file_source``) < each dotted
    ``(source, key, value)`` layer in order (flags, ``--set`` overrides, a grid's values)."""
    layers = list(layers)
    recipe = file_data.get("recipe")
    for _, key, value in layers:
        if key == "recipe":
            recipe = value
    tree = ExperimentConfig().to_dict()
    if recipe is not None:
        if not isinstance(recipe, str):
            raise ConfigError(f"recipe: expected a recipe name, got {_show(recipe)}")
        _merge(tree, ExperimentConfig, load_recipe(recipe), f"recipe {recipe!r}", "")
    if file_data:
        _merge(tree, ExperimentConfig, file_data, file_source or "configuration", "")
    for source, key, value in layers:
        _set_dotted(tree, key, value, source)
    return build(tree)


def validate(cls: type[T], table: Any, source: str, key: str = "") -> T:
    """``table`` read over the defaults of the schema dataclass ``cls`` (a whole configuration, or a table of its
    own such as a grid's ``[evaluate]``), by the checks every configuration table gets: types, bounds, choices,
    unknown keys. Errors name ``source`` and the dotted key, under ``key`` (the table's own key, if any)."""
    if not isinstance(table, Mapping):
        raise ConfigError(f"{source}: {key + ': ' if key else ''}expected a table, got {_show(table)}")
    tree = dataclasses.asdict(cls())
    _merge(tree, cls, table, source, f"{key}." if key else "")
    return _instantiate(cls, tree)


def build(tree: Mapping[str, Any]) -> ExperimentConfig:
    """An :class:`ExperimentConfig` from a plain (already validated) nested dict, e.g. a checkpoint's; the keys are
    checked one by one by :func:`validate`, then the rules that join several keys here."""
    config = validate(ExperimentConfig, tree, "configuration")
    training, data = config.training, config.data
    if training.lr <= 0:
        raise ConfigError(f"training.lr: must be positive, got {training.lr}")
    milestones, schedule = training.lr_milestones, training.lr_schedule
    if any(m < 0 for m in milestones):
        raise ConfigError(f"training.lr_milestones: epochs must be at least 0, got {milestones}")
    if schedule not in LR_SCHEDULES:
        raise ConfigError(
            f"training.lr_schedule: unknown schedule {schedule!r}." + did_you_mean(schedule, list(LR_SCHEDULES))
        )
    if milestones and schedule != "multistep":
        raise ConfigError(
            f"training.lr_milestones: only the multistep schedule has milestones, and training.lr_schedule is "
            f"{schedule!r}; set training.lr_schedule = \"multistep\" to use them, or training.lr_milestones = []"
        )
    for i, plan in enumerate(training.earlier_plans):
        if len(plan) != 2 or plan[0] < 1 or not 0 <= plan[1] <= training.epochs:
            raise ConfigError(
                f"training.earlier_plans[{i}]: expected [epochs, until_epoch] with epochs >= 1 and "
                f"0 <= until_epoch <= training.epochs, got {plan}"
            )
    validation = data.validation
    if isinstance(validation, float) and validation >= 1:
        if not validation.is_integer():
            raise ConfigError(
                f"data.validation: a count of images must be a whole number (or a fraction below 1), got {validation}"
            )
        data.validation = int(validation)
    return config


def build_stored(tree: Mapping[str, Any]) -> ExperimentConfig:
    """The configuration a run stored (its ``config.toml`` or a checkpoint's), read as that run was trained.

    A key the run predates takes the value of the behaviour it ran with, not today's default, so a changed
    default never alters an old run: its schedule was ``multistep`` without warm-up, and a run stored before
    ``data.validation_seed`` existed (every run since writes it) held out no training images.
    """
    stored = {key: dict(value) if isinstance(value, Mapping) else value for key, value in tree.items()}
    training, data = stored.setdefault("training", {}), stored.setdefault("data", {})
    if isinstance(training, dict):
        training.setdefault("lr_schedule", "multistep")
        training.setdefault("warmup_epochs", 0.0)
    if isinstance(data, dict) and "validation_seed" not in data:
        data.setdefault("validation", 0)
    return build(stored)


def _instantiate(cls: type, tree: Mapping[str, Any]) -> Any:
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for f in dataclasses.fields(cls):
        hint = hints[f.name]
        kwargs[f.name] = _instantiate(hint, tree[f.name]) if dataclasses.is_dataclass(hint) else tree[f.name]
    return cls(**kwargs)


def _merge(tree: dict[str, Any], cls: type, data: Mapping[str, Any], source: str, prefix: str) -> None:
    hints = typing.get_type_hints(cls, include_extras=True)
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        if key not in hints:
            close = [f"{prefix}{k}" for k in suggest(key, list(hints))]
            valid = "Valid keys: " + ", ".join(f"{prefix}{k}" for k in hints) + "."
            raise ConfigError(f"{source}: unknown key {dotted!r}. {did_you_mean_any(close) if close else valid}")
        hint = hints[key]
        if dataclasses.is_dataclass(hint):
            if not isinstance(value, Mapping):
                raise ConfigError(f"{source}: {dotted}: expected a table [{dotted}], got {_show(value)}")
            _merge(tree[key], hint, value, source, f"{dotted}.")
        elif typing.get_origin(hint) is dict:
            tree[key] = _merged_tables(tree[key], _check(hint, value, source, dotted))
        else:
            tree[key] = _check(hint, value, source, dotted)


def _merged_tables(base: Mapping[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` updated by ``update``, nested tables merged key by key: ``--set defence.options.wcat.lam=0.05``
    changes one parameter of a primitive and keeps the others set below it."""
    merged = dict(base)
    for key, value in update.items():
        old = merged.get(key)
        merged[key] = _merged_tables(old, value) if isinstance(old, Mapping) and isinstance(value, Mapping) else value
    return merged


def _set_dotted(tree: dict[str, Any], key: str, value: Any, source: str) -> None:
    """Apply one override ``a.b.c = value`` through the same checks as a TOML file."""
    parts = key.split(".")
    if any(not p for p in parts):
        raise ConfigError(f"{source}: malformed key {key!r}")
    nested: Any = value
    for part in reversed(parts[1:]):
        nested = {part: nested}
    _merge(tree, ExperimentConfig, {parts[0]: nested}, source, "")


def _check(hint: Any, value: Any, source: str, dotted: str) -> Any:
    """Validate (and normalise: int to float) one value against its annotation: a scalar, a ``Literal`` choice,
    a list or a table of such values, a union of them, or one of them ``Annotated`` with an :class:`AtLeast`."""
    if hint is Any:
        return value
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    suggestion = ""
    if origin is typing.Annotated:
        value = _check(args[0], value, source, dotted)
        for bound in hint.__metadata__:
            if isinstance(bound, AtLeast) and value < bound.low:
                raise ConfigError(f"{source}: {dotted}: must be at least {bound.low}, got {value}")
        return value
    if origin in (typing.Union, types.UnionType):
        if type(None) in args and (value is None or (isinstance(value, str) and value.lower() in ("none", "null"))):
            return None
        inner = [a for a in args if a is not type(None)]
        shape = list if isinstance(value, list) else dict if isinstance(value, Mapping) else None
        shaped = [a for a in inner if shape and typing.get_origin(a) is shape]
        if len(inner) == 1 or shaped:  # a list or table is checked as the one it can be: the error names its item
            return _check((shaped or inner)[0], value, source, dotted)
        for option in inner:  # in order: int before float keeps a whole count an integer
            with contextlib.suppress(ConfigError):
                return _check(option, value, source, dotted)
    elif origin is typing.Literal:
        if any(type(value) is type(choice) and value == choice for choice in args):
            return value
        close = suggest(str(value), [str(choice) for choice in args])
        suggestion = f". {did_you_mean_any(close)}" if close else ""
    elif origin is dict:
        if isinstance(value, Mapping):
            return {key: _check(args[1], item, source, f"{dotted}.{key}") for key, item in value.items()}
    elif origin is list:
        if isinstance(value, list):
            return [_check(args[0], item, source, f"{dotted}[{i}]") for i, item in enumerate(value)]
    elif isinstance(value, _PYTHON_TYPES[hint]) and (hint is bool or not isinstance(value, bool)):
        if hint is not float:
            return value
        if math.isfinite(value):
            return float(value)
        raise ConfigError(f"{source}: {dotted}: expected a finite number, got {float(value)}")
    raise ConfigError(f"{source}: {dotted}: expected {_describe(hint)}, got {_show(value)}{suggestion}")


def _describe(hint: Any) -> str:
    """What an annotation accepts, as an error says it: ``an integer or a number``, ``'last' or 'best'``."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Annotated:
        return _describe(args[0])
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in args if a is not type(None))
    if origin is typing.Literal:
        return " or ".join(repr(choice) for choice in args)
    return {list: "a list", dict: "a table"}.get(origin) or _TYPE_NAMES[hint]


def _show(value: Any) -> str:
    return f"{value!r} ({type(value).__name__})"

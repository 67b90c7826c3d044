"""Configuration layers: defaults < TOML file < flags < --set, with errors that name the dotted key."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pytest

from lipcli.config import ExperimentConfig, build, build_stored, dumps, resolve
from lipcli.config.loader import parse_override, validate
from lipcli.config.schema import PositiveInt
from lipcli.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "experiment.toml"
    path.write_text(text)
    return path


def test_defaults_when_nothing_is_given() -> None:
    assert resolve() == ExperimentConfig()


def test_toml_overrides_defaults(tmp_path: Path) -> None:
    cfg = resolve(write(tmp_path, "[training]\nepochs = 7\n[model]\narch = 'resnet34'\n"))
    assert cfg.training.epochs == 7
    assert cfg.model.arch == "resnet34"
    assert cfg.training.batch_size == ExperimentConfig().training.batch_size


def test_flag_overrides_toml(tmp_path: Path) -> None:
    cfg = resolve(write(tmp_path, "[training]\nepochs = 7\nlr = 0.5\n"), {"training.epochs": 3})
    assert cfg.training.epochs == 3
    assert cfg.training.lr == 0.5


def test_unset_flag_does_not_override_toml(tmp_path: Path) -> None:
    cfg = resolve(write(tmp_path, "[training]\nepochs = 7\n"), {"training.epochs": None})
    assert cfg.training.epochs == 7


def test_set_overrides_flag(tmp_path: Path) -> None:
    cfg = resolve(write(tmp_path, "[training]\nepochs = 7\n"), {"training.epochs": 3}, ["training.epochs=5"])
    assert cfg.training.epochs == 5


def test_later_set_wins() -> None:
    assert resolve(None, {}, ["training.seed=1", "training.seed=2"]).training.seed == 2


def test_unknown_key_in_file_names_file_and_dotted_key(tmp_path: Path) -> None:
    path = write(tmp_path, "[training]\nepoch = 3\n")
    with pytest.raises(ConfigError) as info:
        resolve(path)
    message = str(info.value)
    assert str(path) in message and "'training.epoch'" in message and "training.epochs" in message


def test_unknown_section(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown key 'trainning'.*'training'"):
        resolve(write(tmp_path, "[trainning]\nepochs = 3\n"))


def test_wrong_type_names_dotted_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"training\.epochs: expected an integer, got 'ten'"):
        resolve(write(tmp_path, "[training]\nepochs = 'ten'\n"))


def test_bool_is_not_an_integer_and_int_is_a_number() -> None:
    with pytest.raises(ConfigError, match="training.epochs"):
        resolve(None, {}, ["training.epochs=true"])
    with pytest.raises(ConfigError, match="data.flip: expected true or false"):
        resolve(None, {}, ["data.flip=1"])
    cfg = resolve(None, {}, ["training.lr=1"])
    assert cfg.training.lr == 1.0 and isinstance(cfg.training.lr, float)


def test_section_must_be_a_table(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="training: expected a table"):
        resolve(write(tmp_path, "training = 3\n"))


def test_list_items_are_checked() -> None:
    assert resolve(None, {}, ["training.lr_schedule=multistep", "training.lr_milestones=[60, 120]"]).training.lr_milestones == [60, 120]
    with pytest.raises(ConfigError, match=r"training\.lr_milestones\[1\]"):
        resolve(None, {}, ["training.lr_schedule=multistep", "training.lr_milestones=[60, 'x']"])


def test_set_values_are_read_as_toml_else_as_bare_strings() -> None:
    assert parse_override("data.dataset=cifar10") == ("data.dataset", "cifar10")
    assert parse_override("data.dataset='a b'") == ("data.dataset", "a b")
    assert parse_override("training.lr = 0.05") == ("training.lr", 0.05)
    assert parse_override("data.flip=true") == ("data.flip", True)
    with pytest.raises(ConfigError, match="section.key=value"):
        parse_override("training.lr")


def test_options_tables_merge_and_accept_dotted_set(tmp_path: Path) -> None:
    cfg = resolve(write(tmp_path, "[model.options]\nwidth = 16\ncardinality = 2\n"), {}, ["model.options.cardinality=4"])
    assert cfg.model.options == {"width": 16, "cardinality": 4}


def test_nested_option_tables_merge_key_by_key(tmp_path: Path) -> None:
    """A primitive's parameters set in the file and by --set add up; a later layer changes only its keys."""
    file = write(tmp_path, '[defence]\nname = "j2-lip"\n[defence.options.wcat]\nmethod = "worst"\nlam = 0.2\n')
    cfg = resolve(file, {}, ["defence.options.wcat.fd_step=0.001", "defence.options.at-l2={eps=0.02}"])
    assert cfg.defence.options == {"wcat": {"method": "worst", "lam": 0.2, "fd_step": 0.001}, "at-l2": {"eps": 0.02}}
    cfg = resolve(file, {}, ["defence.options.wcat={lam=0.5}"])
    assert cfg.defence.options == {"wcat": {"method": "worst", "lam": 0.5}}


def test_optional_key_can_be_unset_again() -> None:
    cfg = resolve(None, {}, ["training.max_steps=10", "training.max_steps=none"])
    assert cfg.training.max_steps is None


def test_ranges_are_checked() -> None:
    with pytest.raises(ConfigError, match="training.batch_size: must be at least 1"):
        resolve(None, {}, ["training.batch_size=0"])
    with pytest.raises(ConfigError, match="training.lr: must be positive"):
        resolve(None, {}, ["training.lr=0"])


def test_a_range_error_names_where_the_value_came_from(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^--set training\.batch_size=0: training\.batch_size: must be at least 1"):
        resolve(None, {}, ["training.batch_size=0"])
    path = write(tmp_path, "[data]\ncutout = -1\n")
    with pytest.raises(ConfigError, match=rf"^{path}: data\.cutout: must be at least 0, got -1"):
        resolve(path)


@dataclass
class Table:
    """A table of its own (as a grid's ``[evaluate]`` is), with each kind of annotation the checks know."""

    mode: Literal["fast", "slow"] = "fast"
    eps: list[str | float] | str | None = None
    names: dict[str, list[str]] = field(default_factory=dict)
    options: dict[str, dict[str, Any]] = field(default_factory=dict)
    count: PositiveInt | None = None


def test_a_table_of_its_own_is_checked_by_the_same_rules() -> None:
    table = {"mode": "slow", "eps": ["8/255", 1], "names": {"a": ["x"]}, "options": {"x": {"n": [1]}}, "count": 2}
    assert validate(Table, table, "f.toml", "t") == Table("slow", ["8/255", 1.0], {"a": ["x"]}, {"x": {"n": [1]}}, 2)
    assert validate(Table, {"eps": "8/255"}, "f.toml", "t").eps == "8/255"
    assert validate(Table, {}, "f.toml", "t") == Table()


@pytest.mark.parametrize(("table", "message"), [
    ({"mode": "fats"}, "f.toml: t.mode: expected 'fast' or 'slow', got 'fats' (str). Did you mean 'fast'?"),
    ({"mode": "quick"}, "f.toml: t.mode: expected 'fast' or 'slow', got 'quick' (str)"),
    ({"mode": 1}, "f.toml: t.mode: expected 'fast' or 'slow', got 1 (int)"),
    ({"eps": ["8/255", True]}, "f.toml: t.eps[1]: expected a string or a number, got True (bool)"),
    ({"eps": True}, "f.toml: t.eps: expected a list or a string, got True (bool)"),
    ({"names": {"a": "x"}}, "f.toml: t.names.a: expected a list, got 'x' (str)"),
    ({"names": {"a": [1]}}, "f.toml: t.names.a[0]: expected a string, got 1 (int)"),
    ({"options": {"x": 3}}, "f.toml: t.options.x: expected a table, got 3 (int)"),
    ({"count": 0}, "f.toml: t.count: must be at least 1, got 0"),
    ({"cuont": 1}, "f.toml: unknown key 't.cuont'. Did you mean 't.count'?"),
    (3, "f.toml: t: expected a table, got 3 (int)"),
])
def test_errors_of_a_table_of_its_own_name_its_dotted_key(table: Any, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        validate(Table, table, "f.toml", "t")
    assert str(info.value) == message


def test_invalid_toml_names_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "[training\nepochs = 3\n")
    with pytest.raises(ConfigError, match="invalid TOML") as info:
        resolve(path)
    assert str(path) in str(info.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        resolve(tmp_path / "nope.toml")


def test_resolved_config_round_trips_through_toml() -> None:
    cfg = resolve(None, {}, [
        "model.options={cardinality = 4, name = 'x\"y'}", "training.lr_schedule=multistep", "training.lr_milestones=[1, 2]", "training.max_steps=5",
        "data.data_dir='/tmp/a b'", "data.validation=0.25", "training.warmup_epochs=2",
    ])
    text = dumps(cfg.to_dict())
    assert build(tomllib.loads(text)) == cfg
    assert isinstance(cfg.training.warmup_epochs, float)


def test_a_key_may_take_an_integer_or_a_number() -> None:
    """data.validation is ``int | float | None``: a whole count stays an integer, a fraction is a float."""
    assert type(resolve(None, {}, ["data.validation=40"]).data.validation) is int
    assert type(resolve(None, {}, ["data.validation=0.5"]).data.validation) is float
    assert resolve(None, {}, ["data.validation=40", "data.validation=none"]).data.validation is None
    with pytest.raises(ConfigError, match=r"data\.validation: expected an integer or a number, got \[1\]"):
        resolve(None, {}, ["data.validation=[1]"])


def test_a_stored_configuration_reads_as_its_run_was_trained() -> None:
    """Keys a stored run predates take the behaviour it had, not today's defaults: runs stored before held-out
    validation trained on every image (data.validation = 0), all of them with the multistep schedule."""
    cfg = resolve(None, {}, ["training.lr_schedule=multistep", "training.lr_milestones=[3]"])
    old = cfg.to_dict()
    for section, key in (("data", "validation"), ("data", "validation_seed"), ("training", "lr_schedule"),
                         ("training", "warmup_epochs")):
        del old[section][key]
    stored = build_stored(old)
    assert stored.data.validation == 0 and stored.training.lr_schedule == "multistep"
    assert stored.training.warmup_epochs == 0 and stored.data.validation_seed == 0
    assert build({**old, "training": {**old["training"], "lr_milestones": []}}).data.validation is None  # the defaults
    with pytest.raises(ConfigError, match=r"training\.lr_milestones: only the multistep"):
        build(old)  # today's default schedule (cosine) has no milestones
    # a run stored now reads back as it is, its unset validation (omitted from config.toml) included
    assert cfg.data.validation is None
    assert build_stored(cfg.to_dict()) == cfg == build_stored(tomllib.loads(dumps(cfg.to_dict())))
    assert build_stored(resolve(None, {}, ["training.lr_schedule=cosine"]).to_dict()).training.lr_schedule == "cosine"

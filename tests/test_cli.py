"""The command line through Typer's CliRunner: results, exit codes and one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from lipcli.cli.app import build_app
from lipcli.plugin_host import PluginHost

FASHION = Path("/usr/share/datasets/fashion-mnist")
SMALL = ["--set", "model.options={width=8}", "--batch-size", "64", "--device", "cpu", "--quiet"]


@pytest.fixture
def run(host: PluginHost):  # type: ignore[no-untyped-def]
    app = build_app(host)
    runner = CliRunner()
    return lambda *args: runner.invoke(app, [str(a) for a in args])


def test_train_on_digits_writes_the_run_and_prints_json(run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    result = run("train", "--dataset", "digits", "--epochs", "2", "--out", tmp_path / "r", "--json", *SMALL)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["epochs"] == 2 and summary["run_dir"] == str(tmp_path / "r")
    assert 0 <= summary["final_test_error"] < 0.5  # two epochs on digits already beat chance (0.9) by far
    written = {p.name for p in (tmp_path / "r").iterdir()} - {".lipcli.lock"}  # the lock file stays, empty
    assert written == {"config.toml", "metrics.jsonl", "last.pt", "best.pt"}


def test_toml_file_flags_and_set_are_layered(run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    exp = tmp_path / "exp.toml"
    exp.write_text("[data]\ndataset = 'digits'\n[training]\nepochs = 5\nlr = 0.02\n")
    result = run("train", "-c", exp, "--epochs", "1", "--set", "training.lr=0.03", "--out", tmp_path / "r", *SMALL)
    assert result.exit_code == 0, result.output
    written = (tmp_path / "r" / "config.toml").read_text()
    assert "epochs = 1" in written and "lr = 0.03" in written and 'dataset = "digits"' in written


def test_config_show_prints_the_resolved_configuration(run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    exp = tmp_path / "exp.toml"
    exp.write_text("[model]\narch = 'resnet34'\n")
    result = run("config", "show", "-c", exp, "--set", "training.epochs=3", "--json")
    assert result.exit_code == 0, result.output
    shown = json.loads(result.stdout)
    assert shown["model"]["arch"] == "resnet34" and shown["training"]["epochs"] == 3
    assert shown["training"]["batch_size"] == 128  # defaults fill the rest


def one_line_error(result) -> str:  # type: ignore[no-untyped-def]
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1, result.output
    assert "Traceback" not in result.output
    return lines[0]


def test_unknown_architecture_is_a_one_line_error_with_a_suggestion(run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    result = run("train", "--arch", "resnet43", "--out", tmp_path / "r", "--quiet")
    assert result.exit_code == 2
    line = one_line_error(result)
    assert "unknown architecture 'resnet43'" in line and "resnet34" in line
    assert not (tmp_path / "r").exists()  # nothing written for a run that could not start


def test_bad_toml_key_is_a_one_line_error_naming_key_and_file(run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    exp = tmp_path / "exp.toml"
    exp.write_text("[training]\nbatchsize = 64\n")
    result = run("train", "-c", exp, "--quiet")
    assert result.exit_code == 2
    line = one_line_error(result)
    assert "training.batchsize" in line and "training.batch_size" in line and "exp.toml" in line


def test_missing_data_folder_is_a_one_line_error(run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    missing = tmp_path / "no-such-folder"
    result = run("train", "--dataset", "fashion-mnist", "--data-dir", missing, "--out", tmp_path / "r", "--quiet")
    assert result.exit_code == 1
    assert str(missing) in one_line_error(result)


def test_unknown_model_option_names_the_dotted_key(run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    result = run("train", "--set", "model.options={widht=8}", "--out", tmp_path / "r", "--quiet")
    assert result.exit_code == 2
    assert "model.options.widht" in one_line_error(result)


def test_verbose_adds_the_traceback(run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    result = run("--verbose", "train", "--arch", "nope", "--out", tmp_path / "r", "--quiet")
    assert result.exit_code == 2 and "Traceback" in result.output


def test_usage_error_exits_2(run) -> None:  # type: ignore[no-untyped-def]
    assert run("train", "--epochs", "many").exit_code == 2
    assert run("no-such-command").exit_code == 2


@pytest.mark.skipif(not FASHION.is_dir(), reason="Debian's dataset-fashion-mnist is not installed")
def test_fashion_mnist_trains_offline_from_the_debian_folder(run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    result = run(
        "train", "--dataset", "fashion-mnist", "--data-dir", FASHION, "--epochs", "1", "--train-limit", "6000",
        "--batch-size", "64", "--set", "evaluation.limit=1000", "--out", tmp_path / "r", "--json", "--quiet",
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["final_test_error"] < 0.6  # ten classes: chance is 0.9


def test_paper_recipe_trains_resnext34_with_j2_lip_tanh(run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    result = run(
        "train", "--recipe", "cifar10-paper", "--defence", "j2-lip+tanh", "--arch", "resnext34",
        "--dataset", "synthetic", "--set", "data.options={train_size=256, test_size=32, size=32}",
        "--max-steps", "2", "--device", "cpu", "--out", tmp_path / "r", "--json", "--quiet",
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["steps"] == 2 and summary["final_penalty"] > 0 and summary["final_grad_norm_max"] > 0
    written = (tmp_path / "r" / "config.toml").read_text()
    for line in ("epochs = 200", "batch_size = 128", "lr_milestones = [60, 120, 180]", "cutout = 16",
                 'name = "j2-lip+tanh"', 'arch = "resnext34"'):
        assert line in written


def _commands(command, path=()):  # type: ignore[no-untyped-def]
    """(command path, Click command) of every command and group below ``command``, ``command`` first."""
    yield path, command
    for name, sub in getattr(command, "commands", {}).items():
        yield from _commands(sub, (*path, name))


def test_every_help_shows_flags_without_a_value(host: PluginHost) -> None:
    """A flag is given bare (``--quiet``, not ``--quiet true``): no help shows a flag a <bool> or BOOLEAN value."""
    import typer.main

    app = build_app(host)
    paths = [path for path, _ in _commands(typer.main.get_command(app))]
    assert {("curve",), ("stats",), ("run",), ("report",), ("plugins", "check"), ("config", "show")} <= set(paths)
    for path in paths:
        result = CliRunner().invoke(app, [*path, "--help"])
        assert result.exit_code == 0, (path, result.output)
        assert "--help" in result.output and "<bool>" not in result.output, (path, result.output)
        assert "BOOLEAN" not in result.output.upper(), (path, result.output)


def test_shell_completion_is_offered(run) -> None:  # type: ignore[no-untyped-def]
    result = run("--help")
    assert "--install-completion" in result.output and "--show-completion" in result.output


def test_each_command_is_a_module_level_function(host: PluginHost) -> None:
    """Every built-in command can be imported (and tested) alone: its callback is its module's attribute."""
    import importlib
    import inspect

    import typer.main

    for path, command in _commands(typer.main.get_command(build_app(host))):
        if not path or command.callback is None:  # the app's own options; a group without a callback
            continue
        callback = inspect.unwrap(command.callback)  # Typer calls it through a wrapper
        if not callback.__module__.startswith("lipcli."):  # a plugin's command
            continue
        assert "<locals>" not in callback.__qualname__, path
        assert getattr(importlib.import_module(callback.__module__), callback.__name__) is callback, path


def test_verbose_is_taken_after_the_command_too(run, checkpoint: Path,  # type: ignore[no-untyped-def]
                                                tmp_path: Path) -> None:
    result = run("curve", checkpoint, "-a", "no-such-attack", "--out", tmp_path / "c", "-v")
    assert result.exit_code == 2 and "Traceback" in result.output and "no-such-attack" in result.output
    result = run("curve", checkpoint, "-a", "no-such-attack", "--out", tmp_path / "c")
    assert "no-such-attack" in one_line_error(result)  # without -v: one line
    result = run("train", "--arch", "nope", "--out", tmp_path / "r", "--quiet", "--verbose")
    assert result.exit_code == 2 and "Traceback" in result.output
    result = run("config", "show", "--set", "training.lr=-1", "-v")
    assert result.exit_code == 2 and "Traceback" in result.output

"""The example third-party plugin (examples/lipcli-example-plugin), used the way its README says.

When it is installed (CI installs it), lipcli finds it through its entry point; otherwise the test registers
its module itself, so it is exercised on every run.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from typing import Any, Callable

import pytest
from typer.testing import CliRunner

from lipcli.cli.app import build_app
from lipcli.contracts import run_checks
from lipcli.plugin_host import PluginHost

EXAMPLE = Path(__file__).parents[1] / "examples" / "lipcli-example-plugin"


@pytest.fixture(scope="module")
def example_host() -> PluginHost:
    host = PluginHost(environ={})
    if "lipcli-example" not in {info.name for info in host.plugins()}:
        host.register(_import_uninstalled(), "lipcli-example")
    return host


def _import_uninstalled() -> Any:
    """The example's package imported from its folder, without putting the folder on sys.path (whose
    metadata could then make other tests' plugin hosts find it through its entry point)."""
    package = EXAMPLE / "lipcli_example"
    spec = importlib.util.spec_from_file_location(
        "lipcli_example", package / "__init__.py", submodule_search_locations=[str(package)]
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules["lipcli_example"] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def cli(example_host: PluginHost) -> Callable[..., Any]:
    app = build_app(example_host)
    return lambda *args: CliRunner().invoke(app, [str(a) for a in args])


def test_it_registers_one_of_each_kind_and_keeps_the_contract(example_host: PluginHost) -> None:
    (info,) = [i for i in example_host.plugins() if i.name == "lipcli-example"]
    assert info.hooks == ["register_architectures", "register_attacks", "register_commands", "register_datasets",
                          "register_defences"]
    results = run_checks(example_host, plugin="lipcli-example")
    assert {r.kind for r in results} == {"architecture", "defence", "attack", "dataset"}
    assert all(r.status == "pass" for r in results), [r for r in results if r.status != "pass"]


def test_its_readme_commands(cli: Callable[..., Any], tmp_path: Path) -> None:
    run_dir = tmp_path / "example"
    result = cli("train", "--dataset", "example-stripes", "--arch", "example-lenet", "--defence",
                 "j2+example-label-smoothing", "--epochs", "2", "--out", run_dir, "--device", "cpu", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["final_test_error"] < 0.5  # 4 classes: well above chance after 2 epochs
    result = cli("curve", run_dir / "best.pt", "-a", "example-random-directions", "-a", "min-norm", "--limit", "20",
                 "-O", "example-random-directions.directions=5", "-O", "min-norm.steps=5", "--device", "cpu",
                 "--out", tmp_path / "curve", "--json")
    assert result.exit_code == 0, result.output
    (summary,) = json.loads(result.stdout)
    per_attack = summary["per_attack"]
    assert per_attack["example-random-directions"]["queries"] > 0 and per_attack["min-norm"]["failures"] == 0
    result = cli("stats", run_dir / "best.pt", "--limit", "20", "--device", "cpu", "--out", tmp_path / "s", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)[0]["bound"]["unavailable"] is None
    result = cli("example-params", "--arch", "small-cnn", "--channels", "1", "--size", "8")
    # 3x3 convolutions 1->32->64->64 with biases after the BatchNorms, then 64->10: 320 + 18,496 + 36,928 + 650
    assert result.exit_code == 0 and "small-cnn: 56,394 parameters for 1x8x8 images" in result.stdout
    result = cli("example-params", "--arch", "lenett")
    assert result.exit_code == 2 and "Did you mean 'lenet'" not in result.output and "example-lenet" in result.output


def test_its_experiment_file(cli: Callable[..., Any], tmp_path: Path) -> None:
    """Every component from the TOML file: a grid over the example defence's option, measured with the
    example attack, then reported."""
    result = cli("run", EXAMPLE / "example-grid.toml", "--out", tmp_path, "--device", "cpu", "--quiet")
    assert result.exit_code == 0, result.output
    runs = sorted(path.parent for path in tmp_path.glob("*/trained.json"))
    assert [run.name.split("-smoothing")[-1] for run in runs] == ["0.0-s0", "0.2-s0"]
    for run, smoothing in zip(runs, (0.0, 0.2)):
        config = (run / "config.toml").read_text()
        assert 'arch = "example-lenet"' in config and 'dataset = "example-stripes"' in config
        assert f"smoothing = {smoothing}" in config
        per_attack = json.loads((run / "curve-l2" / "summary.json").read_text())["per_attack"]
        assert per_attack["example-random-directions"]["queries"] > 0
        assert json.loads((run / "stats" / "stats.json").read_text())["bound"]["unavailable"] is None
    result = cli("report", tmp_path, "--json")
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)["example-stripes"]
    assert [row["settings"] for row in rows] == [f"defence.options.example-label-smoothing.smoothing={s}"
                                                 for s in ("0.0", "0.2")]
    assert all(row["grad_loss_l2"] is not None and row["l2_median"] > 0 for row in rows)

"""The plugin host and the CLI around it: entry-point discovery, selection by environment, failure isolation.

Discovery is tested against real installed-distribution metadata: each test writes a fake
``*.dist-info`` folder and its module into ``tmp_path`` and puts that folder first on ``sys.path``, so
``importlib.metadata`` finds it exactly as it would find a pip-installed plugin.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import sys
import textwrap
import warnings
from importlib import metadata
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

import lipcli
from lipcli import hookimpl
from lipcli.cli.app import build_app
from lipcli.errors import DuplicateNameError, LipcliError
from lipcli.plugin_host import (
    ENV_BLOCK,
    ENV_LOAD,
    PluginHost,
    PluginInfo,
    PluginWarning,
)

FIRST_PARTY = {
    "lipcli-architectures": ["register_architectures"],
    "lipcli-datasets": ["register_datasets"],
    "lipcli-defences": ["register_defences"],
    "lipcli-attacks": ["register_attacks"],
}
OTHERS = {e.name for e in metadata.entry_points(group="lipcli")} - set(FIRST_PARTY) - {"fakeplug"}
"""Third-party plugins installed beside lipcli (the example plugin, in CI): loaded unless selected away."""
FIRST_PARTY_DATASETS = {"digits", "synthetic", "fashion-mnist", "mnist", "cifar10", "cifar100"}

FAKEPLUG_SOURCE = '''
"""A third-party lipcli plugin, installed as the distribution 'fakeplug'."""
import typer

from lipcli import hookimpl


def tinynet(info, *, batchnorm_affine=True, **options):
    raise NotImplementedError("never built by these tests")


@hookimpl
def register_architectures(register):
    register("tinynet", tinynet, "A tiny test network from fakeplug")


@hookimpl
def register_commands(app):
    @app.command("hello")
    def hello(name: str = "world") -> None:
        """Say hello (added by fakeplug)."""
        typer.echo(f"hello {name} from fakeplug")
'''

FAKEBROKEN_SOURCE = '''
raise ImportError("fakebroken needs libnotthere, which is not installed")
'''

runner = CliRunner()


def _ok(result) -> None:
    assert result.exit_code == 0, result.output


@contextlib.contextmanager
def _no_plugin_warnings():
    """A context in which any PluginWarning fails the test."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", PluginWarning)
        yield


def _table_rows(output: str) -> dict[str, list[str]]:
    """The body rows of a rich table as {first cell: [cells]}, joining cells that wrapped over lines."""
    rows: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in output.splitlines():
        if not line.startswith("│"):
            continue
        cells = [cell.strip() for cell in line.strip("│").split("│")]
        if cells[0]:
            current = rows.setdefault(cells[0], cells)
        elif current is not None:
            for i, cell in enumerate(cells):
                if cell:
                    current[i] = f"{current[i]} {cell}".strip()
    return rows


def _status(host: PluginHost) -> dict[str, str]:
    return {p.name: p.status for p in host.plugins()}


# -- fake installed distributions ----------------------------------------------------------------------------


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A folder first on sys.path into which tests 'install' fake distributions; cleaned up after."""
    modules: list[str] = []

    def install(dist: str, version: str, entry_point: str, module: str, source: str) -> Path:
        info = tmp_path / f"{dist}-{version}.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
        (info / "entry_points.txt").write_text(f"[lipcli]\n{entry_point} = {module}\n")
        (tmp_path / f"{module}.py").write_text(textwrap.dedent(source))
        modules.append(module)
        sys.modules.pop(module, None)
        importlib.invalidate_caches()
        return info

    monkeypatch.syspath_prepend(str(tmp_path))
    # Nothing from the developer's shell may change what loads.
    monkeypatch.delenv(ENV_LOAD, raising=False)
    monkeypatch.delenv(ENV_BLOCK, raising=False)
    yield install
    for module in modules:
        sys.modules.pop(module, None)
    importlib.invalidate_caches()


@pytest.fixture
def fakeplug(site):
    return site("fakeplug", "1.2.3", "fakeplug", "fakeplug_mod", FAKEPLUG_SOURCE)


def test_fake_distribution_is_visible_to_importlib_metadata(fakeplug):
    # Guards the fixture itself: without it every discovery test below would pass for the wrong reason.
    eps = {ep.name: ep for ep in metadata.entry_points(group="lipcli")}
    assert eps["fakeplug"].value == "fakeplug_mod"
    assert eps["fakeplug"].dist.version == "1.2.3"


def test_entry_point_plugin_is_discovered_with_its_distribution_and_version(fakeplug):
    with _no_plugin_warnings():
        host = PluginHost(environ={})
    infos = {p.name: p for p in host.plugins()}
    assert infos["fakeplug"] == PluginInfo(
        "fakeplug", "fakeplug", "1.2.3", ["register_architectures", "register_commands"], "loaded"
    )
    for name, hooks in FIRST_PARTY.items():
        assert infos[name].status == "loaded"
        assert infos[name].hooks == hooks
        assert infos[name].distribution == "lipcli"

    archs = host.registry("architecture")
    assert "tinynet" in archs and "resnet34" in archs
    assert archs.get("TinyNet").plugin == "fakeplug"
    assert archs.get("resnet34").plugin == "lipcli-architectures"


def test_entry_point_plugin_command_and_components_reach_the_cli(fakeplug):
    app = build_app(PluginHost(environ={}))
    result = runner.invoke(app, ["hello", "--name", "tester"])
    _ok(result)
    assert "hello tester from fakeplug" in result.output

    result = runner.invoke(app, ["list", "architectures", "--json"])
    _ok(result)
    listed = {c["name"]: c["plugin"] for c in json.loads(result.stdout)["architectures"]}
    assert listed["tinynet"] == "fakeplug"
    assert listed["resnet34"] == "lipcli-architectures"


def test_block_plugins_blocks_the_distribution_and_keeps_first_party(fakeplug):
    with _no_plugin_warnings():
        host = PluginHost(environ={ENV_BLOCK: "fakeplug"})
    status = _status(host)
    assert "blocked" in status["fakeplug"] and ENV_BLOCK in status["fakeplug"]
    assert all(status[name] == "loaded" for name in FIRST_PARTY)
    archs = host.registry("architecture")
    assert "tinynet" not in archs
    assert "resnet34" in archs

    app = build_app(host)
    assert runner.invoke(app, ["hello"]).exit_code == 2  # its command is gone with it
    result = runner.invoke(app, ["plugins", "--json"])
    _ok(result)
    assert {p["name"]: p["status"] for p in json.loads(result.stdout)}["fakeplug"] == status["fakeplug"]


def test_load_only_first_party_by_distribution_name(fakeplug):
    host = PluginHost(environ={ENV_LOAD: "lipcli"})
    status = _status(host)
    assert all(status[name] == "loaded" for name in FIRST_PARTY)
    assert status["fakeplug"] != "loaded" and ENV_LOAD in status["fakeplug"]
    archs = host.registry("architecture")
    assert "tinynet" not in archs and "resnet34" in archs


def test_load_only_the_third_party_plugin(fakeplug):
    host = PluginHost(environ={ENV_LOAD: "fakeplug"})
    status = _status(host)
    assert status["fakeplug"] == "loaded"
    assert all(status[name] != "loaded" for name in FIRST_PARTY)
    assert host.registry("architecture").names() == ["tinynet"]
    assert len(host.registry("dataset")) == 0


@pytest.mark.parametrize(
    ("env", "loaded"),
    [
        ({ENV_LOAD: "FakePlug"}, {"fakeplug"}),
        ({ENV_LOAD: " FAKEPLUG , "}, {"fakeplug"}),
        ({ENV_LOAD: "Lipcli_Architectures"}, {"lipcli-architectures"}),
        ({ENV_LOAD: "LIPCLI.DATASETS,fakeplug"}, {"lipcli-datasets", "fakeplug"}),
        ({ENV_LOAD: ""}, set()),
        ({ENV_BLOCK: "LIPCLI_DEFENCES,FAKEPLUG"},
         {"lipcli-architectures", "lipcli-datasets", "lipcli-attacks", *OTHERS}),
        ({ENV_BLOCK: "Lipcli"}, {"fakeplug", *OTHERS}),
        ({ENV_LOAD: "lipcli,fakeplug", ENV_BLOCK: "lipcli-datasets"},
         {"lipcli-architectures", "lipcli-defences", "lipcli-attacks", "fakeplug"}),
        ({}, {*FIRST_PARTY, "fakeplug", *OTHERS}),
    ],
)
def test_selection_names_are_case_insensitive_with_separators_alike(fakeplug, env, loaded):
    host = PluginHost(environ=env)
    status = _status(host)
    assert {name for name, s in status.items() if s == "loaded"} == loaded
    assert set(status) >= {*FIRST_PARTY, "fakeplug"}  # plugins not loaded are still listed, with why


def test_explicit_environ_replaces_the_process_environment(fakeplug, monkeypatch):
    monkeypatch.setenv(ENV_LOAD, "")
    assert _status(PluginHost(environ={}))["fakeplug"] == "loaded"
    assert all(s != "loaded" for s in _status(PluginHost()).values())  # no environ: os.environ is used
    monkeypatch.setenv(ENV_LOAD, "fakeplug")
    assert {n for n, s in _status(PluginHost()).items() if s == "loaded"} == {"fakeplug"}


def test_broken_distribution_warns_and_everything_else_works(site, fakeplug):
    site("fakebroken", "0.0.1", "fakebroken", "fakebroken_mod", FAKEBROKEN_SOURCE)
    with pytest.warns(PluginWarning, match="fakebroken") as record:
        host = PluginHost(environ={})
    assert len(record) == 1
    assert "libnotthere" in str(record[0].message)

    info = {p.name: p for p in host.plugins()}["fakebroken"]
    assert info.status.startswith("failed to import")
    assert "ImportError" in info.status
    assert (info.distribution, info.version, info.hooks) == ("fakebroken", "0.0.1", [])

    archs = host.registry("architecture")
    assert archs.get("resnet34").plugin == "lipcli-architectures"
    assert "tinynet" in archs
    assert "digits" in host.registry("dataset")

    app = build_app(host)
    result = runner.invoke(app, ["plugins"])
    _ok(result)
    rows = _table_rows(result.output)
    assert rows["fakebroken"][-1].startswith("failed to import: ImportError")
    assert rows["fakebroken"][1:3] == ["fakebroken", "0.0.1"]
    assert rows["lipcli-datasets"][-1] == "loaded"
    result = runner.invoke(app, ["plugins", "--json"])
    _ok(result)
    assert {p["name"]: p["status"] for p in json.loads(result.stdout)}["fakebroken"] == info.status
    _ok(runner.invoke(app, ["hello"]))


def test_blocked_broken_distribution_is_never_imported(site):
    site("fakebroken", "0.0.1", "fakebroken", "fakebroken_mod", FAKEBROKEN_SOURCE)
    with _no_plugin_warnings():
        host = PluginHost(environ={ENV_BLOCK: "fakebroken"})
    assert "blocked" in _status(host)["fakebroken"]
    assert "fakebroken_mod" not in sys.modules


# -- failure isolation with plugin objects ---------------------------------------------------------------------


def _factory(*args, **kwargs):
    return None


class GoodArchs:
    @hookimpl
    def register_architectures(self, register):
        register("good-net", _factory, "a fine network")


class HalfBroken:
    @hookimpl
    def register_architectures(self, register):
        register("half-net", _factory, "registered just before the failure")
        raise RuntimeError("boom in the middle")


def test_plugin_raising_in_its_hook_loses_its_partial_registrations():
    host = PluginHost(load_entrypoints=False)
    assert host.register(HalfBroken(), "halfbroken")
    assert host.register(GoodArchs(), "good")
    with pytest.warns(PluginWarning, match=r"'halfbroken'.*register_architectures.*boom in the middle"):
        archs = host.registry("architecture")
    assert "good-net" in archs
    assert "half-net" not in archs
    status = _status(host)
    assert status["good"] == "loaded"
    assert "RuntimeError" in status["halfbroken"]


class TypoHook:
    @hookimpl
    def register_architecture(self, register):  # misspelt: the contract's hook is register_architectures
        register("typo-net", _factory, "never registered")

    @hookimpl
    def register_datasets(self, register):
        register("typo-data", _factory, "discarded with the rest of the plugin")


def test_misspelt_hook_warns_with_suggestion_and_discards_the_plugin():
    host = PluginHost(load_entrypoints=False)
    host.register(GoodArchs(), "good")
    with pytest.warns(PluginWarning, match=r"'typo'.*'register_architecture'.*'register_architectures'"):
        assert host.register(TypoHook(), "typo") is False
    assert host.pm.get_plugin("typo") is None
    assert "unknown hook" in _status(host)["typo"]
    with _no_plugin_warnings():
        assert host.registry("architecture").names() == ["good-net"]
        assert "typo-data" not in host.registry("dataset")


class WrongArgName:
    @hookimpl
    def register_architectures(self, reg):
        reg("wrong-net", _factory, "never registered")


class OneBadArgAmongGood:
    @hookimpl
    def register_architectures(self, register):
        register("mixed-net", _factory, "valid hook of an invalid plugin")

    @hookimpl
    def register_datasets(self, registrar):
        registrar("mixed-data", _factory, "invalid argument name")


@pytest.mark.parametrize("plugin", [WrongArgName(), OneBadArgAmongGood()], ids=["wrong-arg", "one-bad-arg"])
def test_wrong_hook_argument_names_warn_and_register_nothing(plugin):
    host = PluginHost(load_entrypoints=False)
    host.register(GoodArchs(), "good")
    with pytest.warns(PluginWarning, match=r"'badargs' failed to register"):
        assert host.register(plugin, "badargs") is False
    assert host.pm.get_plugin("badargs") is None
    assert _status(host)["badargs"].startswith("failed to register")
    with _no_plugin_warnings():
        assert host.registry("architecture").names() == ["good-net"]
        assert len(host.registry("dataset")) == 0


class GoodCommand:
    @hookimpl
    def register_commands(self, app):
        @app.command("good-cmd")
        def good_cmd() -> None:
            typer.echo("good command ran")


class BadCommand:
    @hookimpl
    def register_commands(self, app):
        @app.command("bad-cmd")
        def bad_cmd() -> None:
            typer.echo("bad command ran")

        group = typer.Typer()

        @group.command("sub")
        def sub() -> None:
            typer.echo("bad group ran")

        app.add_typer(group, name="bad-group")
        raise RuntimeError("could not finish adding commands")


@pytest.mark.parametrize("bad_first", [True, False])
def test_failing_register_commands_removes_its_commands_and_keeps_the_others(bad_first):
    host = PluginHost(load_entrypoints=False)
    plugins = [(BadCommand(), "badcmd"), (GoodCommand(), "goodcmd")]
    for plugin, name in plugins if bad_first else plugins[::-1]:
        host.register(plugin, name)
    with pytest.warns(PluginWarning, match=r"'badcmd'.*register_commands.*could not finish"):
        app = build_app(host)

    result = runner.invoke(app, ["good-cmd"])
    _ok(result)
    assert "good command ran" in result.output
    assert runner.invoke(app, ["bad-cmd"]).exit_code == 2
    assert runner.invoke(app, ["bad-group", "sub"]).exit_code == 2

    help_result = runner.invoke(app, ["--help"])
    _ok(help_result)
    assert "good-cmd" in help_result.output and "bad-cmd" not in help_result.output
    assert "plugins" in help_result.output  # built-in commands are intact

    result = runner.invoke(app, ["plugins", "--json"])
    _ok(result)
    status = {p["name"]: p["status"] for p in json.loads(result.stdout)}
    assert status["goodcmd"] == "loaded"
    assert "register_commands" in status["badcmd"]


def test_unregister_removes_the_plugin_and_its_components():
    host = PluginHost(load_entrypoints=False)
    host.register(GoodArchs(), "good")
    assert "good-net" in host.registry("architecture")
    host.unregister("good")
    assert "good-net" not in host.registry("architecture")
    assert host.plugins() == []


def test_empty_host_has_no_plugins_and_empty_registries():
    host = PluginHost(load_entrypoints=False)
    assert host.plugins() == []
    for kind in ("architecture", "defence", "attack", "dataset"):
        assert len(host.registry(kind)) == 0
    with pytest.raises(ValueError, match="known"):
        host.registry("architectures")


# -- duplicate names -----------------------------------------------------------------------------------------


def _arch_plugin(component: str):
    class Plugin:
        @hookimpl
        def register_architectures(self, register):
            register(component, _factory, f"{component} network")

    return Plugin()


def _duplicate_host() -> PluginHost:
    host = PluginHost(load_entrypoints=False)
    host.register(_arch_plugin("Foo"), "plugin-one")
    host.register(_arch_plugin("foo"), "plugin-two")
    return host


def test_duplicate_names_in_any_case_name_both_plugins():
    with pytest.raises(DuplicateNameError) as excinfo:
        _duplicate_host().registry("architecture")
    message = str(excinfo.value)
    assert "plugin-one" in message and "plugin-two" in message
    assert "foo" in message.lower()
    assert isinstance(excinfo.value, LipcliError) and excinfo.value.exit_code == 1


def test_duplicate_of_a_first_party_name_is_an_error():
    host = PluginHost(environ={ENV_LOAD: "lipcli-architectures"})
    host.register(_arch_plugin("ResNet34"), "copycat")
    with pytest.raises(DuplicateNameError, match=r"(?s)lipcli-architectures.*copycat"):
        host.registry("architecture")


def test_duplicate_names_through_the_cli_are_one_line_without_traceback():
    app = build_app(_duplicate_host())
    result = runner.invoke(app, ["list", "architectures"])
    assert result.exit_code == 1, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1, result.output
    assert "plugin-one" in lines[0] and "plugin-two" in lines[0]
    assert "Error" in lines[0]
    assert "Traceback" not in result.output
    assert not isinstance(result.exception, DuplicateNameError)


# -- the CLI with first-party plugins ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def app() -> typer.Typer:
    mp = pytest.MonkeyPatch()
    mp.delenv(ENV_LOAD, raising=False)
    mp.delenv(ENV_BLOCK, raising=False)
    try:
        with _no_plugin_warnings():
            return build_app(PluginHost(environ={}))
    finally:
        mp.undo()


def test_version(app):
    result = runner.invoke(app, ["--version"])
    _ok(result)
    assert result.output.strip() == f"lipcli {lipcli.__version__}"
    assert lipcli.__version__ == metadata.version("lipcli")


def test_plugins_json_lists_first_party_plugins_with_hooks(app):
    result = runner.invoke(app, ["plugins", "--json"])
    _ok(result)
    plugins = {p["name"]: p for p in json.loads(result.stdout)}
    for name, hooks in FIRST_PARTY.items():
        assert plugins[name]["hooks"] == hooks
        assert plugins[name]["status"] == "loaded"
        assert plugins[name]["distribution"] == "lipcli"
        assert plugins[name]["version"] == lipcli.__version__


def test_plugins_table(app):
    result = runner.invoke(app, ["plugins"])
    _ok(result)
    assert "lipcli-datasets" in result.output
    rows = {name: row for name, row in _table_rows(result.output).items() if name in FIRST_PARTY}
    assert len(rows) == len(FIRST_PARTY)
    assert all(row[1:3] == ["lipcli", lipcli.__version__] and row[-1] == "loaded" for row in rows.values())


def test_list_datasets_json(app):
    result = runner.invoke(app, ["list", "datasets", "--json"])
    _ok(result)
    data = json.loads(result.stdout)
    assert list(data) == ["datasets"]
    names = {c["name"] for c in data["datasets"]}
    assert FIRST_PARTY_DATASETS <= names
    assert all(c["description"] for c in data["datasets"])
    assert {c["plugin"] for c in data["datasets"] if c["name"] in FIRST_PARTY_DATASETS} == {"lipcli-datasets"}


def test_list_with_pattern_and_singular_kind(app):
    result = runner.invoke(app, ["list", "Architecture", "--pattern", "RES*", "--json"])
    _ok(result)
    assert [c["name"] for c in json.loads(result.stdout)["architectures"]] == ["resnet34", "resnext34"]


def test_list_all_kinds(app):
    result = runner.invoke(app, ["list", "--json"])
    _ok(result)
    assert set(json.loads(result.stdout)) == {"architectures", "defences", "attacks", "datasets"}


def test_list_unknown_kind_is_a_usage_error(app):
    result = runner.invoke(app, ["list", "nosuchkind"])
    assert result.exit_code == 2, result.output
    assert "nosuchkind" in result.output
    result = runner.invoke(app, ["list", "architecturs"])
    assert result.exit_code == 2, result.output
    assert "architectures" in result.output  # closest kind suggested


def test_a_second_plugin_under_a_taken_name_leaves_the_first_intact() -> None:
    class First:
        @hookimpl
        def register_defences(self, register):  # type: ignore[no-untyped-def]
            register("first-defence", object, "first")

    host = PluginHost(load_entrypoints=False)
    assert host.register(First(), "x")
    with pytest.warns(PluginWarning, match="already registered"):
        assert not host.register(First(), "x")
    (info,) = host.plugins()
    assert info.status == "loaded" and info.hooks == ["register_defences"]
    assert "first-defence" in host.registry("defence")

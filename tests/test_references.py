"""Factories registered by reference ("module:attribute"): imported when built, listed without importing, and
``lipcli --help``, ``list`` and ``plugins`` start without torch."""

from __future__ import annotations

import inspect
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from lipcli.api import Register, hookimpl
from lipcli.components import LIPCLI_ARGUMENTS, call_factory, option_defaults
from lipcli.plugin_host import KINDS, PluginHost
from lipcli.references import Reference
from lipcli.registry import Component


def imported_defaults(component: Component) -> dict[str, object]:
    """What the factory's real signature says, imported: the reference for :func:`option_defaults`."""
    parameters = inspect.signature(component.factory).parameters
    return {name: p.default for name, p in parameters.items() if name not in LIPCLI_ARGUMENTS
            and p.kind in (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)}


@pytest.mark.parametrize("kind", list(KINDS))
def test_builtins_are_references_whose_source_reading_equals_their_signature(host: PluginHost, kind: str) -> None:
    for component in host.registry(kind):
        if component.plugin.startswith("lipcli-") and not component.metadata.get("preset"):
            assert isinstance(component.factory, Reference), component.name
            assert component.factory.source_defaults() is not None, component.name  # listing imports nothing
            assert option_defaults(component) == imported_defaults(component), component.name


@pytest.mark.parametrize("command", [["--help"], ["list"], ["list", "attacks", "--json"], ["plugins"]])
def test_help_list_and_plugins_do_not_import_torch(command: list[str]) -> None:
    script = textwrap.dedent(f"""
        import runpy, sys
        sys.argv = ["lipcli", *{command!r}]
        try:
            runpy.run_module("lipcli", run_name="__main__")
        except SystemExit as exit:
            assert not exit.code, exit.code
        print("TORCH IMPORTED" if "torch" in sys.modules else "no torch", file=sys.stderr)
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stderr.strip().endswith("no torch"), done.stderr[-2000:]


def write_module(folder: Path, name: str, source: str) -> None:
    (folder / f"{name}.py").write_text(textwrap.dedent(source))


def test_a_reference_imports_its_module_only_when_built(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_module(tmp_path, "lazy_factories", """
        import dataclasses
        LOADED = True

        def build(info, *, width: int = 8, scale: float = 8 / 255, name: str = "x", shift: int = -2):
            return ("built", info, width, scale, name)

        class Base:
            def __init__(self, steps: int = 3) -> None:
                self.steps = steps

        class Child(Base):
            pass

        @dataclasses.dataclass
        class Options:
            depth: int = 2
    """)
    monkeypatch.syspath_prepend(str(tmp_path))
    build, child, options = (Reference(f"lazy_factories:{n}") for n in ("build", "Child", "Options"))
    component = Component("net", build, "a network", "test")
    assert option_defaults(component) == {"width": 8, "scale": 8 / 255, "name": "x", "shift": -2}
    assert build.source_defaults() == {"info": inspect.Parameter.empty, "width": 8, "scale": 8 / 255, "name": "x",
                                       "shift": -2}
    assert child.source_defaults() == {"steps": 3}
    assert "lazy_factories" not in sys.modules  # reading the source imported nothing
    assert options.source_defaults() is None  # a dataclass: only its import says what it takes
    assert call_factory(component, {"width": 4}, "model.options", info="I") == ("built", "I", 4, 8 / 255, "x")
    assert "lazy_factories" in sys.modules
    assert option_defaults(Component("o", options, "options", "test")) == {"depth": 2}  # by import
    sys.modules.pop("lazy_factories")


def test_a_catch_all_of_options_is_read_from_source(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``**options`` (a factory that hands its options on) lists its named options only, as the imported signature
    does, without importing; ``*args`` still sends listing to the import."""
    write_module(tmp_path, "passing_on", """
        def build(info, *, depth: int = 2, **options):
            return (info, depth, options)

        def spread(*args, depth: int = 2):
            return args
    """)
    monkeypatch.syspath_prepend(str(tmp_path))
    build, spread = Reference("passing_on:build"), Reference("passing_on:spread")
    assert build.source_defaults() == {"info": inspect.Parameter.empty, "depth": 2}
    assert spread.source_defaults() is None
    assert "passing_on" not in sys.modules
    component = Component("net", build, "a network", "test")
    assert option_defaults(component) == imported_defaults(component) == {"depth": 2}
    assert call_factory(component, {"width": 3}, "model.options", info="I") == ("I", 2, {"width": 3})
    sys.modules.pop("passing_on")


TRICKY = """
    import dataclasses
    import functools

    def wider(function):
        def wrapped(steps: int = 5, extra: float = 0.5):
            return function(steps)
        return wrapped

    class WithNew:
        def __new__(cls, steps: int = 3):
            return super().__new__(cls)

    def rebound(steps: int = 1):
        return steps
    rebound = functools.partial(rebound, steps=2)

    @wider
    def decorated(steps: int = 1):
        return steps

    def twice(steps: int = 1):
        return steps
    if True:
        def twice(steps: int = 8):
            return steps

    class TwoInits:
        def __init__(self, steps: int = 1) -> None:
            pass

        def __init__(self, steps: int = 2, more: int = 3) -> None:
            pass

    class Later:
        x: int = 1
    Later = dataclasses.dataclass(Later)
"""


@pytest.mark.parametrize("name", ["WithNew", "rebound", "decorated", "twice", "TwoInits", "Later"])
def test_source_reading_declines_where_the_source_does_not_say_and_listing_imports(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    """Each of these has a signature other than the one its first ``def`` shows: reading the source must give
    up (None), and the options listed come from the imported factory."""
    module = f"tricky_{name.lower()}"
    write_module(tmp_path, module, TRICKY)
    monkeypatch.syspath_prepend(str(tmp_path))
    reference = Reference(f"{module}:{name}")
    assert reference.source_defaults() is None
    component = Component(name, reference, name, "test")
    assert option_defaults(component) == imported_defaults(component)
    sys.modules.pop(module)


def test_a_module_that_fails_to_import_lists_without_options(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_module(tmp_path, "needs_a_driver", """
        raise RuntimeError("needs a GPU driver")

        def build(width=len("abc")):
            return width
    """)
    monkeypatch.syspath_prepend(str(tmp_path))
    component = Component("net", Reference("needs_a_driver:build"), "a network", "test")
    assert option_defaults(component) == {}  # one broken plugin does not break lipcli list
    with pytest.raises(RuntimeError, match="GPU driver"):
        component.factory()


@pytest.mark.parametrize("text", ["no_colon", "module:", ":attr", "a b:c", "module:attr.sub"])
def test_a_malformed_reference_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="package.module:attribute"):
        Reference(text)


class _Nowhere:
    @hookimpl
    def register_attacks(self, register: Register) -> None:
        register("nowhere", "lipcli_no_such_module:Attack", "an attack that does not exist")


def test_a_reference_to_nothing_lists_without_options_and_fails_when_built(host: PluginHost) -> None:
    host.register(_Nowhere(), "nowhere-plugin")
    try:
        component = host.registry("attack").get("nowhere")
        assert option_defaults(component) == {}  # one broken plugin does not break lipcli list
        with pytest.raises(ModuleNotFoundError, match="lipcli_no_such_module"):
            component.factory()
    finally:
        host.unregister("nowhere-plugin")


def test_fab_keeps_the_options_it_had_as_a_partial(host: PluginHost) -> None:
    """``fab`` was ``partial(FAB, targets=0)``: the same options (``targets`` included), so results recorded with
    them stay comparable and ``-O fab.targets=N`` still works."""
    fab, fab_t = (host.registry("attack").get(name) for name in ("fab", "fab-t"))
    assert option_defaults(fab) == {**option_defaults(fab_t), "targets": 0}
    assert call_factory(fab, {"targets": 2}, "attack.fab").targets == 2

"""The public plugin API, ``lipcli.api``: every name it promises resolves, and plugins import nothing else.

Plugins that reach into lipcli's private modules break silently when those change, so the built-in plugins
(``plugins/``) and the example plugin are held to the public API here, by reading their source: a plugin
may write ``from lipcli.api import ...`` or ``from lipcli import api``, nothing else from lipcli.
"""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

import lipcli.api as api

ROOT = Path(__file__).resolve().parents[1]
PLUGIN_SOURCES = sorted(
    [*(ROOT / "plugins").rglob("*.py"), *(ROOT / "examples" / "lipcli-example-plugin").rglob("*.py")]
)
"""Every module of the built-in plugins and of the example plugin: code that must use only the public API."""


def test_all_is_explicit_and_sorted() -> None:
    assert api.__all__ == sorted(api.__all__)
    assert len(set(api.__all__)) == len(api.__all__)


@pytest.mark.parametrize("name", api.__all__)
def test_every_public_name_resolves(name: str) -> None:
    assert getattr(api, name) is not None
    namespace: dict[str, object] = {}
    exec(f"from lipcli.api import {name}", namespace)
    assert namespace[name] is getattr(api, name)


@pytest.mark.parametrize("name", sorted(api._LAZY))
def test_lazy_names_are_the_private_objects_themselves(name: str) -> None:
    """A re-export, not a copy: ``isinstance`` checks and class identity hold across the two names."""
    module, attribute = api._LAZY[name]
    assert getattr(api, name) is getattr(importlib.import_module(module), attribute)


def test_lazy_names_are_public_and_seen_by_type_checkers() -> None:
    """The ``TYPE_CHECKING`` imports (what editors and type checkers see) name exactly the lazy table."""
    assert set(api._LAZY) <= set(api.__all__)
    tree = ast.parse(open(api.__file__, encoding="utf-8").read())
    guarded = next(
        node for node in tree.body
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"
    )
    seen = {
        alias.asname or alias.name: (node.module, alias.name)
        for node in guarded.body if isinstance(node, ast.ImportFrom)
        for alias in node.names
    }
    assert seen == api._LAZY


def test_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'Trainer'"):
        api.Trainer  # noqa: B018
    with pytest.raises(ImportError):
        exec("from lipcli.api import Trainer", {})


def test_import_does_not_load_torch() -> None:
    """A plugin's ``__init__`` imports the API to declare its hooks; that must not cost a torch import."""
    code = (
        "import sys; from lipcli.api import ConfigError, DataError, Register, hookimpl; "
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# -- plugins import only lipcli.api ----------------------------------------------------------------------------


def _is_lipcli(module: str) -> bool:
    return module == "lipcli" or module.startswith("lipcli.")


def private_imports(source: str, filename: str = "<source>") -> list[str]:
    """Each import of lipcli other than its public API in ``source``, as ``file:line: what``.

    Allowed: ``from lipcli.api import NAME`` for names in ``lipcli.api.__all__``, ``import lipcli.api [as ...]``,
    ``from lipcli import api``.
    Everything else that names a lipcli module is reported: ``import lipcli``, ``import lipcli.x``,
    ``from lipcli.x import ...``, ``from lipcli import x`` (``hookimpl`` included), and a literal name given to
    ``importlib.import_module`` or ``__import__``. Imports inside functions and ``TYPE_CHECKING`` blocks count.
    """
    found = []
    for node in ast.walk(ast.parse(source, filename)):
        if isinstance(node, ast.Import):
            bad = [a.name for a in node.names if _is_lipcli(a.name) and a.name != "lipcli.api"]
            found += [f"{filename}:{node.lineno}: import {name}" for name in bad]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module and _is_lipcli(node.module):
            if node.module == "lipcli":
                bad = [a.name for a in node.names if a.name != "api"]
                found += [f"{filename}:{node.lineno}: from lipcli import {name}" for name in bad]
            elif node.module != "lipcli.api":
                found.append(f"{filename}:{node.lineno}: from {node.module} import ...")
            else:  # the API module's own imports and helpers (``_LAZY``, ``importlib``) are not the API
                bad = [a.name for a in node.names if a.name != "*" and a.name not in api.__all__]
                found += [f"{filename}:{node.lineno}: from lipcli.api import {name}" for name in bad]
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            function = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
            name = node.args[0].value
            if function in ("import_module", "__import__") and isinstance(name, str) and _is_lipcli(name):
                if name != "lipcli.api":
                    found.append(f"{filename}:{node.lineno}: {function}({name!r})")
    return found


@pytest.mark.parametrize(
    "source",
    [
        "from lipcli import hookimpl",
        "from lipcli import api, hookimpl",
        "from lipcli.hookspecs import Register",
        "from lipcli.attacks.base import Attack",
        "import lipcli",
        "import lipcli.distributed",
        "import lipcli.api, lipcli.gradients",
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from lipcli.lipschitz.bound import LayerBounds",
        "def build():\n    from lipcli.data import DatasetInfo",
        "import importlib\nimportlib.import_module('lipcli.training.defence')",
        "__import__('lipcli.models.heads')",
        "from lipcli.api import _LAZY, importlib",
    ],
)
def test_a_private_import_is_caught(source: str) -> None:
    assert private_imports(source)


@pytest.mark.parametrize(
    "source",
    [
        "from lipcli.api import Attack, Register, hookimpl",
        "from lipcli import api",
        "import lipcli.api",
        "import lipcli.api as lipcli_api",
        "from lipcli_builtins.attacks.deepfool import DeepFool",
        "import lipcli_example",
        "from . import layers",
        "import lipcli_builtins.datasets.readers",
        "importlib.import_module('lipcli.api')",
    ],
)
def test_public_and_non_lipcli_imports_pass(source: str) -> None:
    assert private_imports(source) == []


def test_the_plugin_sources_are_found() -> None:
    kinds = {path.parent.name for path in PLUGIN_SOURCES}
    assert {"architectures", "attacks", "datasets", "defences", "lipcli_example"} <= kinds


@pytest.mark.parametrize("path", PLUGIN_SOURCES, ids=lambda path: str(path.relative_to(ROOT)))
def test_plugins_import_only_the_public_api(path: Path) -> None:
    """The built-in plugins and the example plugin use lipcli as any third party must: through lipcli.api."""
    found = private_imports(path.read_text(encoding="utf-8"), str(path.relative_to(ROOT)))
    assert not found, "plugins may import only lipcli.api:\n" + "\n".join(found)


def test_the_plugin_guide_names_every_public_name() -> None:
    """docs/plugins.md is the API's documentation: each name of ``lipcli.api`` appears in it, in backticks."""
    guide = (ROOT / "docs" / "plugins.md").read_text(encoding="utf-8")
    missing = [name for name in api.__all__ if f"`{name}`" not in guide]
    assert not missing, f"docs/plugins.md does not mention {missing}"

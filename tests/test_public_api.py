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

import pytest

import lipcli.api as api


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

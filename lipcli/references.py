"""Factories named by reference, ``"package.module:attribute"``, imported on first use.

A plugin that registers ``register("mynet", "my_plugin.models:build_mynet", "...")`` imports nothing heavy when
lipcli asks it what it offers: ``lipcli list``, ``lipcli plugins`` and ``--help`` then start without importing
torch (a second or more), and the module is imported the first time the component is built. ``lipcli list`` shows
each factory's options from its signature; for a reference that signature is read from the module's source (the
parameters and literal defaults of a function or of a class's ``__init__``), so listing imports nothing either.
Where the source cannot be read that way, the factory is imported as before.
"""

from __future__ import annotations

import ast
import functools
import importlib
import importlib.util
import inspect
import operator
import os
import re
from typing import Any, Callable

_FORM = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*")
_OPERATORS: dict[type, Callable[[Any, Any], Any]] = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
    ast.Pow: operator.pow,
}


class Reference:
    """A factory given as ``"package.module:attribute"``: callable like the factory, imported on first use."""

    def __init__(self, path: str) -> None:
        if not _FORM.fullmatch(path):
            raise ValueError(f"a factory reference is 'package.module:attribute', got {path!r}")
        self.path = path
        self._target: Callable[..., Any] | None = None

    def resolve(self) -> Callable[..., Any]:
        """The factory itself (the module is imported the first time)."""
        if self._target is None:
            module, _, attribute = self.path.partition(":")
            target = getattr(importlib.import_module(module), attribute)
            if not callable(target):
                raise TypeError(f"{self.path} is not callable")
            self._target = target
        return self._target

    @property
    def imported(self) -> bool:
        """Whether the factory has been imported (its real signature is then at hand)."""
        return self._target is not None

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.resolve()(*args, **kwargs)

    @property
    def __signature__(self) -> inspect.Signature:  # what inspect.signature() reads: the factory's own
        return inspect.signature(self.resolve())

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Reference) and other.path == self.path

    def __hash__(self) -> int:
        return hash(self.path)

    def __repr__(self) -> str:
        return f"Reference({self.path!r})"

    def source_defaults(self) -> dict[str, Any] | None:
        """The factory's keyword parameters and their defaults (``inspect.Parameter.empty`` when required),
        read from the module's source without importing it; None where that cannot be done exactly (the
        attribute is not a plain function or a class defining ``__init__``, a default is not a literal)."""
        module, _, attribute = self.path.partition(":")
        try:
            spec = importlib.util.find_spec(module)  # imports the parent packages only
            origin = spec.origin if spec else None
            if not origin or not origin.endswith(".py"):
                return None
            status = os.stat(origin)
            tree = _parsed(origin, status.st_mtime_ns, status.st_size)
        except Exception:  # noqa: BLE001 - a parent package that fails to import, a file that does not parse
            return None
        function = _function(tree, attribute)
        if function is None or isinstance(function, dict):
            return function
        try:
            return _parameters(function)
        except ValueError:
            return None


def as_factory(factory: Callable[..., Any] | str) -> Callable[..., Any]:
    """What a plugin passed as a factory, as a callable: a ``"module:attribute"`` string becomes a :class:`Reference`."""
    return Reference(factory) if isinstance(factory, str) else factory


def resolved(factory: Callable[..., Any]) -> Callable[..., Any]:
    """The factory behind a :class:`Reference` (imported now), or ``factory`` itself."""
    return factory.resolve() if isinstance(factory, Reference) else factory


@functools.lru_cache(maxsize=64)
def _parsed(origin: str, mtime_ns: int, size: int) -> ast.Module:
    """A module's syntax tree, parsed once per process and version of the file (``lipcli list`` reads one module
    for many factories: torchvision's 80 models are in one file)."""
    with open(origin, encoding="utf-8") as handle:
        return ast.parse(handle.read(), origin)


def _function(tree: ast.Module, attribute: str) -> ast.FunctionDef | dict[str, Any] | None:
    """The function whose parameters are the factory's: the module-level function, or the ``__init__`` a class
    defines or inherits from a class of the same module (single inheritance); ``{}`` for a class whose chain ends
    at ``object`` without one. None wherever the source might not say what the signature is: a name bound more than
    once in the module (a second ``def``, ``f = partial(f, ...)``, ``C = dataclass(C)``), a decorator, a metaclass
    keyword, ``__new__`` or ``__signature__`` in a class, several ``__init__``."""
    bound = _bindings(tree)
    top = {node.name: node for node in tree.body if isinstance(node, (ast.FunctionDef, ast.ClassDef))}
    node = top.get(attribute)
    seen: set[str] = set()
    while node is not None and node.name not in seen:
        seen.add(node.name)
        if bound.count(node.name) != 1 or node.decorator_list:
            return None
        if isinstance(node, ast.FunctionDef):
            return node
        if node.keywords:
            return None
        members = [item.name for item in node.body if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef))]
        members += [target.id for item in node.body if isinstance(item, ast.Assign)
                    for target in item.targets if isinstance(target, ast.Name)]
        if "__new__" in members or "__signature__" in members or members.count("__init__") > 1:
            return None
        init = next((item for item in node.body if isinstance(item, ast.FunctionDef) and item.name == "__init__"), None)
        if init is not None:
            return None if init.decorator_list else init
        bases = [base.id for base in node.bases if isinstance(base, ast.Name)]
        if not node.bases or bases == ["object"]:
            return {}
        if len(node.bases) != 1 or len(bases) != 1:
            return None
        node = top.get(bases[0])
        if not isinstance(node, ast.ClassDef):
            return None
    return None


def _bindings(tree: ast.Module) -> list[str]:
    """Every name the module binds outside functions and classes, once per binding (``if`` and ``try`` bodies
    included)."""
    names: list[str] = []
    pending: list[ast.stmt] = list(tree.body)
    while pending:
        node = pending.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.append(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names += [n.id for target in targets for n in ast.walk(target) if isinstance(n, ast.Name)]
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names += [(alias.asname or alias.name).split(".")[0] for alias in node.names]
        else:
            for field in ("body", "orelse", "finalbody", "handlers"):
                pending += [child for child in getattr(node, field, []) if isinstance(child, ast.stmt)]
            pending += [child for handler in getattr(node, "handlers", []) for child in handler.body]
    return names


def _parameters(function: ast.FunctionDef) -> dict[str, Any]:
    """The parameters lipcli passes by keyword, with their defaults. A ``**options`` catch-all is no named option
    (as in the imported signature's listing): the factory takes any option, and says itself which it rejects."""
    arguments = function.args
    if arguments.vararg or arguments.posonlyargs:
        raise ValueError("*args or positional-only parameters: import the factory instead")
    positional = arguments.args[1:] if function.name == "__init__" else arguments.args
    defaults: list[Any] = [inspect.Parameter.empty] * (len(positional) - len(arguments.defaults))
    defaults += [_literal(node) for node in arguments.defaults]
    found = {arg.arg: default for arg, default in zip(positional, defaults)}
    for arg, default in zip(arguments.kwonlyargs, arguments.kw_defaults):
        found[arg.arg] = inspect.Parameter.empty if default is None else _literal(default)
    return found


def _literal(node: ast.expr) -> Any:
    """A default written as a literal or as arithmetic on literals (``8 / 255``); anything else is a ValueError."""
    if isinstance(node, ast.BinOp) and type(node.op) in _OPERATORS:
        return _OPERATORS[type(node.op)](_literal(node.left), _literal(node.right))
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        return -_literal(node.operand)
    return ast.literal_eval(node)

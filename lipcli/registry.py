"""Named component registries: case-insensitive lookup, wildcard listing, closest-name suggestions.

A duplicate name is an error naming both plugins (as torchvision does), never a silent overwrite: two
plugins fighting over "resnet34" would otherwise change results depending on load order.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

from lipcli.errors import DuplicateNameError, UnknownNameError
from lipcli.suggestions import did_you_mean


@dataclass(frozen=True)
class Component:
    """One registered component: its factory, a one-line description and the plugin that added it."""

    name: str
    factory: Callable[..., Any]
    description: str
    plugin: str
    metadata: dict[str, Any] = field(default_factory=dict)


def _key(name: str) -> str:
    return name.strip().lower()


class Registry:
    """The components of one kind ("architecture", "dataset", ...)."""

    def __init__(self, kind: str, missing: str = "") -> None:
        self.kind = kind
        self.missing = missing
        """Appended to unknown-name errors: which plugins were not loaded, and why (blocked, failed)."""
        self._items: dict[str, Component] = {}

    def add(self, component: Component) -> None:
        """Add a component; a name already taken (in any case) is a :class:`DuplicateNameError`."""
        if not component.name or not component.name.strip():
            raise ValueError(f"{self.kind} name must be a non-empty string (plugin {component.plugin!r})")
        key = _key(component.name)
        if key in self._items:
            other = self._items[key]
            raise DuplicateNameError(
                f"{self.kind} {component.name!r} is registered by both plugin {other.plugin!r} and plugin "
                f"{component.plugin!r}; block one with LIPCLI_BLOCK_PLUGINS."
            )
        self._items[key] = component

    def get(self, name: str) -> Component:
        """The component called ``name`` (any case); unknown names suggest the closest ones."""
        try:
            return self._items[_key(name)]
        except KeyError:
            raise UnknownNameError(
                f"unknown {self.kind} {name!r}." + did_you_mean(name, self.names()) + self.missing
            ) from None

    def __contains__(self, name: str) -> bool:
        return _key(name) in self._items

    def __iter__(self) -> Iterator[Component]:
        return iter(sorted(self._items.values(), key=lambda c: _key(c.name)))

    def __len__(self) -> int:
        return len(self._items)

    def names(self) -> list[str]:
        return [c.name for c in self]

    def list(self, pattern: str | None = None) -> list[Component]:
        """Components whose name matches a shell-style wildcard ``pattern`` (case-insensitive)."""
        if pattern is None:
            return list(self)
        return [c for c in self if fnmatch.fnmatch(_key(c.name), pattern.lower())]

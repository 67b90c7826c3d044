"""Named component registries: case-insensitive lookup, wildcard listing, closest-name suggestions.

A duplicate name is an error naming both plugins (as torchvision does), never a silent overwrite: two
plugins fighting over "resnet34" would otherwise change results depending on load order.
"""

from __future__ import annotations

import difflib
import fnmatch
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

from lipcli.errors import DuplicateNameError, UnknownNameError


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


def suggest(name: str, candidates: list[str], n: int = 3) -> list[str]:
    """The closest candidates to ``name`` (case-insensitive), best first."""
    lowered = {c.lower(): c for c in candidates}
    return [lowered[m] for m in difflib.get_close_matches(name.lower(), list(lowered), n=n, cutoff=0.5)]


def did_you_mean(name: str, candidates: list[str]) -> str:
    """A ' Did you mean ...?' suffix for error messages, or the list of valid names when nothing is close."""
    close = suggest(name, candidates)
    if close:
        return " Did you mean " + " or ".join(repr(c) for c in close) + "?"
    if candidates:
        return " Known: " + ", ".join(sorted(candidates)) + "."
    return ""


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

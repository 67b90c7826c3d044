"""The plugin host: discovers plugins from the ``lipcli`` entry-point group and builds the component registries.

Failure isolation is the point of this module: a plugin that fails to import, to register, or that
implements a misspelt hook gives one warning naming it, and every other plugin keeps working. Its partial
registrations are discarded, so a half-registered plugin never leaves the registries inconsistent.

Two environment variables choose what loads (names are entry-point names or distribution names,
comma-separated, case-insensitive, ``-`` and ``_`` alike):

* ``LIPCLI_PLUGINS``: load only these (unset: all; empty: none);
* ``LIPCLI_BLOCK_PLUGINS``: never load these.
"""

from __future__ import annotations

import functools
import os
import re
import warnings
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any, Callable, Mapping

import pluggy

from lipcli import hookspecs
from lipcli.errors import UnknownNameError
from lipcli.references import as_factory
from lipcli.registry import Component, Registry
from lipcli.suggestions import did_you_mean

ENTRY_POINT_GROUP = "lipcli"
ENV_LOAD = "LIPCLI_PLUGINS"
ENV_BLOCK = "LIPCLI_BLOCK_PLUGINS"

KINDS: dict[str, str] = {
    "architecture": "register_architectures",
    "defence": "register_defences",
    "attack": "register_attacks",
    "dataset": "register_datasets",
}
"""Component kind -> the hook that fills its registry."""


class PluginWarning(UserWarning):
    """A plugin failed to load or register; the rest of lipcli keeps working."""


@dataclass
class PluginInfo:
    """What ``lipcli plugins`` shows about one plugin."""

    name: str
    distribution: str | None = None
    version: str | None = None
    hooks: list[str] = field(default_factory=list)
    status: str = "loaded"


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name.strip().lower())


def _names_from_env(value: str | None) -> set[str] | None:
    if value is None:
        return None
    return {_norm(part) for part in value.split(",") if part.strip()}


class _Collector:
    """The ``register`` callback handed to one plugin: stages components until the plugin's hook returns."""

    def __init__(self) -> None:
        self.staged: list[dict[str, Any]] = []

    def __call__(self, name: str, factory: Callable[..., Any] | str, description: str = "", **metadata: Any) -> None:
        if not isinstance(name, str) or not name.strip():
            raise ValueError(f"component name must be a non-empty string, got {name!r}")
        factory = as_factory(factory)
        if not callable(factory):
            raise TypeError(f"factory for {name!r} is not callable")
        self.staged.append(
            {"name": name.strip(), "factory": factory, "description": str(description), "metadata": metadata}
        )


class PluginHost:
    """One pluggy manager plus the registries built from it."""

    def __init__(self, *, load_entrypoints: bool = True, environ: Mapping[str, str] | None = None) -> None:
        self.pm = pluggy.PluginManager(ENTRY_POINT_GROUP)
        self.pm.add_hookspecs(hookspecs)
        self._info: dict[str, PluginInfo] = {}
        self._registries: dict[str, Registry] = {}
        if load_entrypoints:
            self.load_entrypoints(os.environ if environ is None else environ)

    # -- discovery -------------------------------------------------------------------------------------------

    def load_entrypoints(self, environ: Mapping[str, str]) -> None:
        """Load every plugin of the ``lipcli`` entry-point group that the environment allows."""
        only = _names_from_env(environ.get(ENV_LOAD))
        blocked = _names_from_env(environ.get(ENV_BLOCK)) or set()
        points = sorted(metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name)
        installed = {_norm(ep.name) for ep in points} | {_norm(ep.dist.name) for ep in points if ep.dist is not None}
        for variable, names in ((ENV_LOAD, only or set()), (ENV_BLOCK, blocked)):
            for name in sorted(names - installed):
                warnings.warn(f"{variable} names {name!r}, which is no installed plugin."
                              + did_you_mean(name, sorted(installed)), PluginWarning, stacklevel=2)
        for ep in points:
            dist = ep.dist.name if ep.dist is not None else None
            version = ep.dist.version if ep.dist is not None else None
            names = {_norm(ep.name)} | ({_norm(dist)} if dist else set())
            if ep.name in self._info:
                continue  # the same distribution seen twice on sys.path
            if names & blocked:
                self._info[ep.name] = PluginInfo(ep.name, dist, version, status=f"blocked by {ENV_BLOCK}")
                continue
            if only is not None and not names & only:
                self._info[ep.name] = PluginInfo(ep.name, dist, version, status=f"not in {ENV_LOAD}")
                continue
            try:
                plugin = ep.load()
            except Exception as exc:  # noqa: BLE001 - any import failure must be isolated
                self._fail(ep.name, dist, version, f"failed to import: {type(exc).__name__}: {exc}")
                continue
            self.register(plugin, ep.name, distribution=dist, version=version)

    def register(
        self, plugin: Any, name: str, *, distribution: str | None = None, version: str | None = None
    ) -> bool:
        """Register a plugin object (module or instance); returns False (with a warning) if it is invalid."""
        if self.pm.has_plugin(name):  # keep the loaded plugin's entry intact
            warnings.warn(f"plugin {name!r} is already registered; the second one is ignored", PluginWarning, stacklevel=2)
            return False
        try:
            self.pm.register(plugin, name=name)
        except Exception as exc:  # noqa: BLE001 - pluggy validation errors
            self._fail(name, distribution, version, f"failed to register: {exc}")
            return False
        unknown = _unknown_hooks(plugin)
        if unknown:
            self.pm.unregister(plugin)
            hook = unknown[0]
            self._fail(
                name, distribution, version,
                f"implements unknown hook {hook!r}." + did_you_mean(hook, hookspecs.hook_names()),
            )
            return False
        hooks = sorted(i.function.__name__ for i in self._impls_of(plugin))
        self._info[name] = PluginInfo(name, distribution, version, hooks)
        self._registries.clear()
        return True

    def unregister(self, name: str) -> None:
        """Remove a plugin (tests register a plugin and unregister it after)."""
        self.pm.unregister(name=name)
        self._info.pop(name, None)
        self._registries.clear()

    def plugins(self) -> list[PluginInfo]:
        """Every plugin seen, loaded or not, sorted by name."""
        return sorted(self._info.values(), key=lambda p: p.name)

    def plugin(self, name: str) -> PluginInfo:
        """The plugin called ``name`` (its entry-point or distribution name, spelt as ``LIPCLI_PLUGINS`` allows)."""
        for info in self._info.values():
            if _norm(name) in {_norm(info.name), _norm(info.distribution or info.name)}:
                return info
        raise UnknownNameError(f"no plugin {name!r} is installed." + did_you_mean(name, list(self._info)))

    # -- registries ------------------------------------------------------------------------------------------

    def registry(self, kind: str) -> Registry:
        """The registry of ``kind``, built on first use by calling each plugin's hook in isolation."""
        if kind not in KINDS:
            raise ValueError(f"unknown component kind {kind!r}; known: {', '.join(KINDS)}")
        if kind not in self._registries:
            absent = [f"{p.name} ({p.status})" for p in self.plugins() if p.status != "loaded"]
            registry = Registry(kind, f" Plugins not loaded: {', '.join(absent)}." if absent else "")
            for plugin_name, components in self._collect(KINDS[kind]):
                for component in components:
                    registry.add(Component(plugin=plugin_name, **component))
            self._registries[kind] = registry
        return self._registries[kind]

    def add_commands(self, app: Any) -> None:
        """Let each plugin add commands to the Typer ``app``; a failing plugin's commands are removed again."""
        for impl in self._hookimpls("register_commands"):
            before_commands, before_groups = len(app.registered_commands), len(app.registered_groups)
            try:
                impl.function(*[{"app": app}[a] for a in impl.argnames])
            except Exception as exc:  # noqa: BLE001
                del app.registered_commands[before_commands:]
                del app.registered_groups[before_groups:]
                self._warn(impl.plugin_name, f"failed in register_commands: {type(exc).__name__}: {exc}")

    # -- internals -------------------------------------------------------------------------------------------

    def _collect(self, hook_name: str) -> list[tuple[str, list[dict[str, Any]]]]:
        """Call each plugin's ``hook_name`` with its own ``register`` callback; drop plugins that raise."""
        results = []
        for impl in self._hookimpls(hook_name):
            register = _Collector()
            try:
                impl.function(*[{"register": register}[a] for a in impl.argnames])
            except Exception as exc:  # noqa: BLE001 - one broken plugin must not break the others
                self._warn(impl.plugin_name, f"failed in {hook_name}: {type(exc).__name__}: {exc}")
                continue
            results.append((impl.plugin_name, register.staged))
        return results

    def _hookimpls(self, hook_name: str) -> list[pluggy.HookImpl]:
        # Registration order, so built-in plugins (loaded first, sorted by name) are listed first.
        return sorted(getattr(self.pm.hook, hook_name).get_hookimpls(), key=self._order)

    def _order(self, impl: pluggy.HookImpl) -> int:
        names = list(self._info)
        return names.index(impl.plugin_name) if impl.plugin_name in names else len(names)

    def _impls_of(self, plugin: Any) -> list[pluggy.HookImpl]:
        callers = self.pm.get_hookcallers(plugin) or []
        return [i for caller in callers for i in caller.get_hookimpls() if i.plugin is plugin]

    def _fail(self, name: str, distribution: str | None, version: str | None, reason: str) -> None:
        self._info[name] = PluginInfo(name, distribution, version, status=reason)
        self._warn(name, reason)

    def _warn(self, name: str, reason: str) -> None:
        if name in self._info and self._info[name].status == "loaded":
            self._info[name].status = reason
        warnings.warn(f"plugin {name!r} {reason}", PluginWarning, stacklevel=3)


def _unknown_hooks(plugin: Any) -> list[str]:
    """Functions marked ``@hookimpl`` whose name is no hook of the contract (pluggy accepts those silently)."""
    specs = set(hookspecs.hook_names())
    return [
        attr for attr in dir(plugin)
        if attr not in specs and hasattr(getattr(plugin, attr, None), f"{ENTRY_POINT_GROUP}_impl")
    ]


@functools.cache
def get_host() -> PluginHost:
    """The process-wide host, loading entry-point plugins on first use."""
    return PluginHost()

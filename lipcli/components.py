"""Calling a plugin's factory with options from the configuration, with errors that name the dotted key."""

from __future__ import annotations

import inspect
import math
import types
import typing
from typing import Any, Mapping

from lipcli.errors import ConfigError
from lipcli.references import Reference, resolved
from lipcli.registry import Component
from lipcli.suggestions import did_you_mean


def check_options(component: Component, options: Mapping[str, Any], dotted: str, reserved: set[str]) -> None:
    """Reject options the factory does not accept, before calling it (a TypeError deep inside is no help).

    ``reserved`` are the arguments lipcli itself passes (``info``, ``data_dir``, ...), never user options.
    """
    parameters = inspect.signature(component.factory).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
    accepted = [
        name for name, p in parameters.items()
        if name not in reserved and p.kind in (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    ]
    for key in options:
        if key in reserved:
            raise ConfigError(f"{dotted}.{key}: set by lipcli itself, not an option of {component.name!r}")
        if not takes_any and key not in accepted:
            known = did_you_mean(key, accepted) if accepted else f" {component.name!r} takes no options."
            raise ConfigError(f"{dotted}.{key}: unknown option of {component.name!r}.{known}")
    for name in accepted:
        if parameters[name].default is inspect.Parameter.empty and name not in options:
            raise ConfigError(f"{dotted}.{name}: required by {component.name!r}, and not set")
    kinds = option_kinds(component)
    for key, value in options.items():
        problem = _type_problem(value, kinds.get(key))
        if problem:
            raise ConfigError(f"{dotted}.{key}: {problem}, got {value!r}")


_SIMPLE = (bool, int, float, str)


def option_kinds(component: Component) -> dict[str, tuple[type, ...]]:
    """Per option, the simple types (bool, int, float, str, and NoneType where None is allowed) its value
    must have, from the factory's annotations (an unannotated option: a number where its default is one, else
    its default's type); options of other or unresolvable types are absent (not checked). The factory's
    signature is the one description of its options, for any plugin."""
    factory = resolved(component.factory)
    try:
        parameters = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        return {}
    try:
        hints = typing.get_type_hints(factory.__init__ if isinstance(factory, type) else factory)
    except Exception:  # noqa: BLE001 - an annotation that does not resolve: fall back on the defaults
        hints = {}
    kinds = {}
    for name, parameter in parameters.items():
        if name in hints:
            kind = _annotation_kinds(hints[name])
        elif parameter.annotation is inspect.Parameter.empty and type(parameter.default) in _SIMPLE:
            kind = (int, float) if type(parameter.default) in (int, float) else (type(parameter.default),)
        else:  # an annotation that did not resolve: nothing to check it against
            kind = None
        if kind:
            kinds[name] = kind
    return kinds


def _annotation_kinds(annotation: Any) -> tuple[type, ...] | None:
    """The simple types an annotation allows, or None where it allows anything else too."""
    members = typing.get_args(annotation) if typing.get_origin(annotation) in (typing.Union, types.UnionType) else (
        annotation,)
    if typing.get_origin(annotation) is typing.Literal:
        return tuple({type(v) for v in typing.get_args(annotation)})
    kinds = tuple(m for m in members if m in _SIMPLE or m is type(None))
    return kinds if len(kinds) == len(members) else None


def _type_problem(value: Any, kinds: tuple[type, ...] | None) -> str | None:
    """Why ``value`` cannot be given where ``kinds`` are expected (TOML's types: bool is not a number, a float
    is not an integer, numbers are finite), or None."""
    if isinstance(value, float) and not math.isfinite(value):
        return "expected a finite number"
    if kinds is None or (value is None and type(None) in kinds):
        return None
    if isinstance(value, bool):
        return None if bool in kinds else f"expected {_names(kinds)}"
    if isinstance(value, int) and (int in kinds or float in kinds):
        return None
    if isinstance(value, float) and float in kinds:
        return None
    if isinstance(value, str) and str in kinds:
        return None
    return f"expected {_names(kinds)}"


def _names(kinds: tuple[type, ...]) -> str:
    words = {bool: "true or false", int: "an integer", float: "a number", str: "a string", type(None): "nothing"}
    return " or ".join(words[k] for k in kinds if k is not type(None) and not (k is int and float in kinds))


def call_factory(component: Component, options: Mapping[str, Any], dotted: str, **fixed: Any) -> Any:
    """``component.factory(**fixed, **options)`` after :func:`check_options`.

    A ``TypeError`` or ``ValueError`` of a factory given options is taken to be about their values and names
    the key; without options there is nothing of the user's to blame, so it stays the plugin's error.
    """
    check_options(component, options, dotted, set(fixed))
    try:
        return component.factory(**fixed, **options)
    except (TypeError, ValueError) as exc:
        if not options:
            raise
        raise ConfigError(f"{dotted}: {component.name!r} rejected its options {dict(options)}: {exc}") from None


LIPCLI_ARGUMENTS = frozenset({"info", "data_dir", "download", "batchnorm_affine"})
"""Factory arguments lipcli passes itself (see the hook specs), never user options."""


def option_defaults(component: Component) -> dict[str, Any]:
    """The user options a factory accepts, with their defaults (``inspect.Parameter.empty`` when required); a
    factory given by reference is read from its source where possible, so listing options imports nothing."""
    factory = component.factory
    if isinstance(factory, Reference) and not factory.imported:
        read = factory.source_defaults()
        if read is not None:
            return {name: default for name, default in read.items() if name not in LIPCLI_ARGUMENTS}
    try:
        parameters = inspect.signature(factory).parameters
    except (TypeError, ValueError):  # a builtin or C callable without a signature
        return {}
    except Exception:  # noqa: BLE001 - a reference that does not import: building it says why, listing goes on
        return {}
    return {
        name: p.default for name, p in parameters.items()
        if name not in LIPCLI_ARGUMENTS
        and p.kind in (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    }

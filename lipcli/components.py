"""Calling a plugin's factory with options from the configuration, with errors that name the dotted key."""

from __future__ import annotations

import inspect
from typing import Any, Mapping

from lipcli.errors import ConfigError
from lipcli.registry import Component, did_you_mean


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
    """The user options a factory accepts, with their defaults (``inspect.Parameter.empty`` when required)."""
    try:
        parameters = inspect.signature(component.factory).parameters
    except (TypeError, ValueError):  # a builtin or C callable without a signature
        return {}
    return {
        name: p.default for name, p in parameters.items()
        if name not in LIPCLI_ARGUMENTS
        and p.kind in (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    }

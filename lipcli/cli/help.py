"""How commands show their help: a flag is a plain flag, with no value placeholder.

Typer's rich help prints the type of every option, ``<bool>`` for a flag too, as if ``--quiet true`` were
how to give it (it is not: ``true`` is then taken for the next argument). Every lipcli command and group,
plugins' commands included (:func:`lipcli.cli.app.build_app` sets their class), shows flags bare.
"""

from __future__ import annotations

from typing import Any

from typer.core import TyperCommand, TyperGroup


class PlainFlags:
    """Mixin for a Click command or group: its flags (the help flag included) show no value in help."""

    def get_params(self, ctx: Any) -> list[Any]:
        params: list[Any] = super().get_params(ctx)  # type: ignore[misc]
        for param in params:
            if getattr(param, "is_flag", False) and param.metavar is None:
                param.metavar = ""
        return params


class LipcliCommand(PlainFlags, TyperCommand):
    """A command: its flags shown as plain flags."""


class CommandGroup(PlainFlags, TyperGroup):
    """A group of commands below ``lipcli`` (``lipcli config``, ``lipcli plugins``): plain flags."""

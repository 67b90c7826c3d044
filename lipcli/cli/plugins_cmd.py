"""``lipcli plugins`` and ``lipcli list``: what is installed and what it registered."""

from __future__ import annotations

import inspect
from typing import Annotated, Any, Optional

import typer
from rich.table import Table

from lipcli.cli import console
from lipcli.components import option_defaults
from lipcli.plugins import KINDS, PluginHost
from lipcli.registry import did_you_mean

_PLURALS = {f"{kind}s": kind for kind in KINDS}


def _kind(value: str) -> str:
    key = value.strip().lower()
    key = _PLURALS.get(key, key)
    if key not in KINDS:
        raise typer.BadParameter(f"unknown kind {value!r}." + did_you_mean(value, list(_PLURALS)))
    return key


def _default(value: Any) -> Any:
    """An option's default for display: ``required`` when it has none."""
    return "required" if value is inspect.Parameter.empty else value


def add_to(app: typer.Typer) -> None:
    @app.command("plugins")
    def plugins(
        ctx: typer.Context,
        as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    ) -> None:
        """List plugins with their version, hooks and load status."""
        host: PluginHost = ctx.obj
        infos = host.plugins()
        if as_json:
            console.print_json([vars(info) for info in infos])
            return
        table = Table(title="lipcli plugins")
        for column in ("plugin", "distribution", "version", "hooks", "status"):
            table.add_column(column)
        for info in infos:
            status = "[green]loaded[/]" if info.status == "loaded" else f"[yellow]{info.status}[/]"
            table.add_row(info.name, info.distribution or "-", info.version or "-", ", ".join(info.hooks), status)
        console.out.print(table)

    @app.command("list")
    def list_components(
        ctx: typer.Context,
        kind: Annotated[
            Optional[str],
            typer.Argument(help="architectures, defences, attacks or datasets (default: all).", show_default=False),
        ] = None,
        pattern: Annotated[Optional[str], typer.Option("--pattern", "-p", help="Wildcard filter, e.g. 'res*'.")] = None,
        as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    ) -> None:
        """List registered components by kind, with their descriptions and the plugin that added them."""
        host: PluginHost = ctx.obj
        kinds = [_kind(kind)] if kind else list(KINDS)
        listing = {k: host.registry(k).list(pattern) for k in kinds}
        if as_json:
            console.print_json(
                {f"{k}s": [{"name": c.name, "description": c.description, "plugin": c.plugin,
                            "options": {n: _default(v) for n, v in option_defaults(c).items()}} for c in comps]
                 for k, comps in listing.items()}
            )
            return
        for k, comps in listing.items():
            table = Table(title=f"{k}s", title_justify="left")
            for column in ("name", "description", "options", "plugin"):
                table.add_column(column)
            for c in comps:
                options = ", ".join(f"{n}={_default(v)}" for n, v in option_defaults(c).items())
                table.add_row(c.name, c.description, options, c.plugin)
            if not comps:
                table.add_row("-", "(none registered)", "", "-")
            console.out.print(table)

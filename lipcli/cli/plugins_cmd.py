"""``lipcli plugins`` and ``lipcli list``: what is installed and what it registered."""

from __future__ import annotations

import inspect
from typing import Annotated, Any, Optional

import typer
from rich.table import Table

from lipcli.cli import console
from lipcli.cli.help import CommandGroup
from lipcli.cli.options import Json, Verbose
from lipcli.components import option_defaults
from lipcli.errors import LipcliError, UnknownNameError
from lipcli.plugin_host import KINDS, PluginHost
from lipcli.suggestions import did_you_mean

_PLURALS = {f"{kind}s": kind for kind in KINDS}


def _kind(value: str) -> str:
    key = value.strip().lower()
    key = _PLURALS.get(key, key)
    if key not in KINDS:
        raise UnknownNameError(f"unknown kind {value!r}." + did_you_mean(value, list(_PLURALS)))
    return key


Kind = Annotated[
    Optional[str],
    typer.Argument(help="architectures, defences, attacks or datasets (default: all).", show_default=False),
]
Pattern = Annotated[Optional[str], typer.Option("--pattern", "-p", help="Wildcard filter, e.g. 'res*'.")]
PluginName = Annotated[Optional[str], typer.Option("--plugin", help="Only this plugin's components.")]
KindOption = Annotated[Optional[str], typer.Option("--kind", help="Only this kind (architectures, ...).")]


def _default(value: Any) -> Any:
    """An option's default for display: ``required`` when it has none."""
    return "required" if value is inspect.Parameter.empty else value


def plugins(ctx: typer.Context, as_json: Json = False, verbose: Verbose = False) -> None:
    """List plugins with their version, hooks and load status (lipcli plugins check: test them)."""
    if ctx.invoked_subcommand is not None:
        return
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


def check(
    ctx: typer.Context,
    plugin: PluginName = None,
    kind: KindOption = None,
    as_json: Json = False,
    verbose: Verbose = False,
) -> None:
    """Check every registered component against lipcli's contract (the one its own plugins pass).

    Per component and check: pass, fail (with the reason) or skip (e.g. a data set whose files are not
    here). The exit code is 1 when a check fails.
    """
    from lipcli.contracts import describe, run_checks

    host: PluginHost = ctx.obj
    kinds = [_kind(kind)] if kind else None
    info = host.plugin(plugin) if plugin is not None else None
    results = run_checks(host, kinds, info.name if info else None)
    if info is not None and info.status != "loaded":  # read after the checks: a hook that raises sets it
        raise LipcliError(f"plugin {info.name!r} is not checked: it is {info.status}")
    if not results:
        what = f"{kinds[0] if kinds else 'component'}s"
        raise LipcliError(f"plugin {info.name!r} registered no {what} to check" if info else f"no {what} are registered")
    counts = describe(results)
    if as_json:
        console.print_json({"results": [vars(r) for r in results], **counts})
    else:
        table = Table(title="contract checks", title_justify="left")
        for column in ("kind", "component", "plugin", "check", "status", "detail"):
            table.add_column(column)
        colour = {"pass": "green", "fail": "red", "skip": "yellow"}
        for r in results:
            table.add_row(r.kind, r.name, r.plugin, r.check, f"[{colour[r.status]}]{r.status}[/]", r.detail)
        console.out.print(table)
        console.out.print(f"{counts['pass']} passed, {counts['fail']} failed, {counts['skip']} skipped",
                          highlight=False)
    if counts["fail"]:
        raise typer.Exit(1)


def list_components(
    ctx: typer.Context,
    kind: Kind = None,
    pattern: Pattern = None,
    as_json: Json = False,
    verbose: Verbose = False,
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


def add_to(app: typer.Typer) -> None:
    plugins_app = typer.Typer(cls=CommandGroup, invoke_without_command=True)
    plugins_app.callback()(plugins)
    plugins_app.command("check")(check)
    app.add_typer(plugins_app, name="plugins")
    app.command("list")(list_components)

"""``lipcli config show``: the configuration a run would use, after every layer is applied."""

from __future__ import annotations

import typer
from rich.syntax import Syntax
from rich.table import Table

from lipcli.cli import console
from lipcli.cli.help import CommandGroup
from lipcli.cli.options import ConfigFile, Json, Recipe, SetOverrides, Verbose


def show(
    config: ConfigFile = None,
    recipe: Recipe = None,
    overrides: SetOverrides = None,
    as_json: Json = False,
    verbose: Verbose = False,
) -> None:
    """Print the resolved configuration: defaults < recipe < --config file < --set overrides."""
    from lipcli.config import dumps, resolve

    resolved = resolve(config, {"recipe": recipe}, overrides or [])
    if as_json:
        console.print_json(resolved.to_dict())
    elif console.out.is_terminal:
        console.out.print(Syntax(dumps(resolved.to_dict()), "toml", background_color="default"))
    else:
        typer.echo(dumps(resolved.to_dict()), nl=False)


def recipes(as_json: Json = False, verbose: Verbose = False) -> None:
    """List the training recipes (use with --recipe or `recipe = "..."` in an experiment file)."""
    from lipcli.config.recipes import describe, recipe_names

    listing = {name: describe(name) for name in recipe_names()}
    if as_json:
        console.print_json(listing)
        return
    table = Table(title="recipes", title_justify="left")
    table.add_column("name")
    table.add_column("description")
    for name, text in listing.items():
        table.add_row(name, text)
    console.out.print(table)


def add_to(app: typer.Typer) -> None:
    group = typer.Typer(cls=CommandGroup, help="Inspect experiment configurations.", no_args_is_help=True)
    group.command("show")(show)
    group.command("recipes")(recipes)
    app.add_typer(group, name="config")

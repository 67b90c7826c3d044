"""``lipcli config show``: the configuration a run would use, after every layer is applied."""

from __future__ import annotations

import typer
from rich.syntax import Syntax

from lipcli.cli import console
from lipcli.cli.options import ConfigFile, Json, SetOverrides


def add_to(app: typer.Typer) -> None:
    group = typer.Typer(help="Inspect experiment configurations.", no_args_is_help=True)

    @group.command("show")
    def show(config: ConfigFile = None, overrides: SetOverrides = None, as_json: Json = False) -> None:
        """Print the resolved configuration: defaults < --config file < --set overrides."""
        from lipcli.config import dumps, resolve

        resolved = resolve(config, {}, overrides or [])
        if as_json:
            console.print_json(resolved.to_dict())
        elif console.out.is_terminal:
            console.out.print(Syntax(dumps(resolved.to_dict()), "toml", background_color="default"))
        else:
            typer.echo(dumps(resolved.to_dict()), nl=False)

    app.add_typer(group, name="config")

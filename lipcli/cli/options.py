"""Options shared by every command that resolves an experiment configuration."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

ConfigFile = Annotated[
    Optional[Path],
    typer.Option("--config", "-c", help="TOML experiment file.", show_default=False, dir_okay=False),
]
SetOverrides = Annotated[
    Optional[list[str]],
    typer.Option(
        "--set", "-s", metavar="SECTION.KEY=VALUE",
        help="Override one configuration key (repeatable); the value is read as TOML, e.g. --set training.lr=0.05.",
        show_default=False,
    ),
]
Json = Annotated[bool, typer.Option("--json", help="Print results as JSON.")]

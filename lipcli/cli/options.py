"""Options shared by several commands: experiment configuration, and the evaluation commands' common ones."""

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
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress output.")]
Device = Annotated[str, typer.Option("--device", help="auto, cpu, cuda or cuda:N.")]
DataDir = Annotated[Optional[Path], typer.Option("--data-dir", help="Read the data set offline from this folder.")]
Limit = Annotated[Optional[int], typer.Option("--limit", min=1, help="Evaluate the first N test images only.")]
BatchSize = Annotated[Optional[int], typer.Option("--batch-size", min=1, help="Images per batch.")]
Checkpoints = Annotated[
    list[Path], typer.Argument(help="Checkpoints written by lipcli train.", exists=True, dir_okay=False)
]
Seed = Annotated[
    Optional[int],
    typer.Option(
        "--seed", min=0,
        help="Seed of the random draws of attacks (default 0): the same seed and batch size give identical results.",
        show_default=False,
    ),
]
Overwrite = Annotated[
    bool,
    typer.Option("--overwrite", help="Replace results of other settings in the output folder (refused without it)."),
]

"""``lipcli train``: resolve the configuration, train, print the result."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from lipcli.cli import console
from lipcli.cli.options import (
    BatchSize,
    ConfigFile,
    DataDir,
    Device,
    Json,
    Quiet,
    Recipe,
    SetOverrides,
    Verbose,
)
from lipcli.cli.progress import command_engine

Dataset = Annotated[Optional[str], typer.Option("--dataset", help="Data set name (lipcli list datasets).")]
Arch = Annotated[Optional[str], typer.Option("--arch", help="Architecture (lipcli list architectures).")]
Defence = Annotated[
    Optional[str],
    typer.Option("--defence", help="Preset or primitives joined by +, e.g. j2-lip+tanh (lipcli list defences)."),
]
TanhHead = Annotated[Optional[bool], typer.Option("--tanh-head/--no-tanh-head", help="Add the tanh logit head.")]
Epochs = Annotated[Optional[int], typer.Option("--epochs", help="Number of epochs.")]
LearningRate = Annotated[Optional[float], typer.Option("--lr", help="Initial learning rate.")]
TrainingSeed = Annotated[Optional[int], typer.Option("--seed", help="Random seed of training (training.seed).")]
MaxSteps = Annotated[Optional[int], typer.Option("--max-steps", help="Stop after this many steps.")]
TrainLimit = Annotated[
    Optional[int],
    typer.Option("--train-limit", help="Use only the first N training images (data.train_limit; the evaluation "
                                       "commands' --limit counts test images)."),
]
RunOut = Annotated[  # text, not a Path: an empty --out must reach the engine's check (a Path would make it ".")
    Optional[str], typer.Option("--out", "-o", help="Run folder (default: a new one under runs/).", show_default=False)
]
Resume = Annotated[
    Optional[Path],
    typer.Option("--resume", help="Continue the run in this folder (its own configuration); with --epochs N, "
                 "extend it to N epochs.", file_okay=False),
]


def train(
    ctx: typer.Context,
    config: ConfigFile = None,
    recipe: Recipe = None,
    dataset: Dataset = None,
    data_dir: DataDir = None,
    arch: Arch = None,
    defence: Defence = None,
    tanh_head: TanhHead = None,
    epochs: Epochs = None,
    batch_size: BatchSize = None,
    lr: LearningRate = None,
    seed: TrainingSeed = None,
    device: Device = None,
    max_steps: MaxSteps = None,
    train_limit: TrainLimit = None,
    out: RunOut = None,
    overrides: SetOverrides = None,
    resume: Resume = None,
    quiet: Quiet = False,
    as_json: Json = False,
    verbose: Verbose = False,
) -> None:
    """Train a classifier; writes config.toml, metrics.jsonl, last.pt and best.pt (lowest validation error)
    into the run folder."""
    from lipcli.config import resolve
    from lipcli.training import trainer

    flags = {
        "recipe": recipe,
        "data.dataset": dataset, "data.data_dir": str(data_dir) if data_dir else None,
        "data.train_limit": train_limit, "model.arch": arch, "model.tanh_head": tanh_head,
        "defence.name": defence, "training.epochs": epochs, "training.batch_size": batch_size,
        "training.lr": lr, "training.seed": seed, "training.device": device, "training.max_steps": max_steps,
        "output.dir": out,
    }
    if resume is not None:
        given = [k for k, v in flags.items() if v is not None and k not in ("training.device", "training.epochs")]
        if config is not None or overrides or given:
            raise typer.BadParameter(
                "a resumed run keeps its own configuration; only --epochs, --device, --quiet and --json combine "
                "with it",
                param_hint="--resume",
            )
        with command_engine(ctx, quiet=quiet) as engine:
            result = trainer.resume(resume, engine, device=device, epochs=epochs)
    else:
        resolved = resolve(config, flags, overrides or [])
        with command_engine(ctx, quiet=quiet) as engine:
            result = trainer.train(resolved, engine)
    summary = {
        "run_dir": str(result.run_dir), "epochs": len(result.history), "steps": result.steps,
        "best_val_error": result.best_val_error, **{f"final_{k}": v for k, v in result.final.items()},
    }
    if as_json:
        console.print_json(summary)
        return
    table = Table(title="training result", title_justify="left", show_header=False)
    table.add_column("key")
    table.add_column("value")
    for key, value in summary.items():
        if value is not None:
            table.add_row(key, f"{value:.4g}" if isinstance(value, float) else str(value))
    console.out.print(table)


def add_to(app: typer.Typer) -> None:
    app.command("train")(train)

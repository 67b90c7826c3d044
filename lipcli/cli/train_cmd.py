"""``lipcli train``: resolve the configuration, train, print the result."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from lipcli.cli import console
from lipcli.cli.options import ConfigFile, Json, SetOverrides
from lipcli.cli.progress import RichReporter


def add_to(app: typer.Typer) -> None:
    @app.command("train")
    def train(
        ctx: typer.Context,
        config: ConfigFile = None,
        recipe: Annotated[Optional[str], typer.Option(help="Training recipe (lipcli config recipes).")] = None,
        dataset: Annotated[Optional[str], typer.Option(help="Data set name (lipcli list datasets).")] = None,
        data_dir: Annotated[
            Optional[Path], typer.Option("--data-dir", help="Read the data set offline from this folder.")
        ] = None,
        arch: Annotated[Optional[str], typer.Option(help="Architecture (lipcli list architectures).")] = None,
        defence: Annotated[Optional[str], typer.Option(help="Preset or primitives joined by +, e.g. j2-lip+tanh (lipcli list defences).")] = None,
        tanh_head: Annotated[
            Optional[bool], typer.Option("--tanh-head/--no-tanh-head", help="Add the tanh logit head.")
        ] = None,
        epochs: Annotated[Optional[int], typer.Option(help="Number of epochs.")] = None,
        batch_size: Annotated[Optional[int], typer.Option("--batch-size", help="Mini-batch size.")] = None,
        lr: Annotated[Optional[float], typer.Option(help="Initial learning rate.")] = None,
        seed: Annotated[Optional[int], typer.Option(help="Random seed.")] = None,
        device: Annotated[Optional[str], typer.Option(help="auto, cpu, cuda or cuda:N.")] = None,
        max_steps: Annotated[Optional[int], typer.Option("--max-steps", help="Stop after this many steps.")] = None,
        train_limit: Annotated[
            Optional[int], typer.Option("--train-limit", help="Use only the first N training images.")
        ] = None,
        out: Annotated[Optional[str], typer.Option("--out", "-o", help="Run folder (default: a new one under runs/).")] = None,
        overrides: SetOverrides = None,
        resume: Annotated[
            Optional[Path],
            typer.Option("--resume", help="Continue the run in this folder (its own configuration); with --epochs N, "
                         "extend it to N epochs.", file_okay=False),
        ] = None,
        quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress output.")] = False,
        as_json: Json = False,
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
            with RichReporter(quiet=quiet) as reporter:
                result = trainer.resume(resume, host=ctx.obj, reporter=reporter, device=device, epochs=epochs)
        else:
            resolved = resolve(config, flags, overrides or [])
            with RichReporter(quiet=quiet) as reporter:
                result = trainer.train(resolved, host=ctx.obj, reporter=reporter)
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

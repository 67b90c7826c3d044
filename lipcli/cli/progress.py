"""Rich progress bars on stderr for the engine's :class:`lipcli.reporting.Reporter` calls.

Bars are drawn only when stderr is a terminal and ``--quiet`` is off; per-epoch rows are printed to stderr
as they finish, so stdout stays reserved for the command's results. Where stderr is not a terminal (a log
file, a batch job), a task whose every step is long (``log_each``: an attack's batch) prints one line per
step instead, with the count, the time so far and the time left.
"""

from __future__ import annotations

import datetime
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from lipcli.cli import console
from lipcli.reporting import Reporter, Task

if TYPE_CHECKING:
    import typer

    from lipcli.engine import Engine

_REFRESH_SECONDS = 0.25


class _RichTask(Task):
    def __init__(self, progress: Progress, description: str, total: int | None, unit: str, log: bool) -> None:
        self.progress = progress
        self.id = progress.add_task(description, total=total, status="", unit=unit)
        self.description, self.total, self.unit, self.log = description, total, unit, log
        self.started = time.perf_counter()
        self.done = 0
        self.shown_at = 0.0

    def advance(self, amount: int = 1, **fields: Any) -> None:
        self.done += amount
        now = time.perf_counter()
        status = ""
        shown = not self.progress.disable
        if shown and fields and now - self.shown_at >= _REFRESH_SECONDS:  # reading a device tensor syncs: rarely
            self.shown_at = now
            rate = self.done / max(now - self.started, 1e-9)
            values = " ".join(f"{k} {_scalar(v):.4g}" for k, v in fields.items())
            status = f"{values} | {rate:.1f} it/s"
        self.progress.update(self.id, advance=amount, **({"status": status} if status else {}))
        if self.log:
            console.err.print(self.line(now - self.started), highlight=False)

    def line(self, elapsed: float) -> str:
        """``attack 1/2 min-norm (l2): 512/1000 images, 12.3 s, ETA 11.7 s``."""
        text = f"{self.description}: {self.done}"
        if self.total is not None:
            text += f"/{self.total}"
        text += f"{' ' + self.unit if self.unit else ''}, {_duration(elapsed)}"
        if self.total is not None and self.done > 0:
            text += f", ETA {_duration(elapsed / self.done * max(self.total - self.done, 0))}"
        return text

    def __exit__(self, *exc: object) -> None:
        self.progress.remove_task(self.id)


class RichReporter(Reporter):
    """Draws progress bars and epoch lines on stderr."""

    def __init__(self, quiet: bool = False) -> None:
        self.quiet = quiet or console.out.quiet  # under torchrun, rank 0 reports for all
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[unit]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            TextColumn("{task.fields[status]}"),
            console=console.err,
            disable=self.quiet or not console.err.is_terminal,
            transient=True,
        )

    def __enter__(self) -> "RichReporter":
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def task(self, description: str, total: int | None, *, unit: str = "", log_each: bool = False) -> Task:
        logged = log_each and not self.quiet and not console.err.is_terminal  # a line per step where no bar is drawn
        return _RichTask(self.progress, description, total, unit, logged)

    def epoch(self, metrics: dict[str, Any]) -> None:
        if self.quiet:
            return
        parts = [f"epoch {metrics['epoch']}"]
        for key in ("loss", "penalty", "grad_norm_max", "train_error", "val_error", "test_error", "lr"):
            if metrics.get(key) is not None:
                parts.append(f"{key} {metrics[key]:.4g}")
        parts.append(f"{metrics.get('seconds', float('nan')):.1f} s")
        parts.append(f"{metrics.get('images_per_second', float('nan')):.0f} img/s")
        console.err.print(" | ".join(parts), highlight=False)

    def info(self, text: str) -> None:
        if not self.quiet:
            console.err.print(text, highlight=False)


@contextmanager
def command_engine(ctx: typer.Context, device: str = "auto", *, quiet: bool = False) -> Iterator[Engine]:
    """The engine context of a command: the app's plugins (``ctx.obj``), progress drawn on stderr while it
    runs, and the ``--device`` chosen."""
    from lipcli.engine import make_engine

    engine = make_engine(device, plugins=ctx.obj)
    with RichReporter(quiet=quiet) as reporter:
        yield replace(engine, reporter=reporter)


def _duration(seconds: float) -> str:
    return f"{seconds:.1f} s" if seconds < 60 else str(datetime.timedelta(seconds=round(seconds)))


def _scalar(value: Any) -> float:
    return float(value.item()) if hasattr(value, "item") else float(value)  # tensors without importing torch

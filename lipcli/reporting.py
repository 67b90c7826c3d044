"""How the engine reports progress without knowing about terminals.

The engine calls a :class:`Reporter`; the CLI passes one that draws rich progress bars on stderr, the
Python API the silent default. This keeps the engine free of any UI code.
"""

from __future__ import annotations

from typing import Any


class Task:
    """One progress bar: ``advance`` it as work completes."""

    def advance(self, amount: int = 1, **fields: Any) -> None:
        """Record ``amount`` units done; ``fields`` are live values to show (loss, throughput)."""

    def __enter__(self) -> "Task":
        return self

    def __exit__(self, *exc: object) -> None:
        return None


class Reporter:
    """Receives progress and per-epoch results; the default does nothing."""

    def task(self, description: str, total: int | None, *, unit: str = "", log_each: bool = False) -> Task:
        """A bar of ``total`` units (``unit`` names them: "images"). ``log_each``: each advance is a long step
        (an attack's batch) worth a line of its own where no bar can be drawn (a log file)."""
        return Task()

    def epoch(self, metrics: dict[str, Any]) -> None:
        """Called once per finished epoch with the row written to ``metrics.jsonl``."""

    def info(self, text: str) -> None:
        """A one-line status message (where the run is written, device in use)."""


SILENT = Reporter()
"""The reporter of calls that are given none: progress goes nowhere."""

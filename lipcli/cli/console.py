"""The two output streams: results on stdout, everything else (progress, warnings, errors) on stderr; and how
numbers are shown in the commands' tables."""

from __future__ import annotations

import json
import sys
import warnings
from typing import Any

from rich.console import Console
from rich.markup import escape

out = Console(soft_wrap=True)
if not out.is_terminal:  # piped or captured: no terminal width to respect, so tables are not squeezed to 80
    out.width = max(out.width, 160)
err = Console(stderr=True, soft_wrap=True)


def print_json(data: Any) -> None:
    """Machine-readable results on stdout (plain ``json``, so it never wraps or colours); silent where
    ``out`` is (the processes other than rank 0 under torchrun)."""
    if out.quiet:
        return
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")
    sys.stdout.flush()


def error(message: str) -> None:
    err.print(f"[bold red]Error:[/] {escape(message)}", highlight=False)


def warn(message: str) -> None:
    if out.quiet:  # the processes other than rank 0 under torchrun: rank 0 says it once
        return
    err.print(f"[yellow]Warning:[/] {escape(message)}", highlight=False)


def percent(value: float) -> str:
    """A fraction as a percentage with two decimals: ``0.1234`` is ``12.34``."""
    return f"{100 * value:.2f}"


def distance(value: float | None) -> str:
    """A distance with four significant digits; ``None`` (no adversarial found) is ``inf``."""
    return "inf" if value is None else f"{value:.4g}"


def _show_warning(message: Warning | str, category: type[Warning], *_: Any, **__: Any) -> None:
    warn(str(message))


def route_warnings() -> None:
    """Show Python warnings (a plugin that failed to load, ...) as one yellow line on stderr."""
    warnings.showwarning = _show_warning

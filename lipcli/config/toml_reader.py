"""Reading TOML files (experiments, grids, recipes, run folders' config.toml) with errors that name the file."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from lipcli.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

__all__ = ["load_toml", "tomllib"]


def load_toml(path: Path) -> dict[str, Any]:
    """Parse a TOML file; a missing or malformed file is a :class:`ConfigError` naming it."""
    try:
        with open(path, "rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(f"{path}: experiment file not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None

"""The installed lipcli's version, recorded with every checkpoint and result (apart from :mod:`lipcli` itself, so
that the engine reads it without importing the package's public entry points)."""

from __future__ import annotations

from importlib import metadata

try:
    VERSION = metadata.version("lipcli")
except metadata.PackageNotFoundError:  # running from a source tree that was never installed
    VERSION = "0+unknown"

"""Checkpoints: written atomically, loaded without unpickling arbitrary objects.

A checkpoint is a dict of tensors and plain containers (numbers, strings, lists, dicts). It is saved to a
temporary file in the same folder, fsynced, then renamed over the target, so a crash leaves either the old
file or the new one, never a truncated one. Loading uses ``torch.load(weights_only=True)``, which refuses any
pickled object other than tensors and plain containers: a malicious payload is rejected before it runs.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import torch

from lipcli.errors import CheckpointError
from lipcli.files import atomic_write

FORMAT = "lipcli-checkpoint"
FORMAT_VERSION = 1


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    """Write ``payload`` (plus the format tag) to ``path`` atomically."""
    tagged = {"format": FORMAT, "format_version": FORMAT_VERSION, **payload}
    atomic_write(Path(path), lambda handle: torch.save(tagged, handle))


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a lipcli checkpoint safely; anything else (or anything unsafe) is a :class:`CheckpointError`."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(
            f"{path}: refused: it holds pickled objects beyond tensors and plain containers, which lipcli never "
            f"unpickles ({first_line})"
        ) from None
    except (RuntimeError, EOFError, OSError) as exc:
        raise CheckpointError(f"{path}: not a readable checkpoint ({type(exc).__name__}: {exc})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a lipcli checkpoint (no '{FORMAT}' format tag)")
    if payload.get("format_version", 0) > FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: checkpoint format {payload['format_version']} is newer than this lipcli reads "
            f"({FORMAT_VERSION}); upgrade lipcli"
        )
    return payload


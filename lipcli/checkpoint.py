"""Checkpoints: written atomically, loaded without unpickling arbitrary objects.

A checkpoint is a dict of tensors and plain containers (numbers, strings, lists, dicts). It is saved to a
temporary file in the same folder, fsynced, then renamed over the target, so a crash leaves either the old
file or the new one, never a truncated one. Loading uses ``torch.load(weights_only=True)``, which refuses any
pickled object other than tensors and plain containers: a malicious payload is rejected before it runs.
"""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

from lipcli.errors import CheckpointError
from lipcli.files import atomic_write_many

FORMAT = "lipcli-checkpoint"
FORMAT_VERSION = 1


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    """Write ``payload`` (plus the format tag) to ``path`` atomically."""
    save_checkpoints({Path(path): payload})


def save_checkpoints(payloads: dict[Path, dict[str, Any]]) -> None:
    """Write several checkpoints, all or none (:func:`lipcli.files.atomic_write_many`)."""
    writers = {}
    for path, payload in payloads.items():
        tagged = {"format": FORMAT, "format_version": FORMAT_VERSION, **payload}
        writers[Path(path)] = lambda handle, tagged=tagged: torch.save(tagged, handle)
    atomic_write_many(writers)


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a lipcli checkpoint safely; anything else (or anything unsafe) is a :class:`CheckpointError`."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    if not zipfile.is_zipfile(path):
        raise CheckpointError(f"{path}: not a lipcli checkpoint ({describe_file(path)}, not a file lipcli train wrote)")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(
            f"{path}: refused: it holds pickled objects beyond tensors and plain containers, which lipcli never "
            f"unpickles ({_unpickler_reason(exc)})"
        ) from None
    except Exception as exc:  # noqa: BLE001 - whatever a damaged archive raises, it is not a checkpoint
        first = str(exc).strip().splitlines()[0].split(". ")[0] if str(exc).strip() else ""
        raise CheckpointError(f"{path}: not a readable checkpoint ({type(exc).__name__}: {first})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a lipcli checkpoint (no '{FORMAT}' format tag)")
    if payload.get("format_version", 0) > FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: checkpoint format {payload['format_version']} is newer than this lipcli reads "
            f"({FORMAT_VERSION}); upgrade lipcli"
        )
    return payload


def describe_file(path: Path) -> str:
    """What a file that is no checkpoint looks like, for the error message."""
    with path.open("rb") as handle:
        head = handle.read(512)
    if not head:
        return "an empty file"
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return "binary data"
    return "JSON" if text.lstrip()[:1] in ("{", "[") else "a text file"


def _unpickler_reason(exc: pickle.UnpicklingError) -> str:
    """torch's reason for refusing, without its advice to load with ``weights_only=False`` (never do that)."""
    text = str(exc)
    marker = "WeightsUnpickler error:"
    reason = text.split(marker, 1)[1] if marker in text else text
    lines = [line.strip() for line in reason.strip().splitlines() if line.strip()]
    return lines[0] if lines and "weights_only" not in lines[0] else "an object that is not a tensor"


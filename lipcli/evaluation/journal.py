"""Per-batch partial results of ``lipcli curve`` and ``lipcli attack``, so an interrupted evaluation resumes.

Each attack's result on each batch is written atomically, as soon as it is measured, to
``<folder>/.partial/<attack>.<batch>.pt`` (tensors and numbers only: it loads with ``weights_only=True``).
:func:`lipcli.results_folder.claim` keeps these files only when they were written under the same settings
(checkpoint hash, images, attacks and options, seed, batch size; the device type and the lipcli and torch
versions) and only for a batch whose attacked images are the same, so a resumed batch is the batch a fresh run
would have measured: random attacks draw from a seed per (attack, batch). Under torchrun each process
writes the batches it attacked; any process can resume any of them.
"""

from __future__ import annotations

import hashlib
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch

from lipcli.files import atomic_write
from lipcli.layout import PARTIAL


@dataclass
class BatchRecord:
    """One attack on one batch: the measured distances of its attacked rows, the cost, and (when adversarials
    are kept) the proposals."""

    rows: torch.Tensor
    """The rows of the evaluated images attacked (an image classified otherwise, on another device, makes the
    batch stale); which test images those are is fixed by the settings' images digest."""
    distances: torch.Tensor
    seconds: float
    queries: int
    outside_box: int
    proposals: torch.Tensor | None = None


class Journal:
    """The partial results in ``folder/.partial`` (a folder :func:`~lipcli.results_folder.claim` prepared)."""

    def __init__(self, folder: Path) -> None:
        self.root = Path(folder) / PARTIAL
        self.resumed = 0

    def _file(self, attack: str, batch: int) -> Path:
        tag = hashlib.sha256(attack.encode()).hexdigest()[:8]  # names that clean up alike stay apart
        return self.root / f"{re.sub(r'[^A-Za-z0-9_+-]', '_', attack)}-{tag}.{batch}.pt"

    def load(self, attack: str, batch: int, rows: torch.Tensor, *, need_proposals: bool) -> BatchRecord | None:
        """The record of ``attack`` on batch ``batch`` if it attacked exactly ``rows``; None where there is
        none (or it lacks proposals that are needed, or cannot be read: the batch is then attacked again)."""
        path = self._file(attack, batch)
        if not path.is_file():
            return None
        try:
            payload = torch.load(path, map_location="cpu", weights_only=True)
            record = BatchRecord(
                payload["rows"], payload["distances"], float(payload["seconds"]), int(payload["queries"]),
                int(payload["outside_box"]), payload.get("proposals"),
            )
        except Exception:  # noqa: BLE001 - a damaged partial file only costs its batch
            return None
        if not torch.equal(record.rows, rows.cpu()) or (need_proposals and record.proposals is None):
            return None
        self.resumed += 1
        return record

    def save(self, attack: str, batch: int, record: BatchRecord) -> None:
        payload = {
            "rows": record.rows.cpu(), "distances": record.distances.cpu(), "seconds": record.seconds,
            "queries": record.queries, "outside_box": record.outside_box,
        }
        if record.proposals is not None:
            payload["proposals"] = record.proposals.cpu()
        atomic_write(self._file(attack, batch), lambda handle: torch.save(payload, handle))

    def finish(self) -> None:
        """Remove the partial results once the full results are written."""
        shutil.rmtree(self.root, ignore_errors=True)

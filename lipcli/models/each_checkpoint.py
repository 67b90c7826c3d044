"""The loop every evaluation command shares: claim the folders of all checkpoints before any work, then per
checkpoint evaluate on every process and write the result on rank 0 alone."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from lipcli.distributed import barrier
from lipcli.engine import Engine
from lipcli.models.targets import Target
from lipcli.results_folder import Layout, claim

R = TypeVar("R")


@dataclass(frozen=True)
class Planned:
    """One checkpoint to evaluate: its label, its output folder, what it is loaded as, and the settings its
    results depend on (recorded in the folder, compared by :func:`lipcli.results_folder.claim`)."""

    label: str
    folder: Path
    target: Target
    settings: dict[str, Any]


def for_each_checkpoint(
    planned: Sequence[Planned], layout: Layout, engine: Engine, *, evaluate: Callable[[Planned], R],
    write: Callable[[Planned, R], None], finish: Callable[[list[R]], None] | None = None,
    overwrite: bool = False, partial: Mapping[str, Any] | None = None,
) -> list[R]:
    """``evaluate`` each checkpoint on every process, then ``write`` its result on the main process once every
    process has finished it (their partial files may go then), and at the end ``finish`` the results on the
    main process (a figure of them all), all while the folders are held; every folder is claimed before the
    first one is evaluated, so a refused folder costs no work (``overwrite``, ``partial``: as for ``claim``)."""
    results = []
    with claim({p.folder: p.settings for p in planned}, layout, overwrite=overwrite, partial=partial):
        for plan in planned:
            result = evaluate(plan)
            barrier()
            if engine.main:
                write(plan, result)
            results.append(result)
        if finish is not None and engine.main:
            finish(results)
        barrier()  # the files exist for every process once this returns
    return results

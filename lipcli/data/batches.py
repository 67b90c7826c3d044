"""Mini-batches straight from in-memory tensors: one gather and one host-to-device copy per batch (or, for a set
streamed from its files, one batch read ahead by DataLoader workers)."""

from __future__ import annotations

from typing import Callable, Iterator

import torch

from lipcli.data.image_files import ImageFiles
from lipcli.data.types import ImageSet
from lipcli.distributed import owned


def epoch_order(size: int, seed: int, epoch: int, batch_size: int) -> torch.Tensor:
    """The shuffled order of an epoch, a function of (seed, epoch) only, so a resumed run replays it.

    A last batch of a single example is left out: BatchNorm in train mode cannot normalise one value.
    """
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(size, generator=generator)[: _kept(size, batch_size)]


def _kept(size: int, batch_size: int) -> int:
    """How many of ``size`` images an epoch's order holds (a last batch of one is left out)."""
    return size - 1 if size % batch_size == 1 and size > 1 else size


def shard(order: torch.Tensor, batch_size: int, world: int, rank: int) -> torch.Tensor:
    """This process's part of an epoch ``order`` cut into global batches of ``batch_size``: its contiguous
    ``batch_size / world`` slice of each one, so the processes' batches together are the single-process batch.

    With several processes a last global batch smaller than ``batch_size`` is left out: every process must
    take the same number of steps, and the same number of examples per step.
    """
    if world == 1:
        return order
    steps = len(order) // batch_size
    local = batch_size // world
    return order[: steps * batch_size].view(steps, world, local)[:, rank, :].reshape(-1)


def num_batches(size: int, batch_size: int) -> int:
    return (size + batch_size - 1) // batch_size


def steps_per_epoch(size: int, batch_size: int, world: int) -> int:
    """Optimiser steps in an epoch over ``size`` images with global batches of ``batch_size`` on ``world``
    processes: the global batches :func:`epoch_order` and :func:`shard` make. Schedules count these, so every
    process of a run sets the same rate at each step."""
    kept = _kept(size, batch_size)
    return num_batches(kept, batch_size) if world == 1 else kept // batch_size


def iterate_batches(
    data: ImageSet,
    batch_size: int,
    device: torch.device,
    order: torch.Tensor | None = None,
    start: int = 0,
    *,
    skip: Callable[[int], bool] | None = None,
) -> Iterator[tuple[torch.Tensor | None, torch.Tensor]]:
    """Yield float batches in [0, 1] and labels on ``device``, in ``order`` (default: all, as stored).

    ``start`` skips that many batches (resuming mid-epoch). A batch ``skip(number)`` is true for (counted
    from ``start``: another process's, or one with nothing to attack) is not read or copied: its images are
    None and its labels stay on the CPU (their length is the batch's), so a set read from its files decodes
    only the batches used.
    """
    rows = torch.arange(len(data)) if order is None else order
    batches = [index for index in rows[start * batch_size :].split(batch_size) if len(index)]
    used = [index for number, index in enumerate(batches) if skip is None or not skip(number)]
    non_blocking = device.type == "cuda"
    if isinstance(data.images, ImageFiles):
        read: Iterator[torch.Tensor] = data.images.stream(used, pin=non_blocking)
    else:
        read = (_gathered(data.images, index, pin=non_blocking) for index in used)
    for number, index in enumerate(batches):
        if skip is not None and skip(number):
            yield None, data.labels[index]
        else:
            images = data.as_float(next(read).to(device, non_blocking=non_blocking))
            yield images, data.labels[index].to(device, non_blocking=non_blocking)


def elsewhere(batch_size: int, attacked: torch.Tensor | None = None) -> Callable[[int], bool]:
    """The ``skip`` of :func:`iterate_batches` in a sharded loop: the batches another process handles
    (:func:`lipcli.distributed.owned`) and, with ``attacked`` (bool ``[N]``), those holding no image to attack."""

    def skip(number: int) -> bool:
        if not owned(number):
            return True
        return attacked is not None and not bool(attacked[number * batch_size : (number + 1) * batch_size].any())

    return skip


def _gathered(images: torch.Tensor, index: torch.Tensor, *, pin: bool) -> torch.Tensor:
    """The rows ``index`` of in-memory images: a view where they are consecutive, else one gather; pinned for
    a copy to a GPU that overlaps the computation."""
    first = int(index[0]) if len(index) else 0
    if torch.equal(index, torch.arange(first, first + len(index))):
        chosen = images[first : first + len(index)]
    else:
        chosen = images[index]
    return chosen.pin_memory() if pin else chosen

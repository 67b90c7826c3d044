"""Mini-batches straight from in-memory tensors: one gather and one host-to-device copy per batch (or, for a set
streamed from its files, one batch read ahead by DataLoader workers)."""

from __future__ import annotations

from typing import Iterator

import torch

from lipcli.data.image_files import ImageFiles
from lipcli.data.types import ImageSet


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
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield float batches in [0, 1] and labels on ``device``, in ``order`` (default: all, as stored).

    ``start`` skips that many batches (resuming mid-epoch).
    """
    non_blocking = device.type == "cuda"
    if isinstance(data.images, ImageFiles):
        yield from _streamed(data, data.images, batch_size, device, order, start)
        return
    for first in range(start * batch_size, len(data) if order is None else len(order), batch_size):
        if order is None:
            images = data.images[first : first + batch_size]
            labels = data.labels[first : first + batch_size]
        else:
            index = order[first : first + batch_size]
            images, labels = data.images[index], data.labels[index]
        if non_blocking:
            images, labels = images.pin_memory(), labels.pin_memory()
        yield (
            data.as_float(images.to(device, non_blocking=non_blocking)),
            labels.to(device, non_blocking=non_blocking),
        )


def _streamed(
    data: ImageSet, files: ImageFiles, batch_size: int, device: torch.device, order: torch.Tensor | None, start: int,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """:func:`iterate_batches` of a set read from its files: each batch read a batch ahead, pinned for a GPU."""
    rows = torch.arange(len(data)) if order is None else order
    batches = rows[start * batch_size :].split(batch_size)
    non_blocking = device.type == "cuda"
    for index, images in zip(batches, files.stream(batches, pin=non_blocking)):
        yield (
            data.as_float(images.to(device, non_blocking=non_blocking)),
            data.labels[index].to(device, non_blocking=non_blocking),
        )

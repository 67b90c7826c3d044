"""Several processes on torch.distributed: joining the group torchrun sets up, and the few collectives lipcli
needs.

``torchrun --nproc_per_node=N -m lipcli ...`` starts N processes with ``RANK``, ``LOCAL_RANK`` and
``WORLD_SIZE`` (and the rendezvous address) in their environment. :func:`setup` joins the process group
when ``WORLD_SIZE > 1``: gloo for CPU tensors, plus NCCL for CUDA tensors when there is a GPU, each process
on the GPU ``cuda:LOCAL_RANK``. :func:`current` tells the engine which rank it is; with a single process
every helper here does nothing, so the engine has one code path.
"""

from __future__ import annotations

import gc
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn


@dataclass(frozen=True)
class Context:
    """This process's place in the group: rank, number of processes, rank on this machine."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        """Rank 0: the one process that writes files and prints."""
        return self.rank == 0


_context = Context()


def current() -> Context:
    return _context


def setup() -> Context:
    """Join the process group described by the environment (torchrun's), once; a single process stays alone."""
    global _context
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1 or _context.enabled:
        return _context
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank % torch.cuda.device_count())
        dist.init_process_group("cpu:gloo,cuda:nccl")
    else:
        dist.init_process_group("gloo")
    _context = Context(dist.get_rank(), dist.get_world_size(), local_rank)
    return _context


def teardown(succeeded: bool = True) -> None:
    """Leave the group. After success all processes first meet, so none tears its connections down under
    another (gloo can abort then); after a failure they do not wait (the others may never arrive: torchrun
    stops them when one process exits with an error)."""
    global _context
    if dist.is_available() and dist.is_initialized():
        try:
            if succeeded:
                dist.barrier()
        finally:
            gc.collect()  # wrappers still holding the group (a DDP model in a reference cycle) go first
            dist.destroy_process_group()
    _context = Context()


def barrier() -> None:
    if _context.enabled:
        dist.barrier()


def all_reduce(tensor: torch.Tensor, op: str = "sum") -> torch.Tensor:
    """``tensor`` reduced over the processes, in place (``sum`` or ``max``); returned for chaining."""
    if _context.enabled:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM if op == "sum" else dist.ReduceOp.MAX)
    return tensor


def broadcast(value: Any) -> Any:
    """Rank 0's ``value`` (any picklable object) on every process."""
    if not _context.enabled:
        return value
    holder = [value]
    dist.broadcast_object_list(holder, src=0)
    return holder[0]


class _Gather(torch.autograd.Function):
    """All processes' ``[n, ...]`` tensors concatenated in rank order, differentiable: the gradient of each
    process's part is the sum, over processes, of what their losses send to it."""

    @staticmethod
    def forward(ctx: Any, tensor: torch.Tensor) -> torch.Tensor:  # noqa: D102
        parts = [torch.empty_like(tensor) for _ in range(_context.world)]
        dist.all_gather(parts, tensor.contiguous())
        ctx.size = tensor.shape[0]
        return torch.cat(parts)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:  # noqa: D102
        total = grad.contiguous().clone()
        dist.all_reduce(total)
        start = _context.rank * ctx.size
        return total[start : start + ctx.size]


def gather(tensor: torch.Tensor) -> torch.Tensor:
    """Every process's ``tensor`` (equal first dimensions), concatenated; gradients flow back to their owners.

    With DistributedDataParallel, which averages parameter gradients over the processes, a loss every process
    computes alike from the gathered tensor gets exactly the gradient a single process would compute."""
    return _Gather.apply(tensor) if _context.enabled else tensor


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside a DistributedDataParallel wrapper (the model itself otherwise)."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def owned(index: int) -> bool:
    """Whether this process handles the ``index``-th batch of a sharded evaluation (round robin)."""
    return index % _context.world == _context.rank


"""BatchNorm in the extra forward passes of a training step.

lipcli's rule: the running statistics move once per training step, by the forward pass on the batch the
weight update trains on (the one the step's ``logits`` come from). A loss that needs more train-mode passes
(TRADES' adversarial logits, GradAlign's input gradients) runs them inside :func:`running_statistics_kept`:
each pass still normalises with its own batch's statistics, as in train mode, but the running mean,
variance and batch count are those of before the pass. (The original TRADES and GradAlign code let every
pass update them: three updates per step.)

The ``worst`` and ``fd`` WCAT methods instead record each train-mode BatchNorm's batch statistics, with
their graph, during the training forward pass (:func:`recorded_batch_statistics`), then pass single
examples through the model normalised with them (:func:`as_part_of_the_batch`).

A train-mode BatchNorm normalises every example with the mean and variance of the whole batch. A pass on one
example "as one more example of that batch" normalises it with those same statistics. They are kept as
functions of the weights (tensors with their graph), not constants: BatchNorm makes the layer before it
scale-invariant (scaling its weights changes nothing), and only statistics that scale with the weights keep
that invariance in the penalty's gradient. With constant statistics the gradient would gain a spurious
radial component (measured on small CNNs: cosine 0.08-0.34 with the weights of each convolution before a
BatchNorm), which shrinks those weights and trained markedly worse (digits, 6 epochs: 4.7 and 14.4 % test
error where exact reached 1.3 and 2.7 %). What is left out is how each example moves the statistics, and
through them the other examples' losses: the coupling that the exact double backward over the batch
differentiates (`benchmarks/bench_defences.py` measures the difference on a trained model).
"""

from __future__ import annotations

import contextlib
import warnings
from typing import Callable, Iterator

import torch
from torch import nn

from lipcli.api import at_least_float32

Statistics = dict[nn.Module, list[tuple[torch.Tensor, torch.Tensor]]]
"""Per train-mode BatchNorm layer, per call in the forward pass: the (mean, biased variance) of its input
over the batch, per channel, differentiable in everything before it."""


def _normalises_with_the_batch(module: nn.Module) -> bool:
    """A BatchNorm normalises with the batch's statistics in train mode, and in eval mode without running ones."""
    return isinstance(module, nn.modules.batchnorm._BatchNorm) and (
        module.training or (module.running_mean is None and module.running_var is None)
    )


def _moments(module: nn.Module, batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and biased variance over every dimension but the channels'.

    From the first two moments about a per-channel pivot, in one pass (on the CPU a third of ``var_mean``'s
    time, forward and backward), in float32 at least. The pivot, a constant, keeps the variance accurate where
    the mean is far larger than the spread: the first example's mean; pooled, where it must be the same on
    every process, the running mean (or none). SyncBatchNorm's pool every process's share, as its forward
    pass does (differentiably: the gradient reaches every process).
    """
    pooled = (
        isinstance(module, nn.SyncBatchNorm) and torch.distributed.is_available()
        and torch.distributed.is_initialized() and torch.distributed.get_world_size(module.process_group) > 1
    )
    batch = at_least_float32(batch)
    dims = [0, *range(2, batch.ndim)]
    if not pooled:
        pivot = batch[:1].detach().mean(dims)
    elif module.running_mean is not None:
        pivot = module.running_mean.detach().to(batch.dtype)
    else:
        pivot = batch.new_zeros(batch.shape[1])
    centred = batch - pivot.view(1, -1, *([1] * (batch.ndim - 2)))
    count = batch.new_full((1,), batch.numel() // batch.shape[1])
    sums = torch.cat([count, centred.sum(dims), centred.square().sum(dims)])
    if pooled:
        with warnings.catch_warnings():  # deprecated for functional collectives, which are not differentiable
            warnings.simplefilter("ignore", FutureWarning)
            from torch.distributed.nn.functional import all_reduce

            sums = all_reduce(sums, group=module.process_group or torch.distributed.group.WORLD)
    first, second = (sums[1:] / sums[0]).chunk(2)
    return pivot + first, (second - first.square()).clamp_min(0)


@contextlib.contextmanager
def recorded_batch_statistics(model: nn.Module) -> Iterator[Statistics]:
    """Record, as the forward pass inside the block runs, each train-mode BatchNorm's batch statistics."""
    stats: Statistics = {}

    def record(module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
        stats.setdefault(module, []).append(_moments(module, inputs[0]))

    handles = [m.register_forward_pre_hook(record) for m in model.modules() if _normalises_with_the_batch(m)]
    try:
        yield stats
    finally:
        for handle in handles:
            handle.remove()


def _normalise(
    module: nn.modules.batchnorm._BatchNorm, calls: list[tuple[torch.Tensor, torch.Tensor]]
) -> Callable[[torch.Tensor], torch.Tensor]:
    """A forward function for ``module`` that normalises with the recorded statistics, call by call."""
    remaining = iter(calls)

    def forward(batch: torch.Tensor) -> torch.Tensor:
        mean, var = next(remaining, (None, None))
        if mean is None:
            raise RuntimeError(
                f"{type(module).__name__} ran more often in the single-example pass than in the batch's forward pass"
            )
        shape = (1, -1, *([1] * (batch.ndim - 2)))
        out = (batch - mean.view(shape)) * torch.rsqrt(var.view(shape) + module.eps)
        if module.weight is not None:
            out = out * module.weight.view(shape) + module.bias.view(shape)
        return out

    return forward


@contextlib.contextmanager
def as_part_of_the_batch(model: nn.Module, stats: Statistics) -> Iterator[Callable[[torch.Tensor], torch.Tensor]]:
    """A function running ``model`` in eval mode with each recorded BatchNorm normalising with the batch's
    statistics (its running statistics neither used nor updated); every module is restored afterwards.

    Eval mode throughout also makes a pass deterministic (no dropout), so two passes differ only by their
    inputs. Each pass must make the same BatchNorm calls as the recorded forward pass.
    """
    modes = [(m, m.training) for m in model.modules()]

    def run(batch: torch.Tensor) -> torch.Tensor:
        for module, calls in stats.items():
            module.forward = _normalise(module, calls)  # an instance attribute shadows the class's forward
        return model(batch)

    model.eval()
    try:
        yield run
    finally:
        for module in stats:
            module.__dict__.pop("forward", None)
        for module, training in modes:
            module.training = training


@contextlib.contextmanager
def running_statistics_kept(model: nn.Module) -> Iterator[nn.Module]:
    """``model``, whose BatchNorm layers update copies of their running statistics until the block exits.

    The buffer objects are swapped, never written back into: a graph built inside may hold the copies.
    """
    layers = [
        m for m in model.modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats and m.running_mean is not None
    ]
    names = ("running_mean", "running_var", "num_batches_tracked")
    saved = [(m, [getattr(m, name) for name in names]) for m in layers]
    for module, buffers in saved:
        for name, buffer in zip(names, buffers):
            setattr(module, name, buffer.clone())
    try:
        yield model
    finally:
        for module, buffers in saved:
            for name, buffer in zip(names, buffers):
                setattr(module, name, buffer)

"""Optimiser and learning-rate schedules: the paper's multi-step one (Appendix A), cosine and one-cycle."""

from __future__ import annotations

import math
from collections import Counter

import torch
from torch import nn

from lipcli.config.schema import TrainingConfig


def build_optimizer(model: nn.Module, config: TrainingConfig) -> torch.optim.SGD:
    """SGD with momentum; weight decay on weights only (tensors of rank >= 2), not biases or norm scales.

    ``weight_decay`` is the coefficient of the original code's explicit penalty ``wd * sum ||W||^2``,
    whose gradient is ``2 * wd * W``: that is what the optimiser's decay term is set to.
    """
    decayed = [p for p in model.parameters() if p.requires_grad and p.ndim >= 2]
    plain = [p for p in model.parameters() if p.requires_grad and p.ndim < 2]
    groups = [
        {"params": decayed, "weight_decay": 2.0 * config.weight_decay},
        {"params": plain, "weight_decay": 0.0},
    ]
    return torch.optim.SGD(
        [g for g in groups if g["params"]],
        lr=config.lr,
        momentum=config.momentum,
        nesterov=config.nesterov and config.momentum > 0,
    )


PLANNED_SCHEDULES = ("cosine", "cyclic")
"""Schedules whose rate at a step depends on the number of epochs the run is planned for."""


def learning_rate(step: int, steps_per_epoch: int, config: TrainingConfig) -> float:
    """The learning rate of optimiser step ``step`` (0 for the run's first), set before that step.

    A pure function of the step's position in the run (epochs done times steps per epoch, plus its index in
    the epoch), so nothing but the epoch needs saving to resume, and extending a run (``resume(...,
    epochs=N)``) turns it into the run planned for ``config.epochs`` from there on, its earlier plans kept in
    ``config.earlier_plans`` for the steps they covered. With t the epochs done before the step
    (``step / steps_per_epoch``) and E the epochs planned when the step ran:

    * ``multistep``: ``lr`` times ``lr_gamma`` once per milestone at or before the epochs completed, applied in
      turn as PyTorch's MultiStepLR stepped after each epoch does (so the values are bit-identical to it);
    * ``cosine``: ``lr * (1 + cos(pi t / E)) / 2``, from ``lr`` at the first step towards 0;
    * ``cyclic``: the one-cycle schedule of Wong et al. 2020, linear from 0 up to ``lr`` at 2E/5 then down
      to 0 at E, at t + 1 / steps_per_epoch (the rate of a step is taken at its end, as in their code). The
      peak at 2E/5 is that of their MNIST and ImageNet code (which rounds it to whole epochs); their CIFAR-10
      code peaks at E/2.

    A warm-up of ``warmup_epochs`` multiplies any of them by ``min(1, (step + 1) / (warmup_epochs *
    steps_per_epoch))``. ``steps_per_epoch`` counts global batches, so every process count follows one
    schedule.
    """
    epochs = next((e for e, until in config.earlier_plans if step < until * steps_per_epoch), config.epochs)
    if config.lr_schedule == "multistep":
        lr, done = config.lr, step // steps_per_epoch
        for milestone, times in sorted(Counter(config.lr_milestones).items()):
            if milestone <= done:
                lr = lr * config.lr_gamma**times
    elif config.lr_schedule == "cosine":
        lr = config.lr * 0.5 * (1.0 + math.cos(math.pi * step / steps_per_epoch / epochs))
    else:
        t, peak = (step + 1) / steps_per_epoch, 2.0 * epochs / 5.0
        lr = config.lr * (t / peak if t <= peak else max(0.0, (epochs - t) / (epochs - peak)))
    if config.warmup_epochs > 0:
        lr *= min(1.0, (step + 1) / (config.warmup_epochs * steps_per_epoch))
    return lr

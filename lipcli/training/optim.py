"""Optimiser and learning-rate schedule of the paper's recipes (Appendix A)."""

from __future__ import annotations

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


def build_scheduler(optimizer: torch.optim.Optimizer, config: TrainingConfig) -> torch.optim.lr_scheduler.MultiStepLR:
    """Multiply the learning rate by ``lr_gamma`` after each epoch listed in ``lr_milestones``."""
    return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=sorted(config.lr_milestones), gamma=config.lr_gamma)

"""The defence interface: what one training step optimises.

A defence plugin's factory returns a :class:`Defence`. The trainer calls :meth:`Defence.training_loss` on
every mini-batch with the model in train mode and backpropagates ``StepLoss.total``; everything a defence
does (perturbing the batch, adding a penalty) happens inside that call, so third-party defences plug in
through exactly the interface the built-in ones use.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch
from torch import nn


@dataclass
class StepLoss:
    """The result of one training step's loss computation (tensors stay on the device, no sync)."""

    total: torch.Tensor
    """What is backpropagated: data loss plus any penalty."""
    data_loss: torch.Tensor
    """Mean cross-entropy on the batch the weight update uses."""
    logits: torch.Tensor
    """The logits of that batch (for the training error)."""
    penalty: torch.Tensor | None = None
    grad_norm_max: torch.Tensor | None = None
    """Largest per-example input-gradient norm seen in the batch, when the defence computes it."""


@runtime_checkable
class Defence(Protocol):
    """One training defence (or a composition of several)."""

    def training_loss(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> StepLoss:
        """The loss of one step on ``images`` (float, [0, 1]) and ``labels``; model is in train mode."""
        ...


class PlainTraining:
    """J0: empirical risk minimisation, no defence."""

    def training_loss(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> StepLoss:
        logits = model(images)
        loss = nn.functional.cross_entropy(logits, labels)
        return StepLoss(total=loss, data_loss=loss, logits=logits)

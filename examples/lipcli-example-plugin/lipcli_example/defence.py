"""A defence primitive that changes the training loss, through the same interface as lipcli's WCAT penalty."""

from __future__ import annotations

import torch
from torch import nn

from lipcli.api import Perturbation, StepLoss


class LabelSmoothing:
    """The step's loss is cross-entropy against labels smoothed by ``smoothing`` (Szegedy et al. 2016).

    It defines ``training_loss``, so it combines with a perturbation (``j2+example-label-smoothing`` trains on
    J2's perturbed batch) but not with another training loss (``j2-lip`` has one: lipcli refuses the pair).
    """

    def __init__(self, smoothing: float = 0.1) -> None:
        if not 0 <= smoothing < 1:
            raise ValueError(f"smoothing must be in [0, 1), got {smoothing!r}")
        self.smoothing = float(smoothing)

    def training_loss(
        self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor, perturbation: Perturbation | None
    ) -> StepLoss:
        logits = model(images)
        data_loss = nn.functional.cross_entropy(logits.float(), labels, label_smoothing=self.smoothing)
        return StepLoss(total=data_loss, data_loss=data_loss, logits=logits)

"""The rules that decide what an attack achieved, applied by lipcli and never by the attack.

A proposed input counts only if the model, in eval mode, misclassifies it and it is a valid image (finite,
in [0, 1]); its distance is then the norm of the difference, measured here in float64. Anything else is a
failure: +inf. An image the model already misclassifies has distance 0 and is not attacked.
"""

from __future__ import annotations

import torch
from torch import nn

from lipcli.attacks.base import distance, in_box


class QueryCounter(nn.Module):
    """Wraps a model and counts the images it is asked to classify (forward passes x batch size)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.queries = 0
        # a fresh Module is in train mode, and an attack restoring it would flip the model; .train() would also reset
        # every layer's own mode, so only the flag is copied
        self.training = model.training

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        self.queries += images.shape[0]
        return self.model(images)


@torch.no_grad()
def measured_distances(
    model: nn.Module, images: torch.Tensor, labels: torch.Tensor, proposals: torch.Tensor, norm: str
) -> tuple[torch.Tensor, int]:
    """(float64 distances ``[B]``, number of proposals outside [0, 1]) under the rules above.

    The model is put in eval mode for this (and restored). A proposal of the wrong shape is a bug in the
    attack: ValueError.
    """
    if proposals.shape != images.shape:
        raise ValueError(f"attack returned shape {tuple(proposals.shape)} for images {tuple(images.shape)}")
    valid = in_box(proposals)
    was_training = model.training
    model.eval()
    try:
        fooled = model(proposals).argmax(1) != labels
    finally:
        model.train(was_training)
    measured = distance(proposals.double() - images.double(), norm)
    return torch.where(valid & fooled, measured, torch.inf), int((~valid).sum())

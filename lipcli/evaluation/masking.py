"""The gradient-free check for gradient masking: a score-based attack on a sample of images.

A model that masks its gradients (a saturated tanh head, a shattered or zero gradient) makes gradient attacks
report distances far larger than the true ones. An attack that never uses gradients cannot be fooled that way:
if it finds an adversarial clearly closer than every gradient attack did, the gradient attacks' distances
(and the curve) overstate the robustness. The check runs such an attack at eps just below the gradient
attacks' distance, on a few images, so it costs little; any success is reported.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from lipcli.attacks import AttackAtBudget, largest_distance, within_budget
from lipcli.data.types import ImageSet
from lipcli.evaluation.accounting import QueryCounter, measured_distances
from lipcli.evaluation.seeding import seeded

CHECK_ATTACK = "square"
"""The registered score-based attack the check runs."""

CHECK_IMAGES = 16
"""Images sampled by default: the first ones the gradient attacks were run on."""

CHECK_QUERIES = 1000
"""Queries per image for the check's attack."""

CHECK_GAIN = 0.03
"""A gradient-free adversarial counts when it is at least this share closer than every gradient attack's."""


@dataclass
class MaskingCheck:
    """What the check did and found, as written to ``summary.json``."""

    attack: str
    images: int
    queries: int
    beaten: int
    largest_gain: float

    def warning(self) -> str | None:
        if not self.beaten:
            return None
        return (
            f"possible gradient masking: {self.attack} (no gradients, {self.queries // max(self.images, 1)} queries "
            f"per image) found an adversarial at least {CHECK_GAIN:.0%} closer than every gradient attack on "
            f"{self.beaten} of {self.images} sampled images (up to {self.largest_gain:.0%} closer)"
        )


def gradient_free_check(
    model: nn.Module,
    data: ImageSet,
    sighted: torch.Tensor,
    attack: AttackAtBudget,
    name: str,
    norm: str,
    *,
    images: int = CHECK_IMAGES,
    device: torch.device,
    seed: int,
) -> MaskingCheck:
    """Run ``attack`` at ``(1 - CHECK_GAIN)`` times ``sighted`` (per image, the gradient attacks' minimum; 0 for
    images not attacked) on the first ``images`` attacked images; where the gradient attacks failed (+inf),
    at the box's diameter. ``model`` must be in eval mode."""
    chosen = torch.nonzero(sighted > 0).flatten()[:images]
    if chosen.numel() == 0:
        return MaskingCheck(name, 0, 0, 0, 0.0)
    batch = data.as_float(data.read(chosen).to(device))
    labels = data.labels[chosen.to(data.labels.device)].to(device)
    bound = (1 - CHECK_GAIN) * sighted[chosen]
    bound = torch.where(torch.isfinite(bound), bound, largest_distance(norm, batch[0].numel()))
    counter = QueryCounter(model)
    with seeded(seed, f"masking-check-{name}", 0):
        proposals = attack.run_at(counter, batch, labels, norm, bound.to(device)).detach()
    found = measured_distances(model, batch, labels, proposals, norm)[0].cpu()
    beaten = within_budget(found, bound)
    gain = torch.where(beaten, 1 - found / sighted[chosen], 0.0)
    return MaskingCheck(name, chosen.numel(), counter.queries, int(beaten.sum()), float(gain.max()))

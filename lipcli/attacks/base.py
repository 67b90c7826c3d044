"""What an attack plugin provides, and the two measurements every attack and the evaluation agree on."""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch
from torch import nn

NORMS = ("l2", "linf")
"""Norms in which adversarial distances are measured (``--norm``)."""


class Attack(ABC):
    """An untargeted attack on a batch: ``run`` returns one proposed adversarial input per image.

    Subclasses set :attr:`norms` to the norms they minimise natively (None: they adapt to the ``norm``
    passed to :meth:`run`); in another norm they still run, and the evaluation measures the distance of
    what they return in the norm asked for. :attr:`decision_based` attacks use only predicted labels.
    """

    norms: tuple[str, ...] | None = None
    decision_based: bool = False

    @abstractmethod
    def run(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor, norm: str) -> torch.Tensor:
        """Proposed adversarial inputs ``[B, C, H, W]`` for images the model classifies correctly.

        ``model`` is in eval mode and counts its queries. Return the clean image (or anything not
        misclassified) where the attack failed; the evaluation decides success, never the attack.
        """



class AttackAtBudget(ABC):
    """An attack that looks for an adversarial within a given distance ``eps`` of each image.

    This is the kind AutoAttack is made of (APGD, FAB-T, Square); ``lipcli robust`` runs such attacks at the
    user's eps. A class may be both an :class:`Attack` (a minimal distance per image, e.g. by searching eps)
    and an ``AttackAtBudget``. :attr:`score_based` attacks use only the model's output scores, no gradients.
    """

    norms: tuple[str, ...] | None = None
    decision_based: bool = False
    score_based: bool = False

    @abstractmethod
    def run_at(
        self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor, norm: str, eps: torch.Tensor
    ) -> torch.Tensor:
        """Proposed adversarial inputs within ``eps[i]`` (float64 ``[B]``, in ``norm``) of each image.

        Same contract as :meth:`Attack.run`: lipcli re-classifies every proposal and measures its distance;
        one farther than ``eps[i]`` (beyond :func:`within_budget`'s rounding slack) counts as a failure.
        """


BUDGET_TOLERANCE = 1e-6
"""Absolute slack on ``distance <= eps`` when checking a proposal: float32 rounding of ``x + delta`` only."""

BUDGET_RELATIVE = 1e-5
"""Relative slack on ``distance <= eps``: a perturbation rescaled to norm eps in float32 misses it by up to
about 1e-6 of eps on ImageNet-sized inputs (150,528 values)."""


def within_budget(found: torch.Tensor, eps: torch.Tensor | float) -> torch.Tensor:
    """Boolean: each distance is at most its eps, up to float32 rounding (:data:`BUDGET_TOLERANCE` plus
    :data:`BUDGET_RELATIVE` of eps). Every check of an attack at a budget uses this one rule."""
    return found <= eps * (1 + BUDGET_RELATIVE) + BUDGET_TOLERANCE

def distance(delta: torch.Tensor, norm: str) -> torch.Tensor:
    """Per-example ``||delta_i||`` in ``norm`` (``l2`` or ``linf``), in float64 so ties and bisections are exact."""
    flat = delta.flatten(1).double()
    if norm == "l2":
        return flat.norm(p=2, dim=1)
    if norm == "linf":
        return flat.abs().amax(dim=1) if flat.shape[1] else flat.new_zeros(flat.shape[0])
    raise ValueError(f"unknown norm {norm!r}; use one of {', '.join(NORMS)}")


def dual(norm: str) -> str:
    """The gradient norm dual to an attack norm: l2 for l2, l1 for l-inf."""
    return {"l2": "l2", "linf": "l1"}[norm]


def largest_distance(norm: str, input_dim: int) -> float:
    """The diameter of [0, 1]^n in ``norm``: no adversarial input is farther from any image."""
    return float(input_dim) ** 0.5 if norm == "l2" else 1.0


@torch.no_grad()
def is_misclassified(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Boolean ``[B]``: the model's predicted label differs from ``labels`` (model in its current mode)."""
    return model(images).argmax(1) != labels


def in_box(images: torch.Tensor) -> torch.Tensor:
    """Boolean ``[B]``: every value of the image is finite and in [0, 1] (a valid image)."""
    flat = images.flatten(1)
    return torch.isfinite(flat).all(1) & (flat >= 0).all(1) & (flat <= 1).all(1)

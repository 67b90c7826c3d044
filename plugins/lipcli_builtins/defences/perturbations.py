"""Adversarial-training perturbations: the paper's one-step J1 and J2, multi-step PGD (Madry et al.) and FGSM
from a random start (Wong et al.).

All run inside :func:`lipcli.gradients.frozen_eval` (the composer sees to it): eval mode, parameters frozen,
so every example's gradient is exactly its own and BatchNorm statistics are not touched.

J1 and J2 follow the original code: the step is not clipped to [0, 1], so its l2 norm is exactly ``eps``
(for J1, when no gradient entry is exactly zero). PGD and FGSM-RS project onto the eps-ball and onto [0, 1].
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import nn

from lipcli.api import Perturbation, grad_norm, input_gradient

NORMS = ("linf", "l2")
"""Attack norms of the projected perturbations."""


def _per_example(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Reshape ``[B]`` so it broadcasts over ``like`` ``[B, ...]``."""
    return values.view(-1, *([1] * (like.ndim - 1)))


def check_non_negative(**values: float) -> None:
    """Raise ValueError (a configuration error naming the option) unless every value is a finite number >= 0."""
    for name, value in values.items():
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value) or value < 0:
            raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")


def check_norm(norm: str) -> None:
    if norm not in NORMS:
        raise ValueError(f"norm must be 'linf' or 'l2', got {norm!r}")


def check_steps(steps: int) -> None:
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps!r}")


def uniform_in_ball(like: torch.Tensor, norm: str) -> torch.Tensor:
    """One point per example drawn uniformly from the unit ``norm``-ball, from the global generator."""
    if norm == "linf":
        return torch.rand_like(like) * 2 - 1
    noise = torch.randn_like(like)
    radius = torch.rand(like.shape[0], device=like.device) ** (1 / like[0].numel())
    return noise * _per_example(radius / grad_norm(noise, "l2").clamp_min(1e-12), noise)


class _OneStep:
    """A one-step perturbation of l2 size ``eps`` (the paper's 0.01), computed from one input gradient."""

    def __init__(self, eps: float = 0.01) -> None:
        check_non_negative(eps=eps)
        self.eps = float(eps)


class SignedGradientStep(_OneStep):
    """J1 (AT-FGSM): ``x + eps * sign(g) / sqrt(n)``; ``eps`` is an l2 budget (paper: 0.01)."""

    def perturb(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> Perturbation:
        _, _, gradient = input_gradient(model, images, labels)
        step = gradient.sign() * (self.eps / math.sqrt(gradient[0].numel()))
        return Perturbation(images + step, grad_norm(gradient, "l1").max())


class NormalisedGradientStep(_OneStep):
    """J2 (AT-l2): ``x + eps * g / ||g||_2``; examples with a zero gradient stay put (paper: eps = 0.01)."""

    def perturb(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> Perturbation:
        _, _, gradient = input_gradient(model, images, labels)
        norms = grad_norm(gradient, "l2")
        scale = torch.where(norms > 0, self.eps / norms.clamp_min(torch.finfo(norms.dtype).tiny), 0.0)
        return Perturbation(images + gradient * _per_example(scale, gradient), norms.max())


class ProjectedGradientAttackTraining:
    """Multi-step PGD adversarial training (Madry et al.), in l-inf or l2, projected onto [0, 1].

    Defaults: l-inf eps 8/255, step 2/255, 7 steps (Madry's CIFAR-10 setting); l2 eps 0.5 with step
    2.5 * eps / steps. A random start draws from the global torch generator (seeded, saved in checkpoints).
    Other maximisations (TRADES' KL) reuse :meth:`ascend`.
    """

    def __init__(
        self,
        norm: str = "linf",
        eps: float | None = None,
        alpha: float | None = None,
        steps: int = 7,
        random_start: bool = True,
    ) -> None:
        check_norm(norm)
        check_steps(steps)
        self.norm = norm
        self.eps = float(eps if eps is not None else (8 / 255 if norm == "linf" else 0.5))
        self.alpha = float(alpha if alpha is not None else (2 / 255 if norm == "linf" else 2.5 * self.eps / steps))
        check_non_negative(eps=self.eps, alpha=self.alpha)
        self.steps = steps
        self.random_start = bool(random_start)

    def perturb(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> Perturbation:
        start = uniform_in_ball(images, self.norm) * self.eps if self.random_start else torch.zeros_like(images)
        return Perturbation(self.ascend(images, start, lambda x: input_gradient(model, x, labels)[2]))

    def ascend(
        self, images: torch.Tensor, start: torch.Tensor, gradient: Callable[[torch.Tensor], torch.Tensor]
    ) -> torch.Tensor:
        """``steps`` steps up ``gradient`` (of the objective at a batch) from ``images + start``: signed steps of
        ``alpha`` (l-inf) or normalised ones (l2), each iterate projected onto the eps-ball around ``images``
        and onto [0, 1] (the start too)."""
        adversarial = (images + self.project(start)).clamp(0, 1)
        for _ in range(self.steps):
            g = gradient(adversarial)
            if self.norm == "linf":
                step = self.alpha * g.sign()
            else:
                step = g * _per_example(self.alpha / grad_norm(g, "l2").clamp_min(1e-12), g)
            adversarial = (images + self.project(adversarial + step - images)).clamp(0, 1)
        return adversarial

    def project(self, delta: torch.Tensor) -> torch.Tensor:
        """``delta`` projected onto the eps-ball of the attack norm, per example."""
        if self.norm == "linf":
            return delta.clamp(-self.eps, self.eps)
        norms = grad_norm(delta, "l2")
        factor = torch.where(norms > self.eps, self.eps / norms.clamp_min(1e-12), 1.0)
        return delta * _per_example(factor, delta)


class FastRandomStart(ProjectedGradientAttackTraining):
    """FGSM-RS ("Fast is better than free", Wong et al. 2020): one l-inf signed step of ``alpha`` from a
    uniform random point of the eps-ball, ``delta`` projected onto the ball and ``x + delta`` onto [0, 1]
    (the start too, as in their code).

    Defaults, their CIFAR-10 ones (``train_fgsm.py``): eps 8/255, alpha = 1.25 eps (10/255).
    ``random_start = false`` is plain FGSM from ``x``; with alpha >= eps its step is ``eps sign(g)``
    (GradAlign's FGSM, ``--attack_init=zero``). Their code computed the step in train mode; lipcli computes
    every perturbation in eval mode with frozen parameters.
    """

    def __init__(self, eps: float = 8 / 255, alpha: float | None = None, random_start: bool = True) -> None:
        check_non_negative(eps=eps)
        super().__init__("linf", eps, 1.25 * eps if alpha is None else alpha, steps=1, random_start=random_start)

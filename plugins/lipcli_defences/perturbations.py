"""Adversarial-training perturbations: the paper's one-step J1 and J2, and multi-step PGD (Madry et al.).

All run inside :func:`lipcli.gradients.frozen_eval` (the composer sees to it): eval mode, parameters frozen,
so every example's gradient is exactly its own and BatchNorm statistics are not touched.

J1 and J2 follow the original code: the step is not clipped to [0, 1], so its l2 norm is exactly ``eps``
(for J1, when no gradient entry is exactly zero). PGD projects onto the eps-ball and onto [0, 1].
"""

from __future__ import annotations

import math

import torch
from torch import nn

from lipcli.gradients import grad_norm, input_gradient
from lipcli.training.defence import Perturbation


def _per_example(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Reshape ``[B]`` so it broadcasts over ``like`` ``[B, ...]``."""
    return values.view(-1, *([1] * (like.ndim - 1)))


def _check_eps(**values: float) -> None:
    for name, value in values.items():
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value) or value < 0:
            raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")


class _OneStep:
    """A one-step perturbation of l2 size ``eps`` (the paper's 0.01), computed from one input gradient."""

    def __init__(self, eps: float = 0.01) -> None:
        _check_eps(eps=eps)
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
    """

    def __init__(
        self,
        norm: str = "linf",
        eps: float | None = None,
        alpha: float | None = None,
        steps: int = 7,
        random_start: bool = True,
    ) -> None:
        if norm not in ("linf", "l2"):
            raise ValueError(f"norm must be 'linf' or 'l2', got {norm!r}")
        if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
            raise ValueError(f"steps must be a positive integer, got {steps!r}")
        self.norm = norm
        self.eps = float(eps if eps is not None else (8 / 255 if norm == "linf" else 0.5))
        self.alpha = float(alpha if alpha is not None else (2 / 255 if norm == "linf" else 2.5 * self.eps / steps))
        _check_eps(eps=self.eps, alpha=self.alpha)
        self.steps = steps
        self.random_start = bool(random_start)

    def perturb(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> Perturbation:
        delta = torch.zeros_like(images)
        if self.random_start:
            delta = self._project(self._random_direction(images) * self.eps)
        adversarial = (images + delta).clamp(0, 1)
        for _ in range(self.steps):
            _, _, gradient = input_gradient(model, adversarial, labels)
            if self.norm == "linf":
                step = self.alpha * gradient.sign()
            else:
                norms = grad_norm(gradient, "l2").clamp_min(1e-12)
                step = gradient * _per_example(self.alpha / norms, gradient)
            adversarial = (images + self._project(adversarial + step - images)).clamp(0, 1)
        return Perturbation(adversarial)

    def _random_direction(self, images: torch.Tensor) -> torch.Tensor:
        if self.norm == "linf":
            return torch.rand_like(images) * 2 - 1
        noise = torch.randn_like(images)
        radius = torch.rand(images.shape[0], device=images.device) ** (1 / images[0].numel())
        return noise * _per_example(radius / grad_norm(noise, "l2").clamp_min(1e-12), noise)

    def _project(self, delta: torch.Tensor) -> torch.Tensor:
        if self.norm == "linf":
            return delta.clamp(-self.eps, self.eps)
        norms = grad_norm(delta, "l2")
        factor = torch.where(norms > self.eps, self.eps / norms.clamp_min(1e-12), 1.0)
        return delta * _per_example(factor, delta)

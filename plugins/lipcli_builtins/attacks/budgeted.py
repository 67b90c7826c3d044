"""Fixed-budget attacks (torchattacks' FGSM, PGD, PGDL2, CW, and the gradient attack) as minimal-distance
attacks: each image's budget (or CW constant) is found by :func:`lipcli.api.parameter_search`.

torchattacks takes a tensor budget with one value per image, so every round of the search is one call on
the images still searching. Its PGD random start needs a scalar budget, so it is off here.
"""

from __future__ import annotations

from abc import abstractmethod

import torch
import torchattacks
from torch import nn

from lipcli.api import Attack, AttackAt, input_gradient, largest_distance, parameter_search

_INITIAL = {"l2": 1.0, "linf": 8 / 255}


class BudgetSearch(Attack):
    """An attack with a size parameter searched per image: bracket by doubling or halving, then bisection."""

    grow = 2.0
    bracket_steps = 12

    def __init__(self, bisect_steps: int = 10) -> None:
        if bisect_steps < 0:
            raise ValueError("bisect_steps must be >= 0")
        self.bisect_steps = bisect_steps

    def run(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor, norm: str) -> torch.Tensor:
        native = self.norms[0] if self.norms else norm
        attack_at = self.attack_at(model, images, labels, native)
        return parameter_search(
            model, images, labels, norm, attack_at, initial=self.initial(native),
            upper=self.upper(native, images[0].numel()), grow=self.grow,
            bracket_steps=self.bracket_steps, bisect_steps=self.bisect_steps,
        )

    def initial(self, norm: str) -> float:
        return _INITIAL[norm]

    def upper(self, norm: str, input_dim: int) -> float:
        return largest_distance(norm, input_dim)

    @abstractmethod
    def attack_at(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor, norm: str) -> AttackAt:
        """``attack_at(index, sizes)``: candidates for ``images[index]`` at per-image sizes."""


def _column(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return values.view((-1,) + (1,) * (like.dim() - 1))


class GradientAttack(BudgetSearch):
    """x + eps g / ||g||_2 with g the loss gradient at x (one gradient per image, reused by every size)."""

    norms = ("l2",)

    def attack_at(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor, norm: str) -> AttackAt:
        _, _, gradient = input_gradient(model, images, labels)
        size = gradient.flatten(1).norm(dim=1)
        direction = gradient / _column(torch.where(size > 0, size, 1.0), gradient)

        def attack_at(index: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
            return (images[index] + _column(eps, images) * direction[index]).clamp(0, 1)

        return attack_at


class FGSM(BudgetSearch):
    """torchattacks ``FGSM``: x + eps sign(g)."""

    norms = ("linf",)

    def attack_at(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor, norm: str) -> AttackAt:
        def attack_at(index: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
            return torchattacks.FGSM(model, eps=_column(eps, images))(images[index], labels[index])

        return attack_at


class _PGD(BudgetSearch):
    def __init__(self, steps: int = 20, step_ratio: float = 2.5, bisect_steps: int = 10) -> None:
        """``steps`` iterations of size ``step_ratio * eps / steps`` (Madry et al.'s 2.5 eps / steps)."""
        super().__init__(bisect_steps)
        if steps < 1 or step_ratio <= 0:
            raise ValueError("steps must be >= 1 and step_ratio > 0")
        self.steps, self.step_ratio = steps, step_ratio


class PGDL2(_PGD):
    """torchattacks ``PGDL2`` (projected gradient descent in l2)."""

    norms = ("l2",)

    def attack_at(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor, norm: str) -> AttackAt:
        def attack_at(index: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
            alpha = _column(eps * self.step_ratio / self.steps, images)
            attack = torchattacks.PGDL2(model, eps=eps, alpha=alpha, steps=self.steps, random_start=False)
            return attack(images[index], labels[index])

        return attack_at


class PGDLinf(_PGD):
    """torchattacks ``PGD``: iterative FGSM projected onto the l-inf ball (I-FGSM)."""

    norms = ("linf",)

    def attack_at(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor, norm: str) -> AttackAt:
        def attack_at(index: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
            column = _column(eps, images)
            attack = torchattacks.PGD(
                model, eps=column, alpha=column * self.step_ratio / self.steps, steps=self.steps, random_start=False
            )
            return attack(images[index], labels[index])

        return attack_at


class _PerImageCW(torchattacks.CW):
    """torchattacks ``CW`` with one constant per image, a correct margin, and no whole-batch early stop.

    Three changes, all through the margin function ``f`` that torchattacks multiplies by ``c = 1`` and sums:
    ``f`` is scaled per image by ``constants``; the other-class maximum masks the label with -inf (upstream
    multiplies by a 0/1 mask, wrong when every other logit is negative); and a constant that falls by 1e9 at
    every call is added. That constant has no gradient, but it makes the summed cost fall at every step, so
    torchattacks' early stop (taken when the cost of the whole batch rises) never ends the attack for
    images still improving.
    """

    def __init__(self, model: nn.Module, constants: torch.Tensor, **options: float) -> None:
        super().__init__(model, c=1.0, **options)
        self.constants = constants
        self.calls = 0

    def f(self, outputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        own = outputs.gather(1, labels[:, None]).squeeze(1)
        other = outputs.scatter(1, labels[:, None], -torch.inf).amax(dim=1)
        margin = torch.clamp(own - other, min=-self.kappa)
        return self.constants * margin - self.calls * 1e9 / outputs.shape[0]


class CarliniWagner(BudgetSearch):
    """torchattacks ``CW`` (l2) with its constant c searched per image: x10 to bracket, then bisection."""

    norms = ("l2",)
    grow = 10.0
    bracket_steps = 6

    def __init__(self, steps: int = 100, lr: float = 0.01, kappa: float = 0.0, initial_c: float = 1.0,
                 bisect_steps: int = 5) -> None:
        super().__init__(bisect_steps)
        if steps < 1 or lr <= 0 or kappa < 0 or initial_c <= 0:
            raise ValueError("need steps >= 1, lr > 0, kappa >= 0, initial_c > 0")
        self.steps, self.lr, self.kappa, self.initial_c = steps, lr, kappa, initial_c

    def initial(self, norm: str) -> float:
        return self.initial_c

    def upper(self, norm: str, input_dim: int) -> float:
        return self.initial_c * self.grow ** self.bracket_steps

    def attack_at(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor, norm: str) -> AttackAt:
        def attack_at(index: torch.Tensor, constants: torch.Tensor) -> torch.Tensor:
            attack = _PerImageCW(model, constants, kappa=self.kappa, steps=self.steps, lr=self.lr)
            return attack(images[index], labels[index])

        return attack_at


class TorchattacksDeepFool(Attack):
    """torchattacks ``DeepFool`` unchanged: the reference the batched ``deepfool`` is tested against."""

    norms = ("l2",)

    def __init__(self, steps: int = 50, overshoot: float = 0.02) -> None:
        self.steps, self.overshoot = steps, overshoot

    def run(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor, norm: str) -> torch.Tensor:
        return torchattacks.DeepFool(model, steps=self.steps, overshoot=self.overshoot)(images, labels)

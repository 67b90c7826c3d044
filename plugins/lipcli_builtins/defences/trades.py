"""TRADES (Zhang et al. 2019, "Theoretically Principled Trade-off between Robustness and Accuracy").

The step's loss is ``CE(f(x), y) + beta * mean_i KL(softmax f(x_i) || softmax f(x'_i))``, where ``x'``
maximises the KL over the eps-ball around ``x`` (the original's ``KLDivLoss(sum) / batch_size`` of
``log_softmax f(x')`` against ``softmax f(x)``). One primitive holds both halves, so that the composer's rule
(at most one perturbation, one training loss) refuses ``j2+trades`` or ``trades+wcat``.

Defaults are the paper's CIFAR-10 ones, from its code (yaodongyu/TRADES, ``train_trades_cifar10.py``):
l-inf eps 0.031 (8/255 = 0.0314 rounded), step 0.007 (not 2/255 = 0.0078), 10 steps, beta 6.0 (1/lambda).
For l2 (the original's ``distance='l_2'``, which has no CIFAR-10 setting) eps 0.5, the usual CIFAR-10 l2
budget and at-pgd's, with the original's step ``2 eps / steps`` on the normalised gradient, 10 steps.

* The attack (``perturb``) runs in eval mode with frozen parameters, as in the original (``model.eval()``):
  the target is the clean batch's eval-mode softmax; the start is ``x + 0.001 N(0, 1)`` (the original's),
  drawn from the global generator; each step is signed (l-inf) or normalised (l2) on the gradient of the
  summed KL, projected by at-pgd's code onto the ball and [0, 1]. Small differences from the original: the
  start is projected too (the original clips after the first step); in l2 an example with a zero gradient
  stays put (the original steps in a random direction), and the projection is onto the ball, then the box
  (the original's: the box, then ``renorm`` onto the ball).
* The loss (``training_loss``), in train mode: one forward pass on the clean batch (the step's ``logits``
  and ``data_loss``, and the pass that updates BatchNorm's running statistics), one on ``x'`` through
  ``unwrap(model)`` with the statistics kept (:mod:`lipcli_builtins.defences.batch_statistics`; the original
  updates them on each of its three passes, computing ``f(x)`` twice). The gradient flows through both
  distributions, the clean one included (the original does not detach it). ``penalty`` is ``beta * KL``.
"""

from __future__ import annotations

import torch
from torch import nn

from lipcli.api import Perturbation, StepLoss, at_least_float32, cross_entropy, unwrap
from lipcli_builtins.defences.perturbations import (
    ProjectedGradientAttackTraining,
    check_non_negative,
    check_norm,
    check_steps,
)
from lipcli_builtins.defences.batch_statistics import running_statistics_kept

START_STD = 0.001
"""Standard deviation of the attack's Gaussian start around ``x`` (the original's ``0.001 * randn``)."""


def log_probabilities(logits: torch.Tensor) -> torch.Tensor:
    """``log_softmax`` in float32 or more, so autocast never degrades the KL and its gradient."""
    return torch.log_softmax(at_least_float32(logits), dim=1)


def kl_divergence(clean_log_probs: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """Per-example ``KL(p || q)``, ``p = exp(clean_log_probs)`` and ``q = softmax(logits)``."""
    log_q = log_probabilities(logits)
    return (clean_log_probs.exp() * (clean_log_probs - log_q)).sum(dim=1)


class Trades:
    """TRADES: the KL attack (``perturb``) and the loss ``CE + beta * KL`` (``training_loss``).

    ``beta``: the KL's weight (the paper's 1/lambda), 6.0; ``norm``: ``"linf"`` or ``"l2"``; ``eps``: the
    ball's radius, 0.031 (l-inf) or 0.5 (l2); ``alpha``: the step, 0.007 (l-inf) or ``2 eps / steps`` (l2);
    ``steps``: the attack's steps, 10.
    """

    def __init__(
        self, beta: float = 6.0, norm: str = "linf", eps: float | None = None, alpha: float | None = None,
        steps: int = 10,
    ) -> None:
        check_non_negative(beta=beta)
        check_norm(norm)
        check_steps(steps)
        eps = (0.031 if norm == "linf" else 0.5) if eps is None else eps
        check_non_negative(eps=eps)
        alpha = (0.007 if norm == "linf" else 2 * eps / steps) if alpha is None else alpha
        self.beta = float(beta)
        self.attack = ProjectedGradientAttackTraining(norm, eps, alpha, steps, random_start=False)

    def perturb(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> Perturbation:
        with torch.no_grad():
            target = log_probabilities(model(images))

        def gradient(x: torch.Tensor) -> torch.Tensor:
            x = x.detach().requires_grad_(True)
            (g,) = torch.autograd.grad(kl_divergence(target, model(x)).sum(), x)
            return g

        return Perturbation(self.attack.ascend(images, START_STD * torch.randn_like(images), gradient))

    def training_loss(
        self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor, perturbation: Perturbation | None
    ) -> StepLoss:
        # trades defines the perturbation, so the composer always passes its own, clean batch filled in
        assert perturbation is not None and perturbation.clean is not None
        logits = model(perturbation.clean)
        with running_statistics_kept(unwrap(model)) as bare:  # a second forward pass: not through DDP
            adversarial_logits = bare(images)
        data_loss = cross_entropy(logits, labels, reduction="mean")
        robust = self.beta * kl_divergence(log_probabilities(logits), adversarial_logits).mean()
        return StepLoss(total=data_loss + robust, data_loss=data_loss, logits=logits, penalty=robust.detach())

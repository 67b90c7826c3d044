"""WCAT: Lipschitz regularisation of the loss, ``lam * max_i ||grad_x loss_i||_*`` over the mini-batch.

Conventions (paper Eq. (1), Appendix A, and the original code):

* ``norm`` is the dual norm: ``"l2"`` (Lip2, for l2 attacks) or ``"l1"`` (Lip1, for l-inf attacks); for
  ``"l1"`` the multiplier is divided by ``sqrt(n)``, n the input dimension, as the paper does.
* ``batch_mean = true`` (the presets' setting) reproduces the original code, which took the gradient of
  the batch-MEAN loss: the penalty is ``lam / B * max_i ||grad_x loss_i||``, so its lam = 0.1 at batch 128
  is 0.1/128 in Eq. (1)'s per-example form. ``batch_mean = false`` uses Eq. (1) literally.
* ``method = "exact"`` computes the gradients on the batch the weight update uses, in train mode, with
  ``create_graph`` so the penalty is differentiated by double backpropagation (BatchNorm's coupling of
  the batch included, as in the original code).
* ``method = "fd"`` avoids double backpropagation (after the authors' follow-up work on scaleable input
  gradient regularisation). It picks the batch's worst example by its exact eval-mode input gradient (the
  one the adversarial-training step already computed, or one extra input-gradient pass without it), and
  estimates that example's gradient norm in train mode by a finite difference along the dual-norm
  direction ``d`` of that gradient (``g / ||g||_2`` for l2, ``sign(g) / sqrt(n)`` for l1):
  ``(loss(x + h d) - loss(x)) / h``, with the probe ``x + h d`` in the same forward pass as the batch
  (B + 1 examples, so BatchNorm statistics are shared). On a smooth model this matches the exact penalty
  to O(h) (tests/test_defences.py measures it); it costs one extra example's forward and backward.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from lipcli.gradients import NORMS, cross_entropy, frozen_eval, grad_norm, input_gradient
from lipcli.train.defence import Perturbation, StepLoss

METHODS = ("exact", "fd")


class LipschitzPenalty:
    """The WCAT training loss: mean cross-entropy plus the Lipschitz penalty."""

    def __init__(
        self,
        lam: float = 0.1,
        norm: str = "l2",
        batch_mean: bool = True,
        method: str = "exact",
        fd_step: float = 0.01,
    ) -> None:
        if norm not in NORMS:
            raise ValueError(f"norm must be one of {', '.join(NORMS)}, got {norm!r}")
        if method not in METHODS:
            raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
        for name, value in (("lam", lam), ("fd_step", fd_step)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
        if fd_step == 0:
            raise ValueError("fd_step must be positive")
        self.lam, self.norm, self.batch_mean = float(lam), norm, bool(batch_mean)
        self.method, self.fd_step = method, float(fd_step)

    def multiplier(self, batch_size: int, input_dim: int) -> float:
        """The factor in front of ``max_i ||grad_x loss_i||`` in the per-example form."""
        factor = self.lam / batch_size if self.batch_mean else self.lam
        return factor / math.sqrt(input_dim) if self.norm == "l1" else factor

    def training_loss(
        self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor, perturbation: Perturbation | None
    ) -> StepLoss:
        weight = self.multiplier(images.shape[0], images[0].numel())
        if self.method == "exact":
            losses, logits, gradient = input_gradient(model, images, labels, create_graph=True)
            worst = grad_norm(gradient, self.norm).max()
        else:
            losses, logits, worst = self._finite_difference(model, images, labels, perturbation)
        data_loss = losses.mean()
        penalty = weight * worst
        return StepLoss(
            total=data_loss + penalty, data_loss=data_loss, logits=logits,
            penalty=penalty.detach(), grad_norm_max=worst.detach(),
        )

    def _finite_difference(
        self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor, perturbation: Perturbation | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        reuse = perturbation is not None and perturbation.gradient is not None
        if reuse:
            gradient = perturbation.gradient  # type: ignore[union-attr]
        else:
            with frozen_eval(model):
                _, _, gradient = input_gradient(model, images, labels)
        index = grad_norm(gradient, self.norm).argmax().view(1)  # a device tensor: no host sync
        g = gradient.index_select(0, index)
        n = g[0].numel()
        if self.norm == "l2":
            direction = g / grad_norm(g, "l2").clamp_min(1e-12).view(-1, *([1] * (g.ndim - 1)))
        else:
            direction = g.sign() / math.sqrt(n)
        probe = images.index_select(0, index) + self.fd_step * direction.to(images.dtype)
        logits_all = model(torch.cat([images, probe]))
        losses_all = cross_entropy(logits_all, torch.cat([labels, labels.index_select(0, index)]))
        batch = images.shape[0]
        losses, logits = losses_all[:batch], logits_all[:batch]
        slope = (losses_all[batch] - losses.index_select(0, index)[0]) / self.fd_step
        # the slope along the unit-l2 direction is ||g||_2 (l2) or ||g||_1 / sqrt(n) (l1)
        worst = torch.relu(slope) * (math.sqrt(n) if self.norm == "l1" else 1.0)
        return losses, logits, worst

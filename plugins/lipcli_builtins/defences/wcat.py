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
* With several processes (torchrun), the maximum is over the global batch: every process's per-example
  norms are gathered (:func:`lipcli.api.gather`, differentiable), so the maximum and its gradient
  are a single process's on the same batch (BatchNorm's statistics aside: each process normalises its own
  share unless ``training.sync_batchnorm``). B is the global batch.
* ``method = "worst"`` and ``method = "fd"`` avoid double backpropagation through the whole batch. The
  subgradient of ``max_i ||grad_x loss_i||`` flows only through the worst example, so the training forward
  pass is followed by one input-gradient backward, which picks the batch's worst example; then that one
  example's gradient norm is computed again "as one more example of the batch": the model in eval mode,
  every BatchNorm normalising it with the batch's statistics, kept as functions of the weights
  (:mod:`lipcli_builtins.defences.batch_statistics` says why). ``worst`` double-backpropagates that example's exact
  gradient norm; ``fd`` (after the authors' follow-up work on scaleable input gradient regularisation)
  estimates it by the finite difference ``(loss(x + h d) - loss(x)) / h`` along the dual-norm direction
  ``d`` of its gradient (``g / ||g||_2`` for l2, ``sign(g) / sqrt(n)`` for l1), both losses taken in such
  passes (float32 at least, TF32 off), so its weight gradient converges to ``worst``'s as h -> 0.
  On models without BatchNorm, ``worst`` equals ``exact`` to rounding. With BatchNorm both leave out how
  each example moves the batch statistics, which ``exact`` differentiates. On ReLU networks ``fd`` has a
  second error: wherever the segment ``[x, x + h d]`` crosses a ReLU's kink, the weight gradient of the
  difference quotient gains a term of order 1/h, rarer but larger as h shrinks; at the default h = 0.01 on
  a trained small CNN it is mostly that (cosine 0.4 with ``exact``'s penalty gradient, median). It trained
  like ``exact`` at the presets' strength, worse with a penalty that matters. ``worst`` has neither error
  and costs the same: prefer it.
  Dropout is off in the single-example passes. With SyncBatchNorm (``training.sync_batchnorm``), whose
  double backward PyTorch lacks, use ``worst`` or ``fd``: the statistics are pooled over the processes as
  its forward pass pools them, and the single example's passes use none of its own code.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import nn

from lipcli.api import (
    GRADIENT_NORMS,
    Perturbation,
    StepLoss,
    at_least_float32,
    cross_entropy,
    current,
    full_float32,
    gather,
    grad_norm,
    input_gradient,
    unwrap,
)
from lipcli_builtins.defences.batch_statistics import as_part_of_the_batch, recorded_batch_statistics

METHODS = ("exact", "worst", "fd")


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
        if norm not in GRADIENT_NORMS:
            raise ValueError(f"norm must be one of {', '.join(GRADIENT_NORMS)}, got {norm!r}")
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
        # with several processes the batch is the global one: its size, and its maximum over all processes
        weight = self.multiplier(images.shape[0] * current().world, images[0].numel())
        if self.method == "exact":
            losses, logits, gradient = input_gradient(model, images, labels, create_graph=True)
            worst = gather(grad_norm(gradient, self.norm)).max()
        else:
            losses, logits, local, chosen_by = self._at_worst_example(model, images, labels)
            # the batch's worst example is the one with the largest norm (as for one process), and the value
            # taken is that example's, whichever process holds it
            worst = gather(local.view(1))[gather(chosen_by.view(1)).argmax()]
        data_loss = losses.mean()
        penalty = weight * worst
        return StepLoss(
            total=data_loss + penalty, data_loss=data_loss, logits=logits,
            penalty=penalty.detach(), grad_norm_max=worst.detach(),
        )

    def _at_worst_example(
        self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(losses, logits, the worst example's gradient norm as one more example of the batch, the norm it was
        chosen by): one input-gradient backward picks it, then passes on that example alone."""
        x = images.detach().requires_grad_(True)
        with recorded_batch_statistics(model) as stats:
            logits = model(x)
        losses = cross_entropy(logits, labels)
        (gradient,) = torch.autograd.grad(losses.sum(), x, retain_graph=True)
        norms = grad_norm(gradient, self.norm)
        index = norms.argmax().view(1)  # a device tensor: no host sync
        example = at_least_float32(x.detach().index_select(0, index))
        # in float32 at least, TF32 off: fd divides a loss difference by h, rounding would swamp it
        with torch.autocast(images.device.type, enabled=False), full_float32():
            with as_part_of_the_batch(unwrap(model), stats) as run:  # not through a DDP wrapper
                value = self._norm_estimate(run, example, labels.index_select(0, index))
        return losses, logits, value, norms.index_select(0, index)[0].detach()

    def _norm_estimate(
        self, model: Callable[[torch.Tensor], torch.Tensor], example: torch.Tensor, label: torch.Tensor
    ) -> torch.Tensor:
        """``||grad_x loss||`` of one example (``worst``: exact and twice differentiable; ``fd``: the finite
        difference along its dual-norm direction), differentiable in the weights."""
        x = example.requires_grad_(True)
        loss = cross_entropy(model(x), label)[0]
        if self.method == "worst":
            (g,) = torch.autograd.grad(loss, x, create_graph=True)
            return grad_norm(g, self.norm)[0]
        (g,) = torch.autograd.grad(loss, x, retain_graph=True)
        if self.norm == "l2":
            direction = g / grad_norm(g, "l2").clamp_min(1e-12).view(-1, *([1] * (g.ndim - 1)))
        else:
            direction = g.sign() / math.sqrt(g[0].numel())
        probe_loss = cross_entropy(model(example.detach() + self.fd_step * direction), label)[0]
        slope = (probe_loss - loss) / self.fd_step
        # the slope along the unit-l2 direction is ||g||_2 (l2) or ||g||_1 / sqrt(n) (l1)
        return torch.relu(slope) * (math.sqrt(g[0].numel()) if self.norm == "l1" else 1.0)

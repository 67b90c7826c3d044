"""GradAlign (Andriushchenko & Flammarion 2020, "Understanding and Improving Fast Adversarial Training").

The step's loss is the cross-entropy on the batch the weight update uses plus
``lam * mean_i (1 - cos(grad_x loss_i(x_i), grad_x loss_i(x_i + eta_i)))``, ``eta_i`` uniform in the l-inf
eps-ball: it keeps the loss locally linear, so that one-step (FGSM) training does not collapse.

As in the original code (tml-epfl/understanding-fast-adv-training, ``train.py``, ``utils.get_input_grad``):

* defaults eps 8/255 and lam 0.2, their CIFAR-10 setting (README: ``--eps=8 --grad_align_cos_lambda=0.2``);
  eps is the radius of ``eta``, set it to the attack's;
* both gradients in train mode; the first at the clean images (``perturbation.clean`` after a perturbation,
  else the batch), without ``create_graph`` (a constant), the second with it (double backpropagation);
  ``x + eta`` is not clipped to [0, 1];
* the paper's method, FGSM + GradAlign, is the preset ``fgsm-gradalign``: FGSM from ``x``
  (``--attack_init=zero``), whose step 1.25 eps the projection cuts to eps.

Differences, each documented where it is decided:

* a zero gradient has no direction: an example whose gradient is zero at either point adds 0 to the mean
  (``1 - cos`` is 0, with zero gradient), never NaN. The original leaves such examples out of the mean
  (``grads_nnz_idx``); lipcli keeps the whole batch's mean, which is 0 when every gradient is zero and,
  with several processes, the mean over the global batch;
* the two gradient passes run through ``unwrap(model)`` with BatchNorm's running statistics kept
  (:mod:`lipcli_builtins.defences.batch_statistics`): only the loss's pass on the batch updates them (the original's
  passes each did);
* the gradients are those of the summed loss (lipcli's per-example form), the original's of the mean:
  the cosine does not see the factor.

The second gradient's double backpropagation is not available through SyncBatchNorm
(``training.sync_batchnorm``), whose double backward PyTorch lacks.
"""

from __future__ import annotations

import torch
from torch import nn

from lipcli.api import Perturbation, StepLoss, at_least_float32, grad_norm, input_gradient, plain_loss, unwrap
from lipcli_builtins.defences.perturbations import check_non_negative, uniform_in_ball
from lipcli_builtins.defences.batch_statistics import running_statistics_kept


def _unit(gradients: torch.Tensor, norms: torch.Tensor) -> torch.Tensor:
    """Rows ``[B, n]`` divided by their norms; zero rows stay zero (divided by 1, so no 0/0 in the gradient)."""
    return at_least_float32(gradients.flatten(1)) / torch.where(norms > 0, norms, 1.0)[:, None]


def cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-example cosine of two gradient batches ``[B, ...]``, defined as 1 (aligned: nothing to penalise,
    and no gradient) where either gradient is zero."""
    norm_a, norm_b = grad_norm(a, "l2"), grad_norm(b, "l2")
    aligned = (_unit(a, norm_a) * _unit(b, norm_b)).sum(dim=1)
    return torch.where((norm_a > 0) & (norm_b > 0), aligned, 1.0)


class GradientAlignment:
    """The GradAlign training loss: cross-entropy plus ``lam * mean(1 - cos)``.

    ``lam``: the regulariser's weight, 0.2; ``eps``: the l-inf radius of ``eta``, 8/255.
    """

    def __init__(self, lam: float = 0.2, eps: float = 8 / 255) -> None:
        check_non_negative(lam=lam, eps=eps)
        self.lam, self.eps = float(lam), float(eps)

    def training_loss(
        self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor, perturbation: Perturbation | None
    ) -> StepLoss:
        out = plain_loss(model, images, labels)  # the pass that updates BatchNorm's running statistics
        clean = images if perturbation is None or perturbation.clean is None else perturbation.clean
        with running_statistics_kept(unwrap(model)) as bare:
            _, _, at_clean = input_gradient(bare, clean, labels)
            nearby = clean + uniform_in_ball(clean, "linf") * self.eps
            _, _, at_nearby = input_gradient(bare, nearby, labels, create_graph=True)
        penalty = self.lam * (1 - cosine(at_clean, at_nearby)).mean()
        return StepLoss(
            total=out.total + penalty, data_loss=out.data_loss, logits=out.logits, penalty=penalty.detach()
        )

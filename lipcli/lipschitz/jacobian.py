"""Per-image gradient and Jacobian norms, exact and batched: the measured columns of the paper's Tables 1, 4, 6.

For a batch, the full Jacobian of the logits ``J_z = dz/dx`` (``[B, C, n]``) is built with one backward pass
per class, each over the whole batch. Everything else follows from it in closed form:

* the loss gradient ``grad_x loss = J_z^T (p - y)`` (cross-entropy, p the softmax);
* the Jacobian of the model's probabilities ``f = softmax(z)``: ``J_f = (diag(p) - p p^T) J_z``. The paper's
  ``||grad f||`` columns are of f, the probabilities (they are compared with the data's Lipschitz constant
  of one-hot labels; logit Jacobians of the same models are several times larger than their loss gradients,
  which the tables rule out);
* induced matrix norms ``||A||_{p,q} = max_{x != 0} ||A x||_q / ||x||_p``: ``||A||_{2,inf}`` is the largest
  row l2 norm, ``||A||_{1,1}`` the largest column l1 norm, ``||A||_{inf,inf}`` the largest row l1 norm.

The tanh head, when the model has one, is part of z.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from lipcli.gradients import at_least_float32, cross_entropy


@dataclass
class JacobianNorms:
    """Per-image values ``[B]`` (float64) for one batch."""

    logits: torch.Tensor  # [B, C], detached
    loss: torch.Tensor
    grad_loss_l2: torch.Tensor  # ||grad_x loss||_2, the dual norm for l2 attacks
    grad_loss_l1: torch.Tensor  # ||grad_x loss||_1, the dual norm for l-inf attacks
    jac_f_2inf: torch.Tensor  # ||J_f||_{2,inf}, f = softmax(z)
    jac_f_11: torch.Tensor  # ||J_f||_{1,1}
    jac_z_2inf: torch.Tensor  # ||J_z||_{2,inf}: the l2 Lipschitz estimate of every logit
    jac_z_infinf: torch.Tensor  # ||J_z||_{inf,inf}: the l-inf Lipschitz estimate of every logit


def logit_jacobian(model: nn.Module, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits ``[B, C]``, ``J_z`` ``[B, C, n]``), one backward pass per class over the batch (model mode as is)."""
    x = images.detach().requires_grad_(True)
    logits = at_least_float32(model(x))
    rows = []
    for k in range(logits.shape[1]):
        (row,) = torch.autograd.grad(logits[:, k].sum(), x, retain_graph=k + 1 < logits.shape[1])
        rows.append(row.flatten(1))
    return logits.detach(), torch.stack(rows, dim=1)


def jacobian_norms(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> JacobianNorms:
    """Every per-image norm of the module docs for one batch, computed in float64 from ``J_z``."""
    logits, jacobian = logit_jacobian(model, images)
    jacobian = jacobian.double()
    z = logits.double()
    p = torch.softmax(z, dim=1)
    residual = p - nn.functional.one_hot(labels, z.shape[1]).double()
    grad_loss = torch.einsum("bc,bcn->bn", residual, jacobian)
    jac_f = p[:, :, None] * (jacobian - torch.einsum("bc,bcn->bn", p, jacobian)[:, None, :])
    return JacobianNorms(
        logits=logits,
        loss=cross_entropy(z, labels),
        grad_loss_l2=grad_loss.norm(dim=1),
        grad_loss_l1=grad_loss.abs().sum(dim=1),
        jac_f_2inf=jac_f.norm(dim=2).amax(dim=1),
        jac_f_11=jac_f.abs().sum(dim=1).amax(dim=1),
        jac_z_2inf=jacobian.norm(dim=2).amax(dim=1),
        jac_z_infinf=jacobian.abs().sum(dim=2).amax(dim=1),
    )

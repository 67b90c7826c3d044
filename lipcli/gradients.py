"""Input gradients of the loss, batched: the quantity every defence, attack and statistic here is built on.

Conventions used throughout lipcli:

* ``loss_i`` is the cross-entropy of example ``i``; ``input_gradient`` differentiates their SUM, so row
  ``i`` of the result is ``grad_x loss_i`` in the per-example form of the paper's Eq. (1) (in eval mode,
  where BatchNorm does not couple the batch, exactly so).
* Norms are named by the gradient norm they compute: ``"l2"`` (dual of l2 attacks) and ``"l1"`` (dual of
  l-inf attacks).
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch
from torch import nn

GRADIENT_NORMS = ("l2", "l1")
"""Norms of input gradients: the dual norms of the attack norms (l2 of l2, l1 of l-inf); attack norms are
:data:`lipcli.attacks.NORMS`."""


def grad_norm(gradients: torch.Tensor, norm: str) -> torch.Tensor:
    """Per-example ``||g_i||`` of a batch ``[B, ...]`` in ``norm`` (``l2`` or ``l1``), computed in float32+."""
    flat = at_least_float32(gradients.flatten(1))
    if norm == "l2":
        return flat.norm(p=2, dim=1)
    if norm == "l1":
        return flat.abs().sum(dim=1)
    raise ValueError(f"unknown gradient norm {norm!r}; use one of {', '.join(GRADIENT_NORMS)}")


def at_least_float32(tensor: torch.Tensor) -> torch.Tensor:
    """Half-precision values (from autocast) raised to float32; float32 and float64 kept as they are."""
    return tensor.float() if tensor.dtype in (torch.float16, torch.bfloat16) else tensor


def cross_entropy(logits: torch.Tensor, labels: torch.Tensor, reduction: str = "none") -> torch.Tensor:
    """Cross-entropy computed in at least float32, so autocast never degrades losses and their gradients."""
    return nn.functional.cross_entropy(at_least_float32(logits), labels, reduction=reduction)


@contextlib.contextmanager
def frozen_eval(model: nn.Module) -> Iterator[nn.Module]:
    """Eval mode with parameters frozen, restored afterwards.

    This is how the paper's code computes adversarial perturbations: BatchNorm uses its running statistics
    (so each example's gradient is its own and the batch statistics are not updated) and no parameter
    gradient is built.
    """
    was_training = model.training
    frozen = [p for p in model.parameters() if p.requires_grad]
    model.eval()
    for p in frozen:
        p.requires_grad_(False)
    try:
        yield model
    finally:
        for p in frozen:
            p.requires_grad_(True)
        model.train(was_training)


def input_gradient(
    model: nn.Module, images: torch.Tensor, labels: torch.Tensor, *, create_graph: bool = False
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(per-example losses, logits, ``grad_x`` of the summed loss) at ``images``, in the model's current mode.

    With ``create_graph`` the gradient is itself differentiable (double backpropagation).
    """
    x = images.detach().requires_grad_(True)
    logits = model(x)
    losses = cross_entropy(logits, labels)
    (gradient,) = torch.autograd.grad(losses.sum(), x, create_graph=create_graph)
    return losses, logits, gradient


def margin_gradients(
    model: nn.Module, images: torch.Tensor, labels: torch.Tensor, classes: torch.Tensor | int | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(logits ``[B, C]``, classes ``[B, K]``, margins ``[B, K]``, gradients ``[B, K, ...]``) of the margins
    ``f_k = z_{classes[:, k]} - z_label``: the linearisation DeepFool-type attacks project onto.

    ``classes`` is a ``[B, K]`` tensor, an int K (the K highest-scoring classes other than the label), or
    None (every class but the label, in increasing order).
    One forward pass and one backward pass per class column, each batched over the images.
    """
    x = images.detach().requires_grad_(True)
    logits = model(x)
    if classes is None:
        classes = other_classes(labels, logits.shape[1])
    elif isinstance(classes, int):
        others = logits.detach().scatter(1, labels[:, None], -torch.inf)
        classes = others.topk(min(classes, logits.shape[1] - 1), dim=1).indices
    margins = logits.gather(1, classes) - logits.gather(1, labels[:, None])
    gradients = []
    for k in range(classes.shape[1]):
        (g,) = torch.autograd.grad(margins[:, k].sum(), x, retain_graph=k + 1 < classes.shape[1])
        gradients.append(g)
    return logits.detach(), classes, margins.detach(), torch.stack(gradients, dim=1)


def other_classes(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """``[B, C-1]``: every class except each image's label, in increasing order."""
    all_classes = torch.arange(num_classes, device=labels.device).expand(labels.shape[0], -1)
    return all_classes[all_classes != labels[:, None]].view(labels.shape[0], num_classes - 1)

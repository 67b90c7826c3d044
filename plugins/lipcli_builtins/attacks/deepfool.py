"""DeepFool (Moosavi-Dezfooli et al. 2016), batched over images: torchattacks' algorithm without its Python loop.

torchattacks' ``DeepFool`` attacks one image at a time with one backward pass per class, which takes hours
on CIFAR-100. This implementation makes the same steps for a whole batch: per step, one backward pass per
class over all images still classified correctly; an image stops as soon as it is misclassified. Each step
moves to the linearised boundary of the closest class, scaled by ``1 + overshoot`` and clipped to [0, 1],
exactly as torchattacks does, so the distances agree (tested). In l-inf the step uses the dual l1 norm and
the sign of the gradient.

Like torchattacks' DeepFool, this one often fails on images with saturated pixels (Fashion-MNIST's black
background): the box clips part of every step, so the iterates approach the boundary from the inside
and may never cross it. With ``box = true`` each step is solved inside the box instead (as ``min-norm``'s
start does), which removes that weakness.
"""

from __future__ import annotations

import torch
from torch import nn

from lipcli.api import Attack, box_projection, distance, margin_gradients


def linearised_distance(margins: torch.Tensor, gradients: torch.Tensor, norm: str) -> torch.Tensor:
    """``|f_k| / ||grad f_k||_*`` per image and class ``[B, K]``: the distance to each linearised boundary.

    A class whose margin has a zero gradient cannot be reached by a step: its distance is +inf.
    """
    flat = gradients.flatten(2)
    dual = flat.norm(p=2, dim=2) if norm == "l2" else flat.abs().sum(dim=2)
    return torch.where(dual > 0, margins.abs() / dual, torch.inf)


def deepfool_step(margin: torch.Tensor, gradient: torch.Tensor, norm: str) -> torch.Tensor:
    """The step onto one linearised boundary ``f + w . delta = 0``, ignoring the box (DeepFool's own)."""
    flat = gradient.flatten(1)
    view = (-1,) + (1,) * (gradient.dim() - 1)
    if norm == "l2":
        scale = margin.abs() / flat.norm(p=2, dim=1).pow(2)
        return scale.view(view) * gradient
    scale = margin.abs() / flat.abs().sum(dim=1)
    return scale.view(view) * gradient.sign()


def closest_in_box(
    x: torch.Tensor, targets: torch.Tensor, gradients: torch.Tensor, norm: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """(class column ``[B]``, step ``[B, ...]``): the smallest box-constrained step ``delta`` with
    ``gradients[:, k] . delta = targets[:, k]`` over the K columns, each solved by :func:`box_projection`.

    A class whose linearised boundary lies outside the box is never chosen. Where no class is reachable, the
    column is the closest ignoring the box and the step is NaN.
    """
    count, classes = targets.shape
    shape = x.shape[1:]
    steps = box_projection(
        x.unsqueeze(1).expand(count, classes, *shape).reshape(count * classes, *shape),
        gradients.reshape(count * classes, *shape), targets.reshape(-1), norm,
    ).view(count, classes, *shape)
    sizes = distance(steps.flatten(0, 1), norm).view(count, classes).nan_to_num(torch.inf)
    column = torch.where(
        torch.isfinite(sizes).any(1), sizes.argmin(1), linearised_distance(targets, gradients, norm).argmin(1)
    )
    return column, steps[torch.arange(count, device=x.device), column]


class DeepFool(Attack):
    """Batched DeepFool: ``steps`` iterations at most, ``overshoot`` applied at every step (torchattacks).

    ``candidates`` limits each step to the K highest-scoring other classes (0: every class, as torchattacks;
    K backward passes per step instead of C - 1). ``box = true`` solves each step inside [0, 1]^n
    (:func:`closest_in_box`) instead of clipping it afterwards, which removes the stall on saturated pixels;
    an image no class can be reached from inside the box takes the clipped step.
    """

    def __init__(self, steps: int = 50, overshoot: float = 0.02, candidates: int = 0, box: bool = False) -> None:
        if steps < 1 or overshoot < 0 or candidates < 0:
            raise ValueError("steps must be >= 1, overshoot >= 0 and candidates >= 0")
        self.steps, self.overshoot, self.candidates, self.box = steps, overshoot, candidates, box

    def run(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor, norm: str) -> torch.Tensor:
        current = images.clone()
        active = torch.arange(images.shape[0], device=images.device)
        for _ in range(self.steps):
            if active.numel() == 0:
                break
            x, y = current[active], labels[active]
            logits, _, margins, gradients = margin_gradients(model, x, y, self.candidates or None)
            fooled = logits.argmax(1) != y
            moved = self._step(x, margins, gradients, norm)
            current[active[~fooled]] = moved[~fooled]
            # A point the step leaves unchanged (a zero margin, or a step the box clips away) repeats itself at
            # every later step: stopping it changes no result and saves the steps torchattacks spends there.
            moving = (moved != x).flatten(1).any(1)
            active = active[~fooled & moving]
        return current

    def _step(self, x: torch.Tensor, margins: torch.Tensor, gradients: torch.Tensor, norm: str) -> torch.Tensor:
        """The next iterate, in [0, 1]; ``x`` itself where no class can be reached (zero gradients)."""
        pick = torch.arange(x.shape[0], device=x.device)
        inside = None
        if self.box:
            closest, inside = closest_in_box(x, -margins * (1 + self.overshoot), gradients, norm)
        else:
            closest = linearised_distance(margins, gradients, norm).argmin(dim=1)
        step = (1 + self.overshoot) * deepfool_step(margins[pick, closest], gradients[pick, closest], norm)
        if inside is not None:
            solved = torch.isfinite(inside.flatten(1)).all(1).view(-1, *(1,) * (x.dim() - 1))
            step = torch.where(solved, inside, step)
        moved = (x + step).clamp(0, 1)
        return torch.where(torch.isfinite(moved), moved, x)

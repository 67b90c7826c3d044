"""``apgd-ce`` and ``apgd-t``: Auto-PGD (Croce & Hein 2020, Algorithm 1), AutoAttack's two gradient attacks.

APGD is projected gradient ascent on a loss, with no step size to tune:

* the step starts at ``2 eps`` per image; at checkpoints ``w_j = ceil(p_j N)`` (``p_0 = 0``, ``p_1 = 0.22``,
  ``p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06)``) it is halved for the images where the loss rose in
  fewer than ``rho`` of the steps since the last checkpoint (condition 1), or where the step was not halved at
  the last checkpoint and the best loss has not risen since (condition 2); those images restart from their
  highest-loss point;
* each step moves by ``momentum`` (0.75) times the projected gradient step plus the rest times the last move.

``apgd-ce`` ascends the cross-entropy (the DLR loss with ``loss = "dlr"``). ``apgd-t`` ascends the targeted DLR
loss ``-(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2)`` towards each of the ``targets`` (9) highest-scoring other
classes in turn, each target only on the images not yet broken. Both keep, per image, an adversarial point
(misclassified, in the box, within ``eps`` by lipcli's own float64 measure), not merely the last iterate, and
drop broken images from the batch at once: the rest of the batch carries on with its own step sizes and
budgets (``eps`` is a tensor, one value per image).

As ``lipcli robust`` needs, they are :class:`lipcli.api.AttackAtBudget`; for ``lipcli curve`` they are also
minimal-distance attacks, their budget found per image by the shared bracket-and-bisect search
(:class:`lipcli_builtins.attacks.budgeted.BudgetSearch`).
"""

from __future__ import annotations

import torch
from torch import nn

from lipcli.api import NORMS, AttackAt, AttackAtBudget, at_least_float32, cross_entropy, distance, within_budget
from lipcli_builtins.attacks.budgeted import BudgetSearch

LOSSES = ("ce", "dlr")


def checkpoints(steps: int) -> list[int]:
    """The iterations ``w_j = ceil(p_j steps)`` after which the step size is checked (``0 < w_j < steps``).

    ``p_j`` is computed in hundredths, so that no float rounding moves a checkpoint (0.41 * 100 is 41).
    """
    percents = [0, 22]
    while percents[-1] + max(percents[-1] - percents[-2] - 3, 6) < 100:
        percents.append(percents[-1] + max(percents[-1] - percents[-2] - 3, 6))
    return sorted({-(-p * steps // 100) for p in percents[1:]} - {0, steps})


def dlr_loss(logits: torch.Tensor, labels: torch.Tensor, targets: torch.Tensor | None = None) -> torch.Tensor:
    """Per-example DLR loss (Croce & Hein 2020), untargeted or towards ``targets``; larger is closer to fooling.

    Scale-invariant in the logits, so a model that inflates its logits (as a saturated head can) does not
    flatten it. With fewer than four classes the missing ranks repeat the lowest one.
    """
    logits = at_least_float32(logits)
    ordered = logits.sort(dim=1, descending=True).values
    lowest = logits.shape[1] - 1
    own = logits.gather(1, labels[:, None]).squeeze(1)
    if targets is None:
        other = logits.scatter(1, labels[:, None], -torch.inf).amax(dim=1)
        return -(own - other) / (ordered[:, 0] - ordered[:, min(2, lowest)] + 1e-12)
    target = logits.gather(1, targets[:, None]).squeeze(1)
    spread = ordered[:, 0] - (ordered[:, min(2, lowest)] + ordered[:, min(3, lowest)]) / 2
    return -(own - target) / (spread + 1e-12)


def _loss_and_gradient(
    model: nn.Module, points: torch.Tensor, labels: torch.Tensor, loss: str, targets: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(per-example loss, logits, gradient of the summed loss) at ``points``, all detached."""
    with torch.enable_grad():
        x = points.detach().requires_grad_(True)
        logits = model(x)
        values = cross_entropy(logits, labels) if loss == "ce" else dlr_loss(logits, labels, targets)
        (gradient,) = torch.autograd.grad(values.sum(), x)
    return values.detach(), logits.detach(), gradient.detach()


def _column(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return values.view((-1,) + (1,) * (like.dim() - 1))


def _project(points: torch.Tensor, images: torch.Tensor, radius: torch.Tensor, norm: str) -> torch.Tensor:
    """``points`` moved into the eps-ball around ``images`` and then into [0, 1] (clipping never leaves the ball:
    each coordinate only moves towards the image's own, which lies in the box)."""
    if norm == "linf":
        return torch.maximum(torch.minimum(points, images + radius), images - radius).clamp(0, 1)
    delta = points - images
    size = _column(delta.flatten(1).norm(dim=1), delta)
    return (images + delta * torch.clamp(radius / size.clamp_min(1e-12), max=1.0)).clamp(0, 1)


def _ascent(gradient: torch.Tensor, norm: str) -> torch.Tensor:
    """The steepest-ascent direction of unit size in ``norm``: sign(g) for l-inf, g / ||g||_2 for l2."""
    if norm == "linf":
        return gradient.sign()
    return gradient / _column(gradient.flatten(1).norm(dim=1).clamp_min(1e-12), gradient)


def _random_start(images: torch.Tensor, radius: torch.Tensor, norm: str) -> torch.Tensor:
    """A point on the eps-sphere (l2: uniform direction; l-inf: uniform noise scaled to l-inf norm eps), clipped."""
    noise = 2 * torch.rand_like(images) - 1 if norm == "linf" else torch.randn_like(images)
    size = noise.flatten(1).abs().amax(dim=1) if norm == "linf" else noise.flatten(1).norm(dim=1)
    return (images + radius * noise / _column(size.clamp_min(1e-12), noise)).clamp(0, 1)


def apgd(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    norm: str,
    eps: torch.Tensor,
    *,
    loss: str = "ce",
    targets: torch.Tensor | None = None,
    steps: int = 100,
    rho: float = 0.75,
    momentum: float = 0.75,
    random_start: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One run of APGD (Algorithm 1) on a batch: (points ``[B, ...]``, found ``[B]`` bool).

    ``points[i]`` is the first iterate that the model misclassifies within ``eps[i]`` (float64 ``[B]``) of
    ``images[i]``, or the clean image where ``found[i]`` is False. ``targets`` (with ``loss = "dlr"``) makes
    the DLR loss targeted.
    """
    marks = set(checkpoints(steps))
    result = images.clone()
    found = torch.zeros(images.shape[0], dtype=torch.bool, device=images.device)
    radius = _column(eps.to(images.dtype), images)
    state = {
        "index": torch.arange(images.shape[0], device=images.device),
        "image": images, "label": labels, "radius": radius, "eps": eps.double(),
        "step": 2 * radius,
        "point": _random_start(images, radius, norm) if random_start else images.clone(),
    }
    if targets is not None:
        state["target"] = targets

    def evaluate() -> tuple[torch.Tensor, torch.Tensor]:
        """(loss, gradient) at the points; images the points break are recorded and leave the batch."""
        value, logits, gradient = _loss_and_gradient(
            model, state["point"], state["label"], loss, state.get("target")
        )
        within = within_budget(distance(state["point"].double() - state["image"].double(), norm), state["eps"])
        broken = (logits.argmax(1) != state["label"]) & within
        if broken.any():
            result[state["index"][broken]] = state["point"][broken]
            found[state["index"][broken]] = True
            kept = ~broken
            for key in state:
                state[key] = state[key][kept]
            value, gradient = value[kept], gradient[kept]
        return value, gradient

    value, gradient = evaluate()
    state.update(
        previous=state["point"], value=value, gradient=gradient, best_point=state["point"], best_value=value,
        best_gradient=gradient, checked_value=value, halved=torch.ones_like(value, dtype=torch.bool),
        rises=torch.zeros_like(value, dtype=torch.int64),
    )
    last_mark = 0
    for iteration in range(steps):
        if state["index"].numel() == 0:
            break
        point, image, radius = state["point"], state["image"], state["radius"]
        moved = _project(point + state["step"] * _ascent(state["gradient"], norm), image, radius, norm)
        if iteration > 0:
            moved = _project(
                point + momentum * (moved - point) + (1 - momentum) * (point - state["previous"]), image, radius, norm
            )
        state["previous"], state["point"] = point, moved
        value, gradient = evaluate()
        state["rises"] += value > state["value"]
        state["value"], state["gradient"] = value, gradient
        better = value > state["best_value"]
        for key, new in (("best_point", state["point"]), ("best_value", value), ("best_gradient", gradient)):
            state[key] = torch.where(_column(better, new) if new.dim() > 1 else better, new, state[key])
        if iteration + 1 in marks:
            span = iteration + 1 - last_mark
            last_mark = iteration + 1
            halve = (state["rises"] < rho * span) | (~state["halved"] & (state["best_value"] <= state["checked_value"]))
            state["halved"], state["checked_value"] = halve, state["best_value"]
            state["rises"] = torch.zeros_like(state["rises"])
            wide = _column(halve, state["point"])
            state["step"] = torch.where(wide, state["step"] / 2, state["step"])
            state["point"] = torch.where(wide, state["best_point"], state["point"])
            state["gradient"] = torch.where(wide, state["best_gradient"], state["gradient"])
            state["value"] = torch.where(halve, state["best_value"], state["value"])
    return result, found


class APGD(BudgetSearch, AttackAtBudget):
    """APGD with the cross-entropy (or DLR) loss, ``restarts`` random starts; l2 and l-inf."""

    def __init__(
        self,
        steps: int = 100,
        restarts: int = 1,
        loss: str = "ce",
        rho: float = 0.75,
        momentum: float = 0.75,
        random_start: bool = True,
        bisect_steps: int = 10,
    ) -> None:
        """AutoAttack's standard settings are the defaults; ``bisect_steps`` is for the eps search only."""
        super().__init__(bisect_steps)
        if steps < 1 or restarts < 1:
            raise ValueError("steps and restarts must be >= 1")
        if loss not in LOSSES:
            raise ValueError(f"loss must be one of {', '.join(LOSSES)}, not {loss!r}")
        if not (0 < rho <= 1 and 0 < momentum <= 1):
            raise ValueError("need 0 < rho <= 1 and 0 < momentum <= 1")
        if restarts > 1 and not random_start:
            raise ValueError("restarts > 1 needs random_start: every restart would repeat the first")
        self.steps, self.restarts, self.loss = steps, restarts, loss
        self.rho, self.momentum, self.random_start = rho, momentum, random_start

    def run_at(
        self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor, norm: str, eps: torch.Tensor
    ) -> torch.Tensor:
        if norm not in NORMS:
            raise ValueError(f"unknown norm {norm!r}; use one of {', '.join(NORMS)}")
        if eps.shape != (images.shape[0],):
            raise ValueError(f"eps must have one value per image, got shape {tuple(eps.shape)}")
        result = images.clone()
        found = torch.zeros(images.shape[0], dtype=torch.bool, device=images.device)
        for targets in self._target_rounds(model, images, labels):
            for _ in range(self.restarts):
                index = (~found).nonzero().flatten()
                if index.numel() == 0:
                    return result
                points, broken = apgd(
                    model, images[index], labels[index], norm, eps[index].double(), loss=self.loss,
                    targets=None if targets is None else targets[index], steps=self.steps, rho=self.rho,
                    momentum=self.momentum, random_start=self.random_start,
                )
                result[index[broken]] = points[broken]
                found[index[broken]] = True
        return result

    def _target_rounds(
        self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor
    ) -> list[torch.Tensor | None]:
        """The target classes of each round: one untargeted round here."""
        return [None]

    def attack_at(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor, norm: str) -> AttackAt:
        def attack_at(index: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
            return self.run_at(model, images[index], labels[index], norm, eps.double())

        return attack_at


class APGDT(APGD):
    """APGD-T: the targeted DLR loss towards each of the ``targets`` highest-scoring other classes in turn."""

    def __init__(
        self,
        steps: int = 100,
        targets: int = 9,
        restarts: int = 1,
        rho: float = 0.75,
        momentum: float = 0.75,
        random_start: bool = True,
        bisect_steps: int = 10,
    ) -> None:
        """AutoAttack's standard version: 9 targets, 100 steps and one start each."""
        super().__init__(steps, restarts, "dlr", rho, momentum, random_start, bisect_steps)
        if targets < 1:
            raise ValueError("targets must be >= 1")
        self.targets = targets

    def _target_rounds(
        self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor
    ) -> list[torch.Tensor | None]:
        """The ``targets`` highest-scoring classes other than the label at the clean images, best first."""
        with torch.no_grad():
            others = model(images).scatter(1, labels[:, None], -torch.inf)
        order = others.topk(min(self.targets, others.shape[1] - 1), dim=1).indices
        return list(order.unbind(1))

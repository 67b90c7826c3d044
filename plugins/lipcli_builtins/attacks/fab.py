"""``fab-t`` and ``fab``: the Fast Adaptive Boundary attack (Croce & Hein 2020), batched over images; l2 and l-inf.

FAB is natively minimum-norm. Per step it linearises the margin ``f = z_t - z_y`` at the current point p,
projects both p and the clean image x onto the linearised boundary inside the box [0, 1]^n (exactly,
:func:`lipcli.api.box_projection`), and moves to ``(1 - a)(p + eta d_p) + a (x + eta d_x)`` with
``a = min(|d_p| / (|d_p| + |d_x|), alpha_max)``; a misclassified point is recorded and pulled back towards x by
``beta``, so the walk follows the boundary towards x. Where the box cannot reach the linearised boundary, the
step goes to the box corner that comes closest, as FAB's own projections do.

* ``fab-t`` (FAB-T, AutoAttack's member): one walk per target class, the ``targets`` highest-scoring other
  classes at x in turn (9 in AutoAttack), each ``restarts`` times (1 in AutoAttack); restart 0 starts at x, later
  ones at a random point at half the smallest of the best distance found and ``eps``. Per step: one forward and
  one backward pass for the linearisation, one forward pass to classify the new point.
* ``fab``: untargeted, the closest linearised boundary over every class at each step (C - 1 backward passes).

As a minimal-distance attack (``run``) every image gets every walk and the closest adversarial found is kept. At a
budget (``run_at``), an image is broken once its point lies within ``eps``: it leaves the walk then, and later
targets and restarts attack only the images still robust, as AutoAttack does.

One addition to the published algorithm: the overshoot ``eta`` keeps FAB's iterates about 0.5 % outside the
boundary (on an affine model it never gets closer), so each walk's best point is finished by a bisection on the
segment from x (``bisect_steps`` forward passes; for ``run_at`` only where the point is still farther than
``eps``). It only ever moves a point closer, and on an affine model it makes the distance exact to about
``2^-bisect_steps`` (relative).
"""

from __future__ import annotations

import torch
from torch import nn

from lipcli.api import Attack, AttackAtBudget, box_projection, distance, largest_distance, margin_gradients
from lipcli_builtins.attacks.deepfool import linearised_distance
from lipcli_builtins.attacks.min_norm import segment_bisection


class FAB(Attack, AttackAtBudget):
    """FAB, targeted over the ``targets`` highest other classes (FAB-T), or untargeted with ``targets = 0``."""

    norms = ("l2", "linf")

    def __init__(
        self,
        targets: int = 9,
        steps: int = 100,
        restarts: int = 1,
        alpha_max: float = 0.1,
        eta: float = 1.05,
        beta: float = 0.9,
        bisect_steps: int = 20,
    ) -> None:
        if targets < 0 or steps < 1 or restarts < 1 or bisect_steps < 0:
            raise ValueError("need targets >= 0, steps >= 1, restarts >= 1 and bisect_steps >= 0")
        if not (0 <= alpha_max <= 1 and 0 < beta <= 1 and eta >= 1):
            raise ValueError("need 0 <= alpha_max <= 1, 0 < beta <= 1 and eta >= 1")
        self.targets, self.steps, self.restarts = targets, steps, restarts
        self.alpha_max, self.eta, self.beta, self.bisect_steps = alpha_max, eta, beta, bisect_steps

    def run(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor, norm: str) -> torch.Tensor:
        return self._search(model, images, labels, norm, None)[0]

    def run_at(
        self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor, norm: str, eps: torch.Tensor
    ) -> torch.Tensor:
        eps = eps.to(images.device, torch.float64)
        best, best_distance = self._search(model, images, labels, norm, eps)
        return torch.where(_view(best_distance <= eps, images), best, images)

    def _search(
        self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor, norm: str, eps: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(best adversarial per image, its float64 distance; the clean image and +inf where none was found)."""
        if norm not in self.norms:
            raise ValueError(f"FAB supports {', '.join(self.norms)}, not {norm!r}")
        best = images.clone()
        best_distance = torch.full((images.shape[0],), torch.inf, dtype=torch.float64, device=images.device)
        limit = eps if eps is not None else torch.full_like(best_distance, largest_distance(norm, images[0].numel()))
        for classes in self._class_columns(model, images, labels):
            for restart in range(self.restarts):
                todo = _robust(best_distance, eps)
                if todo.numel() == 0:
                    break
                x = images[todo]
                start = x if restart == 0 else _random_start(x, torch.minimum(best_distance, limit)[todo] / 2, norm)
                found, found_distance = self._walk(
                    model, x, labels[todo], norm, None if classes is None else classes[todo], start,
                    None if eps is None else eps[todo],
                )
                found, found_distance = self._finish(model, x, labels[todo], norm, found, found_distance,
                                                     None if eps is None else eps[todo])
                better = found_distance < best_distance[todo]
                best[todo[better]], best_distance[todo[better]] = found[better], found_distance[better]
        return best, best_distance

    def _finish(
        self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor, norm: str, found: torch.Tensor,
        found_distance: torch.Tensor, eps: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The walk's points moved closer by bisection on the segment from x, where one was found (and, with
        ``eps``, lies beyond it). Done per walk: another target's segment may cross a closer boundary first."""
        todo = _robust(found_distance, eps)
        todo = todo[torch.isfinite(found_distance[todo])]
        if todo.numel() and self.bisect_steps:
            closer = segment_bisection(model, images[todo], labels[todo], found[todo], self.bisect_steps)
            found[todo], found_distance[todo] = closer, distance(closer - images[todo], norm)
        return found, found_distance

    def _class_columns(
        self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor
    ) -> list[torch.Tensor | None]:
        """The target of each walk, ``[B, 1]`` per target (highest-scoring other class first); ``[None]`` (every
        class at every step) when untargeted."""
        if self.targets == 0:
            return [None]
        with torch.no_grad():
            others = model(images).scatter(1, labels[:, None], -torch.inf)
        order = others.topk(min(self.targets, others.shape[1] - 1), dim=1).indices
        return list(order.split(1, dim=1))

    def _walk(
        self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor, norm: str,
        classes: torch.Tensor | None, start: torch.Tensor, eps: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """FAB's ``steps`` iterations from ``start``: (closest misclassified point, float64 distance; the clean image
        and +inf where none). With ``eps``, an image stops once its point lies within it."""
        best = images.clone()
        best_distance = torch.full((images.shape[0],), torch.inf, dtype=torch.float64, device=images.device)
        point = start.clone()
        active = torch.arange(images.shape[0], device=images.device)
        for _ in range(self.steps):
            x, y, p = images[active], labels[active], point[active]
            _, _, margins, gradients = margin_gradients(model, p, y, None if classes is None else classes[active])
            pick = torch.arange(active.numel(), device=images.device)
            column = linearised_distance(margins, gradients, norm).argmin(1)
            w, margin = gradients[pick, column], margins[pick, column]
            # The linearised boundary {u : margin + w . (u - p) = 0}, reached from p and from x.
            step_p = _step_towards(p, w, -margin, norm)
            step_x = _step_towards(x, w, -margin - (w * (x - p)).flatten(1).sum(1), norm)
            size_p = distance(step_p, norm).clamp_min(1e-8)
            size_x = distance(step_x, norm).clamp_min(1e-8)
            alpha = _view((size_p / (size_p + size_x)).clamp(max=self.alpha_max).to(images.dtype), p)
            moved = ((1 - alpha) * (p + self.eta * step_p) + alpha * (x + self.eta * step_x)).clamp(0, 1).detach()
            with torch.no_grad():
                fooled = model(moved).argmax(1) != y
            measured = torch.where(fooled, distance(moved - x, norm), torch.inf)
            better = measured < best_distance[active]
            best[active[better]], best_distance[active[better]] = moved[better], measured[better]
            point[active] = torch.where(_view(fooled, p), x + self.beta * (moved - x), moved)
            if eps is not None:
                active = active[~(best_distance[active] <= eps[active])]
                if active.numel() == 0:
                    break
        return best, best_distance


class UntargetedFAB(FAB):
    """FAB with ``targets = 0`` by default: each step goes to the closest linearised boundary over all classes."""

    def __init__(
        self, targets: int = 0, steps: int = 100, restarts: int = 1, alpha_max: float = 0.1, eta: float = 1.05,
        beta: float = 0.9, bisect_steps: int = 20,
    ) -> None:
        super().__init__(targets, steps, restarts, alpha_max, eta, beta, bisect_steps)


def _view(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return values.view(-1, *(1,) * (like.dim() - 1))


def _robust(best_distance: torch.Tensor, eps: torch.Tensor | None) -> torch.Tensor:
    """Indices of the images still to attack: all of them without a budget, else those not yet within ``eps``."""
    still = torch.ones_like(best_distance, dtype=torch.bool) if eps is None else ~(best_distance <= eps)
    return still.nonzero().flatten()


def _step_towards(x: torch.Tensor, w: torch.Tensor, r: torch.Tensor, norm: str) -> torch.Tensor:
    """The smallest step ``delta`` inside the box with ``w . delta = r``; where the box cannot reach that
    hyperplane, the step to the corner of the box that comes closest to it (it maximises ``sign(r) w . delta``)."""
    step = box_projection(x, w, r, norm)
    reached = _view(torch.isfinite(step.flatten(1)).all(1), x)
    towards = w * _view(r.sign().to(w.dtype), w)
    corner = torch.where(towards > 0, 1 - x, torch.where(towards < 0, -x, torch.zeros_like(x)))
    return torch.where(reached, step, corner)


def _random_start(images: torch.Tensor, radius: torch.Tensor, norm: str) -> torch.Tensor:
    """A random point at distance ``radius`` (float64 ``[B]``) from each image, clipped to the box (FAB's
    restarts: uniform direction in l-inf, Gaussian in l2)."""
    if norm == "linf":
        direction = torch.rand_like(images) * 2 - 1
    else:
        direction = torch.randn_like(images)
    direction = direction / _view(distance(direction, norm).clamp_min(1e-12).to(images.dtype), images)
    return (images + _view(radius.to(images.dtype), images) * direction).clamp(0, 1)

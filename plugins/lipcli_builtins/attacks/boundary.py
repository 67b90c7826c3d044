"""The Boundary attack (Brendel, Rauber, Bethge 2018): decision-based, batched over images.

It sees only the model's predicted labels. Start from a misclassified blend of the image with uniform noise
(the smallest blend found by bisection); then, per step, propose a random step orthogonal to the direction
to the clean image (``spherical_step`` times the current distance), put it back on the sphere around the
image, and step ``source_step`` of the distance towards the image. A proposal is kept only if it is
misclassified and closer. Both step sizes adapt per image every ``adapt_every`` steps from the success rates
of the orthogonal proposals (target 20-50 %) and of the full proposals, as in the paper.

Queries per image: at most ``init_trials`` (noise draws) + ``init_bisect`` (blend bisection) + 2 per step
(the orthogonal proposal and the full proposal are classified in one batch): 10,125 with the defaults
(5,000 steps, the paper's budget). Every image of a batch runs every step.

Randomness: the draws come from a generator of the images' device seeded with torch's current seed
(``torch.initial_seed()``) plus the ``seed`` option. lipcli sets torch's seed for each (attack, batch) from
``--seed`` (:mod:`lipcli.evaluation.seeding`), so ``--seed`` governs the attack and ``seed`` is an offset for
trying other draws; called directly, two runs after the same ``torch.manual_seed`` draw alike, and the
attack leaves torch's own generators untouched.
"""

from __future__ import annotations

import torch
from torch import nn

from lipcli.api import Attack


class BoundaryAttack(Attack):
    """Decision-based l2 attack using labels only; ``steps`` proposals per image."""

    norms = ("l2",)
    decision_based = True

    def __init__(
        self,
        steps: int = 5000,
        spherical_step: float = 0.01,
        source_step: float = 0.01,
        step_adaptation: float = 1.5,
        adapt_every: int = 10,
        init_trials: int = 100,
        init_bisect: int = 25,
        seed: int = 0,
    ) -> None:
        if steps < 0 or adapt_every < 1 or init_trials < 1 or init_bisect < 0:
            raise ValueError("need steps >= 0, adapt_every >= 1, init_trials >= 1, init_bisect >= 0")
        if not (0 < spherical_step < 1 and 0 < source_step < 1 and step_adaptation > 1):
            raise ValueError("need 0 < spherical_step, source_step < 1 and step_adaptation > 1")
        self.steps, self.spherical_step, self.source_step = steps, spherical_step, source_step
        self.step_adaptation, self.adapt_every = step_adaptation, adapt_every
        self.init_trials, self.init_bisect, self.seed = init_trials, init_bisect, seed

    @torch.no_grad()
    def run(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor, norm: str) -> torch.Tensor:
        generator = torch.Generator(device=images.device).manual_seed((torch.initial_seed() + self.seed) % 2**64)
        adversarial, found = self._start(model, images, labels, generator)
        self._walk(model, images, labels, adversarial, found, generator)
        return adversarial

    def _start(
        self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """A misclassified blend ``(1 - t) x + t u`` of each image with uniform noise, t as small as found."""
        noise = images.clone()
        found = torch.zeros(images.shape[0], dtype=torch.bool, device=images.device)
        for _ in range(self.init_trials):
            todo = (~found).nonzero().flatten()
            if todo.numel() == 0:
                break
            draw = torch.rand(images[todo].shape, generator=generator, device=images.device, dtype=images.dtype)
            fooled = model(draw).argmax(1) != labels[todo]
            noise[todo[fooled]] = draw[fooled]
            found[todo[fooled]] = True
        view = (-1,) + (1,) * (images.dim() - 1)
        low = torch.zeros(images.shape[0], device=images.device, dtype=images.dtype)
        high = torch.ones_like(low)
        best = noise.clone()
        for _ in range(self.init_bisect):
            middle = (low + high) / 2
            blend = images + middle.view(view) * (noise - images)
            fooled = (model(blend).argmax(1) != labels) & found
            best[fooled] = blend[fooled]
            high = torch.where(fooled, middle, high)
            low = torch.where(fooled, low, middle)
        return torch.where(found.view(view), best, images), found

    def _walk(
        self,
        model: nn.Module,
        images: torch.Tensor,
        labels: torch.Tensor,
        adversarial: torch.Tensor,
        found: torch.Tensor,
        generator: torch.Generator,
    ) -> None:
        """Improve ``adversarial`` in place for the images where a start was ``found``."""
        count = images.shape[0]
        view = (-1,) + (1,) * (images.dim() - 1)
        spherical = torch.full((count,), self.spherical_step, device=images.device, dtype=images.dtype)
        source = torch.full_like(spherical, self.source_step)
        spherical_hits = torch.zeros_like(spherical)
        source_hits = torch.zeros_like(spherical)
        for step in range(1, self.steps + 1):
            to_image = images - adversarial
            radius = to_image.flatten(1).norm(dim=1).clamp_min(1e-12)
            unit = to_image / radius.view(view)
            eta = torch.randn(images.shape, generator=generator, device=images.device, dtype=images.dtype)
            eta -= (eta * unit).flatten(1).sum(1).view(view) * unit
            eta *= (spherical * radius / eta.flatten(1).norm(dim=1).clamp_min(1e-12)).view(view)
            on_sphere = adversarial + eta - images
            on_sphere = images + on_sphere * (radius / on_sphere.flatten(1).norm(dim=1)).view(view)
            candidate = images + (1 - source).view(view) * (on_sphere - images)
            on_sphere, candidate = on_sphere.clamp(0, 1), candidate.clamp(0, 1)
            predicted = model(torch.cat([on_sphere, candidate])).argmax(1)
            sphere_ok = (predicted[:count] != labels) & found
            candidate_ok = (predicted[count:] != labels) & found
            closer = (candidate - images).flatten(1).norm(dim=1) < radius
            accept = candidate_ok & closer
            adversarial[accept] = candidate[accept]
            spherical_hits += sphere_ok.to(spherical.dtype)
            source_hits += (candidate_ok & sphere_ok).to(spherical.dtype)
            if step % self.adapt_every == 0:
                spherical, source = self._adapt(spherical, source, spherical_hits, source_hits)
                spherical_hits.zero_()
                source_hits.zero_()

    def _adapt(
        self, spherical: torch.Tensor, source: torch.Tensor, spherical_hits: torch.Tensor, source_hits: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Orthogonal success above 50 % grows both steps, below 20 % shrinks them; the source step also
        follows the success of full proposals among successful orthogonal ones."""
        factor = self.step_adaptation
        spherical_rate = spherical_hits / self.adapt_every
        source_rate = torch.where(spherical_hits > 0, source_hits / spherical_hits.clamp_min(1), 0.0)
        scale = torch.where(spherical_rate > 0.5, factor, torch.where(spherical_rate < 0.2, 1 / factor, 1.0))
        spherical = (spherical * scale).clamp(1e-6, 0.5)
        source = source * scale
        source_scale = torch.where(source_rate > 0.5, factor, torch.where(source_rate < 0.2, 1 / factor, 1.0))
        source = (source * source_scale).clamp(1e-6, 0.5)
        return spherical, source

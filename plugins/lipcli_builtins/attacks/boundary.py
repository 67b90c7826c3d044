"""The Boundary attack (Brendel, Rauber, Bethge 2018): decision-based, batched over images.

It sees only the model's predicted labels. Start from a misclassified blend of the image with uniform noise
(the smallest blend found by bisection); then, per step, propose a random step orthogonal to the direction
to the clean image (``spherical_step`` times the current distance), put it back on the sphere around the
image, and step ``source_step`` of the distance towards the image. The full proposal is classified every
step and kept if misclassified and closer. The orthogonal proposal only feeds the step-size statistics, so
(as in foolbox 3) it is classified every ``check_every`` steps only: 1.2 queries per step instead of 2, 1.67
times the steps for a budget. Both step sizes adapt per image from its last ``window`` checks, with foolbox 3's
rule: orthogonal success above 50 % grows both, below 20 % shrinks both (the paper's rule); success of the
full proposal above 25 % grows the source step, below 10 % shrinks it (the paper conditions this rate on the
orthogonal success, foolbox does not); a rate that changed a step starts a new window. A short window adapts
within a few dozen steps, which a budget of 1,000 queries needs: there foolbox's windows (100 checks of every
10th step for the orthogonal rate, 30 for the full one) change the orthogonal step never and the source step
at most twice. On 50 images of a tanh-head Fashion-MNIST CNN at 10,000 queries, windows of 5 checks every 5th
step gave geometric-mean distances of 0.498 and 0.497 (two seeds); windows of 10 every 10th step 0.513; of 30
every 10th, 0.522; and foolbox's two windows (100 and 30, a temporary edit) 0.545, where foolbox's own attack reached
0.532. ``benchmarks/bench_decision_attacks.py --boundary-options '{"window": 10, "check_every": 10}'`` repeats
the single-window runs.

Queries per image: at most ``init_trials`` (noise draws) + ``init_bisect`` (blend bisection) + ``steps`` +
``steps // check_every``: 6,125 with the defaults (5,000 steps, the paper's budget). Every image of a batch
runs every step; each classification of the batch is split into model calls of at most ``chunk`` inputs (by
default 32 on a CPU and 8192 on a GPU, never fewer than an exported program with a fixed batch takes;
:mod:`lipcli_builtins.attacks.chunked`).

Randomness: the draws come from a generator of the images' device seeded with torch's current seed
(``torch.initial_seed()``) plus the ``seed`` option. lipcli sets torch's seed for each (attack, batch) from
``--seed`` (:mod:`lipcli.evaluation.seeding`), so ``--seed`` governs the attack and ``seed`` is an offset for
trying other draws; called directly, two runs after the same ``torch.manual_seed`` draw alike, and the
attack leaves torch's own generators untouched.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from lipcli.api import Attack
from lipcli_builtins.attacks.chunked import Chunked, call_size

Classify = Callable[[torch.Tensor], torch.Tensor]
"""Points to the model's predicted labels (the attack's only view of the model)."""


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
        check_every: int = 5,
        window: int = 5,
        init_trials: int = 100,
        init_bisect: int = 25,
        seed: int = 0,
        chunk: int | None = None,
    ) -> None:
        if steps < 0 or check_every < 1 or window < 1 or init_trials < 1 or init_bisect < 0:
            raise ValueError(f"need steps >= 0, check_every >= 1, window >= 1, init_trials >= 1, init_bisect >= 0; got "
                             f"{steps}, {check_every}, {window}, {init_trials}, {init_bisect}")
        if chunk is not None and chunk < 1:
            raise ValueError(f"need chunk >= 1, got {chunk}")
        if not (0 < spherical_step < 1 and 0 < source_step < 1 and step_adaptation > 1):
            raise ValueError("need 0 < spherical_step, source_step < 1 and step_adaptation > 1")
        self.steps, self.spherical_step, self.source_step = steps, spherical_step, source_step
        self.step_adaptation, self.check_every, self.window = step_adaptation, check_every, window
        self.init_trials, self.init_bisect, self.seed, self.chunk = init_trials, init_bisect, seed, chunk

    @torch.no_grad()
    def run(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor, norm: str) -> torch.Tensor:
        generator = torch.Generator(device=images.device).manual_seed((torch.initial_seed() + self.seed) % 2**64)
        chunked = Chunked(model, call_size(model, images.device, self.chunk))

        def classify(points: torch.Tensor) -> torch.Tensor:
            return chunked(points).argmax(1)

        adversarial, found = self._start(classify, images, labels, generator)
        self._walk(classify, images, labels, adversarial, found, generator)
        return adversarial

    def _start(
        self, classify: Classify, images: torch.Tensor, labels: torch.Tensor, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """A misclassified blend ``(1 - t) x + t u`` of each image with uniform noise, t as small as found."""
        noise = images.clone()
        found = torch.zeros(images.shape[0], dtype=torch.bool, device=images.device)
        for _ in range(self.init_trials):
            todo = (~found).nonzero().flatten()
            if todo.numel() == 0:
                break
            draw = torch.rand(images[todo].shape, generator=generator, device=images.device, dtype=images.dtype)
            fooled = classify(draw) != labels[todo]
            noise[todo[fooled]] = draw[fooled]
            found[todo[fooled]] = True
        view = (-1,) + (1,) * (images.dim() - 1)
        low = torch.zeros(images.shape[0], device=images.device, dtype=images.dtype)
        high = torch.ones_like(low)
        best = noise.clone()
        for _ in range(self.init_bisect):
            middle = (low + high) / 2
            blend = images + middle.view(view) * (noise - images)
            fooled = (classify(blend) != labels) & found
            best[fooled] = blend[fooled]
            high = torch.where(fooled, middle, high)
            low = torch.where(fooled, low, middle)
        return torch.where(found.view(view), best, images), found

    def _walk(
        self,
        classify: Classify,
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
        # the last ``window`` checks per image (1 success, 0 failure, NaN not yet seen since the last change)
        sphere_log = torch.full((self.window, count), float("nan"), device=images.device, dtype=images.dtype)
        source_log = sphere_log.clone()
        for step in range(1, self.steps + 1):
            to_image = images - adversarial
            radius = to_image.flatten(1).norm(dim=1).clamp_min(1e-12)
            unit = to_image / radius.view(view)
            eta = torch.randn(images.shape, generator=generator, device=images.device, dtype=images.dtype)
            eta -= (eta * unit).flatten(1).sum(1).view(view) * unit
            eta *= (spherical * radius / eta.flatten(1).norm(dim=1).clamp_min(1e-12)).view(view)
            on_sphere = adversarial + eta - images
            on_sphere = images + on_sphere * (radius / on_sphere.flatten(1).norm(dim=1)).view(view)
            candidate = (images + (1 - source).view(view) * (on_sphere - images)).clamp(0, 1)
            candidate_ok = (classify(candidate) != labels) & found
            accept = candidate_ok & ((candidate - images).flatten(1).norm(dim=1) < radius)
            adversarial.copy_(torch.where(accept.view(view), candidate, adversarial))  # no host sync per step
            if step % self.check_every == 0:
                sphere_ok = (classify(on_sphere.clamp(0, 1)) != labels) & found
                row = (step // self.check_every - 1) % self.window
                sphere_log[row], source_log[row] = sphere_ok.to(images.dtype), candidate_ok.to(images.dtype)
                spherical, source = self._adapt(spherical, source, sphere_log, source_log)

    def _adapt(
        self, spherical: torch.Tensor, source: torch.Tensor, sphere_log: torch.Tensor, source_log: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """New step sizes for the images whose logs are full and whose success rate left its band; their logs
        are cleared, so the next change waits for ``window`` checks at the new sizes."""
        sphere_scale = self._rescale(sphere_log, 0.5, 0.2)
        spherical, source = (spherical * sphere_scale).clamp(1e-6, 0.5), source * sphere_scale
        return spherical, (source * self._rescale(source_log, 0.25, 0.1)).clamp(1e-6, 0.5)

    def _rescale(self, log: torch.Tensor, high: float, low: float) -> torch.Tensor:
        """Per image: ``step_adaptation`` where the full log's success rate is above ``high``, its inverse
        where below ``low``, else 1; the logs of changed images are cleared."""
        full = ~log.isnan().any(0)
        rate = log.nan_to_num().mean(0)
        grow, shrink = full & (rate > high), full & (rate < low)
        log.copy_(torch.where(grow | shrink, float("nan"), log))
        factor = torch.full_like(rate, self.step_adaptation)
        return torch.where(grow, factor, torch.where(shrink, 1 / factor, torch.ones_like(rate)))

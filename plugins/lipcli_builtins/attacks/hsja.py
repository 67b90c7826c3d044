"""HopSkipJump (Chen, Jordan, Wainwright 2020), l2: a decision-based attack, batched over images.

It sees only the model's predicted labels, and spends at most ``queries`` of them per image. Start from uniform
noise that the model misclassifies (at most ``init_trials`` draws) and bisect the segment from the image to it
down to the decision boundary. Then repeat, per image, while its budget lasts:

1. Estimate the direction of the boundary's normal at the current boundary point p from the signs of
   ``initial_samples * sqrt(t)`` random probes, at most ``max_samples`` (200), at radius
   ``delta = gamma * |p - x| / n`` (n the input size):
   the mean of the probe directions weighted by +1 (misclassified) or -1, minus their mean sign (a baseline
   that cuts the variance).
2. Step from p along that direction by ``|p - x| / sqrt(t)``, halved until the step lands on a misclassified
   input (geometric step sizes).
3. Bisect the segment from the image to the new point back down to the boundary, to a relative precision of
   ``gamma / n^1.5``.

Each round of probes, step sizes or bisection classifies the points of every image still working in one
model call, split into calls of at most ``chunk`` inputs: by default 32 on a CPU and 8192 on a GPU, and never
fewer than an exported program with a fixed batch takes (:mod:`lipcli_builtins.attacks.chunked` says why). Every image ends with its closest
misclassified point found; an image whose start was not found is returned unchanged (a failure).

Why ``max_samples`` is 200, not HopSkipJump's 10,000 (within 10,000 queries its 100 sqrt(t) growth peaks near
500): on 784 inputs that growth leaves about 27 steps, and the cap 48. At 1,000 queries it changes two of six. On 50
images of a tanh-head Fashion-MNIST CNN at 10,000 queries the median l2 distance was 0.648 uncapped, 0.663,
0.599 and 0.652 with caps of 100, 200 and 400, and 0.596-0.608 with 30-50 initial probes and caps of 150-300
(``benchmarks/bench_decision_attacks.py``); the median of 50 images moves by a few percent with such choices.
Probes drawn at half or a quarter of the resolution and upsampled (QEBA's subspace) were worse: 0.743 and 0.989.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from lipcli.api import Attack
from lipcli_builtins.attacks.chunked import Chunked, call_size

PROBES = 4096
"""Probes drawn per round of a normal estimate, over all images: bounds their memory; the draws, and so the
results, do not depend on ``chunk`` (or the device's default for it)."""


class _Budget:
    """The model behind a per-image query budget: classifies points of chosen images and counts, per image,
    every point it classifies. Only the predicted label leaves it."""

    def __init__(self, model: nn.Module, labels: torch.Tensor, queries: int) -> None:
        self.model, self.labels, self.queries = model, labels, queries
        self.spent = torch.zeros_like(labels)

    def left(self) -> torch.Tensor:
        return self.queries - self.spent

    def fooled(self, points: torch.Tensor, owners: torch.Tensor) -> torch.Tensor:
        """Boolean per point: the model misclassifies it; ``owners[k]`` is the image point k belongs to."""
        self.spent += torch.bincount(owners, minlength=len(self.labels))
        if (self.spent > self.queries).any():
            raise RuntimeError("hsja asked for more queries than its budget: a bug in the attack")
        return self.model(points).argmax(1) != self.labels[owners]


class HopSkipJump(Attack):
    """Decision-based l2 attack using labels only, at most ``queries`` model queries per image."""

    norms = ("l2",)
    decision_based = True

    def __init__(
        self,
        queries: int = 10000,
        initial_samples: int = 100,
        max_samples: int = 200,
        gamma: float = 1.0,
        init_trials: int = 100,
        chunk: int | None = None,
    ) -> None:
        if queries < 1 or initial_samples < 1 or max_samples < initial_samples or init_trials < 1:
            raise ValueError(f"need queries, initial_samples, init_trials >= 1 and max_samples ({max_samples}) >= "
                             f"initial_samples ({initial_samples}); raise max_samples too")
        if gamma <= 0 or (chunk is not None and chunk < 1):
            raise ValueError("need gamma > 0 and chunk >= 1")
        self.queries, self.initial_samples, self.max_samples = queries, initial_samples, max_samples
        self.gamma, self.init_trials, self.chunk = gamma, init_trials, chunk

    @torch.no_grad()
    def run(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor, norm: str) -> torch.Tensor:
        budget = _Budget(Chunked(model, call_size(model, images.device, self.chunk)), labels, self.queries)
        size = images[0].numel()
        tolerance = self.gamma / size**1.5
        noise, found = self._start(budget, images)
        rows = found.nonzero().flatten()
        best = images.clone()
        best[rows] = self._bisect(budget, images[rows], noise[rows], rows, tolerance)
        # the next round needs one probe, one step size and a full bisection
        reserve = 2 + math.ceil(math.log2(1 / tolerance))
        view = (-1,) + (1,) * (images.dim() - 1)
        for t in range(1, self.queries + 1):
            rows = (found & (budget.left() >= reserve)).nonzero().flatten()
            if rows.numel() == 0:
                break
            x, point = images[rows], best[rows]
            radius = (point - x).flatten(1).norm(dim=1)
            samples = (budget.left()[rows] - reserve + 1).clamp_max(
                min(int(self.initial_samples * math.sqrt(t)), self.max_samples))
            direction = self._normal(budget, point, rows, samples, self.gamma * radius / size)
            stepped = self._step(budget, point, direction, radius / math.sqrt(t), rows)
            moved = self._bisect(budget, x, stepped, rows, tolerance)
            closer = (moved - x).flatten(1).norm(dim=1) < radius
            best[rows] = torch.where(closer.view(view), moved, point)
        return best

    def _start(self, budget: _Budget, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(uniform noise the model misclassifies, whether one was found), per image."""
        noise = images.clone()
        found = torch.zeros(images.shape[0], dtype=torch.bool, device=images.device)
        for _ in range(self.init_trials):
            rows = (~found & (budget.left() > 0)).nonzero().flatten()
            if rows.numel() == 0:
                break
            draw = torch.rand(images[rows].shape, device=images.device, dtype=images.dtype)
            fooled = budget.fooled(draw, rows)
            noise[rows[fooled]] = draw[fooled]
            found[rows[fooled]] = True
        return noise, found

    @staticmethod
    def _bisect(
        budget: _Budget, x: torch.Tensor, adversarial: torch.Tensor, rows: torch.Tensor, tolerance: float
    ) -> torch.Tensor:
        """The misclassified end of a bracket of the boundary on each segment ``x -> adversarial``, ``tolerance``
        wide (as a share of the segment) or as narrow as the image's budget allows."""
        view = (-1,) + (1,) * (x.dim() - 1)
        low = torch.zeros(len(rows), device=x.device, dtype=x.dtype)
        high = torch.ones_like(low)
        while True:
            todo = ((high - low > tolerance) & (budget.left()[rows] > 0)).nonzero().flatten()
            if todo.numel() == 0:
                break
            middle = (low[todo] + high[todo]) / 2
            fooled = budget.fooled(_blend(x[todo], adversarial[todo], middle.view(view)), rows[todo])
            high[todo] = torch.where(fooled, middle, high[todo])
            low[todo] = torch.where(fooled, low[todo], middle)
        return _blend(x, adversarial, high.view(view))

    @staticmethod
    def _normal(
        budget: _Budget, point: torch.Tensor, rows: torch.Tensor, samples: torch.Tensor, delta: torch.Tensor
    ) -> torch.Tensor:
        """Unit estimate of the boundary's normal at each ``point`` (pointing to the misclassified side) from
        ``samples[i]`` sign probes at radius ``delta[i]``, streamed in rounds of at most :data:`PROBES` probes."""
        view = (-1,) + (1,) * (point.dim() - 1)
        signed = torch.zeros_like(point)  # sum of sign * direction
        directions = torch.zeros_like(point)  # sum of directions
        signs = torch.zeros_like(delta)  # sum of signs
        per_round = max(1, PROBES // len(rows))
        for first in range(0, int(samples.max()), per_round):
            count = min(per_round, int(samples.max()) - first)
            probe = torch.randn((len(rows), count, *point.shape[1:]), device=point.device, dtype=point.dtype)
            probe /= probe.flatten(2).norm(dim=2).clamp_min(1e-12).view(len(rows), count, *view[1:])
            points = (point[:, None] + delta.view(-1, 1, *view[1:]) * probe).clamp(0, 1)
            probe = (points - point[:, None]) / delta.view(-1, 1, *view[1:])  # the direction actually probed
            used = first + torch.arange(count, device=point.device) < samples[:, None]  # [A, count]
            owners = rows[:, None].expand(-1, count)[used]
            sign = torch.zeros(used.shape, device=point.device, dtype=point.dtype)
            sign[used] = budget.fooled(points[used], owners).to(point.dtype) * 2 - 1
            signed += (sign.view(*sign.shape, *view[1:]) * probe).sum(1)
            directions += (used.to(point.dtype).view(*used.shape, *view[1:]) * probe).sum(1)
            signs += sign.sum(1)
        mean_sign = signs / samples
        # with all probes on one side the baseline would cancel the estimate: HopSkipJump keeps it then
        baseline = torch.where(mean_sign.abs() == 1, 0.0, mean_sign)
        estimate = (signed - baseline.view(view) * directions) / samples.view(view)
        return estimate / estimate.flatten(1).norm(dim=1).clamp_min(1e-12).view(view)

    @staticmethod
    def _step(
        budget: _Budget, point: torch.Tensor, direction: torch.Tensor, size: torch.Tensor, rows: torch.Tensor
    ) -> torch.Tensor:
        """``point + s * direction`` (in the box) with ``s = size / 2^k`` for the smallest k that is misclassified;
        ``point`` itself where the budget runs out first."""
        view = (-1,) + (1,) * (point.dim() - 1)
        result = point.clone()
        pending = torch.ones(len(rows), dtype=torch.bool, device=point.device)
        size = size.clone()
        while True:
            todo = (pending & (budget.left()[rows] > 0) & (size > 0)).nonzero().flatten()
            if todo.numel() == 0:
                return result
            proposal = (point[todo] + size[todo].view(view) * direction[todo]).clamp(0, 1)
            fooled = budget.fooled(proposal, rows[todo])
            result[todo[fooled]] = proposal[fooled]
            pending[todo[fooled]] = False
            size[todo[~fooled]] /= 2


def _blend(x: torch.Tensor, adversarial: torch.Tensor, share: torch.Tensor) -> torch.Tensor:
    """``x + share (adversarial - x)``, kept in the box against rounding: what is classified is what is returned."""
    return (x + share * (adversarial - x)).clamp(0, 1)

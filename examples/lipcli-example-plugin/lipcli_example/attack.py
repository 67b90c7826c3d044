"""A decision-based attack built from lipcli's attack toolkit (``Attack`` and ``parameter_search``)."""

from __future__ import annotations

import torch
from torch import nn

from lipcli.api import Attack, distance, largest_distance, parameter_search


class RandomDirections(Attack):
    """For each of ``directions`` random unit directions d (in the attack norm), the smallest t with
    ``clip(x + t d)`` misclassified, found per image by lipcli's bracket-then-bisect search; the closest
    point over the directions is returned. It uses predicted labels only. A weak attack (random directions
    are rarely the worst ones), useful as a sanity baseline and as an example."""

    decision_based = True

    def __init__(self, directions: int = 20, bisect_steps: int = 12, seed: int = 0) -> None:
        if directions < 1 or bisect_steps < 0:
            raise ValueError("directions must be >= 1 and bisect_steps >= 0")
        self.directions, self.bisect_steps, self.seed = directions, bisect_steps, seed

    @torch.no_grad()
    def run(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor, norm: str) -> torch.Tensor:
        generator = torch.Generator(device=images.device).manual_seed(self.seed)
        view = (-1,) + (1,) * (images.dim() - 1)
        best = images.clone()
        best_distance = torch.full((images.shape[0],), torch.inf, dtype=torch.float64, device=images.device)
        for _ in range(self.directions):
            raw = torch.randn(images.shape, generator=generator, device=images.device, dtype=images.dtype)
            direction = raw.sign() if norm == "linf" else raw / raw.flatten(1).norm(dim=1).view(view)

            def along(index: torch.Tensor, size: torch.Tensor, direction: torch.Tensor = direction) -> torch.Tensor:
                return (images[index] + size.view(view) * direction[index]).clamp(0, 1)

            found = parameter_search(model, images, labels, norm, along, initial=largest_distance(norm, images[0].numel()) / 8,
                                     upper=largest_distance(norm, images[0].numel()), bisect_steps=self.bisect_steps)
            fooled = model(found).argmax(1) != labels
            measured = torch.where(fooled, distance(found - images, norm), torch.inf)
            better = measured < best_distance
            best[better], best_distance[better] = found[better], measured[better]
        return best

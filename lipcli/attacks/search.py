"""Fixed-budget attacks turned into minimal-distance attacks: a batched per-sample parameter search.

PGD, FGSM and the gradient attack succeed or fail at a given budget eps; CW at a given constant c. Every
image gets its own parameter: first a bracket (multiply or divide by ``grow`` until success and failure are
both seen), then bisection. Each round attacks only the images still searching, all in one batch. The
candidate kept per image is the successful one with the smallest *measured* distance in the norm asked for,
so a non-monotone attack cannot make the search report more than it found.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from lipcli.attacks.base import distance, in_box, is_misclassified

AttackAt = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""``attack_at(index, parameter)``: candidates for ``images[index]`` at per-image ``parameter`` values."""


def parameter_search(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    norm: str,
    attack_at: AttackAt,
    *,
    initial: float,
    upper: float,
    grow: float = 2.0,
    bracket_steps: int = 12,
    bisect_steps: int = 10,
) -> torch.Tensor:
    """The best adversarial found per image (the clean image where none), searching the parameter.

    Success must become likelier as the parameter grows (budgets, CW's constant); ``upper`` caps it.
    """
    device = images.device
    count = images.shape[0]
    low = torch.zeros(count, dtype=torch.float64, device=device)
    high = torch.full((count,), torch.inf, dtype=torch.float64, device=device)
    current = torch.full((count,), float(initial), dtype=torch.float64, device=device)
    best = images.clone()
    best_distance = torch.full((count,), torch.inf, dtype=torch.float64, device=device)

    def attempt(index: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        candidates = attack_at(index, values.to(images.dtype))
        success = is_misclassified(model, candidates, labels[index]) & in_box(candidates)
        measured = torch.where(success, distance(candidates - images[index], norm), torch.inf)
        better = measured < best_distance[index]
        best[index[better]] = candidates[better]
        best_distance[index[better]] = measured[better]
        return success

    for _ in range(bracket_steps):  # until each image has seen a success and a failure (or hit a bound)
        searching = (torch.isinf(high) & (low < upper)) | ((low == 0) & torch.isfinite(high))
        index = searching.nonzero().flatten()
        if index.numel() == 0:
            break
        values = current[index]
        success = attempt(index, values)
        high[index[success]] = values[success]
        low[index[~success]] = values[~success]
        current[index] = torch.where(success, values / grow, torch.clamp(values * grow, max=upper))
    for _ in range(bisect_steps):
        index = torch.isfinite(high).nonzero().flatten()
        if index.numel() == 0:
            break
        values = (low[index] + high[index]) / 2
        success = attempt(index, values)
        high[index[success]] = values[success]
        low[index[~success]] = values[~success]
    return best


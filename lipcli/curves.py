"""Error curves from per-image minimal adversarial distances (paper Section 5.1).

``C_err(eps)`` is the fraction of images whose distance is at most eps, so ``C_err(0)`` is the clean error
(misclassified images have distance 0) and failures (+inf) never count. The median distance is the
smallest eps with ``C_err(eps) >= 1/2``: +inf when fewer than half the images were broken.
"""

from __future__ import annotations

import math
from fractions import Fraction

import torch

DEFAULT_EPS = {"l2": ("0.1", "1.5"), "linf": ("8/255",)}
"""The paper's reporting points: l2 0.1 and 1.5, l-inf 8/255."""


def error_at(distances: torch.Tensor, eps: float) -> float:
    """``C_err(eps)``: the fraction of distances <= eps."""
    return float((distances <= eps).double().mean()) if distances.numel() else math.nan


def median_distance(distances: torch.Tensor) -> float:
    """The smallest eps with ``C_err(eps) >= 1/2`` (the ceil(N/2)-th smallest distance)."""
    if distances.numel() == 0:
        return math.nan
    ordered = distances.double().sort().values
    return float(ordered[math.ceil(distances.numel() / 2) - 1])


def default_eps(norm: str) -> list[tuple[str, float]]:
    """The paper's reporting points of ``norm`` (:data:`DEFAULT_EPS`), parsed."""
    return parse_eps(",".join(DEFAULT_EPS[norm]))


def parse_eps(text: str) -> list[tuple[str, float]]:
    """``"0.1,1.5"`` or ``"8/255"`` -> [(as written, value)]; fractions are exact (8/255 is 8/255)."""
    points = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        try:
            value = float(Fraction(item)) if "/" in item else float(item)
        except (ValueError, ZeroDivisionError):
            raise ValueError(f"not a number or fraction: {item!r}") from None
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"eps must be finite and >= 0, got {item!r}")
        points.append((item, value))
    return points


def curve_points(distances: torch.Tensor) -> tuple[list[float], list[float]]:
    """The step function ``C_err`` as (distance, error) pairs at each finite distance, for plotting."""
    ordered = distances.double().sort().values
    finite = ordered[torch.isfinite(ordered)]
    ranks = torch.arange(1, finite.numel() + 1, dtype=torch.float64) / max(distances.numel(), 1)
    return finite.tolist(), ranks.tolist()

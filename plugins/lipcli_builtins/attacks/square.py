"""``square``: the Square Attack (Andriushchenko, Croce, Flammarion & Hein 2020), score-based, batched over images.

It reads only the model's output scores and never a gradient (everything runs under ``torch.no_grad``), which
is why AutoAttack includes it: gradient masking cannot hide a model from it. Per image it keeps the best point
so far, the one with the smallest margin ``z_y - max_{j != y} z_j``, and each query tries one change of a random
square window of side ``s``; a change is kept when it lowers the margin or misclassifies the image.

* l-inf: the start is vertical stripes, ``x +- eps`` with one sign per column and channel. A proposal sets the
  window, per channel, to ``x + eps`` or ``x - eps``; a sign draw that would leave the point unchanged is drawn
  again, as in the authors' original code (on one channel this happens half the time once windows are one pixel,
  and each such query would be wasted).
* l2: the start is a centred 5 x 5 grid of squares, each holding the "centred squares" pattern (positive on one
  half, negative on the other, weights ``sum_{k >= ring} 1 / (k + 1)^2`` by distance ring from the centre) with a
  random sign per channel, scaled to norm ``eps``. A proposal moves the perturbation of a second random window
  into the first, adds a fresh pattern there, and rescales the whole perturbation to norm ``eps``.

The window side is ``s = round(sqrt(p h w))`` (at least 3 and odd in l2); ``p`` starts at ``p_init`` (0.8 in
AutoAttack) and is halved when the query count passes 10, 50, 200, 500, 1000, 2000, 4000, 6000 and 8000 out of
10,000, the published schedule, rescaled to the query budget as AutoAttack does.

Queries: one per image for the start, then at most ``queries``; an image stops at its first misclassified point,
which is what it returns, and only images not yet fooled are classified. Unlike AutoAttack's code, every image
draws its own window position (AutoAttack draws one per batch) and every position is possible (AutoAttack never
places a window on the last row or column).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from lipcli.api import AttackAtBudget, at_least_float32, distance, within_budget

HALVINGS = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)
"""Where ``p`` is halved, in queries out of 10,000 (the paper's schedule; rescaled to the budget)."""

REDRAWS = 10
"""At most this many new sign draws for an l-inf proposal that would not change the point (one suffices unless
``eps`` is below float32 resolution, where every draw changes nothing)."""


class SquareAttack(AttackAtBudget):
    """Square Attack at a fixed budget, l2 or l-inf: scores only, ``queries`` proposals per image at most.

    Not a minimal-distance attack: a per-image eps search would cost about 20 full runs (measured: 7 minutes for
    six 4 x 4 images at 5000 queries on two busy cores).
    """

    norms = ("l2", "linf")
    score_based = True

    def __init__(self, queries: int = 5000, p_init: float = 0.8) -> None:
        if queries < 0 or not 0 < p_init <= 1:
            raise ValueError("need queries >= 0 and 0 < p_init <= 1")
        self.queries, self.p_init = queries, p_init

    @torch.no_grad()
    def run_at(
        self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor, norm: str, eps: torch.Tensor
    ) -> torch.Tensor:
        if norm not in self.norms:
            raise ValueError(f"square supports {', '.join(self.norms)}, not {norm!r}")
        if images.dim() != 4:
            raise ValueError(f"square attacks images [B, C, H, W], got shape {tuple(images.shape)}")
        radius = eps.to(images.device, images.dtype).view(-1, 1, 1, 1)
        best = _stripes(images, radius) if norm == "linf" else _grid(images, radius)
        logits = model(best)
        best_margin = _margin(logits, labels)
        budget = eps.to(images.device, torch.float64)
        done = (logits.argmax(1) != labels) & within_budget(distance(best.double() - images.double(), norm), budget)
        active = (~done).nonzero().flatten()
        for query in range(self.queries):
            if active.numel() == 0:
                break
            side = self._side(query, images.shape[2], images.shape[3], norm)
            x, current = images[active], best[active]
            if norm == "linf":
                proposal = _linf_proposal(x, current, radius[active], side)
            else:
                proposal = _l2_proposal(x, current, radius[active], side)
            logits = model(proposal)
            margin = _margin(logits, labels[active])
            # lipcli's own rule decides when an image is done: a misclassified proposal rounded out of the
            # ball would count as a failure, so the image keeps searching
            inside = within_budget(distance(proposal.double() - x.double(), norm), budget[active])
            fooled = (logits.argmax(1) != labels[active]) & inside
            kept = (margin < best_margin[active]) | fooled
            best[active[kept]] = proposal[kept]
            best_margin[active[kept]] = margin[kept]
            active = active[~fooled]
        return best

    def _side(self, query: int, height: int, width: int, norm: str) -> int:
        """The window side at query number ``query`` (from 0), by the halving schedule of ``p``."""
        progress = int(query / self.queries * 10000)
        p = self.p_init / 2 ** sum(progress > mark for mark in HALVINGS)
        side = round(math.sqrt(p * height * width))
        if norm == "l2":
            side = max(side, 3)
            side += 1 - side % 2
        return max(1, min(side, height, width))


def _margin(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``z_y - max_{j != y} z_j`` per image: negative exactly when another class scores higher."""
    logits = at_least_float32(logits)
    true = logits.gather(1, labels[:, None]).squeeze(1)
    return true - logits.scatter(1, labels[:, None], -torch.inf).amax(1)


def _signs(*shape: int, like: torch.Tensor) -> torch.Tensor:
    """Independent random signs +-1 of ``shape``."""
    return torch.randint(0, 2, shape, device=like.device).to(like.dtype) * 2 - 1


def _random_windows(count: int, side: int, height: int, width: int, device: torch.device) -> tuple[
    torch.Tensor, torch.Tensor
]:
    """(rows ``[N, side]``, columns ``[N, side]``) of one uniformly placed square window per image."""
    span = torch.arange(side, device=device)
    top = torch.randint(0, height - side + 1, (count, 1), device=device)
    left = torch.randint(0, width - side + 1, (count, 1), device=device)
    return top + span, left + span


def _mask(rows: torch.Tensor, cols: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Boolean ``[N, 1, H, W]``: the window of each image."""
    in_rows = (torch.arange(height, device=rows.device)[None, :, None] == rows[:, None, :]).any(2)
    in_cols = (torch.arange(width, device=cols.device)[None, :, None] == cols[:, None, :]).any(2)
    return (in_rows[:, :, None] & in_cols[:, None, :])[:, None]


def _window_index(rows: torch.Tensor, cols: torch.Tensor, channels: int) -> tuple[torch.Tensor, ...]:
    """Advanced indices selecting each image's window as ``[N, C, side, side]``."""
    count = rows.shape[0]
    return (
        torch.arange(count, device=rows.device)[:, None, None, None],
        torch.arange(channels, device=rows.device)[None, :, None, None],
        rows[:, None, :, None],
        cols[:, None, None, :],
    )


def _stripes(images: torch.Tensor, radius: torch.Tensor) -> torch.Tensor:
    """The l-inf start: ``x +- eps`` in vertical stripes (one random sign per image, channel and column)."""
    count, channels, _, width = images.shape
    return (images + radius * _signs(count, channels, 1, width, like=images)).clamp(0, 1)


def _linf_proposal(x: torch.Tensor, current: torch.Tensor, radius: torch.Tensor, side: int) -> torch.Tensor:
    """``current`` with one random window set, per channel, to ``x + eps`` or ``x - eps`` (a change guaranteed)."""
    count, channels, height, width = x.shape
    window = _mask(*_random_windows(count, side, height, width, x.device), height, width)
    signs = _signs(count, channels, 1, 1, like=x)
    proposal = torch.where(window, (x + radius * signs).clamp(0, 1), current)
    for _ in range(REDRAWS):
        unchanged = (proposal == current).flatten(1).all(1)
        if not unchanged.any():
            break
        signs = torch.where(unchanged[:, None, None, None], _signs(count, channels, 1, 1, like=x), signs)
        proposal = torch.where(window, (x + radius * signs).clamp(0, 1), current)
    return proposal


def _rings(rows: int, cols: int, device: torch.device) -> torch.Tensor:
    """``[rows, cols]``: ``sum_{k >= ring} 1 / (k + 1)^2`` by Chebyshev ring around the cell ``(rows // 2,
    cols // 2)``, ``k`` below ``max(rows, cols) // 2 + 1``: nested squares, heaviest in the centre."""
    ring = torch.maximum(
        (torch.arange(rows, device=device) - rows // 2).abs()[:, None],
        (torch.arange(cols, device=device) - cols // 2).abs()[None, :],
    )
    weights = torch.arange(1, max(rows, cols) // 2 + 2, device=device, dtype=torch.float64).pow(-2)
    return weights.flip(0).cumsum(0).flip(0)[ring]


def _patterns(count: int, side: int, like: torch.Tensor) -> torch.Tensor:
    """``[count, 1, side, side]`` unit-l2 "centred squares" patterns: the top half positive, the bottom half
    negative, each one transposed with probability 1/2."""
    half = side // 2
    pattern = torch.cat([_rings(half, side, like.device), -_rings(side - half, side, like.device)])
    pattern = (pattern / pattern.norm()).to(like.dtype)
    flip = torch.rand(count, 1, 1, 1, device=like.device) < 0.5
    return torch.where(flip, pattern.T, pattern)


def _grid(images: torch.Tensor, radius: torch.Tensor) -> torch.Tensor:
    """The l2 start: a centred 5 x 5 grid of squares of side ``min(H, W) // 5``, each a pattern with a random sign
    per channel, scaled to norm ``eps``."""
    count, channels, height, width = images.shape
    side = max(min(height, width) // 5, 1)
    down, across = min(5, height // side), min(5, width // side)
    tiles = _patterns(count * down * across, side, images).view(count, down, across, side, side)
    tiles = tiles[:, None] * _signs(count, channels, down, across, 1, 1, like=images)
    canvas = tiles.permute(0, 1, 2, 4, 3, 5).reshape(count, channels, down * side, across * side)
    top, left = (height - down * side) // 2, (width - across * side) // 2
    delta = torch.zeros_like(images)
    delta[:, :, top : top + down * side, left : left + across * side] = canvas
    return (images + _scaled(delta, radius)).clamp(0, 1)


def _l2_norm(delta: torch.Tensor) -> torch.Tensor:
    return delta.flatten(1).norm(dim=1).view(-1, 1, 1, 1)


def _scaled(delta: torch.Tensor, radius: torch.Tensor) -> torch.Tensor:
    """``delta`` rescaled to l2 norm ``radius`` per image."""
    return delta * (radius / (_l2_norm(delta) + 1e-12))


def _l2_proposal(x: torch.Tensor, current: torch.Tensor, radius: torch.Tensor, side: int) -> torch.Tensor:
    """The paper's l2 step: empty a second window, put the first window's own (normalised) perturbation plus a
    fresh pattern into the first, with the norm the two windows held plus the budget left unused."""
    count, channels, height, width = x.shape
    delta = current - x
    first = _random_windows(count, side, height, width, x.device)
    second = _random_windows(count, side, height, width, x.device)
    index_first, index_second = _window_index(*first, channels), _window_index(*second, channels)
    both = _mask(*first, height, width) | _mask(*second, height, width)
    window = delta[index_first]
    window_norm = window.square().sum((2, 3), keepdim=True).sqrt()
    unused = (radius.square() - _l2_norm(delta).square()).clamp_min(0)
    held = _l2_norm(delta * both).square()
    new = _patterns(count, side, x) * _signs(count, channels, 1, 1, like=x) + window / (window_norm + 1e-12)
    new = new / (new.square().sum((2, 3), keepdim=True).sqrt() + 1e-12) * (unused / channels + held).sqrt()
    delta[index_second] = 0
    delta[index_first] = new
    return (x + _scaled(delta, radius)).clamp(0, 1)

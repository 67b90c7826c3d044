"""Exact minimal-norm steps onto a linearised decision boundary inside the image box [0, 1]^n, batched.

DeepFool-type attacks (DeepFool, FAB, lipcli's ``min-norm``) move an image ``x`` to the hyperplane
``w . delta = r``. Ignoring the box and clipping afterwards loses the constraint whenever pixels saturate
(MNIST's black background, say), so the step is solved with the box: the smallest ``||delta||`` (l2 or l-inf)
with ``x + delta`` in [0, 1]^n and ``w . delta = r``.

Both norms reduce to one monotone piecewise-linear equation: ``delta_i = sign(w_i) min(tau a_i, room_i)``
(``a_i = |w_i|`` for l2, 1 for l-inf; ``room_i`` the distance to the box face ``w_i`` points at), and
``w . delta(tau) = sum_i c_i min(tau, b_i)`` with ``c_i = |w_i| a_i`` and ``b_i = room_i / a_i``. Sorting
the breakpoints ``b_i`` solves it exactly, with no iteration.
"""

from __future__ import annotations

import torch


def box_projection(x: torch.Tensor, w: torch.Tensor, r: torch.Tensor, norm: str) -> torch.Tensor:
    """The smallest ``delta`` (in ``norm``) with ``x + delta`` in [0, 1]^n and ``w . delta = r``, per example.

    ``x`` and ``w`` are ``[B, ...]``, ``r`` is ``[B]`` (either sign). Where no point of the box reaches the
    hyperplane the result is NaN, so a caller can never mistake it for a step.
    """
    shape = x.shape
    x64, w64 = x.flatten(1).double(), w.flatten(1).double()
    r64 = r.double()
    direction = torch.where(r64 < 0, -1.0, 1.0).unsqueeze(1)  # solve w' . delta = |r| with w' = sign(r) w
    w64 = w64 * direction
    need = r64.abs().unsqueeze(1)
    up = w64 > 0
    room = torch.where(up, 1.0 - x64, x64).clamp_min(0.0)
    magnitude = w64.abs()
    a = magnitude if norm == "l2" else torch.ones_like(magnitude)
    if norm not in ("l2", "linf"):
        raise ValueError(f"unknown norm {norm!r}")
    c = magnitude * a
    active = magnitude > 0
    b = torch.where(active, room / torch.where(active, a, 1.0), torch.inf)
    c = torch.where(active, c, 0.0)

    b_sorted, order = b.sort(dim=1)
    c_sorted = c.gather(1, order)
    finite_b = torch.where(torch.isfinite(b_sorted), b_sorted, 0.0)
    saturated = (c_sorted * finite_b).cumsum(1)  # sum over i <= k of c_i b_i
    remaining = c_sorted.flip(1).cumsum(1).flip(1) - c_sorted  # sum over i > k of c_i
    reach = saturated + finite_b * remaining  # g(b_(k)), nondecreasing in k
    reach = torch.where(torch.isfinite(b_sorted), reach, torch.inf)
    k = torch.searchsorted(reach, need).clamp_max(b.shape[1] - 1)  # first breakpoint where g >= need
    before = torch.where(k > 0, saturated.gather(1, (k - 1).clamp_min(0)), 0.0)
    slope = remaining.gather(1, k) + c_sorted.gather(1, k)  # sum over i >= k of c_i
    reachable = need <= saturated[:, -1:] * (1 + 1e-12)  # the most the box allows: every pixel saturated
    # Past the last finite breakpoint (need equal to the box's most, up to rounding) every pixel saturates.
    tau = torch.where(slope > 0, (need - before) / slope, torch.inf)
    delta = torch.where(active, torch.minimum(tau * a, room), 0.0) * torch.sign(w64)
    delta = torch.where(need > 0, delta, 0.0)
    delta = torch.where(reachable, delta, torch.nan)
    return delta.reshape(shape).to(x.dtype)

"""Training augmentation of Appendix A (random crop of the padded image, horizontal flip, cutout), batched.

Each transform draws one random number per image and applies it to the whole batch with tensor indexing on
the batch's device: no per-image Python loop, so augmentation costs next to nothing on a GPU.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class Augmentation:
    """The augmentation settings of ``[data]``; all off is the identity."""

    crop_padding: int = 0
    flip: bool = False
    cutout: int = 0

    @property
    def active(self) -> bool:
        return self.crop_padding > 0 or self.flip or self.cutout > 0

    def __call__(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Augment a float batch ``[B, C, H, W]``; ``generator`` lives on the batch's device."""
        if self.crop_padding > 0:
            images = random_crop(images, self.crop_padding, generator)
        if self.flip:
            images = random_flip(images, generator)
        if self.cutout > 0:
            images = cutout(images, self.cutout, generator)
        return images


def random_crop(images: torch.Tensor, padding: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Zero-pad by ``padding`` per side, then crop each image back to its size at a random offset."""
    b, c, h, w = images.shape
    padded = F.pad(images, (padding, padding, padding, padding))
    offsets = torch.randint(0, 2 * padding + 1, (2, b), device=images.device, generator=generator)
    rows = (offsets[0, :, None] + torch.arange(h, device=images.device))[:, None, :, None]
    cols = (offsets[1, :, None] + torch.arange(w, device=images.device))[:, None, None, :]
    batch = torch.arange(b, device=images.device)[:, None, None, None]
    channel = torch.arange(c, device=images.device)[None, :, None, None]
    return padded[batch, channel, rows, cols]


def random_flip(images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Mirror each image left-right with probability 1/2."""
    flip = torch.rand(images.shape[0], device=images.device, generator=generator) < 0.5
    return torch.where(flip[:, None, None, None], images.flip(-1), images)


def cutout(images: torch.Tensor, size: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Zero a ``size`` x ``size`` square centred at a uniform pixel, clipped at the border (DeVries & Taylor)."""
    b, _, h, w = images.shape
    centre_y = torch.randint(0, h, (b,), device=images.device, generator=generator)
    centre_x = torch.randint(0, w, (b,), device=images.device, generator=generator)
    ys = torch.arange(h, device=images.device)
    xs = torch.arange(w, device=images.device)
    top, left = centre_y - size // 2, centre_x - size // 2
    in_rows = (ys[None, :] >= top[:, None]) & (ys[None, :] < (top + size)[:, None])
    in_cols = (xs[None, :] >= left[:, None]) & (xs[None, :] < (left + size)[:, None])
    hole = in_rows[:, None, :, None] & in_cols[:, None, None, :]
    return images.masked_fill(hole, 0.0)

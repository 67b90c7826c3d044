"""Batched augmentation: each transform does exactly what its definition says, per image."""

from __future__ import annotations

import torch

from lipcli.data.augment import Augmentation, cutout, random_crop, random_flip


def numbered(b: int = 64, c: int = 2, h: int = 6, w: int = 7) -> torch.Tensor:
    """Images whose pixels are all distinct and positive, so every shift is identifiable."""
    return torch.arange(1, b * c * h * w + 1, dtype=torch.float32).reshape(b, c, h, w)


def shifted(image: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """``image`` moved so that output[y, x] = image[y + dy, x + dx], zero outside."""
    out = torch.zeros_like(image)
    _, h, w = image.shape
    for y in range(h):
        for x in range(w):
            if 0 <= y + dy < h and 0 <= x + dx < w:
                out[:, y, x] = image[:, y + dy, x + dx]
    return out


def test_random_crop_is_a_zero_filled_shift_within_the_padding() -> None:
    images = numbered()
    out = random_crop(images, 2, torch.Generator().manual_seed(0))
    seen = set()
    for image, crop in zip(images, out):
        matches = [
            (dy, dx) for dy in range(-2, 3) for dx in range(-2, 3) if torch.equal(crop, shifted(image, dy, dx))
        ]
        assert len(matches) == 1
        seen.add(matches[0])
    assert len(seen) > 10  # offsets really vary across the batch


def test_random_flip_mirrors_about_half_the_images() -> None:
    images = numbered(b=2000, c=1, h=2, w=3)
    out = random_flip(images, torch.Generator().manual_seed(0))
    flipped = (out == images.flip(-1)).flatten(1).all(1)
    kept = (out == images).flatten(1).all(1)
    assert bool((flipped ^ kept).all())
    assert 900 < int(flipped.sum()) < 1100


def test_cutout_zeroes_one_clipped_square() -> None:
    images = torch.ones(500, 3, 10, 10)
    out = cutout(images, 4, torch.Generator().manual_seed(0))
    holes = out[:, 0] == 0
    assert bool((out == 0).all(1).eq(holes).all())  # same hole in every channel
    full = 0
    for hole in holes:
        rows = hole.any(1).nonzero().flatten()
        cols = hole.any(0).nonzero().flatten()
        assert 1 <= len(rows) <= 4 and 1 <= len(cols) <= 4
        assert int(hole.sum()) == len(rows) * len(cols)  # a rectangle
        assert rows.max() - rows.min() + 1 == len(rows) and cols.max() - cols.min() + 1 == len(cols)
        full += int(hole.sum()) == 16
    assert full > 100  # most centres are far enough from the border for the whole square


def test_augmentation_is_reproducible_from_the_generator_and_off_is_identity() -> None:
    images = torch.rand(16, 3, 8, 8)
    augment = Augmentation(crop_padding=2, flip=True, cutout=3)
    a = augment(images, torch.Generator().manual_seed(5))
    b = augment(images, torch.Generator().manual_seed(5))
    assert torch.equal(a, b) and not torch.equal(a, images)
    assert not Augmentation().active
    assert torch.equal(Augmentation()(images), images)

"""Held-out validation images: a stratified, seeded part of the training set that model selection uses.

``best.pt`` is chosen on these images, never on the test set, and they are never trained on. The draw
depends on the training set, the requested size and ``data.validation_seed`` only (not ``training.seed``),
so runs that differ only in their seed hold out, and select on, the same images. Each class gives its share
of the requested count, rounded by largest remainders so the shares add up to the count exactly: the
held-out class balance is the training set's.
"""

from __future__ import annotations

import torch

from lipcli.data.types import ImageSet
from lipcli.errors import ConfigError

DEFAULT_FRACTION = 0.1
DEFAULT_CAP = 5000
"""Unset ``data.validation``: 10 % of the training set, at most 5,000 images (CIFAR and Fashion-MNIST: 5,000)."""


def validation_size(request: int | float | None, size: int) -> int:
    """How many of ``size`` training images ``data.validation`` holds out: a count as given, a fraction of
    ``size`` rounded half up (at least one image), 0 for none, ``None`` for the default."""
    if request is None:
        count = min(DEFAULT_CAP, max(1, int(DEFAULT_FRACTION * size + 0.5)))
    elif isinstance(request, float) and 0 < request < 1:
        count = max(1, int(request * size + 0.5))
    else:
        count = int(request)
    if count and count >= size:
        raise ConfigError(
            f"data.validation: holding out {count} of {size} training images leaves none to train on; "
            f"hold out fewer, or set data.validation = 0"
        )
    return count


def class_quotas(labels: torch.Tensor, count: int) -> torch.Tensor:
    """Per class, its share of ``count`` in proportion to its share of ``labels``, by largest remainders:
    every class gets the whole part of ``count * n_k / n``, and the images left over go one each to the
    classes with the largest fractional parts (ties: the lower class). Exact integer arithmetic."""
    counts = torch.bincount(labels)
    exact = counts * count  # the quota is exact / n
    quotas = exact // len(labels)
    short = count - int(quotas.sum())
    ranked = torch.argsort(-(exact % len(labels)), stable=True)
    quotas[ranked[:short]] += 1
    return quotas


def split_indices(labels: torch.Tensor, count: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(training indices, held-out indices), each ascending: per class, the first of its images in a seeded
    permutation up to the class's quota. Vectorised: one permutation, one stable sort by label."""
    generator = torch.Generator().manual_seed(seed)
    shuffled = torch.randperm(len(labels), generator=generator)
    by_class = shuffled[torch.argsort(labels[shuffled], stable=True)]  # each class's images, shuffled
    sorted_labels = labels[by_class]
    counts = torch.bincount(labels)
    rank = torch.arange(len(labels)) - (torch.cumsum(counts, 0) - counts)[sorted_labels]  # position in its class
    held = rank < class_quotas(labels, count)[sorted_labels]
    return by_class[~held].sort().values, by_class[held].sort().values


def hold_out(data: ImageSet, request: int | float | None, seed: int) -> tuple[ImageSet, ImageSet | None]:
    """(images to train on, held-out images), or ``(data, None)`` when ``data.validation`` is 0."""
    count = validation_size(request, len(data))
    if count == 0:
        return data, None
    train, held = split_indices(data.labels, count, seed)
    return ImageSet(data.images[train], data.labels[train]), ImageSet(data.images[held], data.labels[held])

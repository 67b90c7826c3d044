"""A LeNet-style network. It is a plain ``nn.Sequential`` of layers lipcli knows, so ``lipcli stats`` can
bound its Lipschitz constant without a ``lipschitz_bound`` method."""

from __future__ import annotations

from torch import nn

from lipcli.api import DatasetInfo


def lenet(info: DatasetInfo, *, batchnorm_affine: bool = False, width: int = 6) -> nn.Module:
    """Conv 5x5 -> BatchNorm -> ReLU -> 2x2 average pool, twice (``width``, then ``2 * width`` channels), then
    two linear layers. Any input size of at least 4x4 works (the second stage ends in an adaptive pool)."""
    if not isinstance(width, int) or width < 1:
        raise ValueError(f"width must be a positive integer, got {width!r}")
    wide = 2 * width
    return nn.Sequential(
        nn.Conv2d(info.channels, width, 5, padding=2), nn.BatchNorm2d(width, affine=batchnorm_affine), nn.ReLU(),
        nn.AvgPool2d(2),
        nn.Conv2d(width, wide, 5, padding=2), nn.BatchNorm2d(wide, affine=batchnorm_affine), nn.ReLU(),
        nn.AdaptiveAvgPool2d(2),
        nn.Flatten(), nn.Linear(4 * wide, 32), nn.ReLU(), nn.Linear(32, info.num_classes),
    )

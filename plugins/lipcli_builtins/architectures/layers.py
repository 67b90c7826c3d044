"""Building blocks shared by the architectures.

The authors' models use BatchNorm without learnable affine parameters, followed by a learnable
per-channel bias (the bias of the preceding convolution, moved after the normalisation where it is not
cancelled). ``batchnorm_affine=True`` gives the usual PyTorch layout instead (BN scale and shift, no bias).

Modules whose parts do not simply follow one another say how their Lipschitz bounds compose, in a
``lipschitz_bound(bounds)`` method (:class:`lipcli.api.LayerBounds`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

if TYPE_CHECKING:
    from lipcli.api import LayerBounds


class ChannelBias(nn.Module):
    """A learnable bias per channel (dimension 1), for inputs ``[B, C]`` or ``[B, C, H, W]``.

    The parameter is called ``bias`` so that code which excludes biases from weight decay by name treats
    it like any other bias.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.bias.view(1, -1, *([1] * (x.ndim - 2)))

    def lipschitz_bound(self, bounds: LayerBounds) -> float:
        """A translation: distances are unchanged."""
        return 1.0


def norm_with_bias(channels: int, *, batchnorm_affine: bool, dims: int = 2) -> nn.Sequential:
    """BatchNorm over ``channels`` (2d or 1d); without affine parameters it is followed by a :class:`ChannelBias`."""
    norm_cls = nn.BatchNorm2d if dims == 2 else nn.BatchNorm1d
    layers: list[nn.Module] = [norm_cls(channels, affine=batchnorm_affine)]
    if not batchnorm_affine:
        layers.append(ChannelBias(channels))
    return nn.Sequential(*layers)


class ConvBN(nn.Module):
    """Convolution (no bias) -> BatchNorm2d -> per-channel bias when BN is not affine -> optional ReLU.

    Padding is ``kernel_size // 2`` so a stride-1 convolution keeps the spatial size.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        *,
        stride: int = 1,
        groups: int = 1,
        relu: bool = True,
        batchnorm_affine: bool = False,
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(
            in_channels, out_channels, kernel_size, stride=stride, padding=kernel_size // 2,
            groups=groups, bias=False,
        )
        self.bn = nn.BatchNorm2d(out_channels, affine=batchnorm_affine)
        self.bias: nn.Parameter | None = None if batchnorm_affine else nn.Parameter(torch.zeros(out_channels))
        self.relu = relu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.bn(self.conv(x))
        if self.bias is not None:
            x = x + self.bias.view(1, -1, 1, 1)
        return torch.relu(x) if self.relu else x

    def lipschitz_bound(self, bounds: LayerBounds) -> float:
        """The convolution with the BatchNorm's per-channel scale folded into its rows (bias and ReLU: 1)."""
        return bounds.linear_map(self.conv, bounds.batchnorm_scale(self.bn))


class GlobalAvgPool(nn.Module):
    """Mean over the spatial dimensions: ``[B, C, H, W] -> [B, C]``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3))

    def lipschitz_bound(self, bounds: LayerBounds) -> float:
        height, width = bounds.input_shape(self)[-2:]
        return bounds.average(height * width)


def check_positive(**values: int) -> None:
    """Reject non-positive sizes from the experiment file with a message naming the option."""
    for name, value in values.items():
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"option {name!r} must be a positive integer, got {value!r}")

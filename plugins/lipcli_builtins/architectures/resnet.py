"""CIFAR-style residual networks (ResNet34, ResNeXt34) in the structure of the paper's models.

Depth 6n + 4: a 3x3 stem, three stages of n two-convolution blocks (widths w, 2w, 4w), a 1x1
convolution plus 2x2 average pooling between stages (the transition that changes width and halves the
resolution), and a linear classifier. With n = 5 that is 1 + 30 + 2 + 1 = 34 weighted layers.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
from torch import nn

if TYPE_CHECKING:
    from lipcli.api import LayerBounds

from lipcli.api import DatasetInfo
from lipcli_builtins.architectures.layers import ConvBN, GlobalAvgPool, check_positive


class BasicBlock(nn.Module):
    """Two 3x3 ConvBN layers on ``channels`` channels, identity shortcut, ReLU after the sum."""

    def __init__(self, channels: int, *, batchnorm_affine: bool = False) -> None:
        super().__init__()
        self.conv1 = ConvBN(channels, channels, 3, batchnorm_affine=batchnorm_affine)
        self.conv2 = ConvBN(channels, channels, 3, relu=False, batchnorm_affine=batchnorm_affine)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x + self.conv2(self.conv1(x)))

    def lipschitz_bound(self, bounds: LayerBounds) -> float:
        """Identity plus the branch; the ReLU after the sum is 1-Lipschitz."""
        return 1.0 + bounds(self.conv1) * bounds(self.conv2)


class BranchBlock(nn.Module):
    """The paper's ResNeXt block (basic, not bottleneck): ``cardinality`` branches of ``channels`` channels.

    Every branch applies a full 3x3 convolution to the input and then its own 3x3 convolution; the two are
    computed for all branches at once (one conv to ``channels * cardinality`` channels, then a grouped conv
    with ``groups=cardinality``). The branches are aggregated by their mean, not by a 1x1 convolution, so
    the block adds no parameters beyond the branches themselves.
    """

    def __init__(self, channels: int, cardinality: int, *, batchnorm_affine: bool = False) -> None:
        super().__init__()
        inner = channels * cardinality
        self.cardinality = cardinality
        self.conv1 = ConvBN(channels, inner, 3, batchnorm_affine=batchnorm_affine)
        self.conv2 = ConvBN(inner, inner, 3, groups=cardinality, relu=False, batchnorm_affine=batchnorm_affine)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branches = self.conv2(self.conv1(x))
        b, _, h, w = branches.shape
        # Group g of the grouped conv owns channels [g*c, (g+1)*c): split them into a branch axis and average.
        mean = branches.view(b, self.cardinality, -1, h, w).mean(dim=1)
        return torch.relu(x + mean)

    def lipschitz_bound(self, bounds: LayerBounds) -> float:
        """Identity plus the mean of the branches (computed together as two convolutions)."""
        return 1.0 + bounds(self.conv1) * bounds(self.conv2) * bounds.average(self.cardinality)


class CifarResNet(nn.Module):
    """Stem, three stages of residual blocks with transitions between them, global average pool, linear."""

    def __init__(
        self,
        info: DatasetInfo,
        make_block: Callable[[int], nn.Module],
        *,
        blocks_per_stage: int,
        width: int,
        batchnorm_affine: bool,
    ) -> None:
        super().__init__()
        widths = [width, 2 * width, 4 * width]
        layers: list[nn.Module] = [ConvBN(info.channels, width, 3, batchnorm_affine=batchnorm_affine)]
        for stage, channels in enumerate(widths):
            if stage > 0:
                layers.append(ConvBN(widths[stage - 1], channels, 1, batchnorm_affine=batchnorm_affine))
                layers.append(nn.AvgPool2d(2))
            layers.extend(make_block(channels) for _ in range(blocks_per_stage))
        layers.append(GlobalAvgPool())
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(widths[-1], info.num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))

    def lipschitz_bound(self, bounds: LayerBounds) -> float:
        return bounds(self.features) * bounds(self.classifier)



def build_resnet34(
    info: DatasetInfo, *, batchnorm_affine: bool = False, blocks_per_stage: int = 5, width: int = 16
) -> nn.Module:
    """ResNet34 (6n+4 layers) with basic blocks.

    Options:
        blocks_per_stage: n, residual blocks per stage (depth 6n + 4; 5 gives 34).
        width: channels of the first stage; later stages have 2x and 4x.
    """
    check_positive(blocks_per_stage=blocks_per_stage, width=width)
    return CifarResNet(
        info, lambda c: BasicBlock(c, batchnorm_affine=batchnorm_affine),
        blocks_per_stage=blocks_per_stage, width=width, batchnorm_affine=batchnorm_affine,
    )


def build_resnext34(
    info: DatasetInfo,
    *,
    batchnorm_affine: bool = False,
    blocks_per_stage: int = 5,
    cardinality: int = 2,
    width: int = 32,
) -> nn.Module:
    """ResNeXt34 (default 2x32d) with mean-aggregated branch blocks.

    Options:
        blocks_per_stage: n, residual blocks per stage (depth 6n + 4; 5 gives 34).
        cardinality: branches per block; the paper uses 2 on CIFAR-10 and 4 on CIFAR-100.
        width: channels of each branch (and of the block's input) in the first stage; later stages 2x, 4x.
    """
    check_positive(blocks_per_stage=blocks_per_stage, cardinality=cardinality, width=width)
    return CifarResNet(
        info, lambda c: BranchBlock(c, cardinality, batchnorm_affine=batchnorm_affine),
        blocks_per_stage=blocks_per_stage, width=width, batchnorm_affine=batchnorm_affine,
    )

"""Small models that train in minutes on a CPU: for quick experiments, examples and tests."""

from __future__ import annotations

from torch import nn

from lipcli.api import DatasetInfo
from lipcli_builtins.architectures.layers import ConvBN, GlobalAvgPool, check_positive, norm_with_bias


def build_small_cnn(info: DatasetInfo, *, batchnorm_affine: bool = False, width: int = 32) -> nn.Module:
    """Three ConvBN layers (the last two with stride 2), global average pool, linear classifier.

    Options:
        width: channels of the first convolution; the other two have ``2 * width``.
    """
    check_positive(width=width)
    wide = 2 * width
    return nn.Sequential(
        ConvBN(info.channels, width, 3, batchnorm_affine=batchnorm_affine),
        ConvBN(width, wide, 3, stride=2, batchnorm_affine=batchnorm_affine),
        ConvBN(wide, wide, 3, stride=2, batchnorm_affine=batchnorm_affine),
        GlobalAvgPool(),
        nn.Linear(wide, info.num_classes),
    )


def build_mlp(info: DatasetInfo, *, batchnorm_affine: bool = False, hidden: int = 256, depth: int = 2) -> nn.Module:
    """Flatten, ``depth`` hidden layers (Linear without bias -> BatchNorm1d [-> bias] -> ReLU), linear classifier.

    Options:
        hidden: units per hidden layer.
        depth: number of hidden layers.
    """
    check_positive(hidden=hidden, depth=depth)
    layers: list[nn.Module] = [nn.Flatten()]
    features = info.input_dim
    for _ in range(depth):
        layers += [
            nn.Linear(features, hidden, bias=False),  # BatchNorm would cancel a bias here; it follows the norm
            norm_with_bias(hidden, batchnorm_affine=batchnorm_affine, dims=1),
            nn.ReLU(),
        ]
        features = hidden
    layers.append(nn.Linear(features, info.num_classes))
    return nn.Sequential(*layers)

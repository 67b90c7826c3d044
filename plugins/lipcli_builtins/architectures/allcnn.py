"""AllCNN-C (Springenberg et al., 2015), with BatchNorm after every convolution as in the paper's experiments."""

from __future__ import annotations

from torch import nn

from lipcli.api import DatasetInfo
from lipcli_builtins.architectures.layers import ConvBN, GlobalAvgPool, check_positive


def build_allcnn(info: DatasetInfo, *, batchnorm_affine: bool = False, width: int = 96) -> nn.Module:
    """AllCNN-C: nine convolutions, strided convolutions instead of pooling, global average pool.

    Options:
        width: channels of the first stage (the second stage has ``2 * width``); 96 in the paper.

    The original Caffe net used an unpadded ("valid") 3x3 convolution at layer 7; every 3x3 convolution
    here is padded, which changes nothing else and keeps 8x8 inputs (down to 2x2 before the class layer)
    working. There is no dropout: the paper's models rely on BatchNorm instead.
    """
    check_positive(width=width)
    wide = 2 * width

    def conv(c_in: int, c_out: int, kernel: int = 3, stride: int = 1, relu: bool = True) -> ConvBN:
        return ConvBN(c_in, c_out, kernel, stride=stride, relu=relu, batchnorm_affine=batchnorm_affine)

    return nn.Sequential(
        conv(info.channels, width),
        conv(width, width),
        conv(width, width, stride=2),
        conv(width, wide),
        conv(wide, wide),
        conv(wide, wide, stride=2),
        conv(wide, wide),
        conv(wide, wide, kernel=1),
        conv(wide, info.num_classes, kernel=1, relu=False),
        GlobalAvgPool(),
    )

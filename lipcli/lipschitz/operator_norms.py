"""Operator norms of one layer's linear part (bias dropped; rows optionally scaled by a folded BatchNorm) at
the input shape the layer really sees: exact where that is cheap, otherwise a rigorous upper bound, in float64.

* l-inf and l1 (largest row and column sums of ``|A|``): exact, from applying ``|A|`` and its adjoint (by
  autograd) to a vector of ones at the true input shape, so padding and stride are accounted for.
* l2 (largest singular value): an exact SVD for dense linear layers. For a 2-d convolution with zero padding,
  the norm of its circulant extension (Sedghi, Gupta & Long 2019): on a periodic grid large enough that
  nothing wraps around, the convolution is a sub-block of a circular one, whose singular values are those of
  the ``c_out x c_in`` matrices of the kernel's 2-d DFT, one per frequency; a strided convolution is first
  rewritten as a stride-1 one on the ``s x s`` polyphase components of its input. That is an upper bound of
  the norm at the true shape, and close to it for small kernels. (Power iteration, the usual method,
  approaches the norm from below: a product of its estimates is not a bound.) Every layer also has the
  bound ``sqrt(||A||_1 ||A||_inf)`` (Hölder), exact for averaging over disjoint windows; the l2 result is
  the smaller of the two.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import nn
from torch.nn import functional as F

from lipcli.errors import LipcliError

LinearMap = Callable[[torch.Tensor, bool], torch.Tensor]
"""``apply(x, absolute)``: a layer's linear part on ``[1, *input_shape]`` float64 inputs; ``absolute`` replaces
every matrix entry by its absolute value."""

OPERATOR_NORMS = ("l2", "linf", "l1")
"""Operator norms p -> p: l2 (spectral), l-inf (largest row sum), l1 (largest column sum)."""

_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}


class BoundUnavailable(LipcliError):
    """A part of the model lipcli cannot bound (no rule, an unsupported variant, or an ambiguous shape)."""
_FREQUENCIES_PER_CHUNK = 256


def layer_map(module: nn.Module, scale: torch.Tensor | None = None) -> LinearMap:
    """The linear part of a convolution, linear layer or average pooling, its outputs scaled per channel by
    ``scale`` (a folded BatchNorm), in float64."""
    factor = None if scale is None else scale.detach().double()

    def scaled(y: torch.Tensor, absolute: bool) -> torch.Tensor:
        if factor is None:
            return y
        s = factor.abs() if absolute else factor
        return y * s.view(1, -1, *([1] * (y.dim() - 2)))

    if isinstance(module, nn.Linear):
        weight = module.weight.detach().double()
        return lambda x, absolute: scaled(x @ (weight.abs() if absolute else weight).T, absolute)
    if isinstance(module, nn.modules.conv._ConvNd) and not module.transposed:
        if module.padding_mode != "zeros":
            raise BoundUnavailable(
                f"{type(module).__name__} with padding_mode={module.padding_mode!r} has no Lipschitz rule"
            )
        weight = module.weight.detach().double()
        conv = _CONV[weight.dim() - 2]

        def apply_conv(x: torch.Tensor, absolute: bool) -> torch.Tensor:
            w = weight.abs() if absolute else weight
            return scaled(conv(x, w, None, module.stride, module.padding, module.dilation, module.groups), absolute)

        return apply_conv
    if isinstance(module, nn.AvgPool2d):  # non-negative weights: |A| = A
        return lambda x, absolute: scaled(F.avg_pool2d(
            x, module.kernel_size, module.stride, module.padding, module.ceil_mode, module.count_include_pad,
            module.divisor_override,
        ), absolute)
    if isinstance(module, nn.AdaptiveAvgPool2d):
        return lambda x, absolute: scaled(F.adaptive_avg_pool2d(x, module.output_size), absolute)
    raise BoundUnavailable(f"no linear map for {type(module).__name__}")


def operator_norm(
    module: nn.Module, input_shape: tuple[int, ...], norm: str, *, scale: torch.Tensor | None = None,
    device: torch.device | None = None,
) -> float:
    """``||A||_{p->p}`` (l1, l-inf) or an upper bound of it (l2) for the layer at ``input_shape`` (without
    the batch dimension); see the module docs."""
    if norm not in OPERATOR_NORMS:
        raise ValueError(f"unknown operator norm {norm!r}; use one of {', '.join(OPERATOR_NORMS)}")
    if norm == "l2" and isinstance(module, nn.Linear):
        weight = module.weight.detach().double()
        if len(input_shape) == 1:  # the scale, if any, acts on the output features
            return dense_spectral_norm(weight if scale is None else scale.detach().double()[:, None] * weight)
        # on [..., T, F] inputs the map is I (x) W, and a folded BatchNorm1d scales dimension 1 (T)
        return dense_spectral_norm(weight) * (1.0 if scale is None else float(scale.detach().double().abs().max()))
    apply = layer_map(module, scale)
    if norm != "l2":
        return absolute_norm(apply, input_shape, norm, device)
    bound = math.sqrt(absolute_norm(apply, input_shape, "l1", device) * absolute_norm(apply, input_shape, "linf", device))
    if isinstance(module, nn.Conv2d) and module.padding_mode == "zeros":
        bound = min(bound, circulant_norm(module, input_shape, scale))
    return bound


def absolute_norm(apply: LinearMap, input_shape: tuple[int, ...], norm: str, device: torch.device | None) -> float:
    """The exact l-inf (``max |A| 1``) or l1 (``max |A|^T 1``) operator norm of the map at ``input_shape``."""
    ones = torch.ones((1, *input_shape), dtype=torch.float64, device=device)
    if norm == "linf":
        return float(apply(ones, True).max())
    out, adjoint = torch.func.vjp(lambda x: apply(x, True), ones)
    (column_sums,) = adjoint(torch.ones_like(out))
    return float(column_sums.max())


def circulant_norm(conv: nn.Conv2d, input_shape: tuple[int, ...], scale: torch.Tensor | None = None) -> float:
    """An upper bound of the l2 norm of a zero-padded 2-d convolution at ``input_shape`` ``(C, H, W)``: the
    spectral norm of its circulant extension on the polyphase grid (see the module docs)."""
    weight = _dense_kernel(conv).double()
    if scale is not None:
        weight = weight * scale.detach().double().view(-1, 1, 1, 1)
    out_channels, in_channels, kh, kw = weight.shape
    sh, sw = conv.stride
    qh, qw = -(-kh // sh), -(-kw // sw)  # taps per polyphase component
    phases = weight.new_zeros((out_channels, in_channels, sh, sw, qh * sh, qw * sw))
    for rh in range(sh):
        for rw in range(sw):
            taps = weight[:, :, rh::sh, rw::sw]
            phases[:, :, rh, rw, : taps.shape[2], : taps.shape[3]] = taps
    kernel = phases[..., :qh, :qw].reshape(out_channels, in_channels * sh * sw, qh, qw)
    ph, pw = _padding(conv)
    grid = (-(-(input_shape[1] + 2 * ph) // sh) + qh, -(-(input_shape[2] + 2 * pw) // sw) + qw)
    spectrum = torch.fft.fft2(kernel, s=grid).permute(2, 3, 0, 1).reshape(-1, out_channels, kernel.shape[1])
    return max(
        float(torch.linalg.matrix_norm(spectrum[i : i + _FREQUENCIES_PER_CHUNK], ord=2).max())
        for i in range(0, spectrum.shape[0], _FREQUENCIES_PER_CHUNK)
    )


def _dense_kernel(conv: nn.Conv2d) -> torch.Tensor:
    """The kernel ``[out, in, kh, kw]`` with groups expanded (zeros between groups) and dilation spelled out."""
    weight = conv.weight.detach()
    out_channels, per_group, kh, kw = weight.shape
    groups = conv.groups
    dense = weight.new_zeros((out_channels, per_group * groups, kh, kw))
    step = out_channels // groups
    for g in range(groups):
        dense[g * step : (g + 1) * step, g * per_group : (g + 1) * per_group] = weight[g * step : (g + 1) * step]
    dh, dw = conv.dilation
    if (dh, dw) != (1, 1):
        dilated = dense.new_zeros((out_channels, dense.shape[1], dh * (kh - 1) + 1, dw * (kw - 1) + 1))
        dilated[:, :, ::dh, ::dw] = dense
        dense = dilated
    return dense


def _padding(conv: nn.Conv2d) -> tuple[int, int]:
    """Zero padding per side; ``"same"`` pads at most the kernel's extent (only the grid size depends on it)."""
    if isinstance(conv.padding, str):
        return (conv.kernel_size[0] * conv.dilation[0], conv.kernel_size[1] * conv.dilation[1])
    return conv.padding


def dense_spectral_norm(matrix: torch.Tensor) -> float:
    """The largest singular value of a dense matrix, exactly (SVD, float64)."""
    return float(torch.linalg.matrix_norm(matrix.detach().double(), ord=2))

"""Operator norms of one layer's linear part at the input shape the layer really sees, in float64.

A layer is given as ``apply(x, absolute)``: its linear map (bias dropped) on a batch of inputs, with
``absolute=True`` meaning the same map with every matrix entry replaced by its absolute value. From that:

* the l-inf operator norm (largest row sum of ``|A|``) is ``max(|A| 1)``, and the l1 operator norm (largest
  column sum) is ``max(|A|^T 1)``, the adjoint taken by autograd. Both are exact, padding and stride
  included, because they are computed on the true input shape rather than read off the kernel;
* the l2 operator norm (largest singular value) is found by power iteration on ``A^T A`` (the adjoint again
  by autograd). Its estimates ``||A v_k||`` never decrease and never exceed the norm; the iteration stops
  when they change by less than ``tolerance`` (relative), so the result is the norm to about that precision,
  from below. Dense linear layers use an exact SVD instead.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn
from torch.nn import functional as F

LinearMap = Callable[[torch.Tensor, bool], torch.Tensor]
"""``apply(x, absolute)``: a layer's linear part on ``[1, *input_shape]`` float64 inputs."""

OPERATOR_NORMS = ("l2", "linf", "l1")
"""Operator norms p -> p: l2 (spectral), l-inf (largest row sum), l1 (largest column sum)."""

_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}


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
            raise ValueError(f"{type(module).__name__} with padding_mode={module.padding_mode!r} is not supported")
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
    raise TypeError(f"no linear map for {type(module).__name__}")


def operator_norm(
    apply: LinearMap, input_shape: tuple[int, ...], norm: str, *, device: torch.device | None = None,
    tolerance: float = 1e-9, max_iterations: int = 1000, seed: int = 0,
) -> float:
    """``||A||_{p->p}`` of the map at ``input_shape`` (without the batch dimension), on the device of the
    layer's weights; see the module docs."""
    ones = torch.ones((1, *input_shape), dtype=torch.float64, device=device)
    if norm == "linf":
        return float(apply(ones, True).max())
    if norm == "l1":
        out, adjoint = torch.func.vjp(lambda x: apply(x, True), ones)
        (column_sums,) = adjoint(torch.ones_like(out))
        return float(column_sums.max())
    if norm == "l2":
        return spectral_norm(lambda x: apply(x, False), input_shape, device=device, tolerance=tolerance,
                             max_iterations=max_iterations, seed=seed)
    raise ValueError(f"unknown operator norm {norm!r}; use one of {', '.join(OPERATOR_NORMS)}")


def spectral_norm(
    apply: Callable[[torch.Tensor], torch.Tensor], input_shape: tuple[int, ...], *,
    device: torch.device | None = None, tolerance: float = 1e-9, max_iterations: int = 1000, seed: int = 0,
) -> float:
    """The largest singular value of a linear map by power iteration on ``A^T A`` (float64; the start vector
    is drawn on the CPU from ``seed``, so every device starts alike)."""
    generator = torch.Generator().manual_seed(seed)
    vector = torch.randn((1, *input_shape), dtype=torch.float64, generator=generator).to(device)
    estimate = 0.0
    for _ in range(max_iterations):
        size = vector.norm()
        if size == 0:  # A^T A v = 0: v lies in the null space, and so did every earlier vector's image
            break
        out, adjoint = torch.func.vjp(apply, vector / size)
        previous, estimate = estimate, max(estimate, float(out.norm()))
        if estimate - previous <= tolerance * estimate:
            break
        (vector,) = adjoint(out)
    return estimate


def dense_spectral_norm(matrix: torch.Tensor) -> float:
    """The largest singular value of a dense matrix, exactly (SVD, float64)."""
    return float(torch.linalg.matrix_norm(matrix.detach().double(), ord=2))

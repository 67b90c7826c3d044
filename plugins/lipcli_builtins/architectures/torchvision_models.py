"""torchvision's classification models as lipcli architectures: ``tv-resnet18``, ``tv-vit_b_16``, ...

One factory per model of ``torchvision.models.list_models(module=torchvision.models)`` (torchvision 0.29; a test
keeps the list equal to the installed torchvision's), ``tv_<name>``. Each is a plain function, so that
``lipcli list`` reads its options from this file, and this module imports neither torch nor torchvision: the
model is built by :mod:`lipcli_builtins.architectures.torchvision_build` the first time one is asked for.

Every factory takes ``info`` and ``batchnorm_affine`` as every lipcli architecture does, and hands any other
``model.options`` to torchvision's constructor (``dropout``, ``stochastic_depth_prob``, ``width_per_group``, ...).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torch import nn

    from lipcli.api import DatasetInfo

CHECKED = ("resnet18", "mobilenet_v3_small", "swin_t")
"""The models the architecture contract checks (``lipcli plugins check``, tests/test_contracts.py): a residual
network with BatchNorm, a mobile one (depthwise convolutions, squeeze-and-excitation, hard-swish, dropout) and a
transformer (attention, LayerNorm). The other models are built by the same code; building all 80, up to 600
million parameters, on a CPU for every check would take many minutes."""

_MIN_SIDE = (
    ("alexnet", 63), ("convnext_", 32), ("densenet", 29), ("googlenet", 15), ("inception_v3", 75),
    ("squeezenet1_0", 21), ("squeezenet1_1", 17), ("swin_", 4), ("vgg", 32),
)
"""The smallest image side each model's pooling and strides allow (torchvision's ``min_size`` of its weights,
except for Swin, whose 224 and 256 are the pretrained weights' size); other models take any size, apart from
the vision transformers' (:func:`size_problem`)."""


def models() -> list[str]:
    """The torchvision names of this module's factories (``tv_<name>``), in torchvision's order."""
    return [key[3:] for key, value in globals().items() if key.startswith("tv_") and callable(value)]


def min_side(name: str) -> int:
    """The smallest image side ``name`` takes (1: any), for the models with a plain minimum."""
    return next((side for prefix, side in _MIN_SIDE if name.startswith(prefix)), 1)


def requirement(name: str) -> str:
    """What images ``name`` takes, in words."""
    if name.startswith("vit_"):
        return f"square images whose side is a multiple of {_patch(name)}"
    if name.startswith("maxvit_"):
        return "images whose sides stay multiples of 7 when halved 2 to 5 times (rounding up), such as 224x224"
    side = min_side(name)
    return f"images of at least {side}x{side}" if side > 1 else "images of any size"


def size_problem(name: str, height: int, width: int) -> str | None:
    """What ``name`` needs of its images where ``height`` x ``width`` images are not it, else None."""
    if name.startswith("vit_"):
        fits = height == width and height % _patch(name) == 0
    elif name.startswith("maxvit_"):  # the stem and each of the 4 blocks halve (stride 2, padding 1)
        fits = all(-(-side // 2**k) % 7 == 0 for side in (height, width) for k in (2, 3, 4, 5))
    else:
        fits = min(height, width) >= min_side(name)
    return None if fits else requirement(name)


def description(name: str) -> str:
    """The one line ``lipcli list`` shows for ``tv-<name>``."""
    return f"torchvision's {name}, untrained; takes {requirement(name)}"


def contract_skip(name: str) -> str | None:
    """Why the architecture contract does not build ``name`` (None: it does)."""
    if name in CHECKED:
        return None
    problem = size_problem(name, 8, 8) or size_problem(name, 16, 16)
    if problem:
        return f"needs {problem}; the contract's images are 8x8 and 16x16"
    return (f"built by the same code as {', '.join('tv-' + n for n in CHECKED)}, which the contract checks "
            "(building every torchvision model on a CPU would take minutes)")


def _patch(name: str) -> int:
    """The patch size of a vision transformer, the last part of its name (``vit_b_16``: 16)."""
    return int(name.rsplit("_", 1)[1])


def _build(name: str, info: DatasetInfo, batchnorm_affine: bool, options: dict[str, Any]) -> nn.Module:
    from lipcli_builtins.architectures.torchvision_build import build_torchvision

    return build_torchvision(name, info, batchnorm_affine=batchnorm_affine, options=options)


# -- one factory per classification model of torchvision.models, in list_models() order ------------------------


def tv_alexnet(info: DatasetInfo, *, batchnorm_affine: bool = False, **options: Any) -> nn.Module:
    return _build("alexnet", info, batchnorm_affine, options)


def tv_convnext_base(info: DatasetInfo, *, batchnorm_affine: bool = False, **options: Any) -> nn.Module:
    return _build("convnext_base", info, batchnorm_affine, options)


def tv_convnext_large(info: DatasetInfo, *, batchnorm_affine: bool = False, **options: Any) -> nn.Module:
    return _build("convnext_large", info, batchnorm_affine, options)


def tv_convnext_small(info: DatasetInfo, *, batchnorm_affine: bool = False, **options: Any) -> nn.Module:
    return _build("convnext_small", info, batchnorm_affine, options)


def tv_convnext_tiny(info: DatasetInfo, *, batchnorm_affine: bool = False, **options: Any) -> nn.Module:
    return _build("convnext_tiny", info, batchnorm_affine, options)


def tv_densenet121(info: DatasetInfo, *, batchnorm_affine: bool = False, **options: Any) -> nn.Module:
    return _build("densenet121", info, batchnorm_affine, options)


def tv_densenet161(info: DatasetInfo, *, batchnorm_affine: bool = False, **options: Any) -> nn.Module:
    return _build("densenet161", info, batchnorm_affine, options)


def tv_densenet169(info: DatasetInfo, *, batchnorm_affine: bool = False, **options: Any) -> nn.Module:
    return _build("densenet169", info, batchnorm_affine, options)


def tv_densenet201(info: DatasetInfo, *, batchnorm_affine: bool = False, **options: Any) -> nn.Module:
    return _build("densenet201", info, batchnorm_affine, options)


def tv_efficientnet_b0(info: DatasetInfo, *, batchnorm_affine: bool = False, **options: Any) -> nn.Module:
    return _build("efficientnet_b0", info, batchnorm_affine, options)


def tv_efficientnet_b1(info: DatasetInfo, *, batchnorm_affine: bool = False, **options: Any) -> nn.Module:
    return _build("efficientnet_b1", info, batchnorm_affine, options)


def tv_efficientnet_b2(info: DatasetInfo, *, batchnorm_affine: bool = False, **options: Any) -> nn.Module:
    return _build("efficientnet_b2", info, batchnorm_affine, options)


def tv_efficientnet_b3(info: DatasetInfo, *, batchnorm_affine: bool = False, **options: Any) -> nn.Module:
    return _build("efficientnet_b3", info, batchnorm_affine, options)


def tv_efficientnet_b4(info: DatasetInfo, *, batchnorm_affine: bool = False, **options: Any) -> nn.Module:
    return _build("efficientnet_b4", info, batchnorm_affine, options)


def tv_efficientnet_b5(info: DatasetInfo, *, batchnorm_affine: bool = False, **options: Any) -> nn.Module:
    return _build("efficientnet_b5", info, batchnorm_affine, options)


def tv_efficientnet_b6(info: DatasetInfo, *, batchnorm_affine: bool = False, **options: Any) -> nn.Module:
    return _build("efficientnet_b6", info, batchnorm_affine, options)


def tv_efficientnet_b7(info: DatasetInfo, *, batchnorm_affine: bool = False, **options: Any) -> nn.Module:
    return _build("efficientnet_b7", info, batchnorm_affine, options)


def tv_efficientnet_v2_l(info: DatasetInfo, *, batchnorm_affine: bool = False, **options: Any) -> nn.Module:
    return _build("efficientnet_v2_l", info, batchnorm_affine, options)


def tv_efficientnet_v2_m(info: DatasetInfo, *, batchnorm_affine: bool = False, **options: Any) -> nn.Module:
    return _build("efficientnet_v2_m", info, batchnorm_affine, options)


def tv_efficientnet_v2_s(info: DatasetInfo, *, batchnorm_affine: bool = False, **options: Any) -> nn.Module:
    return _build("efficientnet_v2_s", info, batchnorm_affine, options)


def tv_googlenet(info: DatasetInfo, *, batchnorm_affine: bool = False, **options: Any) -> nn.Module:
    return _build("googlenet", info, batchnorm_affine, options)


def tv_inception_v3(info: DatasetInfo, *, batchnorm_affine: bool = False, **options: Any) -> nn.Module:
    return _build("inception_v3", info, batchnorm_affine, options)


def tv_maxvit_t(info: DatasetInfo, *, batchnorm_affine: bool = False, **options: Any) -> nn.Module:
    return _build("maxvit_t", info, batchnorm_affine, options)


def tv_mnasnet0_5(info: DatasetInfo, *, batchnorm_affine: bool = False, **options: Any) -> nn.Module:
    return _build("mnasnet0_5", info, batchnorm_affine, options)


def tv_mnasnet0_75(info: DatasetInfo, *, batchnorm_affine: bool = False, **options: Any) -> nn.Module:
    return _build("mnasnet0_75", info, batchnorm_affine, options)


def tv_mnasnet1_0(info: DatasetInfo, *, batchnorm_affine: bool = False, **options: Any) -> nn.Module:
    return _build("mnasnet1_0", info, batchnorm_affine, options)


def tv_mnasnet1_3(info: DatasetInfo, *, batchnorm_affine: bool = False, **options: Any) -> nn.Module:
    return _build("mnasnet1_3", info, batchnorm_affine, options)


def tv_mobilenet_v2(info: DatasetInfo, *, batchnorm_affine: bool = False, **options: Any) -> nn.Module:
    return _build("mobilenet_v2", info, batchnorm_affine, options)


def tv_mobilenet_v3_large(info: DatasetInfo, *, batchnorm_affine: bool = False, **options: Any) -> nn.Module:
    return _build("mobilenet_v3_large", info, batchnorm_affine, options)


def tv_mobilenet_v3_small(info: DatasetInfo, *, batchnorm_affine: bool = False, **options: Any) -> nn.Module:
    return _build("mobilenet_v3_small", info, batchnorm_affine, options)


def tv_regnet_x_16gf(info: DatasetInfo, *, batchnorm_affine: bool = False, **options: Any) -> nn.Module:
    return _build("regnet_x_16gf", info, batchnorm_affine, options)


def tv_regnet_x_1_6gf(info: DatasetInfo, *, batchnorm_affine: bool = False, **options: Any) -> nn.Module:
    return _build("regnet_x_1_6gf", info, batchnorm_affine, options)


def tv_regnet_x_32gf(info: DatasetInfo, *, batchnorm_affine: bool = False, **options: Any) -> nn.Module:
    return _build("regnet_x_32gf", info, batchnorm_affine, options)


def tv_regnet_x_3_2gf(info: DatasetInfo, *, batchnorm_affine: bool = False, **options: Any) -> nn.Module:
    return _build("regnet_x_3_2gf", info, batchnorm_affine, options)


def tv_regnet_x_400mf(info: DatasetInfo, *, batchnorm_affine: bool = False, **options: Any) -> nn.Module:
    return _build("regnet_x_400mf", info, batchnorm_affine, options)


def tv_regnet_x_800mf(info: DatasetInfo, *, batchnorm_affine: bool = False, **options: Any) -> nn.Module:
    return _build("regnet_x_800mf", info, batchnorm_affine, options)


def tv_regnet_x_8gf(info: DatasetInfo, *, batchnorm_affine: bool = False, **options: Any) -> nn.Module:
    return _build("regnet_x_8gf", info, batchnorm_affine, options)


def tv_regnet_y_128gf(info: DatasetInfo, *, batchnorm_affine: bool = False, **options: Any) -> nn.Module:
    return _build("regnet_y_128gf", info, batchnorm_affine, options)


def tv_regnet_y_16gf(info: DatasetInfo, *, batchnorm_affine: bool = False, **options: Any) -> nn.Module:
    return _build("regnet_y_16gf", info, batchnorm_affine, options)


def tv_regnet_y_1_6gf(info: DatasetInfo, *, batchnorm_affine: bool = False, **options: Any) -> nn.Module:
    return _build("regnet_y_1_6gf", info, batchnorm_affine, options)


def tv_regnet_y_32gf(info: DatasetInfo, *, batchnorm_affine: bool = False, **options: Any) -> nn.Module:
    return _build("regnet_y_32gf", info, batchnorm_affine, options)


def tv_regnet_y_3_2gf(info: DatasetInfo, *, batchnorm_affine: bool = False, **options: Any) -> nn.Module:
    return _build("regnet_y_3_2gf", info, batchnorm_affine, options)


def tv_regnet_y_400mf(info: DatasetInfo, *, batchnorm_affine: bool = False, **options: Any) -> nn.Module:
    return _build("regnet_y_400mf", info, batchnorm_affine, options)


def tv_regnet_y_800mf(info: DatasetInfo, *, batchnorm_affine: bool = False, **options: Any) -> nn.Module:
    return _build("regnet_y_800mf", info, batchnorm_affine, options)


def tv_regnet_y_8gf(info: DatasetInfo, *, batchnorm_affine: bool = False, **options: Any) -> nn.Module:
    return _build("regnet_y_8gf", info, batchnorm_affine, options)


def tv_resnet101(info: DatasetInfo, *, batchnorm_affine: bool = False, **options: Any) -> nn.Module:
    return _build("resnet101", info, batchnorm_affine, options)


def tv_resnet152(info: DatasetInfo, *, batchnorm_affine: bool = False, **options: Any) -> nn.Module:
    return _build("resnet152", info, batchnorm_affine, options)


def tv_resnet18(info: DatasetInfo, *, batchnorm_affine: bool = False, **options: Any) -> nn.Module:
    return _build("resnet18", info, batchnorm_affine, options)


def tv_resnet34(info: DatasetInfo, *, batchnorm_affine: bool = False, **options: Any) -> nn.Module:
    return _build("resnet34", info, batchnorm_affine, options)


def tv_resnet50(info: DatasetInfo, *, batchnorm_affine: bool = False, **options: Any) -> nn.Module:
    return _build("resnet50", info, batchnorm_affine, options)


def tv_resnext101_32x8d(info: DatasetInfo, *, batchnorm_affine: bool = False, **options: Any) -> nn.Module:
    return _build("resnext101_32x8d", info, batchnorm_affine, options)


def tv_resnext101_64x4d(info: DatasetInfo, *, batchnorm_affine: bool = False, **options: Any) -> nn.Module:
    return _build("resnext101_64x4d", info, batchnorm_affine, options)


def tv_resnext50_32x4d(info: DatasetInfo, *, batchnorm_affine: bool = False, **options: Any) -> nn.Module:
    return _build("resnext50_32x4d", info, batchnorm_affine, options)


def tv_shufflenet_v2_x0_5(info: DatasetInfo, *, batchnorm_affine: bool = False, **options: Any) -> nn.Module:
    return _build("shufflenet_v2_x0_5", info, batchnorm_affine, options)


def tv_shufflenet_v2_x1_0(info: DatasetInfo, *, batchnorm_affine: bool = False, **options: Any) -> nn.Module:
    return _build("shufflenet_v2_x1_0", info, batchnorm_affine, options)


def tv_shufflenet_v2_x1_5(info: DatasetInfo, *, batchnorm_affine: bool = False, **options: Any) -> nn.Module:
    return _build("shufflenet_v2_x1_5", info, batchnorm_affine, options)


def tv_shufflenet_v2_x2_0(info: DatasetInfo, *, batchnorm_affine: bool = False, **options: Any) -> nn.Module:
    return _build("shufflenet_v2_x2_0", info, batchnorm_affine, options)


def tv_squeezenet1_0(info: DatasetInfo, *, batchnorm_affine: bool = False, **options: Any) -> nn.Module:
    return _build("squeezenet1_0", info, batchnorm_affine, options)


def tv_squeezenet1_1(info: DatasetInfo, *, batchnorm_affine: bool = False, **options: Any) -> nn.Module:
    return _build("squeezenet1_1", info, batchnorm_affine, options)


def tv_swin_b(info: DatasetInfo, *, batchnorm_affine: bool = False, **options: Any) -> nn.Module:
    return _build("swin_b", info, batchnorm_affine, options)


def tv_swin_s(info: DatasetInfo, *, batchnorm_affine: bool = False, **options: Any) -> nn.Module:
    return _build("swin_s", info, batchnorm_affine, options)


def tv_swin_t(info: DatasetInfo, *, batchnorm_affine: bool = False, **options: Any) -> nn.Module:
    return _build("swin_t", info, batchnorm_affine, options)


def tv_swin_v2_b(info: DatasetInfo, *, batchnorm_affine: bool = False, **options: Any) -> nn.Module:
    return _build("swin_v2_b", info, batchnorm_affine, options)


def tv_swin_v2_s(info: DatasetInfo, *, batchnorm_affine: bool = False, **options: Any) -> nn.Module:
    return _build("swin_v2_s", info, batchnorm_affine, options)


def tv_swin_v2_t(info: DatasetInfo, *, batchnorm_affine: bool = False, **options: Any) -> nn.Module:
    return _build("swin_v2_t", info, batchnorm_affine, options)


def tv_vgg11(info: DatasetInfo, *, batchnorm_affine: bool = False, **options: Any) -> nn.Module:
    return _build("vgg11", info, batchnorm_affine, options)


def tv_vgg11_bn(info: DatasetInfo, *, batchnorm_affine: bool = False, **options: Any) -> nn.Module:
    return _build("vgg11_bn", info, batchnorm_affine, options)


def tv_vgg13(info: DatasetInfo, *, batchnorm_affine: bool = False, **options: Any) -> nn.Module:
    return _build("vgg13", info, batchnorm_affine, options)


def tv_vgg13_bn(info: DatasetInfo, *, batchnorm_affine: bool = False, **options: Any) -> nn.Module:
    return _build("vgg13_bn", info, batchnorm_affine, options)


def tv_vgg16(info: DatasetInfo, *, batchnorm_affine: bool = False, **options: Any) -> nn.Module:
    return _build("vgg16", info, batchnorm_affine, options)


def tv_vgg16_bn(info: DatasetInfo, *, batchnorm_affine: bool = False, **options: Any) -> nn.Module:
    return _build("vgg16_bn", info, batchnorm_affine, options)


def tv_vgg19(info: DatasetInfo, *, batchnorm_affine: bool = False, **options: Any) -> nn.Module:
    return _build("vgg19", info, batchnorm_affine, options)


def tv_vgg19_bn(info: DatasetInfo, *, batchnorm_affine: bool = False, **options: Any) -> nn.Module:
    return _build("vgg19_bn", info, batchnorm_affine, options)


def tv_vit_b_16(info: DatasetInfo, *, batchnorm_affine: bool = False, **options: Any) -> nn.Module:
    return _build("vit_b_16", info, batchnorm_affine, options)


def tv_vit_b_32(info: DatasetInfo, *, batchnorm_affine: bool = False, **options: Any) -> nn.Module:
    return _build("vit_b_32", info, batchnorm_affine, options)


def tv_vit_h_14(info: DatasetInfo, *, batchnorm_affine: bool = False, **options: Any) -> nn.Module:
    return _build("vit_h_14", info, batchnorm_affine, options)


def tv_vit_l_16(info: DatasetInfo, *, batchnorm_affine: bool = False, **options: Any) -> nn.Module:
    return _build("vit_l_16", info, batchnorm_affine, options)


def tv_vit_l_32(info: DatasetInfo, *, batchnorm_affine: bool = False, **options: Any) -> nn.Module:
    return _build("vit_l_32", info, batchnorm_affine, options)


def tv_wide_resnet101_2(info: DatasetInfo, *, batchnorm_affine: bool = False, **options: Any) -> nn.Module:
    return _build("wide_resnet101_2", info, batchnorm_affine, options)


def tv_wide_resnet50_2(info: DatasetInfo, *, batchnorm_affine: bool = False, **options: Any) -> nn.Module:
    return _build("wide_resnet50_2", info, batchnorm_affine, options)

"""Building a torchvision classification model for a lipcli data set (the ``tv-*`` architectures).

``torchvision.models.get_model(name, weights=None, num_classes=...)``, untrained, with what lipcli needs:

- classes from the data set; the vision transformers' ``image_size`` (and MaxViT's ``input_size``) too, and a
  data set whose images the model cannot take is refused in one line naming what it needs;
- grey (1-channel) images repeated to the 3 channels every torchvision model expects;
- one logits tensor in train mode too: GoogLeNet and Inception v3 are built without auxiliary classifiers;
- a gradient that can be differentiated again (double backpropagation, which lipcli's gradient penalties need):
  MobileNetV3's hard-sigmoid and hard-swish become the same functions written with ReLU6 (PyTorch has no second
  derivative of its own kernels), and the vision transformers' attention runs on PyTorch's composite ("math")
  kernel while gradients are recorded (the fused kernels have none);
- ``batchnorm_affine=False`` (lipcli's default, the paper's layout): each BatchNorm's scale is fixed at 1 (its
  parameter kept, frozen, so that the parameter names stay torchvision's; this also undoes
  ``zero_init_residual``) and its shift is learnt, as in lipcli's own models; ``True`` keeps torchvision's affine
  BatchNorm. Models without BatchNorm (AlexNet, VGG without ``_bn``, SqueezeNet, ViT, Swin, ConvNeXt) are
  unchanged.

The model is torchvision's own module, except where grey images or attention need the wrapper :class:`Adapted`
(its parameters then under ``net.``). Inputs are used as lipcli gives them, in [0, 1]: there are no pretrained
weights, hence no ImageNet normalisation.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
import torch.nn.functional as F
import torchvision
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from torchvision import models as tv_models

from lipcli.api import ConfigError, DatasetInfo
from lipcli_builtins.architectures.torchvision_models import size_problem

_SET_BY_LIPCLI = ("num_classes", "image_size", "input_size")
_WITHOUT_AUX = ("googlenet", "inception_v3")
_IGNORING_UNKNOWN: dict[str, tuple[type, tuple[str, ...], tuple[str, ...]]] = {
    "convnext_": (tv_models.ConvNeXt, ("block_setting",), ()),
    "mobilenet_v3_": (tv_models.MobileNetV3, ("inverted_residual_setting", "last_channel"),
                      ("width_mult", "reduced_tail", "dilated")),
}
"""Families whose constructor takes ``**kwargs`` and drops the names it does not know: per name prefix, the
class, the arguments its builder sets and those its builder takes besides (so that a misspelt option is refused
as for every other model, not ignored)."""


class Adapted(nn.Module):
    """A torchvision model ``net`` as lipcli runs it: grey images repeated to its 3 channels (``grey``), attention
    on PyTorch's composite kernel while gradients are recorded (``math_attention``)."""

    def __init__(self, net: nn.Module, *, grey: bool, math_attention: bool) -> None:
        super().__init__()
        self.net = net
        self.grey = grey
        self.math_attention = math_attention

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.grey:
            x = x.expand(-1, 3, -1, -1)
        if self.math_attention and torch.is_grad_enabled():
            with sdpa_kernel(SDPBackend.MATH):
                return self.net(x)
        return self.net(x)

    def extra_repr(self) -> str:
        return f"grey={self.grey}, math_attention={self.math_attention}"


class HardSigmoid(nn.Module):
    """``relu6(x + 3) / 6``, :class:`torch.nn.Hardsigmoid` twice differentiable."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu6(x + 3.0) / 6.0


class HardSwish(nn.Module):
    """``x relu6(x + 3) / 6``, :class:`torch.nn.Hardswish` twice differentiable."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * F.relu6(x + 3.0) / 6.0


def build_torchvision(name: str, info: DatasetInfo, *, batchnorm_affine: bool, options: dict[str, Any]) -> nn.Module:
    """torchvision's model ``name`` for ``info``'s images and classes; ``options`` go to its constructor."""
    arch = f"tv-{name}"
    if "weights" in options:
        raise ConfigError(f"model.options.weights: {arch} is built untrained (lipcli trains it); to evaluate a "
                          f"torchvision model with weights of your own: lipcli curve --model "
                          f"torchvision.models:{name} --weights FILE --dataset NAME")
    for key in _SET_BY_LIPCLI:
        if key in options:
            raise ConfigError(f"model.options.{key}: set by lipcli from the data set, not an option of {arch}")
    if name in _WITHOUT_AUX and options.get("aux_logits"):
        raise ConfigError(f"model.options.aux_logits: lipcli trains on the logits alone; {arch} is built "
                          "without auxiliary classifiers")
    if name not in tv_models.list_models(module=tv_models):
        raise ConfigError(f"model.arch: {arch}: the installed torchvision {torchvision.__version__} has no "
                          f"classification model {name!r}")
    _check_known(name, options)
    kwargs = {**_constructor_defaults(name, info), **options}
    try:  # the constructor first: it rejects an unknown option (a TypeError) before any check of the data
        model = tv_models.get_model(name, weights=None, num_classes=info.num_classes, **kwargs)
    except (AssertionError, ValueError):  # ViT and MaxViT check the image size they are given
        _check_size(arch, name, info)
        raise
    _check_size(arch, name, info)
    if info.channels not in (1, 3):
        raise ConfigError(f"model.arch: {arch} takes colour (3-channel) images, or grey ones (repeated to 3); "
                          f"the data set {info.name!r} has {info.channels}-channel images")
    if not batchnorm_affine:
        _fix_batchnorm_scale(model)
    _twice_differentiable(model)
    grey = info.channels == 1
    math_attention = any(isinstance(module, nn.MultiheadAttention) for module in model.modules())
    return Adapted(model, grey=grey, math_attention=math_attention) if grey or math_attention else model


def _constructor_defaults(name: str, info: DatasetInfo) -> dict[str, Any]:
    if name in _WITHOUT_AUX:  # init_weights: torchvision's initialisation, without its FutureWarning
        return {"aux_logits": False, "init_weights": True}
    if name.startswith("vit_"):
        return {"image_size": info.height}
    if name.startswith("maxvit_"):
        return {"input_size": (info.height, info.width)}
    return {}


def _check_known(name: str, options: dict[str, Any]) -> None:
    """A TypeError, as Python raises for other constructors, for an option a family would silently ignore."""
    for prefix, (cls, set_by_builder, extra) in _IGNORING_UNKNOWN.items():
        if name.startswith(prefix):
            parameters = inspect.signature(cls).parameters
            known = {key for key, p in parameters.items() if p.kind is not p.VAR_KEYWORD} - set(set_by_builder)
            for key in options:
                if key not in known | set(extra):
                    raise TypeError(f"{cls.__name__}.__init__() got an unexpected keyword argument {key!r}")


def _check_size(arch: str, name: str, info: DatasetInfo) -> None:
    problem = size_problem(name, info.height, info.width)
    if problem:
        raise ConfigError(f"model.arch: {arch} needs {problem}; the data set {info.name!r} has {info.height}x"
                          f"{info.width} images")


def _fix_batchnorm_scale(model: nn.Module) -> None:
    """Every BatchNorm's scale fixed at 1 and frozen: normalisation and a learnt shift, lipcli's layout."""
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.weight is not None:
            with torch.no_grad():
                module.weight.fill_(1.0)
            module.weight.requires_grad_(False)


_TWICE_DIFFERENTIABLE = {nn.Hardsigmoid: HardSigmoid, nn.Hardswish: HardSwish}


def _twice_differentiable(model: nn.Module) -> None:
    """Activations whose PyTorch kernels have no second derivative replaced by the same functions that have one."""
    for parent in list(model.modules()):
        for child_name, child in parent.named_children():
            replacement = _TWICE_DIFFERENTIABLE.get(type(child))
            if replacement is not None:
                setattr(parent, child_name, replacement())

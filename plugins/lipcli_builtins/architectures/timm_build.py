"""Building a timm model for a lipcli data set (the ``timm`` architecture).

``timm.create_model(name, pretrained=False, num_classes=..., in_chans=...)``, with random weights, and what lipcli
needs:

- classes and channels from the data set (timm adapts its first layer to any number of channels); the data set's
  image size as ``img_size`` for the models whose input size is fixed (vision transformers, MaxViT, ...: timm's
  ``fixed_input_size``); a model that cannot take the data set's images (too small for its strides, or not a
  multiple of its patch size) is refused in one line, found by one forward pass of a blank image when it is built;
- an unknown ``name`` is refused in one line with the closest of timm's names; ``pretrained`` and
  ``checkpoint_path`` are refused (no download; lipcli reads weights with ``--weights`` or from its checkpoints);
- a gradient that can be differentiated again (double backpropagation, which lipcli's gradient penalties need):
  hard-sigmoid and hard-swish become the same functions written with ReLU6, and attention runs timm's own
  non-fused path (PyTorch's fused attention kernels have no second derivative), in evaluation too;
- ``batchnorm_affine=False`` (lipcli's default, the paper's layout): each BatchNorm's scale is fixed at 1 (its
  parameter kept, frozen, so that the parameter names stay timm's; this also undoes ``zero_init_last``) and its
  shift is learnt, as in lipcli's own models and the ``tv-*`` ones; ``True`` keeps timm's affine BatchNorm.

The model is timm's own module, so that its state dict loads into ``timm.create_model(name)``. Inputs are used as
lipcli gives them, in [0, 1]: there are no pretrained weights, hence no ImageNet normalisation.
"""

from __future__ import annotations

from typing import Any

import timm
import torch
from torch import nn

from lipcli.api import ConfigError, DatasetInfo, did_you_mean
from lipcli_builtins.architectures.torchvision_build import _fix_batchnorm_scale, _twice_differentiable

_SET_BY_LIPCLI = ("num_classes", "in_chans", "img_size")


def build_timm(name: str, info: DatasetInfo, *, batchnorm_affine: bool, options: dict[str, Any]) -> nn.Module:
    """timm's model ``name`` for ``info``'s images and classes; ``options`` go to ``timm.create_model``."""
    _check_options(name, options)
    if not isinstance(name, str):
        raise ConfigError(f"model.options.name: expected a string, a model of timm.list_models(), got {name!r}")
    if not timm.is_model(name):
        raise ConfigError(f"model.options.name: timm {timm.__version__} has no model {name!r}."
                          + did_you_mean(name, timm.list_models()))
    try:
        fixed = getattr(timm.models.get_pretrained_cfg(name), "fixed_input_size", False)
    except RuntimeError as exc:  # a pretrained tag the model does not have: resnet18.nonsense
        raise ConfigError(f"model.options.name: {exc}") from None
    size = {"img_size": (info.height, info.width)} if fixed else {}  # every family of timm 1.0.31 takes it
    arguments = {"pretrained": False, **options, "num_classes": info.num_classes, "in_chans": info.channels, **size}
    model = timm.create_model(name, **arguments)
    _check_images(model, name, info)
    if not batchnorm_affine:
        _fix_batchnorm_scale(model)
    _twice_differentiable(model)
    for module in model.modules():  # attention written out (timm's non-fused path): differentiable twice
        if isinstance(getattr(module, "fused_attn", None), bool):
            module.fused_attn = False
    return model


def _check_options(name: object, options: dict[str, Any]) -> None:
    for key in _SET_BY_LIPCLI:
        if key in options:
            raise ConfigError(f"model.options.{key}: set by lipcli from the data set, not an option of timm")
    for key in ("pretrained", "checkpoint_path"):
        if options.get(key):
            entry = str(name).split(".")[0]
            raise ConfigError(
                f"model.options.{key}: the timm architecture is built with random weights, which lipcli trains "
                f"(nothing is downloaded); to evaluate a timm model with weights of your own: lipcli curve --model "
                f"timm.models:{entry} --weights FILE --dataset NAME (a lipcli run's: lipcli curve RUN/best.pt)")


def _check_images(model: nn.Module, name: str, info: DatasetInfo) -> None:
    """One forward pass of a blank image in eval mode (no statistics change, no randomness drawn): a model that
    cannot take the data set's images fails here in one line, not in the first training step."""
    training = model.training
    try:
        with torch.no_grad():
            out = model.eval()(torch.zeros(1, *info.input_shape))
    except (RuntimeError, AssertionError, ValueError, IndexError, ZeroDivisionError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise ConfigError(f"model.options.name: timm's {name} cannot take the {info.height}x{info.width} images "
                          f"of the data set {info.name!r} ({type(exc).__name__}: {first})") from None
    finally:
        model.train(training)
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != (1, info.num_classes):
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ConfigError(f"model.options: timm's {name} so built returns {shape} for one image, not one score "
                          f"per class (1, {info.num_classes})")

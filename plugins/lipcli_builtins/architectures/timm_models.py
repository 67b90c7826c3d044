"""timm's models (PyTorch Image Models) as the lipcli architecture ``timm``, registered when timm is installed
(``pip install "lipcli[timm]"``).

timm has over a thousand models, and naming them needs an import of timm (and torch), which ``lipcli list`` must not
pay: so there is one architecture, ``timm``, whose option ``name`` picks the model (``--arch timm --set
model.options.name=resnet18``). This module imports neither torch nor timm: the model is built by
:mod:`lipcli_builtins.architectures.timm_build` the first time one is asked for.

The factory takes ``info`` and ``batchnorm_affine`` as every lipcli architecture does, and hands any other
``model.options`` to ``timm.create_model`` (``drop_rate``, ``drop_path_rate``, ``act_layer``, ...).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torch import nn

    from lipcli.api import DatasetInfo

DEFAULT = "test_resnet"
"""The model built without ``model.options.name``, and the one the architecture contract checks: timm's smallest
ResNet (370 thousand parameters, BatchNorm, any image size), built in a fraction of a second on a CPU. timm's
``test_*`` models exist from timm 1.0.10 on, the version the ``timm`` extra requires."""

DESCRIPTION = (f"timm's models, untrained: model.options.name picks one (default {DEFAULT}; "
               "timm.list_models() names them)")
"""The one line ``lipcli list`` shows."""


def timm_model(info: DatasetInfo, *, batchnorm_affine: bool = False, name: str = "test_resnet",
               **options: Any) -> nn.Module:
    """timm's model ``name``, untrained, for ``info``'s classes, channels and (where fixed) image size."""
    from lipcli_builtins.architectures.timm_build import build_timm

    return build_timm(name, info, batchnorm_affine=batchnorm_affine, options=options)

"""First-party lipcli plugin: the architectures of the paper (AllCNN-C, ResNet34, ResNeXt34), small CPU models,
torchvision's classification models as ``tv-<name>`` (``tv-resnet18``, ...), and, when timm is installed (the
``timm`` extra), timm's models as ``timm`` (``model.options.name`` picks one).

The module itself imports nothing heavy: torch and the model code load only when the architecture
registry is first built, so ``lipcli --help`` and plugin discovery stay fast; timm is found, not imported.
"""

from __future__ import annotations

import importlib.util

from lipcli.api import Register, hookimpl


@hookimpl
def register_architectures(register: Register) -> None:
    """Register the built-in architectures (every BatchNorm without affine parameters by default, as in the paper)."""
    from lipcli_builtins.architectures import timm_models, torchvision_models  # plain Python: no torch

    register(
        "allcnn", "lipcli_builtins.architectures.allcnn:build_allcnn",
        "AllCNN-C (Springenberg et al.): 9 convolutions, 96/192 channels, BatchNorm after each",
    )
    register(
        "resnet34", "lipcli_builtins.architectures.resnet:build_resnet34",
        "ResNet34 (CIFAR-style, 6n+4 layers, n=5): basic residual blocks, widths 16/32/64",
    )
    register(
        "resnext34", "lipcli_builtins.architectures.resnet:build_resnext34",
        "ResNeXt34 2x32d: basic blocks whose grouped branches are averaged; cardinality=4 for CIFAR-100",
    )
    register(
        "small-cnn", "lipcli_builtins.architectures.small:build_small_cnn",
        "Three-convolution CNN for quick CPU runs and tests",
    )
    register(
        "mlp", "lipcli_builtins.architectures.small:build_mlp",
        "Fully connected network (Linear, BatchNorm, ReLU blocks) for quick CPU runs",
    )
    for name in torchvision_models.models():
        skip = torchvision_models.contract_skip(name)
        register(
            f"tv-{name}", f"lipcli_builtins.architectures.torchvision_models:tv_{name}",
            torchvision_models.description(name), **({"contract_skip": skip} if skip else {}),
        )
    if importlib.util.find_spec("timm") is not None:  # installed (the timm extra); found without importing it
        register("timm", "lipcli_builtins.architectures.timm_models:timm_model", timm_models.DESCRIPTION)

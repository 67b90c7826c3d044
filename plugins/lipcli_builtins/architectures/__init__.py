"""First-party lipcli plugin: the architectures of the paper (AllCNN-C, ResNet34, ResNeXt34) and small CPU models.

The module itself imports nothing heavy: torch and the model code load only when the architecture
registry is first built, so ``lipcli --help`` and plugin discovery stay fast.
"""

from __future__ import annotations

from lipcli.api import Register, hookimpl


@hookimpl
def register_architectures(register: Register) -> None:
    """Register the built-in architectures (every BatchNorm without affine parameters by default, as in the paper)."""
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

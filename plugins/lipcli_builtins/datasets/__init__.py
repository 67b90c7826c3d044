"""First-party lipcli plugin: the built-in data sets (CIFAR-10/100, MNIST, Fashion-MNIST, your own images and
arrays, digits, synthetic).

Registered through the same ``lipcli`` entry-point group as any third-party plugin. The module imports
nothing heavy: torch, numpy and the readers load only when the dataset registry is first built.
"""

from __future__ import annotations

from lipcli.api import Register, hookimpl


@hookimpl
def register_datasets(register: Register) -> None:
    """Register the built-in data sets; file-based ones read offline from ``data_dir`` or the cache folder."""
    register("cifar10", "lipcli_builtins.datasets.sources:cifar10",
        "CIFAR-10: 50,000 + 10,000 colour 32x32 images, 10 classes")
    register("cifar100", "lipcli_builtins.datasets.sources:cifar100",
        "CIFAR-100: 50,000 + 10,000 colour 32x32 images, 100 fine classes")
    register("mnist", "lipcli_builtins.datasets.sources:mnist",
        "MNIST: 60,000 + 10,000 grey 28x28 handwritten digits, 10 classes")
    register(
        "fashion-mnist", "lipcli_builtins.datasets.sources:fashion_mnist",
        "Fashion-MNIST: 60,000 + 10,000 grey 28x28 clothing images, 10 classes",
    )
    register(
        "image-folder", "lipcli_builtins.datasets.sources:image_folder",
        "Your own images: DATA_DIR/{train,test}/CLASS/*.png|jpg|jpeg|bmp|webp, classes from the folder names",
        reading_options=("stream", "workers", "max_memory_gb"),  # how the images are read, not which
    )
    register(
        "npz", "lipcli_builtins.datasets.sources:npz",
        "Your own arrays: x_train, y_train, x_test, y_test in an .npz file (or .npy files), uint8 or float in [0, 1]",
    )
    register(
        "digits", "lipcli_builtins.datasets.sources:digits",
        "scikit-learn's bundled 8x8 grey digits: 1,797 images, 10 classes, no files needed (CPU-quick)",
        files=False,
    )
    register(
        "synthetic", "lipcli_builtins.datasets.sources:synthetic",
        "Generated from a seed: one random prototype per class plus Gaussian noise (any size, for tests)",
        files=False,
    )

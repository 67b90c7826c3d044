"""A generated data set: stripes in four orientations plus noise, so nothing is downloaded."""

from __future__ import annotations

import torch

from lipcli.api import DatasetInfo, DataSplits, ImageSet

CLASSES = ("horizontal", "vertical", "diagonal", "anti-diagonal")


def stripes(
    *, data_dir: str | None = None, download: bool = False, size: int = 12, train_size: int = 2000,
    test_size: int = 500, noise: float = 0.25, seed: int = 0,
) -> DataSplits:
    """Grey ``size`` x ``size`` images of stripes (period 4, random phase and contrast) in one of four
    orientations, plus Gaussian noise, clipped to [0, 1]. ``data_dir`` and ``download`` are not used."""
    for key, value in (("size", size), ("train_size", train_size), ("test_size", test_size)):
        if not isinstance(value, int) or value < (4 if key == "size" else 1):
            raise ValueError(f"{key} must be an integer of at least {4 if key == 'size' else 1}, got {value!r}")
    if not 0 <= noise <= 1:
        raise ValueError(f"noise must be in [0, 1], got {noise!r}")
    generator = torch.Generator().manual_seed(seed)
    rows, columns = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    coordinate = torch.stack([rows, columns, rows + columns, rows - columns]).float()  # one per class

    def draw(count: int) -> ImageSet:
        labels = torch.randint(0, len(CLASSES), (count,), generator=generator)
        phase = torch.rand(count, 1, 1, generator=generator) * 4
        contrast = 0.3 + 0.4 * torch.rand(count, 1, 1, generator=generator)
        wave = torch.cos((coordinate[labels] + phase) * torch.pi / 2)
        images = 0.5 + contrast * wave + noise * torch.randn(count, size, size, generator=generator)
        return ImageSet(images.clamp(0, 1).unsqueeze(1), labels)

    info = DatasetInfo("example-stripes", 1, size, size, len(CLASSES), CLASSES)
    return DataSplits(info, draw(train_size), draw(test_size))

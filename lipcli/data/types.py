"""The data set types that dataset plugins return.

Images are held whole in memory (uint8 where the source is 8-bit, so CIFAR-10 is 150 MB) and batched by
slicing tensors: no per-sample Python work on the training path, and augmentation runs on the device. A set
too large for memory holds :class:`lipcli.data.image_files.ImageFiles` instead, read a batch at a time.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch

from lipcli.data.image_files import ImageFiles


@dataclass(frozen=True)
class DatasetInfo:
    """What an architecture needs to know about its data: shape and classes."""

    name: str
    channels: int
    height: int
    width: int
    num_classes: int
    class_names: tuple[str, ...] = field(default=())

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (self.channels, self.height, self.width)

    @property
    def input_dim(self) -> int:
        """n, the input dimension (the sqrt(n) of the paper's FGSM step and Lip1 lambda)."""
        return self.channels * self.height * self.width

    def to_dict(self) -> dict[str, object]:
        return {
            "name": self.name, "channels": self.channels, "height": self.height, "width": self.width,
            "num_classes": self.num_classes, "class_names": list(self.class_names),
        }

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> "DatasetInfo":
        return cls(
            name=str(data["name"]), channels=int(data["channels"]), height=int(data["height"]),  # type: ignore[arg-type]
            width=int(data["width"]), num_classes=int(data["num_classes"]),  # type: ignore[arg-type]
            class_names=tuple(str(c) for c in data.get("class_names", ())),  # type: ignore[union-attr]
        )


@dataclass
class ImageSet:
    """Images ``[N, C, H, W]`` (uint8 in 0..255, or float in [0, 1]; or image files read a batch at a time) and
    int64 labels ``[N]``."""

    images: torch.Tensor | ImageFiles
    labels: torch.Tensor
    positions: torch.Tensor | None = None
    """Where a selection of a split (:meth:`take`) came from: each image's index in the split; None for a split
    itself or its first images (indices 0 to N-1)."""

    def __post_init__(self) -> None:
        if self.images.ndim != 4:
            raise ValueError(f"images must be [N, C, H, W], got shape {tuple(self.images.shape)}")
        if self.labels.shape != (self.images.shape[0],):
            raise ValueError(
                f"labels must be [N] with N = {self.images.shape[0]}, got shape {tuple(self.labels.shape)}"
            )
        if self.images.dtype not in (torch.uint8, torch.float32, torch.float64):
            raise ValueError(f"images must be uint8 or float, got {self.images.dtype}")
        self.labels = self.labels.to(torch.int64)
        if self.positions is not None:
            if self.positions.shape != self.labels.shape:
                raise ValueError(f"positions must be [N] with N = {len(self.labels)}, "
                                 f"got shape {tuple(self.positions.shape)}")
            self.positions = self.positions.to(torch.int64)
            if torch.equal(self.positions, torch.arange(len(self.positions))):
                self.positions = None  # the first N images, however they were chosen

    def __len__(self) -> int:
        return self.images.shape[0]

    def read(self, rows: torch.Tensor | slice) -> torch.Tensor:
        """The images at ``rows`` (indices or a bool mask, on any device; or a slice) as a tensor on the CPU,
        read from their files where the set is streamed."""
        chosen = self.images[rows.cpu() if isinstance(rows, torch.Tensor) else rows]
        return chosen.read() if isinstance(chosen, ImageFiles) else chosen

    def as_float(self, images: torch.Tensor) -> torch.Tensor:
        """Convert a slice of :attr:`images` to float32 in [0, 1] (after it has moved to the device)."""
        if images.dtype == torch.uint8:
            return images.to(torch.float32).div_(255.0)
        return images.to(torch.float32)

    @property
    def index(self) -> torch.Tensor:
        """Each image's index in the split it was selected from (:attr:`positions`, or 0 to N-1)."""
        return torch.arange(len(self)) if self.positions is None else self.positions

    def sha256(self) -> str:
        """The hex SHA-256 of the images' and labels' bytes (and their positions, for a selection other than the
        first images): results record exactly which images they measured, wherever the files were read from."""
        digest = hashlib.sha256()
        for tensor in (self.images, self.labels, *(() if self.positions is None else (self.positions,))):
            digest.update(str((tuple(tensor.shape), tensor.dtype)).encode())
            if isinstance(tensor, ImageFiles):  # the bytes of the pixels read, as for images in memory
                rows = torch.arange(len(tensor)).split(1024)
                chunks: Iterator[torch.Tensor] | tuple[torch.Tensor, ...] = tensor.stream(rows)
            else:
                chunks = (tensor,)
            for chunk in chunks:
                digest.update(chunk.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
        return digest.hexdigest()

    def subset(self, limit: int | None) -> "ImageSet":
        """The first ``limit`` images (all when None)."""
        if limit is None or limit >= len(self):
            return self
        positions = None if self.positions is None else self.positions[:limit]
        return ImageSet(self.images[:limit], self.labels[:limit], positions)  # views: no copy, no reading

    def take(self, rows: torch.Tensor) -> "ImageSet":
        """The images at ``rows`` (int64 indices into this set), in that order, keeping their positions in the
        split."""
        return ImageSet(self.images[rows], self.labels[rows], self.index[rows])


@dataclass
class DataSplits:
    """A data set as a plugin returns it: metadata plus train and test splits."""

    info: DatasetInfo
    train: ImageSet
    test: ImageSet

    def __post_init__(self) -> None:
        for split_name, split in (("train", self.train), ("test", self.test)):
            if tuple(split.images.shape[1:]) != self.info.input_shape:
                raise ValueError(
                    f"{self.info.name} {split_name} images have shape {tuple(split.images.shape[1:])}, "
                    f"metadata says {self.info.input_shape}"
                )

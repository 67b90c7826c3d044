"""Images read from their files a batch at a time: an image set too large to hold in memory.

:class:`ImageFiles` stands where :attr:`lipcli.data.types.ImageSet.images` holds a tensor. It has the images'
shape and dtype (uint8), and indexing it (a slice, int64 or bool indices) chooses files without reading any,
so a selection of test images, a held-out split or an epoch's order cost no reading. Pixels are read only by
:meth:`ImageFiles.stream`, in DataLoader worker processes, into pinned memory for a GPU, ahead of the batch
being used (DataLoader's prefetch: two batches per worker); :func:`lipcli.data.batches.iterate_batches` reads every batch of a training epoch or an
attack this way.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from lipcli.errors import DataError


class ImageFiles:
    """``N`` image files read as uint8 ``[N, C, H, W]``: ``decode(file)`` gives one image's ``[C, H, W]`` pixels
    (a function of the module level, or a :func:`functools.partial` of one, so that worker processes can
    receive it) and raises :class:`lipcli.api.DataError` naming a file it cannot read. ``workers``: the
    DataLoader processes that read (0: read in this process)."""

    dtype = torch.uint8
    ndim = 4

    def __init__(self, files: Sequence[str], shape: tuple[int, int, int], decode: Callable[[str], np.ndarray],
                 workers: int = 0) -> None:
        if workers < 0:
            raise ValueError(f"workers must be at least 0, got {workers}")
        self.files = tuple(files)
        self.image_shape = tuple(shape)
        self.decode = decode
        self.workers = workers

    @property
    def shape(self) -> torch.Size:
        return torch.Size((len(self.files), *self.image_shape))

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, key: slice | torch.Tensor | Sequence[int]) -> "ImageFiles":
        """The files chosen by ``key``, unread."""
        if isinstance(key, slice):
            chosen: Sequence[str] = self.files[key]
        else:
            index = torch.as_tensor(key)
            if index.dtype == torch.bool:
                index = index.nonzero().flatten()
            chosen = [self.files[i] for i in index.cpu().tolist()]
        return ImageFiles(chosen, self.image_shape, self.decode, self.workers)

    def read(self) -> torch.Tensor:
        """Every image, read in this process."""
        pixels = np.empty(tuple(self.shape), dtype=np.uint8)
        for row, file in enumerate(self.files):
            pixels[row] = self.decode(file)
        return torch.from_numpy(pixels)

    def stream(self, batches: Sequence[torch.Tensor], *, pin: bool = False) -> Iterator[torch.Tensor]:
        """The images of each batch of rows in turn, read by :attr:`workers` processes ahead of their use (in
        this process when there are none or a single batch); ``pin``: into pinned memory, for a copy to a GPU
        that overlaps the next read."""
        workers = self.workers if len(batches) > 1 else 0
        loader = DataLoader(_Batches(self, batches), batch_size=None, shuffle=False, num_workers=workers,
                            pin_memory=pin)
        for images, error in loader:
            if error:  # raised here, not in the worker, so that it stays one line naming the file
                raise DataError(error)
            yield images


class _Batches(Dataset):
    """Batch ``i`` of an :class:`ImageFiles`: (its pixels, "") or (an empty tensor, the read error)."""

    def __init__(self, files: ImageFiles, batches: Sequence[torch.Tensor]) -> None:
        self.files, self.batches = files, batches

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, number: int) -> tuple[torch.Tensor, str]:
        try:
            return self.files[self.batches[number]].read(), ""
        except DataError as exc:
            return torch.empty(0, dtype=torch.uint8), str(exc)


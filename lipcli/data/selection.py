"""Which test images an evaluation measures: ``--limit``, ``--offset`` and ``--indices FILE``.

The images keep their positions in the test split (:attr:`lipcli.data.types.ImageSet.positions`), so every file
an evaluation writes names each image by its index in the split, and results of two selections never pass for
one another: the positions are part of the images' digest.
"""

from __future__ import annotations

import csv
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lipcli.data.types import ImageSet
from lipcli.errors import ConfigError, DataError


@dataclass(frozen=True)
class Selection:
    """The first ``limit`` test images (all when None) from position ``offset`` on, or of ``indices`` in the
    order given; ``indices_file`` says where the indices were read (recorded, not used)."""

    limit: int | None = None
    offset: int = 0
    indices: tuple[int, ...] | None = None
    indices_file: str | None = None

    def __post_init__(self) -> None:
        if self.limit is not None and self.limit < 1:
            raise ConfigError(f"limit: must be at least 1, got {self.limit}")
        if self.offset < 0:
            raise ConfigError(f"offset: must be at least 0, got {self.offset}")
        if self.indices is None:
            return
        if self.offset:
            raise ConfigError("offset: --offset counts from the start of the test split; with --indices, list the "
                              "images wanted instead")
        if not self.indices:
            raise DataError(f"indices: {self.indices_file or 'the list'} names no image")
        if min(self.indices) < 0:
            raise DataError(f"indices: {min(self.indices)} is negative; indices count from 0")
        repeated = sorted(index for index, count in Counter(self.indices).items() if count > 1)
        if repeated:
            raise DataError(f"indices: image {repeated[0]} is listed twice; each image counts once in a curve")

    def apply(self, split: ImageSet) -> ImageSet:
        """The selected images of ``split`` (the whole test split), each with its position in it."""
        size = len(split)
        if self.indices is not None:
            beyond = max(self.indices)
            if beyond >= size:
                raise DataError(f"indices: image {beyond} is beyond the {size} test images (indices 0 to {size - 1})")
            positions = torch.tensor(self.indices[: self.limit], dtype=torch.int64)
        elif self.offset == 0:
            return split.subset(self.limit)  # views of the split's tensors, no copy
        elif self.offset >= size:
            raise DataError(f"offset: {self.offset} is beyond the {size} test images")
        else:
            end = size if self.limit is None else min(size, self.offset + self.limit)
            positions = torch.arange(self.offset, end)
        return split.take(positions)

    def describe(self) -> dict[str, Any]:
        """How the images were chosen, for a summary (the chosen positions themselves are in its CSV)."""
        return {"limit": self.limit, "offset": self.offset, "indices_file": self.indices_file}


EVERY = Selection()
"""Every test image."""


def read_indices(path: Path) -> tuple[int, ...]:
    """Test-set indices from a file: a 1-d integer ``.npy`` array; a table (comma, tab or semicolon separated)
    with an ``index`` column, such as the ``distances.csv`` of another evaluation, to measure the same images;
    or integers separated by spaces, commas or new lines, with ``#`` comments. Each must be written in
    ASCII digits (an optional minus sign is reported as negative), so a typo is an error, not an index."""
    path = Path(path)
    try:
        if path.suffix.lower() == ".npy":
            array = np.load(path, allow_pickle=False)
            if array.ndim != 1 or not np.issubdtype(array.dtype, np.integer):
                raise DataError(f"indices: {path} holds a {array.dtype} array of shape {list(array.shape)}; "
                                "an index file holds one row of integers")
            return tuple(int(i) for i in array)
        text = path.read_text(encoding="utf-8-sig")  # a spreadsheet's UTF-8 CSV starts with a byte order mark
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise DataError(f"indices: cannot read {path}: {exc}") from None
    first = text.lstrip().split("\n", 1)[0].split("#", 1)[0].strip()
    if first == "index" or (re.search(r"[A-Za-z_]", first) and re.search(r"[,\t;]", first)):  # a table's header
        try:
            dialect = csv.Sniffer().sniff(first, delimiters=",\t;")
        except csv.Error:
            dialect = csv.excel
        rows = csv.DictReader(text.splitlines(), dialect=dialect)
        if "index" not in (rows.fieldnames or []):
            raise DataError(f"indices: {path} has no 'index' column (its first line is {first!r}); give a table "
                            "whose header names an index column, or integers alone")
        cells = [row["index"] or "" for row in rows]
    else:
        cells = [cell for line in text.splitlines() for cell in re.split(r"[\s,]+", line.split("#", 1)[0]) if cell]
    bad = next((cell for cell in cells if not re.fullmatch(r"-?[0-9]+", cell.strip())), None)
    if bad is not None:
        raise DataError(f"indices: {path}: {bad!r} is not an index; an index file holds integers (0, 1, 2, ...)")
    return tuple(int(cell) for cell in cells)

"""Reading an image folder a batch at a time (``data.options.stream``) against holding it in memory.

Writes a folder of random JPEG images (default 4000 of 96x96, read at ``resize`` 64), then, side by side in
this process: the in-memory set (decoding every image at load, then one epoch of batches), and the streamed
set (headers only at load, then one epoch whose batches DataLoader workers decode), with 0 workers and with
``--workers``. Prints each one's load and epoch seconds and the streamed epochs' ratios to the in-memory
load plus epoch: the price of streaming an epoch, and how much the workers win back. The batches are
checked to be identical.

    python benchmarks/bench_streamed_data.py [--images 4000] [--size 96] [--resize 64] [--batch-size 256]
        [--workers N] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from lipcli.data.batches import epoch_order, iterate_batches
from lipcli.data.types import DataSplits
from lipcli.device import select_device
from lipcli_builtins.datasets import sources


def write_folder(root: Path, images: int, size: int, classes: int = 10) -> None:
    rng = np.random.default_rng(0)
    for index in range(images):
        folder = root / ("train" if index % 5 else "test") / f"c{index // 5 % classes}"
        folder.mkdir(parents=True, exist_ok=True)
        smooth = rng.integers(0, 256, (size // 8, size // 8, 3), dtype=np.uint8)  # JPEG-like content, not noise
        Image.fromarray(smooth).resize((size, size), Image.Resampling.BILINEAR).save(folder / f"{index}.jpg",
                                                                                     quality=90)


def epoch(splits: DataSplits, batch_size: int, device: torch.device) -> tuple[float, list[torch.Tensor]]:
    """Seconds for one shuffled epoch of the training images, and a checksum per batch."""
    order = epoch_order(len(splits.train), seed=0, epoch=0, batch_size=batch_size)
    started = time.perf_counter()
    sums = [images.sum().cpu() for images, _ in iterate_batches(splits.train, batch_size, device, order)]
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - started, sums


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=4000)
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--resize", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1))
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    device = select_device(args.device)
    with tempfile.TemporaryDirectory() as folder:
        write_folder(Path(folder), args.images, args.size)
        rows = []
        for label, options in (("in memory", {"stream": False}),
                               ("streamed, 0 workers", {"stream": True, "workers": 0}),
                               (f"streamed, {args.workers} workers", {"stream": True, "workers": args.workers})):
            started = time.perf_counter()
            splits = sources.image_folder(data_dir=folder, resize=args.resize, **options)
            load = time.perf_counter() - started
            seconds, sums = epoch(splits, args.batch_size, device)
            rows.append((label, load, seconds, sums))
    reference = rows[0][3]
    assert all(torch.equal(torch.stack(sums), torch.stack(reference)) for *_, sums in rows), "batches differ"
    memory = rows[0][1] + rows[0][2]
    print(f"{args.images * 4 // 5} training images {args.size}x{args.size} JPEG read at {args.resize}x{args.resize}, "
          f"batches of {args.batch_size}, on {device}; {os.cpu_count()} CPU cores")
    print(f"{'':24} {'load s':>8} {'epoch s':>8} {'(load + epoch) / in memory':>27}")
    for label, load, seconds, _ in rows:
        print(f"{label:24} {load:8.2f} {seconds:8.2f} {(load + seconds) / memory:27.2f}")


if __name__ == "__main__":
    main()

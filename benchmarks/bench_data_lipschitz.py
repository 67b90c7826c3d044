"""The data Lipschitz constant of Fashion-MNIST's 60,000 training images, lipcli against a plain baseline.

Target (issue 5): lipcli's ``closest_pair`` (symmetric blocks, single-label blocks skipped, exact float64
recheck) takes at most 0.6x the time of the baseline written here: chunks of rows against the whole set,
float32 ``||a||^2 + ||b||^2 - 2ab``, same-label pairs masked, the row minima kept. Both run in this process,
one after the other, on the same data and device; the printed values are ``Lip = 1 / distance`` (Table 2 of
the paper prints 0.626).

    python benchmarks/bench_data_lipschitz.py [--data-dir DIR] [--chunk 4096] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import math
import time

import torch

from lipcli.config import resolve
from lipcli.data.load import load_data
from lipcli.data.types import ImageSet
from lipcli.lipschitz.data import closest_pair
from lipcli.plugin_host import get_host


def baseline(data: ImageSet, chunk: int, device: torch.device) -> float:
    """The smallest distance between images of different labels, by plain chunked matrix products."""
    points = data.as_float(data.images).flatten(1).to(device)
    labels = data.labels.to(device)
    norms = points.pow(2).sum(1)
    best = math.inf
    for start in range(0, len(points), chunk):
        rows = slice(start, start + chunk)
        squared = norms[rows, None] + norms[None, :] - 2 * points[rows] @ points.T
        squared[labels[rows, None] == labels[None, :]] = math.inf
        best = min(best, float(squared.min()))
    return math.sqrt(max(best, 0.0))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default="/usr/share/datasets/fashion-mnist")
    parser.add_argument("--chunk", type=int, default=4096)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    config = resolve(None, {}, ["data.dataset='fashion-mnist'", f"data.data_dir={args.data_dir!r}"])
    train = load_data(config.data, get_host()).train
    print(f"fashion-mnist train: {len(train)} images, chunk {args.chunk}, on {device}", flush=True)

    started = time.perf_counter()
    plain = baseline(train, args.chunk, device)
    plain_seconds = time.perf_counter() - started
    print(f"baseline  Lip {1 / plain:.6f} (distance {plain:.9f})  {plain_seconds:7.1f} s", flush=True)

    started = time.perf_counter()
    pair = closest_pair(train, chunk=args.chunk, device=device)
    ours_seconds = time.perf_counter() - started
    print(f"lipcli    Lip {pair.lipschitz:.6f} (distance {pair.distance:.9f}, images {pair.first} and "
          f"{pair.second})  {ours_seconds:7.1f} s")
    print(f"time ratio lipcli / baseline: {ours_seconds / plain_seconds:.3f} (target <= 0.6)")


if __name__ == "__main__":
    main()

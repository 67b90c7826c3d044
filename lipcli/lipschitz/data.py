"""The Lipschitz constant of a data set (Appendix C, Table 2) and nearest-distinct-neighbour distances.

``Lip_{2,inf}(D) = max ||c(x1) - c(x2)||_inf / ||x1 - x2||_2`` over pairs with different labels, with c the
one-hot label: 1 over the smallest l2 distance between two images of different classes. Exact duplicates
that carry different labels would make it infinite; like the paper (CIFAR-100), they are dropped and
reported.

Speed with exactness: squared distances come from chunked float32 matrix products
``||a||^2 + ||b||^2 - 2 a.b`` (the GPU's when there is one), which may be off by rounding; ``tolerance``
bounds that error for every pair (the worst case of a float32 dot product of length n is
``n u / (1 - n u) * ||a|| ||b||``, u = 2^-24, plus the roundings of the sum). Every pair that could be the
true minimum (an approximate value within twice the tolerance of the smallest) is then recomputed in float64,
so the answer is the exact float64 distance. The training-set problem is symmetric, so only blocks on or
above the diagonal are computed, and blocks whose images all share one label (the data is sorted by label
first) are skipped.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from lipcli.data.types import ImageSet
from lipcli.precision import full_float32
from lipcli.reporting import SILENT, Reporter

UNIT_ROUNDOFF = 2.0 ** -24


@dataclass
class ClosestPair:
    """The closest pair of images with different labels: its exact l2 distance and indices in the set."""

    distance: float
    first: int
    second: int

    @property
    def lipschitz(self) -> float:
        """``Lip_{2,inf}(D) = 1 / distance`` (inf when the distance is 0)."""
        return 1.0 / self.distance if self.distance > 0 else math.inf


def conflicting_duplicates(data: ImageSet) -> torch.Tensor:
    """Indices (sorted) of images that have an exact duplicate carrying a different label (compared as the
    float32 values the distances are computed from, so no kept pair of different labels is at distance 0)."""
    flat = _flat(data)
    if len(data) == 0:
        return torch.zeros(0, dtype=torch.int64)
    _, group = torch.unique(flat, dim=0, return_inverse=True)
    groups = int(group.max()) + 1
    low = torch.full((groups,), torch.iinfo(torch.int64).max).scatter_reduce(0, group, data.labels, "amin")
    high = torch.full((groups,), -1, dtype=torch.int64).scatter_reduce(0, group, data.labels, "amax")
    return (low[group] != high[group]).nonzero().flatten()


def squared_norms(points: torch.Tensor, chunk: int = 4096) -> torch.Tensor:
    """``||x||^2`` per row of ``[N, n]`` ``points``, in float64, a chunk at a time (no float64 copy of all)."""
    return torch.cat([points[i : i + chunk].double().pow(2).sum(1) for i in range(0, len(points), chunk)]) \
        if len(points) else torch.zeros(0, dtype=torch.float64)


def tolerance(largest_squared_norm: float, dimension: int) -> float:
    """An upper bound of ``|float32 ||a - b||^2 - exact|`` for rows whose squared norms are at most
    ``largest_squared_norm``."""
    gamma = dimension * UNIT_ROUNDOFF / (1 - dimension * UNIT_ROUNDOFF)
    return 2 * gamma * largest_squared_norm + 8 * UNIT_ROUNDOFF * largest_squared_norm + 1e-30


def exact_squared_distances(points: torch.Tensor, row: torch.Tensor, chunk: int = 4096) -> torch.Tensor:
    """``||points_i - row||^2`` for every row of ``points``, in float64 from the differences (no cancellation),
    on the points' device."""
    target = row.double()
    return torch.cat([(points[i : i + chunk].double() - target).pow(2).sum(1) for i in range(0, len(points), chunk)])


def _blocks(size: int, chunk: int) -> list[tuple[int, int]]:
    return [(start, min(start + chunk, size)) for start in range(0, size, chunk)]


def _flat(data: ImageSet) -> torch.Tensor:
    """The images as float32 rows ``[N, n]`` in [0, 1] (the values the models see)."""
    return data.as_float(data.images).flatten(1)


def closest_pair(
    data: ImageSet, *, chunk: int = 4096, device: torch.device | None = None, reporter: Reporter = SILENT
) -> ClosestPair:
    """The exact closest pair of images with different labels in ``data`` (distance ``inf`` when none)."""
    device = device or torch.device("cpu")
    order = torch.argsort(data.labels, stable=True)  # label-sorted, so single-label blocks can be skipped
    sorted_labels = data.labels[order]
    flat = _flat(data)[order]
    exact_norms = squared_norms(flat)
    slack = 2 * tolerance(float(exact_norms.max()) if len(flat) else 0.0, flat.shape[1])
    points, norms, labels = flat.to(device), exact_norms.float().to(device), sorted_labels.to(device)
    blocks = _blocks(len(data), chunk)
    best = torch.full((len(data),), math.inf, device=device)  # per image, smallest approximate squared distance
    pairs = [(i, j) for i in range(len(blocks)) for j in range(i, len(blocks))
             if not _one_label(sorted_labels, blocks[i], blocks[j])]
    with full_float32(), reporter.task("pairs of blocks", len(pairs)) as task:
        for i, j in pairs:
            (a0, a1), (b0, b1) = blocks[i], blocks[j]
            squared = norms[a0:a1, None] + norms[None, b0:b1] - 2 * points[a0:a1] @ points[b0:b1].T
            squared.masked_fill_(labels[a0:a1, None] == labels[None, b0:b1], math.inf)
            torch.minimum(best[a0:a1], squared.amin(1), out=best[a0:a1])
            torch.minimum(best[b0:b1], squared.amin(0), out=best[b0:b1])
            task.advance(1)
    best = best.cpu().double()
    if not torch.isfinite(best).any():
        return ClosestPair(math.inf, -1, -1)
    found = ClosestPair(math.inf, -1, -1)
    for row in (best <= best.min() + slack).nonzero().flatten().tolist():  # a handful: exact nearest distinct
        squared = exact_squared_distances(points, points[row]).cpu()
        squared[sorted_labels == sorted_labels[row]] = math.inf
        column = int(squared.argmin())
        distance = float(squared[column].sqrt())
        if distance < found.distance:
            found = ClosestPair(distance, *sorted((int(order[row]), int(order[column]))))
    return found


def _one_label(labels: torch.Tensor, first: tuple[int, int], second: tuple[int, int]) -> bool:
    """Whether every image of both blocks has the same label (labels sorted, so the ends tell)."""
    ends = {int(labels[first[0]]), int(labels[first[1] - 1]), int(labels[second[0]]), int(labels[second[1] - 1])}
    return len(ends) == 1


def nearest_distinct(
    queries: ImageSet, reference: ImageSet, *, chunk: int = 4096, candidates: int = 16,
    device: torch.device | None = None, reporter: Reporter = SILENT,
) -> torch.Tensor:
    """Per query image, the exact l2 distance (float64 ``[Q]``) to the nearest reference image with a
    different label; ``inf`` where the reference has no other label.

    Each query keeps its ``candidates`` nearest approximate distances; when the largest kept one could still
    hide the true nearest (within twice the tolerance of the smallest), the query is recomputed in full.
    """
    device = device or torch.device("cpu")
    result = torch.full((len(queries),), math.inf, dtype=torch.float64)
    if len(reference) == 0:
        return result
    reference_flat, query_flat = _flat(reference), _flat(queries)
    reference_norms, query_norms = squared_norms(reference_flat), squared_norms(query_flat)
    largest = max([float(n.max()) for n in (reference_norms, query_norms) if len(n)], default=0.0)
    slack = 2 * tolerance(largest, reference_flat.shape[1])
    ref_points, ref_norms = reference_flat.to(device), reference_norms.float().to(device)
    ref_labels = reference.labels.to(device)
    keep = min(candidates, len(reference))
    query_blocks = _blocks(len(queries), chunk)
    with full_float32(), reporter.task("nearest distinct neighbours", len(query_blocks)) as task:
        for q0, q1 in query_blocks:
            points, norms = query_flat[q0:q1].to(device), query_norms[q0:q1].float().to(device)
            labels = queries.labels[q0:q1].to(device)
            kept_values = torch.full((q1 - q0, 0), math.inf, device=device)
            kept_index = torch.zeros((q1 - q0, 0), dtype=torch.int64, device=device)
            for r0, r1 in _blocks(len(reference), chunk):
                squared = norms[:, None] + ref_norms[None, r0:r1] - 2 * points @ ref_points[r0:r1].T
                squared.masked_fill_(labels[:, None] == ref_labels[None, r0:r1], math.inf)
                values = torch.cat([kept_values, squared], dim=1)
                index = torch.cat([kept_index, torch.arange(r0, r1, device=device).expand(q1 - q0, -1)], dim=1)
                kept_values, position = values.topk(min(keep, values.shape[1]), dim=1, largest=False)
                kept_index = index.gather(1, position)
            result[q0:q1] = _exact_rows(points, labels, ref_points, ref_labels, kept_values, kept_index,
                                        slack if keep < len(reference) else None).cpu()
            task.advance(1)
    return result


def _exact_rows(
    queries: torch.Tensor, query_labels: torch.Tensor, reference: torch.Tensor, reference_labels: torch.Tensor,
    kept_values: torch.Tensor, kept_index: torch.Tensor, slack: float | None,
) -> torch.Tensor:
    """Exact nearest-distinct distances of a block of queries from their kept candidates (float64).

    ``slack`` None: every reference image was kept, so the candidates are complete."""
    exact = torch.stack([
        (queries.double() - reference[kept_index[:, k]].double()).pow(2).sum(1) for k in range(kept_index.shape[1])
    ], dim=1)
    distances = torch.where(torch.isfinite(kept_values), exact, math.inf).min(1).values.sqrt()
    if slack is not None:
        largest, smallest = kept_values[:, -1].double(), kept_values[:, 0].double()
        incomplete = torch.isfinite(largest) & (largest <= smallest + slack)
        for row in incomplete.nonzero().flatten().tolist():  # the kept candidates may not hold the nearest
            squared = exact_squared_distances(reference, queries[row])
            squared[reference_labels == query_labels[row]] = math.inf
            distances[row] = squared.min().sqrt()
    return distances

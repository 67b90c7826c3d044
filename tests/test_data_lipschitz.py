"""The data Lipschitz constant and nearest-distinct-neighbour distances: known answers and brute force."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any, Callable

import pytest
import torch

from lipcli.data.types import ImageSet
from lipcli.lipschitz import data as data_module
from lipcli.lipschitz.data import closest_pair, conflicting_duplicates, nearest_distinct


def points(rows: list[list[float]], labels: list[int]) -> ImageSet:
    """Images of shape (1, 1, n) from coordinate rows."""
    return ImageSet(torch.tensor(rows, dtype=torch.float32)[:, None, None, :], torch.tensor(labels))


def brute_closest(data: ImageSet) -> float:
    x = data.as_float(data.images).flatten(1).double()
    distances = (x[:, None, :] - x[None, :, :]).pow(2).sum(2).sqrt()
    distances[data.labels[:, None] == data.labels[None, :]] = math.inf
    return float(distances.min())


def brute_nearest(queries: ImageSet, reference: ImageSet) -> torch.Tensor:
    q = queries.as_float(queries.images).flatten(1).double()
    r = reference.as_float(reference.images).flatten(1).double()
    distances = (q[:, None, :] - r[None, :, :]).pow(2).sum(2).sqrt()
    distances[queries.labels[:, None] == reference.labels[None, :]] = math.inf
    return distances.min(1).values


def test_known_answer_with_a_closer_pair_of_one_label() -> None:
    # (0,0) and (0.1,0) share a label; the closest pair of different labels is (0,0)-(0,0.3): 0.3
    data = points([[0, 0], [0.1, 0], [0, 0.3], [1, 1]], [0, 0, 1, 2])
    pair = closest_pair(data, chunk=2)
    assert pair.distance == pytest.approx(0.3) and (pair.first, pair.second) == (0, 2)
    assert pair.lipschitz == pytest.approx(1 / 0.3)


def test_ties_and_one_class_per_point() -> None:
    data = points([[0, 0], [0.5, 0], [0, 0.5], [0.5, 0.5]], [0, 1, 2, 3])  # four pairs tie at 0.5
    pair = closest_pair(data, chunk=3)
    assert pair.distance == 0.5 and data.images[pair.first].sub(data.images[pair.second]).norm() == 0.5
    assert closest_pair(points([[0, 0], [1, 0]], [4, 4])).distance == math.inf  # one class: no pair


def test_duplicates_with_different_labels_are_found_and_same_label_ones_kept() -> None:
    data = points([[0.2, 0.2], [0.7, 0.1], [0.2, 0.2], [0.7, 0.1], [0.9, 0.9]], [0, 1, 2, 1, 0])
    assert conflicting_duplicates(data).tolist() == [0, 2]  # images 1 and 3 are duplicates with one label


@pytest.mark.parametrize(("size", "dimension", "classes", "chunk"), [(61, 12, 3, 7), (200, 30, 10, 64), (90, 5, 90, 90)])
def test_closest_pair_equals_brute_force(size: int, dimension: int, classes: int, chunk: int) -> None:
    generator = torch.Generator().manual_seed(size)
    data = ImageSet(torch.rand((size, 1, 1, dimension), generator=generator),
                    torch.randint(0, classes, (size,), generator=generator))
    pair = closest_pair(data, chunk=chunk)
    assert pair.distance == brute_closest(data)
    x = data.images.flatten(1).double()
    assert float((x[pair.first] - x[pair.second]).pow(2).sum().sqrt()) == pair.distance
    assert data.labels[pair.first] != data.labels[pair.second]


def test_exact_where_float32_products_cannot_rank_the_pairs() -> None:
    """Bright images (squared norms ~450) a few thousandths apart: ||a||^2 + ||b||^2 - 2ab in float32 is off by
    more than the distances themselves; the exact recheck must still return the float64 answer."""
    generator = torch.Generator().manual_seed(5)
    images = (0.95 + 1e-3 * torch.randn((120, 1, 1, 500), generator=generator)).clamp(0, 1)
    data = ImageSet(images, torch.randint(0, 4, (120,), generator=generator))
    assert closest_pair(data, chunk=50).distance == brute_closest(data)
    queries = ImageSet(images[:30] + 1e-4, data.labels[:30].roll(1))
    torch.testing.assert_close(nearest_distinct(queries, data, chunk=16, candidates=3), brute_nearest(queries, data),
                               rtol=0, atol=0)


def test_nearest_distinct_recomputes_a_query_whose_candidates_may_be_incomplete(monkeypatch: pytest.MonkeyPatch) -> None:
    """Six reference images at exactly the same distance from the query, two kept: the kept ones cannot
    prove they hold the nearest, so the query is recomputed in full."""
    reference = points([[0.5 + 0.1 * math.cos(a), 0.5 + 0.1 * math.sin(a)] for a in range(6)] + [[0.9, 0.9]],
                       [1, 1, 1, 1, 1, 1, 2])
    queries = points([[0.5, 0.5], [0.95, 0.9]], [0, 2])
    calls = []
    full = data_module.exact_squared_distances
    monkeypatch.setattr(data_module, "exact_squared_distances", lambda *a, **k: calls.append(1) or full(*a, **k))
    found = nearest_distinct(queries, reference, chunk=4, candidates=2)
    torch.testing.assert_close(found, brute_nearest(queries, reference), rtol=0, atol=1e-7)
    assert calls, "the tie should have sent the query to the full recomputation"


def test_nearest_distinct_on_random_sets_equals_brute_force() -> None:
    generator = torch.Generator().manual_seed(7)
    reference = ImageSet(torch.rand((150, 1, 4, 4), generator=generator), torch.randint(0, 5, (150,), generator=generator))
    queries = ImageSet(torch.rand((37, 1, 4, 4), generator=generator), torch.randint(0, 5, (37,), generator=generator))
    found = nearest_distinct(queries, reference, chunk=16, candidates=4)
    torch.testing.assert_close(found, brute_nearest(queries, reference), rtol=0, atol=0)
    lonely = ImageSet(queries.images[:2], torch.tensor([9, 9]))
    assert nearest_distinct(lonely, ImageSet(reference.images[:3], torch.tensor([9, 9, 9]))).isinf().all()


def test_data_lipschitz_command_on_digits(run: Callable[..., Any], tmp_path: Path, host: Any) -> None:
    from lipcli.config import resolve
    from lipcli.data.load import load_data

    out = tmp_path / "d"
    result = run("data-lipschitz", "--dataset", "digits", "--out", out, "--device", "cpu", "--limit", "100")
    assert result.exit_code == 0, result.output
    assert "Lip_2,inf(D)" in result.stdout
    report = json.loads((out / "data-lipschitz.json").read_text())
    splits = load_data(resolve(None, {}, ["data.dataset='digits'"]).data, host)
    assert report["min_distance"] == brute_closest(splits.train)
    assert report["lipschitz_2inf"] == pytest.approx(1 / report["min_distance"])
    assert report["dropped_duplicates"]["count"] == 0 and report["images"] == len(splits.train)
    first, second = report["pair"]["indices"]
    assert splits.train.labels[first] != splits.train.labels[second]
    nearest = brute_nearest(splits.test.subset(100), splits.train)
    rows = (out / "distances.csv").read_text().splitlines()
    assert rows[0] == "index,label,prediction,nearest-distinct,min" and len(rows) == 101
    assert [float(r.split(",")[3]) for r in rows[1:]] == pytest.approx(nearest.tolist(), abs=1e-12)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["median_distance"] == pytest.approx(float(nearest.sort().values[49]))
    assert (out / "curve.png").is_file()
    texts = re.findall(r"<!-- (.*?) -->", (out / "curve.svg").read_text())  # matplotlib's texts, as comments
    assert "distance to the nearest training image of another class (l2)" in texts
    assert "digits · nearest training image of another class · 100 test images" in texts
    ticks = [t for t in texts if re.fullmatch(r"[0-9.]+", t) and t not in {"0", "20", "40", "60", "80", "100"}]
    assert ticks and not any("mathdefault" in t for t in texts)  # plain numbers, no 10^k


@pytest.mark.parametrize(("args", "message"), [
    (["--dataset", "digitz"], "Did you mean 'digits'"),
    (["--dataset", "digits", "--split", "validation"], "split: unknown split 'validation'; use train or test"),
])
def test_data_lipschitz_bad_input(run: Callable[..., Any], tmp_path: Path, args: list[str], message: str) -> None:
    result = run("data-lipschitz", *args, "--out", tmp_path / "x", "--no-curve")
    assert result.exit_code == 2 and message in result.output


def test_data_lipschitz_of_the_test_split(run: Callable[..., Any], tmp_path: Path, host: Any) -> None:
    from lipcli.config import resolve
    from lipcli.data.load import load_data

    result = run("data-lipschitz", "--dataset", "digits", "--split", "test", "--no-curve", "--json",
                 "--out", tmp_path / "t", "--device", "cpu")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    test = load_data(resolve(None, {}, ["data.dataset='digits'"]).data, host).test
    assert report["split"] == "test" and report["min_distance"] == brute_closest(test)
    assert "nearest_distinct" not in report and not (tmp_path / "t" / "distances.csv").exists()


def test_duplicates_are_judged_on_the_float32_values_the_distances_use() -> None:
    """Float64 images differing only below float32 precision are duplicates: with different labels they
    would otherwise be a pair at distance 0 (an infinite constant)."""
    base = torch.full((2, 1, 1, 3), 0.3, dtype=torch.float64)
    base[1] += 1e-12
    data = ImageSet(torch.cat([base, torch.full((1, 1, 1, 3), 0.9, dtype=torch.float64)]), torch.tensor([0, 1, 1]))
    assert conflicting_duplicates(data).tolist() == [0, 1]

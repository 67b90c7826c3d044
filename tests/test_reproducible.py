"""Results a reviewer can reproduce: seeded attacks, saved adversarials, recorded options, progress per batch."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

import lipcli.data.batches as batches_module
import lipcli.evaluation.attack_set as runner_module
from lipcli.data.selection import Selection
from lipcli.attacks import Attack
from lipcli.attacks.base import distance
from lipcli.data.types import ImageSet
from lipcli.evaluation.attack_set import attack_set
from lipcli.evaluation.minimal_distances import evaluation_batch_size
from lipcli.evaluation.results import write_adversarials
from lipcli.experiments.grid import load_grid
from lipcli.layout import ADVERSARIALS_FILE
from lipcli.models.targets import load_target
from lipcli.engine import Engine

CPU = torch.device("cpu")


class Threshold(nn.Module):
    """Class 1 when the first pixel exceeds 0.5, else class 0."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        first = x.flatten(1)[:, :1]
        return torch.cat([0.5 - first, first - 0.5], dim=1) * 10


def images_with_first_pixels(firsts: list[float]) -> ImageSet:
    images = torch.full((len(firsts), 1, 2, 2), 0.25)
    images[:, 0, 0, 0] = torch.tensor(firsts)
    return ImageSet(images, torch.zeros(len(firsts), dtype=torch.int64))


class RandomPush(Attack):
    """Moves the first pixel to a uniform draw in (0.5, 1) from torch's global generator: the measured l2
    distance of an image of class 0 is exactly that draw minus its first pixel."""

    def run(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor, norm: str) -> torch.Tensor:
        out = images.clone()
        out[:, 0, 0, 0] = 0.5 + 0.5 * torch.rand(images.shape[0], device=images.device).clamp_min(1e-3)
        return out


class Fixed(Attack):
    """Moves the first pixel of the images listed in ``where`` (by their first pixel) to ``to``; the others
    come back unchanged (a failure)."""

    def __init__(self, to: float, where: list[float]) -> None:
        self.to, self.where = to, torch.tensor(where)

    def run(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor, norm: str) -> torch.Tensor:
        out = images.clone()
        chosen = torch.isclose(images[:, 0, 0, 0, None], self.where).any(1)
        out[chosen, 0, 0, 0] = self.to
        return out


def test_seeds_are_per_attack_and_batch_not_per_process_or_order(monkeypatch: pytest.MonkeyPatch) -> None:
    data = images_with_first_pixels([0.1 * (i % 5) for i in range(12)])  # 12 images, all of class 0

    def push(seed: int, attacks: dict[str, Attack], **options: Any) -> torch.Tensor:
        result = attack_set(Threshold(), data, attacks, "l2", batch_size=4, device=CPU, seed=seed, **options)
        return result.attacks[[a.name for a in result.attacks].index("push")].distances

    once = push(3, {"push": RandomPush()})
    assert torch.equal(once, push(3, {"push": RandomPush()}))
    assert not torch.equal(once, push(4, {"push": RandomPush()}))
    # another (random) attack before it draws nothing from its seeds
    assert torch.equal(once, push(3, {"other": RandomPush(), "push": RandomPush()}))
    # each batch is seeded alone: batches run by two processes (even and odd numbers) join into the same result
    monkeypatch.setattr(runner_module, "all_reduce", lambda tensor, op="sum": tensor)
    parts = []
    for rank in (0, 1):
        monkeypatch.setattr(batches_module, "owned", lambda number, rank=rank: number % 2 == rank)
        parts.append(push(3, {"push": RandomPush()}))
    assert torch.equal(parts[0] + parts[1], once) and (parts[0] > 0).sum() == 8 and (parts[1] > 0).sum() == 4
    # the batches draw differently from one another (the seed depends on the batch number)
    firsts = data.images[:, 0, 0, 0].double()
    draws = once + firsts
    assert len({tuple(draws[i : i + 4].tolist()) for i in range(0, 12, 4)}) == 3


def test_the_closest_adversarial_of_each_image_is_kept_and_reloads(tmp_path: Path) -> None:
    # image 0 (x0 = 0.1): near fails, far gives 0.9; image 1 (0.3): near gives 0.25, far 0.7; image 2 (0.2):
    # both fail; image 3 (0.7) is misclassified already
    data = images_with_first_pixels([0.1, 0.3, 0.2, 0.7])
    attacks = {"near": Fixed(0.55, where=[0.3]), "far": Fixed(1.0, where=[0.1, 0.3])}
    result = attack_set(Threshold(), data, attacks, "l2", batch_size=2, device=CPU, keep_adversarials=True, seed=5)
    assert result.adversarials is not None
    write_adversarials(tmp_path / ADVERSARIALS_FILE, result, seed=5)
    saved = torch.load(tmp_path / ADVERSARIALS_FILE, weights_only=True)
    assert saved["norm"] == "l2" and saved["seed"] == 5
    assert saved["indices"].tolist() == [0, 1, 2, 3] and saved["labels"].tolist() == [0, 0, 0, 0]
    assert saved["distances"].dtype == torch.float64 and torch.equal(saved["distances"], result.minimum)
    assert saved["distances"].tolist() == pytest.approx([0.9, 0.25, math.inf, 0.0], abs=1e-7)
    points = saved["adversarials"]
    assert points[:, 0, 0, 0].tolist()[:2] == pytest.approx([1.0, 0.55])  # far for image 0, near for image 1
    assert torch.isnan(points[2]).all()  # no attack broke it
    assert torch.equal(points[3], data.images[3])  # misclassified: the image itself, at distance 0
    with pytest.raises(ValueError, match="keep_adversarials"):
        write_adversarials(tmp_path / "x.pt", attack_set(Threshold(), data, attacks, "l2", batch_size=2, device=CPU), 0)


BOUNDARY = ["-a", "boundary", "-O", "boundary.steps=15", "-O", "boundary.init_trials=20"]


def test_same_seed_same_distances_file(run: Callable[..., Any], checkpoint: Path, tmp_path: Path) -> None:
    def curve(folder: str, *seed: str) -> str:
        result = run("curve", checkpoint, "--limit", "24", "--batch-size", "8", "--device", "cpu", "-q",
                     *BOUNDARY, *seed, "--out", tmp_path / folder)
        assert result.exit_code == 0, result.output
        return (tmp_path / folder / "distances.csv").read_text()

    first = curve("a", "--seed", "7")
    assert curve("b", "--seed", "7") == first
    assert curve("c", "--seed", "8") != first
    assert curve("d") == curve("e", "--seed", "0")  # 0 is the default
    summary = json.loads((tmp_path / "a" / "summary.json").read_text())
    assert summary["settings"]["seed"] == 7 and summary["settings"]["batch_size"] == 8
    assert summary["per_attack"]["boundary"]["options"] == {
        "steps": 15, "spherical_step": 0.01, "source_step": 0.01, "step_adaptation": 1.5, "check_every": 5,
        "window": 5, "init_trials": 20, "init_bisect": 25, "seed": 0, "chunk": None,
    }
    # the attack's own seed option shifts its draws
    result = run("curve", checkpoint, "--limit", "24", "--batch-size", "8", "--device", "cpu", "-q", *BOUNDARY,
                 "-O", "boundary.seed=1", "--seed", "7", "--out", tmp_path / "f")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "f" / "distances.csv").read_text() != first


def test_saved_adversarials_are_misclassified_at_the_recorded_distance(
    run: Callable[..., Any], checkpoint: Path, tmp_path: Path, engine: Engine
) -> None:
    out = tmp_path / "adv"
    result = run("attack", checkpoint, "--limit", "40", "--device", "cpu", "-q", "--save-adversarials", "--seed", "2",
                 "-a", "deepfool", "-O", "deepfool.steps=2", *BOUNDARY, "--out", out)
    assert result.exit_code == 0, result.output
    saved = torch.load(out / ADVERSARIALS_FILE, weights_only=True)
    rows = [line.split(",") for line in (out / "distances.csv").read_text().splitlines()[1:]]
    assert saved["indices"].tolist() == [int(r[0]) for r in rows] == list(range(40))
    assert saved["labels"].tolist() == [int(r[1]) for r in rows]
    assert saved["distances"].tolist() == [float(r[-1]) for r in rows]  # the min column, exactly
    target = load_target(checkpoint, engine, data_dir=None, selection=Selection(40))
    images = target.test.as_float(target.test.images)
    points, recorded = saved["adversarials"], saved["distances"]
    found = torch.isfinite(recorded)
    assert found.sum() >= 30 and (recorded[found] > 0).sum() >= 10  # most images broken, many of them by an attack
    with torch.no_grad():
        predicted = target.model(points[found]).argmax(1)
    assert (predicted != saved["labels"][found]).all()
    assert points[found].min() >= 0 and points[found].max() <= 1
    measured = distance(points[found].double() - images[found].double(), "l2")
    assert torch.equal(measured, recorded[found])
    assert torch.isnan(points[~found]).all()


def test_a_log_line_per_finished_batch_where_stderr_is_no_terminal(
    run: Callable[..., Any], checkpoint: Path, tmp_path: Path
) -> None:
    result = run("curve", checkpoint, "--limit", "130", "--device", "cpu", "-a", "deepfool", "-O", "deepfool.steps=2",
                 *BOUNDARY[:2], "-O", "boundary.steps=2", "--out", tmp_path / "c")
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "c" / "summary.json").read_text())
    assert summary["settings"]["batch_size"] == 64  # 130 images: at least 8 batches of at least 64 images: 3 batches
    pattern = r"attack (\d)/2 (\S+) \(l2\): (\d+)/(\d+) images, [\d.]+ s, ETA [\d.]+ s"
    lines = [re.fullmatch(pattern, line) for line in result.stderr.splitlines() if line.startswith("attack ")]
    assert all(lines) and len(lines) == 6
    for number, name in ((1, "deepfool"), (2, "boundary")):
        mine = [m for m in lines if m[1] == str(number)]
        assert [m[2] for m in mine] == [name] * 3
        done = [int(m[3]) for m in mine]
        assert done == sorted(done) and done[-1] == summary["attacked"] and {int(m[4]) for m in mine} == {done[-1]}
    assert "ETA" not in run("curve", checkpoint, "--limit", "20", "--device", "cpu", "-q", "-a", "deepfool",
                            "--out", tmp_path / "q").stderr


@pytest.mark.parametrize(("images", "configured", "expected"), [
    (10_000, 512, 512), (500, 512, 64), (1000, 512, 125), (100, 512, 64), (40, 32, 32),
])
def test_default_evaluation_batches(images: int, configured: int, expected: int) -> None:
    assert evaluation_batch_size(images, configured) == expected


GRID = """
[data]
dataset = "synthetic"
[grid]
"training.seed" = [0]
"""


def test_grid_seed_is_planned_and_passed_on(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, engine: Engine) -> None:
    import lipcli.experiments.grid_runner as grid_runner
    from lipcli.errors import ConfigError

    def plan(evaluate: str) -> Any:
        path = tmp_path / "g.toml"
        path.write_text(GRID + evaluate)
        return load_grid(path, tmp_path / "runs")

    default = plan("")
    assert "seed" not in default.evaluation.stage_plan("curve-l2")  # plans recorded before seeds stay current
    assert plan("[evaluate]\nseed = 0\n").evaluation.stage_plan("curve-l2") == default.evaluation.stage_plan("curve-l2")
    seeded = plan("[evaluate]\nseed = 3\n")
    assert seeded.evaluation.stage_plan("curve-l2")["seed"] == 3
    with pytest.raises(ConfigError, match="evaluate.seed"):
        plan("[evaluate]\nseed = -1\n")
    seen: dict[str, Any] = {}
    monkeypatch.setattr(grid_runner, "evaluate_checkpoints", lambda *args, **kwargs: seen.update(kwargs))
    grid_runner._run_stages(seeded.runs[0], ["curve-l2"], seeded.evaluation, "cpu", engine)
    assert seen["seed"] == 3

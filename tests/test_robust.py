"""``lipcli robust``: APGD and the AutoAttack-protocol engine against closed-form answers and their contracts.

On ``test_attacks``' affine model the minimal distance of every image is known, so the robust accuracy at eps
is too: the share of images classified correctly whose minimal distance exceeds eps (the closest boundary
points lie inside [0, 1]^n, checked here). APGD and the ensemble must hit it exactly.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest
import torch
from test_attacks import CLASSES, SHAPE, Affine, exact_distances
from test_defences import _one_thread  # noqa: F401 - one intra-op thread for these tiny models
from torch import nn

from lipcli.attacks import BUDGET_TOLERANCE, NORMS, AttackAtBudget
from lipcli.attacks.base import in_box
from lipcli.data.types import ImageSet
from lipcli.errors import DataError
from lipcli.evaluation.accounting import measured_distances
from lipcli.evaluation.robust import (
    CURVE,
    MISCLASSIFIED,
    ROBUST,
    KnownDistances,
    robust_accuracy,
)
from lipcli.evaluation.seeding import seeded
from lipcli.experiments.grid import RobustTable, load_grid
from lipcli.experiments.grid_runner import pending_stages, run_grid
from lipcli.gradients import frozen_eval
from lipcli.plugin_host import PluginHost
from lipcli.engine import Engine

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def affine() -> tuple[nn.Module, ImageSet, torch.Tensor]:
    """The affine model, 48 images in [0.3, 0.7] (4 of them given a wrong label) and the model's own labels."""
    model = Affine().eval()
    images = 0.3 + 0.4 * torch.rand((48, *SHAPE), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        predicted = model(images).argmax(1)
    labels = predicted.clone()
    labels[:4] = (labels[:4] + 1) % CLASSES
    return model, ImageSet(images, labels), predicted


def _exact(model: Affine, data: ImageSet, predicted: torch.Tensor, norm: str) -> torch.Tensor:
    """Minimal distances (0 where misclassified), after checking each closest boundary point lies in the box."""
    truth = exact_distances(model, data.images, predicted, norm)
    weight = model.linear.weight.detach().double()
    logits = model(data.images).detach().double()
    difference = weight[predicted][:, None, :] - weight[None, :, :]
    dual = difference.norm(dim=2) if norm == "l2" else difference.abs().sum(dim=2)
    ratio = (logits.gather(1, predicted[:, None]) - logits) / dual
    ratio[torch.arange(len(predicted)), predicted] = torch.inf
    closest = ratio.argmin(1)
    w = difference[torch.arange(len(predicted)), closest]
    unit = w / w.norm(dim=1, keepdim=True) if norm == "l2" else w.sign()
    point = data.images.flatten(1).double() - truth[:, None] * unit
    assert ((point >= 0) & (point <= 1)).all(), "a closest boundary point lies outside the box: no closed form"
    return torch.where(predicted == data.labels, truth, 0.0)


def _eps_between(truth: torch.Tensor, share: float) -> float:
    """An eps halfway between two neighbouring exact distances, at least 2 % from both: no borderline image."""
    ordered = truth[truth > 0].sort().values
    k = int(share * len(ordered))
    gaps = [(float(ordered[i + 1] - ordered[i]) / float(ordered[i]), i) for i in range(k - 3, k + 3)]
    gap, i = max(gaps)
    assert gap > 0.04
    return float(ordered[i] + ordered[i + 1]) / 2


def _attacks(host: PluginHost, *names: str, **options: dict[str, Any]) -> dict[str, AttackAtBudget]:
    return {name: host.registry("attack").get(name).factory(**options.get(name, {})) for name in names}


@pytest.mark.parametrize("norm", ["l2", "linf"])
def test_robust_accuracy_equals_the_closed_form_on_an_affine_model(
    host: PluginHost, affine: tuple[nn.Module, ImageSet, torch.Tensor], norm: str,
) -> None:
    model, data, predicted = affine
    truth = _exact(model, data, predicted, norm)
    eps = [("low", _eps_between(truth, 0.3)), ("high", _eps_between(truth, 0.7))]
    options = {"apgd-ce": {"steps": 25}, "apgd-t": {"steps": 25}}
    for names in (("apgd-ce",), ("apgd-t",), ("apgd-ce", "apgd-t")):
        result = robust_accuracy(model, data, _attacks(host, *names, **options), norm, eps, batch_size=48, device=CPU)
        for text, value in eps:
            point = result.per_eps[text]
            expected = float(((predicted == data.labels) & (truth > value)).double().mean())
            assert point.robust_accuracy == pytest.approx(expected), (names, text)
            assert point.outcome[:4] == [MISCLASSIFIED] * 4
            broken = [o not in (ROBUST, MISCLASSIFIED) for o in point.outcome]
            assert broken == ((truth <= value) & (truth > 0)).tolist()  # exactly the images within eps
    assert result.clean_accuracy == pytest.approx(44 / 48)


def test_the_ensemble_is_never_above_any_member_and_each_attack_runs_on_the_survivors(host: PluginHost) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(50, 32), nn.Tanh(), nn.Linear(32, 6)).eval()
    images = torch.rand(64, *SHAPE)
    with torch.no_grad():
        labels = model(images).argmax(1)
    data = ImageSet(images, labels)
    eps = [("0.02", 0.02), ("0.04", 0.04), ("0.01", 0.01)]  # given out of order: results keep it
    options = {"apgd-ce": {"steps": 20}, "apgd-t": {"steps": 20, "targets": 3}}
    alone = {
        name: robust_accuracy(model, data, _attacks(host, name, **options), "linf", eps, batch_size=32, device=CPU)
        for name in ("apgd-ce", "apgd-t")
    }
    together = robust_accuracy(model, data, _attacks(host, "apgd-ce", "apgd-t", **options), "linf", eps,
                               batch_size=32, device=CPU)
    assert list(together.per_eps) == ["0.02", "0.04", "0.01"]
    accuracies = []
    for text, _ in sorted(eps, key=lambda point: point[1]):
        point = together.per_eps[text]
        first, second = point.members
        assert 0 < point.robust_accuracy < 1, "eps must leave something to compare"
        for member in alone.values():
            assert point.robust_accuracy <= member.per_eps[text].robust_accuracy
        # AutoAttack's sequence: the second attack runs on what the first left, and counts compose
        assert second.attacked == first.attacked - first.broken
        assert first.robust_accuracy_after == pytest.approx(1 - first.broken / 64)
        carried = sum("@" in outcome for outcome in point.outcome)
        assert second.robust_accuracy_after == pytest.approx(point.robust_accuracy + carried / 64)
        assert point.outcome.count("apgd-t") == second.broken
        accuracies.append(point.robust_accuracy)
    assert accuracies == sorted(accuracies, reverse=True)


def test_an_adversarial_found_at_a_smaller_eps_counts_at_a_larger_one(host: PluginHost) -> None:
    """An attack that only ever succeeds at the smallest eps: the larger eps carry its adversarials."""

    class OnlyAtSmallEps(AttackAtBudget):
        def run_at(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor, norm: str,
                   eps: torch.Tensor) -> torch.Tensor:
            push = torch.where(eps < 0.06, 0.05, 0.0).to(images.dtype).view(-1, 1, 1, 1)
            return (images + push).clamp(0, 1)

    model = _Threshold()
    data = ImageSet(torch.full((4, 1, 1, 1), 0.48), torch.zeros(4, dtype=torch.int64))
    result = robust_accuracy(model, data, {"toy": OnlyAtSmallEps()}, "linf", [("0.1", 0.1), ("0.05", 0.05)],
                             batch_size=4, device=CPU)
    assert result.per_eps["0.05"].outcome == ["toy"] * 4
    assert result.per_eps["0.1"].outcome == ["toy@0.05"] * 4
    assert result.per_eps["0.1"].robust_accuracy == 0.0
    assert result.per_eps["0.1"].members[0].robust_accuracy_after == 1.0  # the attack itself failed at 0.1


class _Threshold(nn.Module):
    """Class 1 where the single pixel exceeds 0.5, else class 0."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        value = x.flatten(1)[:, :1]
        return torch.cat([0.5 - value, value - 0.5], dim=1)


def test_curve_distances_at_or_below_eps_break_images_before_any_attack(
    host: PluginHost, affine: tuple[nn.Module, ImageSet, torch.Tensor],
) -> None:
    model, data, predicted = affine
    known = torch.full((len(data),), torch.inf, dtype=torch.float64)
    known[4:10] = 1e-3  # tiny distances: below any eps here, so broken whatever the attacks do
    known[:4] = 0.0
    result = robust_accuracy(
        model, data, _attacks(host, "apgd-ce", **{"apgd-ce": {"steps": 5}}), "linf", [("1e-4", 1e-4), ("2e-3", 2e-3)],
        batch_size=48, device=CPU, known=KnownDistances(Path("curve"), known, predicted),
    )
    assert result.per_eps["1e-4"].count(CURVE) == 0
    assert result.per_eps["2e-3"].outcome[4:10] == [CURVE] * 6
    assert result.per_eps["2e-3"].members[0].attacked == 44 - 6 - result.per_eps["2e-3"].count("apgd-ce@1e-4")
    other = predicted.clone()
    other[7] = (other[7] + 1) % CLASSES
    with pytest.raises(DataError, match="image 7 was classified"):
        robust_accuracy(model, data, _attacks(host, "apgd-ce"), "linf", [("1e-4", 1e-4)], batch_size=48, device=CPU,
                        known=KnownDistances(Path("curve"), known, other))


@pytest.mark.parametrize("norm", ["l2", "linf"])
@pytest.mark.parametrize("name", ["apgd-ce", "apgd-t"])
def test_apgd_never_proposes_a_point_lipcli_would_count_outside_the_ball(host: PluginHost, norm: str,
                                                                       name: str) -> None:
    """Misclassified proposals lie in the box and within each image's own eps; an eps of 0 breaks nothing."""
    torch.manual_seed(1)
    model = nn.Sequential(nn.Flatten(), nn.Linear(50, 32), nn.ReLU(), nn.Linear(32, 6)).eval()
    images = torch.rand(40, *SHAPE)
    images[:, 0, 0] = 1.0  # saturated pixels: the box constrains the steps
    with torch.no_grad():
        labels = model(images).argmax(1)
    scale = 0.08 if norm == "linf" else 0.8
    eps = scale * torch.rand(40, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    eps[::5] = 0.0
    attack = host.registry("attack").get(name).factory(steps=30)
    with frozen_eval(model):
        proposals = attack.run_at(model, images, labels, norm, eps)
        found, _ = measured_distances(model, images, labels, proposals, norm)
        fooled = model(proposals).argmax(1) != labels
    assert in_box(proposals).all()
    assert (found[fooled] <= eps[fooled] + BUDGET_TOLERANCE).all()
    assert not fooled[::5].any()
    assert 5 <= int(fooled.sum()) < 32  # the bound above is tested on real adversarials, not on none


def test_apgd_is_reproducible_under_a_seed_and_random_without_one(host: PluginHost) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(50, 6)).eval()
    images = torch.rand(8, *SHAPE)
    labels = model(images).argmax(1)
    eps = torch.full((8,), 1e-3, dtype=torch.float64)  # too small to break anything: every start stays visible
    attack = host.registry("attack").get("apgd-ce").factory(steps=1)
    runs = []
    for seed in (0, 0, 1):
        with frozen_eval(model), seeded(seed, "apgd-ce", 0):
            runs.append(attack.run_at(model, images, labels, "linf", eps))
    # a failed image comes back as the clean image: compare the starts through a run that keeps its iterate
    from lipcli_builtins.attacks.apgd import apgd

    starts = []
    for seed in (0, 0, 1):
        with frozen_eval(model), seeded(seed, "apgd-ce", 0), torch.no_grad():
            starts.append(apgd(model, images, labels, "linf", eps * 0 + 1.0, steps=1)[0])
    assert torch.equal(runs[0], runs[1]) and torch.equal(starts[0], starts[1])
    assert not torch.equal(starts[0], starts[2])


def test_checkpoints_follow_the_paper() -> None:
    from lipcli_builtins.attacks.apgd import checkpoints

    assert checkpoints(100) == [22, 41, 57, 70, 80, 87, 93, 99]  # p = 0.22, 0.41, 0.57, 0.70, 0.80, 0.87, 0.93, 0.99
    assert checkpoints(1000)[:3] == [220, 410, 570]


def test_apgd_is_also_a_minimal_distance_attack(host: PluginHost) -> None:
    """Through the shared eps search: within 1 % of the exact distance on the affine model, never below it."""
    model = Affine().eval()
    images = 0.3 + 0.4 * torch.rand((10, *SHAPE), generator=torch.Generator().manual_seed(4))
    labels = model(images).argmax(1)
    truth = exact_distances(model, images, labels, "linf")
    with frozen_eval(model):
        proposals = host.registry("attack").get("apgd-t").factory(steps=20, targets=4).run(model, images, labels, "linf")
        found, _ = measured_distances(model, images, labels, proposals, "linf")
    ratio = found / truth
    assert ratio.min() >= 1 - 1e-6 and ratio.max() <= 1.01


def test_cli_robust_writes_reproducible_files_and_merges_a_curve(
    run: Callable[..., Any], checkpoint: Path, tmp_path: Path,
) -> None:
    common = ["--norm", "linf", "--eps", "2/255,0.1", "--limit", "40", "--device", "cpu", "--quiet",
              "--version", "fast", "-O", "apgd-ce.steps=10", "-O", "apgd-t.steps=10", "-O", "apgd-t.targets=2"]
    first = run("robust", checkpoint, *common, "--out", tmp_path / "a")
    assert first.exit_code == 0, first.output
    assert "after apgd-ce" in first.output
    second = run("robust", checkpoint, *common, "--out", tmp_path / "b")
    assert second.exit_code == 0, second.output
    assert (tmp_path / "a" / "robust.csv").read_text() == (tmp_path / "b" / "robust.csv").read_text()
    summary = json.loads((tmp_path / "a" / "summary.json").read_text())
    assert summary["eps"] == {"2/255": 2 / 255, "0.1": 0.1} and summary["version"] == "fast"
    assert summary["options"]["apgd-t"] == {"steps": 10, "targets": 2, "restarts": 1, "rho": 0.75, "momentum": 0.75,
                                            "random_start": True, "bisect_steps": 10}
    assert summary["robust_accuracy"]["0.1"] <= summary["robust_accuracy"]["2/255"] <= summary["clean_accuracy"]

    curve = run("curve", checkpoint, "--norm", "linf", "--attack", "deepfool", "--limit", "40", "--device", "cpu",
                "--quiet", "--out", tmp_path / "curve")
    assert curve.exit_code == 0, curve.output
    merged = run("robust", checkpoint, *common, "--curve", tmp_path / "curve", "--out", tmp_path / "c", "--json")
    assert merged.exit_code == 0, merged.output
    (summary,) = json.loads(merged.output)
    minimum = [float(line.split(",")[-1]) for line in (tmp_path / "curve" / "distances.csv").read_text().splitlines()[1:]]
    outcomes = [line.split(",")[3] for line in (tmp_path / "c" / "robust.csv").read_text().splitlines()[1:]]
    within = [0 < m <= 2 / 255 for m in minimum]
    assert [o == CURVE for o in outcomes] == within
    assert summary["per_eps"]["2/255"]["broken_by_curve"] == sum(within)
    assert summary["robust_accuracy"]["2/255"] <= 1 - sum(m <= 2 / 255 for m in minimum) / 40

    for args, message in (
        (["--limit", "41"], "1 of the 41 images evaluated here are not in it"),  # the curve covers 40 images
        (["--norm", "l2"], "measured with norm 'linf', not 'l2'"),
    ):
        refused = run("robust", checkpoint, *common, "--curve", tmp_path / "curve", "--out", tmp_path / "d", *args)
        assert refused.exit_code == 1 and message in refused.output, refused.output


def test_cli_refuses_a_curve_of_another_checkpoint(
    run: Callable[..., Any], checkpoint: Path, tanh_checkpoint: Path, tmp_path: Path,
) -> None:
    curve = run("curve", tanh_checkpoint, "--norm", "linf", "--attack", "deepfool", "--limit", "8", "--device", "cpu",
                "--quiet", "--out", tmp_path / "curve")
    assert curve.exit_code == 0, curve.output
    refused = run("robust", checkpoint, "--norm", "linf", "--eps", "0.1", "--limit", "8", "--version", "fast",
                  "--curve", tmp_path / "curve" / "distances.csv", "--out", tmp_path / "r", "--quiet")
    assert refused.exit_code == 1 and "measured on checkpoint" in refused.output, refused.output


def test_a_curve_is_matched_by_the_checkpoint_bytes_not_its_path(
    run: Callable[..., Any], checkpoint: Path, tanh_checkpoint: Path, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A curve of ``m.pt`` run in folder A: from folder B, another model also called ``m.pt`` is refused and a
    copy of the same bytes under another name is accepted (relative paths name different files in each)."""
    import shutil

    (tmp_path / "A").mkdir(), (tmp_path / "B").mkdir()
    shutil.copy(checkpoint, tmp_path / "A" / "m.pt")
    shutil.copy(tanh_checkpoint, tmp_path / "B" / "m.pt")
    shutil.copy(checkpoint, tmp_path / "B" / "same.pt")
    monkeypatch.chdir(tmp_path / "A")
    curve = run("curve", "m.pt", "--norm", "linf", "--attack", "deepfool", "--limit", "8", "--device", "cpu",
                "--quiet", "--masking-check", "0", "--out", "curve")
    assert curve.exit_code == 0, curve.output
    monkeypatch.chdir(tmp_path / "B")
    common = ["--norm", "linf", "--eps", "0.1", "--limit", "8", "--version", "fast", "--curve", "../A/curve", "--quiet"]
    other = run("robust", "m.pt", *common, "--out", "r1")
    assert other.exit_code == 1 and "measured on checkpoint" in other.output, other.output
    same = run("robust", "same.pt", *common, "--out", "r2")
    assert same.exit_code == 0, same.output


@pytest.mark.parametrize(("args", "message"), [
    (["--version", "fastest"], "unknown version 'fastest'"),
    (["--attack", "apgd-cee"], "Did you mean 'apgd-ce'"),
    (["--attack", "deepfool"], "'deepfool' cannot run at a fixed eps (not an AttackAtBudget); use one of apgd-ce, "
                               "apgd-t, fab, fab-t, square"),
    (["--attack", "apgd-ce", "--version", "fast"], "give --version or --attack, not both"),
    (["--version", "fast", "--eps", "8/0"], "not a number or fraction"),
    (["--version", "fast", "--eps", "0.1,0.1"], "given twice"),
])
def test_cli_errors(run: Callable[..., Any], checkpoint: Path, tmp_path: Path, args: list[str], message: str) -> None:
    base = ["--norm", "linf", "--eps", "0.1", "--limit", "4", "--out", tmp_path, "--quiet"]
    result = run("robust", checkpoint, *base, *args)
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split()), result.output


GRID = """
[data]
dataset = "synthetic"
options = { train_size = 64, test_size = 16, channels = 1, size = 8, num_classes = 4, noise = 0.1 }
[model]
arch = "small-cnn"
options = { width = 4 }
[training]
epochs = 1
batch_size = 32
device = "cpu"
[grid]
"training.seed" = [0]
[evaluate]
norms = ["linf"]
attacks = { linf = ["deepfool"] }
limit = 8
stats = false
[evaluate.robust]
linf = ["8/255", "0.2"]
version = "fast"
"""


def test_a_grid_measures_robust_accuracy_after_its_curves(tmp_path: Path, engine: Engine) -> None:
    path = tmp_path / "exp.toml"
    path.write_text(GRID)
    grid = load_grid(path, tmp_path / "runs")
    assert grid.evaluation.robust == {"linf": [("8/255", 8 / 255), ("0.2", 0.2)]}
    (planned,) = grid.runs
    assert pending_stages(planned, grid.evaluation) == ["train", "curve-linf", "robust-linf"]
    assert [o.status for o in run_grid(grid, engine)] == ["done"]
    folder = Path(planned.config.output.dir) / "robust-linf"
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["curve"] and summary["attacks"] == ["apgd-ce", "apgd-t"] and summary["images"] == 8
    assert json.loads((folder / "plan.json").read_text())["version"] == "fast"
    assert pending_stages(planned, grid.evaluation) == []
    path.write_text(GRID.replace('version = "fast"', 'version = "standard"'))
    changed = load_grid(path, tmp_path / "runs")
    assert pending_stages(changed.runs[0], changed.evaluation) == ["robust-linf"]


@pytest.mark.parametrize(("table", "message"), [
    ('[evaluate.robust]\nlinf = ["8/255"]\nversion = "slow"\n', "evaluate.robust.version: expected standard or fast"),
    ('[evaluate.robust]\nlinf2 = ["8/255"]\n',
     "unknown key 'evaluate.robust.linf2'. Did you mean 'evaluate.robust.linf'"),
    ('[evaluate.robust]\nl2 = ["0.1", true]\n',
     r"evaluate.robust.l2\[1\]: expected a string or an integer or a number, got True"),
    ('[evaluate.robust]\nl2 = ["x"]\n', "evaluate.robust.l2: not a number"),
    ("[evaluate]\nrobust = 3\n", "evaluate.robust: expected a table"),
])
def test_grid_robust_errors_name_the_key(tmp_path: Path, table: str, message: str) -> None:
    from lipcli.errors import ConfigError

    path = tmp_path / "exp.toml"
    path.write_text(GRID.split("[evaluate]")[0] + table)
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        load_grid(path, tmp_path / "runs")


def test_the_robust_table_has_a_key_per_norm() -> None:
    """``[evaluate.robust]``'s schema spells out one key per norm: a new norm needs its key there too."""
    assert [f.name for f in fields(RobustTable)] == [*NORMS, "version"]

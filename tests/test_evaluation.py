"""Robustness accounting, error-curve arithmetic, gradient-masking warnings, the curve and attack commands."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Callable

import pytest
import torch
from torch import nn

from lipcli.attacks import Attack
from lipcli.attacks.projection import box_projection
from lipcli.attacks.search import parameter_search
from lipcli.curves import curve_points, error_at, median_distance, parse_eps
from lipcli.data.types import ImageSet
from lipcli.errors import LipcliError
from lipcli.evaluation.attack_set import attack_set

CPU = torch.device("cpu")


class Threshold(nn.Module):
    """Class 1 when the first pixel exceeds 0.5, else class 0: the l2 and l-inf distance of an image of
    class 0 is exactly 0.5 - x_0 (move that one pixel)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        first = x.flatten(1)[:, :1]
        return torch.cat([0.5 - first, first - 0.5], dim=1) * 10


def threshold_data(firsts: list[float], labels: list[int]) -> ImageSet:
    images = torch.full((len(firsts), 1, 2, 2), 0.25)
    images[:, 0, 0, 0] = torch.tensor(firsts)
    return ImageSet(images, torch.tensor(labels))


class Scripted(Attack):
    """Returns what ``make(images)`` gives, and records the images it was asked to attack."""

    def __init__(self, make: Callable[[torch.Tensor], torch.Tensor], decision_based: bool = False) -> None:
        self.make, self.seen, self.decision_based = make, [], decision_based

    def run(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor, norm: str) -> torch.Tensor:
        self.seen.append(images.clone())
        return self.make(images)


def push_first_pixel(to: float) -> Callable[[torch.Tensor], torch.Tensor]:
    def make(images: torch.Tensor) -> torch.Tensor:
        out = images.clone()
        out[:, 0, 0, 0] = to
        return out

    return make


def test_accounting_failures_clean_errors_and_measured_distances() -> None:
    # images 0-2 are class 0 (distances 0.5 - x0 = 0.4, 0.2, 0.1); image 3 is misclassified (label 0, x0 > 0.5)
    data = threshold_data([0.1, 0.3, 0.4, 0.9], [0, 0, 0, 0])
    succeed = Scripted(push_first_pixel(0.75))  # adversarial for all, measured distance 0.75 - x0
    fail = Scripted(lambda images: images.clone())  # returns the clean image: a failure
    result = attack_set(Threshold(), data, {"succeed": succeed, "fail": fail}, "l2", batch_size=2, device=CPU)
    assert sum(len(s) for s in succeed.seen) == 3  # the misclassified image is never attacked
    assert result.attacks[0].distances.tolist() == pytest.approx([0.65, 0.45, 0.35, 0.0], abs=1e-7)
    assert result.attacks[1].distances.tolist()[:3] == [math.inf] * 3 and result.attacks[1].distances[3] == 0
    assert result.minimum.tolist() == pytest.approx([0.65, 0.45, 0.35, 0.0], abs=1e-7)
    assert result.clean_error == 0.25
    assert error_at(result.attacks[1].distances, 0.0) == 0.25 == error_at(result.attacks[1].distances, 1e9)


def test_minimum_over_attacks_is_per_image() -> None:
    data = threshold_data([0.1, 0.3], [0, 0])
    near = Scripted(lambda images: torch.where(images[:, :1, :1, :1] > 0.2, push_first_pixel(0.55)(images), images))
    far = Scripted(push_first_pixel(1.0))
    result = attack_set(Threshold(), data, {"near": near, "far": far}, "linf", batch_size=8, device=CPU)
    assert result.minimum.tolist() == pytest.approx([0.9, 0.25], abs=1e-7)  # image 0 from far, image 1 from near


def test_out_of_box_and_nan_proposals_count_as_failures() -> None:
    data = threshold_data([0.1, 0.3], [0, 0])
    outside = Scripted(lambda images: push_first_pixel(0.75)(images) + torch.tensor([0.0, 2.0]).view(2, 1, 1, 1))
    nan = Scripted(lambda images: torch.full_like(images, math.nan))
    result = attack_set(Threshold(), data, {"outside": outside, "nan": nan}, "l2", batch_size=8, device=CPU)
    assert result.attacks[0].distances[0] == pytest.approx(0.65) and math.isinf(result.attacks[0].distances[1])
    assert result.attacks[0].outside_box == 1
    assert torch.isinf(result.attacks[1].distances).all()


def test_proposals_are_classified_in_eval_mode_even_if_the_attack_switches_modes() -> None:
    class TrainModeFlips(nn.Module):
        """Eval mode: the threshold model. Train mode: always wrong (as BatchNorm batch statistics can be)."""

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            logits = Threshold()(x)
            return logits.flip(1) if self.training else logits

    def sneaky(model: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
        def make(images: torch.Tensor) -> torch.Tensor:
            model.train()
            return images.clone()

        return make

    model = TrainModeFlips()
    data = threshold_data([0.1, 0.3], [0, 0])
    result = attack_set(model, data, {"sneaky": Scripted(sneaky(model))}, "l2", batch_size=8, device=CPU)
    assert torch.isinf(result.attacks[0].distances).all()


def test_curve_arithmetic_by_hand() -> None:
    d = torch.tensor([0.0, 0.5, 1.0, math.inf], dtype=torch.float64)
    assert error_at(d, 0.0) == 0.25 and error_at(d, 0.5) == 0.5 and error_at(d, 1e9) == 0.75
    assert median_distance(d) == 0.5  # the smallest eps with C_err >= 1/2
    assert median_distance(torch.tensor([0.2, math.inf, math.inf])) == math.inf
    assert median_distance(torch.tensor([0.3, 0.1, 0.2])) == pytest.approx(0.2)
    assert curve_points(d) == ([0.0, 0.5, 1.0], [0.25, 0.5, 0.75])


def test_eps_keeps_the_units_written() -> None:
    assert parse_eps("8/255") == [("8/255", 8 / 255)]
    assert parse_eps("0.1, 1.5") == [("0.1", 0.1), ("1.5", 1.5)]
    for bad in ("x", "1/0", "-1", "inf"):
        with pytest.raises(ValueError):
            parse_eps(bad)


def test_parameter_search_finds_each_images_threshold() -> None:
    firsts = torch.tensor([0.45, 0.3, 0.01, 0.499])
    data = threshold_data(firsts.tolist(), [0, 0, 0, 0])
    images = data.images
    step = torch.zeros_like(images)
    step[:, 0, 0, 0] = 1.0

    def attack_at(index: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        return (images[index] + eps.view(-1, 1, 1, 1) * step[index]).clamp(0, 1)

    found = parameter_search(Threshold(), images, data.labels, "l2", attack_at, initial=1.0, upper=2.0)
    measured = (found - images).flatten(1).norm(dim=1).double()
    truth = 0.5 - firsts.double()
    assert (measured >= truth - 1e-7).all()
    assert (measured <= truth * 1.002 + 1e-6).all()


@pytest.mark.parametrize("norm", ["l2", "linf"])
def test_box_projection_is_exact(norm: str) -> None:
    torch.manual_seed(0)
    x = torch.rand(8, 30, dtype=torch.float64)
    w = torch.randn(8, 30, dtype=torch.float64)
    r = torch.randn(8, dtype=torch.float64)
    delta = box_projection(x, w, r, norm)
    assert torch.allclose((delta * w).sum(1), r, atol=1e-10)
    assert ((x + delta) >= 0).all() and ((x + delta) <= 1).all()
    # far from the box faces the answer is the textbook one
    middle = torch.full_like(x, 0.5)
    small = r * 1e-3
    delta = box_projection(middle, w, small, norm)
    if norm == "l2":
        expected = small[:, None] * w / (w * w).sum(1, keepdim=True)
    else:
        expected = small[:, None] * w.sign() / w.abs().sum(1, keepdim=True)
    assert torch.allclose(delta, expected, atol=1e-15)
    # no point of the box reaches the plane: NaN, never a step
    assert torch.isnan(box_projection(middle[:1], w[:1], torch.tensor([1e6], dtype=torch.float64), norm)).all()
    # exactly the box's most (up to rounding), with a pixel the plane ignores: every other pixel saturated
    x = torch.tensor([[0.5, 0.25, 0.5]], dtype=torch.float64)
    w = torch.tensor([[1.0, -2.0, 0.0]], dtype=torch.float64)
    for most in (1.0, 1.0 + 1e-13):
        delta = box_projection(x, w, torch.tensor([most], dtype=torch.float64), norm)
        assert delta.tolist() == [[0.5, -0.25, 0.0]]


def test_box_projection_matches_a_generic_solver() -> None:
    """Against scipy: a quadratic programme (l2) and a linear programme (l-inf) over the box."""
    optimize = pytest.importorskip("scipy.optimize")
    generator = torch.Generator().manual_seed(3)
    for norm in ("l2", "linf"):
        for _ in range(25):
            x = torch.rand(1, 4, dtype=torch.float64, generator=generator)
            x[0, 0] = 0.0  # one pixel on a face of the box
            w = torch.randn(1, 4, dtype=torch.float64, generator=generator)
            r = float(torch.randn(1, dtype=torch.float64, generator=generator)) * 0.5
            delta = box_projection(x, w, torch.tensor([r], dtype=torch.float64), norm)
            x0, w0 = x[0].numpy(), w[0].numpy()
            bounds = [(-xi, 1 - xi) for xi in x0]
            if norm == "l2":
                solved = optimize.minimize(
                    lambda d: d @ d, x0 * 0, jac=lambda d: 2 * d, bounds=bounds, method="SLSQP",
                    constraints=[{"type": "eq", "fun": lambda d: d @ w0 - r, "jac": lambda d: w0}],
                    options={"ftol": 1e-14, "maxiter": 500},
                )
                reference = solved.fun ** 0.5 if solved.success else math.nan
                ours = float(delta.norm())
            else:  # variables (delta, t): minimise t with -t <= delta_i <= t
                n = len(x0)
                solved = optimize.linprog(
                    c=[0] * n + [1], A_eq=[list(w0) + [0]], b_eq=[r],
                    A_ub=[[(1 if j == i else 0) for j in range(n)] + [-1] for i in range(n)]
                    + [[(-1 if j == i else 0) for j in range(n)] + [-1] for i in range(n)],
                    b_ub=[0] * (2 * n), bounds=bounds + [(0, None)],
                )
                reference = solved.fun if solved.status == 0 else math.nan
                ours = float(delta.abs().max())
            if math.isnan(reference):
                assert torch.isnan(delta).all()
            else:
                assert ours == pytest.approx(reference, rel=1e-5, abs=1e-7)


def test_masking_warnings() -> None:
    data = threshold_data([0.1, 0.3, 0.2], [0, 0, 0])

    class Rounded(nn.Module):
        """Piecewise-constant logits: the input gradient is exactly zero everywhere."""

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return Threshold()(torch.round(x * 4) / 4)

    result = attack_set(Rounded(), data, {"far": Scripted(push_first_pixel(1.0))}, "l2", batch_size=8, device=CPU)
    assert any("gradient is exactly zero on 3 of 3" in w for w in result.warnings)

    blind = Scripted(push_first_pixel(0.6), decision_based=True)
    sighted = Scripted(push_first_pixel(1.0))
    result = attack_set(Threshold(), data, {"blind": blind, "sighted": sighted}, "l2", batch_size=8, device=CPU)
    assert any("decision-based attack (blind)" in w and "on 3 of 3" in w for w in result.warnings)
    result = attack_set(Threshold(), data, {"sighted": sighted}, "l2", batch_size=8, device=CPU)
    assert result.warnings == []


def test_curve_writes_the_three_files_and_prints_the_table(run: Callable[..., Any], checkpoint: Path,
                                                           tmp_path: Path) -> None:
    out = tmp_path / "c"
    result = run("curve", checkpoint, "--norm", "linf", "--limit", "40", "--out", out, "--device", "cpu",
                 "--eps", "8/255,0.1", "-a", "min-norm", "-a", "deepfool", "-O", "min-norm.steps=10")
    assert result.exit_code == 0, result.output
    assert "robustness (linf, min-norm, deepfool)" in result.stdout and "digits-run" in result.stdout
    rows = (out / "distances.csv").read_text().splitlines()
    assert rows[0] == "index,label,prediction,min-norm,deepfool,min" and len(rows) == 41
    summary = json.loads((out / "summary.json").read_text())
    assert summary["eps"] == {"8/255": 8 / 255, "0.1": 0.1} and summary["images"] == 40
    minimum = [float(r.split(",")[-1]) for r in rows[1:]]
    assert summary["error_at"]["8/255"] == sum(d <= 8 / 255 for d in minimum) / 40
    assert summary["clean_error"] == sum(d == 0 for d in minimum) / 40
    assert summary["per_attack"]["min-norm"]["queries"] > 0
    assert (out / "curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "curve.svg").read_text().lstrip().startswith("<?xml")


def test_several_checkpoints_share_one_plot(run: Callable[..., Any], checkpoint: Path, tmp_path: Path) -> None:
    out = tmp_path / "c"
    result = run("curve", checkpoint, checkpoint, "--limit", "10", "--out", out, "--device", "cpu",
                 "-O", "min-norm.steps=5", "--json")
    assert result.exit_code == 0, result.output
    labels = [s["label"] for s in json.loads(result.stdout)]
    assert labels == ["digits-run", "digits-run-2"]
    assert (out / "digits-run" / "distances.csv").is_file() and (out / "digits-run-2" / "summary.json").is_file()
    assert (out / "curve.png").is_file()


def test_attack_compares_attacks(run: Callable[..., Any], checkpoint: Path, tmp_path: Path) -> None:
    out = tmp_path / "a"
    result = run("attack", checkpoint, "-a", "deepfool", "-a", "gradient", "--limit", "20", "--out", out,
                 "--device", "cpu")
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["strongest"] in ("deepfool", "gradient") and "strongest:" in result.stdout
    assert set(summary["per_attack"]) == {"deepfool", "gradient"}


@pytest.mark.parametrize(("args", "message"), [
    (["-a", "pgd-l3"], "Did you mean 'pgd-l2'"),
    (["--eps", "8/0"], "--eps"),
    (["--norm", "l3"], "l3"),
    (["-O", "deepfool.stepz=3", "-a", "deepfool"], "attack.deepfool.stepz"),
    (["-O", "cw.steps=3"], "attack.cw"),
])
def test_bad_input_is_one_line_and_exit_2(run: Callable[..., Any], checkpoint: Path, args: list[str],
                                          message: str) -> None:
    result = run("curve", checkpoint, "--limit", "2", "--device", "cpu", *args)
    assert result.exit_code == 2 and message in result.output


def test_labels_never_repeat_even_when_a_label_looks_numbered() -> None:
    from lipcli.models.targets import unique_labels

    assert unique_labels(["a", "a-2", "a"]) == ["a", "a-2", "a-3"]
    assert unique_labels(["best", "best", "best-2"]) == ["best", "best-2", "best-2-2"]


def test_norm_and_attack_options_are_read_in_any_case(run: Callable[..., Any], checkpoint: Path,
                                                      tmp_path: Path) -> None:
    result = run("curve", checkpoint, "--norm", "L2", "--limit", "3", "--device", "cpu", "-a", "DeepFool",
                 "-O", "DEEPFOOL.steps=3", "--out", tmp_path / "c", "--json")
    assert result.exit_code == 0, result.output
    (summary,) = json.loads(result.stdout)
    assert summary["norm"] == "l2" and summary["attacks"] == ["deepfool"]
    result = run("curve", checkpoint, "--norm", "LINF", "--limit", "3", "--device", "cpu", "-O", "min-norm.steps=2")
    assert result.exit_code == 0, result.output
    assert (checkpoint.parent / "curve-linf" / "summary.json").is_file()


def test_an_empty_test_set_is_an_error_not_a_nan_summary() -> None:
    empty = ImageSet(torch.zeros(0, 1, 2, 2), torch.zeros(0, dtype=torch.int64))
    with pytest.raises(LipcliError, match="no test images"):
        attack_set(Threshold(), empty, {"fail": Scripted(lambda images: images)}, "l2", batch_size=4, device=CPU)


def test_an_attack_of_another_norm_is_noted_and_the_default_attack_is_one_name(host: Any) -> None:
    """The engine says which attacks minimise another norm than the curve's (their distances are upper bounds);
    ``lipcli curve`` and a grid's curves fall back on the same default attack."""
    from lipcli.evaluation.minimal_distances import DEFAULT_ATTACK, build_attacks, native_norm_notes
    from lipcli.experiments.grid import EvaluationPlan

    attacks = build_attacks(["boundary", "min-norm"], {}, host)
    assert native_norm_notes(attacks, "l2") == []
    assert native_norm_notes(attacks, "linf") == [
        "boundary minimises l2; its linf distances are measured on those adversarials"]
    assert EvaluationPlan().attacks_for("l2") == [DEFAULT_ATTACK] and DEFAULT_ATTACK in host.registry("attack")

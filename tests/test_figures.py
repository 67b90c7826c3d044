"""Error-curve figures: the mean curve over seeds, titles, and what the drawn SVG says (matplotlib writes each
text of a figure into its SVG as a comment: labels, ticks, legend, title)."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
import torch

from lipcli.evaluation.attack_set import AttackResult, RobustnessResult
from lipcli.evaluation.results import draw_evaluations, summarise
from lipcli.figures import Series, describe, draw, mean_curve

Y_TICKS = {"0", "20", "40", "60", "80", "100"}


def svg_texts(path: Path) -> list[str]:
    return re.findall(r"<!-- (.*?) -->", path.read_text())


def distance_ticks(texts: list[str]) -> list[float]:
    """The tick labels that are plain numbers, less the % axis' and the eps = 0 panel's."""
    return [float(t) for t in texts if re.fullmatch(r"[0-9.e+-]+", t) and t not in Y_TICKS]



def test_the_mean_curve_is_the_mean_of_the_seeds_errors() -> None:
    """At every distance the thick curve is the mean of the seeds' C_err (the report's averaged cell)."""
    one = torch.tensor([0.0, 0.1, 0.3, math.inf], dtype=torch.float64)
    two = torch.tensor([0.2, 0.5], dtype=torch.float64)  # fewer images: its own fraction
    points, errors = mean_curve([one, two])
    assert points.tolist() == [0.0, 0.1, 0.2, 0.3, 0.5]
    # one: 1/4, 2/4, 2/4, 3/4, 3/4; two: 0, 0, 1/2, 1/2, 1
    assert errors.tolist() == pytest.approx([1 / 8, 1 / 4, 1 / 2, 5 / 8, 7 / 8])


def test_a_title_names_data_set_norm_attacks_and_images() -> None:
    assert describe(["digits"], "linf", ["min-norm", "pgd-linf", "min-norm"], [100, 100]) == (
        "digits · l∞ · attacks min-norm, pgd-linf · 100 test images")
    assert describe(["digits"], "l2", ["min-norm"], [100, 50]) == (
        "digits · l2 · attack min-norm · 100/50 test images (they differ)")


def test_the_attack_figure_draws_the_minimum_beneath_the_attacks(tmp_path: Path) -> None:
    """``lipcli attack``'s figure: the minimum is a grey band under the attacks (earlier in the SVG: drawn first),
    each attack says on how many images it found the smallest distance, the eps values are marked."""
    labels = torch.zeros(4, dtype=torch.int64)
    predictions = torch.tensor([1, 0, 0, 0])
    one = AttackResult("one", torch.tensor([0.0, 0.2, 0.5, math.inf], dtype=torch.float64), 1.0, 10)
    two = AttackResult("two", torch.tensor([0.0, 0.3, 0.4, 2.0], dtype=torch.float64), 1.0, 10)
    result = RobustnessResult("l2", labels, predictions, [one, two])
    eps = [("0.1", 0.1), ("1.5", 1.5)]
    summary = summarise(result, eps, dataset="digits")
    written = draw_evaluations(tmp_path / "curve", [("model", result, summary)], by="attack", eps=eps)
    assert [p.name for p in written] == ["curve.png", "curve.svg"]
    svg = (tmp_path / "curve.svg").read_text()
    texts = svg_texts(tmp_path / "curve.svg")
    assert "min over attacks (grey band, drawn beneath)" in texts
    assert "one (smallest on 1 image)" in texts and "two (smallest on 2 images)" in texts  # minimum 0, .2, .4, 2
    assert {"attacks on model", "digits · l2 · attacks one, two · 4 test images"} <= set(texts)  # the title
    assert {"ε=0.1", "ε=1.5", "adversarial distance (l2)"} <= set(texts)
    assert svg.index("stroke-width: 8") < svg.index("stroke: #1f77b4")  # the band, then the first attack
    assert distance_ticks(texts) and not any("mathdefault" in t for t in texts)  # 0.1, 1: plain numbers


def test_seeds_share_their_configuration_colour_and_the_legend_says_how_many(tmp_path: Path) -> None:
    seeds = tuple(torch.tensor([0.0, 0.01 * k, 0.3, 1.0], dtype=torch.float64) for k in (1, 2, 3))
    draw(tmp_path / "f", [Series("j0", seeds), Series("j2", seeds[:1])], norm="linf", title="t",
         eps=[("8/255", 8 / 255)])
    texts = svg_texts(tmp_path / "f.svg")
    assert {"j0 (3 seeds)", "j2", "thin: each seed; thick: mean over seeds", "ε=8/255",
            "adversarial distance (l∞)"} <= set(texts)
    svg = (tmp_path / "f.svg").read_text()
    thin = "stroke-opacity: 0.45; stroke-width: 0.7"  # a single seed's line, in its configuration's colour
    assert svg.count(f"stroke: #1f77b4; {thin}") == 3 * 2  # j0's 3 seeds, in both panels
    assert svg.count(thin) == 3 * 2  # j2 (one seed): its curve only

"""The gradient-free masking check: a score-based attack beating the gradient attacks' distances is reported,
and it never can beat exact distances."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lipcli.data.types import ImageSet
from lipcli.evaluation.masking import CHECK_GAIN, gradient_free_check
from lipcli.plugin_host import PluginHost
from lipcli.engine import Engine


def _affine() -> tuple[nn.Module, ImageSet]:
    model = nn.Sequential(nn.Flatten(), nn.Linear(2 * 5 * 5, 4)).eval()
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        model[1].weight.copy_(torch.randn(model[1].weight.shape, generator=generator))
        model[1].bias.zero_()
    images = 0.3 + 0.4 * torch.rand((12, 2, 5, 5), generator=generator)
    with torch.no_grad():
        labels = model(images).argmax(1)
    return model, ImageSet(images, labels)


def _exact(model: nn.Module, data: ImageSet, norm: str) -> torch.Tensor:
    """min over j of (z_y - z_j) / ||w_y - w_j||_* (the closest boundary points lie inside the box here)."""
    weight = model[1].weight.detach().double()
    logits = model(data.images).detach().double()
    difference = weight[data.labels][:, None, :] - weight[None, :, :]
    dual = difference.norm(dim=2) if norm == "l2" else difference.abs().sum(dim=2)
    ratio = (logits.gather(1, data.labels[:, None]) - logits) / dual
    ratio[torch.arange(len(data)), data.labels] = torch.inf
    return ratio.min(dim=1).values


@pytest.mark.parametrize("norm", ["l2", "linf"])
def test_a_gradient_free_attack_beats_overstated_distances_and_never_exact_ones(host: PluginHost, norm: str) -> None:
    model, data = _affine()
    exact = _exact(model, data, norm)
    assert exact.max() < 0.3 if norm == "linf" else True  # the closest points lie inside the box

    def check(sighted: torch.Tensor, queries: int = 100):  # noqa: ANN202
        square = host.registry("attack").get("square").factory(queries=queries)
        return gradient_free_check(model, data, sighted, square, "square", norm, images=8, device=torch.device("cpu"),
                                   seed=0)

    honest = check(exact)  # no attack can be CHECK_GAIN closer than the exact distance
    assert honest.images == 8 and honest.beaten == 0 and honest.warning() is None
    assert 0 < honest.queries <= 8 * 101
    masked = check(2 * exact, queries=1000)  # as if gradient attacks had overstated every distance twofold
    assert masked.beaten >= 6 and CHECK_GAIN - 1e-6 <= masked.largest_gain <= 0.5 + 1e-9
    assert f"on {masked.beaten} of 8 sampled images" in masked.warning()
    failed = check(torch.where(torch.arange(len(data)) < 3, torch.inf, exact))  # gradient attacks failed on 3
    assert failed.beaten == 3 and failed.largest_gain == 1.0
    skipped = check(torch.zeros(len(data), dtype=torch.float64))  # nothing attacked (all misclassified)
    assert skipped.images == 0 and skipped.warning() is None


def test_the_check_compares_with_gradient_attacks_only(engine: Engine) -> None:
    """A decision-based attack's distances are not the gradient attacks': exact ones there hide nothing."""
    from types import SimpleNamespace

    from lipcli.evaluation.attack_set import AttackResult, RobustnessResult
    from lipcli.evaluation.minimal_distances import _masking_check

    model, data = _affine()
    exact = _exact(model, data, "linf")
    attacks = {"pgd-linf": SimpleNamespace(), "boundary": SimpleNamespace(decision_based=True)}
    result = RobustnessResult("linf", data.labels, data.labels, [
        AttackResult("pgd-linf", 2 * exact, 1.0, 1), AttackResult("boundary", exact, 1.0, 1, decision_based=True)])
    check = _masking_check(model, data, result, attacks, engine, images=4, seed=0)
    assert check is not None and check.images == 4 and check.beaten >= 3
    assert _masking_check(model, data, result, attacks, engine, images=0, seed=0) is None
    only_blind = RobustnessResult("linf", data.labels, data.labels, result.attacks[1:])
    assert _masking_check(model, data, only_blind, {"boundary": attacks["boundary"]}, engine, images=4,
                          seed=0) is None

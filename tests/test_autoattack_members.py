"""FAB-T and Square, two members of AutoAttack's standard ensemble, against closed-form answers and their contracts.

On the affine model of ``test_attacks`` the minimal distance of every image is known (``exact_distances``): no
attack may break an image at a smaller eps, FAB (minimum-norm) must find that distance, and Square (score-based)
must break every image once eps is large enough, without ever using a gradient or more queries than its budget.
"""

from __future__ import annotations

import pytest
import torch
from test_attacks import SHAPE, Affine, exact_distances
from test_defences import _one_thread  # noqa: F401 - one intra-op thread for these tiny models
from torch import nn

from lipcli.attacks import BUDGET_TOLERANCE, distance
from lipcli.attacks.base import in_box
from lipcli.evaluation.accounting import QueryCounter, measured_distances
from lipcli.gradients import frozen_eval
from lipcli.plugin_host import PluginHost

Case = tuple[nn.Module, torch.Tensor, torch.Tensor]


@pytest.fixture(scope="module")
def affine() -> Case:
    """``test_attacks``' affine model and 40 other images in [0.3, 0.7] (every closest boundary point in the box)."""
    model = Affine().eval()
    images = 0.3 + 0.4 * torch.rand((40, *SHAPE), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        labels = model(images).argmax(1)
    return model, images, labels


class _NoGradient(torch.autograd.Function):
    """The identity whose backward fails the test: any gradient through the model's scores is a bug."""

    @staticmethod
    def forward(ctx: object, logits: torch.Tensor) -> torch.Tensor:
        return logits.clone()

    @staticmethod
    def backward(ctx: object, gradient: torch.Tensor) -> torch.Tensor:
        raise AssertionError("a score-based attack asked for a gradient")


class ScoresOnly(nn.Module):
    """Scores of ``model``; counts the forward passes made with autograd enabled (a score-based attack makes none)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.with_autograd = 0

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        self.with_autograd += torch.is_grad_enabled()
        return _NoGradient.apply(self.model(images))


def _at_budget(host: PluginHost, name: str, model: nn.Module, images: torch.Tensor, labels: torch.Tensor, norm: str,
               eps: torch.Tensor, **options: object) -> tuple[torch.Tensor, torch.Tensor]:
    """(proposals, whether lipcli counts each image broken at ``eps``), the attack seeded like the engine does."""
    attack = host.registry("attack").get(name).factory(**options)
    torch.manual_seed(0)
    with frozen_eval(model):
        proposals = attack.run_at(model, images, labels, norm, eps)
    found, _ = measured_distances(model, images, labels, proposals, norm)
    return proposals, found <= eps + BUDGET_TOLERANCE


@pytest.mark.parametrize(("norm", "factor"), [("linf", 1.5), ("l2", 3.0)])
def test_square_breaks_the_affine_model_from_scores_alone(host: PluginHost, affine: Case, norm: str,
                                                          factor: float) -> None:
    model, images, labels = affine
    truth = exact_distances(model, images, labels, norm)
    scores = ScoresOnly(model)
    proposals, broken = _at_budget(host, "square", scores, images, labels, norm, truth * factor, queries=1000)
    assert scores.with_autograd == 0
    assert broken.all(), f"{int((~broken).sum())} of {len(broken)} images survived at {factor} x their distance"
    assert in_box(proposals).all()
    assert (distance(proposals - images, norm) <= truth * factor + BUDGET_TOLERANCE).all()
    with pytest.raises(AssertionError, match="gradient"):  # the wrapper does catch a gradient-based attack
        _at_budget(host, "fab-t", ScoresOnly(model), images[:2], labels[:2], norm, truth[:2], steps=1)


@pytest.mark.parametrize("name", ["square", "fab-t", "fab"])
@pytest.mark.parametrize("norm", ["l2", "linf"])
def test_no_image_breaks_below_its_exact_distance(host: PluginHost, affine: Case, name: str, norm: str) -> None:
    model, images, labels = affine
    truth = exact_distances(model, images, labels, norm)
    options = {"queries": 200} if name == "square" else {}
    proposals, broken = _at_budget(host, name, model, images, labels, norm, truth * (1 - 1e-3), **options)
    assert not broken.any()
    assert in_box(proposals).all()


@pytest.mark.parametrize("name", ["fab-t", "fab"])
@pytest.mark.parametrize("norm", ["l2", "linf"])
def test_fab_finds_the_exact_minimal_distance(host: PluginHost, affine: Case, name: str, norm: str) -> None:
    """Minimum-norm: the closest boundary over the target classes, to float32 rounding (distances down to 1e-3)."""
    model, images, labels = affine
    attack = host.registry("attack").get(name).factory()
    with frozen_eval(model):
        found, _ = measured_distances(model, images, labels, attack.run(model, images, labels, norm), norm)
    ratio = found / exact_distances(model, images, labels, norm)
    assert (ratio - 1).abs().max() <= 1e-4, f"ratio to the closed form from {ratio.min():.6f} to {ratio.max():.6f}"


@pytest.mark.parametrize("norm", ["l2", "linf"])
def test_fab_t_breaks_every_image_just_above_its_exact_distance(host: PluginHost, affine: Case, norm: str) -> None:
    model, images, labels = affine
    truth = exact_distances(model, images, labels, norm)
    _, broken = _at_budget(host, "fab-t", model, images, labels, norm, truth * (1 + 1e-3))
    assert broken.all(), f"{int((~broken).sum())} of {len(broken)} images survived"


@pytest.mark.parametrize("norm", ["l2", "linf"])
def test_square_queries_within_its_budget_and_only_while_robust(host: PluginHost, affine: Case, norm: str) -> None:
    """One query per image to start, then one per step while the image is not fooled, at most ``queries``."""
    model, images, labels = affine
    truth = exact_distances(model, images, labels, norm)
    budget, judged = 300, len(images)  # lipcli's accounting classifies each proposal once more
    unbreakable = QueryCounter(model)
    _, broken = _at_budget(host, "square", unbreakable, images, labels, norm, truth * 0.5, queries=budget)
    assert not broken.any() and unbreakable.queries - judged == len(images) * (budget + 1)
    breakable = QueryCounter(model)
    _, broken = _at_budget(host, "square", breakable, images, labels, norm, truth * 4, queries=budget)
    assert broken.all()
    assert breakable.queries - judged <= len(images) * (budget + 1) / 4, "fooled images went on querying"


def test_square_l2_on_large_images_counts_every_adversarial_it_stops_on(host: PluginHost) -> None:
    """On 3x224x224 inputs a perturbation rescaled to norm eps in float32 misses eps by ~5e-6 of it: lipcli's
    rule (:func:`within_budget`) must accept what Square stops on, or the image would count as robust."""
    from lipcli.attacks import within_budget

    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 224 * 224, 10)).eval()
    images = 0.2 + 0.6 * torch.rand(16, 3, 224, 224)
    with torch.no_grad():
        labels = model(images).argmax(1)
    eps = torch.full((16,), 8.0, dtype=torch.float64)
    torch.manual_seed(1)
    proposals = host.registry("attack").get("square").factory(queries=60).run_at(model, images, labels, "l2", eps)
    found, _ = measured_distances(model, images, labels, proposals, "l2")
    with torch.no_grad():
        fooled = model(proposals).argmax(1) != labels
    assert fooled.sum() >= 2
    assert within_budget(found[fooled], eps[fooled]).all() and torch.isfinite(found[fooled]).all()

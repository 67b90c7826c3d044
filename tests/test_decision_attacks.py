"""``hsja`` (HopSkipJump): the closed-form distance on an affine model, an honest query budget per image, labels
only, and reproducible from torch's global generator (which the engine seeds)."""

from __future__ import annotations

import pytest
import torch
from test_attacks import SHAPE, Affine, LabelsOnly, exact_distances
from torch import nn

from lipcli.evaluation.accounting import QueryCounter, measured_distances
from lipcli.gradients import frozen_eval
from lipcli.plugin_host import PluginHost


@pytest.fixture(scope="module")
def affine() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """An affine model and 16 images inside [0.3, 0.7] (closest boundary points inside the box), their labels."""
    model = Affine().eval()
    generator = torch.Generator().manual_seed(1)
    images = 0.3 + 0.4 * torch.rand((16, *SHAPE), generator=generator)
    with torch.no_grad():
        labels = model(images).argmax(1)
    return model, images, labels


def hsja(host: PluginHost, **options: int) -> object:
    return host.registry("attack").get("hsja").factory(**options)


def test_hsja_reaches_the_closed_form_distance(
    host: PluginHost, affine: tuple[nn.Module, torch.Tensor, torch.Tensor]
) -> None:
    """At 2,000 queries per image the median is within 3 % of the exact minimal l2 distance and most images
    within 5 %; HopSkipJump is local, so an image whose start lies behind a farther class's boundary may
    settle there (never below the truth)."""
    model, images, labels = affine
    torch.manual_seed(0)
    with frozen_eval(model):
        proposals = hsja(host, queries=2000).run(model, images, labels, "l2")
    found, outside = measured_distances(model, images, labels, proposals, "l2")
    ratio = found / exact_distances(model, images, labels, "l2")
    assert outside == 0 and torch.isfinite(ratio).all()
    assert ratio.min() >= 1 - 1e-6, "below the exact minimal distance: the accounting is wrong"
    assert ratio.median() <= 1.03
    assert (ratio <= 1.05).double().mean() >= 0.8


@pytest.mark.parametrize("queries", [1, 30, 250])
def test_hsja_never_exceeds_its_query_budget(
    host: PluginHost, affine: tuple[nn.Module, torch.Tensor, torch.Tensor], queries: int
) -> None:
    """Per image, counted by lipcli's QueryCounter: each image alone, and the whole batch together. The budget is
    also spent (an attack that stops early wastes what the user paid for); 30 queries are fewer than a start
    and one full round (a bisection alone takes 9 here)."""
    model, images, labels = affine
    torch.manual_seed(0)
    attack = hsja(host, queries=queries)
    for row in range(4):
        counter = QueryCounter(model)
        attack.run(counter, images[row : row + 1], labels[row : row + 1], "l2")
        assert counter.queries <= queries
    counter = QueryCounter(model)
    attack.run(counter, images, labels, "l2")
    assert counter.queries <= queries * len(labels)
    assert counter.queries >= (queries - 20) * len(labels)


def test_hsja_caps_each_normal_estimate_at_max_samples(
    host: PluginHost, affine: tuple[nn.Module, torch.Tensor, torch.Tensor]
) -> None:
    """The default spends a large budget on more steps, not on larger estimates: with one image and one model call
    per round, no call holds more than 200 probes, while 10,000 queries still all go (HopSkipJump's uncapped
    100 sqrt(t) growth reaches 519 probes per estimate here)."""
    model, images, labels = affine
    sizes: list[int] = []

    class Sizes(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            sizes.append(len(x))
            return model(x)

    torch.manual_seed(0)
    counter = QueryCounter(Sizes())
    hsja(host, queries=10000, chunk=100000).run(counter, images[:1], labels[:1], "l2")
    assert max(sizes) == 200, max(sizes)
    assert counter.queries >= 10000 - 20


def test_hsja_uses_only_the_predicted_label(
    host: PluginHost, affine: tuple[nn.Module, torch.Tensor, torch.Tensor]
) -> None:
    """The same output when the logits are replaced by a one-hot of their argmax, and no autograd graph is ever
    built (so nothing can call backward), even with the model's parameters requiring gradients."""
    model, images, labels = affine
    grad_seen = []

    class Watched(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            grad_seen.append(torch.is_grad_enabled() or x.requires_grad)
            return self.model(x)

    torch.manual_seed(0)
    full = hsja(host, queries=300).run(Watched(), images, labels, "l2")
    torch.manual_seed(0)
    blind = hsja(host, queries=300).run(LabelsOnly(model), images, labels, "l2")
    assert torch.equal(full, blind), "hsja used more than the predicted labels"
    assert grad_seen and not any(grad_seen), "hsja queried the model with autograd on"


def test_hsja_is_reproducible_from_the_global_seed(
    host: PluginHost, affine: tuple[nn.Module, torch.Tensor, torch.Tensor]
) -> None:
    model, images, labels = affine
    runs = []
    for seed in (0, 0, 1):
        torch.manual_seed(seed)
        runs.append(hsja(host, queries=200).run(model, images, labels, "l2"))
    assert torch.equal(runs[0], runs[1])
    assert not torch.equal(runs[0], runs[2]), "the seed does not reach the attack's randomness"


def test_hsja_options_are_checked(host: PluginHost) -> None:
    with pytest.raises(ValueError, match="queries"):
        hsja(host, queries=0)

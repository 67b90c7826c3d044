"""The decision-based attacks. ``hsja`` (HopSkipJump): the closed-form distance on an affine model, an honest query
budget per image, labels only, and reproducible from torch's global generator (which the engine seeds).
``boundary``: its cost per step and its step-size rule, computed by hand (its closed-form distances and its use of
labels only are in ``test_attacks.py``)."""

from __future__ import annotations

import pytest
import torch
from test_attacks import SHAPE, Affine, CallSizes, LabelsOnly, exact_distances
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
    recorded = CallSizes(model)
    torch.manual_seed(0)
    counter = QueryCounter(recorded)
    hsja(host, queries=10000, chunk=100000).run(counter, images[:1], labels[:1], "l2")
    assert max(recorded.sizes) == 200, max(recorded.sizes)
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


def boundary(host: PluginHost, **options: int) -> object:
    return host.registry("attack").get("boundary").factory(**options)


@pytest.mark.parametrize("check_every", [None, 1, 7])
def test_boundary_classifies_the_orthogonal_proposal_every_check_every_steps(
    host: PluginHost, affine: tuple[nn.Module, torch.Tensor, torch.Tensor], check_every: int | None
) -> None:
    """Per image, 100 steps cost 100 queries for the full proposals plus ``100 // check_every`` for the orthogonal
    ones (the start, the same for the same seed, is measured with 0 steps and taken off): 120 with the default
    (every 5th step), where the attack used to classify both every step (200)."""
    model, images, labels = affine
    options = {} if check_every is None else {"check_every": check_every}
    spent = []
    for steps in (0, 100):
        counter = QueryCounter(model)
        torch.manual_seed(0)
        boundary(host, steps=steps, **options).run(counter, images, labels, "l2")
        spent.append(counter.queries)
    assert spent[1] - spent[0] == (100 + 100 // (check_every or 5)) * len(labels)


def test_boundary_ends_every_image_on_the_closest_point_of_a_class_boundary(host: PluginHost) -> None:
    """The attack is local: within its 5,000 default steps each image must reach a local minimum, the closest
    point of one class's boundary (within 0.1 % of ``(z_y - z_j) / |w_y - w_j|`` for some class j, the closed
    form ignoring the other classes; measured: within 0.02 % for six seeds), and most images the closest
    class's (within 1 % of the exact distance). The 40 images of ``test_attacks.py``'s closed-form test, where
    one image settles at 2.2 times the exact distance with seed 0."""
    model = Affine().eval()
    images = 0.3 + 0.4 * torch.rand((40, *SHAPE), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        logits = model(images).double()
    labels = logits.argmax(1)
    weight = model.linear.weight.detach().double()
    per_class = (logits.gather(1, labels[:, None]) - logits) / (weight[labels][:, None] - weight[None]).norm(dim=2)
    per_class[torch.arange(len(labels)), labels] = torch.inf
    for seed in (0, 1):
        torch.manual_seed(seed)
        with frozen_eval(model):
            proposals = boundary(host).run(model, images, labels, "l2")
        found, _ = measured_distances(model, images, labels, proposals, "l2")
        assert (found[:, None] / per_class - 1).abs().min(1).values.max() <= 1e-3
        assert (found / exact_distances(model, images, labels, "l2") <= 1.01).double().mean() >= 0.9


def test_boundary_step_sizes_follow_the_success_rates_of_the_last_window_checks(host: PluginHost) -> None:
    """Five images, window 5, both step sizes 0.01, factor 1.5; columns of the logs (1 success, NaN unseen):
    A: orthogonal 3/5 (> 50 %: both grow), full 2/5 (> 25 %: the source step grows again);
    B: 0/5 and 0/5: both shrink, and the source step shrinks again;
    C: 1/5 and 1/5: 20 % is inside both bands, nothing changes;
    D: orthogonal log not full (nothing), full 0/5 (< 10 %: the source step shrinks);
    E: 2/5 (inside) and a log not full: nothing.
    A changed rate starts a new window: exactly the logs that changed a step are cleared."""
    nan = float("nan")
    sphere_log = torch.tensor([[1, 0, 1, 1, 1], [1, 0, 0, 1, 1], [1, 0, 0, 1, 0], [0, 0, 0, nan, 0], [0, 0, 0, nan, 0]])
    source_log = torch.tensor([[1, 0, 1, 0, 1], [1, 0, 0, 0, nan], [0, 0, 0, 0, nan], [0, 0, 0, 0, nan], [0, 0, 0, 0, nan]])
    kept_sphere, kept_source = sphere_log.clone(), source_log.clone()
    step = torch.full((5,), 0.01)
    spherical, source = boundary(host, window=5)._adapt(step.clone(), step.clone(), sphere_log, source_log)
    assert torch.allclose(spherical, torch.tensor([0.015, 0.01 / 1.5, 0.01, 0.01, 0.01]))
    assert torch.allclose(source, torch.tensor([0.0225, 0.01 / 2.25, 0.01, 0.01 / 1.5, 0.01]))
    assert sphere_log[:, :2].isnan().all() and torch.equal(sphere_log[:, 2:].nan_to_num(7), kept_sphere[:, 2:].nan_to_num(7))
    assert source_log[:, [0, 1, 3]].isnan().all()
    assert torch.equal(source_log[:, [2, 4]].nan_to_num(7), kept_source[:, [2, 4]].nan_to_num(7))


def test_boundary_grows_its_steps_once_per_window_when_every_proposal_succeeds(
    host: PluginHost, affine: tuple[nn.Module, torch.Tensor, torch.Tensor], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A model that calls every input class 0 while the labels say 1: every proposal succeeds, so each log fills
    with successes in ``window`` checks, grows the steps and starts again. 23 steps, a check every 2nd: 11
    checks, window 3: 3 growths of both steps, each with another of the source step (0.01 x 1.5^3 and
    0.01 x 1.5^6). The walk's logs must cycle through their rows and be cleared after each change."""
    _, images, _ = affine
    labels = torch.ones(len(images), dtype=torch.long)

    class Zero(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.nn.functional.one_hot(torch.zeros(len(x), dtype=torch.long), 5).float()

    attack = boundary(host, steps=23, check_every=2, window=3)
    sizes = []
    adapt = type(attack)._adapt

    def recorded(self: object, *args: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        sizes.append(adapt(self, *args))
        return sizes[-1]

    monkeypatch.setattr(type(attack), "_adapt", recorded)
    torch.manual_seed(0)
    attack.run(Zero(), images, labels, "l2")
    assert len(sizes) == 11
    spherical, source = sizes[-1]
    assert torch.allclose(spherical, torch.full_like(spherical, 0.01 * 1.5**3))
    assert torch.allclose(source, torch.full_like(source, 0.01 * 1.5**6))


@pytest.mark.parametrize("option", ["check_every", "window", "chunk"])
def test_boundary_options_are_checked(host: PluginHost, option: str) -> None:
    with pytest.raises(ValueError, match=r"need .*\bgot\b.*\b0\b"):
        boundary(host, **{option: 0})


@pytest.mark.parametrize(("chunk", "largest"), [(None, 32), (7, 7)])
def test_boundary_classifies_in_calls_of_at_most_chunk_inputs(
    host: PluginHost, affine: tuple[nn.Module, torch.Tensor, torch.Tensor], chunk: int | None, largest: int
) -> None:
    """40 images, on a CPU: no model call holds more than ``chunk`` inputs (32 by default there), and the largest
    holds exactly that many (the batch is split, not classified image by image)."""
    model, images, labels = affine
    images, labels = torch.cat([images, images, images[:8]]), torch.cat([labels, labels, labels[:8]])
    recorded = CallSizes(model)
    torch.manual_seed(0)
    boundary(host, steps=10, chunk=chunk).run(recorded, images, labels, "l2")
    assert max(recorded.sizes) == largest

"""The baselines a robustness paper is compared against: TRADES, FGSM-RS and GradAlign, their presets, and
their registration through the same hooks as lipcli's own defences.

Hand computations run in float64 on tiny models with closed forms: for a linear classifier ``z = W x + b``
the softmax, the KL between two softmaxes and ``grad_x CE = W^T (softmax(z) - e_y)`` are written out here.
References for parameter gradients are computed independently, after the original code's formulas, with
PyTorch's own ``kl_div`` and ``cosine_similarity``.
"""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path
from typing import Any, Callable

import pytest
import torch
from lipcli_builtins.defences.gradalign import cosine
from test_defences import (
    _bn_buffers,
    _bn_model,
    _defence,
    _hand_gradient,
    _mlp,
    _one_thread,  # noqa: F401 - the module-scoped autouse fixture applies here too
    assert_in_the_ball_and_the_box,
)
from torch import nn

from lipcli.config import resolve
from lipcli.config.schema import DefenceConfig
from lipcli.defence import Perturbation, build_defence, expand
from lipcli.errors import ConfigError
from lipcli.gradients import frozen_eval
from lipcli.plugin_host import PluginHost

LOSS_RTOL = 1e-10
"""Relative tolerance for float64 losses and gradients against hand computations and references."""


def _linear(seed: int, n: int = 16, k: int = 4, scale: float = 1.0) -> nn.Module:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Flatten(), nn.Linear(n, k)).double()
    with torch.no_grad():
        model[1].weight.mul_(scale)
    return model


def _hand_softmax(linear: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    z = x.flatten(1) @ linear.weight.detach().T + linear.bias.detach()
    e = torch.exp(z - z.max(dim=1, keepdim=True).values)
    return e / e.sum(dim=1, keepdim=True)


def _box_images(batch: int, seed: int) -> torch.Tensor:
    """``[batch, 1, 4, 4]`` float64 images with rows on the box's faces (0 and 1), so projection onto
    [0, 1] must act."""
    x = torch.rand(batch, 1, 4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    x[:, :, 0] = 0.0
    x[:, :, 1] = 1.0
    return x


def _parameter_gradient(loss: torch.Tensor, model: nn.Module) -> torch.Tensor:
    return torch.cat([g.flatten() for g in torch.autograd.grad(loss, list(model.parameters()))])


def _bn_mlp(seed: int) -> nn.Module:
    """A float64 tanh MLP with BatchNorm, in train mode: its batch statistics couple the examples."""
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Flatten(), nn.Linear(16, 10), nn.BatchNorm1d(10), nn.Tanh(), nn.Linear(10, 4)
    ).double().train()


# --------------------------------------------------------------------------------------------------------------
# 1. TRADES


def test_trades_kl_term_matches_hand_computation(host: PluginHost) -> None:
    model = _linear(0)
    x = _box_images(6, seed=1)
    adversarial = (x + 0.05 * torch.randn_like(x)).clamp(0, 1)
    y = torch.tensor([0, 1, 2, 3, 0, 1])
    beta = 2.5
    out = _defence(host, "trades", beta=beta).training_loss(model, adversarial, y, Perturbation(adversarial, clean=x))
    p, q = _hand_softmax(model[1], x), _hand_softmax(model[1], adversarial)
    kl = (p * torch.log(p / q)).sum(dim=1)  # KL(clean || adversarial), the original's argument order
    ce = -torch.log(p[torch.arange(6), y]).mean()  # on the clean batch
    assert kl.min() > 0
    torch.testing.assert_close(out.penalty, beta * kl.mean(), rtol=LOSS_RTOL, atol=0)
    torch.testing.assert_close(out.data_loss.detach(), ce, rtol=LOSS_RTOL, atol=0)
    torch.testing.assert_close(out.total.detach(), ce + beta * kl.mean(), rtol=LOSS_RTOL, atol=0)
    torch.testing.assert_close(out.logits.detach(), model(x), rtol=LOSS_RTOL, atol=0)  # train error: clean
    assert out.total.requires_grad and not out.penalty.requires_grad


def test_trades_parameter_gradient_matches_the_original_formula(host: PluginHost) -> None:
    """What the optimiser consumes: d/dtheta of CE(f(x)) + beta KLDivLoss(sum)(log_softmax f(x'), softmax f(x))
    / B, both distributions differentiated, BatchNorm in train mode, against the original code's formula."""
    model = _bn_mlp(seed=2)
    reference = copy.deepcopy(model)
    x = _box_images(8, seed=3)
    adversarial = (x + 0.1 * torch.randn_like(x)).clamp(0, 1)
    y = torch.randint(0, 4, (8,), generator=torch.Generator().manual_seed(4))
    beta = 6.0
    out = _defence(host, "trades", beta=beta).training_loss(model, adversarial, y, Perturbation(adversarial, clean=x))
    got = _parameter_gradient(out.total, model)

    F = nn.functional
    kl = F.kl_div(F.log_softmax(reference(adversarial), dim=1), F.softmax(reference(x), dim=1), reduction="sum")
    expected_loss = F.cross_entropy(reference(x), y) + beta * kl / len(x)
    expected = _parameter_gradient(expected_loss, reference)
    torch.testing.assert_close(out.total, expected_loss, rtol=LOSS_RTOL, atol=0)
    assert expected.abs().max() > 1e-3
    torch.testing.assert_close(got, expected, rtol=LOSS_RTOL, atol=1e-13)


def test_trades_with_beta_zero_is_plain_cross_entropy(host: PluginHost) -> None:
    model = _bn_mlp(seed=5)
    x = _box_images(8, seed=6)
    adversarial = (x + 0.1 * torch.randn_like(x)).clamp(0, 1)
    y = torch.randint(0, 4, (8,), generator=torch.Generator().manual_seed(7))
    out = _defence(host, "trades", beta=0.0).training_loss(model, adversarial, y, Perturbation(adversarial, clean=x))
    ce = nn.functional.cross_entropy(copy.deepcopy(model)(x), y)
    torch.testing.assert_close(out.total, ce, rtol=LOSS_RTOL, atol=0)
    assert out.penalty == 0
    torch.testing.assert_close(
        _parameter_gradient(out.total, model), _parameter_gradient(nn.functional.cross_entropy(model(x), y), model),
        rtol=LOSS_RTOL, atol=0,
    )


def _kl_at(model: nn.Module, x: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        p, log_q = torch.softmax(model(x), dim=1), torch.log_softmax(model(points), dim=1)
        return (p * (torch.log(p) - log_q)).sum(dim=1)


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_trades_attack_stays_in_the_ball_and_box_and_raises_the_kl(host: PluginHost, norm: str) -> None:
    model = _mlp(nn.Tanh, seed=8).eval()
    x = _box_images(32, seed=9)
    y = torch.randint(0, 4, (32,))
    trades = _defence(host, "trades", norm=norm)
    eps = trades.attack.eps
    torch.manual_seed(10)
    with frozen_eval(model):
        adversarial = trades.perturb(model, x, y).images
    torch.manual_seed(10)
    start = (x + 0.001 * torch.randn_like(x)).clamp(0, 1)  # the original's start (well inside the ball)

    assert_in_the_ball_and_the_box(adversarial, x, norm, eps)
    kl_attacked, kl_start = _kl_at(model, x, adversarial), _kl_at(model, x, start)
    signs = torch.randint(0, 2, x.shape, generator=torch.Generator().manual_seed(11)) * 2 - 1
    kl_random = _kl_at(model, x, (x + (adversarial - x) * signs).clamp(0, 1))  # same sizes, not aimed
    assert kl_attacked.mean() > 100 * kl_start.mean()
    assert kl_attacked.mean() > 2 * kl_random.mean()
    assert torch.all(kl_attacked > kl_start)


def test_trades_defaults_are_the_papers(host: PluginHost) -> None:
    """train_trades_cifar10.py: epsilon 0.031, step-size 0.007, num-steps 10, beta 6.0; l2: eps 0.5 and the
    original's l2 step 2 eps / steps."""
    linf, l2 = _defence(host, "trades"), _defence(host, "trades", norm="l2")
    assert (linf.beta, linf.attack.norm, linf.attack.eps, linf.attack.alpha, linf.attack.steps) == (
        6.0, "linf", 0.031, 0.007, 10,
    )
    assert (l2.beta, l2.attack.norm, l2.attack.eps, l2.attack.alpha, l2.attack.steps) == (6.0, "l2", 0.5, 0.1, 10)


@pytest.mark.parametrize(
    "name,match",
    [
        ("j2+trades", "'at-l2' and 'trades' both define the perturbation"),
        ("at-pgd+trades", "'at-pgd' and 'trades' both define the perturbation"),
        ("trades+wcat", "'trades' and 'wcat' both define the training loss"),
        ("trades+gradalign", "'trades' and 'gradalign' both define the training loss"),
        ("fgsm-rs+trades", "both define the perturbation"),
    ],
)
def test_trades_combines_with_no_other_perturbation_or_loss(host: PluginHost, name: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        build_defence(DefenceConfig(name=name), host)


# --------------------------------------------------------------------------------------------------------------
# 2. FGSM from a random start


def test_fgsm_rs_step_matches_the_hand_formula(host: PluginHost) -> None:
    """clip_box(x + clip(delta0 + 1.25 eps sign(g(x + delta0)), -eps, eps)), delta0 uniform in the ball and
    x + delta0 clipped to the box first (Wong et al.'s code)."""
    model = _linear(11)
    x = _box_images(16, seed=12)
    y = torch.randint(0, 4, (16,), generator=torch.Generator().manual_seed(13))
    eps = 0.1
    torch.manual_seed(14)
    with frozen_eval(model):
        adversarial = _defence(host, "fgsm-rs", eps=eps).perturb(model, x, y).images
    torch.manual_seed(14)
    start = (x + (torch.rand_like(x) * 2 - 1) * eps).clamp(0, 1)
    g = _hand_gradient(model[1], start, y)
    step = (start - x + 1.25 * eps * g.sign()).clamp(-eps, eps)
    expected = (x + step).clamp(0, 1)
    torch.testing.assert_close(adversarial, expected, rtol=0, atol=1e-15)
    # the case is not degenerate: the start matters, and both projections act
    assert (g.sign() != _hand_gradient(model[1], x, y).sign()).any()
    assert ((start - x + 1.25 * eps * g.sign()).abs() > eps).any()
    assert ((x + step < 0) | (x + step > 1)).any()
    assert (adversarial - x).abs().max() <= eps + 1e-15 and adversarial.min() >= 0 and adversarial.max() <= 1


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_at_pgd_takes_steps_of_alpha_by_the_hand_formula(host: PluginHost, norm: str) -> None:
    """Three steps from x on a linear model (the ascent TRADES shares): x_{k+1} = box(x + ball(x_k + step - x)),
    the step alpha sign(g) (l-inf) or alpha g / ||g|| (l2), with eps large enough that the ball never binds
    but for the box, so a step of the wrong size shows."""
    model = _linear(21)
    x = _box_images(16, seed=22)
    y = torch.randint(0, 4, (16,), generator=torch.Generator().manual_seed(23))
    eps, alpha = (0.3, 0.02) if norm == "linf" else (2.0, 0.1)
    with frozen_eval(model):
        adversarial = _defence(host, "at-pgd", norm=norm, eps=eps, alpha=alpha, steps=3, random_start=False).perturb(
            model, x, y
        ).images
    expected = x
    for _ in range(3):
        g = _hand_gradient(model[1], expected, y)
        if norm == "linf":
            step = alpha * g.sign()
        else:
            step = alpha * g / g.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
        expected = (expected + step).clamp(0, 1)
    torch.testing.assert_close(adversarial, expected, rtol=0, atol=1e-12)
    assert ((adversarial - x).flatten(1).abs().max(dim=1).values > alpha).all()  # it moved beyond one step


def test_fgsm_rs_defaults_and_plain_fgsm_without_random_start(host: PluginHost) -> None:
    """train_fgsm.py: epsilon 8, alpha 10 (in /255), delta-init random; without the random start the step of
    1.25 eps is cut to eps: ``x + eps sign(g(x))`` in the box (GradAlign's ``--attack_init=zero``)."""
    fgsm = _defence(host, "fgsm-rs")
    assert (fgsm.norm, fgsm.eps, fgsm.steps, fgsm.random_start) == ("linf", 8 / 255, 1, True)
    assert fgsm.alpha == pytest.approx(10 / 255, rel=1e-15)
    model = _linear(15)
    x = _box_images(8, seed=16)
    y = torch.randint(0, 4, (8,), generator=torch.Generator().manual_seed(17))
    with frozen_eval(model):
        adversarial = _defence(host, "fgsm-rs", random_start=False).perturb(model, x, y).images
    expected = (x + 8 / 255 * _hand_gradient(model[1], x, y).sign()).clamp(0, 1)
    torch.testing.assert_close(adversarial, expected, rtol=0, atol=1e-15)


# --------------------------------------------------------------------------------------------------------------
# 3. GradAlign


def _hand_cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    a, b = a.flatten(1), b.flatten(1)
    return (a * b).sum(1) / torch.sqrt((a * a).sum(1) * (b * b).sum(1))


@pytest.mark.parametrize("perturbed", [False, True])
def test_gradalign_regulariser_matches_hand_computation(host: PluginHost, perturbed: bool) -> None:
    """lam * mean(1 - cos(W^T(p(x) - e_y), W^T(p(x + eta) - e_y))), x the CLEAN batch, and the data loss on
    the batch the weight update uses (the perturbed one when there is a perturbation)."""
    model = _linear(18, scale=5.0)
    x = _box_images(8, seed=19)
    y = torch.randint(0, 4, (8,), generator=torch.Generator().manual_seed(20))
    lam, eps = 0.3, 0.1
    batch = (x + 0.2 * torch.randn_like(x)) if perturbed else x
    torch.manual_seed(21)
    out = _defence(host, "gradalign", lam=lam, eps=eps).training_loss(
        model, batch, y, Perturbation(batch, clean=x) if perturbed else None
    )
    torch.manual_seed(21)
    eta = (torch.rand_like(x) * 2 - 1) * eps  # uniform in the l-inf ball, x + eta not clipped (as theirs)
    cos = _hand_cosine(_hand_gradient(model[1], x, y), _hand_gradient(model[1], x + eta, y))
    assert (1 - cos).min() > 1e-4  # a real misalignment
    torch.testing.assert_close(out.penalty, lam * (1 - cos).mean(), rtol=LOSS_RTOL, atol=0)
    p = _hand_softmax(model[1], batch)
    torch.testing.assert_close(out.data_loss.detach(), -torch.log(p[torch.arange(8), y]).mean(), rtol=LOSS_RTOL, atol=0)
    torch.testing.assert_close(out.logits.detach(), model(batch), rtol=LOSS_RTOL, atol=0)
    assert out.total.requires_grad and not out.penalty.requires_grad


def test_gradalign_parameter_gradient_matches_a_double_backprop_reference(host: PluginHost) -> None:
    """Their formula: grad1 at x without create_graph (a constant), grad2 at x + eta with it, gradients of
    the MEAN loss, ``lam * (1 - cosine_similarity.mean())``, BatchNorm in train mode; plus the CE on the
    perturbed batch."""
    F = nn.functional
    model = _bn_mlp(seed=22)
    reference = copy.deepcopy(model)
    x = _box_images(8, seed=23)
    batch = (x + 0.05 * torch.randn_like(x)).clamp(0, 1)
    y = torch.randint(0, 4, (8,), generator=torch.Generator().manual_seed(24))
    lam, eps = 0.2, 8 / 255
    torch.manual_seed(25)
    out = _defence(host, "gradalign", lam=lam, eps=eps).training_loss(model, batch, y, Perturbation(batch, clean=x))
    got = _parameter_gradient(out.total, model)

    torch.manual_seed(25)
    eta = (torch.rand_like(x) * 2 - 1) * eps
    at_x = x.clone().requires_grad_(True)
    (grad1,) = torch.autograd.grad(F.cross_entropy(reference(at_x), y), at_x)
    near = (x + eta).requires_grad_(True)
    (grad2,) = torch.autograd.grad(F.cross_entropy(reference(near), y), near, create_graph=True)
    regulariser = lam * (1 - F.cosine_similarity(grad1.flatten(1), grad2.flatten(1), dim=1).mean())
    data_loss = F.cross_entropy(reference(batch), y)
    expected = _parameter_gradient(data_loss + regulariser, reference)
    torch.testing.assert_close(out.penalty, regulariser.detach(), rtol=LOSS_RTOL, atol=0)
    regulariser_part = expected - _parameter_gradient(F.cross_entropy(reference(batch), y), reference)
    assert regulariser_part.abs().max() > 1e-4  # the double-backprop term is a real part of the gradient
    torch.testing.assert_close(got, expected, rtol=LOSS_RTOL, atol=1e-13)


def _dead_model() -> nn.Module:
    """A ReLU MLP whose hidden units are dead on images near 0 (positive weights, bias -1): there the input
    gradient is exactly zero, at x and at x + eta alike."""
    torch.manual_seed(26)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 4)).double()
    with torch.no_grad():
        model[1].weight.abs_().mul_(0.6)
        model[1].bias.fill_(-1.0)
    return model


def test_gradalign_zero_gradients_add_nothing_and_nothing_is_nan(host: PluginHost) -> None:
    model = _dead_model()
    x = 0.7 + 0.3 * _box_images(6, seed=27)  # in [0.7, 1]: live units
    x[0] = 0.0  # dead everywhere in its eps-ball
    y = torch.tensor([0, 1, 2, 3, 0, 1])
    lam, eps = 1.0, 8 / 255
    torch.manual_seed(28)
    out = _defence(host, "gradalign", lam=lam, eps=eps).training_loss(model, x, y, None)
    torch.manual_seed(28)
    eta = (torch.rand_like(x) * 2 - 1) * eps
    grads = [torch.autograd.grad(nn.functional.cross_entropy(model(v), y, reduction="sum"), v)[0]
             for v in (x.clone().requires_grad_(True), (x + eta).requires_grad_(True))]
    assert torch.all(grads[0][0] == 0) and torch.all(grads[1][0] == 0)
    assert torch.all(grads[0][1:].flatten(1).norm(dim=1) > 0)
    # example 0 adds 0 to the sum; the mean stays over the whole batch (the original drops it from the mean)
    expected = lam * (1 - _hand_cosine(grads[0][1:], grads[1][1:])).sum() / 6
    torch.testing.assert_close(out.penalty, expected, rtol=LOSS_RTOL, atol=0)
    gradient = _parameter_gradient(out.total, model)
    assert torch.isfinite(gradient).all()

    dead = torch.zeros_like(x)  # every gradient zero: the regulariser is 0 and sends no gradient, no NaN
    out = _defence(host, "gradalign", lam=lam, eps=eps).training_loss(model, dead, y, None)
    assert out.penalty == 0
    penalty_gradient = _parameter_gradient(out.total - out.data_loss, model)
    assert torch.equal(penalty_gradient, torch.zeros_like(penalty_gradient))


def test_cosine_of_a_zero_gradient_is_one_with_a_zero_gradient() -> None:
    a = torch.tensor([[3.0, 4.0], [0.0, 0.0], [1.0, 0.0], [2.0, 1.0]], dtype=torch.float64)
    b = torch.tensor([[4.0, 3.0], [1.0, 1.0], [0.0, 0.0], [-2.0, -1.0]], dtype=torch.float64, requires_grad=True)
    c = cosine(a, b)
    torch.testing.assert_close(c, torch.tensor([24 / 25, 1.0, 1.0, -1.0], dtype=torch.float64), rtol=1e-15, atol=0)
    (g,) = torch.autograd.grad(c.sum(), b)
    assert torch.isfinite(g).all() and torch.all(g[1:3] == 0)
    # d cos / d b = a/(|a||b|) - cos b/|b|^2 for the first row
    torch.testing.assert_close(g[0], a[0] / 25 - (24 / 25) * b[0].detach() / 25, rtol=1e-14, atol=0)


def test_gradalign_vanishes_without_noise(host: PluginHost) -> None:
    """eps = 0: the two gradients are the same, cos = 1, the regulariser is 0 and, cos being largest there, so
    is its gradient (BatchNorm in train mode, so the batches coupled)."""
    model = _bn_mlp(seed=29)
    x = _box_images(8, seed=30)
    y = torch.randint(0, 4, (8,), generator=torch.Generator().manual_seed(31))
    out = _defence(host, "gradalign", lam=1.0, eps=0.0).training_loss(model, x, y, None)
    assert abs(out.penalty.item()) < 1e-14
    penalty_gradient = _parameter_gradient(out.total - out.data_loss, model)
    assert penalty_gradient.abs().max() < 1e-12
    positive = _defence(host, "gradalign", lam=1.0, eps=0.1).training_loss(model, x, y, None)
    assert positive.penalty > 1e-6


# --------------------------------------------------------------------------------------------------------------
# 4. BatchNorm: the perturbation in eval mode, the running statistics updated once per step


@pytest.mark.parametrize("name", ["trades", "trades-l2", "gradalign", "fgsm-rs+gradalign", "fgsm-gradalign"])
def test_running_statistics_move_once_per_step(host: PluginHost, name: str) -> None:
    """The perturbation (eval mode) leaves them alone; of the loss's train-mode passes only the one on the
    batch the step's logits come from (TRADES: the clean batch; GradAlign: the batch trained on) updates
    them; the extra passes (TRADES' adversarial logits, GradAlign's gradients) do not."""
    model = _bn_model()
    before = copy.deepcopy(model)
    x, y = torch.rand(10, 1, 4, 4), torch.randint(0, 4, (10,))
    defence = build_defence(DefenceConfig(name=name), host)
    torch.manual_seed(32)
    out = defence.training_loss(model, x, y)

    reference = copy.deepcopy(before)
    batch = x
    if defence.perturber is not None:
        torch.manual_seed(32)
        with frozen_eval(reference):
            perturbed = defence.perturber.perturb(reference, x, y).images
        for key, value in _bn_buffers(before).items():
            assert torch.equal(dict(reference.named_buffers())[key], value)  # the eval pass touched nothing
        batch = x if name.startswith("trades") else perturbed
    expected_logits = reference.train()(batch)  # ONE train-mode forward pass
    for key, value in dict(reference.named_buffers()).items():
        torch.testing.assert_close(dict(model.named_buffers())[key], value, rtol=1e-6, atol=1e-7, msg=key)
    assert model[2].num_batches_tracked.item() == before[2].num_batches_tracked.item() + 1
    torch.testing.assert_close(out.logits, expected_logits, rtol=1e-5, atol=1e-6)
    assert model.training and all(p.requires_grad for p in model.parameters())


# --------------------------------------------------------------------------------------------------------------
# 5. Registration, presets, options, training from the CLI


PRESETS = {
    "trades-l2": [("trades", {"norm": "l2", "eps": 0.5})],
    "fgsm-gradalign": [("fgsm-rs", {"random_start": False}), ("gradalign", {"lam": 0.2})],
}


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_presets_expand_to_the_documented_primitives(host: PluginHost, preset: str) -> None:
    registry = host.registry("defence")
    assert expand(DefenceConfig(name=preset), registry) == PRESETS[preset]
    described = " + ".join(f"{p}({', '.join(f'{k}={v}' for k, v in params.items())})" for p, params in PRESETS[preset])
    assert described in registry.get(preset).description  # `lipcli list defences` shows the expansion
    defence = build_defence(DefenceConfig(name=preset), host)
    if preset == "trades-l2":
        assert defence.perturber is defence.loss and defence.loss.attack.norm == "l2"
        assert (defence.loss.attack.eps, defence.loss.attack.alpha, defence.loss.beta) == (0.5, 0.1, 6.0)
    else:  # the paper's FGSM + GradAlign: FGSM from x, its 1.25 eps step cut to eps by the projection
        assert not defence.perturber.random_start and defence.perturber.alpha >= defence.perturber.eps == 8 / 255
        assert (defence.loss.lam, defence.loss.eps) == (0.2, 8 / 255)


@pytest.mark.parametrize(
    "name,options,key",
    [
        ("trades", {"beta": -1.0}, "beta"), ("trades", {"norm": "l1"}, "norm"), ("trades", {"steps": 0}, "steps"),
        ("trades", {"eps": math.nan}, "eps"), ("trades", {"alpha": -0.1}, "alpha"),
        ("fgsm-rs", {"eps": -1.0}, "eps"), ("fgsm-rs", {"alpha": math.inf}, "alpha"),
        ("fgsm-rs", {"eps": "8/255"}, "eps"),
        ("gradalign", {"lam": -0.2}, "lam"), ("gradalign", {"eps": True}, "eps"),
    ],
)
def test_bad_parameters_are_config_errors_naming_the_option(
    host: PluginHost, name: str, options: dict[str, Any], key: str
) -> None:
    with pytest.raises(ConfigError, match=rf"defence\.options\.{name}.*{key}"):
        build_defence(DefenceConfig(name=name, options={name: options}), host)


def test_trades_options_from_a_toml_file_reach_the_factory(host: PluginHost, tmp_path: Path, run: Any) -> None:
    path = tmp_path / "trades.toml"
    path.write_text('[defence]\nname = "trades"\n[defence.options.trades]\nbeta = 3.0\n')
    defence = build_defence(resolve(path).defence, host)  # what the trainer builds from the file
    assert defence.names == ["trades"] and defence.loss.beta == 3.0 and defence.perturber is defence.loss
    path.write_text('[defence]\nname = "trades"\n[defence.options.trades]\nbeta = -3.0\n')
    result = run("train", "--config", path, "--dataset", "digits", "--device", "cpu", "--quiet",
                 "--out", tmp_path / "run")
    assert result.exit_code == 2, result.output
    assert "defence.options.trades" in result.output and "beta must be a finite number >= 0" in result.output


@pytest.mark.parametrize("name", ["trades", "trades-l2", "fgsm-rs", "gradalign", "fgsm-rs+gradalign", "fgsm-gradalign"])
def test_baseline_trains_one_epoch_on_digits_from_the_cli(tmp_path: Path, run: Callable[..., Any], name: str) -> None:
    result = run("train", "--dataset", "digits", "--defence", name, "--epochs", "1", "--device", "cpu", "--quiet",
                 "--set", "model.options={width=8}", "--out", tmp_path / "run")
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 1
    row = rows[0]
    for key in ("loss", "train_error", "test_error", "test_loss"):
        assert math.isfinite(row[key]), key
    assert 0 <= row["train_error"] <= 1 and 0 <= row["test_error"] <= 1
    penalised = "trades" in name or "gradalign" in name
    assert (row["penalty"] is not None) == penalised
    if penalised:
        assert math.isfinite(row["penalty"]) and row["penalty"] > 0

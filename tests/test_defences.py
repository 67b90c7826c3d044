"""The defences: WCAT penalty (exact and finite-difference), J1/J2/PGD perturbations, tanh head, presets.

Hand computations run in float64 on tiny models where the input gradient has a closed form: for a linear
classifier ``z = W x + b`` with cross-entropy, ``grad_x loss_i = W^T (softmax(z_i) - e_{y_i})``.
Losses are computed in the model's own precision (at least float32), so float64 models give float64-exact
penalties; the tolerances below are float64 ones.
"""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path
from typing import Any, Callable

import pytest
import torch
from torch import nn
from torch.func import functional_call

import lipcli
from lipcli.checkpoint import load_checkpoint
from lipcli.config.schema import DefenceConfig
from lipcli.data.load import load_data
from lipcli.data.types import DatasetInfo
from lipcli.defence import ComposedDefence, Perturbation, build_defence, expand
from lipcli.errors import ConfigError
from lipcli.gradients import frozen_eval
from lipcli.models.build import build_model
from lipcli.models.heads import TanhHead, WithHead
from lipcli.plugin_host import PluginHost
from lipcli.training.clean_error import clean_error_and_loss
from lipcli.training.trainer import train
from lipcli.engine import Engine

LOSS_RTOL = 1e-10
"""Relative tolerance for library losses/gradients of a float64 model against hand computations."""

FD_STEP = 1e-3
FD_RTOL = 1e-3
"""fd vs exact penalty at fd_step 1e-3, float64 tanh/softplus MLPs, 10 seeds, j0-lip1/j0-lip2/j1-lip/j2-lip:
measured max relative error 1.1e-4, the O(h) truncation error (1.1e-3 at h=1e-2)."""

FD_STEP_FINE = 1e-4
FD_RTOL_FINE = 1e-4
"""At h=1e-4 the error measured 1.1e-5: the estimate converges linearly in the step."""


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """One intra-op thread for this module's tiny models, restored afterwards.

    Measured on the 2-core machine while other processes were busy: the 14 digits runs took 145 s with
    torch's default 2 threads (the double-backprop presets 30-40 s each) and 4 s with one thread.
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def _defence(host: PluginHost, name: str, **params: Any) -> Any:
    return host.registry("defence").get(name).factory(**params)


def _hand_gradient(linear: nn.Linear, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-example grad_x CE of a linear classifier on flattened ``x``: W^T (softmax(z) - onehot(y))."""
    W, b = linear.weight.detach(), linear.bias.detach()
    p = torch.softmax(x.flatten(1) @ W.T + b, dim=1)
    return ((p - nn.functional.one_hot(y, W.shape[0]).to(p.dtype)) @ W).view_as(x)


def _reference_gradient(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-example input gradients in the model's dtype (no down-cast), current mode."""
    xr = x.detach().clone().requires_grad_(True)
    loss = nn.functional.cross_entropy(model(xr), y, reduction="sum")
    (g,) = torch.autograd.grad(loss, xr)
    return g


def _norm(g: torch.Tensor, norm: str) -> torch.Tensor:
    flat = g.flatten(1)
    return flat.norm(dim=1) if norm == "l2" else flat.abs().sum(1)


def _mlp(act: type[nn.Module], seed: int, n: int = 16, hidden: int = 12, k: int = 4) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(n, hidden), act(), nn.Linear(hidden, k)).double()


# --------------------------------------------------------------------------------------------------------------
# 1. WCAT penalty by hand


@pytest.mark.parametrize("norm", ["l2", "l1"])
@pytest.mark.parametrize("batch_mean", [True, False])
def test_wcat_exact_penalty_matches_hand_computation(host: PluginHost, norm: str, batch_mean: bool) -> None:
    torch.manual_seed(0)
    B, n, K, lam = 5, 6, 3, 0.3
    model = nn.Sequential(nn.Flatten(), nn.Linear(n, K)).double()
    x = torch.rand(B, 1, 2, 3, dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 1, 0])
    out = _defence(host, "wcat", lam=lam, norm=norm, batch_mean=batch_mean, method="exact").training_loss(
        model, x, y, None
    )
    worst = _norm(_hand_gradient(model[1], x, y), norm).max()
    multiplier = (lam / B if batch_mean else lam) / (math.sqrt(n) if norm == "l1" else 1.0)
    mean_ce = nn.functional.cross_entropy(model(x), y).detach()
    torch.testing.assert_close(out.grad_norm_max.double(), worst, rtol=LOSS_RTOL, atol=0)
    torch.testing.assert_close(out.penalty.double(), multiplier * worst, rtol=LOSS_RTOL, atol=0)
    torch.testing.assert_close(out.data_loss.double().detach(), mean_ce, rtol=LOSS_RTOL, atol=0)
    assert out.logits.shape == (B, K)
    # the penalty is part of what is backpropagated
    assert out.total.requires_grad and not out.penalty.requires_grad


def test_wcat_exact_penalty_is_float64_accurate_on_a_float64_model(host: PluginHost) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(6, 3)).double()
    x, y = torch.rand(5, 6, dtype=torch.float64), torch.tensor([0, 1, 2, 1, 0])
    out = _defence(host, "wcat", lam=1.0, norm="l2", batch_mean=False).training_loss(model, x, y, None)
    assert out.data_loss.dtype == torch.float64
    worst = _norm(_hand_gradient(model[1], x, y), "l2").max()
    torch.testing.assert_close(out.penalty, worst, rtol=1e-12, atol=0)


# --------------------------------------------------------------------------------------------------------------
# 2. The exact penalty's parameter gradient (double backprop)


def _penalty_of_flat_parameters(host: PluginHost, model: nn.Module, x: torch.Tensor, y: torch.Tensor, norm: str):
    names = [k for k, _ in model.named_parameters()]
    shapes = [p.shape for _, p in model.named_parameters()]
    wcat = _defence(host, "wcat", lam=1.0, norm=norm, batch_mean=False, method="exact")

    class Functional(nn.Module):
        def __init__(self, params: dict[str, torch.Tensor]) -> None:
            super().__init__()
            self.params = params

        def forward(self, inputs: torch.Tensor) -> torch.Tensor:
            return functional_call(model, self.params, (inputs,))

    def penalty(flat: torch.Tensor) -> torch.Tensor:
        params, i = {}, 0
        for name, shape in zip(names, shapes):
            size = math.prod(shape)
            params[name] = flat[i : i + size].view(shape)
            i += size
        out = wcat.training_loss(Functional(params), x, y, None)
        return out.total - out.data_loss  # the penalty, with its graph (StepLoss.penalty is detached)

    flat = torch.cat([p.detach().flatten() for p in model.parameters()]).requires_grad_(True)
    return penalty, flat


def _reference_penalty_gradient(model: nn.Module, x: torch.Tensor, y: torch.Tensor, norm: str) -> torch.Tensor:
    """d/dtheta of max_i ||grad_x CE_i|| (/ sqrt(n) for l1) in pure float64 (independent double backprop)."""
    xr = x.detach().clone().requires_grad_(True)
    loss = nn.functional.cross_entropy(model(xr), y, reduction="sum")
    (g,) = torch.autograd.grad(loss, xr, create_graph=True)
    multiplier = 1 / math.sqrt(x[0].numel()) if norm == "l1" else 1.0
    grads = torch.autograd.grad(multiplier * _norm(g, norm).max(), list(model.parameters()))
    return torch.cat([gr.flatten() for gr in grads])


@pytest.mark.parametrize("norm", ["l2", "l1"])
def test_wcat_exact_penalty_parameter_gradient_matches_reference(host: PluginHost, norm: str) -> None:
    model = _mlp(nn.Tanh, seed=1, n=6, hidden=5, k=3)
    x, y = torch.rand(4, 6, dtype=torch.float64), torch.tensor([0, 2, 1, 2])
    penalty, flat = _penalty_of_flat_parameters(host, model, x, y, norm)
    (got,) = torch.autograd.grad(penalty(flat), flat)
    expected = _reference_penalty_gradient(model, x, y, norm)
    assert expected.abs().max() > 1e-3  # a real, non-trivial gradient
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-12)


def test_wcat_exact_penalty_passes_gradcheck_in_float64(host: PluginHost) -> None:
    model = _mlp(nn.Tanh, seed=1, n=6, hidden=5, k=3)
    x, y = torch.rand(4, 6, dtype=torch.float64), torch.tensor([0, 2, 1, 2])
    penalty, flat = _penalty_of_flat_parameters(host, model, x, y, "l2")
    assert torch.autograd.gradcheck(penalty, (flat,), raise_exception=False)


# --------------------------------------------------------------------------------------------------------------
# 3. Perturbations


def _dead_relu_model() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """A ReLU MLP whose hidden layer is dead for sample 0 (all-zero image, negative biases): zero gradient."""
    torch.manual_seed(2)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 3)).double()
    with torch.no_grad():
        model[1].weight.abs_()
        model[1].bias.fill_(-0.05)
    x = 0.3 + 0.7 * torch.rand(6, 1, 4, 4, dtype=torch.float64)
    x[0] = 0.0
    return model, x, torch.tensor([0, 1, 2, 0, 1, 2])


def test_at_l2_step_has_norm_eps_along_the_gradient_and_zero_gradients_stay_put(host: PluginHost) -> None:
    model, x, y = _dead_relu_model()
    eps = 0.01
    reference = _reference_gradient(model.eval(), x, y)
    assert torch.all(reference[0] == 0) and torch.all(_norm(reference[1:], "l2") > 0)
    with frozen_eval(model):
        pert = _defence(host, "at-l2", eps=eps).perturb(model, x, y)
    delta = pert.images - x
    assert torch.equal(pert.images[0], x[0])  # zero gradient: unchanged, no NaN
    torch.testing.assert_close(_norm(delta[1:], "l2"), torch.full((5,), eps, dtype=torch.float64), rtol=1e-10, atol=0)
    unit = reference[1:] / _norm(reference[1:], "l2").view(-1, 1, 1, 1)
    torch.testing.assert_close(delta[1:] / eps, unit, rtol=0, atol=1e-12)
    torch.testing.assert_close(pert.grad_norm_max, _norm(reference, "l2").max(), rtol=LOSS_RTOL, atol=0)


def test_at_fgsm_step_is_signed_gradient_with_l2_norm_eps(host: PluginHost) -> None:
    torch.manual_seed(3)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 4)).double()
    x, y = torch.rand(6, 1, 4, 4, dtype=torch.float64), torch.tensor([0, 1, 2, 3, 0, 1])
    eps, n = 0.01, 16
    g = _hand_gradient(model[1], x, y)
    assert torch.all(g.abs() > 1e-8)  # no zero entries: ||sign(g)||_2 = sqrt(n)
    with frozen_eval(model):
        pert = _defence(host, "at-fgsm", eps=eps).perturb(model, x, y)
    delta = pert.images - x
    torch.testing.assert_close(delta, eps * g.sign() / math.sqrt(n), rtol=1e-10, atol=0)
    torch.testing.assert_close(_norm(delta, "l2"), torch.full((6,), eps, dtype=torch.float64), rtol=1e-10, atol=0)
    torch.testing.assert_close(pert.grad_norm_max, _norm(g, "l1").max(), rtol=LOSS_RTOL, atol=0)


@pytest.mark.parametrize("norm,eps", [("linf", 0.1), ("l2", 0.5)])
def test_at_pgd_stays_in_the_ball_and_in_the_box_and_raises_the_loss(host: PluginHost, norm: str, eps: float) -> None:
    model = _mlp(nn.Tanh, seed=4)
    torch.manual_seed(5)
    x = torch.rand(32, 1, 4, 4, dtype=torch.float64)
    x[:, :, 0] = 0.0  # pixels on the box's faces: projection onto [0, 1] must act
    x[:, :, 1] = 1.0
    y = torch.randint(0, 4, (32,))
    pgd = _defence(host, "at-pgd", norm=norm, eps=eps, steps=5)
    with frozen_eval(model):
        adversarial = pgd.perturb(model, x, y).images
    assert_in_the_ball_and_the_box(adversarial, x, norm, eps)
    noise = x + (adversarial - x)[torch.randperm(32)]  # a perturbation of the same sizes, not aimed
    model.eval()
    with torch.no_grad():
        clean, attacked, random = (nn.functional.cross_entropy(model(v), y) for v in (x, adversarial, noise))
    assert attacked - clean > 2 * abs(random - clean)


def assert_in_the_ball_and_the_box(adversarial: torch.Tensor, x: torch.Tensor, norm: str, eps: float) -> None:
    """Within eps of ``x`` in ``norm``, in [0, 1], and moved (by more than eps / 4 somewhere)."""
    delta = (adversarial - x).flatten(1)
    assert adversarial.min() >= 0 and adversarial.max() <= 1
    if norm == "linf":
        assert delta.abs().max() <= eps + 1e-12
    else:
        assert delta.norm(dim=1).max() <= eps * (1 + 1e-9)
    assert delta.abs().max() > eps / 4


def test_at_pgd_defaults_follow_madry(host: PluginHost) -> None:
    linf, l2 = _defence(host, "at-pgd"), _defence(host, "at-pgd", norm="l2", steps=10)
    assert (linf.eps, linf.alpha, linf.steps) == (8 / 255, 2 / 255, 7)
    assert (l2.eps, l2.alpha) == (0.5, 2.5 * 0.5 / 10)


# --------------------------------------------------------------------------------------------------------------
# 4. The perturbation pass runs in eval mode and leaves BatchNorm alone


def _bn_model() -> nn.Module:
    torch.manual_seed(6)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 4))
    with torch.no_grad():  # running statistics away from their initial values, so eval != train mode
        for _ in range(3):
            model(torch.rand(16, 16) * 2)
    return model.train()


def _bn_buffers(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.named_buffers()}


@pytest.mark.parametrize("name", ["j2", "j2-lip"])
def test_perturbation_does_not_update_batchnorm_statistics(host: PluginHost, name: str) -> None:
    model = _bn_model()
    before = copy.deepcopy(model)
    x, y = torch.rand(10, 1, 4, 4), torch.randint(0, 4, (10,))
    defence = build_defence(DefenceConfig(name=name), host)
    out = defence.training_loss(model, x, y)

    reference = copy.deepcopy(before)
    with frozen_eval(reference):
        perturbed = defence.perturber.perturb(reference, x, y).images
    for key, value in _bn_buffers(before).items():
        assert torch.equal(dict(reference.named_buffers())[key], value)  # the eval pass touched nothing
    reference.train()
    expected_logits = reference(perturbed)  # ONE train-mode forward on the perturbed batch

    bn, ref_bn, old_bn = model[2], reference[2], before[2]
    torch.testing.assert_close(bn.running_mean, ref_bn.running_mean, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(bn.running_var, ref_bn.running_var, rtol=1e-6, atol=1e-7)
    assert not torch.allclose(bn.running_mean, old_bn.running_mean)
    assert bn.num_batches_tracked.item() == old_bn.num_batches_tracked.item() + 1
    torch.testing.assert_close(out.logits, expected_logits, rtol=1e-5, atol=1e-6)
    assert model.training and all(m.training for m in model.modules())
    assert all(p.requires_grad for p in model.parameters())


def test_composer_runs_the_perturbation_in_eval_mode_with_frozen_parameters() -> None:
    seen: dict[str, Any] = {}

    class Spy:
        def perturb(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> Perturbation:
            seen["training"] = model.training
            seen["requires_grad"] = [p.requires_grad for p in model.parameters()]
            return Perturbation(images + 0.5)

    model = _bn_model()
    model[4].bias.requires_grad_(False)  # a parameter the user froze stays frozen afterwards
    x, y = torch.rand(4, 1, 4, 4), torch.randint(0, 4, (4,))
    out = ComposedDefence([("spy", Spy())]).training_loss(model, x, y)
    assert seen == {"training": False, "requires_grad": [False] * 6}
    assert model.training
    assert [p.requires_grad for p in model.parameters()] == [True, True, True, True, True, False]
    # no training loss primitive: plain CE on the perturbed batch
    expected = nn.functional.cross_entropy(out.logits, y)
    torch.testing.assert_close(out.total, expected)
    assert out.penalty is None and out.grad_norm_max is None


def test_composer_rejects_two_training_losses(host: PluginHost) -> None:
    with pytest.raises(ConfigError, match="training loss"):
        ComposedDefence([("a", _defence(host, "wcat")), ("b", _defence(host, "wcat", norm="l1"))])


# --------------------------------------------------------------------------------------------------------------
# 5. Presets and composition

_FGSM = ("at-fgsm", {"eps": 0.01})
_L2 = ("at-l2", {"eps": 0.01})
_LIP1 = ("wcat", {"norm": "l1", "lam": 0.1, "batch_mean": True, "method": "exact"})
_LIP2 = ("wcat", {"norm": "l2", "lam": 0.1, "batch_mean": True, "method": "exact"})
PRESETS = {
    "j0": [], "j1": [_FGSM], "j2": [_L2], "j0-lip1": [_LIP1], "j0-lip2": [_LIP2],
    "j1-lip": [_FGSM, _LIP1], "j2-lip": [_L2, _LIP2],
}


@pytest.mark.parametrize("tanh", [False, True])
@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_preset_expands_to_the_documented_primitives(host: PluginHost, preset: str, tanh: bool) -> None:
    name = preset + ("+tanh" if tanh else "")
    expected = PRESETS[preset] + ([("tanh-head", {})] if tanh else [])
    assert expand(DefenceConfig(name=name), host.registry("defence")) == expected
    assert expand(DefenceConfig(name=name.upper()), host.registry("defence")) == expected  # case-insensitive

    defence = build_defence(DefenceConfig(name=name), host)
    assert defence.names == [n for n, _ in expected]
    perturbation = dict(expected).get("at-fgsm") or dict(expected).get("at-l2")
    if perturbation is None:
        assert defence.perturber is None
    else:
        assert defence.perturber.eps == perturbation["eps"]
    if "wcat" in dict(expected):
        params = dict(expected)["wcat"]
        loss = defence.loss
        assert (loss.lam, loss.norm, loss.batch_mean, loss.method) == (
            params["lam"], params["norm"], params["batch_mean"], params["method"],
        )
    else:
        assert defence.loss is None
    assert len(defence.model_changes) == int(tanh)


def test_expansions_are_fresh_copies(host: PluginHost) -> None:
    registry = host.registry("defence")
    expand(DefenceConfig(name="j2-lip"), registry)[1][1]["lam"] = 99.0
    assert expand(DefenceConfig(name="j2-lip"), registry) == [_L2, _LIP2]
    assert expand(DefenceConfig(), registry) == []  # neither name nor primitives: j0


def test_options_override_a_parameter(host: PluginHost) -> None:
    config = DefenceConfig(name="j2-lip", options={"wcat": {"lam": 0.05}, "at-l2": {"eps": 0.02}})
    assert expand(config, host.registry("defence")) == [
        ("at-l2", {"eps": 0.02}), ("wcat", {**_LIP2[1], "lam": 0.05}),
    ]
    defence = build_defence(config, host)
    assert defence.loss.lam == 0.05 and defence.loss.norm == "l2" and defence.perturber.eps == 0.02


@pytest.mark.parametrize(
    "config,match",
    [
        (DefenceConfig(name="j2", options={"wcat": {"lam": 0.05}}), r"defence\.options\.wcat"),
        (DefenceConfig(name="j2-lip", options={"wcat": 0.05}), r"defence\.options\.wcat"),
        (DefenceConfig(name="j2+at-l2"), "'at-l2' appears twice"),
        (DefenceConfig(name="j2-lip+wcat"), "'wcat' appears twice"),
        (DefenceConfig(name="at-l2+at-fgsm"), "'at-l2' and 'at-fgsm' both define the perturbation"),
        (DefenceConfig(name="j1+j2"), "perturbation"),
        (DefenceConfig(name="j2", primitives=[{"name": "at-l2"}]), "either defence.name or defence.primitives"),
        (DefenceConfig(name="j2-lip", options={"wcat": {"lamda": 1}}), r"defence\.options\.wcat\.lamda"),
        (DefenceConfig(name="j0-lip2", options={"wcat": {"norm": "linf"}}), r"defence\.options\.wcat"),
        (DefenceConfig(name="j2", options={"at-l2": {"eps": -1.0}}), r"defence\.options\.at-l2"),
        (DefenceConfig(primitives=[{"name": "j2"}]), r"defence\.primitives\[0\]"),
        (DefenceConfig(primitives=[{"eps": 0.01}]), r"defence\.primitives\[0\]"),
    ],
)
def test_bad_compositions_are_config_errors(host: PluginHost, config: DefenceConfig, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        build_defence(config, host)


def test_explicit_primitives_build(host: PluginHost) -> None:
    config = DefenceConfig(
        primitives=[{"name": "AT-L2", "eps": 0.02}, {"name": "wcat"}], options={"wcat": {"lam": 0.2}}
    )
    assert expand(config, host.registry("defence")) == [("at-l2", {"eps": 0.02}), ("wcat", {"lam": 0.2})]
    defence = build_defence(config, host)
    assert defence.names == ["at-l2", "wcat"]
    assert defence.perturber.eps == 0.02
    assert (defence.loss.lam, defence.loss.norm, defence.loss.batch_mean, defence.loss.method) == (
        0.2, "l2", True, "exact",
    )


# --------------------------------------------------------------------------------------------------------------
# 6. Finite-difference penalty vs the exact one


def _penalties(host: PluginHost, preset: str, act: type[nn.Module], seed: int, fd_step: float) -> tuple[float, float]:
    model = _mlp(act, seed)
    x, y = torch.rand(8, 1, 4, 4, dtype=torch.float64), torch.randint(0, 4, (8,))
    exact = build_defence(DefenceConfig(name=preset), host).training_loss(model, x, y).penalty
    options = {"wcat": {"method": "fd", "fd_step": fd_step}}
    fd = build_defence(DefenceConfig(name=preset, options=options), host).training_loss(model, x, y).penalty
    return exact.item(), fd.item()


@pytest.mark.parametrize("act", [nn.Tanh, nn.Softplus])
@pytest.mark.parametrize("preset", ["j0-lip2", "j0-lip1", "j2-lip", "j1-lip"])
def test_fd_penalty_is_close_to_the_exact_penalty(host: PluginHost, preset: str, act: type[nn.Module]) -> None:
    for seed in range(3):
        exact, fd = _penalties(host, preset, act, seed, FD_STEP)
        assert exact > 0
        assert abs(fd / exact - 1) < FD_RTOL, (seed, exact, fd)


@pytest.mark.parametrize("preset", ["j0-lip2", "j1-lip"])
def test_fd_penalty_converges_with_the_step_in_float64(host: PluginHost, preset: str) -> None:
    pairs = [_penalties(host, preset, nn.Softplus, seed, FD_STEP_FINE) for seed in range(3)]
    errors = [abs(fd / exact - 1) for exact, fd in pairs]
    assert max(errors) < FD_RTOL_FINE, errors


def _graph_node_names(tensor: torch.Tensor) -> set[str]:
    seen, stack, names = set(), [tensor.grad_fn], set()
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        names.add(type(node).__name__)
        stack.extend(child for child, _ in node.next_functions)
    return names


def test_fd_penalty_is_differentiable_without_double_backprop(host: PluginHost) -> None:
    model = _mlp(nn.Tanh, seed=7)
    x, y = torch.rand(8, 1, 4, 4, dtype=torch.float64), torch.randint(0, 4, (8,))

    def double_backward_nodes(method: str) -> tuple[set[str], Any]:
        out = build_defence(DefenceConfig(name="j2-lip", options={"wcat": {"method": method}}), host).training_loss(
            model, x, y
        )
        return {n for n in _graph_node_names(out.total) if n.count("Backward") > 1}, out

    exact_nodes, _ = double_backward_nodes("exact")
    assert exact_nodes  # the detector sees double backprop where there is some (e.g. TanhBackwardBackward0)
    fd_nodes, out = double_backward_nodes("fd")
    assert fd_nodes == set()
    params = list(model.parameters())
    grads = torch.autograd.grad(out.total - out.data_loss, params)  # the penalty's own gradient
    assert all(torch.isfinite(g).all() for g in grads)
    assert any(g.abs().max() > 0 for g in grads)
    assert out.penalty > 0 and out.grad_norm_max > 0


# --------------------------------------------------------------------------------------------------------------
# 7. The tanh head


def test_tanh_head_output_is_bounded_by_abs_t() -> None:
    torch.manual_seed(8)
    head = TanhHead(5).double()
    with torch.no_grad():
        head.t.fill_(-0.5)
    z = torch.randn(16, 5, dtype=torch.float64) * 100
    out = head.train()(z)
    assert out.abs().max() < 0.5  # batch-normalised logits: |z'| <= sqrt(B-1), far from saturation
    expected = 0.5 * torch.tanh(nn.functional.batch_norm(z, None, None, training=True) / 0.5)
    torch.testing.assert_close(out, expected)
    (grad_t,) = torch.autograd.grad(out.sum(), head.t)
    assert grad_t != 0
    with torch.no_grad():
        saturated = head.eval()(z * 1e6)
    assert saturated.abs().max() <= 0.5


def test_tanh_head_wraps_once(host: PluginHost, tiny_config: Callable[..., Any], tmp_path: Path) -> None:
    info = DatasetInfo("synthetic", 1, 8, 8, 4)
    defence = build_defence(DefenceConfig(name="j2+tanh"), host)
    body = nn.Sequential(nn.Flatten(), nn.Linear(64, 4))
    wrapped = defence.prepare_model(body, info)
    assert isinstance(wrapped, WithHead) and wrapped.body is body and isinstance(wrapped.head, TanhHead)
    assert defence.prepare_model(wrapped, info) is wrapped
    # model.tanh_head = true and a +tanh defence: still exactly one head
    config = tiny_config(tmp_path, "model.tanh_head=true", "defence.name=j2-lip+tanh")
    model = build_model(config, info, host)
    assert sum(isinstance(m, TanhHead) for m in model.modules()) == 1


def test_model_tanh_head_builds_exactly_what_the_tanh_preset_builds(
    host: PluginHost, tiny_config: Callable[..., Any], tmp_path: Path
) -> None:
    """``model.tanh_head = true`` is the ``tanh-head`` primitive put first: the same modules, the same weights
    from the same seed, so checkpoints written either way load into the other."""
    info = DatasetInfo("synthetic", 1, 8, 8, 4)
    flag = build_model(tiny_config(tmp_path, "model.tanh_head=true", "defence.name=j2"), info, host)
    preset = build_model(tiny_config(tmp_path, "defence.name=tanh+j2"), info, host)
    assert isinstance(flag, WithHead) and isinstance(flag.head, TanhHead)
    assert [type(m) for m in flag.modules()] == [type(m) for m in preset.modules()]
    for (name, value), (other, expected) in zip(flag.state_dict().items(), preset.state_dict().items()):
        assert name == other and torch.equal(value, expected), name
    names = build_defence(DefenceConfig(name="j2-lip"), host, tanh_head=True).names
    assert names[0] == "tanh-head" and names.count("tanh-head") == 1
    with pytest.raises(ValueError, match="tanh-head"):  # a defence built without the flag would drop the head
        build_model(tiny_config(tmp_path, "model.tanh_head=true"), info, host, build_defence(DefenceConfig(), host))


@pytest.mark.parametrize(("settings", "label"), [
    ((), "j0"),
    (("model.tanh_head=true",), "j0+tanh"),
    (("model.tanh_head=true", "defence.name=j2-lip+tanh"), "j2-lip+tanh"),
    (("model.tanh_head=true", "defence.primitives=[{name='at-l2'}, {name='tanh-head'}]"), "at-l2+tanh-head"),
    (("model.tanh_head=true", "defence.primitives=[{name='at-l2'}]"), "at-l2+tanh"),
    (("defence.name=j2+tanh",), "j2+tanh"),
])
def test_the_defence_label_names_the_tanh_head_once(
    tiny_config: Callable[..., Any], tmp_path: Path, settings: tuple[str, ...], label: str
) -> None:
    assert tiny_config(tmp_path, *settings).defence_label == label


def test_tanh_head_training_checkpoint_and_load_model(
    host: PluginHost, engine: Engine, tiny_config: Callable[..., Any], tmp_path: Path
) -> None:
    config = tiny_config(tmp_path, "defence.name=j2-lip+tanh", "training.epochs=1")
    result = train(config, engine)
    checkpoint = load_checkpoint(result.run_dir / "last.pt")
    assert "head.t" in checkpoint["model"]
    assert checkpoint["model"]["head.t"].item() != 1.0  # the scale was trained
    model = lipcli.load_model(result.run_dir / "last.pt", plugins=host)
    assert isinstance(model.head, TanhHead) and not model.training
    test_set = load_data(config.data, host).test.subset(config.evaluation.limit)
    error, loss = clean_error_and_loss(model, test_set, config.evaluation.batch_size, torch.device("cpu"))
    assert error == result.history[-1]["test_error"]
    assert loss == pytest.approx(result.history[-1]["test_loss"], rel=1e-6)


# --------------------------------------------------------------------------------------------------------------
# 8. Every preset trains on digits


@pytest.mark.parametrize("suffix", ["", "+tanh"])
@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_preset_trains_one_epoch_on_digits(
    engine: Engine, tiny_config: Callable[..., Any], tmp_path: Path, preset: str, suffix: str
) -> None:
    config = tiny_config(tmp_path, "data.dataset=digits", "training.epochs=1", f"defence.name={preset}{suffix}")
    config.data.options = {}  # overrides merge option tables: "data.options={}" would keep synthetic's keys
    result = train(config, engine)
    rows = [json.loads(line) for line in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 1
    row = rows[0]
    for key in ("loss", "train_error", "test_error", "test_loss"):
        assert math.isfinite(row[key]), key
    assert 0 <= row["test_error"] <= 1
    assert (row["penalty"] is not None) == ("lip" in preset)
    assert (row["grad_norm_max"] is not None) == (preset != "j0")
    for key in ("penalty", "grad_norm_max"):
        if row[key] is not None:
            assert math.isfinite(row[key]) and row[key] > 0, key


FD_BATCHNORM_RTOL = 0.25
"""fd vs exact on BatchNorm models: the probe leaves out BatchNorm's coupling of the batch. Measured on
trained small CNNs (10 batches of 128): within 6 % on digits, -15 %..+21 % on Fashion-MNIST with the tanh
head; at initialisation on synthetic data, see the test below."""


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fd_penalty_on_a_batchnorm_model_is_close_and_updates_statistics_once(host: PluginHost, seed: int) -> None:
    from lipcli.config.schema import ExperimentConfig

    info = DatasetInfo("t", 1, 8, 8, 4)
    config = ExperimentConfig()
    config.model.options = {"width": 8}
    config.training.seed = seed
    model = build_model(config, info, host).train()
    generator = torch.Generator().manual_seed(seed)
    x, y = torch.rand(64, 1, 8, 8, generator=generator), torch.randint(0, 4, (64,), generator=generator)
    values = {}
    for method in ("exact", "fd"):
        copy_ = copy.deepcopy(model)
        before = [b.clone() for b in copy_.buffers()]
        out = _defence(host, "wcat", lam=1.0, batch_mean=False, method=method).training_loss(copy_, x, y, None)
        values[method] = out.penalty.item()
        tracked = [m.num_batches_tracked.item() for m in copy_.modules() if isinstance(m, nn.BatchNorm2d)]
        assert tracked and all(t == 1 for t in tracked)  # one update of the running statistics, not two
        assert any(not torch.equal(a, b) for a, b in zip(before, copy_.buffers()))
    assert abs(values["fd"] / values["exact"] - 1) < FD_BATCHNORM_RTOL, values

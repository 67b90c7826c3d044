"""Lipschitz statistics against brute force and closed forms; bounds that must hold; the stats command."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Callable

import pytest
import torch
from torch import nn

from lipcli.data.selection import Selection
from lipcli.data.types import DatasetInfo, ImageSet
from lipcli.evaluation.accounting import measured_distances
from lipcli.gradients import frozen_eval
from lipcli.lipschitz.bound import BoundUnavailable, product_bound
from lipcli.lipschitz.jacobian import jacobian_norms
from lipcli.lipschitz.operator_norms import circulant_norm, layer_map, operator_norm
from lipcli.lipschitz.statistics import model_statistics, radius
from lipcli.models.heads import TanhHead, WithHead
from lipcli.plugin_host import PluginHost
from lipcli.engine import Engine

CPU = torch.device("cpu")
EPS = {"l2": [("0.1", 0.1)], "linf": [("8/255", 8 / 255)]}


def dense_matrix(apply: Callable[[torch.Tensor], torch.Tensor], shape: tuple[int, ...]) -> torch.Tensor:
    """The matrix of a linear map at ``shape``, column by column (brute force, float64)."""
    size = math.prod(shape)
    basis = torch.eye(size, dtype=torch.float64).view(size, *shape)
    return apply(basis).flatten(1).T


def randomise_batchnorm(model: nn.Module, seed: int = 0) -> nn.Module:
    """Running statistics and affine parameters far from their defaults, so that BatchNorm's scaling matters."""
    generator = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.running_mean.copy_(torch.randn(module.running_mean.shape, generator=generator))
            module.running_var.copy_(torch.rand(module.running_var.shape, generator=generator) * 4 + 0.05)
            if module.weight is not None:
                module.weight.data.copy_(torch.randn(module.weight.shape, generator=generator))
    return model.eval()


@pytest.mark.parametrize(("module", "shape"), [
    (nn.Conv2d(3, 5, 3, padding=1), (3, 6, 6)),
    (nn.Conv2d(3, 4, 3, stride=2, padding=1), (3, 7, 7)),
    (nn.Conv2d(4, 6, 3, padding=1, groups=2), (4, 5, 5)),
    (nn.Conv2d(2, 3, 1), (2, 4, 4)),
    (nn.Linear(12, 7), (12,)),
    (nn.AvgPool2d(2), (2, 6, 6)),
    (nn.AvgPool2d(3, stride=1, padding=1), (2, 5, 5)),
])
@pytest.mark.parametrize("scaled", [False, True])
def test_operator_norms_against_the_dense_matrix(module: nn.Module, shape: tuple[int, ...], scaled: bool) -> None:
    """At the layer's true input shape (padding, stride and groups included): l-inf is the largest row sum
    and l1 the largest column sum of its matrix, exactly; l2 is at least its largest singular value (a bound)
    and not far above it (within 25 % on these tiny grids, where the boundary matters most)."""
    torch.manual_seed(0)
    out_channels = module(torch.zeros(1, *shape)).shape[1]
    scale = torch.randn(out_channels) if scaled else None
    apply = layer_map(module, scale)
    matrix = dense_matrix(lambda x: apply(x, False), shape)
    exact = float(torch.linalg.matrix_norm(matrix, ord=2))
    assert exact * (1 - 1e-12) <= operator_norm(module, shape, "l2", scale=scale) <= exact * 1.25
    assert operator_norm(module, shape, "linf", scale=scale) == pytest.approx(float(matrix.abs().sum(1).max()),
                                                                             rel=1e-12)
    assert operator_norm(module, shape, "l1", scale=scale) == pytest.approx(float(matrix.abs().sum(0).max()),
                                                                           rel=1e-12)


@pytest.mark.parametrize(("module", "shape"), [
    (nn.Conv2d(2, 3, 3, padding=1), (2, 5, 7)),
    (nn.Conv2d(3, 2, 3, stride=2, padding=1), (3, 6, 6)),
    (nn.Conv2d(2, 2, 3, stride=2, padding=1, dilation=2), (2, 8, 8)),
    (nn.Conv2d(4, 4, 5, stride=(1, 2), padding=2, groups=4), (4, 7, 9)),
    (nn.Conv2d(2, 3, 2, stride=2), (2, 6, 6)),
])
def test_circulant_norm_bounds_the_convolution(module: nn.Conv2d, shape: tuple[int, ...]) -> None:
    """The circulant extension's norm is never below the convolution's own norm at its input shape (this is
    what makes Eq. (6) a bound), for strides, dilation, groups and odd shapes, and never far above it."""
    torch.manual_seed(1)
    matrix = dense_matrix(lambda x: layer_map(module)(x, False), shape)
    exact = float(torch.linalg.matrix_norm(matrix, ord=2))
    assert exact * (1 - 1e-12) <= circulant_norm(module, shape) <= exact * 1.5


def test_the_bound_of_an_affine_model_is_its_exact_lipschitz_constant() -> None:
    """Linear -> BatchNorm (eval) -> tanh head: the l2 bound is ||diag(s) W||_2 times the head's scale, exactly,
    so a bound that forgot BatchNorm's scaling (here s up to 1/sqrt(0.01) = 10) would fail."""
    torch.manual_seed(0)
    body = nn.Sequential(nn.Flatten(), nn.Linear(12, 4), nn.BatchNorm1d(4))
    model = randomise_batchnorm(WithHead(body, TanhHead(4)))
    body[2].running_var[0] = 0.01
    bn, head = body[2], model.head.norm
    s = bn.weight.detach().double() / torch.sqrt(bn.running_var.double() + bn.eps)
    head_scale = float((1 / torch.sqrt(head.running_var.double() + head.eps)).max())
    matrix = s[:, None] * body[1].weight.detach().double()
    expected = {"l2": float(torch.linalg.matrix_norm(matrix, ord=2)), "linf": float(matrix.abs().sum(1).max()),
                "l1": float(matrix.abs().sum(0).max())}
    for norm, value in expected.items():
        assert product_bound(model, (3, 2, 2), norm) == pytest.approx(value * head_scale, rel=1e-10)


def test_a_module_without_a_rule_is_reported_not_guessed() -> None:
    class Mystery(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x.flatten(1) ** 2

    with pytest.raises(BoundUnavailable, match="Mystery"):
        product_bound(nn.Sequential(Mystery(), nn.Linear(4, 2)), (1, 2, 2), "l2")


def brute_force_norms(model: nn.Module, image: torch.Tensor, label: int) -> dict[str, float]:
    """The same quantities from ``torch.autograd.functional.jacobian`` on one image, from their definitions."""
    def logits(x: torch.Tensor) -> torch.Tensor:
        return model(x.view(1, *image.shape)).squeeze(0)

    x = image.flatten().double()
    jz = torch.autograd.functional.jacobian(logits, x)
    jf = torch.autograd.functional.jacobian(lambda v: torch.softmax(logits(v), 0), x)
    grad = torch.autograd.functional.jacobian(
        lambda v: nn.functional.cross_entropy(logits(v)[None], torch.tensor([label])), x)
    induced = {  # max ||A v||_q / ||v||_p over the unit ball's extreme points, where that is the definition
        "2inf": lambda a: a.norm(dim=1).max(),
        "11": lambda a: a.abs().sum(0).max(),
        "infinf": lambda a: a.abs().sum(1).max(),
    }
    return {
        "grad_loss_l2": float(grad.norm()), "grad_loss_l1": float(grad.abs().sum()),
        "jac_f_2inf": float(induced["2inf"](jf)), "jac_f_11": float(induced["11"](jf)),
        "jac_z_2inf": float(induced["2inf"](jz)), "jac_z_infinf": float(induced["infinf"](jz)),
    }


def small_models(host: PluginHost) -> list[tuple[str, nn.Module, tuple[int, ...]]]:
    info = DatasetInfo("t", 3, 8, 8, 5)
    registry = host.registry("architecture")
    torch.manual_seed(0)
    models = [
        ("small-cnn", registry.get("small-cnn").factory(info=info, width=4)),
        ("resnet34", registry.get("resnet34").factory(info=info, blocks_per_stage=1, width=4)),
        ("resnext34", registry.get("resnext34").factory(info=info, blocks_per_stage=1, width=4, cardinality=2)),
        ("allcnn", registry.get("allcnn").factory(info=info, width=4)),
        ("mlp+tanh", WithHead(registry.get("mlp").factory(info=info, hidden=16), TanhHead(5))),
        ("affine-bn", registry.get("small-cnn").factory(info=info, width=4, batchnorm_affine=True)),
    ]
    return [(name, randomise_batchnorm(model.double()), info.input_shape) for name, model in models]


def test_jacobian_norms_match_brute_force(host: PluginHost) -> None:
    generator = torch.Generator().manual_seed(1)
    for name, model, shape in small_models(host):
        images = torch.rand((4, *shape), generator=generator, dtype=torch.float64)
        labels = torch.tensor([0, 1, 2, 3])
        with frozen_eval(model):
            norms = jacobian_norms(model, images, labels)
        for i in range(len(images)):
            for key, expected in brute_force_norms(model, images[i], int(labels[i])).items():
                assert float(getattr(norms, key)[i]) == pytest.approx(expected, rel=1e-9), (name, key)


def test_bounds_are_never_below_the_measured_maxima(host: PluginHost) -> None:
    """Every measured column of Tables 4/6 stays under its Eq. (6) bound, on residual, branching, plain,
    tanh-head and affine-BatchNorm models with BatchNorm statistics far from the identity."""
    generator = torch.Generator().manual_seed(2)
    for name, model, shape in small_models(host):
        data = ImageSet(torch.rand((64, *shape), generator=generator), torch.randint(0, 5, (64,), generator=generator))
        stats = model_statistics(model.float(), data, DatasetInfo("t", *shape, 5), eps=EPS, batch_size=32, device=CPU)
        s = stats.summary
        assert s["bound"]["unavailable"] is None, name
        for measured, bound in [
            (s["grad_loss_l2"]["max"], "grad_loss_l2"), (s["grad_loss_l1"]["max"], "grad_loss_l1"),
            (s["jac_f_2inf_max"], "jac_f_2inf"), (s["jac_f_11_max"], "jac_f_11"),
            (s["jac_z_2inf_max"], "jac_z_2inf"), (s["jac_z_infinf_max"], "jac_z_infinf"),
        ]:
            assert measured <= s["bound"][bound], (name, bound, measured, s["bound"][bound])
        certified, estimated = stats.per_image["certified_l2"], stats.per_image["estimate_l2"]
        assert (certified <= estimated).all(), name  # the bound is above the measured maximum


def antisymmetric() -> nn.Sequential:
    """Two logits ``z = (u.x, -u.x)``: the l2 distance to the boundary is exactly ``|u.x| / ||u||``, and
    Eq. (2) with the exact Lipschitz constant ``||W||_2 = sqrt(2) ||u||`` certifies ``1/sqrt(2)`` of it."""
    model = nn.Sequential(nn.Flatten(), nn.Linear(6, 2, bias=False))
    with torch.no_grad():
        u = torch.tensor([1.0, -2.0, 0.5, 0.0, 1.5, -1.0])
        model[1].weight.copy_(torch.stack([u, -u]))
    return model.eval()


def test_certified_radius_is_exactly_eq_2_on_an_affine_model() -> None:
    model = antisymmetric()
    x = torch.rand(50, 1, 2, 3, generator=torch.Generator().manual_seed(3)) * 0.2 + 0.4
    with torch.no_grad():
        labels = model(x).argmax(1)
    stats = model_statistics(model, ImageSet(x, labels), DatasetInfo("t", 1, 2, 3, 2), eps=EPS, batch_size=16,
                             device=CPU)
    u = model[1].weight[0].detach().double()
    truth = (x.flatten(1).double() @ u).abs() / u.norm()
    torch.testing.assert_close(stats.per_image["certified_l2"], truth / math.sqrt(2), rtol=1e-5, atol=1e-7)


def test_certified_radius_is_never_above_an_attack(host: PluginHost, engine: Engine, tanh_checkpoint: Path) -> None:
    """On a trained model with a tanh head, per image: certified l2 radius <= the min-norm attack's distance."""
    from lipcli.models.targets import load_target

    target = load_target(tanh_checkpoint, engine, data_dir=None, selection=Selection(60))
    stats = model_statistics(target.model, target.test, target.info, eps=EPS, batch_size=30, device=CPU)
    images = target.test.as_float(target.test.images)
    attack = host.registry("attack").get("min-norm").factory(steps=20)
    with frozen_eval(target.model):
        found, _ = measured_distances(target.model, images, target.test.labels,
                                      attack.run(target.model, images, target.test.labels, "l2"), "l2")
    correct = stats.predictions == stats.labels
    assert (stats.per_image["certified_l2"][correct] <= found[correct]).all()
    assert (stats.per_image["certified_l2"][~correct] == 0).all()


def test_radius_accounting() -> None:
    margin = torch.tensor([2.0, -1.0, 0.0], dtype=torch.float64)
    assert radius(margin, 4.0).tolist() == [0.25, 0.0, 0.0]
    assert torch.isnan(radius(margin, None)).all()
    assert radius(margin, 0.0).tolist() == [math.inf, 0.0, 0.0]


def test_stats_command_writes_files_and_one_row_per_model(run: Callable[..., Any], checkpoint: Path,
                                                          tanh_checkpoint: Path, tmp_path: Path) -> None:
    out = tmp_path / "s"
    result = run("stats", checkpoint, tanh_checkpoint, "--limit", "40", "--out", out, "--device", "cpu",
                 "--eps", "l2=0.1,0.5")
    assert result.exit_code == 0, result.output
    assert "digits-run" in result.stdout and "digits-tanh" in result.stdout and "max ‖∇ℓ‖₂" in result.stdout
    # each heading says which statistic over the images it is (rich may wrap them in the output)
    from lipcli.cli.lipschitz_cmd import _stats_table

    assert [c.header for c in _stats_table([]).columns][3:] == [
        "mean loss", "max ‖∇ℓ‖₂", "max ‖∇f‖₂,∞", "max ‖∇ℓ‖₁", "max ‖∇f‖₁,₁", "bound on max ‖∇ℓ‖₂",
        "median certified r₂", "median estimated r₂"]
    summary = json.loads((out / "digits-tanh" / "stats.json").read_text())
    rows = (out / "digits-tanh" / "stats.csv").read_text().splitlines()
    assert len(rows) == 41 and rows[0].startswith("index,label,prediction,loss,margin,grad_loss_l2")
    column = rows[0].split(",").index("grad_loss_l2")
    assert max(float(r.split(",")[column]) for r in rows[1:]) == pytest.approx(summary["grad_loss_l2"]["max"])
    assert [p["eps"] for p in summary["lemma_2_2"]["l2"]] == ["0.1", "0.5"]
    assert [p["eps"] for p in summary["lemma_2_2"]["linf"]] == ["8/255"]  # a norm not given: the paper's sizes
    first = summary["lemma_2_2"]["l2"][0]
    assert first["expected_loss"] == pytest.approx(summary["loss"] + 0.1 * summary["grad_loss_l2"]["mean"])
    assert first["worst_case_loss_estimate"] == pytest.approx(summary["loss"] + 0.1 * summary["grad_loss_l2"]["max"])
    result = run("stats", checkpoint, "--limit", "5", "--device", "cpu", "--eps", "linf=8/0")
    assert result.exit_code == 2 and "--eps" in result.output and "linf" in result.output


def test_stats_takes_the_deprecated_eps_l2_and_eps_linf_with_a_note(run: Callable[..., Any], checkpoint: Path,
                                                                     tmp_path: Path) -> None:
    """--eps-l2/--eps-linf (before --eps NORM=SIZES) still work, hidden, each with a one-line note on stderr."""
    out = tmp_path / "s"
    result = run("stats", checkpoint, "--limit", "5", "--out", out, "--device", "cpu", "--json",
                 "--eps-l2", "0.1,0.5", "--eps-linf", "4/255")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)[0]
    assert [p["eps"] for p in summary["lemma_2_2"]["l2"]] == ["0.1", "0.5"]
    assert [p["eps"] for p in summary["lemma_2_2"]["linf"]] == ["4/255"]
    notes = [line for line in result.stderr.splitlines() if "deprecated" in line]
    assert notes == ["Warning: --eps-l2 is deprecated and will be removed; use --eps l2=0.1,0.5",
                     "Warning: --eps-linf is deprecated and will be removed; use --eps linf=4/255"]
    assert "--eps-l2" not in run("stats", "--help").output  # hidden
    result = run("stats", checkpoint, "--eps", "l2=0.1", "--eps-l2", "0.2")
    assert result.exit_code == 2 and "give one" in result.output


@pytest.mark.parametrize(("items", "message"), [
    (["0.1,1.5"], "expected NORM=SIZES"), (["l3=0.1"], "expected NORM=SIZES"), (["l2=0.1", "L2=0.2"], "twice"),
    (["linf=8/0"], "linf: not a number"),
])
def test_stats_eps_is_given_per_norm(items: list[str], message: str) -> None:
    import typer

    from lipcli.cli.lipschitz_cmd import stats_eps

    assert stats_eps(["L2=0.5", "linf=8/255"]) == {"l2": [("0.5", 0.5)], "linf": [("8/255", 8 / 255)]}
    assert stats_eps(None) == {}  # the engine fills in the defaults
    with pytest.raises(typer.BadParameter, match=message):
        stats_eps(items)


def test_a_model_without_a_bound_still_gets_its_measured_statistics() -> None:
    class Squash(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.sin(x)

    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3), Squash()).eval()
    data = ImageSet(torch.rand(10, 1, 2, 2), torch.randint(0, 3, (10,)))
    stats = model_statistics(model, data, DatasetInfo("t", 1, 2, 2, 3), eps=EPS, batch_size=4, device=CPU)
    assert "Squash" in stats.summary["bound"]["unavailable"] and stats.summary["certified_radius"] is None
    assert torch.isnan(stats.per_image["certified_l2"]).all() and torch.isfinite(stats.per_image["estimate_l2"]).all()
    json.dumps(stats.summary, allow_nan=False)


def test_structures_the_rules_cannot_see_through_are_reported() -> None:
    """A Sequential subclass with its own forward (here a residual x + f(x)) is not a chain, and a module
    called at two input shapes has no single norm: both are reported, never bounded wrongly."""

    class Residual(nn.Sequential):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x + super().forward(x)

    with pytest.raises(BoundUnavailable, match="Residual"):
        product_bound(nn.Sequential(nn.Flatten(), Residual(nn.Linear(4, 4))), (1, 2, 2), "l2")
    pool = nn.AdaptiveAvgPool2d(2)
    with pytest.raises(BoundUnavailable, match="several input shapes"):
        product_bound(nn.Sequential(pool, nn.Conv2d(1, 1, 1), pool), (1, 8, 8), "l2")


def test_a_linear_layer_on_sequences_with_a_folded_batchnorm_is_bounded() -> None:
    """Linear on [T, F] inputs followed by BatchNorm1d over T: the bound is at least the dense norm."""
    model = randomise_batchnorm(nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(5)))
    model[1].running_var[0] = 0.01
    with torch.no_grad():
        matrix = dense_matrix(lambda x: model(x.float()).double() - model(torch.zeros_like(x).float()).double(), (5, 3))
    for norm, exact in (("l2", torch.linalg.matrix_norm(matrix, ord=2)), ("linf", matrix.abs().sum(1).max()),
                        ("l1", matrix.abs().sum(0).max())):
        assert product_bound(model, (5, 3), norm) >= float(exact) * (1 - 1e-6), norm


def test_an_unsupported_layer_variant_loses_the_bound_not_the_statistics() -> None:
    model = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1, padding_mode="reflect"), nn.Flatten(), nn.Linear(8, 3)).eval()
    data = ImageSet(torch.rand(6, 1, 2, 2), torch.randint(0, 3, (6,)))
    stats = model_statistics(model, data, DatasetInfo("t", 1, 2, 2, 3), eps=EPS, batch_size=4, device=CPU)
    assert "reflect" in stats.summary["bound"]["unavailable"]

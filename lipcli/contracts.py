"""The contract every registered component must keep, checked the same way for lipcli's own plugins (by the
test suite) and for a third party's (``lipcli plugins check``).

Each check is small and fast (tiny models and images on the CPU). It either passes, fails with the reason, or
is skipped with the reason (a data set whose files are not on this machine cannot be read, which is not a
fault of the plugin):

* architectures: output ``[B, classes]`` in float32 and finite in train and eval mode; seeded
  initialisation; double backpropagation (the Lipschitz penalty's) reaches the weights; eval output of an
  image independent of the rest of the batch;
* defences: a preset expands into registered primitives; the built defence's training loss is a finite
  scalar whose gradient reaches the weights, finite, and a non-zero penalty reaches them too; a model change
  keeps the output shape;
* attacks: in l2 and l-inf, one proposal per image, finite and in [0, 1], the images given left unchanged,
  the model left in eval mode; on an affine model lipcli's own accounting finds most proposals adversarial,
  at a median distance within 10 times the exact minimal one (an attack at a budget only, ``run_at``, is given
  3 times that distance as eps and must stay within it);
* data sets: splits of the declared shape, pixel values in [0, 1], labels in range, class names matching.

A component registered with ``contract_skip="reason"`` (``register(name, factory, description,
contract_skip=...)``) is skipped with that reason: a family of components built by one code path (torchvision's
80 models) is checked through a few members, and a model that cannot take the contract's small images says so.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from lipcli.attacks import AttackAtBudget, within_budget
from lipcli.components import call_factory
from lipcli.config.schema import DefenceConfig
from lipcli.data.types import DatasetInfo, DataSplits
from lipcli.defence import build_defence, expand
from lipcli.errors import DataError, LipcliError
from lipcli.evaluation.accounting import measured_distances
from lipcli.gradients import frozen_eval
from lipcli.plugin_host import KINDS, PluginHost
from lipcli.registry import Component

SHAPES = (DatasetInfo("contract-grey", 1, 8, 8, 10), DatasetInfo("contract-colour", 3, 16, 16, 5))
"""Data shapes every architecture must handle (small, for speed)."""


class Violation(Exception):
    """A broken promise: the message says which."""


class Skipped(Exception):
    """The check cannot run here (for instance, the data set's files are missing)."""


@dataclass
class Result:
    """One check of one component."""

    kind: str
    name: str
    plugin: str
    check: str
    status: str
    """``pass``, ``fail`` or ``skip``."""
    detail: str = ""


Check = Callable[[Component, PluginHost], None]


def run_checks(plugins: PluginHost, kinds: list[str] | None = None, plugin: str | None = None) -> list[Result]:
    """Every check of every component of ``kinds`` (all by default), of one ``plugin`` or of all."""
    results = []
    for kind in kinds or list(KINDS):
        for component in plugins.registry(kind):
            if plugin is not None and component.plugin.lower() != plugin.lower():
                continue
            for check_name, check in CHECKS[kind]:
                results.append(run_check(kind, check_name, check, component, plugins))
    return results


def run_check(kind: str, check_name: str, check: Check, component: Component, plugins: PluginHost) -> Result:
    """One check, its outcome caught: a component that raises anything fails the check, with what it raised."""
    def result(status: str, detail: str = "") -> Result:
        return Result(kind, component.name, component.plugin, check_name, status, detail)

    reason = component.metadata.get("contract_skip")
    if reason:  # a plugin that says why the check cannot or need not build this component
        return result("skip", str(reason))
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)  # a component using the global generator sees the same draws in every run
            check(component, plugins)
    except Skipped as exc:
        return result("skip", str(exc))
    except Violation as exc:
        return result("fail", str(exc))
    except Exception as exc:  # noqa: BLE001 - any error of a plugin is a failed check, reported, not raised
        return result("fail", f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}")
    return result("pass")


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise Violation(message)


def _images(info: DatasetInfo, batch: int, seed: int = 1) -> torch.Tensor:
    return torch.rand(batch, *info.input_shape, generator=torch.Generator().manual_seed(seed))


def _build(component: Component, info: DatasetInfo, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    model = call_factory(component, {}, "model.options", info=info, batchnorm_affine=False)
    _require(isinstance(model, nn.Module), f"the factory returned {type(model).__name__}, not an nn.Module")
    return model


# -- architectures -------------------------------------------------------------------------------------------


def _architecture_output(component: Component, plugins: PluginHost) -> None:
    for info in SHAPES:
        model = _build(component, info)
        for training in (True, False):
            out = model.train(training)(_images(info, 3))
            _require(tuple(out.shape) == (3, info.num_classes),
                     f"output shape {tuple(out.shape)} for 3 images of {info.input_shape}, not (3, {info.num_classes})")
            _require(out.dtype == torch.float32 and bool(torch.isfinite(out).all()),
                     f"output {out.dtype}, finite: {bool(torch.isfinite(out).all())}")


def _architecture_seeded(component: Component, plugins: PluginHost) -> None:
    info = SHAPES[0]
    first, again, other = (_build(component, info, seed).state_dict() for seed in (3, 3, 4))
    _require(all(torch.equal(first[k], again[k]) for k in first), "the same seed gives different weights")
    _require(any(not torch.equal(first[k], other[k]) for k in first), "different seeds give the same weights")


def _architecture_double_backprop(component: Component, plugins: PluginHost) -> None:
    info = SHAPES[1]
    model = _build(component, info).train()
    x = _images(info, 2).requires_grad_()
    loss = F.cross_entropy(model(x), torch.arange(2) % info.num_classes)
    (gradient,) = torch.autograd.grad(loss, x, create_graph=True)
    gradient.flatten(1).norm(dim=1).max().backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    _require(bool(grads), "the input-gradient penalty reaches no weight (no double backpropagation)")
    _require(all(bool(torch.isfinite(g).all()) for g in grads), "double backpropagation gives non-finite gradients")


def _architecture_batch_independent(component: Component, plugins: PluginHost) -> None:
    info = SHAPES[1]
    model = _build(component, info)
    with torch.no_grad():
        model.train()(_images(info, 4, seed=5))  # move BatchNorm statistics away from their initial values
        model.eval()
        x = _images(info, 4)
        together = model(x)
        alone = torch.cat([model(x[i : i + 1]) for i in range(len(x))])
    _require(torch.allclose(together, alone, rtol=1e-4, atol=1e-5),
             "in eval mode an image's output depends on the other images of its batch")


# -- defences ------------------------------------------------------------------------------------------------


def _contract_model(info: DatasetInfo) -> nn.Module:
    """A small BatchNorm CNN for the defence and attack checks."""
    return nn.Sequential(
        nn.Conv2d(info.channels, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(2),
        nn.Flatten(), nn.Linear(32, info.num_classes),
    )


def _defence_expands(component: Component, plugins: PluginHost) -> None:
    """A preset names registered primitives (``expand`` raises, naming the preset, when one is unknown); ``j0``,
    no defence, expands to none."""
    expand(DefenceConfig(name=component.name), plugins.registry("defence"))


def _defence_loss(component: Component, plugins: PluginHost) -> None:
    info = SHAPES[1]
    defence = build_defence(DefenceConfig(name=component.name), plugins)
    model = defence.prepare_model(_contract_model(info), info)
    _require(isinstance(model, nn.Module), "prepare_model did not return an nn.Module")
    images = _images(info, 8)
    labels = torch.arange(8) % info.num_classes
    model.train()
    _require(tuple(model(images).shape) == (8, info.num_classes), "the changed model's output shape is wrong")
    out = defence.training_loss(model, images, labels)
    _require(out.total.dim() == 0 and bool(torch.isfinite(out.total)), f"training loss {out.total!r} is not a finite scalar")
    _require(tuple(out.logits.shape) == (8, info.num_classes), "the step's logits have the wrong shape")
    if out.penalty is not None and bool(out.penalty.detach().any()):
        extra = out.total - out.data_loss
        _require(extra.requires_grad and any(
            g is not None and bool(g.any())
            for g in torch.autograd.grad(extra, list(model.parameters()), retain_graph=True, allow_unused=True)
        ), "the penalty does not reach the weights through the training loss (detached?)")
    model.zero_grad()
    out.total.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    _require(bool(grads), "the training loss reaches no weight")
    _require(all(bool(torch.isfinite(g).all()) for g in grads), "the training loss has non-finite gradients")


# -- attacks -------------------------------------------------------------------------------------------------


def _easy_case() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """An affine classifier whose class weights have zero mean (so that what decides the class is an image's
    pattern, not its brightness, and random images fall in every class), 6 images inside the box and their
    predicted labels: any working attack breaks most of them."""
    info = SHAPES[0]
    generator = torch.Generator().manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(info.input_dim, info.num_classes, bias=False)).eval()
    with torch.no_grad():
        weight = torch.randn((info.num_classes, info.input_dim), generator=generator)
        model[1].weight.copy_(weight - weight.mean(dim=1, keepdim=True))
        images = _images(info, 6, seed=2) * 0.8 + 0.1
        labels = model(images).argmax(1)
    return model, images, labels


def _attack_proposals(component: Component, plugins: PluginHost) -> None:
    model, images, labels = _easy_case()
    attack = call_factory(component, {}, f"attack.{component.name}")
    minimal = callable(getattr(attack, "run", None))
    _require(minimal or isinstance(attack, AttackAtBudget),
             "the factory returned no object with a run() method (nor an AttackAtBudget with run_at())")
    for norm in ("l2", "linf"):
        given = images.clone()
        eps = 3 * _minimal_distances(model, images, labels, norm)  # an attack at a budget gets room to succeed
        with frozen_eval(model):
            if minimal:
                proposals = attack.run(model, given, labels.clone(), norm)
            else:
                proposals = attack.run_at(model, given, labels.clone(), norm, eps)
            _require(not model.training, f"{norm}: the model was left in train mode")
        _require(torch.equal(given, images), f"{norm}: the attack changed the images it was given")
        _require(isinstance(proposals, torch.Tensor) and tuple(proposals.shape) == tuple(images.shape),
                 f"{norm}: {getattr(proposals, 'shape', type(proposals).__name__)} proposals for images "
                 f"{tuple(images.shape)}")
        _require(bool(torch.isfinite(proposals).all()) and 0 <= float(proposals.min()) and float(proposals.max()) <= 1,
                 f"{norm}: proposals are not finite values in [0, 1]")
        distances, _ = measured_distances(model, images, labels, proposals.detach(), norm)
        if not minimal:
            distances = torch.where(within_budget(distances, eps), distances, torch.inf)
        found = int(torch.isfinite(distances).sum())
        _require(found * 2 >= len(images), f"{norm}: only {found} of {len(images)} proposals are adversarial on an "
                                           f"easy model")
        ratio = float((distances.double() / _minimal_distances(model, images, labels, norm)).median())
        _require(ratio <= 10, f"{norm}: the median distance is {ratio:.3g} times the smallest possible one (at most "
                              f"10 expected; random points in [0, 1] are 50 to 100 times)")


def _minimal_distances(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, norm: str) -> torch.Tensor:
    """Each image's exact distance to the affine classifier's decision boundary, ignoring the box (which can
    only make it larger): the smallest margin over the dual norm of the weight difference, per other class."""
    weight = model[1].weight.detach().double()
    logits = images.flatten(1).double() @ weight.T
    margins = logits.gather(1, labels[:, None]) - logits
    differences = weight[labels][:, None, :] - weight[None, :, :]
    dual = differences.norm(dim=2) if norm == "l2" else differences.abs().sum(dim=2)
    distances = margins / dual
    distances[torch.arange(len(labels)), labels] = math.inf
    return distances.min(dim=1).values


# -- data sets -----------------------------------------------------------------------------------------------


def _dataset_splits(component: Component, plugins: PluginHost) -> None:
    try:
        splits = component.factory(data_dir=None, download=False)
    except DataError as exc:
        raise Skipped(f"data not available here: {str(exc).splitlines()[0]}") from None
    except LipcliError as exc:
        raise Violation(str(exc)) from None
    _require(isinstance(splits, DataSplits), f"the factory returned {type(splits).__name__}, not DataSplits")
    info = splits.info
    _require(not info.class_names or len(info.class_names) == info.num_classes,
             f"{len(info.class_names)} class names for {info.num_classes} classes")
    for split_name, split in (("train", splits.train), ("test", splits.test)):
        _require(len(split) > 0, f"the {split_name} split is empty")
        _require(tuple(split.images.shape[1:]) == info.input_shape, f"{split_name} images are not {info.input_shape}")
        if split.images.dtype != torch.uint8:
            low, high = float(split.images.min()), float(split.images.max())
            _require(0 <= low and high <= 1 and math.isfinite(low + high),
                     f"{split_name} pixel values span [{low}, {high}], not [0, 1]")
        _require(int(split.labels.min()) >= 0 and int(split.labels.max()) < info.num_classes,
                 f"{split_name} labels outside 0..{info.num_classes - 1}")


CHECKS: dict[str, list[tuple[str, Check]]] = {
    "architecture": [
        ("output", _architecture_output), ("seeded", _architecture_seeded),
        ("double-backprop", _architecture_double_backprop), ("batch-independent", _architecture_batch_independent),
    ],
    "defence": [("expands", _defence_expands), ("training-loss", _defence_loss)],
    "attack": [("proposals", _attack_proposals)],
    "dataset": [("splits", _dataset_splits)],
}
"""The checks of each component kind, by name."""


def describe(results: list[Result]) -> dict[str, Any]:
    """Counts of passed, failed and skipped checks."""
    return {status: sum(r.status == status for r in results) for status in ("pass", "fail", "skip")}

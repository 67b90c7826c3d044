"""The defence interface: what one training step optimises, and how primitives compose.

A defence is built from primitives registered through ``register_defences``. A primitive's factory takes
its parameters as keyword arguments and returns an object with any of these methods:

* ``prepare_model(model, info) -> nn.Module``: changes the architecture once, before training (the tanh
  head); ``info`` is the data set's :class:`lipcli.data.DatasetInfo`;
* ``perturb(model, images, labels) -> Perturbation``: replaces the training batch (adversarial training).
  It is called with the model in eval mode and parameters frozen (:func:`lipcli.gradients.frozen_eval`), so
  each example's gradient is exact and BatchNorm statistics are untouched;
* ``training_loss(model, images, labels, perturbation) -> StepLoss``: the loss of the step on the batch
  the weight update uses, in train mode (the WCAT penalty); ``perturbation.clean`` is the batch before
  the perturbation. Without one, the loss is plain cross-entropy.
  With several processes (torchrun) ``model`` is the DistributedDataParallel wrapper and ``images`` this
  process's share of the global batch: a quantity over the whole batch (a maximum) must be taken over
  :func:`lipcli.distributed.gather`, and a second forward pass should use ``unwrap(model)``.

A composition has at most one primitive of each of the last two kinds. A preset is registered with
``preset=True`` and a factory returning its expansion ``[(primitive, {param: value}), ...]``; names join
with ``+`` (``j2-lip+tanh``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from lipcli.components import call_factory
from lipcli.config.schema import TANH_HEAD, DefenceConfig
from lipcli.data.types import DatasetInfo
from lipcli.distributed import unwrap
from lipcli.errors import ConfigError
from lipcli.gradients import cross_entropy, frozen_eval
from lipcli.plugin_host import PluginHost
from lipcli.registry import Registry


@dataclass
class StepLoss:
    """The result of one training step's loss computation (tensors stay on the device, no sync)."""

    total: torch.Tensor
    """What is backpropagated: data loss plus any penalty."""
    data_loss: torch.Tensor
    """Mean cross-entropy on the batch the weight update uses."""
    logits: torch.Tensor
    """The logits of that batch (for the training error)."""
    penalty: torch.Tensor | None = None
    grad_norm_max: torch.Tensor | None = None
    """Largest per-example input-gradient norm the defence measured in this step, when it measures one."""


@dataclass
class Perturbation:
    """A perturbed training batch, and the largest clean-input gradient norm seen computing it (if any)."""

    images: torch.Tensor
    grad_norm_max: torch.Tensor | None = None
    clean: torch.Tensor | None = None
    """The batch before the perturbation, filled in by the composer: losses that compare the two (TRADES,
    GradAlign) read it here."""


def plain_loss(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> StepLoss:
    """J0's step: mean cross-entropy."""
    logits = model(images)
    loss = cross_entropy(logits, labels, reduction="mean")
    return StepLoss(total=loss, data_loss=loss, logits=logits)


class ComposedDefence:
    """Primitives applied in order: model change, perturbation (eval mode), training loss (train mode)."""

    def __init__(self, parts: list[tuple[str, Any]]) -> None:
        self.parts = parts
        self.model_changes = [p for _, p in parts if hasattr(p, "prepare_model")]
        perturbers = [(n, p) for n, p in parts if hasattr(p, "perturb")]
        losses = [(n, p) for n, p in parts if hasattr(p, "training_loss")]
        for role, found in (("perturbation", perturbers), ("training loss", losses)):
            if len(found) > 1:
                names = " and ".join(repr(n) for n, _ in found)
                raise ConfigError(f"defence: {names} both define the {role}; combine at most one of them")
        self.perturber = perturbers[0][1] if perturbers else None
        self.loss = losses[0][1] if losses else None

    @property
    def names(self) -> list[str]:
        return [name for name, _ in self.parts]

    def prepare_model(self, model: nn.Module, info: DatasetInfo) -> nn.Module:
        for part in self.model_changes:
            model = part.prepare_model(model, info)
        return model

    def training_loss(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> StepLoss:
        perturbation = None
        if self.perturber is not None:  # eval mode, no weight gradients: the bare model, not a DDP wrapper
            with frozen_eval(unwrap(model)) as bare:
                perturbation = self.perturber.perturb(bare, images, labels)
            perturbation.clean = images
            images = perturbation.images.detach()
        if self.loss is not None:
            out = self.loss.training_loss(model, images, labels, perturbation)
        else:
            out = plain_loss(model, images, labels)
        if out.grad_norm_max is None and perturbation is not None:
            out.grad_norm_max = perturbation.grad_norm_max
        return out


def expand(config: DefenceConfig, registry: Registry) -> list[tuple[str, dict[str, Any]]]:
    """The primitives (canonical name, parameters) a defence configuration stands for."""
    return [(name, params) for name, params, _ in _expand(config, registry)]


def _expand(config: DefenceConfig, registry: Registry) -> list[tuple[str, dict[str, Any], str]]:
    """Like :func:`expand`, with the dotted configuration key each primitive's parameters come from."""
    if config.primitives and config.name:
        raise ConfigError("defence: set either defence.name or defence.primitives, not both")
    if config.primitives:
        expanded = []
        for i, table in enumerate(config.primitives):
            params = dict(table)
            name = params.pop("name", None)
            if not isinstance(name, str):
                raise ConfigError(f"defence.primitives[{i}]: needs a name, e.g. {{name = \"at-l2\", eps = 0.01}}")
            expanded.append((_primitive(registry, name, f"defence.primitives[{i}].name").name, params))
        return [(n, p, f"defence.primitives[{i}]") for i, (n, p) in enumerate(_with_options(expanded, config.options))]
    expanded = []
    for part in (config.name or "j0").split("+"):
        component = registry.get(part.strip())
        if component.metadata.get("preset"):
            for name, params in component.factory():
                expanded.append((_primitive(registry, name, f"preset {component.name!r}").name, dict(params)))
        else:
            expanded.append((component.name, {}))
    return [(n, p, f"defence.options.{n}") for n, p in _with_options(expanded, config.options)]


def _primitive(registry: Registry, name: str, where: str) -> Any:
    component = registry.get(name)
    if component.metadata.get("preset"):
        raise ConfigError(f"{where}: {name!r} is a preset; list primitives only")
    return component


def _with_options(
    expanded: list[tuple[str, dict[str, Any]]], options: dict[str, Any]
) -> list[tuple[str, dict[str, Any]]]:
    names = [name for name, _ in expanded]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ConfigError(f"defence: primitive {duplicates[0]!r} appears twice")
    for key, value in options.items():
        if key not in names:
            raise ConfigError(
                f"defence.options.{key}: not a primitive of this defence (it uses {', '.join(names) or 'none'})"
            )
        if not isinstance(value, dict):
            raise ConfigError(f"defence.options.{key}: expected a table of parameters, e.g. {{lam = 0.1}}")
    return [(name, {**params, **options.get(name, {})}) for name, params in expanded]


def build_defence(config: DefenceConfig, plugins: PluginHost, *, tanh_head: bool = False) -> ComposedDefence:
    """The configured defence: presets expanded, options applied, every primitive instantiated. ``tanh_head``
    (``model.tanh_head``) puts the ``tanh-head`` primitive first where the defence does not name it: the one way
    the head is built."""
    registry = plugins.registry("defence")
    expanded = _expand(config, registry)
    if tanh_head and all(name != TANH_HEAD for name, _, _ in expanded):
        expanded.insert(0, (registry.get(TANH_HEAD).name, {}, "model.tanh_head"))
    parts = [(name, call_factory(registry.get(name), params, key)) for name, params, key in expanded]
    return ComposedDefence(parts)

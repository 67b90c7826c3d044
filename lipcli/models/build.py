"""Building the trained network from a configuration: architecture, optional tanh head, defence changes."""

from __future__ import annotations

import torch
from torch import nn

from lipcli.components import call_factory
from lipcli.config.schema import TANH_HEAD, ExperimentConfig
from lipcli.data.types import DatasetInfo
from lipcli.defence import ComposedDefence, build_defence
from lipcli.errors import ConfigError
from lipcli.plugin_host import PluginHost


def build_model(
    config: ExperimentConfig, info: DatasetInfo, plugins: PluginHost, defence: ComposedDefence | None = None,
) -> nn.Module:
    """The network a run trains, initialised deterministically from ``training.seed``.

    Training and :func:`lipcli.load_model` both build through here, so a checkpoint always finds the
    structure (tanh head included) it was saved from.
    """
    component = plugins.registry("architecture").get(config.model.arch)
    defence = defence or build_defence(config.defence, plugins, tanh_head=config.model.tanh_head)
    if config.model.tanh_head and TANH_HEAD not in defence.names:
        raise ValueError("model.tanh_head is set and the defence given has no tanh-head primitive: build it with "
                         "build_defence(config.defence, plugins, tanh_head=config.model.tanh_head)")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.training.seed)
        model = call_factory(
            component, config.model.options, "model.options", info=info,
            batchnorm_affine=config.model.batchnorm_affine,
        )
        if not isinstance(model, nn.Module):
            raise ConfigError(f"model.arch: {config.model.arch!r} returned {type(model).__name__}, not an nn.Module")
        model = defence.prepare_model(model, info)
    return model

"""Building a model from the ``[model]`` configuration through the architecture registry."""

from __future__ import annotations

import torch
from torch import nn

from lipcli.components import call_factory
from lipcli.config.schema import ModelConfig
from lipcli.data.types import DatasetInfo
from lipcli.errors import ConfigError
from lipcli.models.heads import TanhHead, WithHead
from lipcli.plugins import PluginHost, get_host


def build_model(config: ModelConfig, info: DatasetInfo, seed: int, host: PluginHost | None = None) -> nn.Module:
    """The architecture ``config.arch`` for ``info``'s inputs, initialised deterministically from ``seed``."""
    component = (host or get_host()).registry("architecture").get(config.arch)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = call_factory(
            component, config.options, "model.options", info=info, batchnorm_affine=config.batchnorm_affine
        )
        if not isinstance(model, nn.Module):
            raise ConfigError(f"model.arch: {config.arch!r} returned {type(model).__name__}, not an nn.Module")
        if config.tanh_head:
            model = WithHead(model, TanhHead(info.num_classes))
    return model

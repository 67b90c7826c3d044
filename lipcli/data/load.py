"""Loading the configured data set through the dataset registry."""

from __future__ import annotations

from lipcli.components import call_factory
from lipcli.config.schema import DataConfig
from lipcli.data.types import DataSplits
from lipcli.errors import ConfigError
from lipcli.plugins import PluginHost, get_host


def load_data(config: DataConfig, host: PluginHost | None = None) -> DataSplits:
    """The data set ``config.dataset`` with its options; the plugin owns reading and validation."""
    component = (host or get_host()).registry("dataset").get(config.dataset)
    splits = call_factory(
        component, config.options, "data.options", data_dir=config.data_dir, download=config.download
    )
    if not isinstance(splits, DataSplits):
        raise ConfigError(f"data.dataset: {config.dataset!r} returned {type(splits).__name__}, not DataSplits")
    return splits

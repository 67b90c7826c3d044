"""Loading the configured data set through the dataset registry."""

from __future__ import annotations

import warnings

from lipcli.components import call_factory
from lipcli.config.schema import DataConfig
from lipcli.data.types import DataSplits
from lipcli.distributed import barrier, current
from lipcli.errors import ConfigError, LipcliWarning
from lipcli.plugin_host import PluginHost


def load_data(config: DataConfig, plugins: PluginHost) -> DataSplits:
    """The data set ``config.dataset`` with its options; the plugin owns reading and validation.

    A data set registered with ``files=False`` reads no files: a ``data_dir`` given for it is warned about.

    With several processes, the first process of each machine reads (and downloads) first and the others
    then read what it left, so that no two processes download into the same folder at once."""
    component = plugins.registry("dataset").get(config.dataset)
    if config.data_dir and component.metadata.get("files") is False and current().main:
        warnings.warn(f"data.data_dir: {component.name!r} reads no files; {config.data_dir!r} is ignored",
                      LipcliWarning, stacklevel=2)
    first = current().local_rank == 0
    if not first:
        barrier()
    try:
        splits = call_factory(
            component, config.options, "data.options", data_dir=config.data_dir, download=config.download
        )
    finally:
        if first:
            barrier()
    if not isinstance(splits, DataSplits):
        raise ConfigError(f"data.dataset: {config.dataset!r} returned {type(splits).__name__}, not DataSplits")
    return splits

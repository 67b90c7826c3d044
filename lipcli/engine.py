"""The one context every engine call runs in, passed explicitly instead of a plugin host, a reporter and a
device threaded through each call with a hidden fallback for each.

The CLI makes one per command (its plugins, a rich reporter, the ``--device`` chosen); the Python API
(``lipcli.train``, ``lipcli.load_model``) makes the default one with :func:`make_engine`, the one place that
defaults are filled in. Nothing else below the CLI looks the plugins up by itself.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from lipcli.distributed import Context, current
from lipcli.plugin_host import PluginHost, get_host
from lipcli.reporting import Reporter

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class Engine:
    """Plugins (the component registries), where progress goes, and the device evaluations run on.

    Training runs on its configuration's ``training.device`` instead: that device is part of the experiment
    and is recorded with it.
    """

    device: torch.device
    plugins: PluginHost
    reporter: Reporter

    @property
    def process(self) -> Context:
        """This process's place in the torchrun group (rank 0 alone without torchrun)."""
        return current()

    @property
    def main(self) -> bool:
        """Whether this process writes files and reports: the one answer to "am I rank 0?"."""
        return current().main

    def on(self, device: torch.device) -> Engine:
        """The same context on another device (a grid's run evaluated where it trained)."""
        return replace(self, device=device)


def make_engine(
    device: str | torch.device = "auto", *, plugins: PluginHost | None = None, reporter: Reporter | None = None,
    key: str = "--device",
) -> Engine:
    """An :class:`Engine` on ``device`` (``auto``: CUDA when there is one; errors name ``key``), with the
    installed plugins and silent progress unless given."""
    import torch

    from lipcli.device import select_device

    chosen = device if isinstance(device, torch.device) else select_device(device, key)
    return Engine(chosen, plugins or get_host(), reporter or Reporter())

"""What each process of the distributed tests runs (torch.multiprocessing needs it in an importable module)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lipcli import hookimpl
from lipcli.config import resolve
from lipcli.plugin_host import PluginHost
from lipcli.engine import make_engine


class NoNormPlugin:
    """A small network without BatchNorm, whose step cannot depend on how the batch is split."""

    @staticmethod
    @hookimpl
    def register_architectures(register: Any) -> None:
        def build(info: Any, *, batchnorm_affine: bool = False) -> nn.Module:
            return nn.Sequential(nn.Flatten(), nn.Linear(info.input_dim, 16), nn.Tanh(), nn.Linear(16, info.num_classes))

        register("test-no-norm", build, "Flatten, Linear, Tanh, Linear (tests)")


def host() -> PluginHost:
    plugins = PluginHost(environ={})
    plugins.register(NoNormPlugin(), "test-no-norm")
    return plugins


def steps_config(out: Path, defence: str, steps: int, *extra: str) -> Any:
    """``steps`` steps of batch 32 on 64 synthetic images (none held out: two whole batches an epoch, for one
    process as for two); ``extra`` are further ``--set`` overrides."""
    return resolve(None, {}, [
        "data.dataset='synthetic'",
        "data.options={train_size=64, test_size=16, channels=1, size=4, num_classes=3, noise=0.3}", "data.validation=0",
        "model.arch='test-no-norm'", f"defence.name={defence!r}", "training.batch_size=32", "training.lr=0.5",
        f"training.max_steps={steps}", f"training.epochs={steps}", "training.device='cpu'",
        f"output.dir={str(out)!r}", *extra,
    ])


def train_steps(rank: int, world: int, port: int, out: str, defence: str, steps: int, extra: tuple[str, ...]) -> None:
    """One process of a ``world``-process run: join the group, train ``steps`` steps, leave."""
    from lipcli import distributed
    from lipcli.training.trainer import train

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    distributed.setup()
    succeeded = False
    try:
        train(steps_config(Path(out), defence, steps, *extra), make_engine("cpu", plugins=host()))
        succeeded = True
    finally:
        distributed.teardown(succeeded)
    os._exit(0)  # as lipcli's main() does under torchrun: gloo's threads can abort the interpreter's shutdown

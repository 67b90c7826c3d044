"""Device selection: CUDA when there is one, never hard-coded; under torchrun, each process's own GPU."""

from __future__ import annotations

import torch

from lipcli.distributed import current
from lipcli.errors import ConfigError


def select_device(spec: str = "auto", key: str = "training.device") -> torch.device:
    """``auto`` picks CUDA when available, else the CPU; an explicit device must exist (errors name ``key``).

    With several processes, ``auto`` and ``cuda`` mean this process's GPU, ``cuda:LOCAL_RANK``."""
    spec = spec.strip().lower()
    if spec == "auto":
        spec = "cuda" if torch.cuda.is_available() else "cpu"
    if current().enabled and spec.startswith("cuda"):
        if spec != "cuda":
            raise ConfigError(f"{key}: under torchrun every process uses its own GPU (cuda:LOCAL_RANK); use cuda or auto")
        if torch.cuda.is_available():
            spec = f"cuda:{current().local_rank % torch.cuda.device_count()}"
    try:
        device = torch.device(spec)
    except RuntimeError:
        raise ConfigError(f"{key}: unknown device {spec!r} (use auto, cpu, cuda or cuda:N)") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"{key}: {spec!r} requested but CUDA is not available here")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigError(
                f"{key}: {spec!r} requested but only {torch.cuda.device_count()} CUDA device(s) exist"
            )
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"{key}: {spec!r} requested but MPS is not available here")
    return device

"""Full float32 arithmetic on demand, for computations whose error budget TF32 or bfloat16 shortcuts break
(a rigorous distance bound, a loss difference divided by a small step)."""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch


def _backends() -> list[object]:
    """Every per-backend float32 precision setting this PyTorch has (2.9 and later)."""
    names = ("cuda.matmul", "cudnn.conv", "mkldnn.matmul", "mkldnn.conv")
    found = []
    for name in names:
        backend: object = torch.backends
        for part in name.split("."):
            backend = getattr(backend, part, None)
        if backend is not None and hasattr(backend, "fp32_precision"):
            found.append(backend)
    return found


@contextlib.contextmanager
def full_float32() -> Iterator[None]:
    """Float32 matrix products and convolutions without TF32 or bfloat16 shortcuts, restored afterwards;
    set through the per-backend settings (a process that used them cannot use the legacy global ones)."""
    backends = _backends()
    if not backends:  # PyTorch before 2.9: only the global settings exist
        legacy = (torch.get_float32_matmul_precision(), torch.backends.cudnn.allow_tf32)
        torch.set_float32_matmul_precision("highest")
        torch.backends.cudnn.allow_tf32 = False
    previous = [backend.fp32_precision for backend in backends]
    for backend in backends:
        backend.fp32_precision = "ieee"
    try:
        yield
    finally:
        for backend, value in zip(backends, previous, strict=True):
            backend.fp32_precision = value
        if not backends:
            torch.set_float32_matmul_precision(legacy[0])
            torch.backends.cudnn.allow_tf32 = legacy[1]

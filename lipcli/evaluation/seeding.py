"""Seeds for attacks with randomness, so two evaluations with the same ``--seed`` give identical results.

Each (attack, batch) pair gets its own seed, derived from the user's seed, the attack's name and the batch
number: results do not depend on which other attacks ran before, nor on how many processes share the batches.
Attacks draw from torch's global generators (``torch.rand``, ``torch.randn`` ...), which :func:`seeded` resets.
"""

from __future__ import annotations

import zlib
from contextlib import contextmanager
from collections.abc import Iterator

import torch

DEFAULT_SEED = 0


def seed_for(seed: int, attack: str, batch: int) -> int:
    """A 63-bit seed for ``attack`` on batch number ``batch``, stable across Python runs (no ``hash()``)."""
    text = f"{seed}:{attack}:{batch}".encode()
    return (zlib.crc32(text) << 31 | zlib.adler32(text)) & (2**63 - 1)


@contextmanager
def seeded(seed: int, attack: str, batch: int) -> Iterator[None]:
    """Run the block with every torch generator (CPU and CUDA) seeded by :func:`seed_for`, restored after."""
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed_for(seed, attack, batch))
        yield

"""Model calls sized for the device: how lipcli's attacks that make many calls on a whole batch see a model.

On a CPU, small calls keep a conv net's activations in cache: a Fashion-MNIST CNN classified an image in 110-125
us in calls of 32 to 100 and in 271 us in one call of 200 (2 threads, best of 15 timings each); backward passes
gain the same way. A GPU wants large calls. Where each image's output does not depend on the rest of its batch
(lipcli attacks in eval mode and refuses outside models whose outputs do), outputs do not depend on the chunk
beyond float rounding.
"""

from __future__ import annotations

import torch
from torch import nn

from lipcli.api import smallest_batch

CPU_CHUNK, GPU_CHUNK = 32, 8192


def call_size(model: nn.Module, device: torch.device, chunk: int | None) -> int:
    """Inputs per model call: ``chunk`` where the user chose one; else small on a CPU, large elsewhere, and never
    below the smallest batch ``model`` computes without padding (an exported program with a fixed batch pads every
    smaller call up to it: :func:`lipcli.api.smallest_batch`)."""
    if chunk is not None:
        return chunk
    return max(CPU_CHUNK if device.type == "cpu" else GPU_CHUNK, smallest_batch(model))


class Chunked(nn.Module):
    """``model`` called on pieces of at most ``chunk`` inputs, its outputs concatenated. Autograd runs back through
    the split, so gradients (and the backward passes) come in the same pieces."""

    def __init__(self, model: nn.Module, chunk: int) -> None:
        super().__init__()
        self.model, self.chunk = model, chunk
        # a fresh Module is in train mode, and code restoring it would flip the model; .train() would also reset
        # every layer's own mode, so only the flag is copied
        self.training = model.training

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        if inputs.shape[0] <= self.chunk:
            return self.model(inputs)
        return torch.cat([self.model(part) for part in inputs.split(self.chunk)])


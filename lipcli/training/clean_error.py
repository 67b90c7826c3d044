"""Clean error and loss on the test or held-out validation images, batched, in eval mode; with several
processes each takes every N-th batch and the sums are added up, so every process returns the whole set's
numbers."""

from __future__ import annotations

import torch
from torch import nn

from lipcli.data.batches import elsewhere, iterate_batches, num_batches
from lipcli.data.types import ImageSet
from lipcli.distributed import all_reduce
from lipcli.reporting import SILENT, Reporter


@torch.no_grad()
def clean_error_and_loss(
    model: nn.Module, data: ImageSet, batch_size: int, device: torch.device, reporter: Reporter = SILENT,
    description: str = "test",
) -> tuple[float, float]:
    """(error rate, mean cross-entropy) of ``model`` on ``data``; restores the model's train/eval mode.
    ``description`` labels the progress bar."""
    was_training = model.training
    model.eval()
    wrong = torch.zeros((), device=device)
    loss = torch.zeros((), device=device, dtype=torch.float64)
    try:
        with reporter.task(description, num_batches(len(data), batch_size)) as task:
            for images, labels in iterate_batches(data, batch_size, device, skip=elsewhere(batch_size)):
                if images is not None:
                    logits = model(images)
                    wrong += (logits.argmax(1) != labels).sum()
                    loss += nn.functional.cross_entropy(logits, labels, reduction="sum").double()
                task.advance(1)
    finally:
        model.train(was_training)
    n = max(len(data), 1)
    totals = all_reduce(torch.stack([wrong.double(), loss]))
    return totals[0].item() / n, totals[1].item() / n

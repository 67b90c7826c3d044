"""The tanh logit head of Appendix A.1 ("pre-softmax sigmoid layer")."""

from __future__ import annotations

import torch
from torch import nn


class TanhHead(nn.Module):
    """BatchNorm over the logits without learnable affine parameters, then ``|t| * tanh(z / |t|)``.

    ``t`` is one learnable scalar shared by all logits, initialised to 1; its absolute value is used so the
    output range ``(-|t|, |t|)`` stays well defined whatever sign the optimiser gives it.
    """

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.norm = nn.BatchNorm1d(num_classes, affine=False)
        self.t = nn.Parameter(torch.ones(()))

    def forward(self, logits: torch.Tensor) -> torch.Tensor:
        scale = self.t.abs()
        return scale * torch.tanh(self.norm(logits) / scale)


class WithHead(nn.Sequential):
    """A body network followed by a logit head; ``body`` and ``head`` keep checkpoint keys readable."""

    def __init__(self, body: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.add_module("body", body)
        self.add_module("head", head)

"""The ``tanh-head`` primitive: adds the paper's tanh logit head (Appendix A.1) to the architecture."""

from __future__ import annotations

from torch import nn

from lipcli.api import DatasetInfo, TanhHead, WithHead


class TanhHeadDefence:
    """Wraps the model as ``WithHead(model, TanhHead)``; a model that already has the head is left alone."""

    def prepare_model(self, model: nn.Module, info: DatasetInfo) -> nn.Module:
        if isinstance(model, WithHead) and isinstance(model.head, TanhHead):
            return model
        return WithHead(model, TanhHead(info.num_classes))

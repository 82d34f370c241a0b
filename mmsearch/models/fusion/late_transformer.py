"""LF-Transformer: late fusion of per-modality pooled vectors through a small transformer."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from . import ModelOutput, register_fusion
from ._cls_transformer import CLSTransformerFusion


@register_fusion
class LateFusionTransformer(CLSTransformerFusion):
    """Each modality's pooled vector -> its own linear adapter (common width) + a learned
    modality-type embedding -> one token per modality behind a learned CLS token -> small pre-norm
    transformer -> head on CLS. The head reads a CLS token rather than the mean of the modality
    tokens so that attention can weigh the modalities per row (a mean gives each a fixed 1/k
    share), as in early fusion. The features (for alignment losses) are the adapter outputs before
    the type embedding: that embedding is a constant per-modality offset which alignment losses
    would otherwise have to learn to cancel."""
    name = "lf_transformer"
    reads = "pooled"

    @dataclass(frozen=True)
    class Config:
        width: int = 192
        layers: int = 3
        heads: int = 8
        dropout: float = 0.1

    def __init__(self, dims, n_out, *, width: int, layers: int, heads: int, dropout: float):
        super().__init__(dims, n_out)
        self.adapters = nn.ModuleDict({m: nn.Linear(dims[m][0], width) for m in self.modalities})
        self._add_cls_transformer(width=width, layers=layers, heads=heads, dropout=dropout, n_out=n_out)

    def forward(self, outputs, batch) -> ModelOutput:
        features = {m: self.adapters[m](outputs[m].pooled) for m in self.modalities}
        tokens = torch.stack([self.typed(i, features[m]) for i, m in enumerate(self.modalities)], dim=1)
        fused = self.cls_output([tokens])  # [B, width]: CLS over one token per modality
        return ModelOutput(logits=self.head(fused), features=features, fused=fused)

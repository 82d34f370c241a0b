"""LF-Transformer: late fusion of per-modality pooled vectors through a small transformer."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from . import Fusion, ModelOutput, register_fusion


@register_fusion
class LateFusionTransformer(Fusion):
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
        self.type_embedding = nn.Parameter(torch.randn(len(self.modalities), width) * 0.02)
        self.cls = nn.Parameter(torch.randn(width) * 0.02)
        layer = nn.TransformerEncoderLayer(width, heads, width * 4, dropout, batch_first=True, norm_first=True)
        self.transformer = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.head = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, n_out))

    def forward(self, outputs, batch) -> ModelOutput:
        features = {m: self.adapters[m](outputs[m].pooled) for m in self.modalities}
        tokens = torch.stack([features[m] + self.type_embedding[i] for i, m in enumerate(self.modalities)], dim=1)
        cls = self.cls.to(tokens.dtype).expand(tokens.shape[0], 1, -1)
        x = self.transformer(torch.cat([cls, tokens], dim=1))  # [B, 1 + modalities, width]
        return ModelOutput(logits=self.head(x[:, 0]), features=features, fused=x[:, 0])

"""LF-MLP: late fusion of per-modality pooled vectors with an MLP (the default fusion)."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from . import Fusion, ModelOutput, register_fusion


@register_fusion
class LateFusionMLP(Fusion):
    """Each modality's pooled vector -> its own linear adapter (common width) -> concatenated ->
    MLP head (hidden 128, dropout 0.1, leaky ReLU). Per-modality heads on the adapted vectors
    belong to the tricks that train them (modality_heads, gblend), not to the model."""
    name = "lf_mlp"
    reads = "pooled"

    @dataclass(frozen=True)
    class Config:
        adapter_dim: int = 128
        hidden: int = 128
        dropout: float = 0.1

    def __init__(self, dims, n_out, *, adapter_dim: int, hidden: int, dropout: float):
        super().__init__(dims, n_out)
        self.adapters = nn.ModuleDict({m: nn.Linear(dims[m][0], adapter_dim) for m in self.modalities})
        self.fused_dim = adapter_dim * len(self.modalities)  # the adapted vectors, concatenated
        self.feature_dim = adapter_dim
        self.head = nn.Sequential(
            nn.Linear(self.fused_dim, hidden), nn.LeakyReLU(), nn.Dropout(dropout), nn.Linear(hidden, n_out)
        )

    def forward(self, outputs, batch) -> ModelOutput:
        features = {m: self.adapters[m](outputs[m].pooled) for m in self.modalities}
        fused = torch.cat([features[m] for m in self.modalities], dim=-1)
        return ModelOutput(logits=self.head(fused), features=features, fused=fused)

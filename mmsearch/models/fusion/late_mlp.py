"""LF-MLP: late fusion of per-modality pooled vectors with an MLP (the default fusion)."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from . import Fusion, ModelOutput, register_fusion


@register_fusion
class LateFusionMLP(Fusion):
    """Each modality's pooled vector -> its own linear adapter (common width) -> concatenated ->
    MLP head (hidden 128, dropout 0.1, leaky ReLU). With per_modality_heads each adapted vector
    also gets its own head (used by Gradient Blending and per-modality losses)."""
    name = "lf_mlp"
    reads = "pooled"

    @dataclass(frozen=True)
    class Config:
        adapter_dim: int = 128
        hidden: int = 128
        dropout: float = 0.1
        per_modality_heads: bool = False

    def __init__(self, dims, n_out, *, adapter_dim: int, hidden: int, dropout: float, per_modality_heads: bool):
        super().__init__(dims, n_out)
        self.adapters = nn.ModuleDict({m: nn.Linear(dims[m][0], adapter_dim) for m in self.modalities})
        self.fused_dim = adapter_dim * len(self.modalities)  # the adapted vectors, concatenated
        self.head = nn.Sequential(
            nn.Linear(self.fused_dim, hidden), nn.LeakyReLU(), nn.Dropout(dropout), nn.Linear(hidden, n_out)
        )
        self.modality_heads = nn.ModuleDict(
            {m: nn.Linear(adapter_dim, n_out) for m in self.modalities} if per_modality_heads else {}
        )

    def forward(self, outputs, batch) -> ModelOutput:
        features = {m: self.adapters[m](outputs[m].pooled) for m in self.modalities}
        fused = torch.cat([features[m] for m in self.modalities], dim=-1)
        return ModelOutput(
            logits=self.head(fused),
            features=features,
            modality_logits={m: h(features[m]) for m, h in self.modality_heads.items()},
            fused=fused,
        )

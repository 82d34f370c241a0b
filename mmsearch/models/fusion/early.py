"""Early fusion: every modality's tokens through one shared transformer, prediction from its CLS."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..encoders import mean_pool
from . import Fusion, ModelOutput, register_fusion


@register_fusion
class EarlyFusion(Fusion):
    """Tokens of each modality -> linear projection to one width + a learned modality-type
    embedding -> concatenated behind a CLS token -> shared pre-norm transformer -> head on CLS.
    The per-modality features (for alignment losses) are each modality's mean projected token."""
    name = "early"
    reads = "tokens"

    @dataclass(frozen=True)
    class Config:
        width: int = 128
        layers: int = 2
        heads: int = 4
        dropout: float = 0.1
        max_tokens: int = 64  # per modality; longer token sequences are average-pooled down to this

    def __init__(self, dims, n_out, *, width: int, layers: int, heads: int, dropout: float, max_tokens: int):
        super().__init__(dims, n_out)
        self.max_tokens = max_tokens
        self.proj = nn.ModuleDict({m: nn.Linear(dims[m][1], width) for m in self.modalities})
        self.type_embedding = nn.Parameter(torch.randn(len(self.modalities), width) * 0.02)
        self.cls = nn.Parameter(torch.randn(width) * 0.02)
        layer = nn.TransformerEncoderLayer(width, heads, width * 4, dropout, batch_first=True, norm_first=True)
        self.transformer = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.head = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, n_out))

    def _shorten(self, tokens, mask):
        """Average-pool token sequences longer than max_tokens (e.g. large CNN feature maps)."""
        if tokens.shape[1] <= self.max_tokens:
            return tokens, mask
        pooled = nn.functional.adaptive_avg_pool1d(tokens.transpose(1, 2), self.max_tokens).transpose(1, 2)
        if mask is not None:
            mask = nn.functional.adaptive_max_pool1d(mask.float().unsqueeze(1), self.max_tokens).squeeze(1).bool()
        return pooled, mask

    def forward(self, outputs, batch) -> ModelOutput:
        seq, masks, features = [], [], {}
        for i, m in enumerate(self.modalities):
            tokens, mask = self._shorten(outputs[m].tokens, outputs[m].token_mask)
            if mask is None:
                mask = torch.ones(tokens.shape[:2], dtype=torch.bool, device=tokens.device)
            projected = self.proj[m](tokens) + self.type_embedding[i]
            features[m] = mean_pool(projected, mask)
            seq.append(projected)
            masks.append(mask)
        b = seq[0].shape[0]
        cls = self.cls.to(seq[0].dtype).expand(b, 1, -1)
        x = torch.cat([cls, *seq], dim=1)
        valid = torch.cat([torch.ones(b, 1, dtype=torch.bool, device=x.device), *masks], dim=1)
        x = self.transformer(x, src_key_padding_mask=~valid)
        return ModelOutput(logits=self.head(x[:, 0]), features=features, fused=x[:, 0])

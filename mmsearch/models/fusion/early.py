"""Early fusion: every modality's tokens through one shared transformer, prediction from its CLS."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..encoders import mean_pool
from . import ModelOutput, register_fusion
from ._cls_transformer import CLSTransformerFusion


@register_fusion
class EarlyFusion(CLSTransformerFusion):
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
        self._add_cls_transformer(width=width, layers=layers, heads=heads, dropout=dropout, n_out=n_out)

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
            projected = self.typed(i, self.proj[m](tokens))
            features[m] = mean_pool(projected, mask)
            seq.append(projected)
            masks.append(mask)
        fused = self.cls_output(seq, masks)
        return ModelOutput(logits=self.head(fused), features=features, fused=fused)

"""The part early fusion and LF-Transformer share: modality tokens (each with a learned type
embedding) behind a learned CLS token, through one pre-norm transformer, a head on the CLS output."""
from __future__ import annotations

import torch
from torch import nn

from . import Fusion


class CLSTransformerFusion(Fusion):
    def _add_cls_transformer(self, *, width: int, layers: int, heads: int, dropout: float, n_out: int) -> None:
        """Build the shared modules (called by the subclass after its own adapters, so parameter
        names and initialisation order stay those of each fusion)."""
        self.type_embedding = nn.Parameter(torch.randn(len(self.modalities), width) * 0.02)
        self.cls = nn.Parameter(torch.randn(width) * 0.02)
        layer = nn.TransformerEncoderLayer(width, heads, width * 4, dropout, batch_first=True, norm_first=True)
        self.transformer = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.head = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, n_out))
        self.fused_dim = width  # the CLS output
        self.feature_dim = width  # each modality's features: projected to the same width

    def typed(self, i: int, tokens: torch.Tensor) -> torch.Tensor:
        """Tokens of the i-th modality (self.modalities order) with its type embedding added."""
        return tokens + self.type_embedding[i]

    def cls_output(self, seq: list[torch.Tensor], masks: list[torch.Tensor] | None = None) -> torch.Tensor:
        """[B, width]: the transformer's CLS output over the typed token sequences seq ([B, T_i,
        width] each), padding excluded where masks ([B, T_i], True = a real token) are given."""
        b = seq[0].shape[0]
        x = torch.cat([self.cls.to(seq[0].dtype).expand(b, 1, -1), *seq], dim=1)
        if masks is None:
            return self.transformer(x)[:, 0]
        valid = torch.cat([torch.ones(b, 1, dtype=torch.bool, device=x.device), *masks], dim=1)
        return self.transformer(x, src_key_padding_mask=~valid)[:, 0]

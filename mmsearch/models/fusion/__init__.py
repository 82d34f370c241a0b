"""Fusion registry: how per-modality encoder outputs become one prediction."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import nn

from ...registry import FUSIONS
from ..encoders import Reads

register_fusion = FUSIONS.register


@dataclass
class ModelOutput:
    logits: torch.Tensor                                   # [B, n_out]: the fused prediction
    features: dict[str, torch.Tensor]                      # modality -> [B, d] after the fusion adapters
    modality_logits: dict[str, torch.Tensor] = field(default_factory=dict)  # per-modality heads, if any
    fused: torch.Tensor | None = None                      # the fused hidden vector (feature-level tricks)


class Fusion(nn.Module):
    name: ClassVar[str]
    # the encoder output it consumes: encoders are told (BuildContext.fusion_reads) and build only
    # the parameters on that path, so every parameter gets a gradient (DDP requires it)
    reads: ClassVar[Reads]

    def __init__(self, dims: dict[str, tuple[int, int]], n_out: int):
        """dims: modality -> (pooled dim, token dim) of its encoder output."""
        super().__init__()
        self.modalities = sorted(dims)



"""Fusion registry: how per-modality encoder outputs become one prediction."""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from ...registry import FUSIONS
from ..encoders import Reads

register_fusion = FUSIONS.register


@dataclass
class ModelOutput:
    logits: torch.Tensor                                   # [B, n_out]: the fused prediction
    features: dict[str, torch.Tensor]                      # modality -> [B, fusion.feature_dim] after the adapters
    fused: torch.Tensor | None = None                      # [B, fusion.fused_dim]: logits = fusion.head(fused)


class Fusion(nn.Module):
    """Base class of every fusion. The contract feature-level tricks rely on (manifold_mixup mixes
    the head's input, lemda feeds it augmented vectors): ``forward`` computes one hidden vector
    per row, ``fused`` [B, ``fused_dim``], and returns ``logits = self.head(fused)``, computed by
    exactly one call of ``head``; ``head`` is a module of its own (fused -> logits) with no other
    input, so calling it on a changed fused vector gives the prediction for that vector.
    tests/test_models.py checks this for every registered fusion."""
    name: ClassVar[str]
    # the encoder output it consumes: encoders are told (BuildContext.fusion_reads) and build only
    # the parameters on that path, so every parameter gets a gradient (DDP requires it)
    reads: ClassVar[Reads]
    # fitted once by fit() instead of trained by gradients (the loop's gradient-free path; no trick applies)
    fits_itself: ClassVar[bool] = False
    # reads the batch's tabular columns itself: no tabular encoder is built
    reads_raw_tabular: ClassVar[bool] = False
    head: nn.Module   # fused [B, fused_dim] -> logits [B, n_out]
    fused_dim: int    # the width of ModelOutput.fused
    feature_dim: int  # the width of each modality's ModelOutput.features (per-modality heads read them)

    def __init__(self, dims: dict[str, tuple[int, int]], n_out: int):
        """dims: modality -> (pooled dim, token dim) of its encoder output."""
        super().__init__()
        self.modalities = sorted(dims)



from __future__ import annotations

import itertools
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from . import Trick, register_trick


@register_trick
class KLAlignment(Trick):
    """Positive-only cross-modal alignment: with P_i = softmax(f_i) of each modality's feature
    after the fusion adapters, add weight * mean over ordered pairs i != j of KL(P_j || P_i).
    Gradients flow into both modalities. Zero when the modalities agree.

    What is aligned: the adapter features (``out.features``: LF-MLP's adapted pooled vectors, early
    fusion's mean projected tokens), softmax-ed over the feature width, not the per-modality
    predictions. That is the definition in tricks.md ("Cross-modal alignment"), which follows the
    paper's AutoGluon implementation. Predictions would also be the wrong thing here: they need a
    head per modality, which only the modality_heads / gblend tricks build, while every fusion
    gives features; and a regression head's single output has a
    softmax of 1, so its KL would always be 0."""
    name = "align_kl"

    @dataclass(frozen=True)
    class Config:
        weight: float = 1.0

    space = {"weight": {"loguniform": [0.1, 3.0]}}

    def on_loss(self, loss, out, batch, state):
        term = kl_alignment_loss(out.features)
        state.log("align_kl", term.item())
        return loss + self.config.weight * term


def kl_alignment_loss(features: dict[str, torch.Tensor]) -> torch.Tensor:
    logp = {m: F.log_softmax(f.float(), dim=-1) for m, f in features.items()}
    pairs = list(itertools.permutations(logp, 2))
    if not pairs:
        return next(iter(features.values())).sum() * 0.0
    # KL(P_j || P_i) = sum P_j (log P_j - log P_i), averaged over rows
    terms = [F.kl_div(logp[i], logp[j], log_target=True, reduction="batchmean") for i, j in pairs]
    return torch.stack(terms).mean()

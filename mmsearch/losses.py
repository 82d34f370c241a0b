"""The task loss: one definition for the training loop, evaluation and the tricks that train on
changed features (manifold_mixup, lemda). Torch only, so tricks can import it without reaching up
into the training package."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def task_loss(logits: torch.Tensor, labels: torch.Tensor, problem_type: str) -> torch.Tensor:
    """Mean over rows: MSE on the single output for regression, cross-entropy otherwise."""
    logits = logits.float()
    if problem_type == "regression":
        return F.mse_loss(logits.squeeze(-1), labels.float())
    return F.cross_entropy(logits, labels)  # labels may also be soft targets [B, C]

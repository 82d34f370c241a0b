"""One linear head per modality on the fusion's per-modality features, owned by a trick.

Shared by modality_heads (uniform loss weights) and gblend (weights from the overfitting-to-
generalization ratio). The heads are the trick's, not the model's: the optimizer gets their
parameters through param_groups, the trick's state_dict checkpoints them, and the exported model
(and bundle) never carries them, since nothing predicts with them after training.
"""
from __future__ import annotations

import torch
from torch import nn

from ..losses import task_loss
from ._base import ParamSpec, TrainState

FUSED = "fused"  # the key of the fused prediction next to the modality heads' keys


class ModalityHeads(nn.Module):
    def __init__(self, modalities: list[str], feature_dim: int, n_out: int):
        super().__init__()
        self.heads = nn.ModuleDict({m: nn.Linear(feature_dim, n_out) for m in modalities})

    @classmethod
    def for_model(cls, model: nn.Module, device: torch.device) -> "ModalityHeads":
        fusion = model.fusion
        return cls(list(fusion.modalities), fusion.feature_dim, model.view.schema.n_outputs).to(device)

    def losses(self, out, labels: torch.Tensor, problem_type: str) -> dict[str, torch.Tensor]:
        """modality -> task loss of its head on the batch (every row: a row without the modality has
        the missing representation, from which the head can only learn the prior)."""
        return {m: task_loss(head(out.features[m]), labels, problem_type) for m, head in self.heads.items()}

    def param_specs(self, prefix: str, params: list[ParamSpec]) -> list[ParamSpec]:
        """Specs for the heads' parameters at depth 0 (with the fusion head), weight decay as the
        model's weights (biases none)."""
        decay = max((p.weight_decay for p in params), default=0.0)
        return [ParamSpec(f"{prefix}.{name}", p, depth=0, weight_decay=decay if p.ndim > 1 else 0.0, fresh=True)
                for name, p in self.named_parameters()]

    def average_gradients(self, state: TrainState) -> None:
        """Under DDP: the heads are outside the DDP-wrapped model, so their gradients are averaged
        here (every rank, every step)."""
        if state.world_size > 1 and torch.distributed.is_available() and torch.distributed.is_initialized():
            for p in self.parameters():
                if p.grad is None:
                    p.grad = torch.zeros_like(p)
                torch.distributed.all_reduce(p.grad)
                p.grad /= state.world_size


def unwrapped(model: nn.Module) -> nn.Module:
    """The model inside a DDP wrapper (or the model)."""
    return getattr(model, "module", model)

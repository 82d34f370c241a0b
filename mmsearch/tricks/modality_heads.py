from __future__ import annotations

from dataclasses import dataclass

from . import Trick, register_trick
from ._heads import ModalityHeads as Heads


@register_trick
class ModalityHeads(Trick):
    """One linear head per modality on the fusion's per-modality features (``out.features``), each
    trained on the task: loss = fused task loss + weight * sum over modalities of the head's task
    loss. Every modality's encoder then gets a gradient that does not depend on the others, which
    keeps a modality the fused head learns to ignore from going untrained. The heads are training-
    only (see tricks/_heads.py): the exported model has none. gblend supersedes it (same heads,
    weights from the overfitting-to-generalization ratio instead of uniform ones)."""
    name = "modality_heads"

    @dataclass(frozen=True)
    class Config:
        weight: float = 1.0  # of each modality head's loss (the fused loss has weight 1)

    space = {"weight": {"choice": [0.5, 1.0]}}

    heads: Heads | None = None

    def configure_model(self, model, state):
        self.heads = Heads.for_model(model, state.device)
        return model

    def param_groups(self, params, state):
        return [*params, *self.heads.param_specs(self.name, params)]

    def on_loss(self, loss, out, batch, state):
        losses = self.heads.losses(out, batch["label"], state.problem_type)
        for m, value in losses.items():
            state.log(f"modality_heads_loss_{m}", value.item())
        return loss + self.config.weight * sum(losses.values())

    def before_step(self, model, state) -> None:
        self.heads.average_gradients(state)

    def state_dict(self):
        return {"heads": {k: v.detach().cpu() for k, v in self.heads.state_dict().items()}}

    def load_state_dict(self, state) -> None:
        self.heads.load_state_dict(state["heads"])  # copies in place: the optimizer holds these parameters

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..data.batch import present
from . import ParamSpec, Trick, register_trick

INIT_LOGIT_SCALE = 1 / 0.07  # CLIP's initial temperature
MAX_LOGIT_SCALE = 100.0      # CLIP's clamp: a larger scale makes the softmax one-hot and training unstable


@register_trick
class InfoNCEAlignment(Trick):
    """Positive + negative cross-modal alignment (InfoNCE, as CLIP). For each unordered pair of
    modalities (a, b) of the per-modality features after the fusion adapters (``out.features``):
    L2-normalise both, logits = scale * f_a @ f_b.T over the batch, and the symmetric cross-entropy
    (rows a->b and columns b->a) with the diagonal (the same row) as the target; the mean over
    pairs, times ``weight``, is added to the loss. ``scale`` = exp(a learnable log-scale),
    initialised to 1/0.07 and kept <= 100 (the parameter is clamped in place, as CLIP does).

    The temperature is the trick's own parameter, not the model's: ``param_groups`` adds it to the
    optimizer (no weight decay), ``state_dict`` saves it with every epoch checkpoint, so a resumed
    trial continues with it. It stays out of the model on purpose: the exported weights are then
    those of a model built from the config alone, which the bundle loads strictly and which needs
    no temperature to predict.

    Edge cases:
    * DDP: the negatives are this worker's batch only (optim.batch_size / workers rows), not
      gathered across workers. The loss is then the same as a single-process run on that batch,
      with no extra communication per step; gathering would give more negatives but needs a
      gradient-carrying all_gather. The temperature is outside the DDP-wrapped model, so
      ``before_step`` averages its gradient over the workers itself (every rank, every step,
      so the collective never waits on a rank that skipped the term).
    * Rows: a pair uses only the rows that have both modalities (``data.batch.present``): a missing
      modality's feature is the same "missing" vector in every row, a negative that cannot be told
      apart from the positive. With fewer than 2 such rows (e.g. batch size 1) there are no
      negatives and the pair is skipped; with no pair left (a single modality) the trick adds
      nothing and logs nothing.
    * Rows whose inputs are identical (duplicates in the table) are still false negatives: the
      loss pushes their features apart although they match. Not handled; with a reasonable batch
      they are rare, and the term's small weight (~0.1) bounds the harm.
    """
    name = "align_infonce"

    @dataclass(frozen=True)
    class Config:
        weight: float = 0.1

    space = {"weight": {"loguniform": [0.03, 0.3]}}

    def __init__(self, config):
        super().__init__(config)
        self.log_scale = nn.Parameter(torch.tensor(math.log(INIT_LOGIT_SCALE)))  # usable before a run (param_groups)

    def param_groups(self, params, state):
        # built afresh for each run (a resume restores its value through load_state_dict)
        self.log_scale = nn.Parameter(torch.tensor(math.log(INIT_LOGIT_SCALE), device=state.device))
        return [*params, ParamSpec(f"{self.name}.log_scale", self.log_scale, depth=0, weight_decay=0.0, fresh=True)]

    def on_loss(self, loss, out, batch, state):
        features = {m: (f, present(batch, m)) for m, f in out.features.items()}
        term = infonce_alignment_loss(features, self.logit_scale())
        if term is None:
            return loss
        state.log("align_infonce", term.item())
        return loss + self.config.weight * term

    def before_step(self, model, state) -> None:
        if state.world_size > 1 and torch.distributed.is_available() and torch.distributed.is_initialized():
            if self.log_scale.grad is None:
                self.log_scale.grad = torch.zeros_like(self.log_scale)
            torch.distributed.all_reduce(self.log_scale.grad)
            self.log_scale.grad /= state.world_size

    def logit_scale(self) -> torch.Tensor:
        """The scale to use now. Clamps the parameter itself first, as CLIP does after each step: a
        clamp of the value instead would pass no gradient above 100 and could hold it there."""
        with torch.no_grad():
            self.log_scale.clamp_(max=math.log(MAX_LOGIT_SCALE))
        return self.log_scale.exp()

    def state_dict(self):
        return {"log_scale": self.log_scale.detach().cpu()}

    def load_state_dict(self, state) -> None:
        with torch.no_grad():  # in place: the optimizer holds this very parameter
            self.log_scale.copy_(state["log_scale"])


def infonce_alignment_loss(features: dict[str, tuple[torch.Tensor, torch.Tensor]], logit_scale: torch.Tensor) -> torch.Tensor | None:
    """Mean over modality pairs of the symmetric InfoNCE loss; features: modality -> ([B, d]
    features, bool [B] rows that have the modality). None when no pair has 2 common rows."""
    terms = []
    for (fa, ha), (fb, hb) in itertools.combinations(features.values(), 2):
        rows = ha & hb
        if int(rows.sum()) < 2:
            continue
        a = F.normalize(fa[rows].float(), dim=-1)
        b = F.normalize(fb[rows].float(), dim=-1)
        logits = logit_scale.float() * a @ b.T
        target = torch.arange(len(logits), device=logits.device)
        terms.append(0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)))
    return torch.stack(terms).mean() if terms else None

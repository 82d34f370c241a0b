from __future__ import annotations

from dataclasses import dataclass

import torch

from ..data import batch as inputs
from . import Stage, Trick, register_trick


@register_trick
class ModalityDropout(Trick):
    """During training only, blank each modality of each row with probability p: the image
    becomes missing, the text empty, numbers missing, categories the reserved "missing" id; the
    encoders then give the row the missing representation of model.missing (the imputed one, or
    the learned one). With keep_one (default) a row never loses every modality it has: when
    all of a row's present modalities are drawn, one of them, chosen at random, is kept, so no
    row becomes pure noise. Rows that had a single modality keep it."""
    name = "modality_dropout"
    stage = Stage.INPUTS  # before tricks that read which inputs a row has

    @dataclass(frozen=True)
    class Config:
        p: float = 0.3
        keep_one: bool = True

    space = {"p": {"uniform": [0.1, 0.5]}}

    def on_batch(self, batch: dict, state) -> dict:
        modalities = [m for m in inputs.carried(batch) if not state.modalities or m in state.modalities]
        if not modalities:
            return batch
        device = batch["index"].device
        has = torch.stack([inputs.present(batch, m) for m in modalities], 1).cpu()  # [B, M]
        drop = (torch.rand(has.shape, generator=state.generator) < self.config.p) & has
        if self.config.keep_one:
            lost_all = has.any(1) & ~(has & ~drop).any(1)
            # one of the row's present modalities, uniformly: the argmax of random scores over them
            pick = torch.rand(has.shape, generator=state.generator).masked_fill(~has, -1.0).argmax(1)
            drop[lost_all, pick[lost_all]] = False
        for j, m in enumerate(modalities):
            if drop[:, j].any():
                batch = inputs.without(batch, m, drop[:, j].to(device))
        state.log("modality_dropped", float(drop.sum() / has.sum().clamp_min(1)))
        return batch

from __future__ import annotations

from dataclasses import dataclass

import torch

from . import Trick, register_trick


@register_trick
class GradClip(Trick):
    """Clip the global gradient norm (over all trainable parameters) before each step."""
    name = "grad_clip"

    @dataclass(frozen=True)
    class Config:
        max_norm: float = 1.0

    space = {"max_norm": {"choice": [0.5, 1.0, 5.0]}}

    def before_step(self, model, state) -> None:
        params = [p for p in model.parameters() if p.grad is not None]
        norm = torch.nn.utils.clip_grad_norm_(params, self.config.max_norm)
        state.log("grad_norm", float(norm))  # the norm before clipping

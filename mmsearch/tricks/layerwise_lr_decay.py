from __future__ import annotations

from dataclasses import dataclass

from . import ParamSpec, Trick, register_trick


@register_trick
class LayerwiseLRDecay(Trick):
    """lr * decay**depth: fusion and heads (depth 0) keep the base lr, an encoder's top block
    gets decay, the next decay**2, ..., its embeddings the smallest. Each encoder tower counts its
    own depths (see Encoder.layer_depths)."""
    name = "layerwise_lr_decay"

    @dataclass(frozen=True)
    class Config:
        decay: float = 0.9

    space = {"decay": {"uniform": [0.7, 0.95]}}

    def param_groups(self, params: list[ParamSpec], state) -> list[ParamSpec]:
        for p in params:
            p.lr_scale *= self.config.decay ** p.depth
        return params

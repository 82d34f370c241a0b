"""Per-parameter optimizer settings (tricks adjust them), AdamW groups, the base LR schedule."""
from __future__ import annotations

import math
from collections import defaultdict

import torch
from torch import nn

from ..models.encoders import LEARNED_MISSING
from ..tricks import ParamSpec, Schedule


def param_specs(model: nn.Module, weight_decay: float) -> list[ParamSpec]:
    """Every trainable parameter with its depth from the output (fusion/heads 0; an encoder's
    top layer 1, ..., its embeddings deepest), its weight decay (none on biases, norms,
    embeddings and learned missing-input representations, which decay would only shrink) and
    whether it is fresh (outside the encoders, or an encoder's fresh_parameters)."""
    depth: dict[str, int] = {}
    fresh: set[str] = set()
    for slot, encoder in model.encoders.items():
        depth.update({f"encoders.{slot}.{name}": d for name, d in encoder.layer_depths().items()})
        fresh.update(f"encoders.{slot}.{name}" for name in encoder.fresh_parameters())
    specs = []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        in_encoder = name.startswith("encoders.")
        d = depth.get(name, 1 if in_encoder else 0)
        no_decay = p.ndim <= 1 or name.endswith(".bias") or "embed" in name.lower() or f".{LEARNED_MISSING}" in name
        specs.append(ParamSpec(name, p, d, 0.0 if no_decay else weight_decay, fresh=not in_encoder or name in fresh))
    return specs


def make_optimizer(specs: list[ParamSpec], lr: float, head_lr_mult: float = 1.0) -> torch.optim.Optimizer:
    """AdamW with one group per (lr scale, weight decay). A parameter's lr scale is its spec's
    (as the tricks left it) times head_lr_mult when it is fresh: the multiplier composes with
    layer-wise decay, and the schedule (warmup, cosine) scales every group alike."""
    groups: dict[tuple[float, float], list] = defaultdict(list)
    for s in specs:
        groups[(s.lr_scale * (head_lr_mult if s.fresh else 1.0), s.weight_decay)].append(s.param)
    return torch.optim.AdamW(
        [{"params": ps, "lr": lr * scale, "weight_decay": wd, "lr_scale": scale} for (scale, wd), ps in sorted(groups.items())],
        lr=lr,
    )


def base_schedule(kind: str, total_steps: int) -> Schedule:
    if kind == "constant":
        return lambda step: 1.0
    return lambda step: 0.5 * (1.0 + math.cos(math.pi * min(step, total_steps) / max(1, total_steps)))

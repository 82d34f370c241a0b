from __future__ import annotations

from dataclasses import dataclass

from . import Schedule, Trick, register_trick


@register_trick
class LRWarmup(Trick):
    """Linear warmup from 0 over the first `fraction` of all steps; the base schedule (cosine
    decay to 0 by default) then runs over the remaining steps."""
    name = "lr_warmup"

    @dataclass(frozen=True)
    class Config:
        fraction: float = 0.1

    space = {"fraction": {"uniform": [0.05, 0.2]}}

    def lr_schedule(self, schedule: Schedule, total_steps: int) -> Schedule:
        warm = max(1, int(round(self.config.fraction * total_steps)))
        rest = max(1, total_steps - warm)

        def warmed(step: int) -> float:
            if step < warm:
                return (step + 1) / warm  # never 0: the first step already learns a little
            return schedule(int((step - warm) * total_steps / rest))

        return warmed

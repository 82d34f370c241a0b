"""What tricks can see and change during a run."""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Callable

import torch


@dataclass
class TrainState:
    problem_type: str
    device: torch.device
    generator: torch.Generator            # CPU generator for tricks' randomness (seeded per rank)
    evaluate: Callable[[torch.nn.Module], float]  # validation score of a model, higher is better
    rank: int = 0
    world_size: int = 1
    epoch: int = 0                        # the epoch being trained / just finished (1-based)
    step: int = 0                         # optimizer steps done
    total_steps: int = 0
    val_score: float | None = None        # the latest validation score
    loss_weights: dict[str, float] = field(default_factory=dict)  # "fused" / modality -> weight (default 1)
    info: dict[str, Any] = field(default_factory=dict)            # facts for the final metrics
    _logs: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))

    def log(self, key: str, value: float) -> None:
        """A per-step quantity; its epoch mean is reported with the epoch's metrics."""
        self._logs[key].append(value)

    def pop_logs(self) -> dict[str, float]:
        out = {k: sum(v) / len(v) for k, v in self._logs.items() if v}
        self._logs.clear()
        return out

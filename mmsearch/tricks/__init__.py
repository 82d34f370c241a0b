"""The trick registry and the hooks a trick may implement.

The training loop calls hooks, never trick names: adding a trick = adding one file here (and a
line in a search space). A trick file holds its Config dataclass, its default search dimensions
(`space`, in the search-space YAML syntax) and its hook methods.
"""
from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass
from typing import Any, Callable, ClassVar

import torch
from torch import nn

from ..registry import TRICKS

register_trick = TRICKS.register
Schedule = Callable[[int], float]  # optimizer step -> learning-rate factor


@dataclass
class ParamSpec:
    """One parameter and how the optimizer treats it. `depth` counts layers from the output:
    fusion and heads 0, an encoder's top block 1, ..., its embeddings deepest."""
    name: str
    param: nn.Parameter
    depth: int
    weight_decay: float
    lr_scale: float = 1.0


class Trick:
    name: ClassVar[str]
    Config: ClassVar[type]
    space: ClassVar[dict[str, Any]] = {}  # default search dimensions of the trick's parameters
    order: ClassVar[int] = 100            # hooks of several tricks run by (order, name)

    def __init__(self, config: Any):
        self.config = config

    # -- hooks: each default leaves training unchanged --------------------------------------------
    def configure_model(self, model: nn.Module, state) -> nn.Module:
        """Once, after the model is built and before the optimizer exists."""
        return model

    def param_groups(self, params: list[ParamSpec], state) -> list[ParamSpec]:
        """Adjust per-parameter learning-rate scale / weight decay before the optimizer is built."""
        return params

    def lr_schedule(self, schedule: Schedule, total_steps: int) -> Schedule:
        """Wrap the learning-rate factor schedule."""
        return schedule

    def on_batch(self, batch: dict, state) -> dict:
        """Each training batch (on the device) before the forward pass. Never called at eval."""
        return batch

    def on_loss(self, loss: torch.Tensor, out, batch: dict, state) -> torch.Tensor:
        """Each training step's loss, after the task loss."""
        return loss

    def before_step(self, model: nn.Module, state) -> None:
        """After backward (gradients are all-reduced under DDP), before the optimizer step."""

    def on_epoch_end(self, model: nn.Module, state) -> None:
        """After each epoch's validation (state.val_score is set)."""

    def after_fit(self, model: nn.Module, state) -> nn.Module:
        """Once, after the last epoch; may return different weights (e.g. a soup)."""
        return model

    # -- checkpointing of the trick's own state (loaded with torch.load(weights_only=True)) ------
    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


def build_tricks(enabled: dict[str, Any]) -> list[Trick]:
    tricks = [TRICKS.get(name)(conf) for name, conf in enabled.items()]
    return sorted(tricks, key=lambda t: (t.order, t.name))


for _m in pkgutil.iter_modules(__path__):  # every module here registers one trick
    importlib.import_module(f"{__name__}.{_m.name}")

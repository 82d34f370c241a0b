"""The tricks: one module per trick, registered under the module's name.

The training loop calls hooks (see _base.py for the contract), never trick names: adding a trick =
adding one module here (and a line in a search space). The registry imports the modules of this
package on first use.
"""
from __future__ import annotations

from typing import Any

from ..registry import TRICKS
from ._base import ParamSpec, Schedule, Stage, TrainState, Trick

__all__ = ["ParamSpec", "Schedule", "Stage", "TrainState", "Trick", "build_tricks", "register_trick", "row_hooks"]

register_trick = TRICKS.register


def build_tricks(enabled: dict[str, Any]) -> list[Trick]:
    """The enabled tricks (name -> Config instance), in the order their hooks run; a trick that
    another enabled one supersedes is left out."""
    replaced = {old for name in enabled for old in TRICKS.get(name).supersedes}
    tricks = [TRICKS.get(name)(conf) for name, conf in enabled.items() if name not in replaced]
    return sorted(tricks, key=lambda t: (t.stage, t.name))


def row_hooks(tricks: list[Trick]) -> list:
    """The augment_row hooks of the tricks that override it, in hook order: the training set runs
    them per row (and, when there are none, makes its items without building rows)."""
    return [t.augment_row for t in tricks if type(t).augment_row is not Trick.augment_row]

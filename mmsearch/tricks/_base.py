"""The hook contract between the training loop and the tricks.

A trick is a class with a ``name`` (its module's name), a frozen ``Config`` dataclass, default
search dimensions (``space``) and any of the hooks below. Every hook has a default that leaves
training unchanged, so a trick overrides only the one or two it needs. The loop (train/loop.py)
calls the hooks of all enabled tricks in the order of ``Trick.stage``, then name, at these points
of a trial's life:

    configure_view                                          once, before the model is built
    configure_model -> training_rows -> param_groups -> lr_schedule
                                                            once, before the first epoch
    per epoch:  per training row, in the data loader:  augment_row
                per training step: on_batch -> (forward) -> on_loss -> (backward) -> before_step
                after validation:  on_epoch_end
    after_fit                                               once, after the last epoch

A resumed trial (restart after a crash, `mmsearch resume`) runs the once-before hooks again on a
freshly built model, then restores the trick's ``state_dict`` from the checkpoint.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from enum import IntEnum
from typing import TYPE_CHECKING, Any, Callable, ClassVar

import torch
from torch import nn

if TYPE_CHECKING:  # tricks sit below the models in the import graph: types only
    import numpy as np

    from ..data.row import Row
    from ..data.view import TableView
    from ..models.fusion import ModelOutput

Schedule = Callable[[int], float]  # optimizer step (0-based) -> learning-rate factor


class Stage(IntEnum):
    """Where a trick's hooks run relative to other tricks' (same stage: by name)."""
    INPUTS = 0         # changes which inputs a row has (e.g. modality dropout): before tricks that read them
    DEFAULT = 1
    FINAL_WEIGHTS = 2  # decides the final weights in after_fit (e.g. the soup): after every other trick


@dataclass
class ParamSpec:
    """One trainable parameter and how the optimizer treats it. `depth` counts layers from the
    output: fusion and heads 0, an encoder's top block 1, ..., its embeddings deepest. `fresh`:
    not loaded from pretrained weights (fusion, heads, a tower trained from scratch, a learned
    missing input, a trick's own parameters); the optimizer's lr of a parameter is
    optim.lr * lr_scale, times optim.head_lr_mult when fresh."""
    name: str
    param: nn.Parameter
    depth: int
    weight_decay: float
    lr_scale: float = 1.0
    fresh: bool = False


@dataclass
class TrainState:
    """What tricks can see (and, where said, change) during a run. One per worker process."""
    problem_type: str                     # binary | multiclass | regression
    device: torch.device
    generator: torch.Generator            # CPU generator for tricks' randomness, seeded per (epoch, rank)
    evaluate: Callable[[nn.Module], float]  # validation score of a model, higher is better
    modalities: tuple[str, ...] = ()      # the modalities the model encodes ("image", "text", "tabular")
    rank: int = 0
    world_size: int = 1
    epoch: int = 0                        # the epoch being trained / just finished (1-based)
    step: int = 0                         # optimizer steps done
    total_steps: int = 0
    val_score: float | None = None        # the latest validation score (set before on_epoch_end)
    seed: int = 0                         # train.seed
    lr: float = 0.0                       # optim.lr, the optimizer's base learning rate
    steps_per_epoch: int = 0              # optimizer steps per epoch (set before param_groups)
    # the weight of the fused prediction's task loss (the loop's loss is fused_loss_weight * task
    # loss). Gradient Blending sets it; a trick that adds a loss on the fused prediction (mixup,
    # lemda) scales that loss by it too
    fused_loss_weight: float = 1.0
    # loader(rows, shuffle=None): a DataLoader over rows of the training part (positions, as
    # training_rows gets them) in evaluation batches, without augmentation, in order or shuffled
    # by the generator `shuffle`: for tricks that measure or train on training rows (gblend)
    loader: Callable[..., Any] | None = None
    autocast: Callable[[], Any] | None = None  # the trial's autocast context (precision), for such measurements
    info: dict[str, Any] = field(default_factory=dict)            # facts for the final report (JSON values)
    _logs: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))

    def log(self, key: str, value: float) -> None:
        """A per-step quantity; its epoch mean is reported with the epoch's metrics."""
        self._logs[key].append(value)

    def pop_logs(self) -> dict[str, float]:
        out = {k: sum(v) / len(v) for k, v in self._logs.items() if v}
        self._logs.clear()
        return out


class Trick:
    """Base class of every trick. Subclasses set ``name``, ``Config`` and optionally ``space``
    and ``stage``, and override the hooks they need."""
    name: ClassVar[str]
    Config: ClassVar[type]
    space: ClassVar[dict[str, Any]] = {}  # default search dimensions of the trick's parameters
    stage: ClassVar[Stage] = Stage.DEFAULT
    # tricks this one replaces when both are enabled (e.g. gblend brings its own modality heads):
    # those are not built at all
    supersedes: ClassVar[tuple[str, ...]] = ()

    def __init__(self, config: Any):
        self.config = config

    # -- once, before the model is built --------------------------------------------------------
    def configure_view(self, view: "TableView") -> "TableView":
        """Change what the model sees of the table (which columns the tabular tower reads, what
        the text encoder reads); the model is built for the returned view. A function of the
        trick's config alone: an exported bundle calls it again to predict, so a row is seen
        identically at train and predict time."""
        return view

    # -- once, before training ------------------------------------------------------------------
    def configure_model(self, model: nn.Module, state: TrainState) -> nn.Module:
        """Once, after the model is built (on the CPU, before DDP wrapping and before the
        optimizer exists). May change the model in place or return another one; the returned
        model is the one trained, checkpointed and exported. May also register hooks on the
        model's modules (they fire inside a DDP wrapper too, which wraps these very modules; e.g.
        manifold_mixup on the fusion's head), or build modules of the trick's own on
        ``state.device`` with an optimizer of their own (lemda's augmenter), which the trick then
        steps in before_step and saves in its ``state_dict``."""
        return model

    def training_rows(self, rows: "np.ndarray", state: TrainState) -> "np.ndarray":
        """Once, after configure_model and before the training set is built: the positions (within
        the training part) of the rows to train on. Return a subset to hold some training rows out
        of the optimizer's reach (gblend's slice V); never the validation rows, which select
        models. A function of the config and ``state.seed`` alone: a resumed trial and every DDP
        rank must get the same rows."""
        return rows

    def param_groups(self, params: list[ParamSpec], state: TrainState) -> list[ParamSpec]:
        """Once, before the optimizer is built. May change each spec's ``lr_scale`` and
        ``weight_decay`` in place (or return new specs); the optimizer's groups are built from the
        returned list. Every trainable parameter must stay in it exactly once. A trick may append
        parameters of its own that are not the model's (e.g. a learnable temperature); it then
        saves them in its ``state_dict`` and, under DDP, averages their gradients in before_step."""
        return params

    def lr_schedule(self, schedule: Schedule, total_steps: int) -> Schedule:
        """Once, before training: wrap the learning-rate factor schedule (step -> factor of each
        group's lr). Return the schedule to use; do not call it with side effects."""
        return schedule

    # -- each training row, in the data loader ------------------------------------------------------
    def augment_row(self, row: "Row", rng: "np.random.Generator") -> "Row":
        """Each training row, each epoch, when the dataset makes the row's item (in the DataLoader's
        worker processes when train.loader_workers > 0, else in the training process); never for
        validation, holdout or predict rows. Return the row to train on: values may change (in
        place or replaced, same shapes and dtypes), presence never (the dataset keeps its masks: a
        missing input stays missing). Draw all randomness from `rng`, seeded from (train.seed,
        epoch, the row's index), so that a row's augmentation does not depend on the worker, the
        batch or an interruption (a resumed trial sees what an uninterrupted one would have); an
        op that draws from torch's global generator runs under ``torch.random.fork_rng`` seeded
        from `rng`. Runs in other processes: what the trick stores on itself here is neither seen
        by the training process nor checkpointed. Only tricks that override it are called."""
        return row

    # -- each training step ------------------------------------------------------------------------
    def on_batch(self, batch: dict, state: TrainState) -> dict:
        """Each training batch, on the device, before the forward pass; never at evaluation.
        Return the batch to train on. Take a copy (``dict(batch)``, new tensors) before changing
        anything: the loader may reuse the tensors. Read and change the batch's inputs through
        the helpers in mmsearch.data.batch, which know its keys."""
        return batch

    def on_loss(self, loss: torch.Tensor, out: "ModelOutput", batch: dict, state: TrainState) -> torch.Tensor:
        """Each training step, inside autocast, after the task loss: return the loss to
        backpropagate (e.g. ``loss + weight * term``). ``out`` is the model's output on ``batch``
        (the batch returned by on_batch); do not change them."""
        return loss

    def before_step(self, model: nn.Module, state: TrainState) -> None:
        """Each training step, after backward (gradients are all-reduced under DDP, so identical on
        every rank) and before the optimizer step. May change gradients in place (e.g. clip them)."""

    # -- each epoch ----------------------------------------------------------------------------------
    def on_epoch_end(self, model: nn.Module, state: TrainState) -> None:
        """After each epoch's validation (``state.val_score`` and ``state.epoch`` are set), before
        the epoch's checkpoint is written. Must not change the model's weights (take copies)."""

    # -- once, after training ------------------------------------------------------------------
    def after_fit(self, model: nn.Module, state: TrainState) -> nn.Module:
        """Once, after the last epoch's validation. May return different weights (e.g. a soup);
        the returned model is evaluated, its predictions saved and its weights exported."""
        return model

    # -- checkpointing of the trick's own state (loaded with torch.load(weights_only=True)) ------
    def state_dict(self) -> dict[str, Any]:
        """Tensors and plain values to restore on resume (saved with every epoch checkpoint)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass

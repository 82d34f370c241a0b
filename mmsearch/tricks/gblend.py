from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from ..errors import ConfigError
from ..losses import task_loss
from . import Trick, register_trick
from ._heads import FUSED, ModalityHeads, unwrapped

MIN_WEIGHT = 0.01  # a head whose validation loss did not improve keeps this share (it still trains a little)
MIN_OVERFIT = 0.01  # O below this (in nats; ~0 or negative: no overfitting yet) counts as this


@register_trick
class GradientBlending(Trick):
    """Gradient Blending (Wang, Tran & Feiszli, CVPR 2020): one head per modality on the fusion's
    per-modality features plus the fused head; loss = sum_k w_k L_k, with w_k from each head's
    overfitting-to-generalization ratio.

    The rows: a slice V (``holdout`` of the training rows, seeded by train.seed) is held out of
    training through ``training_rows``; the model-selection val set is never used. For each head k
    at two points N and N+n of training: G_k = L^V_N - L^V_{N+n} (generalization gained) and
    O_k = (L^V - L^T)_{N+n} - (L^V - L^T)_N (overfitting gained), L^T measured on a fixed sample of
    the training rows as large as V (at least 256 rows); w_k = G_k / O_k^2, normalised to sum 1.
    Clamps: G_k <= 0 -> the floor share MIN_WEIGHT; O_k below MIN_OVERFIT -> MIN_OVERFIT. In the loss
    the weights are multiplied by the number of heads, so that uniform weights give the plain
    multi-head loss (modality_heads) and the learning rate the search picked keeps its meaning.
    Until the first estimate the weights are uniform.

    Never estimated from the random initial weights: over a model's first steps every head learns
    the class balance, which any head, noise included, generalizes perfectly (in a test on a table
    with a pure-noise text, estimates from step 0 gave the noise head most of the weight).

    * ``online``: measured every ``super_epoch`` epochs (in optimizer steps, rounded). N is the
      first measurement and N+n the latest: the weights are re-estimated at every measurement
      from the second on, over all training since N, and hold until the next one. The default 0.5
      re-weights from the second epoch on. Why not the paper's window of one super-epoch: late in
      training its G and O are differences of nearly converged losses, i.e. noise, and a head
      whose loss still drifts down by a hair takes all the weight (on a table with a pure-noise
      text, per-window estimates gave the noise head 0.98). Measurements are not training steps;
      each costs one evaluation pass over V and the T sample.
    * ``offline``: estimated once, before the first step, by a throw-away copy of the model and
      heads trained with uniform weights from the initial weights for ``estimate_epochs`` epochs
      of the training rows (AdamW at optim.lr, constant, no other trick), measured halfway and at
      the end; then the trial trains from its untouched initial weights with those weights fixed.
      That run's steps do not count as the trial's steps and its randomness is forked, so the
      trial's own training is as without it; its cost is about estimate_epochs epochs (default 1)
      plus two measurements.

    The weights are the same on every DDP rank (rank 0's, broadcast) and are checkpointed with the
    heads and the reference measurement (V is drawn from train.seed again), so a resumed trial
    continues with the same weights. Every epoch's metrics get gblend_w_<head>, and after an estimate gblend_G_<head> and
    gblend_O_<head> (heads: fused and each modality). Supersedes modality_heads."""
    name = "gblend"
    supersedes = ("modality_heads",)

    @dataclass(frozen=True)
    class Config:
        mode: Literal["offline", "online"] = "online"
        holdout: float = 0.15        # share of the training rows held out as V
        super_epoch: float = 0.5     # online: epochs between measurements
        estimate_epochs: float = 1.0  # offline: length of the throw-away run

        def __post_init__(self):
            if not 0 < self.holdout < 1:
                raise ConfigError(f"tricks.gblend.holdout={self.holdout}: a share of the training rows, between 0 and 1")
            if self.super_epoch <= 0 or self.estimate_epochs <= 0:
                raise ConfigError("tricks.gblend.super_epoch and .estimate_epochs must be > 0 (in epochs)")

    space = {"mode": {"choice": ["offline", "online"]}}

    def __init__(self, config):
        super().__init__(config)
        self.heads: ModalityHeads | None = None
        self.weights: dict[str, float] | None = None  # normalised to sum 1; None: uniform (not estimated yet)
        self.gains: dict[str, float] = {}
        self.overfits: dict[str, float] = {}
        self.reference: dict[str, tuple[float, float]] | None = None  # head -> (L^V, L^T) at N
        self.last_step = 0  # the step of the latest measurement (online)
        self._model = None  # the model the heads read (configure_model's), measured and copied
        self.v_rows = self.t_rows = self.train_rows = None
        self._loaders: dict = {}  # V and the T sample, built on first use

    # -- before training -------------------------------------------------------------------------
    def configure_model(self, model, state):
        self._model = model
        self.heads = ModalityHeads.for_model(model, state.device)
        return model

    def training_rows(self, rows, state):
        order = np.random.default_rng([state.seed, 7_001]).permutation(rows)
        n_v = max(2, int(round(self.config.holdout * len(rows))))
        if len(rows) - n_v < 2:
            raise ValueError(f"tricks.gblend: {len(rows)} training rows are too few to hold out a slice V")
        self.v_rows, self.train_rows = np.sort(order[:n_v]), np.sort(order[n_v:])
        sample = np.random.default_rng([state.seed, 7_002]).permutation(len(self.train_rows))[:max(n_v, 256)]
        self.t_rows = self.train_rows[np.sort(sample)]
        return self.train_rows

    def param_groups(self, params, state):
        return [*params, *self.heads.param_specs(self.name, params)]

    # -- each step ------------------------------------------------------------------------------------
    def on_batch(self, batch, state):
        if self.config.mode == "offline" and self.weights is None:
            self._estimate_offline(state)
        elif self.config.mode == "online":
            every = max(1, round(self.config.super_epoch * state.steps_per_epoch))
            if state.step > 0 and state.step % every == 0 and state.step > self.last_step:
                self._measure(self._model, self.heads, state)
                self.last_step = state.step
        state.fused_loss_weight = self.loss_weight(FUSED)
        return batch

    def on_loss(self, loss, out, batch, state):
        losses = self.heads.losses(out, batch["label"], state.problem_type)
        return loss + sum(self.loss_weight(m) * value for m, value in losses.items())

    def before_step(self, model, state) -> None:
        self.heads.average_gradients(state)

    def on_epoch_end(self, model, state) -> None:
        keys = [FUSED, *self.heads.heads]
        for k in keys:
            state.log(f"gblend_w_{k}", self.weights[k] if self.weights else 1 / len(keys))
            if k in self.gains:
                state.log(f"gblend_G_{k}", self.gains[k])
                state.log(f"gblend_O_{k}", self.overfits[k])

    def loss_weight(self, head: str) -> float:
        """The weight of a head's loss in the training loss: w * number of heads (1 when uniform)."""
        return 1.0 if self.weights is None else self.weights[head] * len(self.weights)

    # -- estimates ----------------------------------------------------------------------------------
    def _measure(self, model, heads, state) -> None:
        """Measure (L^V, L^T) per head: the first measurement is N; each later one re-estimates."""
        on_v, on_t = self._losses(model, heads, "v_rows", state), self._losses(model, heads, "t_rows", state)
        now = {k: (on_v[k], on_t[k]) for k in on_v}
        if self.reference is None:
            self.reference = now
        else:
            self._set_weights(self.reference, now, state)

    @torch.no_grad()
    def _losses(self, model, heads, rows: str, state) -> dict[str, float]:
        """head -> mean task loss over the rows named (v_rows | t_rows), model in eval mode."""
        was_training = model.training
        model.eval()
        sums: dict[str, float] = {}
        n = 0
        if rows not in self._loaders:
            self._loaders[rows] = state.loader(getattr(self, rows))
        for batch in self._loaders[rows]:
            batch = {k: v.to(state.device) for k, v in batch.items()}
            with state.autocast():
                out = model(batch)
                losses = {FUSED: task_loss(out.logits, batch["label"], state.problem_type),
                          **heads.losses(out, batch["label"], state.problem_type)}
            for k, value in losses.items():
                sums[k] = sums.get(k, 0.0) + float(value) * len(batch["label"])
            n += len(batch["label"])
        model.train(was_training)
        return {k: v / n for k, v in sums.items()}

    def _set_weights(self, before, after, state) -> None:
        gains = {k: before[k][0] - after[k][0] for k in after}
        overfits = {k: (after[k][0] - after[k][1]) - (before[k][0] - before[k][1]) for k in after}
        weights = blend_weights(gains, overfits)
        # rank 0's weights everywhere: ranks measure the same rows, but GPU kernels need not agree bit for bit
        if state.world_size > 1 and torch.distributed.is_available() and torch.distributed.is_initialized():
            values = torch.tensor([weights[k] for k in weights], dtype=torch.float64, device=state.device)
            torch.distributed.broadcast(values, src=0)
            weights = dict(zip(weights, values.tolist()))
        self.weights, self.gains, self.overfits = weights, gains, overfits

    def _estimate_offline(self, state) -> None:
        """The throw-away run of the docstring: weights from a copy trained from the initial weights."""
        model, heads = copy.deepcopy(unwrapped(self._model)), copy.deepcopy(self.heads)
        params = [p for p in [*model.parameters(), *heads.parameters()] if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=state.lr)
        steps = max(2, round(self.config.estimate_epochs * state.steps_per_epoch))
        with torch.random.fork_rng(devices=[state.device] if state.device.type == "cuda" else []):
            torch.manual_seed(state.seed + 7_003)
            loader = state.loader(self.train_rows, shuffle=torch.Generator().manual_seed(state.seed + 7_004))
            model.train()
            done = 0
            while done < steps:
                for batch in loader:
                    if done == steps:
                        break
                    batch = {k: v.to(state.device) for k, v in batch.items()}
                    with state.autocast():
                        out = model(batch)
                        loss = task_loss(out.logits, batch["label"], state.problem_type)
                        loss = loss + sum(heads.losses(out, batch["label"], state.problem_type).values())
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
                    done += 1
                    if done == steps // 2:
                        self._measure(model, heads, state)
            self._measure(model, heads, state)
        self.reference = None  # the copy's measurements are not the trial's

    # -- checkpoint -----------------------------------------------------------------------------------
    def state_dict(self):
        return {"heads": {k: v.detach().cpu() for k, v in self.heads.state_dict().items()},
                "weights": self.weights, "gains": self.gains, "overfits": self.overfits,
                "reference": None if self.reference is None else {k: list(v) for k, v in self.reference.items()},
                "last_step": self.last_step}

    def load_state_dict(self, state) -> None:
        self.heads.load_state_dict(state["heads"])  # in place: the optimizer holds these parameters
        self.weights, self.gains, self.overfits = state["weights"], state["gains"], state["overfits"]
        self.reference = None if state["reference"] is None else {k: tuple(v) for k, v in state["reference"].items()}
        self.last_step = state["last_step"]


def blend_weights(gains: dict[str, float], overfits: dict[str, float]) -> dict[str, float]:
    """w_k = G_k / O_k^2 (O_k at least MIN_OVERFIT; G_k <= 0: no share), normalised to sum 1, then
    every weight at least MIN_WEIGHT (renormalised). All gains <= 0: uniform."""
    raw = {k: g / max(overfits[k], MIN_OVERFIT) ** 2 if g > 0 else 0.0 for k, g in gains.items()}
    total = sum(raw.values())
    if total <= 0:
        return {k: 1 / len(raw) for k in raw}
    floored = {k: max(v / total, MIN_WEIGHT) for k, v in raw.items()}
    return {k: v / sum(floored.values()) for k, v in floored.items()}

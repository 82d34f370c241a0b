from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..losses import task_loss
from . import Trick, register_trick


@register_trick
class ManifoldMixup(Trick):
    """Manifold mixup: the fused vectors and targets of a batch mixed with a permutation of it.
    Each training step draws lam ~ Beta(alpha, alpha) and a permutation of the batch; the fusion's
    head predicts from lam * fused + (1 - lam) * fused[perm] instead of fused, and the fused task
    loss becomes lam * L(logits, y) + (1 - lam) * L(logits, y[perm]).

    How: ``configure_model`` puts a forward pre-hook on ``model.fusion.head`` (the Fusion contract:
    logits = head(fused), one call per forward). ``on_batch`` arms it for the step; the hook mixes
    the next call of the head in training mode only, then disarms itself, so evaluation (model in
    eval mode, and never armed: on_batch runs only in training) is never mixed, and later calls of
    the head in the same step (lemda's) see unmixed vectors. A hook on the module inside the model
    also fires inside the DDP wrapper, which wraps this very module.

    The targets: ``on_loss`` adds w * (1 - lam) * (L(logits, y[perm]) - L(logits, y)) to the loss
    (w: the fused loss weight), which turns the fused term w * L(logits, y) into the mixed one and
    leaves every other term (per-modality heads, other tricks' terms) as it was.
    * Classification: lam * CE(y) + (1 - lam) * CE(y[perm]) is exactly the cross-entropy against
      the soft target lam * onehot(y) + (1 - lam) * onehot(y[perm]).
    * Regression: lam * MSE(p, y) + (1 - lam) * MSE(p, y[perm]) = MSE(p, lam * y + (1 - lam) *
      y[perm]) + lam * (1 - lam) * mean((y - y[perm])^2): the loss against the linearly mixed
      target plus a term that does not depend on the parameters, so the gradients are those of
      the mixed target (the logged loss is higher by that constant).

    What is not mixed: ``out.fused`` and ``out.features`` (the vectors the fusion computed, before
    the head's hook) and the per-modality heads, so alignment losses and lemda read the rows as
    they are; only the fused prediction and its loss are mixed. Under DDP each worker mixes its
    own rows (its own lam and permutation, drawn from the per-rank generator).
    """
    name = "manifold_mixup"

    @dataclass(frozen=True)
    class Config:
        alpha: float = 2.0  # Beta(2, 2): lam mostly near 0.5 (tricks.md)

    space = {"alpha": {"choice": [0.5, 1.0, 2.0]}}

    def __init__(self, config):
        super().__init__(config)
        self._armed: tuple[float, torch.Tensor] | None = None  # (lam, perm) for this step's head call
        self._mixed: tuple[float, torch.Tensor] | None = None  # what that call did, for on_loss

    def configure_model(self, model, state):
        def mix(head, args):
            if self._armed is None or not head.training:
                return None
            (lam, perm), self._armed = self._armed, None
            x = args[0]
            if len(x) != len(perm):  # not this step's batch (never in the loop): leave it alone
                return None
            self._mixed = lam, perm
            return (lam * x + (1 - lam) * x[perm], *args[1:])

        model.fusion.head.register_forward_pre_hook(mix)  # a closure: a deep copy of the model shares it
        return model

    def on_batch(self, batch, state):
        # numpy draws the Beta (torch's distributions take no generator), seeded from the trick's
        # generator so that a run repeats and a resumed epoch draws the same lambdas
        seed = int(torch.randint(2**62, (1,), generator=state.generator))
        lam = float(np.random.default_rng(seed).beta(self.config.alpha, self.config.alpha))
        perm = torch.randperm(len(batch["label"]), generator=state.generator).to(batch["label"].device)
        self._armed, self._mixed = (lam, perm), None
        return batch

    def on_loss(self, loss, out, batch, state):
        mixed, self._mixed, self._armed = self._mixed, None, None
        if mixed is None:
            return loss
        lam, perm = mixed
        y = batch["label"]
        unmixed = task_loss(out.logits, y, state.problem_type)
        partner = task_loss(out.logits, y[perm], state.problem_type)
        state.log("mixup_lambda", lam)
        return loss + state.fused_loss_weight * (1 - lam) * (partner - unmixed)

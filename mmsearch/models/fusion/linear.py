"""A linear probe as a member of the pool: logistic regression (classification) or ridge
(regression) over the frozen towers' pooled encodings and the tabular columns.

It is the peer a practitioner tries first on a small table, and on one it is hard to beat: on
emoji's 1,332 training rows an MLP over the same frozen encodings overfits after its first epoch
(val accuracy 0.84, falling), while the probe's L2 penalty, picked on val, holds it. In the pool it
costs seconds once the feature cache exists, and the ensemble can add the fine-tuned and tree
members on top of it instead of having to beat it.

Fitted with scikit-learn (L-BFGS, warm-started along the regularization path); the fitted
standardization and weights are plain float32 buffers, so prediction is one matrix product in
numpy, the same in the trial and in the bundle (no scikit-learn object is kept or pickled).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from . import register_fusion
from ._fitted import FittedFusion


@register_fusion
class LinearFusion(FittedFusion):
    """Features: each modality's pooled encoding (sorted by modality), the standardized numbers
    (missing ones at the train mean, 0) with a missing indicator each, and each categorical
    column one-hot (ids seen in training; others count as the column's unknown id); all
    standardized on the training rows. The L2 strength C runs over a log grid from strong to weak
    and the one with the lowest val loss (log loss / squared error: smooth on a small val set) is
    kept. Logits: the linear scores (softmax gives the probe's probabilities) or the predicted value
    on the standardized target (regression)."""
    name = "linear"

    @dataclass(frozen=True)
    class Config:
        c_min: float = 1.0e-3   # the regularization path: n_c values of C (inverse L2 strength), log-spaced
        c_max: float = 10.0
        n_c: int = 5
        max_iter: int = 300     # L-BFGS iterations per C (warm-started from the previous C's solution)

    def __init__(self, dims, n_out, **params):
        super().__init__(dims, n_out)
        self.params = params
        self.register_buffer("cat_widths", torch.zeros(0, dtype=torch.int64))  # one-hot width per column
        self.register_buffer("x_mean", torch.zeros(0))
        self.register_buffer("x_scale", torch.zeros(0))
        self.register_buffer("weight", torch.zeros(0))  # [F, n_out]
        self.register_buffer("bias", torch.zeros(0))    # [n_out]

    # -- features -------------------------------------------------------------------------------
    def fit_inputs(self, pooled, num, num_mask, cat) -> None:
        widths = cat.max(axis=0) + 1 if len(cat) and cat.shape[1] else np.zeros(cat.shape[1], dtype=np.int64)
        self.cat_widths = torch.as_tensor(np.maximum(widths, 2), dtype=torch.int64)

    def features(self, pooled, num, num_mask, cat) -> np.ndarray:
        """[B, F] before standardization."""
        widths = self.cat_widths.cpu().numpy()
        onehot = [np.eye(w)[np.where(cat[:, j] < w, cat[:, j], 1)] for j, w in enumerate(widths)]  # 1: unknown id
        parts = [pooled[m] for m in self.modalities] + [num.astype(np.float64), 1.0 - num_mask.astype(np.float64), *onehot]
        return np.concatenate(parts, axis=1)

    def _standardized(self, x: np.ndarray) -> np.ndarray:
        return (x - self.x_mean.double().cpu().numpy()) / self.x_scale.double().cpu().numpy()

    # -- fit and predict ------------------------------------------------------------------------
    def fit(self, x, y, x_val, y_val, *, n_cat, problem_type, seed, threads) -> dict:
        from sklearn.linear_model import LogisticRegression, Ridge

        mean, scale = x.mean(0), x.std(0)
        scale = np.where(scale > 1e-12, scale, 1.0)  # a constant feature stays 0
        self.x_mean, self.x_scale = (torch.as_tensor(v, dtype=torch.float32) for v in (mean, scale))
        # the buffers' float32 values, as prediction will use them
        x, x_val = self._standardized(x), self._standardized(x_val)
        regression = problem_type == "regression"
        grid = np.geomspace(self.params["c_min"], self.params["c_max"], self.params["n_c"])
        probe = None if regression else LogisticRegression(max_iter=self.params["max_iter"], warm_start=True, random_state=seed)
        best = None
        for c in grid:
            if regression:
                w, b = _ridge(Ridge(alpha=1.0 / c).fit(x, y))
            else:
                probe.set_params(C=c)
                w, b = _logistic(probe.fit(x, y), self.n_out)
            loss = _val_loss(x_val @ w + b, y_val, regression)
            if best is None or loss < best[0]:
                best = (loss, c, w, b)
        _, c, w, b = best
        self.weight, self.bias = torch.as_tensor(w, dtype=torch.float32), torch.as_tensor(b, dtype=torch.float32)
        return {"C": float(c), "features": int(x.shape[1])}

    def predict_array(self, x: np.ndarray) -> np.ndarray:
        if self.weight.numel() == 0:
            raise RuntimeError("the linear member has not been fitted")
        return self._standardized(x) @ self.weight.double().cpu().numpy() + self.bias.double().cpu().numpy()


def _ridge(model) -> tuple[np.ndarray, np.ndarray]:
    return np.asarray(model.coef_, dtype=np.float64).reshape(-1, 1), np.atleast_1d(np.asarray(model.intercept_, dtype=np.float64))


def _logistic(model, n_out: int) -> tuple[np.ndarray, np.ndarray]:
    """[F, n_out] weights and [n_out] biases whose softmax is the model's probabilities; a binary
    model's one score z becomes the logits (0, z). Classes the training rows lack keep -inf-like
    logits (a large negative bias)."""
    coef, intercept = np.asarray(model.coef_, dtype=np.float64), np.asarray(model.intercept_, dtype=np.float64)
    if coef.shape[0] == 1 and len(model.classes_) == 2:
        coef, intercept = np.vstack([np.zeros_like(coef), coef]), np.concatenate([[0.0], intercept])
    w, b = np.zeros((coef.shape[1], n_out)), np.full(n_out, -30.0)
    w[:, model.classes_], b[model.classes_] = coef.T, intercept
    return w, b


def _val_loss(scores: np.ndarray, y: np.ndarray, regression: bool) -> float:
    if regression:
        return float(np.mean((scores[:, 0] - y) ** 2))
    scores = scores - scores.max(1, keepdims=True)
    log_p = scores - np.log(np.exp(scores).sum(1, keepdims=True))
    return float(-log_p[np.arange(len(y)), y.astype(np.int64)].mean())

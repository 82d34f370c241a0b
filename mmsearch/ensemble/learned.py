"""Learned convex ensemble: softmax-parameterised model weights fitted on validation loss.

The alternative Caruana et al. found best: weights w = softmax(theta) over the M models,
minimising NLL (classification) or MSE (regression) of the mixture sum_m w_m P_m on the
validation rows. The softmax keeps w on the simplex without projections.

Optimiser: gradient descent on theta with an Armijo backtracking line search, along the
theta-gradient preconditioned by 1/w (the exponentiated-gradient / mirror-descent
direction on the simplex; the raw softmax gradient w * g vanishes for small weights and
needs thousands of steps). The step grows after every accepted step and shrinks on
rejection, so the loss decreases monotonically and "improvement < tol" is a meaningful
convergence test (Adam's oscillations would make it trigger by chance). It runs until
converged or max_iter, never a fixed single step.

Only what the loss needs is kept: for NLL the true-class column of every model
(T [M, N]) since the mixture's true-class probability is T^T w; for MSE the residuals
P_m - y. Both gradients are analytic.
"""

from __future__ import annotations

import numpy as np

from mmsearch import metrics as _metrics
from mmsearch.ensemble.blending import blend

__all__ = ["LearnedWeightsEnsemble"]


def _softmax(theta: np.ndarray) -> np.ndarray:
    e = np.exp(theta - theta.max())
    return e / e.sum()


class LearnedWeightsEnsemble:
    """Fit ``weights_`` (float [M], on the simplex) by minimising validation NLL / MSE.

    ``metric`` only decides the task (classification -> NLL, regression -> MSE) and is
    reported as ``score_`` on the fitting data. ``lr`` is the initial step size of the
    line search; fitting stops when one step improves the loss by less than ``tol`` or
    after ``max_iter`` steps. Fitted: ``weights_``, ``loss_``, ``loss_curve_``,
    ``n_iter_``, ``converged_``, ``score_``. ``seed`` is accepted for API symmetry; the
    fit is deterministic (uniform start).
    """

    def __init__(self, *, metric: str, max_iter: int = 500, lr: float = 0.1, tol: float = 1e-7, seed: int = 0):
        self.metric = metric
        self.max_iter = max_iter
        self.lr = lr
        self.tol = tol
        self.seed = seed

    def fit(self, preds, y) -> "LearnedWeightsEnsemble":
        task = _metrics.metric_task(self.metric)
        preds = np.asarray(preds)
        want = 3 if task == "classification" else 2
        if preds.ndim != want:
            raise ValueError(f"metric {self.metric!r} needs preds with {want} dims, got {preds.shape}")
        M, N = preds.shape[:2]
        # float32 pools stay float32 (no float64 copy of the pool); float64 stays exact
        work = np.float64 if preds.dtype == np.float64 else np.float32
        if task == "classification":
            y = _metrics._labels(y)
            if y.shape != (N,) or y.min() < 0 or y.max() >= preds.shape[2]:
                raise ValueError("y must be [N] class indices matching preds")
            # True-class probability of each model: the mixture's is simply T^T w.
            T = np.take_along_axis(preds, y[None, :, None], axis=2)[..., 0].astype(work)
            eps = _metrics.LOG_LOSS_EPS

            def loss_grad(w):
                q = (T.T @ w.astype(work)).astype(np.float64)
                qc = np.maximum(q, eps)
                loss = -np.mean(np.log(qc))
                # d/dw_m of -mean log q = -mean(T_m / q) (zero where the clip is active)
                inv = np.where(q > eps, 1.0 / qc, 0.0).astype(work)
                return loss, -(T @ inv).astype(np.float64) / N

        else:
            y = np.asarray(y, dtype=np.float64)
            if y.shape != (N,):
                raise ValueError("y must be [N]")
            R = preds.astype(work) - y.astype(work)  # residuals; mixture residual = R^T w

            def loss_grad(w):
                r = (R.T @ w.astype(work)).astype(np.float64)
                return float(np.mean(r * r)), 2.0 * (R @ r.astype(work)).astype(np.float64) / N

        def f(theta):
            w = _softmax(theta)
            loss, gw = loss_grad(w)
            return loss, gw - w @ gw, w  # centred gradient in w-space

        theta = np.zeros(M)
        loss, gc, w = f(theta)
        curve = [float(loss)]
        step = float(self.lr)
        converged = False
        n_iter = 0
        for n_iter in range(1, self.max_iter + 1):
            # dL/dtheta = w * gc (softmax chain rule). Descending along -gc instead (the
            # theta-gradient divided by w) is the exponentiated-gradient / mirror-descent
            # step on the simplex: plain -w*gc crawls for small weights, this doesn't.
            slope = -float(w @ (gc * gc))  # directional derivative along -gc
            if slope >= 0.0:  # zero gradient: stationary point
                converged = True
                break
            # Armijo backtracking: accept the first step with sufficient decrease.
            while True:
                cand = theta - step * gc
                c_loss, c_gc, c_w = f(cand)
                if c_loss <= loss + 1e-4 * step * slope or step < 1e-12:
                    break
                step *= 0.5
            improvement = loss - c_loss
            if improvement < 0:  # line search bottomed out without progress
                converged = True
                break
            theta, loss, gc, w = cand, c_loss, c_gc, c_w
            curve.append(float(loss))
            if improvement < self.tol:
                converged = True
                break
            step *= 2.0  # let the step grow again after each accepted step
        self.weights_ = w
        self.loss_ = float(loss)
        self.loss_curve_ = np.asarray(curve)
        self.n_iter_ = n_iter
        self.converged_ = converged
        self.n_models_ = M
        self.score_ = _metrics.score(self.metric, y, self.predict(preds))
        return self

    def predict(self, preds) -> np.ndarray:
        if not hasattr(self, "weights_"):
            raise RuntimeError("LearnedWeightsEnsemble is not fitted")
        return blend(self.weights_, preds)

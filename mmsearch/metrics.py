"""Numpy-only metrics shared by training (early stopping, trial reports) and ensembling.

Why not sklearn: this module is imported by the ensemble code and by lightweight
drivers that must not pull heavy dependencies, and the Caruana fast path
(`mmsearch.ensemble._scorers`) re-implements these exact formulas in vectorised
form, so keeping one small reference definition here makes the two easy to compare.

Conventions
-----------
* classification: ``y_true`` int class indices, shape [N]; ``pred`` probabilities,
  shape [N, C] (binary too: [N, 2]). A 1-D ``pred`` is accepted as P(class 1).
* regression: ``y_true`` float [N], ``pred`` float [N].
"""

from __future__ import annotations

from typing import Callable

import numpy as np

__all__ = [
    "METRICS",
    "CLASSIFICATION_METRICS",
    "REGRESSION_METRICS",
    "LOG_LOSS_EPS",
    "score",
    "higher_is_better",
    "default_metric",
    "secondary_metric",
    "metric_task",
    "rank_auc",
    "auc_split",
    "accuracy",
    "roc_auc",
    "log_loss",
    "r2",
    "rmse",
    "mae",
]

# Probabilities are clipped to [LOG_LOSS_EPS, 1] before the log so a single
# confidently-wrong row gives a large but finite loss.
LOG_LOSS_EPS = 1e-15


# --------------------------------------------------------------------------- input checks
def _labels(y_true) -> np.ndarray:
    y = np.asarray(y_true)
    if y.ndim != 1:
        raise ValueError(f"y_true must be 1-D class indices, got shape {y.shape}")
    if y.dtype.kind == "f":
        # Float labels are tolerated only when they are whole numbers (e.g. read back
        # from a parquet float column); anything else is a caller bug.
        if not np.all(np.isfinite(y)) or not np.all(y == np.round(y)):
            raise ValueError("classification y_true must hold integer class indices")
        y = y.astype(np.int64)
    elif y.dtype.kind not in "iub":
        raise ValueError(f"classification y_true must be integer class indices, got {y.dtype}")
    return y.astype(np.int64, copy=False)


def _proba(y: np.ndarray, pred) -> np.ndarray:
    p = np.asarray(pred, dtype=np.float64)
    if p.ndim == 1:  # binary shorthand: P(class 1)
        p = np.stack([1.0 - p, p], axis=1)
    if p.ndim != 2 or p.shape[0] != y.shape[0]:
        raise ValueError(f"pred must be [N, C] probabilities for N={y.shape[0]}, got {p.shape}")
    if y.size and (y.min() < 0 or y.max() >= p.shape[1]):
        raise ValueError(f"y_true has class ids outside [0, {p.shape[1]})")
    return p


def _regression(y_true, pred) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y_true, dtype=np.float64)
    p = np.asarray(pred, dtype=np.float64)
    if p.ndim == 2 and p.shape[1] == 1:  # [N, 1] model heads
        p = p[:, 0]
    if y.ndim != 1 or p.shape != y.shape:
        raise ValueError(f"regression y_true/pred must both be [N], got {y.shape} and {p.shape}")
    return y, p


# --------------------------------------------------------------------------- ranking helper
def auc_split(pos_scores: np.ndarray, neg_scores: np.ndarray) -> np.ndarray:
    """Mann-Whitney AUC per row, given the positives' [B, P] and negatives' [B, Q] scores.

    U = sum over positives of (#negatives scored lower + 0.5 * #negatives tied), i.e.
    the rank-sum formula with average ranks for ties, computed from two sorts and
    binary searches (cheaper than ranking all N rows). U is an exact (half-)integer, so
    the result is deterministic. The Caruana fast path calls this directly on
    pre-split candidate scores.
    """
    sp = np.sort(pos_scores, axis=-1)
    sn = np.sort(neg_scores, axis=-1)
    if sp.ndim == 1:
        sp, sn = sp[None], sn[None]
    n_pos, n_neg = sp.shape[1], sn.shape[1]
    if n_pos == 0 or n_neg == 0:
        return np.full(sp.shape[0], np.nan)
    u = np.empty(sp.shape[0])
    for b in range(sp.shape[0]):
        below = np.searchsorted(sn[b], sp[b], side="left").sum()
        below_or_tied = np.searchsorted(sn[b], sp[b], side="right").sum()
        u[b] = 0.5 * (below + below_or_tied)
    return u / (n_pos * n_neg)


def rank_auc(scores: np.ndarray, positive: np.ndarray) -> np.ndarray:
    """AUC of each row of ``scores`` [B, N] (or one [N] vector) against boolean
    ``positive`` [N]; NaN where only one class is present or a score is NaN."""
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim == 1:
        s = s[None, :]
    pos = np.asarray(positive, dtype=bool)
    out = auc_split(s[:, pos], s[:, ~pos])
    out[np.isnan(s).any(axis=1)] = np.nan  # NaN would sort arbitrarily: undefined
    return out


# --------------------------------------------------------------------------- metrics
def accuracy(y_true, pred) -> float:
    y = _labels(y_true)
    p = _proba(y, pred)
    # np.argmax picks the first maximum: ties go to the lowest class id (the fast
    # ensemble path reproduces exactly this rule).
    return float(np.mean(np.argmax(p, axis=1) == y))


def roc_auc(y_true, pred) -> float:
    """Binary: AUC of column 1. Multiclass: macro one-vs-rest average.

    Classes absent from ``y_true`` (or present in every row) have no defined AUC and
    are skipped in the macro average; NaN when no class has one.
    """
    y = _labels(y_true)
    p = _proba(y, pred)
    if p.shape[1] == 2:
        return float(rank_auc(p[:, 1], y == 1)[0])
    aucs = [rank_auc(p[:, c], y == c)[0] for c in range(p.shape[1])]
    aucs = [a for a in aucs if not np.isnan(a)]
    return float(np.mean(aucs)) if aucs else float("nan")


def log_loss(y_true, pred) -> float:
    y = _labels(y_true)
    p = np.clip(_proba(y, pred), LOG_LOSS_EPS, 1.0)
    # Renormalise after clipping so rows are proper distributions again.
    p_true = p[np.arange(y.shape[0]), y] / p.sum(axis=1)
    return float(-np.mean(np.log(p_true)))


def r2(y_true, pred) -> float:
    y, p = _regression(y_true, pred)
    ss_res = float(np.sum((y - p) ** 2))
    ss_tot = float(np.sum((y - y.mean()) ** 2))
    if ss_tot == 0.0:
        # Constant target: sklearn's convention (force_finite) instead of +-inf/NaN.
        return 1.0 if ss_res == 0.0 else 0.0
    return 1.0 - ss_res / ss_tot


def rmse(y_true, pred) -> float:
    y, p = _regression(y_true, pred)
    return float(np.sqrt(np.mean((y - p) ** 2)))


def mae(y_true, pred) -> float:
    y, p = _regression(y_true, pred)
    return float(np.mean(np.abs(y - p)))


METRICS: dict[str, tuple[Callable[[np.ndarray, np.ndarray], float], bool]] = {
    "accuracy": (accuracy, True),
    "roc_auc": (roc_auc, True),
    "log_loss": (log_loss, False),
    "r2": (r2, True),
    "rmse": (rmse, False),
    "mae": (mae, False),
}

CLASSIFICATION_METRICS = frozenset({"accuracy", "roc_auc", "log_loss"})
REGRESSION_METRICS = frozenset({"r2", "rmse", "mae"})

_PROBLEM_TYPES = ("binary", "multiclass", "regression")


def _check_metric(metric: str) -> None:
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; valid metrics: {', '.join(sorted(METRICS))}")


def score(metric: str, y_true, pred) -> float:
    _check_metric(metric)
    return METRICS[metric][0](y_true, pred)


def higher_is_better(metric: str) -> bool:
    _check_metric(metric)
    return METRICS[metric][1]


def metric_task(metric: str) -> str:
    """'classification' or 'regression': which prediction convention the metric expects."""
    _check_metric(metric)
    return "classification" if metric in CLASSIFICATION_METRICS else "regression"


def _check_problem(problem_type: str) -> None:
    if problem_type not in _PROBLEM_TYPES:
        raise ValueError(f"unknown problem_type {problem_type!r}; valid: {', '.join(_PROBLEM_TYPES)}")


def default_metric(problem_type: str) -> str:
    _check_problem(problem_type)
    return {"binary": "roc_auc", "multiclass": "accuracy", "regression": "r2"}[problem_type]


def secondary_metric(problem_type: str) -> str:
    _check_problem(problem_type)
    return "rmse" if problem_type == "regression" else "log_loss"

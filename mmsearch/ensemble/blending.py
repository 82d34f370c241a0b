"""The one weighted blend of member predictions: Caruana, learned weights, the experiment's
ensemble scores and an exported bundle all predict through it, so a bundle reproduces the
search's ensemble predictions bit for bit."""

from __future__ import annotations

import numpy as np

__all__ = ["blend"]


def blend(weights, preds) -> np.ndarray:
    """sum_m w_m P_m in float64, in member order, touching only models with non-zero weight.

    weights: [M]; preds: an [M, ...] array or a sequence of M arrays of one shape.
    """
    weights = np.asarray(weights, dtype=np.float64)
    preds = np.stack(preds) if isinstance(preds, (list, tuple)) else np.asarray(preds)
    if preds.shape[0] != len(weights):
        raise ValueError(f"expected predictions of {len(weights)} models, got {preds.shape[0]}")
    nz = np.flatnonzero(weights)
    if len(nz) > 64 and preds.dtype in (np.float32, np.float64):
        # dense weights (learned ensembles): one BLAS mat-vec in the pool's dtype
        # rather than M passes, and no float64 copy of a float32 pool
        flat = preds.reshape(preds.shape[0], -1)
        return (weights.astype(preds.dtype) @ flat).astype(np.float64).reshape(preds.shape[1:])
    out = np.zeros(preds.shape[1:])
    for m in nz:
        out += weights[m] * preds[m]
    return out

"""One deterministic train / val / holdout split, stratified for classification."""
from __future__ import annotations

import numpy as np

PARTS = ("train", "val", "holdout")


def split_rows(
    n: int, y: np.ndarray | None, *, val_frac: float, holdout_frac: float, seed: int
) -> dict[str, np.ndarray]:
    """Row positions per part (sorted). With class ids `y`, each class is split in proportion;
    a class too small to give every part a row keeps its rows in train first."""
    if not (0 < val_frac < 1 and 0 <= holdout_frac < 1 and val_frac + holdout_frac < 1):
        raise ValueError(f"need 0 < val_frac, 0 <= holdout_frac and val_frac + holdout_frac < 1 (got {val_frac}, {holdout_frac})")
    rng = np.random.default_rng(seed)
    groups = [np.arange(n)] if y is None else [np.flatnonzero(y == c) for c in np.unique(y)]
    parts: dict[str, list[np.ndarray]] = {p: [] for p in PARTS}
    for rows in groups:
        rows = rng.permutation(rows)
        n_hold = int(round(len(rows) * holdout_frac))
        n_val = int(round(len(rows) * val_frac))
        while len(rows) - n_hold - n_val < 1 and (n_hold or n_val):  # keep >= 1 row in train
            if n_hold >= n_val and n_hold:
                n_hold -= 1
            else:
                n_val -= 1
        parts["holdout"].append(rows[:n_hold])
        parts["val"].append(rows[n_hold:n_hold + n_val])
        parts["train"].append(rows[n_hold + n_val:])
    return {p: np.sort(np.concatenate(v)).astype(np.int64) for p, v in parts.items()}

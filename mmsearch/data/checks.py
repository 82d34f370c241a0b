"""Values that would poison training silently, caught while the table is prepared (before any
trial, Ray or training starts):

* a numeric feature cell that is +-inf is treated as missing, like an empty cell (imputed with
  the train mean, its presence mask off), and a DataWarning names the column and rows: one inf
  must not swamp the column's mean and standard deviation;
* a regression label that is +-inf is an error naming the rows (a NaN label is no label: its row
  is dropped, as for every problem type);
* a split that leaves val or holdout without rows is an error saying how many rows it needs.
"""
from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from ..errors import DataError, DataWarning

SHOWN = 5  # rows named in a message


def rows_note(rows) -> str:
    """'rows 3, 17 and 2 more (counted from 0 below the header)'."""
    rows = [int(r) for r in rows]
    more = f" and {len(rows) - SHOWN} more" if len(rows) > SHOWN else ""
    return f"row{'s' if len(rows) > 1 else ''} {', '.join(map(str, rows[:SHOWN]))}{more} (counted from 0 below the header)"


def _infinite(df: pd.DataFrame, col: str, row_ids: np.ndarray) -> np.ndarray:
    """The table's row numbers (row_ids: of df's rows) where `col` is +-inf."""
    values = pd.to_numeric(df[col], errors="coerce").to_numpy(dtype=float)
    return row_ids[np.isinf(values)]


def warn_infinite_features(df: pd.DataFrame, numeric: list[str], row_ids: np.ndarray) -> None:
    """A DataWarning per numeric column holding +-inf."""
    for col in numeric:
        bad = _infinite(df, col, row_ids)
        if bad.size:
            warnings.warn(f"numeric column {col!r} holds inf in {rows_note(bad)}: treated as missing (imputed with the "
                          "train mean); replace them with numbers, or leave the cells empty, to silence this", DataWarning,
                          stacklevel=3)


def check_regression_label(df: pd.DataFrame, label: str, row_ids: np.ndarray) -> None:
    bad = _infinite(df, label, row_ids)
    if bad.size:
        raise DataError(f"label column {label!r} holds inf in {rows_note(bad)}: a regression target must be finite; "
                        "fix those rows, or remove them")


def check_split(split: dict[str, np.ndarray], n: int, *, val_frac: float, holdout_frac: float, classes: int | None) -> None:
    """Every part of the split has rows; otherwise say how many the table needs."""
    from .split import split_rows

    empty = [p for p in ("train", "val", "holdout") if len(split[p]) == 0]
    if not empty:
        return
    need = next((m for m in range(2, 100_000) if all(len(v) for v in split_rows(
        m, None, val_frac=val_frac, holdout_frac=holdout_frac, seed=0).values())), None)
    per_class = f" in at least one class (the split keeps each class's share; this table has {classes} classes)" if classes else ""
    raise DataError(f"the table is too small for the split: its {n} labelled rows leave {' and '.join(empty)} without rows "
                    f"(--val-frac {val_frac}, --holdout-frac {holdout_frac}); it needs at least {need} rows{per_class}, "
                    "or larger fractions")

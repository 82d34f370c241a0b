"""New rows at predict time -> the prepared table's form, with a count of every cell that takes
a missing-value path. Nothing here refuses a row: only a missing column is an error.

The casting is prepare's own (prepare.cast_columns), so a row scored by an exported bundle gets
exactly the values it got during the search; what differs is policy: an unusable image path is
always treated as a missing image here (a prediction service should not fail a whole batch for
one broken file), and the counts say how often that happened.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import DataError
from .images import resolve_paths
from .prepare import cast_columns
from .schema import Schema
from .tabular import TabularPreprocessor, _as_str


@dataclass
class InputReport:
    """How many of the scored rows went down each missing-value path (the one training used)."""
    rows: int = 0
    missing_images: dict[str, int] = field(default_factory=dict)     # per image column: no usable image
    unreadable_images: dict[str, int] = field(default_factory=dict)  # of those: a path was given but is bad
    empty_text: int = 0                                              # rows whose text columns are all empty
    missing_numeric: dict[str, int] = field(default_factory=dict)    # imputed with the train mean
    missing_categorical: dict[str, int] = field(default_factory=dict)  # the reserved "missing" id
    unseen_categories: dict[str, int] = field(default_factory=dict)  # the reserved "unknown" id

    def lines(self) -> list[str]:
        """One human line per modality that had any; nothing when every cell was usable."""
        out = []
        for col, n in self.missing_images.items():
            if n:
                bad = self.unreadable_images.get(col, 0)
                out.append(f"image {col!r}: {n} of {self.rows} rows without a usable image"
                           + (f" ({bad} paths missing or unreadable)" if bad else ""))
        if self.empty_text:
            out.append(f"text: {self.empty_text} of {self.rows} rows with empty text")
        for what, counts in (("missing number (imputed)", self.missing_numeric),
                             ("missing category", self.missing_categorical),
                             ("unseen category (unknown id)", self.unseen_categories)):
            for col, n in counts.items():
                if n:
                    out.append(f"{what} in {col!r}: {n} of {self.rows} rows")
        return out


def conform(df: pd.DataFrame, schema: Schema, tabular: TabularPreprocessor, base_dir: Path) -> tuple[pd.DataFrame, InputReport]:
    """(the feature columns cast as prepare casts them, plus the label column when present; the
    report). Extra columns are dropped; relative image paths are read from base_dir."""
    absent = [c for c in schema.columns if c not in df.columns]
    if absent:
        raise DataError(f"the table lacks {len(absent)} column(s) the model needs: {', '.join(map(repr, absent))} "
                        f"(it was trained on {', '.join(map(repr, schema.columns))})")
    keep = [*schema.columns] + ([schema.label] if schema.label in df.columns else [])
    images = schema.by_role("image")
    given = {c: int(resolve_paths(df[c], base_dir).notna().sum()) for c in images}  # cells naming an image
    # positions while casting (check_images addresses rows by label: a repeated index would
    # blank several rows for one bad path), the caller's index again afterwards
    out = cast_columns(df[keep].reset_index(drop=True), schema, base_dir, treat_bad_images_as_missing=True)
    out.index = df.index

    report = InputReport(rows=len(out))
    for c in images:
        usable = int(out[c].notna().sum())
        report.missing_images[c] = len(out) - usable
        report.unreadable_images[c] = given[c] - usable
    texts = schema.by_role("text")
    if texts:
        empty = np.ones(len(out), dtype=bool)
        for c in texts:
            empty &= np.array([v is None or not v.strip() for v in out[c]], dtype=bool)
        report.empty_text = int(empty.sum())
    for c in tabular.numeric:
        report.missing_numeric[c] = int((~np.isfinite(pd.to_numeric(out[c], errors="coerce").to_numpy(dtype=float))).sum())
    for c in tabular.categorical:
        values = _as_str(out[c])
        known = set(tabular.vocab[c])
        report.missing_categorical[c] = int(values.isna().sum())
        report.unseen_categories[c] = int(sum(v is not None and v == v and v not in known for v in values))
    return out, report

"""Column roles and problem type: inferred from the table, overridable by the user."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd

from ..errors import DataError

ROLES = ("image", "text", "categorical", "numeric")
PROBLEM_TYPES = ("binary", "multiclass", "regression")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
MAX_CLASSES_FOR_INT_LABEL = 20  # an integer label with more distinct values is a regression


@dataclass
class Schema:
    label: str
    problem_type: str
    columns: dict[str, str]        # feature column -> role, in table order
    classes: list[Any] | None      # label values (JSON-native) for classification; index = class id

    def by_role(self, role: str) -> list[str]:
        return [c for c, r in self.columns.items() if r == role]

    @property
    def n_outputs(self) -> int:
        return 1 if self.problem_type == "regression" else len(self.classes)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_json(cls, text: str) -> "Schema":
        return cls(**json.loads(text))


def infer_role(s: pd.Series) -> str:
    """image (paths to image files) / text (free text) / categorical / numeric."""
    if pd.api.types.is_bool_dtype(s):
        return "categorical"
    if pd.api.types.is_numeric_dtype(s):
        return "numeric"
    values = s.dropna().astype(str)
    values = values[values.str.strip() != ""]
    if values.empty:
        return "categorical"
    if values.str.lower().str.endswith(IMAGE_SUFFIXES).mean() >= 0.8:
        return "image"
    if pd.to_numeric(values, errors="coerce").notna().mean() >= 0.95:
        return "numeric"
    words = values.str.split().str.len().mean()
    unique_ratio = values.nunique() / len(values)
    if words >= 3 or (unique_ratio > 0.5 and values.str.len().mean() >= 10):
        return "text"
    return "categorical"


def infer_problem_type(y: pd.Series) -> str:
    y = y.dropna()
    n_unique = y.nunique()
    if not pd.api.types.is_numeric_dtype(y) or pd.api.types.is_bool_dtype(y):
        return "binary" if n_unique == 2 else "multiclass"
    integral = np.allclose(y.to_numpy(dtype=float), np.round(y.to_numpy(dtype=float)))
    if integral and n_unique == 2:
        return "binary"
    if integral and n_unique <= MAX_CLASSES_FOR_INT_LABEL:
        return "multiclass"
    return "regression"


def infer_schema(
    df: pd.DataFrame,
    label: str,
    *,
    column_types: dict[str, str] | None = None,
    problem_type: str | None = None,
) -> Schema:
    """Infer roles and problem type. Raises DataError for unusable labels or overrides."""
    column_types = dict(column_types or {})
    for col, role in column_types.items():
        if col not in df.columns:
            raise DataError(f"--column-types names {col!r}, which is not a column; columns: {', '.join(map(str, df.columns))}")
        if role not in ROLES + ("ignore",):
            raise DataError(f"--column-types {col}={role}: role must be one of {', '.join(ROLES)}, ignore")
    if problem_type is not None and problem_type not in PROBLEM_TYPES:
        raise DataError(f"problem type {problem_type!r} must be one of {', '.join(PROBLEM_TYPES)}")

    y = df[label]
    ptype = problem_type or infer_problem_type(y)
    n_unique = y.dropna().nunique()
    if n_unique < 2:
        value = y.dropna().iloc[0] if n_unique else None
        raise DataError(
            f"label column {label!r} has a single value ({value!r}) in every labelled row: "
            "nothing to learn; pick another label or add rows of other classes"
        )
    if ptype == "regression" and not pd.api.types.is_numeric_dtype(y):
        raise DataError(f"label column {label!r} is not numeric, so it cannot be a regression target; use --problem-type multiclass")
    if ptype == "binary" and n_unique != 2:
        raise DataError(f"label column {label!r} has {n_unique} classes, not 2; use --problem-type multiclass")

    columns = {}
    for col in df.columns:
        if col == label:
            continue
        role = column_types.get(col) or infer_role(df[col])
        if role != "ignore":
            columns[col] = role
    if not columns:
        raise DataError(f"the table has no feature columns besides the label {label!r}")
    classes = None
    if ptype != "regression":
        classes = sorted(_json_native(v) for v in y.dropna().unique())
    return Schema(label=label, problem_type=ptype, columns=columns, classes=classes)


def _json_native(v: Any) -> Any:
    return v.item() if isinstance(v, np.generic) else v

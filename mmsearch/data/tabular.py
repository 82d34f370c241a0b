"""Tabular preprocessing fitted on train rows only; its state is plain JSON (no pickles)."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd

MISSING_ID, UNKNOWN_ID = 0, 1  # reserved categorical ids; seen values start at 2
CLIP = 10.0                    # standardized numerics are clipped to +-CLIP


@dataclass
class TabularPreprocessor:
    numeric: list[str]
    categorical: list[str]
    means: list[float] = field(default_factory=list)
    stds: list[float] = field(default_factory=list)
    vocab: dict[str, list[str]] = field(default_factory=dict)

    def fit(self, train: pd.DataFrame) -> "TabularPreprocessor":
        num = self._numeric(train)
        self.means = [float(m) if np.isfinite(m) else 0.0 for m in np.nanmean(num, axis=0)] if num.size else [0.0] * len(self.numeric)
        stds = np.nanstd(num, axis=0) if num.size else np.ones(len(self.numeric))
        self.stds = [float(s) if np.isfinite(s) and s > 1e-12 else 1.0 for s in stds]
        self.vocab = {c: sorted(set(_as_str(train[c]).dropna())) for c in self.categorical}
        return self

    @property
    def cardinalities(self) -> list[int]:
        return [len(self.vocab[c]) + 2 for c in self.categorical]

    def transform(self, df: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(numeric float32 [N, n_num] standardized with missing -> 0 (= the train mean),
        numeric presence mask bool [N, n_num], categorical ids int64 [N, n_cat])."""
        num = self._numeric(df)
        present = np.isfinite(num)
        scaled = (num - np.asarray(self.means)) / np.asarray(self.stds)
        scaled = np.clip(np.where(present, scaled, 0.0), -CLIP, CLIP).astype(np.float32)
        cats = np.zeros((len(df), len(self.categorical)), dtype=np.int64)
        for j, c in enumerate(self.categorical):
            index = {v: i + 2 for i, v in enumerate(self.vocab[c])}
            values = _as_str(df[c])
            cats[:, j] = [MISSING_ID if v is None or v != v else index.get(v, UNKNOWN_ID) for v in values]
        return scaled, present, cats

    def without(self, columns: list[str]) -> "TabularPreprocessor":
        """The fitted state of the other columns (the statistics of those are unchanged)."""
        keep = [i for i, c in enumerate(self.numeric) if c not in columns]
        return TabularPreprocessor(
            numeric=[self.numeric[i] for i in keep], categorical=[c for c in self.categorical if c not in columns],
            means=[self.means[i] for i in keep], stds=[self.stds[i] for i in keep],
            vocab={c: v for c, v in self.vocab.items() if c not in columns})

    def _numeric(self, df: pd.DataFrame) -> np.ndarray:
        if not self.numeric:
            return np.zeros((len(df), 0))
        num = np.stack([pd.to_numeric(df[c], errors="coerce").to_numpy(dtype=float) for c in self.numeric], axis=1)
        return np.where(np.isinf(num), np.nan, num)  # +-inf is missing (data.checks): never part of a mean

    def to_dict(self) -> dict:
        return asdict(self)


def _as_str(s: pd.Series) -> pd.Series:
    """Categories compare as strings so 1, 1.0 and '1' from different readers agree."""
    def one(v):
        if v is None or (isinstance(v, float) and np.isnan(v)):
            return None
        if isinstance(v, float) and v.is_integer():
            v = int(v)
        return str(v)

    return s.astype(object).map(one)


@dataclass
class TargetEncoder:
    """Class values -> ids for classification; standardization for regression targets."""
    problem_type: str
    classes: list | None = None
    mean: float = 0.0
    std: float = 1.0

    def fit(self, y_train: pd.Series) -> "TargetEncoder":
        if self.problem_type == "regression":
            self.mean = float(y_train.mean())
            self.std = float(y_train.std(ddof=0)) or 1.0
        return self

    def encode(self, y: pd.Series) -> np.ndarray:
        if self.problem_type == "regression":
            return ((y.to_numpy(dtype=float) - self.mean) / self.std).astype(np.float32)
        index = {v: i for i, v in enumerate(self.classes)}
        return np.array([index[v] for v in y.tolist()], dtype=np.int64)

    def decode_regression(self, values: np.ndarray) -> np.ndarray:
        return values * self.std + self.mean

    def to_dict(self) -> dict:
        return asdict(self)

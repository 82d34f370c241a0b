"""What a built-in table loader returns: a CSV in the cache plus what to learn from it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

ProblemType = str  # "binary" | "multiclass" | "regression"


@dataclass(frozen=True)
class TableDataset:
    name: str
    path: Path  # CSV table; image paths inside it are relative to path.parent
    label: str
    problem_type: ProblemType
    description: str

    @property
    def root(self) -> Path:
        """The folder that relative image paths in the table are relative to."""
        return self.path.parent

    def load(self) -> pd.DataFrame:
        return pd.read_csv(self.path)

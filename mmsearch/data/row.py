"""One training row's raw inputs, as the per-row hook (Trick.augment_row) sees them: arrays
before tensors are made, named by modality, so that tricks never spell the dataset's keys."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .tabular import MISSING_ID


@dataclass(frozen=True)
class TrainColumns:
    """The present values of each tabular column over the training rows (read only; shared by
    every row): what swap noise draws a replacement from, so a swapped cell holds a value that
    column really takes, as often as the training rows take it."""
    num: tuple[np.ndarray, ...]  # per numeric column: float32 standardised values where present
    cat: tuple[np.ndarray, ...]  # per categorical column: int64 ids other than the missing id

    @classmethod
    def of(cls, num: np.ndarray, num_present: np.ndarray, cat: np.ndarray) -> "TrainColumns":
        return cls(num=tuple(num[num_present[:, j], j] for j in range(num.shape[1])),
                   cat=tuple(cat[cat[:, j] != MISSING_ID, j] for j in range(cat.shape[1])))


@dataclass
class Row:
    """A training row's inputs. The arrays are this item's own copies: a hook may change them in
    place or replace them, keeping shapes and dtypes. A missing input must stay missing (and a
    present one present): change values, never the presence masks."""
    index: int                 # the row's position in the prepared table
    images: np.ndarray         # uint8 [n_img, 3, S, S]; zeros where an image is missing ([0, ...] without images)
    image_present: np.ndarray  # bool [n_img]
    text: str | None           # the row's free text ('' when missing; None when the model reads no text).
                               # Columns that a view renders into the text are added after the hooks
    num: np.ndarray            # float32 [n_num], standardised; 0 where missing
    num_present: np.ndarray    # bool [n_num]
    cat: np.ndarray            # int64 [n_cat] category ids; MISSING_ID where missing
    columns: TrainColumns      # the training rows' values per column (read only)

    @property
    def cat_present(self) -> np.ndarray:
        return self.cat != MISSING_ID

"""Prepared rows -> tensors. Missing values in every modality travel as masks, never as errors:
the encoders turn a masked input into the modality's missing representation."""
from __future__ import annotations

from typing import Callable

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from .images import load_image
from .prepare import PreparedData
from .view import TableView

Tokenize = Callable[[list[str]], tuple[torch.Tensor, torch.Tensor]]
IMAGE_CACHE_BYTES = 2 * 1024**3  # decoded images are kept in memory when they fit in this


class RowDataset(Dataset):
    """Items are dicts: image uint8 [n_img, 3, S, S] + image_mask [n_img]; text_ids/text_attn [L]
    + text_mask; num float [n_num] + num_mask [n_num]; cat int64 [n_cat] (0 = missing);
    label (absent for unlabelled rows); index (row position in the prepared table, for aligning
    predictions)."""

    def __init__(self, data: PreparedData, part: str, *, view: TableView | None = None, image_size: int = 0,
                 tokenize: Tokenize | None = None):
        """`view`: what the model sees of the table (the model's own, `model.view`); default the
        whole table as prepared."""
        self._setup(data.rows(part), view or TableView.of(data), labels=data.labels(part), index=data.split[part],
                    image_size=image_size, tokenize=tokenize)

    @classmethod
    def from_rows(cls, rows: pd.DataFrame, view: TableView, *, image_size: int = 0,
                  tokenize: Tokenize | None = None) -> "RowDataset":
        """New, unlabelled rows already cast like a prepared table (data.conform): the predict path.
        The same tensors as in training follow, so a row gets the same prediction."""
        ds = cls.__new__(cls)
        ds._setup(rows, view, labels=None, index=np.arange(len(rows)), image_size=image_size, tokenize=tokenize)
        return ds

    def _setup(self, rows: pd.DataFrame, view: TableView, *, labels, index, image_size: int,
               tokenize: Tokenize | None) -> None:
        self.index = torch.as_tensor(index)
        self.labels = None if labels is None else torch.as_tensor(labels)
        num, num_mask, cat = view.tabular.transform(rows)
        self.num, self.num_mask, self.cat = torch.as_tensor(num), torch.as_tensor(num_mask), torch.as_tensor(cat)
        self.image_size = image_size
        image_cols = view.schema.by_role("image") if image_size else []  # image_size 0: no image encoder
        self.image_paths = [[p if isinstance(p, str) else None for p in r] for r in rows[image_cols].itertuples(index=False)]
        n_bytes = len(rows) * len(image_cols) * 3 * image_size**2
        self._cache: dict[str, np.ndarray] | None = {} if n_bytes <= IMAGE_CACHE_BYTES else None
        texts = view.texts(rows) if tokenize is not None else None
        if texts is not None:
            self.text_ids, self.text_attn = tokenize(texts)
            self.text_mask = torch.tensor([bool(t) for t in texts])
        else:
            self.text_ids = self.text_attn = self.text_mask = None

    def __len__(self) -> int:
        return len(self.index)

    def _image(self, path: str) -> np.ndarray:
        if self._cache is None:
            return load_image(path, self.image_size)
        if path not in self._cache:
            self._cache[path] = load_image(path, self.image_size)
        return self._cache[path]

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        item = {} if self.labels is None else {"label": self.labels[i]}
        item.update(index=self.index[i], num=self.num[i], num_mask=self.num_mask[i], cat=self.cat[i])
        if paths := self.image_paths[i]:
            blank = np.zeros((3, self.image_size, self.image_size), np.uint8)
            item["image"] = torch.from_numpy(np.stack([self._image(p) if p else blank for p in paths]))
            item["image_mask"] = torch.tensor([p is not None for p in paths])
        if self.text_ids is not None:
            item.update(text_ids=self.text_ids[i], text_attn=self.text_attn[i], text_mask=self.text_mask[i])
        return item

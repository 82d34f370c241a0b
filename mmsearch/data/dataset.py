"""Prepared rows -> tensors. Missing values in every modality travel as masks, never as errors:
the encoders turn a masked input into the modality's missing representation."""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from .batch import ENCODED
from .images import load_image
from .prepare import PreparedData
from .row import Row, TrainColumns
from .view import TableView

Tokenize = Callable[[list[str]], tuple[torch.Tensor, torch.Tensor]]
RowHook = Callable[[Row, np.random.Generator], Row]  # Trick.augment_row
IMAGE_CACHE_BYTES = 2 * 1024**3  # decoded images are kept in memory when they fit in this


class RowDataset(Dataset):
    """Items are dicts: image uint8 [n_img, 3, S, S] + image_mask [n_img]; text_ids/text_attn [L]
    + text_mask; num float [n_num] + num_mask [n_num]; cat int64 [n_cat] (0 = missing);
    label (absent for unlabelled rows); index (row position in the prepared table, for aligning
    predictions).

    A training set may be given per-row hooks (`augment`, the tricks' augment_row): each item is
    then built as a Row, passed through the hooks with a generator seeded from (seed, epoch,
    row index), and made into tensors; a changed text is tokenized again for that item. This runs
    in the DataLoader's workers when it has some. Evaluation and predict sets have no hooks."""

    def __init__(self, data: PreparedData, part: str, *, view: TableView | None = None, image_size: int = 0,
                 tokenize: Tokenize | None = None, augment: Sequence[RowHook] = (), seed: int = 0,
                 rows: np.ndarray | None = None, encodings: dict[str, np.ndarray] | None = None):
        """`view`: what the model sees of the table (the model's own, `model.view`); default the
        whole table as prepared. `augment`: per-row hooks for a training set, `seed` the trial's.
        `rows`: positions within the part to keep (default all), e.g. a training set without the
        rows a trick holds out. `encodings`: modality -> a frozen encoder's cached encodings of every
        table row (data.feature_cache): items then carry ``encoded_<modality>`` and the presence
        mask instead of the decoded images / tokens."""
        keep = slice(None) if rows is None else np.asarray(rows, dtype=np.int64)
        self.encodings = encodings or {}
        self._setup(data.rows(part).iloc[keep], view or TableView.of(data), labels=data.labels(part)[keep],
                    index=data.split[part][keep], image_size=image_size, tokenize=tokenize)
        if augment:
            self._augment_with(list(augment), seed, tokenize)

    @classmethod
    def from_rows(cls, rows: pd.DataFrame, view: TableView, *, image_size: int = 0,
                  tokenize: Tokenize | None = None) -> "RowDataset":
        """New, unlabelled rows already cast like a prepared table (data.conform): the predict path.
        The same tensors as in training follow, so a row gets the same prediction."""
        ds = cls.__new__(cls)
        ds.encodings = {}
        ds._setup(rows, view, labels=None, index=np.arange(len(rows)), image_size=image_size, tokenize=tokenize)
        return ds

    def _setup(self, rows: pd.DataFrame, view: TableView, *, labels, index, image_size: int,
               tokenize: Tokenize | None) -> None:
        self.index = torch.as_tensor(index)
        self.labels = None if labels is None else torch.as_tensor(labels)
        num, num_mask, cat = view.tabular.transform(rows)
        self.num, self.num_mask, self.cat = torch.as_tensor(num), torch.as_tensor(num_mask), torch.as_tensor(cat)
        self.image_size = image_size
        # image_size 0: no image encoder; cached encodings: only which images are present
        image_cols = view.schema.by_role("image") if image_size or "image" in self.encodings else []
        self.image_paths = [[p if isinstance(p, str) else None for p in r] for r in rows[image_cols].itertuples(index=False)]
        n_bytes = len(rows) * len(image_cols) * 3 * image_size**2
        self._cache: dict[str, np.ndarray] | None = {} if n_bytes <= IMAGE_CACHE_BYTES else None
        self._text_parts = view.text_parts(rows) if tokenize is not None or "text" in self.encodings else None
        self._join_text = view.join_text
        if self._text_parts is not None:
            texts = [view.join_text(fields, free) for fields, free in self._text_parts]
            self.text_mask = torch.tensor([bool(t) for t in texts])
            # cached encodings: only which texts are present, no tokens
            self.text_ids, self.text_attn = (None, None) if "text" in self.encodings else tokenize(texts)
        else:
            self.text_ids = self.text_attn = self.text_mask = None
        self._hooks: list[RowHook] = []

    def _augment_with(self, hooks: list[RowHook], seed: int, tokenize: Tokenize | None) -> None:
        self._hooks, self._seed, self._tokenize = hooks, seed, tokenize
        self._columns = TrainColumns.of(self.num.numpy(), self.num_mask.numpy(), self.cat.numpy())
        # in shared memory: DataLoader workers, persistent ones included, read the epoch the
        # training process sets, and keep their image caches across epochs
        self._epoch = torch.zeros((), dtype=torch.int64).share_memory_()

    def set_epoch(self, epoch: int) -> None:
        """The epoch whose augmentation the items draw (call before iterating over it)."""
        if self._hooks:
            self._epoch.fill_(epoch)

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
        for m, encoded in self.encodings.items():
            item[f"{ENCODED}{m}"] = torch.from_numpy(np.array(encoded[int(self.index[i])]))
        if (paths := self.image_paths[i]) and "image" in self.encodings:
            item["image_mask"] = torch.tensor([p is not None for p in paths])
        elif paths:
            blank = np.zeros((3, self.image_size, self.image_size), np.uint8)
            item["image"] = torch.from_numpy(np.stack([self._image(p) if p else blank for p in paths]))
            item["image_mask"] = torch.tensor([p is not None for p in paths])
        if self.text_ids is not None:
            item.update(text_ids=self.text_ids[i], text_attn=self.text_attn[i], text_mask=self.text_mask[i])
        elif "text" in self.encodings:
            item["text_mask"] = self.text_mask[i]
        if self._hooks:
            item.update(self._augmented(i, item))
        return item

    def _augmented(self, i: int, item: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The item's inputs after the hooks. Presence masks are the dataset's: never read back."""
        index = int(self.index[i])
        # a function of (seed, epoch, row) alone: the same whichever worker, batch or rank draws
        # the row, and the same in a resumed trial
        rng = np.random.default_rng([self._seed & (2**63 - 1), int(self._epoch), index])
        fields, free = self._text_parts[i] if self._text_parts is not None else ("", None)
        images = item["image"].numpy() if "image" in item else np.zeros((0, 3, self.image_size, self.image_size), np.uint8)
        row = Row(index=index, images=images, image_present=item.get("image_mask", torch.zeros(0, dtype=torch.bool)).numpy().copy(),
                  text=free, num=self.num[i].numpy().copy(), num_present=self.num_mask[i].numpy().copy(),
                  cat=self.cat[i].numpy().copy(), columns=self._columns)
        for hook in self._hooks:
            row = hook(row, rng)
        out = dict(num=torch.from_numpy(row.num), cat=torch.from_numpy(row.cat))
        if "image" in item:
            out["image"] = torch.from_numpy(row.images)
        if row.text != free:  # unchanged texts keep the tokens made once at setup
            text = self._join_text(fields, row.text)
            ids, attn = self._tokenize([text])
            out.update(text_ids=ids[0], text_attn=attn[0], text_mask=torch.tensor(bool(text)))
        return out

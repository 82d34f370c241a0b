"""Table -> prepared data (schema, split, fitted preprocessing), written once, reused by trials.

A prepared directory holds:
  table.parquet     the feature columns + label; image paths made absolute
  schema.json       column roles, problem type, classes
  split.json        row positions of train / val / holdout (predictions align with these)
  preprocess.json   fitted tabular + target state (plain JSON: no pickles)
  images/           copies of the images, named in the table relative to the directory: only
                    in an experiment on object storage (embed_images)
"""
from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .._atomic import atomic_dir, atomic_file
from ..errors import DataError
from .checks import check_regression_label, check_split, warn_infinite_features
from .images import check_images, resolve_paths
from .schema import Schema, infer_schema
from .split import PARTS, split_rows
from .tabular import TabularPreprocessor, TargetEncoder

FILES = ("table.parquet", "schema.json", "split.json", "preprocess.json")
_IMAGES = "images"  # embed_images' copies


def read_table(source: str | Path | pd.DataFrame) -> tuple[pd.DataFrame, Path]:
    """(table, folder that relative image paths are relative to)."""
    if isinstance(source, pd.DataFrame):
        _check_unique_columns(list(source.columns))
        return source.reset_index(drop=True), Path.cwd()
    path = Path(source).expanduser()
    if path.is_dir():
        raise DataError(f"table {path} is a folder; give the table file inside it (.csv, .tsv or .parquet)")
    if not path.is_file():
        raise DataError(f"table {path} does not exist")
    suffix = "".join(path.suffixes[-2:]).lower() if path.suffix.lower() in (".gz", ".bz2", ".zip") else path.suffix.lower()
    if not suffix.startswith((".csv", ".tsv")) and suffix not in (".parquet", ".pq"):
        raise DataError(f"table {path}: unsupported format {suffix!r}; use .csv, .tsv or .parquet")
    try:
        df = _read(path, suffix)
    except UnicodeDecodeError as e:
        raise DataError(f"table {path} is not UTF-8 text (byte {e.object[e.start:e.start + 1]!r} at offset {e.start}); "
                        "save it as UTF-8") from None
    except pd.errors.EmptyDataError:
        raise DataError(f"table {path} is empty: no header, no rows") from None
    except (pd.errors.ParserError, OSError, ValueError) as e:  # ValueError: pyarrow's ArrowInvalid
        if isinstance(e, DataError):
            raise
        raise DataError(f"table {path} cannot be read as {suffix.lstrip('.')} ({str(e).strip().splitlines()[0]}); "
                        "check the file's format and delimiter") from None
    return df, path.parent.resolve()


def _read(path: Path, suffix: str) -> pd.DataFrame:
    if suffix.startswith((".csv", ".tsv")):
        sep = "\t" if suffix.startswith(".tsv") else ","
        # pandas renames duplicate headers ('a.1'): read the header as a row first (compressed too)
        header = pd.read_csv(path, sep=sep, encoding="utf-8", header=None, nrows=1, dtype=str, keep_default_na=False)
        _check_unique_columns(header.iloc[0].tolist() if len(header) else [])
        return pd.read_csv(path, sep=sep, encoding="utf-8")
    import pyarrow.parquet as pq

    _check_unique_columns(pq.read_schema(path).names)
    return pd.read_parquet(path)


def _delimiter_hint(df: pd.DataFrame) -> str:
    """A table read as one column whose name holds another delimiter was split on the wrong one."""
    if len(df.columns) == 1 and (found := [d for d in (";", "\t", "|") if d in str(df.columns[0])]):
        return (f" (the whole header was read as one column: the file seems separated by {found[0]!r}; use a comma "
                "separated .csv, or a tab separated .tsv)")
    return ""


def _is_missing(v) -> bool:
    return v is None or (isinstance(v, float) and np.isnan(v)) or v is pd.NA


def cast_columns(df: pd.DataFrame, schema: Schema, base_dir: Path, *, treat_bad_images_as_missing: bool) -> pd.DataFrame:
    """Feature columns as every trial reads them: image paths absolute (and checked), text and
    categorical cells str or None. Used by prepare and, on new rows, by predict (data.conform),
    so a row gets the same values in both."""
    df = df.copy()
    for col in schema.by_role("image"):
        df[col] = resolve_paths(df[col], base_dir)
    df = check_images(df, schema.by_role("image"), treat_bad_as_missing=treat_bad_images_as_missing)
    for col in schema.by_role("text") + schema.by_role("categorical"):  # one dtype per column for parquet
        df[col] = pd.Series([None if _is_missing(v) else str(v) for v in df[col]], index=df.index, dtype=object)
    return df


def _check_unique_columns(names: list) -> None:
    seen, dups = set(), []
    for n in names:
        if n in seen and n not in dups:
            dups.append(n)
        seen.add(n)
    if dups:
        raise DataError(f"duplicate column names: {', '.join(map(repr, dups))}; rename them so each column is unique")


@dataclass
class PreparedData:
    dir: Path
    table: pd.DataFrame
    schema: Schema
    split: dict[str, np.ndarray]
    tabular: TabularPreprocessor
    target: TargetEncoder

    def rows(self, part: str) -> pd.DataFrame:
        return self.table.iloc[self.split[part]]

    def labels(self, part: str) -> np.ndarray:
        return self.target.encode(self.rows(part)[self.schema.label])

    @classmethod
    def load(cls, directory: str | Path) -> "PreparedData":
        d = Path(directory)
        missing = [f for f in FILES if not (d / f).is_file()]
        if missing:
            raise DataError(f"{d} is not a prepared data directory (missing {', '.join(missing)})")
        state = json.loads((d / "preprocess.json").read_text())
        split = {k: np.asarray(v, dtype=np.int64) for k, v in json.loads((d / "split.json").read_text()).items()}
        schema = Schema.from_json((d / "schema.json").read_text())
        table = pd.read_parquet(d / "table.parquet")
        for col in schema.by_role("image"):  # embedded images (embed_images) are relative to d
            table[col] = [str(d / v) if isinstance(v, str) and not os.path.isabs(v) else v for v in table[col]]
        return cls(
            dir=d,
            table=table,
            schema=schema,
            split=split,
            tabular=TabularPreprocessor(**state["tabular"]),
            target=TargetEncoder(**state["target"]),
        )


def read_state(directory: str | Path) -> tuple[dict, dict]:
    """(schema, preprocessing state) as prepare wrote them, without reading the table: what an
    exported bundle carries."""
    d = Path(directory)
    missing = [f for f in ("schema.json", "preprocess.json") if not (d / f).is_file()]
    if missing:
        raise DataError(f"{d} is not a prepared data directory (missing {', '.join(missing)})")
    try:
        return json.loads((d / "schema.json").read_text()), json.loads((d / "preprocess.json").read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(f"{d} is damaged ({e}); prepare the table again") from None


def prepare(
    source: str | Path | pd.DataFrame,
    label: str,
    out_dir: str | Path,
    *,
    column_types: dict[str, str] | None = None,
    problem_type: str | None = None,
    val_frac: float = 0.15,
    holdout_frac: float = 0.15,
    seed: int = 0,
    missing_images: bool = False,
) -> PreparedData:
    """Validate the table, infer its schema, split it, fit preprocessing on train, and write it
    all to out_dir. Every check runs before anything is written; the directory appears whole."""
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        raise DataError(f"{out} exists and is not empty; choose a new directory")
    df, base_dir = read_table(source)
    if df.empty or len(df.columns) == 0:
        raise DataError("the table is empty: it has no rows" if len(df.columns) else "the table has no columns")
    if label not in df.columns:
        raise DataError(f"label column {label!r} not found; columns: {', '.join(map(str, df.columns))}{_delimiter_hint(df)}")
    # every part needs rows: trials are scored on val and holdout (an empty holdout crashed them)
    if not (0 < val_frac < 1 and 0 < holdout_frac < 1 and val_frac + holdout_frac < 1):
        raise DataError(f"--val-frac {val_frac} / --holdout-frac {holdout_frac}: need both > 0 and their sum < 1 "
                        "(defaults 0.15 and 0.15)")
    unlabelled = df[label].isna()
    if unlabelled.all():
        raise DataError(f"label column {label!r} is empty (NaN) in all {len(df)} rows")
    row_ids = np.flatnonzero(~unlabelled.to_numpy())  # the table's row numbers, for messages
    if unlabelled.any():  # rows without a label teach nothing: drop them, loudly
        rows = list(df.index[unlabelled][:5])
        print(f"mmsearch: dropping {int(unlabelled.sum())} rows with no {label!r} (rows {rows}{' ...' if unlabelled.sum() > 5 else ''})")
        df = df[~unlabelled].reset_index(drop=True)

    schema = infer_schema(df, label, column_types=column_types, problem_type=problem_type)
    if schema.problem_type == "regression":
        check_regression_label(df, label, row_ids)
    warn_infinite_features(df, schema.by_role("numeric"), row_ids)
    df = cast_columns(df[[*schema.columns, label]], schema, base_dir, treat_bad_images_as_missing=missing_images)

    target = TargetEncoder(schema.problem_type, classes=schema.classes)
    y = target.encode(df[label]) if schema.problem_type != "regression" else None
    split = split_rows(len(df), y, val_frac=val_frac, holdout_frac=holdout_frac, seed=seed)
    check_split(split, len(df), val_frac=val_frac, holdout_frac=holdout_frac, classes=None if y is None else len(schema.classes))
    train = df.iloc[split["train"]]
    tabular = TabularPreprocessor(schema.by_role("numeric"), schema.by_role("categorical")).fit(train)
    target.fit(train[label])

    with atomic_dir(out) as tmp:
        df.to_parquet(tmp / "table.parquet", index=False)
        (tmp / "schema.json").write_text(schema.to_json())
        (tmp / "split.json").write_text(json.dumps({p: split[p].tolist() for p in PARTS}))
        (tmp / "preprocess.json").write_text(json.dumps({"tabular": tabular.to_dict(), "target": target.to_dict()}, indent=1))
    return PreparedData(out, df, schema, split, tabular, target)


def embed_images(directory: str | Path) -> int:
    """Copy the images a prepared table names into its folder (images/) and point the table at
    the copies, by paths relative to the folder: the table then travels whole, to nodes that do
    not share the file system it was prepared on (an experiment on object storage). Returns the
    number of files copied."""
    d = Path(directory)
    schema = Schema.from_json((d / "schema.json").read_text())
    columns = schema.by_role("image")
    if not columns:
        return 0
    df = pd.read_parquet(d / "table.parquet")
    copies: dict[str, str] = {}
    (d / _IMAGES).mkdir(exist_ok=True)
    for col in columns:
        for path in df[col].dropna().unique():
            if path not in copies:
                copies[path] = f"{_IMAGES}/{len(copies):06d}{Path(path).suffix.lower()}"
                shutil.copyfile(path, d / copies[path])
        df[col] = [copies.get(v) if isinstance(v, str) else v for v in df[col]]
    with atomic_file(d / "table.parquet", "wb") as f:
        df.to_parquet(f, index=False)
    return len(copies)

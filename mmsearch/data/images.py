"""Image paths: resolving, validating, loading (RGBA composited onto white, fitted to a square)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageOps

from ..errors import DataError


def resolve_paths(values: pd.Series, base_dir: Path) -> pd.Series:
    """Absolute path strings; relative paths are relative to the table's folder. NaN/'' -> None."""
    def one(v):
        if v is None or (isinstance(v, float) and np.isnan(v)) or str(v).strip() == "":
            return None
        p = Path(str(v)).expanduser()
        return str(p if p.is_absolute() else (base_dir / p).resolve())

    return pd.Series([one(v) for v in values], index=values.index, dtype=object)


def _problem(path: str) -> str | None:
    if not Path(path).is_file():
        return "does not exist"
    try:
        with Image.open(path) as im:
            im.size  # header parsed: it is an image PIL can read
    except Exception as e:  # PIL raises several types for non-images
        return f"is not a readable image ({type(e).__name__})"
    return None


def check_images(df: pd.DataFrame, columns: list[str], *, treat_bad_as_missing: bool) -> pd.DataFrame:
    """Validate every image path. Bad ones are an error (count + first few), or become missing."""
    df = df.copy()
    for col in columns:
        bad = [(i, p, why) for i, p in df[col].items() if isinstance(p, str) and (why := _problem(p))]
        if not bad:
            continue
        if treat_bad_as_missing:
            df.loc[[i for i, _, _ in bad], col] = None
            continue
        shown = "; ".join(f"row {i}: {p} {why}" for i, p, why in bad[:3])
        raise DataError(
            f"image column {col!r}: {len(bad)} of {df[col].notna().sum()} paths are unusable ({shown}"
            f"{'; ...' if len(bad) > 3 else ''}); fix the paths (relative paths are read from the "
            "table's folder) or pass --missing-images to treat them as missing images"
        )
    return df


def load_image(path: str, size: int) -> np.ndarray:
    """uint8 [3, size, size]: transparency composited onto white, center-cropped to square."""
    with Image.open(path) as im:
        im.load()
        if im.mode in ("RGBA", "LA", "P"):
            im = im.convert("RGBA")
            background = Image.new("RGBA", im.size, (255, 255, 255, 255))
            im = Image.alpha_composite(background, im)
        im = ImageOps.fit(im.convert("RGB"), (size, size), method=Image.BICUBIC)
    return np.asarray(im, dtype=np.uint8).transpose(2, 0, 1).copy()

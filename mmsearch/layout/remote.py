"""A folder on object storage (s3://, gs://, hdfs://, or any fsspec protocol) and the copies of it
that this machine works on.

mmsearch reads and writes its files by path: the prepared table, checkpoints, predictions. On
object storage it works on a mirror of the folder under the cache (`$MMSEARCH_CACHE/remote/`)
and syncs it with the folder at fixed moments: a trial pulls the prepared table once per node
and pushes its run directory after each checkpoint; a command (`status`, `ensemble`, `export`,
`report`) pulls the experiment first and pushes what it wrote. Ray Tune and Ray Train write their
own state to the URI themselves (storage_path).

The filesystem comes from pyarrow (`FileSystem.from_uri`: s3, gs, hdfs, file; credentials and
endpoints as pyarrow reads them: the usual AWS_* / GOOGLE_* variables, or the URI's query, e.g.
`s3://bucket/runs?endpoint_override=host:9000&scheme=http`), else from fsspec, the order Ray Tune
uses for its storage_path.

A sync compares sizes and modification times: after each transfer the local copy takes the
remote file's time, so a file is unchanged while both agree and a later local write (a new time)
is seen. Files go up oldest-written first, so a reader of the folder never sees a checkpoint's
trainer state (written last: it marks the checkpoint complete) before the rest of it, nor a
metrics line before its checkpoint; a node that dies mid-upload leaves a checkpoint without it,
which readers and restarts pass over.
"""
from __future__ import annotations

import functools
import hashlib
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable
from urllib.parse import urlsplit, urlunsplit

from .._cache import cache_dir
from ..errors import ConfigError

Skip = Callable[[str], bool]  # a relative path (posix) -> leave it out of the sync
_TRANSFERS = 16  # files in flight at once where their order does not matter


def is_remote(value) -> bool:
    """A URI whose scheme is not file://."""
    text = str(value)
    return "://" in text and urlsplit(text).scheme not in ("", "file")


def join(uri: str, *parts: str) -> str:
    """uri/part/part, the query (endpoint options) kept at the end."""
    u = urlsplit(uri)
    path = "/".join([u.path.rstrip("/"), *(p.strip("/") for p in parts)])
    return urlunsplit((u.scheme, u.netloc, path, u.query, u.fragment))


def basename(uri: str) -> str:
    return urlsplit(uri).path.rstrip("/").rsplit("/", 1)[-1]


@dataclass(frozen=True)
class RemoteDir:
    uri: str
    _resolved: list = field(default_factory=list, compare=False, repr=False)  # [(fs, path)] once opened

    @property
    def fs(self):
        return self._open()[0]

    @property
    def path(self) -> str:
        return self._open()[1]

    def _open(self):
        if not self._resolved:
            self._resolved.append(_filesystem(self.uri))
        return self._resolved[0]

    def child(self, *parts: str) -> "RemoteDir":
        """A folder inside, on the same filesystem object (opening one may cost requests: S3 looks
        up the bucket's region)."""
        fs, path = self._open()
        return RemoteDir(join(self.uri, *parts), [(fs, "/".join([path.rstrip("/"), *parts]))])

    def mirror(self, role: str) -> Path:
        """This machine's copy of the folder, one per role: "view" for commands, "node" for trials
        (a trial's unpushed checkpoint must never meet a command's pull)."""
        root = cache_dir() / "remote" / hashlib.sha256(self.uri.rstrip("/").encode()).hexdigest()[:16]
        if not (root / "URI.txt").is_file():  # which folder this mirrors, for a person; written once
            root.mkdir(parents=True, exist_ok=True)
            (root / "URI.txt").write_text(self.uri + "\n")
        return root / role

    # -- queries ---------------------------------------------------------------------------------
    def exists(self, rel: str = "") -> bool:
        from pyarrow.fs import FileType

        return self._info(rel).type != FileType.NotFound

    def list_dirs(self) -> list[str]:
        """The names of the folders directly inside."""
        from pyarrow.fs import FileSelector, FileType

        infos = self.fs.get_file_info(FileSelector(self.path, allow_not_found=True))
        return sorted(Path(i.path).name for i in infos if i.type == FileType.Directory)

    def delete(self) -> None:
        if self.exists():
            self.fs.delete_dir(self.path)

    def signature(self) -> str:
        """A digest of the files below (names, sizes, times): it changes when any of them does."""
        listing = sorted((rel, size, mtime) for rel, (size, mtime) in self._files().items())
        return hashlib.sha256(repr(listing).encode()).hexdigest()

    def check_writable(self, flag: str) -> None:
        probe = self._join(f".mmsearch-write-test-{os.getpid()}")
        try:
            self.fs.create_dir(self.path, recursive=True)
            with self.fs.open_output_stream(probe) as f:
                f.write(b"ok")
            self.fs.delete_file(probe)
        except Exception as e:  # pyarrow raises OSError; fsspec backends their own
            raise ConfigError(f"{flag} {self.uri}: cannot write there ({type(e).__name__}: {str(e)[:300]}); check the "
                              f"bucket, its credentials (AWS_* / GOOGLE_* variables) and the endpoint") from None

    # -- sync ------------------------------------------------------------------------------------
    def pull(self, local: Path, *, skip: Skip | None = None, delete: bool = True) -> int:
        """Make `local` a copy of the folder (delete: also remove local files it does not hold).
        Returns the number of files fetched."""
        skip = skip or _nothing
        remote, here = self._files(), _local_files(local)
        wanted = [(rel, mtime) for rel, (size, mtime) in remote.items()
                  if not skip(rel) and not (rel in here and _same(here[rel], (size, mtime)))]

        def fetch(item) -> None:
            rel, mtime = item
            target = local / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
            with os.fdopen(fd, "wb") as out, self.fs.open_input_stream(self._join(rel)) as src:
                shutil.copyfileobj(src, out, 1 << 20)
            if mtime is not None:
                os.utime(tmp, ns=(mtime, mtime))
            os.replace(tmp, target)
        _each(fetch, wanted, parallel=True)  # a copy is read once the pull is over: any order will do
        fetched = len(wanted)
        if delete:
            for rel in sorted(set(here) - set(remote)):
                if not skip(rel):
                    (local / rel).unlink(missing_ok=True)
            _prune_empty(local)
        return fetched

    def push(self, local: Path, *, skip: Skip | None = None, delete: bool = True, unread: bool = False) -> int:
        """Make the folder a copy of `local` (delete: also remove what `local` no longer holds),
        oldest-written files first. unread: nobody reads the folder yet (a new experiment): the
        files go up side by side, in any order. Returns the number of files sent."""
        skip = skip or _nothing
        here, remote = _local_files(local), self._files()
        sent = [rel for rel, stat in sorted(here.items(), key=lambda kv: kv[1][1])
                if not skip(rel) and not (rel in remote and _same(stat, remote[rel]))]
        for folder in dict.fromkeys(self._join(rel).rsplit("/", 1)[0] for rel in sent):
            self.fs.create_dir(folder, recursive=True)  # once per folder: on S3 each call costs requests

        def send(rel: str) -> None:
            with open(local / rel, "rb") as src, self.fs.open_output_stream(self._join(rel)) as out:
                shutil.copyfileobj(src, out, 1 << 20)
        _each(send, sent, parallel=unread)
        if sent:  # the local copies take the remote times (one listing): unchanged until rewritten
            times = self._files()
            for rel in sent:
                mtime = times.get(rel, (None, None))[1]
                if mtime is not None:
                    os.utime(local / rel, ns=(mtime, mtime))
        if delete:
            gone = [rel for rel in sorted(set(remote) - set(here)) if not skip(rel)]
            for rel in gone:
                self.fs.delete_file(self._join(rel))
            self._prune_empty({p for rel in gone for p in _parents(rel)})
        return len(sent)

    # -- internals -------------------------------------------------------------------------------
    def _prune_empty(self, folders: set[str]) -> None:
        """Remove folders left empty (object stores have none; file systems and some do)."""
        from pyarrow.fs import FileSelector, FileType

        for rel in sorted(folders, key=lambda f: -f.count("/")):  # the deepest first
            path = self._join(rel)
            if self.fs.get_file_info(path).type == FileType.Directory and not self.fs.get_file_info(FileSelector(path)):
                self.fs.delete_dir(path)

    def _join(self, rel: str) -> str:
        return f"{self.path.rstrip('/')}/{rel}" if rel else self.path

    def _info(self, rel: str):
        return self.fs.get_file_info(self._join(rel))

    def _files(self) -> dict[str, tuple[int, int | None]]:
        """relative path -> (size, mtime in ns or None) of every file below."""
        from pyarrow.fs import FileSelector, FileType

        root = self.path.strip("/") + "/"  # fsspec backends may or may not give the leading /
        infos = self.fs.get_file_info(FileSelector(self.path, recursive=True, allow_not_found=True))
        return {i.path.lstrip("/")[len(root):]: (i.size, i.mtime_ns) for i in infos
                if i.type == FileType.File and i.path.lstrip("/").startswith(root)}


@functools.lru_cache(maxsize=64)  # a process opens the same experiment's URI again and again
def _filesystem(uri: str):
    """(pyarrow filesystem, path) for a URI: pyarrow's own, else fsspec's (as Ray Tune)."""
    import pyarrow.fs as pafs

    try:
        return pafs.FileSystem.from_uri(uri)
    except (ValueError, OSError) as first:  # pyarrow's ArrowInvalid is a ValueError
        try:
            import fsspec
            from pyarrow.fs import FSSpecHandler, PyFileSystem

            protocol = urlsplit(uri).scheme
            fs = fsspec.filesystem(protocol)
            return PyFileSystem(FSSpecHandler(fs)), fs._strip_protocol(uri)
        except Exception as e:
            raise ConfigError(f"{uri}: no filesystem for it ({first}; fsspec: {e}); pyarrow reads s3://, gs://, hdfs://, "
                              f"file://; other schemes need their fsspec package (e.g. adlfs for abfs://)") from None


def _each(fn, items: list, *, parallel: bool) -> None:
    """fn(item) for each item: in order, or on a few threads (object stores are latency-bound:
    a request per file)."""
    if not parallel or len(items) < 2:
        for item in items:
            fn(item)
        return
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=_TRANSFERS) as pool:
        list(pool.map(fn, items))  # list(): the first error is raised here


def _local_files(root: Path) -> dict[str, tuple[int, int]]:
    """relative path -> (size, mtime_ns) of every file below root, less transfers in progress."""
    out = {}
    if not root.is_dir():
        return out
    for folder, _, names in os.walk(root):
        for name in names:
            if name.endswith(".part") and name.startswith("."):
                continue
            p = Path(folder) / name
            st = p.stat()
            out[p.relative_to(root).as_posix()] = (st.st_size, st.st_mtime_ns)
    return out


def _same(a: tuple[int, int | None], b: tuple[int, int | None]) -> bool:
    """Same size and time; a filesystem without times never counts as unchanged."""
    return a[0] == b[0] and a[1] is not None and b[1] is not None and a[1] == b[1]


def _prune_empty(root: Path) -> None:
    for folder, _, _ in os.walk(root, topdown=False):
        if folder != str(root) and not os.listdir(folder):
            os.rmdir(folder)


def _parents(rel: str) -> list[str]:
    """a/b/c.txt -> [a/b, a]"""
    parts = rel.split("/")[:-1]
    return ["/".join(parts[:i]) for i in range(len(parts), 0, -1)]


def _nothing(rel: str) -> bool:
    return False

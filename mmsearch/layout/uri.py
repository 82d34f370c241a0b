"""Where an experiment lives, given as a path or a URI (`--storage`, an experiment argument).

`file://` URIs (what Ray Tune and pyarrow write) name a local or mounted path. Object storage
(`s3://`, `gs://`, ...) is not read directly: every node of a search reads the table and writes its
trial's run directory by path, so it must be a shared file system, which a FUSE mount of a bucket
(s3fs, gcsfuse, mountpoint-s3) also is."""
from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote, urlparse

from ..errors import ConfigError


def local_path(value: str | Path, flag: str) -> Path:
    text = str(value)
    if "://" not in text:
        return Path(text)
    url = urlparse(text)
    if url.scheme == "file":
        if url.netloc not in ("", "localhost"):
            raise ConfigError(f"{flag} {text}: a file:// URI names a path on this machine (file:///path), not host {url.netloc!r}")
        return Path(unquote(url.path))
    raise ConfigError(f"{flag} {text}: {url.scheme}:// storage is not read directly; mount it on every node (e.g. "
                      f"s3fs, gcsfuse, mountpoint-s3) and give the mounted path, or use a shared file system "
                      f"(README: On a cluster)")

"""A local folder given as a path or a file:// URI (what Ray Tune and pyarrow write). Object
storage (s3://, gs://, ...) is mmsearch.layout.remote's."""
from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote, urlparse

from ..errors import ConfigError


def local_path(value: str | Path, flag: str) -> Path:
    text = str(value)
    if "://" not in text:
        return Path(text)
    url = urlparse(text)
    if url.scheme != "file":
        raise ConfigError(f"{flag} {text}: not a local folder; {url.scheme}:// storage is read through its mirrors "
                          f"(mmsearch.layout.location)")
    if url.netloc not in ("", "localhost"):
        raise ConfigError(f"{flag} {text}: a file:// URI names a path on this machine (file:///path), not host {url.netloc!r}")
    return Path(unquote(url.path))

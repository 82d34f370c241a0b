"""This machine's cache folder: downloaded datasets, mirrors of experiments on object storage."""
from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """``$MMSEARCH_CACHE`` if set, else ``~/.cache/mmsearch``."""
    env = os.environ.get("MMSEARCH_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "mmsearch"

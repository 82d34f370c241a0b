"""Reading the JSON objects the layouts write (settings, trainer state, configs, the ensemble)."""
from __future__ import annotations

import json
from pathlib import Path


def read_object(path: Path, error: type[Exception], remedy: str = "") -> dict | None:
    """The JSON object in `path`, or None if there is no such file. A file that cannot be read or
    holds no object raises `error` naming it (and the remedy, if given)."""
    if not path.is_file():
        return None
    tail = f"; {remedy}" if remedy else ""
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise error(f"{path} is unreadable ({e}){tail}") from None
    if not isinstance(data, dict):
        raise error(f"{path} does not hold a JSON object{tail}")
    return data

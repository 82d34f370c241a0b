"""Name -> class registries for encoders, fusions and tricks (timm's `@register_model` habit).

Each entry is a class with a ``name`` and a frozen ``Config`` dataclass; the flat trial config
addresses an entry's fields as ``<namespace>.<name>.<field>``.
"""
from __future__ import annotations

import difflib
import fnmatch
import warnings
from dataclasses import fields, is_dataclass
from typing import Generic, Iterator, TypeVar

from .errors import ConfigError

T = TypeVar("T", bound=type)


def did_you_mean(name: str, valid: list[str]) -> str:
    close = difflib.get_close_matches(name, valid, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


class Registry(Generic[T]):
    def __init__(self, kind: str, namespace: str):
        self.kind = kind            # "trick", "encoder", "fusion": used in error messages
        self.namespace = namespace  # the config-key prefix, e.g. "tricks"
        self._entries: dict[str, T] = {}

    def register(self, cls: T) -> T:
        name = getattr(cls, "name", None)
        if not name:
            raise TypeError(f"{cls.__qualname__} needs a class attribute `name` to be a {self.kind}")
        config = getattr(cls, "Config", None)
        if config is None or not is_dataclass(config):
            raise TypeError(f"{self.kind} {name!r} needs a nested `Config` dataclass")
        if name in self._entries and self._entries[name] is not cls:
            warnings.warn(f"{self.kind} {name!r} registered twice; the later one wins", stacklevel=2)
        self._entries[name] = cls
        return cls

    def get(self, name: str) -> T:
        try:
            return self._entries[name]
        except KeyError:
            valid = self.names()
            raise ConfigError(
                f"unknown {self.kind} {name!r}{did_you_mean(name, valid)}; valid: {', '.join(valid)}"
            ) from None

    def names(self, pattern: str = "*") -> list[str]:
        return sorted(n for n in self._entries if fnmatch.fnmatch(n, pattern))

    def __contains__(self, name: str) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[tuple[str, T]]:
        return iter(sorted(self._entries.items()))

    def config_keys(self, name: str) -> list[str]:
        return [f"{self.namespace}.{name}.{f.name}" for f in fields(self.get(name).Config)]


ENCODERS: Registry = Registry("encoder", "encoder")
FUSIONS: Registry = Registry("fusion", "fusion")
TRICKS: Registry = Registry("trick", "tricks")


def load_all() -> None:
    """Import every module that registers entries (they register on import)."""
    from . import tricks  # noqa: F401
    from .models import encoders, fusion  # noqa: F401

"""Name -> class registries for encoders, fusions and tricks (timm's `@register_model` habit).

Each entry is a class with a ``name`` and a frozen ``Config`` dataclass; the flat trial config
addresses an entry's fields as ``<namespace>.<name>.<field>``.

A registry knows the package its entries live in and imports that package's public modules
(not starting with ``_``) the first time it is asked for an entry, so this module imports nothing
of the project but its errors, and importing a registry never imports torch.
"""
from __future__ import annotations

import difflib
import fnmatch
import importlib
import pkgutil
import warnings
from dataclasses import fields, is_dataclass
from typing import Generic, Iterator, TypeVar

from .errors import ConfigError

T = TypeVar("T", bound=type)


def did_you_mean(name: str, valid: list[str]) -> str:
    close = difflib.get_close_matches(name, valid, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


class Registry(Generic[T]):
    def __init__(self, kind: str, namespace: str, package: str):
        self.kind = kind            # "trick", "encoder", "fusion": used in error messages
        self.namespace = namespace  # the config-key prefix, e.g. "tricks"
        self.package = package      # where the entries' modules live, e.g. "mmsearch.tricks"
        self._entries: dict[str, T] = {}
        self._loaded = False

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

    def _load(self) -> None:
        """Import every public module of the package once (each registers its entries on import)."""
        if self._loaded:
            return
        self._loaded = True  # first: the modules being imported call register(), not _load()
        package = importlib.import_module(self.package)
        for module in pkgutil.iter_modules(package.__path__):
            if not module.name.startswith("_"):
                importlib.import_module(f"{self.package}.{module.name}")

    def get(self, name: str) -> T:
        self._load()
        try:
            return self._entries[name]
        except KeyError:
            valid = self.names()
            raise ConfigError(
                f"unknown {self.kind} {name!r}{did_you_mean(name, valid)}; valid: {', '.join(valid)}"
            ) from None

    def names(self, pattern: str = "*") -> list[str]:
        self._load()
        return sorted(n for n in self._entries if fnmatch.fnmatch(n, pattern))

    def module_of(self, name: str) -> str:
        """The module that defines the entry (timm's `list_models(module=...)` the other way round)."""
        return self.get(name).__module__

    def __contains__(self, name: str) -> bool:
        self._load()
        return name in self._entries

    def __iter__(self) -> Iterator[tuple[str, T]]:
        self._load()
        return iter(sorted(self._entries.items()))

    def config_keys(self, name: str) -> list[str]:
        return [f"{self.namespace}.{name}.{f.name}" for f in fields(self.get(name).Config)]


ENCODERS: Registry = Registry("encoder", "encoder", "mmsearch.models.encoders")
FUSIONS: Registry = Registry("fusion", "fusion", "mmsearch.models.fusion")
TRICKS: Registry = Registry("trick", "tricks", "mmsearch.tricks")

"""Search spaces as YAML: every trick a dimension, its own parameters sampled only when it is on.

    fixed:                      # the same for every trial
      model.image: lite0
      train.epochs: 3
    search:                     # searched dimensions
      model.fusion: {choice: [lf_mlp, early]}
      optim.lr: {loguniform: [1.0e-4, 1.0e-3]}
    tricks:                     # per trick: search | on | off | a mapping
      soup: search              # on/off searched; when on, its parameters from the trick's `space`
      grad_clip: on             # always on, parameters from its `space`
      align_kl: {enabled: {choice: [false, true]}, weight: {uniform: [0.5, 2.0]}}
      modality_dropout: {enabled: true, p: 0.2}   # fixed values
    first:                      # points the searcher tries before it samples (tpe / random), in order
      - {model.fusion: early, optim.lr: 3.0e-4, tricks.soup.enabled: false}

Dimension kinds: choice [values], uniform [low, high], loguniform [low, high], randint [low, high)
(high exclusive, as in Tune), grid [values]. Every key is checked against the registries (through
TrialConfig) before anything runs. A `first` point names searched keys only (a key it leaves out is
sampled); the grid searcher enumerates everything and ignores it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..config import TrialConfig
from ..errors import ConfigError
from ..registry import TRICKS, did_you_mean

KINDS = ("choice", "uniform", "loguniform", "randint", "grid")
SECTIONS = ("fixed", "search", "tricks", "first")


@dataclass(frozen=True)
class Dimension:
    key: str
    kind: str
    args: tuple

    @classmethod
    def parse(cls, key: str, spec: Any) -> "Dimension":
        if not isinstance(spec, dict) or len(spec) != 1:
            raise ConfigError(f"{key}: a dimension is one mapping {{kind: args}} with kind one of {', '.join(KINDS)}; got {spec!r}")
        (kind, args), = spec.items()
        if kind not in KINDS:
            raise ConfigError(f"{key}: unknown dimension kind {kind!r}{did_you_mean(kind, list(KINDS))}; valid: {', '.join(KINDS)}")
        if not isinstance(args, list) or not args:
            raise ConfigError(f"{key}: {kind} needs a non-empty list, got {args!r}")
        if kind in ("uniform", "loguniform", "randint"):
            if len(args) != 2 or not all(isinstance(a, (int, float)) and not isinstance(a, bool) for a in args) or not args[0] < args[1]:
                raise ConfigError(f"{key}: {kind} needs [low, high] numbers with low < high, got {args!r}")
            if kind == "loguniform" and args[0] <= 0:
                raise ConfigError(f"{key}: loguniform needs low > 0, got {args!r}")
            if kind == "randint" and not all(isinstance(a, int) for a in args):
                raise ConfigError(f"{key}: randint needs integers, got {args!r}")
        return cls(key, kind, tuple(args))

    def suggest(self, trial) -> Any:
        """Sample with an Optuna trial (define-by-run)."""
        if self.kind in ("choice", "grid"):
            return trial.suggest_categorical(self.key, list(self.args))
        if self.kind == "randint":
            return trial.suggest_int(self.key, self.args[0], self.args[1] - 1)
        return trial.suggest_float(self.key, float(self.args[0]), float(self.args[1]), log=self.kind == "loguniform")

    def allows(self, value: Any) -> bool:
        """Whether the dimension can take `value` (for `first` points)."""
        if self.kind in ("choice", "grid"):
            return value in self.args
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        low, high = self.args
        return low <= value < high if self.kind == "randint" else low <= value <= high

    def describe(self) -> str:
        return f"{{{self.kind}: {list(self.args)}}}"

    def values(self) -> list:
        """The finite set of values (grid search); continuous kinds cannot be enumerated."""
        if self.kind in ("choice", "grid"):
            return list(self.args)
        if self.kind == "randint":
            return list(range(self.args[0], self.args[1]))
        raise ConfigError(f"{self.key}: a {self.kind} dimension cannot be grid-searched; use choice or grid")

    def example(self) -> Any:
        return self.values()[0] if self.kind in ("choice", "grid", "randint") else float(self.args[0])


@dataclass
class TrickDims:
    name: str
    enabled: Dimension | bool
    dims: list[Dimension] = field(default_factory=list)  # sampled only when the trick is on
    fixed: dict[str, Any] = field(default_factory=dict)


@dataclass
class SearchSpace:
    fixed: dict[str, Any]
    dims: list[Dimension]
    tricks: list[TrickDims]
    source: str = "<dict>"
    first: list[dict[str, Any]] = field(default_factory=list)  # tried first, in order (Optuna's enqueue_trial)

    # -- construction ---------------------------------------------------------------------------
    @classmethod
    def load(cls, path: str | Path) -> "SearchSpace":
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"search space {path} does not exist")
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"search space {path}: not valid YAML ({e})") from None
        return cls.from_dict(data, source=str(path))

    @classmethod
    def from_dict(cls, data: dict, *, source: str = "<dict>") -> "SearchSpace":
        unknown = [k for k in data if k not in SECTIONS]
        if unknown:
            raise ConfigError(f"{source}: unknown section {unknown[0]!r}{did_you_mean(unknown[0], list(SECTIONS))}; sections: {', '.join(SECTIONS)}")
        fixed = dict(data.get("fixed") or {})
        dims = [Dimension.parse(k, v) for k, v in (data.get("search") or {}).items()]
        tricks = [_trick_dims(name, spec) for name, spec in (data.get("tricks") or {}).items()]
        _each_trick_in_one_place(fixed, dims, tricks, source)
        first = data.get("first") or []
        if not isinstance(first, list) or not all(isinstance(p, dict) for p in first):
            raise ConfigError(f"{source}: first: expected a list of mappings of searched keys to values")
        space = cls(fixed, dims, tricks, source, [dict(p) for p in first])
        space.validate()
        return space

    def validate(self) -> None:
        """Every key and value type checked by TrialConfig, with each trick on and off."""
        keys = [d.key for d in self.dims] + list(self.fixed)
        dup = next((k for k in keys if keys.count(k) > 1), None)
        if dup:
            raise ConfigError(f"{self.source}: {dup!r} is both fixed and searched (or given twice)")
        for choose_on in (True, False):
            example = dict(self.fixed)
            example.update({d.key: d.example() for d in self.dims})
            for t in self.tricks:
                on = t.enabled if isinstance(t.enabled, bool) else choose_on
                example[f"tricks.{t.name}.enabled"] = on
                if on:
                    example.update({f"tricks.{t.name}.{k}": v for k, v in t.fixed.items()})
                    example.update({d.key: d.example() for d in t.dims})
            try:
                TrialConfig.from_flat(example)
            except ConfigError as e:
                raise ConfigError(f"{self.source}: {e}") from None
        for d in self.dims + [d for t in self.tricks for d in t.dims]:  # every listed value must be valid
            if d.kind in ("choice", "grid"):
                for v in d.args:
                    try:
                        TrialConfig.from_flat({**self.fixed, d.key: v, **_enabling(d.key)})
                    except ConfigError as e:
                        raise ConfigError(f"{self.source}: {e}") from None

        self._validate_first()

    def _validate_first(self) -> None:
        """Each `first` point: searched keys, values its dimension can take, a valid trial."""
        by_key = {d.key: d for d in self.dims + [d for t in self.tricks for d in t.dims]}
        by_key.update({t.enabled.key: t.enabled for t in self.tricks if isinstance(t.enabled, Dimension)})
        for i, point in enumerate(self.first, 1):
            for key, value in point.items():
                if key not in by_key:
                    raise ConfigError(f"{self.source}: first point {i}: {key!r} is not a searched key"
                                      f"{did_you_mean(key, sorted(by_key))} (fixed keys are the same in every trial)")
                if not by_key[key].allows(value):
                    raise ConfigError(f"{self.source}: first point {i}: {key}={value!r} is outside its dimension {by_key[key].describe()}")
            enabling = {k2: v for k, v in point.items() if k.startswith("tricks.") for k2, v in _enabling(k).items()}
            try:
                TrialConfig.from_flat({**self.fixed, **enabling, **point})
            except ConfigError as e:
                raise ConfigError(f"{self.source}: first point {i}: {e}") from None

    # -- sampling -----------------------------------------------------------------------------
    def define_by_run(self, trial) -> dict[str, Any]:
        """Optuna define-by-run: a trick's parameters are suggested only when it is on."""
        config = dict(self.fixed)
        config.update({d.key: d.suggest(trial) for d in self.dims})
        for t in self.tricks:
            key = f"tricks.{t.name}.enabled"
            on = t.enabled if isinstance(t.enabled, bool) else t.enabled.suggest(trial)
            config[key] = on
            if on:
                config.update({f"tricks.{t.name}.{k}": v for k, v in t.fixed.items()})
                config.update({d.key: d.suggest(trial) for d in t.dims})
        return config

    def grid(self) -> list[dict[str, Any]]:
        """Every combination (tricks' parameters enumerated only for the combos where it is on)."""
        base = [dict(self.fixed)]
        for d in self.dims:
            base = [{**c, d.key: v} for c in base for v in d.values()]
        for t in self.tricks:
            key = f"tricks.{t.name}.enabled"
            states = [t.enabled] if isinstance(t.enabled, bool) else t.enabled.values()
            options = []
            for on in states:
                if not on:
                    options.append({key: False})
                    continue
                params = [{f"tricks.{t.name}.{k}": v for k, v in t.fixed.items()}]
                for d in t.dims:
                    params = [{**p, d.key: v} for p in params for v in d.values()]
                options += [{key: True, **p} for p in params]
            base = [{**c, **o} for c in base for o in options]
        return base

    def size(self) -> float:
        """Number of grid points (inf when a dimension is continuous)."""
        try:
            return len(self.grid())
        except ConfigError:
            return math.inf


def with_overrides(data: dict, overrides: dict[str, Any]) -> dict:
    """A space's YAML mapping with some keys fixed (`mmsearch search --set KEY=VALUE`, e.g. to
    shrink the bag of tricks to CPU size): a searched key stops being searched; a key of a trick
    with a `tricks:` entry goes into that entry (`tricks.NAME.enabled` switches it on or off)."""
    data = {section: (list(data.get(section) or []) if section == "first" else dict(data.get(section) or {}))
            for section in SECTIONS}
    for key, value in overrides.items():
        parts = key.split(".")
        if len(parts) == 3 and parts[0] == "tricks" and parts[1] in data["tricks"]:
            name, field_name = parts[1], parts[2]
            entry = data["tricks"][name]
            if not isinstance(entry, dict):  # search / on / off -> the same as a mapping
                searched = {k: "default" for k in TRICKS.get(name).space}
                entry = ({"enabled": False} if entry in ("off", False, None) else
                         {"enabled": {"choice": [False, True]} if entry == "search" else True, **searched})
            data["tricks"][name] = {**entry, field_name: value}
        else:
            data["search"].pop(key, None)
            data["fixed"][key] = value
    if data.get("first"):  # a key fixed now is no longer a point's to set
        data["first"] = [{k: v for k, v in point.items() if k not in overrides} for point in data["first"]]
    return {section: content for section, content in data.items() if content}


def _each_trick_in_one_place(fixed: dict, dims: list[Dimension], tricks: list[TrickDims], source: str) -> None:
    """A trick with a `tricks:` entry is set there alone: a `fixed:` or `search:` key of the same
    trick would silently override, or be overridden by, that entry."""
    entries = {t.name for t in tricks}
    for section, keys in (("fixed", list(fixed)), ("search", [d.key for d in dims])):
        for key in keys:
            parts = key.split(".")
            if len(parts) == 3 and parts[0] == "tricks" and parts[1] in entries:
                raise ConfigError(f"{source}: trick {parts[1]!r} is set in two places, {section}: {key} and tricks: {parts[1]}; "
                                  f"set it in one (the tricks: entry takes {{{parts[2]}: ...}})")


def _enabling(key: str) -> dict:
    """A trick parameter is only valid to check with its trick on."""
    parts = key.split(".")
    return {f"tricks.{parts[1]}.enabled": True} if parts[0] == "tricks" else {}


def _trick_dims(name: str, spec: Any) -> TrickDims:
    cls = TRICKS.get(name)  # unknown trick: error listing the registered ones
    default_dims = [Dimension.parse(f"tricks.{name}.{k}", v) for k, v in cls.space.items()]
    if spec in ("search", "on", True, "off", False, None):
        if spec in ("off", False, None):
            return TrickDims(name, False)
        enabled = Dimension("tricks.%s.enabled" % name, "choice", (False, True)) if spec == "search" else True
        return TrickDims(name, enabled, default_dims)
    if not isinstance(spec, dict):
        raise ConfigError(f"tricks.{name}: expected search, on, off or a mapping; got {spec!r}")
    spec = dict(spec)
    enabled_spec = spec.pop("enabled", True)
    enabled = enabled_spec if isinstance(enabled_spec, bool) else Dimension.parse(f"tricks.{name}.enabled", enabled_spec)
    dims, fixed = [], {}
    for k, v in spec.items():
        if v == "default":
            if k not in cls.space:
                raise ConfigError(f"tricks.{name}.{k}: the trick has no default search dimension for {k!r}")
            dims.append(Dimension.parse(f"tricks.{name}.{k}", cls.space[k]))
        elif isinstance(v, dict):
            dims.append(Dimension.parse(f"tricks.{name}.{k}", v))
        else:
            fixed[k] = v
    return TrickDims(name, enabled, dims, fixed)

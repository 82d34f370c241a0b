"""Typed trial configuration: frozen dataclasses <-> a flat dict of dotted keys.

A trial is described by one flat dict (what a Ray Tune search space samples), e.g.
``{"model.fusion": "lf_mlp", "optim.lr": 3e-4, "tricks.grad_clip.enabled": True}``.
Fixed sections are ``model.*``, ``optim.*`` and ``train.*``; every registered encoder, fusion and
trick contributes ``encoder.<name>.<field>``, ``fusion.<name>.<field>`` and
``tricks.<name>.<field>`` (plus ``tricks.<name>.enabled``). Unknown keys and mistyped values are
errors that list the valid keys.
"""
from __future__ import annotations

import json
import types
import typing
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Literal, Mapping

from .errors import ConfigError
from .registry import ENCODERS, FUSIONS, TRICKS, Registry, did_you_mean

NONE = "none"  # the value that switches a modality's encoder off


@dataclass(frozen=True)
class ModelConfig:
    image: str = "lite0"          # image encoder (registry name) or "none"
    text: str = "minilm"          # text encoder or "none"
    tabular: str = "ft_transformer"  # tabular encoder or "none"
    pair: str = NONE              # an aligned image+text encoder (CLIP); replaces image and text
    fusion: str = "lf_mlp"
    image_size: int = 0           # 0: the image backbone's own input size
    max_text_len: int = 64        # tokens per row (all text columns together)
    # a missing input: the imputation baseline (zero image, empty text, mean number, the missing
    # category) or learned representations (see models.encoders)
    missing: Literal["impute", "learnable"] = "impute"
    # the modalities the model reads: "all", one name, or several ("image+text" or a list, e.g.
    # [text] in YAML); encoders of the others are not built. Stored as "all" or "+"-joined names.
    modalities: str | list = "all"
    # the pretrained towers (image, text, pair): all trained, none (frozen: their encodings are
    # computed once per experiment and cached, see models/frozen.py), or the top `top_k` blocks
    finetune: Literal["full", "frozen", "top_k"] = "full"
    top_k: int = 2

    def __post_init__(self):
        object.__setattr__(self, "modalities", canonical_modalities(self.modalities))
        if self.top_k < 1:
            raise ConfigError(f"model.top_k={self.top_k}: the number of top blocks to train, at least 1")

    @property
    def modality_subset(self) -> frozenset[str] | None:
        """The modalities named by `modalities` (None: all of the table's)."""
        return None if self.modalities == "all" else frozenset(self.modalities.split("+"))


MODALITIES = ("image", "text", "tabular")


def canonical_modalities(value: str | list) -> str:
    """"all" | "text" | ["text", "image"] | "image+text" -> "all" or sorted "+"-joined names."""
    names = value.split("+") if isinstance(value, str) else list(value)
    names = [str(n).strip() for n in names]
    if names == ["all"]:
        return "all"
    bad = [n for n in names if n not in MODALITIES]
    if bad or not names:
        raise ConfigError(f"model.modalities={value!r}: use 'all' or a list of {', '.join(MODALITIES)} (e.g. [text] or image+text)")
    return "+".join(sorted(set(names)))


@dataclass(frozen=True)
class OptimConfig:
    lr: float = 1e-4
    weight_decay: float = 1e-3
    batch_size: int = 32          # effective (global) batch; split evenly across DDP workers
    schedule: Literal["cosine", "constant"] = "cosine"
    # lr of the fresh parameters (not loaded from pretrained weights: fusion, adapters, heads, a
    # tower trained from scratch such as the FT-Transformer, learned missing inputs) = lr * this;
    # pretrained towers train at lr (see train/optim.py). Composes with the tricks' lr scales
    head_lr_mult: float = 1.0

    def __post_init__(self):
        if self.batch_size < 1:
            raise ConfigError(f"optim.batch_size={self.batch_size}: rows per training step, at least 1 (e.g. 32)")
        if not self.lr >= 0:  # 0 is allowed: nothing trains (tests freeze a model that way)
            raise ConfigError(f"optim.lr={self.lr}: the learning rate must be >= 0 (e.g. 1e-4)")
        if not self.weight_decay >= 0:
            raise ConfigError(f"optim.weight_decay={self.weight_decay}: must be >= 0 (0: none)")
        if not self.head_lr_mult > 0:
            raise ConfigError(f"optim.head_lr_mult={self.head_lr_mult}: must be > 0 (1: every parameter at optim.lr)")

    def worker_batch(self, world_size: int) -> int:
        """Rows per training step on each of world_size workers."""
        return max(1, self.batch_size // world_size)

    def eval_batch(self, world_size: int) -> int:
        """Rows per evaluation batch on each worker: twice the training batch (no gradients held).
        An exported bundle predicts in these batches to reproduce the search's predictions."""
        return 2 * self.worker_batch(world_size)


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 10
    seed: int = 0
    precision: Literal["auto", "fp32", "bf16"] = "auto"  # auto: bf16 autocast on GPU, fp32 on CPU
    loader_workers: int = 0       # DataLoader worker processes per training worker
    max_steps_per_epoch: int = 0  # 0: whole epochs; >0 caps steps (smoke runs, benchmarks)
    patience: int = 0             # >0: stop after this many epochs without a val improvement (train/stopping.py)

    def __post_init__(self):
        if self.epochs < 1:
            raise ConfigError(f"train.epochs={self.epochs}: a trial trains at least 1 epoch")
        if self.patience < 0:
            raise ConfigError(f"train.patience={self.patience}: use 0 (no early stopping) or a number of epochs")


@dataclass(frozen=True)
class TrickSetting:
    enabled: bool
    config: Any  # the trick's own Config instance


SECTIONS = {"model": ModelConfig, "optim": OptimConfig, "train": TrainConfig}
ENTRY_REGISTRIES: dict[str, Registry] = {"encoder": ENCODERS, "fusion": FUSIONS, "tricks": TRICKS}


@dataclass(frozen=True)
class TrialConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    encoder: Mapping[str, Any] = field(default_factory=dict)   # name -> Config instance
    fusion: Mapping[str, Any] = field(default_factory=dict)
    tricks: Mapping[str, TrickSetting] = field(default_factory=dict)

    # -- construction -------------------------------------------------------------------------
    @classmethod
    def from_flat(cls, flat: Mapping[str, Any]) -> "TrialConfig":
        valid = set(valid_keys())
        unknown = sorted(k for k in flat if k not in valid)
        if unknown:
            k = unknown[0]
            raise ConfigError(
                f"unknown config key {k!r}{did_you_mean(k, sorted(valid))}; "
                f"valid keys: {', '.join(sorted(valid))}"
            )
        sections = {
            name: _build(dc, {k.split(".", 1)[1]: v for k, v in flat.items() if k.split(".", 1)[0] == name}, name)
            for name, dc in SECTIONS.items()
        }
        entries: dict[str, dict[str, Any]] = {}
        for ns, reg in ENTRY_REGISTRIES.items():
            entries[ns] = {}
            for name, entry in reg:
                prefix = f"{ns}.{name}."
                given = {k[len(prefix):]: v for k, v in flat.items() if k.startswith(prefix)}
                enabled = given.pop("enabled", False)
                conf = _build(entry.Config, given, f"{ns}.{name}")
                if ns == "tricks":
                    _check_type(f"{prefix}enabled", enabled, bool)
                    entries[ns][name] = TrickSetting(enabled=enabled, config=conf)
                else:
                    entries[ns][name] = conf
        cfg = cls(**sections, **entries)
        cfg._check_names()
        return cfg

    @classmethod
    def load(cls, path: str | Path) -> "TrialConfig":
        """Read a YAML or JSON file holding a flat dict (nested mappings are flattened)."""
        import yaml

        text = Path(path).read_text()
        data = yaml.safe_load(text) or {}
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected a mapping of config keys, got {type(data).__name__}")
        return cls.from_flat(flatten(data))

    def _check_names(self) -> None:
        for modality in ("image", "text", "tabular", "pair"):
            name = getattr(self.model, modality)
            if name == NONE:
                continue
            cls = ENCODERS.get(name)  # raises on unknown, listing valid names
            if cls.modality != modality:
                raise ConfigError(
                    f"model.{modality}={name!r} is a {cls.modality} encoder; "
                    f"{modality} encoders: {', '.join(encoder_names(modality)) or 'none'}"
                )
        FUSIONS.get(self.model.fusion)

    # -- views ----------------------------------------------------------------------------------
    def enabled_tricks(self) -> dict[str, Any]:
        return {n: s.config for n, s in self.tricks.items() if s.enabled}

    def encoder_config(self, name: str) -> Any:
        return self.encoder[name]

    def fusion_config(self) -> Any:
        return self.fusion[self.model.fusion]

    def to_flat(self, *, relevant_only: bool = True) -> dict[str, Any]:
        """The resolved config as a flat dict. relevant_only drops the settings of encoders and
        fusions not in use and of tricks that are off (their `enabled: false` stays)."""
        out: dict[str, Any] = {}
        for name in SECTIONS:
            out.update({f"{name}.{k}": v for k, v in asdict(getattr(self, name)).items()})
        used_encoders = {getattr(self.model, m) for m in ("image", "text", "tabular", "pair")}
        for name, conf in self.encoder.items():
            if not relevant_only or name in used_encoders:
                out.update({f"encoder.{name}.{k}": v for k, v in asdict(conf).items()})
        for name, conf in self.fusion.items():
            if not relevant_only or name == self.model.fusion:
                out.update({f"fusion.{name}.{k}": v for k, v in asdict(conf).items()})
        for name, s in self.tricks.items():
            out[f"tricks.{name}.enabled"] = s.enabled
            if s.enabled or not relevant_only:
                out.update({f"tricks.{name}.{k}": v for k, v in asdict(s.config).items()})
        return out

    def with_overrides(self, flat: Mapping[str, Any]) -> "TrialConfig":
        return TrialConfig.from_flat({**self.to_flat(relevant_only=False), **flat})

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_flat(), indent=2, sort_keys=True) + "\n")


def valid_keys() -> list[str]:
    keys = [f"{s}.{f.name}" for s, dc in SECTIONS.items() for f in fields(dc)]
    for ns, reg in ENTRY_REGISTRIES.items():
        for name, _ in reg:
            keys += reg.config_keys(name)
            if ns == "tricks":
                keys.append(f"tricks.{name}.enabled")
    return sorted(keys)


def encoder_names(modality: str) -> list[str]:
    return [n for n, cls in ENCODERS if cls.modality == modality]


def flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"optim": {"lr": 1}} -> {"optim.lr": 1}; already-dotted keys pass through."""
    out: dict[str, Any] = {}
    for k, v in data.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def _build(dc: type, values: dict[str, Any], where: str) -> Any:
    hints = typing.get_type_hints(dc)
    names = {f.name for f in fields(dc)}
    for k, v in values.items():
        if k not in names:  # guarded by valid_keys(), kept for direct callers
            raise ConfigError(f"unknown key {where}.{k}; valid: {', '.join(sorted(names))}")
        values[k] = _check_type(f"{where}.{k}", v, hints[k])
    return replace(dc(), **values)


def _check_type(key: str, value: Any, hint: Any) -> Any:
    """Return the value (ints widened to float where a float is expected) or raise ConfigError."""
    if typing.get_origin(hint) is Literal:
        choices = typing.get_args(hint)
        if value not in choices:
            raise ConfigError(f"{key}={value!r} is not one of {', '.join(map(repr, choices))}")
        return value
    if isinstance(hint, types.UnionType):  # e.g. str | list: any arm
        if not isinstance(value, typing.get_args(hint)):
            raise ConfigError(f"{key}={value!r} should be {' or '.join(a.__name__ for a in typing.get_args(hint))}, got {type(value).__name__}")
        return value
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint is float and isinstance(value, str):  # YAML reads "1e-4" as a string
        try:
            return float(value)
        except ValueError:
            pass
    ok = isinstance(value, hint) and not (hint is int and isinstance(value, bool))
    if not ok:
        raise ConfigError(f"{key}={value!r} should be {hint.__name__}, got {type(value).__name__}")
    return value

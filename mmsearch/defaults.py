"""The defaults of `mmsearch train` without --config: a first trial sized to the table.

The trial config's own defaults (config.py) stay neutral (lr 1e-4 for every parameter, 10 epochs,
the image backbone's native size, no tricks), so that a saved or partial config keeps meaning what
it meant. A new user's first trial needs more: on a 550-row tri-modal table those defaults took 24
minutes on 2 cores for 0.45 holdout accuracy (a linear probe on frozen text features: 0.79). So
without --config the CLI starts from `for_table`: fresh parameters (fusion, adapters, heads, the
FT-Transformer) at 10x the pretrained towers' lr, the paper's basic tricks (greedy soup, which
also returns the best epochs' weights after an early stop; warmup; gradient clipping), early
stopping on val, and an epoch count and (on CPU) an image size chosen from the table's rows.
`--set` keys are never replaced. benchmarks/bench_defaults.py measures before / after.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

HEAD_LR_MULT = 10.0  # emoji, 600 rows, 4 epochs at lr 1e-4: holdout 0.64 at 1x, 0.82 at 10x, 0.82 at 30x
ROW_PASSES = 6000    # training rows a first trial sees at least (~190 steps of 32): small tables get more epochs
EPOCHS = (3, 10)     # at least, at most
# on CPU an epoch's image work (rows x pixels) stays within that of 2,048 rows at 64 px (~40 s on
# one core for Lite0): the image size is the largest of IMAGE_SIZES within it. On a GPU images
# keep the backbone's own size
PIXEL_ROWS = 2048 * 64 * 64
IMAGE_SIZES = (224, 192, 160, 128, 96, 64)
BASICS = {  # the same for every table
    "optim.lr": 1e-4,
    "optim.head_lr_mult": HEAD_LR_MULT,
    "tricks.soup.enabled": True,
    "tricks.lr_warmup.enabled": True,
    "tricks.grad_clip.enabled": True,
}


@dataclass(frozen=True)
class Choice:
    key: str
    value: Any
    why: str

    def __str__(self) -> str:
        return f"{self.key}={self.value} ({self.why})"


def choose(n_rows: int, n_train: int, has_images: bool, *, gpu: bool = False) -> list[Choice]:
    """The defaults for a table of n_rows rows, n_train of them in the training part."""
    if n_rows < 1 or n_train < 1:
        raise ValueError(f"a table with rows to train on is needed (rows {n_rows}, training rows {n_train})")
    lo, hi = EPOCHS
    epochs = min(hi, max(lo, math.ceil(ROW_PASSES / n_train)))
    out = [Choice("train.epochs", epochs, f"at least {ROW_PASSES:,} training rows seen, {n_train:,} per epoch; within {lo}-{hi}"),
           Choice("train.patience", max(2, epochs // 3), "stop after this many epochs without a val improvement")]
    if has_images:
        if gpu:
            out.append(Choice("model.image_size", 0, "on GPU: the image backbone's own input size"))
        else:
            size = next((s for s in IMAGE_SIZES if n_rows * s * s <= PIXEL_ROWS), IMAGE_SIZES[-1])
            out.append(Choice("model.image_size", size, f"on CPU, {n_rows:,} rows: the largest size whose image work per epoch "
                                                        f"stays within {PIXEL_ROWS // (64 * 64):,} rows at 64 px"))
    why = {"optim.head_lr_mult": "fresh parameters (fusion, heads, FT-Transformer) at 10x the pretrained towers' lr",
           "tricks.soup.enabled": "greedy soup of the best epochs"}
    out += [Choice(k, v, why.get(k, "basic trick" if k.startswith("tricks.") else "base lr of the pretrained towers"))
            for k, v in BASICS.items()]
    return out


def for_table(data, explicit: Mapping[str, Any] = (), *, gpu: bool = False) -> list[Choice]:
    """choose() for a PreparedData, without the keys the user set (`explicit`)."""
    has_images = bool(data.schema.by_role("image"))
    choices = choose(len(data.table), len(data.split["train"]), has_images, gpu=gpu)
    return [c for c in choices if c.key not in explicit]


def as_overrides(choices: list[Choice]) -> dict[str, Any]:
    return {c.key: c.value for c in choices}


def describe(choices: list[Choice], n_rows: int) -> str:
    return f"no --config: defaults for {n_rows:,} rows: " + "; ".join(map(str, choices))


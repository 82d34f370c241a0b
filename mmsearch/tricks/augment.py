from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Literal

import numpy as np
import torch

from ..errors import ConfigError
from . import Trick, register_trick

MIN_WORDS = 10  # shorter texts are never edited: one edit would change too much of them
PUNCTUATION = (".", ",", "!", "?", ";", ":")
TEXT_OPS = ("identity", "swap", "delete", "punctuation")


@register_trick
class Augment(Trick):
    """Input-level augmentation of each training row, drawn anew every epoch in the data loader
    (its workers when train.loader_workers > 0), never at evaluation or predict time. Images:
    torchvision's TrivialAugmentWide (one random op at a random magnitude) or RandAugment, per
    present image. Text: one light edit per text, as AutoGluon's text TrivialAugment, of a random
    kind (none, random swap, random delete, punctuation insert) at a rate drawn from
    U(0, text_rate) of the words (at least one), only on free texts of >= 10 words; no synonym
    replacement, which needs a WordNet download. Tabular: each present cell takes the value of
    the same column in a random training row with probability swap_p (swap noise), then present
    numerics get Gaussian noise of std num_noise (they are standardised). Missing inputs stay
    missing. 0 (or image "none") switches a modality off. An image op costs ~5-10 ms of CPU at
    224 px: give the trial train.loader_workers so that it runs off the training process."""
    name = "augment"

    @dataclass(frozen=True)
    class Config:
        image: Literal["trivial", "randaugment", "none"] = "trivial"
        text_rate: float = 0.1  # the largest fraction of a text's words one edit touches
        num_noise: float = 0.1  # std of the noise on standardised numerics
        swap_p: float = 0.1     # probability that a present tabular cell is swapped

        def __post_init__(self):
            for key in ("text_rate", "swap_p"):
                if not 0.0 <= getattr(self, key) <= 1.0:
                    raise ConfigError(f"tricks.augment.{key}={getattr(self, key)} should be in [0, 1]")
            if self.num_noise < 0:
                raise ConfigError(f"tricks.augment.num_noise={self.num_noise} should be >= 0")

    space = {"image": {"choice": ["trivial", "randaugment", "none"]}, "text_rate": {"uniform": [0.05, 0.2]},
             "num_noise": {"uniform": [0.02, 0.2]}, "swap_p": {"uniform": [0.0, 0.2]}}

    @cached_property
    def _image_policy(self):
        from torchvision.transforms import v2

        return v2.TrivialAugmentWide() if self.config.image == "trivial" else v2.RandAugment()

    def augment_row(self, row, rng):
        if self.config.image != "none" and row.image_present.any():
            # torchvision draws from torch's global CPU generator: seed it from the row's, and
            # leave the training process's stream (model dropout) untouched when there are no
            # workers. (torch.manual_seed would also queue a CUDA seeding with its stack trace)
            with torch.random.fork_rng(devices=[]):
                torch.random.default_generator.manual_seed(int(rng.integers(2**63)))
                for j in np.flatnonzero(row.image_present):
                    row.images[j] = self._image_policy(torch.from_numpy(row.images[j])).numpy()
        if row.text and self.config.text_rate > 0:
            row.text = edited_text(row.text, self.config.text_rate, rng)
        swap_noise(row.num, row.num_present, row.columns.num, self.config.swap_p, rng)
        swap_noise(row.cat, row.cat_present, row.columns.cat, self.config.swap_p, rng)
        if self.config.num_noise > 0 and row.num_present.any():
            noise = rng.normal(0.0, self.config.num_noise, int(row.num_present.sum()))
            row.num[row.num_present] += noise.astype(np.float32)
        return row


def edited_text(text: str, max_rate: float, rng: np.random.Generator) -> str:
    """The text after one random edit at a rate ~ U(0, max_rate) of its words (at least one
    word); texts of fewer than MIN_WORDS words come back unchanged."""
    words = text.split()
    if len(words) < MIN_WORDS:
        return text
    op = TEXT_OPS[rng.integers(len(TEXT_OPS))]
    n = max(1, round(rng.uniform(0.0, max_rate) * len(words)))
    if op == "identity":
        return text
    if op == "swap":
        for _ in range(n):
            i, j = rng.choice(len(words), 2, replace=False)
            words[i], words[j] = words[j], words[i]
    elif op == "delete":
        gone = set(rng.choice(len(words), min(n, len(words) - 1), replace=False).tolist())
        words = [w for i, w in enumerate(words) if i not in gone]
    else:
        for _ in range(n):
            words.insert(int(rng.integers(len(words) + 1)), PUNCTUATION[rng.integers(len(PUNCTUATION))])
    return " ".join(words)


def swap_noise(values: np.ndarray, present: np.ndarray, columns: tuple[np.ndarray, ...], p: float,
               rng: np.random.Generator) -> None:
    """In place: each present cell, with probability p, takes a value its column has in a random
    training row where it is present (`columns`: those values per column)."""
    if p <= 0 or not present.any():
        return
    for j in np.flatnonzero(present & (rng.random(len(values)) < p)):
        values[j] = columns[j][rng.integers(len(columns[j]))]

"""Encoder registry and the pieces every encoder shares.

An encoder reads its inputs from the batch (with their presence masks), replaces masked inputs
by the modality's missing representation (zero image, empty text, imputed number, the reserved
"missing" category) and returns an ``EncoderOutput`` per modality it covers.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import ClassVar, Iterable

import torch
from torch import nn

from ...registry import ENCODERS

register_encoder = ENCODERS.register


@dataclass
class EncoderOutput:
    pooled: torch.Tensor                    # [B, out_dim]: one vector per row
    tokens: torch.Tensor                    # [B, T, token_dim]: for early fusion
    token_mask: torch.Tensor | None = None  # [B, T] True = a real token (None: all real)


@dataclass(frozen=True)
class BuildContext:
    """What an encoder needs to know about the data to be built."""
    n_num: int
    cat_cardinalities: tuple[int, ...]
    n_image_columns: int
    image_size: int      # 0: the backbone's own size
    max_text_len: int
    # False: the caller loads trained weights over the whole model (an exported bundle), so
    # encoders skip fetching / reading pretrained backbone weights, and change nothing else
    pretrained: bool = True


class Encoder(nn.Module):
    name: ClassVar[str]
    modality: ClassVar[str]  # "image", "text", "tabular" or "pair" (image + text)
    out_dim: int             # size of the pooled vector
    token_dim: int           # size of each token
    layer_prefixes: ClassVar[tuple[str, ...]] = ("",)  # towers that get their own LLRD depths

    def layer_ids(self) -> tuple[dict[str, int], int]:
        """(parameter name -> layer id counted from the input side, number of layers).
        Default: by order of parameters (see layer_ids_by_order), per tower."""
        ids: dict[str, int] = {}
        n_layers = 0
        named = list(self.named_parameters())
        for prefix in self.layer_prefixes:
            tower = [(n, p) for n, p in named if n.startswith(prefix) and n not in ids]
            tower_ids, n = layer_ids_by_order(n for n, _ in tower)
            ids.update(tower_ids)
            n_layers = max(n_layers, n)
        return ids, n_layers


_BLOCK = re.compile(r"(?:^|\.)(?:layer|layers|blocks|resblocks)\.(\d+)(?:\.|$)")


def layer_ids_by_order(names: Iterable[str]) -> tuple[dict[str, int], int]:
    """Layer ids for a transformer tower from its parameter names, in definition order:
    parameters before the first block (embeddings) -> 0, block i -> i + 1, parameters after the
    last block (final norm, pooler, projection) -> the last block's id."""
    names = list(names)
    blocks = {n: int(m.group(1)) for n in names if (m := _BLOCK.search(n))}
    if not blocks:
        return {n: 0 for n in names}, 1
    last = max(blocks.values()) + 1
    ids, seen_block = {}, False
    for n in names:
        if n in blocks:
            ids[n], seen_block = blocks[n] + 1, True
        else:
            ids[n] = last if seen_block else 0
    return ids, last + 1


def normalized_images(images: torch.Tensor, present: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """uint8 [B, n, 3, S, S] -> normalized float [B * n, 3, S, S]; a missing image becomes the
    zero image (the imputation baseline), so every image encoder represents absence the same way."""
    x = (images.flatten(0, 1).float() / 255.0 - mean) / std
    return x * present.flatten().view(-1, 1, 1, 1).to(x.dtype)


def mean_pool(tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    m = mask.unsqueeze(-1).to(tokens.dtype)
    return (tokens * m).sum(1) / m.sum(1).clamp_min(1.0)



"""Encoder registry and the pieces every encoder shares.

An encoder reads its inputs from the batch (with their presence masks), replaces masked inputs
by the modality's missing representation and returns an ``EncoderOutput`` per modality it covers.
Two strategies (``model.missing``, BuildContext.missing):
- ``impute``: the imputation baseline: zero image, empty text (CLS + SEP), the train mean for a
  number (0 after standardisation), the reserved "missing" category.
- ``learnable``: a missing image's or text's encoder output, and a missing number's feature token,
  is a learned parameter instead (named ``missing_*``), initialised to what ``impute`` gives (so
  the two start equal and differ by what is learned). A missing category is the reserved
  category under both: its embedding row is already its own learned category.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import ClassVar, Iterable, Literal

import torch
from torch import nn

from ...registry import ENCODERS

register_encoder = ENCODERS.register


Reads = Literal["pooled", "tokens"]  # which output of the encoders a fusion consumes
Missing = Literal["impute", "learnable"]  # how an encoder represents a missing input (model.missing)
LEARNED_MISSING = "missing_"  # the name prefix of every learned missing-input parameter


@dataclass
class EncoderOutput:
    """What the fusion reads (see BuildContext.fusion_reads); the other view is None where
    computing it would take parameters of its own (those would get no gradient, and DDP fails)."""
    pooled: torch.Tensor | None = None        # [B, out_dim]: one vector per row
    tokens: torch.Tensor | None = None        # [B, T, token_dim]: for early fusion
    token_mask: torch.Tensor | None = None    # [B, T] True = a real token (None: all real)


@dataclass(frozen=True)
class BuildContext:
    """What an encoder needs to know about the data and the fusion to be built."""
    n_num: int
    cat_cardinalities: tuple[int, ...]
    n_image_columns: int
    image_size: int      # 0: the backbone's own size
    max_text_len: int
    # False: the caller loads trained weights over the whole model (an exported bundle), so
    # encoders skip fetching / reading pretrained backbone weights, and change nothing else
    pretrained: bool = True
    # the fusion's Fusion.reads: an encoder builds only the parameters on that path
    fusion_reads: Reads = "pooled"
    # the modalities the table has: an encoder covering several (the CLIP pair) builds only their towers
    modalities: frozenset[str] = frozenset({"image", "text", "tabular"})
    # a missing input's representation: the imputation baseline, or learned parameters
    missing: Missing = "impute"


class Encoder(nn.Module):
    name: ClassVar[str]
    modality: ClassVar[str]  # "image", "text", "tabular" or "pair" (image + text)
    out_dim: int             # size of the pooled vector
    token_dim: int           # size of each token
    # module paths of the towers that count their own LLRD depths; a parameter belongs to the
    # first tower whose path contains it ("": the whole encoder)
    towers: ClassVar[tuple[str, ...]] = ("",)
    # True: the weights start random (the FT-Transformer; a backbone configured without its
    # pretrained weights), so every parameter is fresh (see fresh_parameters)
    from_scratch: bool = False

    def fresh_parameters(self) -> set[str]:
        """Trainable parameter names not loaded from pretrained weights: all of them when the
        encoder trains from scratch, else the learned missing-input representations (new tensors
        standing in for the tower's output). optim.head_lr_mult scales their lr (train/optim.py)."""
        return {n for n, p in self.named_parameters()
                if p.requires_grad and (self.from_scratch or n.rsplit(".", 1)[-1].startswith(LEARNED_MISSING))}

    # -- the two halves of forward, for frozen towers whose encodings are cached (models/frozen.py):
    # forward(batch) == {m: finish(m, *encoded) for m, encoded in encode(batch).items()} when the
    # fusion reads pooled vectors. An encoder that cannot split (a token path) leaves them out.
    def encode(self, batch: dict) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """modality -> (the encoding of each input [B, n, d] before the missing fill (a missing
        input is encoded as its imputed input: the zero image, the empty text), presence bool
        [B, n]); n = the modality's inputs per row (image columns; 1 for the text)."""
        raise NotImplementedError(f"{type(self).__name__} does not split encode / finish")

    def finish(self, modality: str, encoded: torch.Tensor, present: torch.Tensor) -> EncoderOutput:
        """The EncoderOutput from encode's (encoded, present): the learned missing representation
        where an input is absent (model.missing learnable), pooled over the row's inputs."""
        raise NotImplementedError(f"{type(self).__name__} does not split encode / finish")

    @property
    def splits(self) -> bool:
        """Whether encode / finish exist (its encodings can be cached when its tower is frozen)."""
        return type(self).encode is not Encoder.encode

    def layer_depths(self) -> dict[str, int]:
        """Trainable parameter name -> depth from the top of its tower (1 = next to the fusion),
        from the module structure (see tower_depths). A parameter in no tower (a learned
        missing-input representation standing in for a tower's output) is on top: depth 1."""
        trainable = [n for n, p in self.named_parameters() if p.requires_grad]
        depths: dict[str, int] = {}
        for tower in self.towers:
            prefix = f"{tower}." if tower else ""
            names = [n[len(prefix):] for n in trainable if n.startswith(prefix) and n not in depths]
            if not names:  # a tower the table has no modality for was dropped (it is None now)
                continue
            module = self.get_submodule(tower) if tower else self
            depths.update({prefix + n: d for n, d in tower_depths(module, names).items()})
        return depths | {n: 1 for n in trainable if n not in depths}


_BLOCK = re.compile(r"^(?P<container>(?:.+?\.)?(?:layer|layers|blocks|resblocks))\.(?P<index>\d+)\.")
# input-side parameters wherever the model defines them (CLIP's text tower defines its token
# embedding after its blocks, and class / positional embeddings sit next to the output projection)
_EMBEDDING = re.compile(r"embed|cls_token|class_token")


def tower_depths(tower: nn.Module, names: Iterable[str]) -> dict[str, int]:
    """Depth of each parameter (name relative to `tower`) by where it sits in the module tree,
    not by the order PyTorch lists parameters in. Levels, from the top: the output side (final
    norm, projection: depth 1), the blocks of the tower's block container (last block on top),
    the input side (embeddings, stem). Output / input side: an embedding is input side wherever
    it is defined; any other parameter is on the side of the block container where its module is
    attached (a child defined before the container's branch is input side, after it output side;
    a parameter attached directly to an ancestor of the blocks, such as CLIP's `proj`, is output
    side). A tower without blocks is one level (depth 1)."""
    names = list(names)
    matches = {n: m for n in names if (m := _BLOCK.match(n))}
    if not matches:
        return {n: 1 for n in names}
    containers = [m["container"] for m in matches.values()]
    container = max(set(containers), key=containers.count)  # the tower's main stack of blocks
    blocks = {n: int(m["index"]) for n, m in matches.items() if m["container"] == container}
    n_blocks = max(blocks.values()) + 1
    output_side = {n for n in names if n not in blocks and not _is_input_side(tower, n, container)}
    top = 1 if output_side else 0  # the last block's depth is 1 when nothing sits above it
    depths = {n: 1 for n in output_side}
    depths.update({n: top + n_blocks - i for n, i in blocks.items()})
    depths.update({n: top + n_blocks + 1 for n in names if n not in depths})  # the input side
    return depths


def _is_input_side(tower: nn.Module, name: str, container: str) -> bool:
    if _EMBEDDING.search(name):
        return True
    path, target = name.split(".")[:-1], container.split(".")
    common = 0
    while common < min(len(path), len(target)) and path[common] == target[common]:
        common += 1
    if common == len(path):  # attached directly to an ancestor of the blocks: a projection
        return False
    children = list(tower.get_submodule(".".join(path[:common]))._modules)
    return children.index(path[common]) < children.index(target[common])


def normalized_images(images: torch.Tensor, present: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """uint8 [B, n, 3, S, S] -> normalized float [B * n, 3, S, S]; a missing image becomes the
    zero image (the imputation baseline), so every image encoder represents absence the same way."""
    x = (images.flatten(0, 1).float() / 255.0 - mean) / std
    return x * present.flatten().view(-1, 1, 1, 1).to(x.dtype)


def fill_missing(encoded: torch.Tensor, present: torch.Tensor, learned: torch.Tensor) -> torch.Tensor:
    """`encoded` [*present.shape, ...] with the entries whose input is missing (present False)
    replaced by `learned` (broadcast over the leading dimensions). torch.where keeps `learned` in
    the graph in every step: its gradient is zero, not None, when nothing is missing, as DDP
    (which requires a gradient for every parameter in every step) needs."""
    present = present.view(*present.shape, *(1,) * (encoded.ndim - present.ndim))
    return torch.where(present, encoded, learned.to(encoded.dtype))


def probe(module: nn.Module, fn):
    """fn() in eval mode (no dropout, no batch-norm statistics update) without gradients: what a
    module outputs for a fixed input, e.g. the imputed representation a learned one starts from."""
    training = module.training
    module.eval()
    try:
        with torch.no_grad():
            return fn()
    finally:
        module.train(training)


def mean_pool(tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    m = mask.unsqueeze(-1).to(tokens.dtype)
    return (tokens * m).sum(1) / m.sum(1).clamp_min(1.0)



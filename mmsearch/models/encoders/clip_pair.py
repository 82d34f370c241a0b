"""Aligned image + text encoders from open_clip (the LF-Aligned setting): a pretrained CLIP by
name, and a tiny random CLIP for tests (no packaged pretrained CLIP exists offline)."""
from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

from . import BuildContext, Encoder, EncoderOutput, normalized_images, register_encoder

TINY_CLIP = "mmsearch-clip-tiny"


class OpenClipPair(Encoder):
    """Both towers of one CLIP model (only the tower of a modality the table has); outputs the
    projected (aligned) image and text vectors, which are also the one token each for early fusion."""
    modality = "pair"
    towers = ("model.visual", "model")  # the vision tower; the text tower is the rest of the model

    def __init__(self, ctx: BuildContext, model_name: str, pretrained: str | None):
        import open_clip

        super().__init__()
        kwargs = {}
        if pretrained and not ctx.pretrained:
            # skip the tag's weights (open_clip would download them) but keep what else the tag
            # sets: its image normalization (the architecture comes from model_name alone)
            kwargs["force_preprocess_cfg"] = open_clip.get_pretrained_cfg(model_name, pretrained)
            pretrained = None
        self.model = open_clip.create_model(model_name, pretrained=pretrained or None, **kwargs)
        for name in ("logit_scale", "logit_bias"):  # contrastive-loss scalars: unused here, and DDP
            if isinstance(getattr(self.model, name, None), torch.nn.Parameter):  # rejects unused params
                getattr(self.model, name).requires_grad_(False)
        self._tokenizer = open_clip.get_tokenizer(model_name)
        pre = open_clip.get_model_preprocess_cfg(self.model)
        size = pre["size"]
        self.image_size = ctx.image_size or (size[0] if isinstance(size, (tuple, list)) else size)
        self.register_buffer("mean", torch.tensor(pre["mean"]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(pre["std"]).view(1, 3, 1, 1), persistent=False)
        empty, _ = self.tokenize([""])
        self.register_buffer("empty_ids", empty[0], persistent=False)
        with torch.no_grad():
            self.out_dim = self.token_dim = self.model.encode_text(empty).shape[-1]
        _drop_unused_tower(self.model, ctx.modalities)

    def tokenize(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        ids = self._tokenizer(texts)  # CLIP has a fixed context length; pad id is 0
        return ids, (ids != 0).long()

    def forward(self, batch: dict) -> dict[str, EncoderOutput]:
        out = {}
        if "image" in batch:
            images, present = batch["image"], batch["image_mask"]
            b, n = present.shape
            pooled = self.model.encode_image(normalized_images(images, present, self.mean, self.std)).view(b, n, -1)
            out["image"] = EncoderOutput(pooled=pooled.mean(1), tokens=pooled)
        if "text_ids" in batch:
            ids = torch.where(batch["text_mask"].unsqueeze(1), batch["text_ids"], self.empty_ids)
            pooled = self.model.encode_text(ids)
            out["text"] = EncoderOutput(pooled=pooled, tokens=pooled.unsqueeze(1))
        return out


_NOT_TEXT_TOWER = ("visual", "logit_scale", "logit_bias")


def _drop_unused_tower(model: torch.nn.Module, modalities: frozenset[str]) -> None:
    """A tower whose modality the table lacks would get no gradient: remove it. The vision tower
    is `visual`; the text tower is everything else but the contrastive scalars (its modules and
    parameters hang directly off CLIP, or sit in `text` for open_clip's CustomTextCLIP)."""
    if "image" not in modalities:
        model.visual = None
    if "text" not in modalities:
        for name in [*model._modules, *model._parameters]:
            if name not in _NOT_TEXT_TOWER:
                setattr(model, name, None)


@register_encoder
class OpenClip(OpenClipPair):
    """A pretrained open_clip model (weights from the hub: needs network)."""
    name = "open_clip"

    @dataclass(frozen=True)
    class Config:
        model_name: str = "ViT-B-32"
        pretrained: str = "openai"

    def __init__(self, ctx: BuildContext, model_name: str, pretrained: str):
        super().__init__(ctx, model_name, pretrained)


@register_encoder
class ClipTiny(OpenClipPair):
    """A tiny random CLIP (2-layer ViT, 2-layer text tower): tests and smoke runs only."""
    name = "clip_tiny"

    @dataclass(frozen=True)
    class Config:
        embed_dim: int = 64
        width: int = 64
        layers: int = 2
        image_size: int = 32
        patch_size: int = 8

    def __init__(self, ctx: BuildContext, embed_dim: int, width: int, layers: int, image_size: int, patch_size: int):
        import open_clip

        config = {
            "embed_dim": embed_dim,
            "vision_cfg": {"image_size": image_size, "layers": layers, "width": width, "patch_size": patch_size, "head_width": 32},
            "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": width, "heads": max(1, width // 32), "layers": layers},
        }
        with tempfile.TemporaryDirectory() as d:
            path = Path(d) / f"{TINY_CLIP}.json"
            path.write_text(json.dumps(config))
            open_clip.add_model_config(path)
        super().__init__(ctx, TINY_CLIP, None)

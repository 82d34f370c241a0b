"""Image + text encoder pairs from open_clip (the LF-Aligned setting): a pretrained CLIP by name,
the packaged Lite0 and MiniLM towers as one open_clip model (offline, projections not aligned),
and a tiny random CLIP for tests (no packaged pretrained CLIP exists offline)."""
from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

from . import BuildContext, Encoder, EncoderOutput, fill_missing, normalized_images, probe, register_encoder
from .hf_text import minilm_dir
from .timm_image import lite0_packaged_state_dict, timm_depths

TINY_CLIP = "mmsearch-clip-tiny"
LITE0_MINILM = "mmsearch-clip-lite0-minilm"


class OpenClipPair(Encoder):
    """Both towers of one CLIP model (only the tower of a modality the table has); outputs the
    projected image and text vectors (aligned where the pair was trained together), which are also
    the one token each for early fusion. A missing image is the zero image, a missing text the
    empty one; with model.missing learnable their projected vectors are learned parameters instead
    (`missing_image` per image column, `missing_text`), starting as those encodings."""
    modality = "pair"
    towers = ("model.visual", "model")  # the vision tower; the text tower is the rest of the model

    def __init__(self, ctx: BuildContext, model_name: str, pretrained: str | None, **create_kwargs):
        import open_clip
        from open_clip.hf_model import HFTextEncoder

        super().__init__()
        # an HF text tower loads its base weights by default (from the hub): not when building
        # for a bundle (ctx.pretrained False), whose weights replace them
        kwargs = {"pretrained_text": ctx.pretrained, **create_kwargs}
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
        # open_clip's own tokenizer pads with 0; an HF tokenizer (and HF text tower) with its pad id
        self.pad_id = getattr(getattr(self._tokenizer, "tokenizer", None), "pad_token_id", None) or 0
        # an HF text tower masks padding itself (ids != pad id), so, as hf_text does, it runs only up
        # to the batch's longest text (same outputs); CLIP's own tower needs its fixed context length
        self.trims_padding = isinstance(getattr(self.model, "text", None), HFTextEncoder)
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
        self.missing_image = self.missing_text = None
        if ctx.missing == "learnable":
            if self.model.visual is not None:
                zero = probe(self.model, lambda: self.model.encode_image(torch.zeros(1, 3, self.image_size, self.image_size)))
                self.missing_image = torch.nn.Parameter(zero.expand(ctx.n_image_columns, -1).clone())
            if "text" in ctx.modalities:
                self.missing_text = torch.nn.Parameter(probe(self.model, lambda: self._encode_text(self.empty_ids[None]))[0].clone())

    def tokenize(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        ids = self._tokenizer(texts)  # padded to the context length
        return ids, (ids != self.pad_id).long()

    def forward(self, batch: dict) -> dict[str, EncoderOutput]:
        return {m: self.finish(m, *encoded) for m, encoded in self.encode(batch).items()}

    def encode(self, batch: dict) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        out = {}
        if "image" in batch:
            images, present = batch["image"], batch["image_mask"]
            b, n = present.shape
            out["image"] = (self.model.encode_image(normalized_images(images, present, self.mean, self.std)).view(b, n, -1), present)
        if "text_ids" in batch:
            present = batch["text_mask"].unsqueeze(1)
            out["text"] = (self._encode_text(torch.where(present, batch["text_ids"], self.empty_ids)).unsqueeze(1), present)
        return out

    def finish(self, modality: str, encoded: torch.Tensor, present: torch.Tensor) -> EncoderOutput:
        """Pooled: the mean over the row's inputs; tokens (early fusion): one per input."""
        learned = self.missing_image if modality == "image" else self.missing_text
        if learned is not None:
            encoded = fill_missing(encoded, present, learned)
        return EncoderOutput(pooled=encoded.mean(1), tokens=encoded)

    def _encode_text(self, ids: torch.Tensor) -> torch.Tensor:
        if self.trims_padding:  # padding is on the right
            ids = ids[:, :max(1, int((ids != self.pad_id).sum(1).max()))]
        return self.model.encode_text(ids)


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
        self.from_scratch = not pretrained


@register_encoder
class ClipTiny(OpenClipPair):
    """A tiny random CLIP (2-layer ViT, 2-layer text tower): tests and smoke runs only."""
    name = "clip_tiny"
    from_scratch = True

    @dataclass(frozen=True)
    class Config:
        embed_dim: int = 64
        width: int = 64
        layers: int = 2
        image_size: int = 32
        patch_size: int = 8

    def __init__(self, ctx: BuildContext, embed_dim: int, width: int, layers: int, image_size: int, patch_size: int):
        _register_config(TINY_CLIP, {
            "embed_dim": embed_dim,
            "vision_cfg": {"image_size": image_size, "layers": layers, "width": width, "patch_size": patch_size, "head_width": 32},
            "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": width, "heads": max(1, width // 32), "layers": layers},
        })
        super().__init__(ctx, TINY_CLIP, None)


@register_encoder
class ClipLite0MiniLM(OpenClipPair):
    """The packaged towers as one open_clip model (CustomTextCLIP, 26M params, offline): timm's
    EfficientNet-Lite0 with the packaged ImageNet weights (TF-ported: mean = std = 0.5) and
    all-MiniLM-L6-v2 with its packaged weights (mean-pooled, as it was trained), each followed by a
    linear projection to embed_dim. The projections are random, so the two towers are NOT aligned
    (no pretrained CLIP is packaged): the alignment tricks (align_kl, align_infonce) align them
    while training. Text is padded to model.max_text_len; images are 224 px unless
    model.image_size says otherwise. pretrained=False: random towers."""
    name = "clip_lite0_minilm"

    @dataclass(frozen=True)
    class Config:
        embed_dim: int = 256
        pretrained: bool = True

    def __init__(self, ctx: BuildContext, embed_dim: int, pretrained: bool):
        text = str(minilm_dir())  # a local folder: config, tokenizer and weights without a hub
        _register_config(LITE0_MINILM, {
            "embed_dim": embed_dim,
            # timm_proj linear: timm's own trunk (classifier removed, average pool) keeps exactly
            # the packaged Lite0 tensors, and the projection is a separate layer (visual.head.proj)
            "vision_cfg": {"image_size": ctx.image_size or 224, "timm_model_name": "tf_efficientnet_lite0",
                           "timm_model_pretrained": False, "timm_pool": "avg", "timm_proj": "linear"},
            # mean pooler: BERT's own pooler is then not built (it would get no gradient: DDP fails)
            "text_cfg": {"hf_model_name": text, "hf_tokenizer_name": text, "hf_pooler_type": "mean_pooler",
                         "hf_proj_type": "linear", "context_length": ctx.max_text_len},
        })
        load = pretrained and ctx.pretrained
        super().__init__(ctx, LITE0_MINILM, None, pretrained_text=load,
                         force_preprocess_cfg={"mean": (0.5,) * 3, "std": (0.5,) * 3})
        if load and self.model.visual is not None:
            self.model.visual.trunk.load_state_dict(lite0_packaged_state_dict(self.model.visual.trunk))
        self.from_scratch = not pretrained

    def fresh_parameters(self) -> set[str]:
        """Also the two projections to embed_dim: new random layers, as the fusion's adapters."""
        projections = ("model.visual.head.proj.", "model.text.proj.")
        return super().fresh_parameters() | {n for n, p in self.named_parameters() if p.requires_grad and n.startswith(projections)}

    def layer_depths(self) -> dict[str, int]:
        """The text tower by the module structure (projection 1, last block 2, ...); the Lite0
        trunk by timm's grouping, as the lite0 encoder has it, one level below its projection
        (head.proj, 1) just as MiniLM's blocks are one level below theirs."""
        depths = super().layer_depths()
        if self.model.visual is not None:
            depths.update({f"model.visual.trunk.{n}": d + 1 for n, d in timm_depths(self.model.visual.trunk).items()})
        return depths


def _register_config(name: str, config: dict) -> None:
    """Make `name` an open_clip model name (open_clip reads model configs from JSON files only)."""
    import open_clip

    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / f"{name}.json"
        path.write_text(json.dumps(config))
        open_clip.add_model_config(path)

"""The fused multimodal model: one encoder per modality (or an aligned pair) + one fusion."""
from __future__ import annotations

from dataclasses import asdict

from torch import nn

from ..config import NONE, TrialConfig
from ..data.prepare import PreparedData
from ..errors import ConfigError
from ..registry import ENCODERS, FUSIONS
from .encoders import BuildContext, Encoder
from .fusion import ModelOutput


class MultimodalModel(nn.Module):
    def __init__(self, encoders: dict[str, Encoder], fusion: nn.Module):
        super().__init__()
        self.encoders = nn.ModuleDict(encoders)
        self.fusion = fusion

    def forward(self, batch: dict) -> ModelOutput:
        outputs = {}
        for encoder in self.encoders.values():
            outputs.update(encoder(batch))
        return self.fusion(outputs, batch)

    # what the data pipeline needs from the encoders
    @property
    def image_size(self) -> int:
        return next((e.image_size for e in self.encoders.values() if hasattr(e, "image_size")), 0)

    @property
    def tokenize(self):
        return next((e.tokenize for e in self.encoders.values() if hasattr(e, "tokenize")), None)


def build_model(cfg: TrialConfig, data: PreparedData, *, pretrained: bool = True) -> MultimodalModel:
    """Encoders for the modalities the table has and the config switches on, then the fusion.
    `data` needs only .schema and .tabular. pretrained=False: no pretrained backbone weights are
    fetched (for callers that load a full state dict next, such as an exported bundle)."""
    schema, m = data.schema, cfg.model
    has = {"image": bool(schema.by_role("image")), "text": bool(schema.by_role("text")),
           "tabular": bool(schema.by_role("numeric") or schema.by_role("categorical"))}
    ctx = BuildContext(
        n_num=len(data.tabular.numeric),
        cat_cardinalities=tuple(data.tabular.cardinalities),
        n_image_columns=len(schema.by_role("image")),
        image_size=m.image_size,
        max_text_len=m.max_text_len,
        pretrained=pretrained,
        fusion_reads=FUSIONS.get(m.fusion).reads,
        modalities=frozenset(k for k, v in has.items() if v),
    )
    wanted = {}
    if m.pair != NONE and (has["image"] or has["text"]):
        wanted["pair"] = m.pair  # the aligned pair replaces the separate image and text encoders
    else:
        wanted.update({k: getattr(m, k) for k in ("image", "text") if has[k] and getattr(m, k) != NONE})
    if has["tabular"] and m.tabular != NONE:
        wanted["tabular"] = m.tabular
    if not wanted:
        raise ConfigError(f"no encoder for any modality of this table ({', '.join(k for k, v in has.items() if v)}): set model.image / model.text / model.tabular")
    encoders = {slot: ENCODERS.get(name)(ctx, **asdict(cfg.encoder_config(name))) for slot, name in wanted.items()}

    dims = {}
    for slot, enc in encoders.items():
        covers = ["image", "text"] if slot == "pair" else [slot]
        dims.update({mod: (enc.out_dim, enc.token_dim) for mod in covers if has[mod]})
    fusion = FUSIONS.get(m.fusion)(dims, schema.n_outputs, **asdict(cfg.fusion_config()))
    return MultimodalModel(encoders, fusion)

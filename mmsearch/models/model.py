"""The fused multimodal model: one encoder per modality (or an aligned pair) + one fusion."""
from __future__ import annotations

from dataclasses import asdict

from torch import nn

from ..config import NONE, TrialConfig
from ..data.view import TableView
from ..errors import ConfigError
from ..registry import ENCODERS, FUSIONS
from ..tricks import build_tricks
from .encoders import BuildContext, Encoder
from .fusion import ModelOutput


class MultimodalModel(nn.Module):
    def __init__(self, encoders: dict[str, Encoder], fusion: nn.Module, view: TableView):
        super().__init__()
        self.encoders = nn.ModuleDict(encoders)
        self.fusion = fusion
        self.view = view  # what the model reads of the table: its datasets are built from it

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


def trial_view(cfg: TrialConfig, data) -> TableView:
    """The table as the trial's model sees it: the whole prepared table, changed by the enabled
    tricks' configure_view, then cut to model.modalities (after the tricks, so that e.g. a [text]
    trial with tabular_as_text reads the rendered fields). `data` needs only .schema and .tabular."""
    view = TableView.of(data)
    for trick in build_tricks(cfg.enabled_tricks()):
        view = trick.configure_view(view)
    return view.only(cfg.model.modality_subset)


def build_model(cfg: TrialConfig, data, *, pretrained: bool = True) -> MultimodalModel:
    """Encoders for the modalities the trial's view of the table has (trial_view) and the config
    switches on, then the fusion. `data` needs only .schema and .tabular. pretrained=False: no
    pretrained backbone weights are fetched (for callers that load a full state dict next, such as
    an exported bundle)."""
    view = trial_view(cfg, data)
    schema, m = view.schema, cfg.model
    has = {modality: view.has(modality) for modality in ("image", "text", "tabular")}
    ctx = BuildContext(
        n_num=len(view.tabular.numeric),
        cat_cardinalities=tuple(view.tabular.cardinalities),
        n_image_columns=len(schema.by_role("image")),
        image_size=m.image_size,
        max_text_len=m.max_text_len,
        pretrained=pretrained,
        fusion_reads=FUSIONS.get(m.fusion).reads,
        modalities=view.modalities,
        missing=m.missing,
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
    return MultimodalModel(encoders, fusion, view)

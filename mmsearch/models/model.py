"""The fused multimodal model: one encoder per modality (or an aligned pair) + one fusion."""
from __future__ import annotations

from dataclasses import asdict

import torch
from torch import nn

from ..config import NONE, TrialConfig
from ..data.batch import ENCODED
from ..data.view import TableView
from ..errors import ConfigError
from ..registry import ENCODERS, FUSIONS
from ..tricks import build_tricks
from .encoders import BuildContext, Encoder
from .frozen import apply_finetune
from .fusion import ModelOutput


class MultimodalModel(nn.Module):
    def __init__(self, encoders: dict[str, Encoder], fusion: nn.Module, view: TableView):
        super().__init__()
        self.encoders = nn.ModuleDict(encoders)
        self.fusion = fusion
        self.view = view  # what the model reads of the table: its datasets are built from it
        self.frozen: frozenset[str] = frozenset()  # slots whose encoder is frozen (models/frozen.py)

    def forward(self, batch: dict) -> ModelOutput:
        return self.fusion(self.encode(batch), batch)

    def encode(self, batch: dict) -> dict:
        """modality -> EncoderOutput: what the fusion reads."""
        outputs = {}
        for slot, encoder in self.encoders.items():
            outputs.update(self._frozen(slot, encoder, batch) if slot in self.frozen and encoder.splits else encoder(batch))
        return outputs

    def _frozen(self, slot: str, encoder: Encoder, batch: dict) -> dict:
        """A frozen encoder's outputs: its encodings from the batch when the loader carries them
        (cached, ``encoded_<modality>``), else computed here without gradients; then its finish
        (the learned missing fill, which does train). Where a cached row's input is absent now
        (modality dropout blanked it) the imputed input's encoding replaces it, as the encoder
        would have encoded the blank input."""
        covers = ("image", "text") if slot == "pair" else (slot,)
        if any(f"{ENCODED}{m}" in batch for m in covers):
            encoded = {}
            for m in covers:
                if f"{ENCODED}{m}" in batch:
                    present = batch["image_mask"] if m == "image" else batch["text_mask"].unsqueeze(1)
                    value = batch[f"{ENCODED}{m}"]
                    imputed = getattr(self, f"imputed_{m}").to(value.dtype)
                    encoded[m] = (torch.where(present.unsqueeze(-1), value, imputed), present)
        else:
            with torch.no_grad():
                encoded = encoder.encode(batch)
        return {m: encoder.finish(m, *e) for m, e in encoded.items()}

    def use_encodings(self, imputed: dict[str, torch.Tensor]) -> None:
        """Read frozen encoders' encodings from the batch from now on; `imputed`: modality -> the
        encoding of its imputed input per input slot [n, d] (not saved with the weights)."""
        for m, value in imputed.items():
            self.register_buffer(f"imputed_{m}", torch.as_tensor(value), persistent=False)

    def train(self, mode: bool = True):
        super().train(mode)
        for slot in self.frozen:  # a frozen tower encodes as it did when its encodings were cached
            self.encoders[slot].eval()
        return self

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
    fusion_cls = FUSIONS.get(m.fusion)
    if has["tabular"] and m.tabular != NONE and not fusion_cls.reads_raw_tabular:
        wanted["tabular"] = m.tabular
    if not wanted and not (fusion_cls.reads_raw_tabular and has["tabular"]):
        raise ConfigError(f"no encoder for any modality of this table ({', '.join(k for k, v in has.items() if v)}): set model.image / model.text / model.tabular")
    encoders = {slot: ENCODERS.get(name)(ctx, **asdict(cfg.encoder_config(name))) for slot, name in wanted.items()}

    dims = {}
    for slot, enc in encoders.items():
        covers = ["image", "text"] if slot == "pair" else [slot]
        dims.update({mod: (enc.out_dim, enc.token_dim) for mod in covers if has[mod]})
    fusion = fusion_cls(dims, schema.n_outputs, **asdict(cfg.fusion_config()))
    model = MultimodalModel(encoders, fusion, view)
    model.frozen = apply_finetune(model, cfg)
    return model

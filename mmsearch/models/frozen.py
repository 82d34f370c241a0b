"""Frozen and partly frozen pretrained towers (model.finetune).

* ``full``: every parameter trains.
* ``frozen``: the pretrained encoders (image, text, the CLIP pair) keep their weights; what trains
  is their learned missing-input representations (model.missing learnable), the tabular tower
  (trained from scratch anyway), the fusion and its adapters and head. A frozen encoder always
  runs in eval mode (no dropout, fixed batch-norm statistics) and without gradients, so its
  encoding of a row depends on the row alone: the training loop computes the encodings once per
  experiment (data/feature_cache.py) and the model reads them from the batch
  (``encoded_<modality>``) instead of running the encoder. The trained model still holds the
  encoders: an exported bundle encodes raw rows with them.
* ``top_k``: the pretrained encoders' output side and their last ``model.top_k`` blocks train
  (LLRD's depths: depth <= top_k + 1); their encodings change, so nothing is cached.
"""
from __future__ import annotations

from ..config import TrialConfig
from .encoders import LEARNED_MISSING

PRETRAINED_SLOTS = ("image", "text", "pair")  # the tabular tower is trained from scratch: never frozen


def apply_finetune(model, cfg: TrialConfig) -> frozenset[str]:
    """Set requires_grad by model.finetune (a fusion that fits itself, such as trees, freezes the
    towers whatever it says); return the slots whose encoder is wholly frozen."""
    mode = "frozen" if model.fusion.fits_itself else cfg.model.finetune
    frozen = set()
    for slot, encoder in model.encoders.items():
        if mode == "full" or slot not in PRETRAINED_SLOTS:
            continue
        depths = encoder.layer_depths() if mode == "top_k" else {}
        for name, p in encoder.named_parameters():
            if name.startswith(LEARNED_MISSING):
                continue  # learned missing inputs stand in for the tower's output: they train
            if mode == "frozen" or depths.get(name, 1) > cfg.model.top_k + 1:
                p.requires_grad_(False)
        if mode == "frozen":
            frozen.add(slot)
    return frozenset(frozen)

"""Reading and changing a collated batch by modality, so that tricks never spell its keys.

The keys are RowDataset's (data/dataset.py): image + image_mask [B, n_img]; text_ids / text_attn +
text_mask [B]; num + num_mask [B, n_num]; cat [B, n_cat] (0 = the reserved missing category);
label; index. With a frozen tower's cached encodings (data/feature_cache.py) a batch carries
encoded_<modality> [B, n, d] instead of that modality's images / token ids (its mask stays).
"""
from __future__ import annotations

import torch

MODALITIES = ("image", "text", "tabular")
ENCODED = "encoded_"  # + modality: a frozen tower's cached encodings of the batch's rows


def carried(batch: dict) -> list[str]:
    """The modalities this batch has inputs for (in MODALITIES order)."""
    out = []
    if "image_mask" in batch and batch["image_mask"].shape[1] > 0:
        out.append("image")
    if "text_mask" in batch:
        out.append("text")
    if batch["num"].shape[1] + batch["cat"].shape[1] > 0:
        out.append("tabular")
    return out


def present(batch: dict, modality: str) -> torch.Tensor:
    """bool [B]: rows that have at least one input of the modality (an image, a non-empty text,
    a number or a category that is not missing)."""
    if modality == "image":
        return batch["image_mask"].any(1)
    if modality == "text":
        return batch["text_mask"]
    return batch["num_mask"].any(1) | (batch["cat"] != 0).any(1)


def without(batch: dict, modality: str, rows: torch.Tensor) -> dict:
    """A copy of the batch in which the modality is missing for `rows` (bool [B]): images become
    missing images, the text empty, numbers missing (imputed) and categories the missing id. The
    encoders then take the same missing-input path as for a row whose input really was absent."""
    batch = dict(batch)
    if modality == "image":
        batch["image_mask"] = batch["image_mask"] & ~rows.unsqueeze(1)
    elif modality == "text":
        batch["text_mask"] = batch["text_mask"] & ~rows
    elif modality == "tabular":
        batch["num_mask"] = batch["num_mask"] & ~rows.unsqueeze(1)
        batch["cat"] = torch.where(rows.unsqueeze(1), torch.zeros_like(batch["cat"]), batch["cat"])
    else:
        raise ValueError(f"unknown modality {modality!r}; modalities: {', '.join(MODALITIES)}")
    return batch


def n_rows(batch: dict) -> int:
    return batch["index"].shape[0]

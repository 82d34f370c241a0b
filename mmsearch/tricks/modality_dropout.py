from __future__ import annotations

from dataclasses import dataclass

import torch

from . import Trick, register_trick


@register_trick
class ModalityDropout(Trick):
    """During training only, blank each modality of each row with probability p: the image
    becomes missing (zero image), the text empty, numbers their imputed value, categories the
    reserved "missing" id. With keep_one (default) a row never loses every modality: if all were
    drawn, one of them, chosen at random, is kept, so no row is pure noise."""
    name = "modality_dropout"
    order = 10  # before input-level tricks that read the masks

    @dataclass(frozen=True)
    class Config:
        p: float = 0.3
        keep_one: bool = True

    space = {"p": {"uniform": [0.1, 0.5]}}

    def on_batch(self, batch: dict, state) -> dict:
        present = [m for m in ("image", "text", "tabular") if _has(batch, m)]
        if not present:
            return batch
        b = batch["label"].shape[0]
        drop = torch.rand(b, len(present), generator=state.generator) < self.config.p
        if self.config.keep_one and len(present) > 1:
            all_dropped = drop.all(1)
            keep = torch.randint(len(present), (b,), generator=state.generator)
            drop[all_dropped, keep[all_dropped]] = False
        batch = dict(batch)
        for j, m in enumerate(present):
            rows = drop[:, j].to(batch["label"].device)
            if m == "image":
                batch["image_mask"] = batch["image_mask"] & ~rows.unsqueeze(1)
            elif m == "text":
                batch["text_mask"] = batch["text_mask"] & ~rows
            else:
                batch["num_mask"] = batch["num_mask"] & ~rows.unsqueeze(1)
                batch["cat"] = torch.where(rows.unsqueeze(1), torch.zeros_like(batch["cat"]), batch["cat"])
        state.log("modality_dropped", float(drop.float().mean()))
        return batch


def _has(batch: dict, modality: str) -> bool:
    if modality == "image":
        return "image_mask" in batch and batch["image_mask"].shape[1] > 0
    if modality == "text":
        return "text_mask" in batch
    return batch["num"].shape[1] + batch["cat"].shape[1] > 0

"""Predictions and evaluation losses shared by training, evaluation, soups and export."""
from __future__ import annotations

import numpy as np
import torch

from ..losses import task_loss


def to_device(batch: dict, device: torch.device) -> dict:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def autocast(device: torch.device, precision: str):
    bf16 = precision == "bf16" or (precision == "auto" and device.type == "cuda")
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16)


def _outputs(model, batch: dict, device, precision: str, problem_type: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(float logits, predictions: probabilities or standardized values) of one batch on device.
    Shared by evaluation during training and by exported bundles, so both compute the same."""
    with autocast(device, precision):
        logits = model(batch).logits.float()
    return logits, logits.squeeze(-1) if problem_type == "regression" else logits.softmax(-1)


@torch.no_grad()
def predict(model, loader, device, precision: str, problem_type: str) -> tuple[np.ndarray, np.ndarray, float]:
    """(predictions: probabilities [N, C] or standardized values [N], labels, mean loss)."""
    was_training = model.training
    model.eval()
    preds, labels, loss_sum = [], [], 0.0
    for batch in loader:
        batch = to_device(batch, device)
        logits, out = _outputs(model, batch, device, precision, problem_type)
        loss_sum += float(task_loss(logits, batch["label"], problem_type)) * len(logits)
        preds.append(out.cpu().numpy().astype(np.float32))
        labels.append(batch["label"].cpu().numpy())
    model.train(was_training)
    y = np.concatenate(labels)
    return np.concatenate(preds), y, loss_sum / max(1, len(y))


@torch.no_grad()
def infer(model, loader, device, precision: str, problem_type: str, on_batch=None) -> np.ndarray:
    """predict() for unlabelled rows: predictions only; on_batch(n_rows) after each batch."""
    model.eval()
    preds = []
    for batch in loader:
        _, out = _outputs(model, to_device(batch, device), device, precision, problem_type)
        preds.append(out.cpu().numpy().astype(np.float32))
        if on_batch is not None:
            on_batch(len(out))
    return np.concatenate(preds)

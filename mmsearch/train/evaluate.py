"""Losses and predictions shared by training, evaluation, soups and export."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F



def task_loss(logits: torch.Tensor, labels: torch.Tensor, problem_type: str) -> torch.Tensor:
    logits = logits.float()
    if problem_type == "regression":
        return F.mse_loss(logits.squeeze(-1), labels.float())
    return F.cross_entropy(logits, labels)  # labels may also be soft targets [B, C]


def to_device(batch: dict, device: torch.device) -> dict:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def autocast(device: torch.device, precision: str):
    bf16 = precision == "bf16" or (precision == "auto" and device.type == "cuda")
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16)


@torch.no_grad()
def predict(model, loader, device, precision: str, problem_type: str) -> tuple[np.ndarray, np.ndarray, float]:
    """(predictions: probabilities [N, C] or standardized values [N], labels, mean loss)."""
    was_training = model.training
    model.eval()
    preds, labels, loss_sum = [], [], 0.0
    for batch in loader:
        batch = to_device(batch, device)
        with autocast(device, precision):
            logits = model(batch).logits.float()
        loss_sum += float(task_loss(logits, batch["label"], problem_type)) * len(logits)
        out = logits.squeeze(-1) if problem_type == "regression" else logits.softmax(-1)
        preds.append(out.cpu().numpy().astype(np.float32))
        labels.append(batch["label"].cpu().numpy())
    model.train(was_training)
    y = np.concatenate(labels)
    return np.concatenate(preds), y, loss_sum / max(1, len(y))

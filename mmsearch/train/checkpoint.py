"""Writing and restoring a checkpoint's torch parts: weights (safetensors) and resume state
(optimizer, scheduler, tricks: tensors only, loaded with weights_only=True). Where each file
goes, and the numpy / JSON parts, are mmsearch.layout.checkpoint_dir's."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from ..layout.checkpoint_dir import CheckpointDir


def save_weights(model: torch.nn.Module, path: Path) -> None:
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    save_file(state, str(path))


def load_weights(model: torch.nn.Module, path: Path) -> None:
    model.load_state_dict(load_file(str(path)))


def write(directory: Path, *, model, trainer: dict, preds: dict[str, np.ndarray], config: dict, optimizer=None,
          scheduler=None, tricks=()) -> Path:
    """config: the resolved flat trial config. The trainer state goes last: its presence marks
    the checkpoint complete."""
    ckpt = CheckpointDir(directory)
    ckpt.path.mkdir(parents=True, exist_ok=True)
    save_weights(model, ckpt.weights)
    ckpt.write_predictions(preds)
    ckpt.write_config(config)
    if optimizer is not None:
        torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()}, ckpt.optimizer_file)
        torch.save({t.name: t.state_dict() for t in tricks}, ckpt.tricks_file)
    ckpt.write_trainer(trainer)
    return ckpt.path


def restore(directory: Path, *, model, optimizer, scheduler, tricks) -> dict:
    ckpt = CheckpointDir(directory)
    load_weights(model, ckpt.weights)
    if ckpt.has_resume_state():
        state = torch.load(ckpt.optimizer_file, map_location="cpu", weights_only=True)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        trick_states = torch.load(ckpt.tricks_file, map_location="cpu", weights_only=True)
        for t in tricks:
            if t.name in trick_states:
                t.load_state_dict(trick_states[t.name])
    return ckpt.trainer()

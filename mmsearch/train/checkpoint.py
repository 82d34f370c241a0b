"""Checkpoint directories: weights as safetensors, predictions as .npy, state as JSON.

  model.safetensors   weights (the soup's, in the final checkpoint)
  preds_val.npy / preds_holdout.npy   predictions of those weights (rows follow split.json)
  trainer.json        epoch, step, history, finished
  optimizer.pt / tricks.pt   resume state (tensors only: loaded with weights_only=True)
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file


def save_weights(model: torch.nn.Module, path: Path) -> None:
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    save_file(state, str(path))


def load_weights(model: torch.nn.Module, path: Path) -> None:
    model.load_state_dict(load_file(str(path)))


def write(directory: Path, *, model, trainer: dict, preds: dict[str, np.ndarray], optimizer=None, scheduler=None, tricks=()) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    save_weights(model, directory / "model.safetensors")
    for part, p in preds.items():
        np.save(directory / f"preds_{part}.npy", p)
    if optimizer is not None:
        torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()}, directory / "optimizer.pt")
        torch.save({t.name: t.state_dict() for t in tricks}, directory / "tricks.pt")
    (directory / "trainer.json").write_text(json.dumps(trainer, indent=1))
    return directory


def read_trainer(directory: Path) -> dict:
    return json.loads((directory / "trainer.json").read_text())


def restore(directory: Path, *, model, optimizer, scheduler, tricks) -> dict:
    load_weights(model, directory / "model.safetensors")
    if (directory / "optimizer.pt").is_file():
        state = torch.load(directory / "optimizer.pt", map_location="cpu", weights_only=True)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        trick_states = torch.load(directory / "tricks.pt", map_location="cpu", weights_only=True)
        for t in tricks:
            if t.name in trick_states:
                t.load_state_dict(trick_states[t.name])
    return read_trainer(directory)

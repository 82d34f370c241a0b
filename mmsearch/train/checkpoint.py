"""Writing and restoring a checkpoint's torch parts: weights (safetensors) and resume state
(optimizer, scheduler, tricks: tensors only, loaded with weights_only=True). Where each file
goes, and the numpy / JSON parts, are mmsearch.layout.checkpoint_dir's."""
from __future__ import annotations

import errno
import shutil
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from ..errors import MMSearchError
from ..layout.checkpoint_dir import CheckpointDir


class CheckpointWriteError(MMSearchError):
    """A checkpoint could not be written (a full disk): the run stops; the previous one stays valid."""


def save_weights(model: torch.nn.Module, path: Path) -> None:
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    save_file(state, str(path))


def load_weights(model: torch.nn.Module, path: Path) -> None:
    model.load_state_dict(load_file(str(path)))


def write(directory: Path, *, model, trainer: dict, preds: dict[str, np.ndarray], config: dict, optimizer=None,
          scheduler=None, tricks=()) -> Path:
    """config: the resolved flat trial config. The trainer state goes last: its presence marks
    the checkpoint complete. `directory` is a scratch directory that the run commits into place
    afterwards, so a write that fails (a full disk) leaves the previous checkpoint as it was: the
    scratch is removed and the error says what to do."""
    ckpt = CheckpointDir(directory)
    try:
        ckpt.path.mkdir(parents=True, exist_ok=True)
        save_weights(model, ckpt.weights)
        ckpt.write_predictions(preds)
        ckpt.write_config(config)
        if optimizer is not None:
            torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()}, ckpt.optimizer_file)
            torch.save({t.name: t.state_dict() for t in tricks}, ckpt.tricks_file)
        ckpt.write_trainer(trainer)
    except OSError as e:
        shutil.rmtree(ckpt.path, ignore_errors=True)  # what it took of the disk
        if e.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        raise CheckpointWriteError(
            f"no space left on the device while writing the checkpoint of epoch {trainer.get('epoch')} under "
            f"{ckpt.path.parent} ({e.strerror}); the previous checkpoint is intact: free space there, then resume "
            "(`mmsearch resume EXP`, or the same `mmsearch train --out`)") from None
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

"""A full disk while a checkpoint is written (fault injection: the weights writer raises ENOSPC,
as a full file system does mid-write): the run stops with a clear cause, the previous epoch's
checkpoint stays valid and no partial one is left, and the run resumes from it once space is free."""
from __future__ import annotations

import errno
import json

import pytest

from conftest import TINY
from mmsearch.train import checkpoint
from mmsearch.train.checkpoint import CheckpointWriteError
from mmsearch.train.run import run_local


def test_a_full_disk_stops_the_run_cleanly_and_resume_continues(small_prepared, tmp_path, monkeypatch):
    real_save, calls = checkpoint.save_weights, []

    def disk_fills_on_epoch_2(model, path):
        calls.append(path)
        if len(calls) == 2:
            path.write_bytes(b"\0" * 1000)  # a partial file, then the device is full
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        real_save(model, path)

    monkeypatch.setattr(checkpoint, "save_weights", disk_fills_on_epoch_2)
    out = tmp_path / "run"
    config = {**TINY, "train.epochs": 3}
    with pytest.raises(CheckpointWriteError, match=r"no space left on the device while writing the checkpoint of epoch 2.*"
                                                   r"previous checkpoint is intact: free space there, then resume"):
        run_local(config, small_prepared.dir, out)
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["epoch_001"]  # intact
    assert not list(out.glob(".ckpt-*"))  # the partial checkpoint is gone
    assert json.loads((out / "checkpoints" / "epoch_001" / "trainer.json").read_text())["epoch"] == 1

    monkeypatch.setattr(checkpoint, "save_weights", real_save)  # space freed
    final = run_local(config, small_prepared.dir, out)
    assert final["final"]
    epochs = [json.loads(line)["epoch"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert epochs == [1, 2, 3]  # resumed after epoch 1; the failed epoch 2 was never reported


def test_other_write_errors_are_not_called_a_full_disk(small_prepared, tmp_path, monkeypatch):
    def denied(model, path):
        raise PermissionError(errno.EACCES, "Permission denied", str(path))

    monkeypatch.setattr(checkpoint, "save_weights", denied)
    with pytest.raises(PermissionError):
        run_local({**TINY, "train.epochs": 1}, small_prepared.dir, tmp_path / "run")

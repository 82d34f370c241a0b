"""A trial's checkpoint directory and its run directory: the one place their file names live.

A checkpoint directory (one epoch's state, or a trial's final result):
  model.safetensors                  weights (the soup's, in the final checkpoint)
  preds_val.npy, preds_holdout.npy   predictions of those weights (rows follow the data's split)
  config.json                        the resolved flat trial config
  optimizer.pt, tricks.pt            resume state (epoch checkpoints only; train/checkpoint.py)
  trainer.json                       epoch, step, history, finished, final_metrics; written last

A trial's run directory (in-process and one-worker Tune trials, `mmsearch train --out`):
  config.json                        `mmsearch train`: the resolved config, before training starts
  metrics.jsonl                      one line per report
  failed.json                        why the trial's last attempt failed (an error, a timeout); a
                                     retry that starts removes it, except a timeout's
  attempts.jsonl                     one line per attempt of a search trial: the Ray node and the
                                     process it ran in, when it started (where a restart went)
  checkpoints/epoch_NNN/             the newest epoch checkpoints: resume points
  final/                             the final checkpoint (it supersedes checkpoints/)
A Ray Train run (a trial with several workers) keeps Ray's own checkpoint directories at the top
of its run directory instead.

Numpy and JSON only: the pool and the ensemble read checkpoints without torch.
"""
from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Mapping

import numpy as np

from .._atomic import atomic_write_text
from ..errors import MMSearchError
from ._json import read_object

PARTS = ("val", "holdout")  # every checkpoint holds predictions on these parts of the split
_WEIGHTS, _CONFIG, _TRAINER = "model.safetensors", "config.json", "trainer.json"
_OPTIMIZER, _TRICKS = "optimizer.pt", "tricks.pt"
_METRICS_LOG, _FINAL, _EPOCHS, _FAILED = "metrics.jsonl", "final", "checkpoints", "failed.json"
_ATTEMPTS = "attempts.jsonl"


class IncompleteCheckpoint(MMSearchError):
    """A checkpoint directory with a file missing or unreadable (a crash while it was written)."""


@dataclass(frozen=True)
class CheckpointDir:
    path: Path
    RESUME_STATE: ClassVar[tuple[str, ...]] = (_OPTIMIZER, _TRICKS)  # needed only to continue training

    def __post_init__(self):
        object.__setattr__(self, "path", Path(self.path))

    @property
    def weights(self) -> Path:
        return self.path / _WEIGHTS

    @property
    def config_file(self) -> Path:
        return self.path / _CONFIG

    @property
    def trainer_file(self) -> Path:
        return self.path / _TRAINER

    @property
    def optimizer_file(self) -> Path:
        return self.path / _OPTIMIZER

    @property
    def tricks_file(self) -> Path:
        return self.path / _TRICKS

    def preds_file(self, part: str) -> Path:
        return self.path / f"preds_{part}.npy"

    # -- writing (the loop writes into a scratch directory that then moves into place whole) ---
    def write_predictions(self, preds: Mapping[str, np.ndarray]) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        for part, p in preds.items():
            np.save(self.preds_file(part), np.asarray(p))

    def write_config(self, flat: dict) -> None:
        atomic_write_text(self.config_file, json.dumps(flat, indent=2, sort_keys=True) + "\n")

    def write_trainer(self, state: dict) -> None:
        """Last: a checkpoint whose trainer state reads back is complete."""
        atomic_write_text(self.trainer_file, json.dumps(state, indent=1))

    # -- reading -------------------------------------------------------------------------------
    def predictions(self, part: str, *, mmap: bool = False) -> np.ndarray:
        """Never unpickles. mmap: read lazily from disk (to scan a file without holding it)."""
        return np.load(self.preds_file(part), allow_pickle=False, mmap_mode="r" if mmap else None)

    def config(self) -> dict:
        return _read_json(self.config_file)

    def trainer(self) -> dict:
        """The trainer state; IncompleteCheckpoint if it is missing, unreadable or lacks a report."""
        state = _read_json(self.trainer_file)
        history, final = state.get("history"), state.get("final_metrics")
        if not isinstance(state.get("epoch"), int) or not isinstance(history, list):
            raise IncompleteCheckpoint(f"{self.trainer_file} lacks its epoch or history")
        last = final or (history[-1] if history else None)
        if not isinstance(last, dict) or not {"val_score", "metric"} <= last.keys():
            raise IncompleteCheckpoint(f"{self.trainer_file} holds no report with a val_score")
        return state

    def has_resume_state(self) -> bool:
        return self.optimizer_file.is_file()

    def missing(self) -> list[str]:
        """The required files that are absent (weights, config, predictions, trainer state)."""
        required = [self.weights, self.config_file, *map(self.preds_file, PARTS), self.trainer_file]
        return [p.name for p in required if not p.is_file()]

    def problem(self) -> str | None:
        """Why the checkpoint is incomplete (files missing, trainer state unreadable), or None."""
        if missing := self.missing():
            return f"{self.path} lacks {', '.join(missing)}"
        try:
            self.trainer()
        except IncompleteCheckpoint as e:
            return str(e)
        return None

    def is_complete(self) -> bool:
        return self.problem() is None


@dataclass(frozen=True)
class TrialRunDir:
    path: Path
    RECORDS: ClassVar[tuple[str, ...]] = (_FAILED, _ATTEMPTS)  # the trial process's own files, not the training's

    def __post_init__(self):
        object.__setattr__(self, "path", Path(self.path))

    @property
    def final(self) -> CheckpointDir:
        return CheckpointDir(self.path / _FINAL)

    def epoch(self, epoch: int) -> CheckpointDir:
        return CheckpointDir(self.path / _EPOCHS / f"epoch_{epoch:03d}")

    def epoch_checkpoints(self) -> list[CheckpointDir]:
        """Oldest first."""
        root = self.path / _EPOCHS
        return [CheckpointDir(p) for p in sorted(root.glob("epoch_*"))] if root.is_dir() else []

    @property
    def config_file(self) -> Path:
        """Where `mmsearch train` writes the resolved config first (each checkpoint holds its own)."""
        return self.path / _CONFIG

    @property
    def metrics_log(self) -> Path:
        return self.path / _METRICS_LOG

    def record_failure(self, kind: str, cause: str) -> None:
        """kind: "error" (the trial raised) or "timeout" (it ran past its time limit)."""
        self.path.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.path / _FAILED, json.dumps({"kind": kind, "cause": cause}))

    def failure(self) -> dict | None:
        """{"kind", "cause"} of the last attempt's failure; None if it has not failed (or a retry
        is under way). A record that cannot be read still counts as a failure."""
        file = self.path / _FAILED
        if not file.is_file():
            return None
        try:
            found = json.loads(file.read_text())
            return {"kind": str(found["kind"]), "cause": str(found["cause"])}
        except (OSError, ValueError, KeyError, TypeError):
            return {"kind": "error", "cause": f"{file} is unreadable"}

    def clear_failure(self) -> None:
        (self.path / _FAILED).unlink(missing_ok=True)

    def record_attempt(self, attempt: dict) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        with open(self.path / _ATTEMPTS, "a") as f:
            f.write(json.dumps(attempt) + "\n")

    def attempts(self) -> list[dict]:
        """Oldest first; a line cut short by a crash is skipped."""
        return _json_lines(self.path / _ATTEMPTS)

    def append_metrics(self, row: dict) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        with open(self.metrics_log, "a") as f:
            f.write(json.dumps(row) + "\n")

    def realign_metrics(self, trainer: dict) -> None:
        """Make the log agree with the checkpoint a restart resumes from (its trainer state): one
        line per epoch up to the checkpoint's, none after it. A crash between the checkpoint's
        commit and its log line, or a node lost between their uploads to object storage, leaves the
        log an epoch short: the line comes back from the checkpoint's history. A line ahead of it
        (a newer checkpoint cut short) goes: that epoch is trained again."""
        epoch, history = trainer["epoch"], trainer["history"]
        logged = {}
        for row in _json_lines(self.metrics_log):
            if isinstance(row, dict) and "epoch" in row:
                logged.setdefault(row["epoch"], row)
        kept = {r["epoch"]: {**r, "final": False} for r in history if r["epoch"] <= epoch}
        if trainer.get("finished"):
            kept[epoch] = trainer["final_metrics"]
        text = "".join(json.dumps(logged.get(e, kept[e])) + "\n" for e in sorted(kept))
        if not self.metrics_log.is_file() or self.metrics_log.read_text() != text:
            atomic_write_text(self.metrics_log, text)

    def scratch(self) -> Path:
        """A hidden directory to write a checkpoint into before `commit` moves it into place."""
        self.path.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=".ckpt-", dir=self.path))

    def commit(self, scratch: Path, *, epoch: int, final: bool, keep: int) -> CheckpointDir:
        """Move a written checkpoint into place (a whole directory appears, or none); keep the
        newest `keep` epoch checkpoints, none once the final one exists."""
        target = self.final if final else self.epoch(epoch)
        if target.path.exists():
            shutil.rmtree(target.path)
        target.path.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(scratch), target.path)
        old = self.epoch_checkpoints()
        for stale in old if final else old[:-keep]:
            shutil.rmtree(stale.path)
        if final and (self.path / _EPOCHS).is_dir():
            (self.path / _EPOCHS).rmdir()
        return target

    def resume_point(self) -> CheckpointDir | None:
        """Where a restarted run continues: the final checkpoint, else the newest complete epoch
        checkpoint. (A commit here is a rename, whole or not at all; a copy from object storage
        may be cut short when its node died mid-upload: then the one before it serves.)"""
        if self.final.trainer_file.is_file():
            return self.final
        found = [c for c in self.epoch_checkpoints() if c.is_complete()]
        return found[-1] if found else None

    def checkpoints(self) -> list[CheckpointDir]:
        """Every checkpoint directory in the run, complete or not: final/, checkpoints/epoch_NNN/
        and Ray Train's own. Hidden scratch directories (being written) are not checkpoints."""
        dirs = [*self.path.glob(f"*/{_TRAINER}"), *self.path.glob(f"{_EPOCHS}/*/{_TRAINER}")]
        return [CheckpointDir(t.parent) for t in sorted(dirs) if not t.parent.name.startswith(".")]

    def best_checkpoint(self) -> CheckpointDir | None:
        """The complete checkpoint to use: the final one if the run finished, else the latest epoch's."""
        ranked = []
        for c in self.checkpoints():
            if c.is_complete():
                t = c.trainer()
                ranked.append(((bool(t.get("finished")), t["epoch"], str(c.path)), c))
        return max(ranked, key=lambda r: r[0])[1] if ranked else None


def _json_lines(file: Path) -> list:
    """The rows of a JSON-lines file, oldest first; a line cut short by a crash is skipped."""
    out = []
    for line in file.read_text().splitlines() if file.is_file() else []:
        try:
            out.append(json.loads(line))
        except ValueError:
            pass
    return out


def _read_json(path: Path) -> dict:
    data = read_object(path, IncompleteCheckpoint)
    if data is None:
        raise IncompleteCheckpoint(f"{path} is missing")
    return data

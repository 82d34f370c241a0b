"""The trial pool: every trial that produced predictions (finished, or stopped early by ASHA),
with its config, its val and holdout predictions (rows aligned with the data's split) and where its
weights are. Read from the files alone: no Ray, no running cluster. This is what ensembles use.

A trial whose predictions are unreadable or hold NaN / inf (a diverged run), or whose only
checkpoint is incomplete, is left out and named, with the reason: one such trial must not poison
or stop an ensemble of the others."""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..layout.checkpoint_dir import PARTS, CheckpointDir, IncompleteCheckpoint, TrialRunDir
from ..layout.experiment_dir import ExperimentDir


class PoolWarning(UserWarning):
    """Some trials were left out of the pool (the message names them and says why)."""


@dataclass
class PoolEntry:
    trial_id: str
    checkpoint: Path          # the trial's final checkpoint, or its last epoch's if it was stopped early
    finished: bool            # False: stopped early (ASHA) or interrupted; predictions are from its last epoch
    epoch: int
    config: dict              # the resolved flat trial config
    history: list[dict]       # per-epoch metrics
    final_metrics: dict | None

    @property
    def weights(self) -> Path:
        return CheckpointDir(self.checkpoint).weights

    def predictions(self, part: str) -> np.ndarray:
        return CheckpointDir(self.checkpoint).predictions(part)

    @property
    def last(self) -> dict:
        return self.final_metrics or self.history[-1]

    @property
    def val_score(self) -> float:
        """The validation metric signed so that higher is better (what the search maximises)."""
        return self.last["val_score"]

    @property
    def metric(self) -> str:
        return self.last["metric"]

    @property
    def val_metric(self) -> float:
        return self.last[f"val_{self.metric}"]


@dataclass
class Pool:
    entries: list[PoolEntry]                               # best validation score first
    skipped: dict[str, str] = field(default_factory=dict)  # trial id -> why it is left out


def read_pool(exp_dir: str | Path) -> Pool:
    """All trials with usable predictions, and the ones left out with the reason."""
    entries, skipped = [], {}
    for run in ExperimentDir(exp_dir).trial_runs():
        found = _read_trial(run)
        if isinstance(found, PoolEntry):
            entries.append(found)
        elif found is not None:
            skipped[run.path.name] = found
    return Pool(sorted(entries, key=lambda e: (-e.val_score, e.trial_id)), skipped)


def load_pool(exp_dir: str | Path) -> list[PoolEntry]:
    """All trials with usable predictions, best validation score first; a PoolWarning names
    the trials left out."""
    pool = read_pool(exp_dir)
    if pool.skipped:
        warnings.warn(skipped_note(pool.skipped), PoolWarning, stacklevel=2)
    return pool.entries


def skipped_note(skipped: dict[str, str]) -> str:
    n = len(skipped)
    return (f"{n} trial{'' if n == 1 else 's'} left out of the pool: "
            + "; ".join(f"{tid} ({why})" for tid, why in sorted(skipped.items())))


def pool_arrays(exp_dir: str | Path, part: str) -> tuple[np.ndarray, list[PoolEntry]]:
    """Stacked predictions [M, N, C] (or [M, N] for regression) of every pool entry for one part."""
    entries = load_pool(exp_dir)
    if not entries:
        raise FileNotFoundError(f"{exp_dir}: no trial has produced predictions yet")
    return np.stack([e.predictions(part) for e in entries]), entries


def _read_trial(run: TrialRunDir) -> PoolEntry | str | None:
    """The trial's entry; or why it is left out; None if it has written no checkpoint yet."""
    if (failed := run.failure()) is not None:  # its checkpoints led up to a crash, a NaN, a hang
        return f"failed: {failed['cause']}"
    ckpt = run.best_checkpoint()
    if ckpt is None:
        written = run.checkpoints()  # each has a trainer file: finished writing, then damaged
        return f"no complete checkpoint: {written[-1].problem()}" if written else None
    try:
        trainer, config = ckpt.trainer(), ckpt.config()
    except IncompleteCheckpoint as e:
        return str(e)
    for part in PARTS:
        try:  # mmap: scanned, not held; the ensemble loads the members it uses
            finite = bool(np.isfinite(ckpt.predictions(part, mmap=True)).all())
        except (OSError, ValueError, EOFError, TypeError) as e:  # TypeError: not numbers
            return f"{ckpt.preds_file(part)} is unreadable ({e})"
        if not finite:
            return f"its {part} predictions hold NaN or inf"
    return PoolEntry(trial_id=run.path.name, checkpoint=ckpt.path, finished=bool(trainer.get("finished")),
                     epoch=trainer["epoch"], config=config, history=trainer["history"],
                     final_metrics=trainer.get("final_metrics"))

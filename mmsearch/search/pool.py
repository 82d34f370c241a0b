"""The trial pool: every trial that produced predictions (finished, or stopped early by ASHA),
with its config, its val and holdout predictions (rows aligned with data/split.json) and where its
weights are. Read from the files alone: no Ray, no running cluster. This is what ensembles use."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np


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
        return self.checkpoint / "model.safetensors"

    def predictions(self, part: str) -> np.ndarray:
        return np.load(self.checkpoint / f"preds_{part}.npy", allow_pickle=False)

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


def _best_checkpoint(run_dir: Path) -> Path | None:
    """The final checkpoint if the run finished, else the one of the latest epoch."""
    found = []
    # Ray Train runs keep checkpoint dirs at the top; one-worker trials (LocalContext's layout)
    # keep final/ and checkpoints/epoch_NNN/
    for trainer in [*run_dir.glob("*/trainer.json"), *run_dir.glob("checkpoints/*/trainer.json")]:
        try:
            t = json.loads(trainer.read_text())
        except (OSError, json.JSONDecodeError):
            continue  # a checkpoint being written when the machine died
        if all((trainer.parent / f).is_file() for f in ("model.safetensors", "preds_val.npy", "preds_holdout.npy", "config.json")):
            found.append(((t.get("finished", False), t["epoch"]), trainer.parent))
    return max(found)[1] if found else None


def load_pool(exp_dir: str | Path) -> list[PoolEntry]:
    """All trials with predictions, best validation score first."""
    entries = []
    train_dir = Path(exp_dir) / "train"
    for run_dir in sorted(p for p in train_dir.glob("*") if p.is_dir()) if train_dir.is_dir() else []:
        ckpt = _best_checkpoint(run_dir)
        if ckpt is None:
            continue
        t = json.loads((ckpt / "trainer.json").read_text())
        entries.append(PoolEntry(
            trial_id=run_dir.name, checkpoint=ckpt, finished=bool(t.get("finished")), epoch=t["epoch"],
            config=json.loads((ckpt / "config.json").read_text()), history=t["history"], final_metrics=t.get("final_metrics"),
        ))
    return sorted(entries, key=lambda e: (-e.val_score, e.trial_id))


def pool_arrays(exp_dir: str | Path, part: str) -> tuple[np.ndarray, list[PoolEntry]]:
    """Stacked predictions [M, N, C] (or [M, N] for regression) of every pool entry for one part."""
    entries = load_pool(exp_dir)
    if not entries:
        raise FileNotFoundError(f"{exp_dir}: no trial has produced predictions yet")
    return np.stack([e.predictions(part) for e in entries]), entries

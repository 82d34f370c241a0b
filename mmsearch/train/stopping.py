"""Early stopping on val (train.patience): a function of the run's history alone, so that a
resumed run, whose history comes back from its checkpoint, stops where an uninterrupted one
would; under DDP rank 0's decision (its checkpoint is the one resumed from) is every rank's."""
from __future__ import annotations

import math

import torch


def _rank_key(row: dict) -> tuple[float, float]:
    """Higher is better: the val score, then (ties are common on small val sets, e.g. accuracy
    on 90 rows) the lower val loss. A non-finite value ranks last."""
    def finite(x: float) -> float:
        return x if math.isfinite(x) else -math.inf
    return finite(row["val_score"]), finite(-row["val_loss"])


def best_epoch(history: list[dict]) -> int:
    """The epoch of the best row; an epoch that only equals an earlier best does not improve."""
    best = max(range(len(history)), key=lambda i: (*_rank_key(history[i]), -i))
    return history[best]["epoch"]


def epochs_without_improvement(history: list[dict]) -> int:
    return history[-1]["epoch"] - best_epoch(history) if history else 0


def stop_early(history: list[dict], patience: int, device: torch.device) -> bool:
    """True when the last `patience` epochs did not improve on the best before them (patience 0:
    never). Every rank of a DDP group must call it at every epoch (a broadcast when patience > 0)."""
    if patience <= 0:
        return False
    stop = epochs_without_improvement(history) >= patience
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        flag = torch.tensor([float(stop)], device=device)  # NCCL needs the rank's own device
        dist.broadcast(flag, src=0)
        stop = bool(flag.item())
    return stop

"""An experiment's ensemble: members picked on validation, scored honestly on holdout.

Selection (Caruana or learned weights) sees only the val predictions and labels. The holdout
rows are used once, afterwards, to report three numbers side by side: the ensemble, the best
single trial (best by *val*, as it would have been picked without an ensemble) and the uniform
average of every trial. The result is EXP/ensemble/ensemble.json, which `mmsearch export`
turns into a bundle. No torch, no Ray: this runs on a laptop next to a copied experiment.
"""
from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from .. import metrics
from ..errors import MMSearchError
from ..search.pool import PoolEntry, load_pool
from .blending import blend
from .caruana import CaruanaEnsemble
from .learned import LearnedWeightsEnsemble

ENSEMBLE_FILE = Path("ensemble") / "ensemble.json"
METHODS = ("caruana", "learned")
CARUANA_STEPS = 50
# learned weights are all positive (softmax); a member under this share changes no prediction
# noticeably but would cost a whole model at predict time, so it is dropped (and the rest renormalised)
LEARNED_MIN_WEIGHT = 1e-3


def build_ensemble(exp_dir: str | Path, *, size: int | None = None, method: str = "caruana") -> dict:
    """Select members on val, score on holdout, write EXP/ensemble/ensemble.json; return its content.

    size: Caruana's number of greedy steps (default 50); for learned weights, the most members
    to keep (the largest weights, renormalised; default all above LEARNED_MIN_WEIGHT)."""
    from ..data.prepare import PreparedData  # pandas: only when actually building

    exp = Path(exp_dir)
    if method not in METHODS:
        raise MMSearchError(f"--method {method!r}: use {' or '.join(METHODS)}")
    if size is not None and size < 1:
        raise MMSearchError(f"--size must be at least 1, got {size}")
    if not (exp / "data").is_dir():
        raise MMSearchError(f"{exp} is not an mmsearch experiment (no data/ folder)")
    pool = load_pool(exp)
    if not pool:
        raise MMSearchError(f"{exp}: no trial has produced predictions yet; run or resume the search first")
    data = PreparedData.load(exp / "data")
    metric = pool[0].metric
    truth = {part: _truth(data, part) for part in ("val", "holdout")}
    val = np.stack([e.predictions("val") for e in pool])

    weights = _select(method, size, metric, val, truth["val"])  # the only place labels meet selection
    members = [i for i in np.flatnonzero(weights)]

    def score(part: str, idx, w) -> float:
        return metrics.score(metric, truth[part], blend(w, [pool[i].predictions(part) for i in idx]))

    everyone = list(range(len(pool)))
    uniform = np.full(len(pool), 1.0 / len(pool))
    best = 0  # load_pool sorts by val score: the trial a search without an ensemble would ship
    scores = {
        "ensemble": {"members": len(members), **{p: score(p, members, weights[members]) for p in truth}},
        "best_single": {"trial_id": pool[best].trial_id, **{p: score(p, [best], [1.0]) for p in truth}},
        "uniform": {"members": len(pool), **{p: score(p, everyone, uniform) for p in truth}},
    }
    result = {
        "method": method,
        "size": size if size is not None else (CARUANA_STEPS if method == "caruana" else None),
        "metric": metric,
        "selected_on": "val",
        "rows": {p: int(len(truth[p])) for p in truth},
        "pool": len(pool),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "members": [_member(exp, pool[i], float(weights[i])) for i in members],
        "scores": scores,
    }
    _write_json(exp / ENSEMBLE_FILE, result)
    return result


def load_ensemble(exp_dir: str | Path) -> dict | None:
    path = Path(exp_dir) / ENSEMBLE_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def format_scores(result: dict) -> str:
    """The score table: selection data (val) next to the honest number (holdout)."""
    m, s = result["metric"], result["scores"]
    rows = [
        (f"ensemble ({_plural(s['ensemble']['members'], 'member')}, {result['method']})", s["ensemble"]),
        (f"best single trial ({s['best_single']['trial_id']})", s["best_single"]),
        (f"uniform average ({_plural(s['uniform']['members'], 'trial')})", s["uniform"]),
    ]
    width = max(len(r[0]) for r in rows)
    lines = [f"{'':<{width}}  {'val ' + m:>16}  {'holdout ' + m:>16}   (members chosen on val only)"]
    lines += [f"{name:<{width}}  {row['val']:>16.4f}  {row['holdout']:>16.4f}" for name, row in rows]
    return "\n".join(lines)


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _select(method: str, size: int | None, metric: str, val: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Member weights [M] (zeros for trials left out), fitted on val only."""
    if method == "caruana":
        return CaruanaEnsemble(metric=metric, size=size or CARUANA_STEPS).fit(val, y).weights_
    w = LearnedWeightsEnsemble(metric=metric).fit(val, y).weights_
    keep = w >= LEARNED_MIN_WEIGHT
    if size is not None:
        keep &= w >= np.sort(w)[::-1][min(size, len(w)) - 1]
    if not keep.any():
        keep[np.argmax(w)] = True
    w = np.where(keep, w, 0.0)
    return w / w.sum()


def _truth(data, part: str) -> np.ndarray:
    """Class ids, or the regression label values themselves (as a bundle's evaluate scores them;
    the loop scores against a float32 round trip of them: the same up to ~1e-7)."""
    if data.schema.problem_type == "regression":
        return data.rows(part)[data.schema.label].to_numpy(dtype=np.float64)
    return data.labels(part)


def _member(exp: Path, entry: PoolEntry, weight: float) -> dict:
    return {
        "trial_id": entry.trial_id,
        "checkpoint": os.path.relpath(entry.checkpoint.resolve(), exp.resolve()),
        "weight": weight,
        "finished": entry.finished,
        "epoch": entry.epoch,
        f"val_{entry.metric}": entry.val_metric,
    }


def _write_json(path: Path, content: dict) -> None:
    """Write-then-rename: a reader sees the old file or the new one, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(content, f, indent=1)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise

"""An experiment's ensemble: members picked on validation, scored honestly on holdout.

Selection (Caruana or learned weights) sees only the val predictions and labels. The holdout
rows are used once, afterwards, to report three numbers side by side: the ensemble, the best
single trial (best by *val*, as it would have been picked without an ensemble) and the uniform
average of every trial. The result is the experiment's ensemble file (layout.experiment_dir),
which `mmsearch export` turns into a bundle. No torch, no Ray: this runs on a laptop next to a
copied experiment.
"""
from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path

import numpy as np

from .. import metrics
from ..errors import MMSearchError
from ..layout.checkpoint_dir import PARTS, CheckpointDir
from ..layout.experiment_dir import ExperimentDir
from ..search.pool import PoolEntry, read_pool, skipped_note
from .blending import blend
from .options import Selection

def build_ensemble(exp_dir: str | Path, **options) -> dict:
    """Select members on val, score on holdout, write the experiment's ensemble file; return its
    content. Every failure a user can cause is an MMSearchError saying what, where and what to do.

    options: the fields of `Selection` (method, size, metric, tie_metric, sorted_init, bagging,
    bag_fraction, seed); those not given take the defaults for the experiment's problem type. The
    file records every option as resolved, under "selection"; "metric" stays the task metric, the
    one the score table reports (the selection metric may differ)."""
    exp = ExperimentDir(exp_dir)
    valid = [f.name for f in dataclasses.fields(Selection)]
    if unknown := sorted(set(options) - set(valid)):
        raise MMSearchError(f"unknown ensemble option in {unknown}; valid: {', '.join(valid)}")
    selection = Selection(**options)
    if not exp.data.is_dir():
        raise MMSearchError(f"{exp.path} is not an mmsearch experiment (no {exp.data.name}/ folder)")
    found = read_pool(exp.path)
    pool = found.entries
    if not pool and found.skipped:
        raise MMSearchError(f"{exp.path}: no trial has usable predictions ({skipped_note(found.skipped)}); "
                            f"train more trials with `mmsearch resume {exp.path} --more N`")
    if not pool:
        raise MMSearchError(f"{exp.path}: no trial has produced predictions yet; run or resume the search first")
    data = _prepared(exp)
    metric = pool[0].metric
    selection = selection.resolve(data.schema.problem_type)
    truth = {part: _truth(data, part) for part in PARTS}
    preds = {part: [_predictions(e, part, data, exp) for e in pool] for part in truth}
    _check_metric_defined(metric, truth, preds, exp)

    try:  # the only place labels meet selection
        weights = selection.weights(np.stack(preds["val"]), truth["val"])
    except ValueError as e:
        raise MMSearchError(f"{exp.path}: {selection.method} selection on val failed ({e})") from None
    members = [i for i in np.flatnonzero(weights)]

    def score(part: str, idx, w) -> float:
        return metrics.score(metric, truth[part], blend(w, [preds[part][i] for i in idx]))

    everyone = list(range(len(pool)))
    uniform = np.full(len(pool), 1.0 / len(pool))
    best = 0  # read_pool sorts by val score: the trial a search without an ensemble would ship
    scores = {
        "ensemble": {"members": len(members), **{p: score(p, members, weights[members]) for p in truth}},
        "best_single": {"trial_id": pool[best].trial_id, **{p: score(p, [best], [1.0]) for p in truth}},
        "uniform": {"members": len(pool), **{p: score(p, everyone, uniform) for p in truth}},
    }
    result = {
        "method": selection.method,
        "size": selection.size,
        "metric": metric,  # the task metric: what the scores report
        "selection": selection.record(),  # how members were picked (selection metric, ties, init, bagging)
        "selected_on": "val",
        "rows": {p: int(len(truth[p])) for p in truth},
        "pool": len(pool),
        "skipped": found.skipped,  # trial id -> why it was left out of the pool
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "members": [_member(exp.path, pool[i], float(weights[i])) for i in members],
        "scores": scores,
    }
    try:
        exp.write_ensemble(result)
    except OSError as e:
        raise MMSearchError(f"cannot write {exp.ensemble_file} ({e})") from None
    return result


def load_ensemble(exp_dir: str | Path) -> dict | None:
    """The experiment's ensemble, None if none was built; MMSearchError if it is unreadable."""
    return ExperimentDir(exp_dir).read_ensemble()


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
    if "selection" in result:  # files written before the options existed have none
        lines.append(f"selection: {Selection(**result['selection']).describe()}")
    return "\n".join(lines)


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _prepared(exp: ExperimentDir):
    from ..data.prepare import PreparedData  # pandas: only when actually building

    try:
        return PreparedData.load(exp.data)
    except MMSearchError:
        raise
    except (OSError, ValueError) as e:  # a damaged parquet / JSON file
        raise MMSearchError(f"{exp.data} is unreadable ({str(e).splitlines()[0]}); the experiment's prepared data "
                            "is damaged: restore it from a copy, or run the search again") from None


def _predictions(entry: PoolEntry, part: str, data, exp: ExperimentDir) -> np.ndarray:
    """A member's predictions, checked against the experiment's rows and classes."""
    p = entry.predictions(part)
    rows, outputs = len(data.split[part]), data.schema.n_outputs
    want = (rows,) if data.schema.problem_type == "regression" else (rows, outputs)
    if p.shape != want:
        raise MMSearchError(
            f"{CheckpointDir(entry.checkpoint).preds_file(part)} holds predictions of shape {p.shape}, but the "
            f"experiment's {part} rows need {want}: trial {entry.trial_id} was trained on other data; remove "
            f"{exp.trial_run(entry.trial_id).path} and run `mmsearch ensemble` again")
    return p


def _check_metric_defined(metric: str, truth: dict, preds: dict, exp: ExperimentDir) -> None:
    """A metric the labels leave undefined (roc_auc on a part with one class) cannot rank members."""
    for part, y in truth.items():
        if not np.isfinite(metrics.score(metric, y, preds[part][0])):
            classes = np.unique(y).size
            why = f"its {len(y)} rows hold {classes} class{'' if classes == 1 else 'es'}" if len(y) else "it has no rows"
            raise MMSearchError(f"{metric} cannot be computed on the {part} part of {exp.data} ({why}); prepare the "
                                f"table again with a larger --val-frac / --holdout-frac, or with more rows")


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

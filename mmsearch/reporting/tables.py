"""The report's plain tables: summary, leaderboard (every trial, its tricks and searched
parameters) and learning curves, from the records `collect` read."""
from __future__ import annotations

import json

import pandas as pd

from ..layout.experiment_dir import ExperimentDir
from ..search.status import model_label
from .collect import Experiment, Trial


def searched_keys(trials: list[Trial]) -> list[str]:
    """Config keys whose value differs between trials (what the search varied), trick switches
    aside (the tricks column shows them)."""
    keys = sorted({k for t in trials for k in t.params})
    varied = [k for k in keys if len({json.dumps(t.params.get(k), sort_keys=True) for t in trials}) > 1]
    return [k for k in varied if not (k.startswith("tricks.") and k.endswith(".enabled"))]


def leaderboard_table(exp: Experiment) -> pd.DataFrame:
    params = searched_keys(exp.trials)
    rows = [{"trial": t.trial_id, "state": t.state, f"val_{exp.metric}": t.val, f"holdout_{exp.metric}": t.holdout,
             "epochs": t.epochs, "time_s": t.time_s, "model": model_label(t.config) if t.config else "?",
             "tricks": ", ".join(t.tricks) or ("-" if t.tricks_apply else "n/a (fitted once)"),
             **{k: _cell(t.params.get(k)) for k in params}, "error": t.error}
            for t in exp.trials]
    return pd.DataFrame(rows, columns=["trial", "state", f"val_{exp.metric}", f"holdout_{exp.metric}", "epochs",
                                       "time_s", "model", "tricks", *params, "error"])


def curves_table(exp: Experiment) -> pd.DataFrame:
    """Long format: one row per trial and epoch, the val metric as the search saw it."""
    key = f"val_{exp.metric}"
    rows = [{"trial": t.trial_id, "state": t.state, "epoch": r["epoch"], key: r.get(key)}
            for t in exp.trials for r in t.curve]
    return pd.DataFrame(rows, columns=["trial", "state", "epoch", key])


def summary_table(exp: Experiment) -> pd.DataFrame:
    schema, data = exp.data.schema, exp.data
    states = pd.Series([t.state for t in exp.trials]).value_counts()
    roles = [f"{role}: {', '.join(cols)}" for role in ("image", "text", "categorical", "numeric")
             if (cols := schema.by_role(role))]
    best = exp.scored[0] if exp.scored else None
    rows = [
        ("experiment", str(exp.path)),
        ("table", f"{len(data.table)} rows, label {schema.label!r}"),
        ("columns", "; ".join(roles) or "-"),
        ("split", " / ".join(f"{part} {len(data.split[part])}" for part in data.split)),
        ("problem", f"{schema.problem_type}" + (f", {len(schema.classes)} classes" if schema.classes else "")),
        ("metric", f"{exp.metric} ({'higher' if exp.higher_is_better else 'lower'} is better)"),
        ("search", f"{exp.settings.get('searcher')} + {exp.settings.get('scheduler')}, "
                   f"{exp.settings.get('num_samples')} trials asked"),
        ("trials", ", ".join(f"{n} {s}" for s, n in states.items()) or "none yet"),
        ("wall time", _clock(_wall_s(exp))),
        ("trial time (sum)", _clock(sum(t.time_s or 0.0 for t in exp.trials))),
        ("best single trial", f"{best.trial_id}: val {best.val:.4f}" + (f", holdout {best.holdout:.4f}" if best.holdout is not None else "")
                              if best else "none has a score yet"),
        ("ensemble", _ensemble_line(exp)),
        ("bundle", _bundle_line(exp)),
    ]
    if exp.skipped:
        rows.append(("left out", "; ".join(f"{k}: {v}" for k, v in sorted(exp.skipped.items()))))
    return pd.DataFrame(rows, columns=["item", "value"])


def _ensemble_line(exp: Experiment) -> str:
    if not exp.ensemble:
        return f"not built yet (mmsearch ensemble {exp.path})"
    s = exp.ensemble["scores"]["ensemble"]
    return (f"{s['members']} members ({exp.ensemble['method']}): val {s['val']:.4f}, holdout {s['holdout']:.4f}; "
            f"built {exp.ensemble.get('created', '?')} from {exp.ensemble.get('pool', '?')} trials")


def _bundle_line(exp: Experiment) -> str:
    if not exp.bundle:
        return "none in the experiment folder"
    path, manifest = exp.bundle
    return (f"{path}: {len(manifest.get('members', []))} members, {len(manifest.get('files', {}))} files, "
            f"created {manifest.get('created', '?')}")


def _wall_s(exp: Experiment) -> float:
    """From the table's preparation (when the experiment was created) to the latest trial report."""
    logs = [r.metrics_log.stat().st_mtime for r in ExperimentDir(exp.path).trial_runs() if r.metrics_log.is_file()]
    start = min((p.stat().st_mtime for p in exp.data.dir.glob("*.json")), default=None)
    return max(logs) - start if logs and start else 0.0


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min" if seconds >= 3600 else f"{seconds // 60} min {seconds % 60:02d} s"


def _cell(value):
    return value if value is None or isinstance(value, (bool, int, float, str)) else json.dumps(value)

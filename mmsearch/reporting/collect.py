"""An experiment's files as records (the experiment, its trials): what every section of the report reads.

Only files mmsearch writes are read: JSON and JSONL (settings, trial configs, per-epoch metrics,
the ensemble, a bundle's manifest), the prepared table, and npy predictions without pickles; the
trial states come through `search.status.trial_states` (Tune's saved state as plain JSON). A search
still running is reported as it stands: a trial with no final checkpoint shows its curve so far and
the score of its latest epoch checkpoint.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from .. import metrics
from ..errors import MMSearchError
from ..layout.experiment_dir import ExperimentDir
from ..layout.checkpoint_dir import TrialRunDir
from ..search.pool import PoolEntry, read_pool
from ..search.status import trial_states, tricks_on


@dataclass
class Trial:
    trial_id: str
    state: str                 # Tune's (TERMINATED, RUNNING, ERROR, PENDING), STOPPED (ASHA), or INCOMPLETE
    config: dict               # the resolved flat config ({} when the trial never wrote one)
    curve: list[dict]          # one report per epoch, oldest first (the run's metrics log)
    val: float | None          # the val metric of its predictions (its latest report's if it has none)
    holdout: float | None
    epochs: int
    time_s: float | None       # Tune's time_total_s, else the sum of its epochs' times
    error: str | None = None
    in_pool: bool = False      # has usable predictions (what the ensemble may pick)
    tricks_apply: bool = True  # False: a fitted member (trees, the linear probe): the loop applies no trick to it

    @property
    def last(self) -> dict:
        return self.curve[-1] if self.curve else {}

    @property
    def params(self) -> dict:
        """The config as trained: a fitted member's trick keys dropped (they were sampled, not used)."""
        return self.config if self.tricks_apply else {k: v for k, v in self.config.items() if not k.startswith("tricks.")}

    @property
    def tricks(self) -> list[str]:
        on = tricks_on(self.params)
        return [] if on == "-" else on.split(",")


@dataclass
class Experiment:
    path: Path
    settings: dict
    data: object               # mmsearch.data.prepare.PreparedData
    metric: str
    trials: list[Trial]        # best val first; trials without a score last
    ensemble: dict | None
    bundle: tuple[Path, dict] | None = None
    skipped: dict[str, str] = field(default_factory=dict)  # trial id -> why it has no usable predictions

    @property
    def higher_is_better(self) -> bool:
        return metrics.higher_is_better(self.metric)

    @property
    def scored(self) -> list[Trial]:
        return [t for t in self.trials if t.val is not None and math.isfinite(t.val)]


def read_experiment(exp_dir: str | Path) -> Experiment:
    exp = ExperimentDir(exp_dir)
    settings = exp.read_settings()
    if settings is None or not exp.data.is_dir():
        raise MMSearchError(f"{exp.path} is not an mmsearch experiment (no {exp.settings_file.name} or "
                            f"{exp.data.name}/); create one with `mmsearch search`")
    from ..ensemble.build import _prepared  # the one reader of an experiment's prepared data

    data = _prepared(exp)
    pool = read_pool(exp.path)
    entries = {e.trial_id: e for e in pool.entries}
    states = trial_states(exp.path)
    runs = {r.path.name: r for r in exp.trial_runs()}
    trials = [_trial(tid, runs.get(tid), entries.get(tid), states.get(tid, {})) for tid in sorted(set(runs) | set(states))]
    metric = (pool.entries[0].metric if pool.entries else
              next((t.last["metric"] for t in trials if "metric" in t.last), metrics.default_metric(data.schema.problem_type)))
    for t in trials:
        if t.val is None and f"val_{metric}" in t.last:
            t.val, t.holdout = t.last[f"val_{metric}"], t.last.get(f"holdout_{metric}")
    sign = 1 if metrics.higher_is_better(metric) else -1
    trials.sort(key=lambda t: (t.val is None or not math.isfinite(t.val), -sign * (t.val or 0.0), t.trial_id))
    return Experiment(exp.path, settings, data, metric, trials, exp.read_ensemble(), _bundle(exp.path), pool.skipped)


def _trial(tid: str, run: TrialRunDir | None, entry: PoolEntry | None, state: dict) -> Trial:
    curve = _curve(run, entry)
    config = entry.config if entry else _config(run) or _tune_config(state)
    name = state.get("state") or "INCOMPLETE"
    if entry and entry.finished and name in ("INCOMPLETE", "PENDING", "RUNNING"):
        name = "TERMINATED"  # its final checkpoint is newer news than Tune's last saved state
    if name == "PENDING" and curve and not (entry and entry.finished):
        name = "RUNNING"  # it has reported epochs since Tune last saved its state
    if name == "TERMINATED" and entry and not entry.finished:
        name = "STOPPED"  # ended by the scheduler (ASHA) before its last epoch
    times = [r.get("epoch_time_s") for r in curve if isinstance(r.get("epoch_time_s"), (int, float))]
    time_s = state.get("time_s") if state.get("time_s") is not None else (sum(times) if times else None)
    return Trial(tid, name, config, curve, entry.val_metric if entry else None,
                 entry.last.get(f"holdout_{entry.metric}") if entry else None,
                 entry.epoch if entry else (curve[-1].get("epoch", 0) if curve else state.get("epoch") or 0),
                 time_s, state.get("error"), entry is not None, not _fits_itself(config))


def _fits_itself(config: dict) -> bool:
    """A fusion fitted once (trees, the linear probe), not trained by the loop's epochs and hooks."""
    from ..errors import ConfigError
    from ..registry import FUSIONS  # imports the fusion modules (torch) once: the report names no fusion

    try:
        return bool(config.get("model.fusion")) and FUSIONS.get(config["model.fusion"]).fits_itself
    except ConfigError:  # a fusion this installation does not have
        return False


def _curve(run: TrialRunDir | None, entry: PoolEntry | None) -> list[dict]:
    """Per-epoch reports, one per epoch (a resumed run repeats its last report: the latest wins).
    A run without a metrics log (a Ray Train run) falls back to its checkpoint's history."""
    rows = {}
    if run is not None and run.metrics_log.is_file():
        for line in run.metrics_log.read_text().splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:  # a line cut short by a crash while it was written
                continue
            if isinstance(row, dict) and isinstance(row.get("epoch"), int):
                rows[row["epoch"]] = row
    if not rows and entry is not None:
        rows = {r["epoch"]: r for r in entry.history if isinstance(r.get("epoch"), int)}
        if entry.final_metrics:
            rows[entry.epoch] = {**rows.get(entry.epoch, {}), **entry.final_metrics}
    return [rows[e] for e in sorted(rows)]


def _config(run: TrialRunDir | None) -> dict:
    """A trial without usable predictions: the config of any checkpoint it wrote, else its run's."""
    if run is None:
        return {}
    for source in [c.config_file for c in run.checkpoints()] + [run.config_file]:
        try:
            data = json.loads(source.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if isinstance(data, dict):
            return data
    return {}


def _tune_config(state: dict) -> dict:
    config = state.get("config") or {}
    return config.get("trial", config) if isinstance(config, dict) else {}  # a grid wraps it in "trial"


def _bundle(exp_dir: Path) -> tuple[Path, dict] | None:
    """An exported bundle inside the experiment (where `mmsearch demo` writes it), by its manifest."""
    from ..bundle.manifest import FORMAT, MANIFEST  # standard library only

    for manifest in sorted(exp_dir.glob(f"*/{MANIFEST}")):
        try:
            content = json.loads(manifest.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if isinstance(content, dict) and content.get("format") == FORMAT:
            return manifest.parent, content
    return None

"""What a Tune run saved about its trials, read as plain JSON: nothing is unpickled.

Ray Tune saves `experiment_state-<session>.json` in each run directory:
``{"trial_data": [[TRIAL_JSON, RUN_METADATA_JSON], ...], "runner_data": ..., "stats": ...}``,
each inner document itself a JSON string. Objects that JSON cannot hold (the trial's storage
context, its placement group, results, checkpoint manager) are stored as pickles, either as hex
strings or as ``{"_type": "CLOUDPICKLE_FALLBACK", "value": HEX}``. Ray's own readers
(`ExperimentAnalysis`, `Trial.from_json_state`) unpickle them, which runs any code a planted
pickle holds; `mmsearch status` must be safe on an experiment copied from someone else, so this
module takes only the fields that are plain JSON (trial id, status, config, last result) and
never decodes a pickle. (`mmsearch resume` does go through Tune's restore, which unpickles.)
"""
from __future__ import annotations

import json
import math
import re
from pathlib import Path

STATUSES = ("PENDING", "RUNNING", "PAUSED", "TERMINATED", "ERROR")
_PICKLED = "CLOUDPICKLE_FALLBACK"
_TRIAL_ID = re.compile(r"[A-Za-z0-9_\-]{1,64}")  # what Tune generates; also safe inside a glob pattern
_STATE_FILE = "experiment_state-*.json"


def run_states(tune_dir: Path) -> dict[str, dict]:
    """trial id -> {state, error, time_s, epoch, config} from the newest experiment state in one
    Tune run directory ({} when there is none, or it cannot be read: the search died early)."""
    found = sorted(tune_dir.glob(_STATE_FILE))  # Tune's own rule: the greatest name is the newest
    if not found:
        return {}
    try:
        saved = json.loads(found[-1].read_text())
        pairs = saved["trial_data"]
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError):
        return {}
    out = {}
    for pair in pairs if isinstance(pairs, list) else []:
        trial = _trial(pair)
        if trial is not None:
            tid, state = trial
            state["error"] = _error_line(tune_dir, tid) if state["state"] == "ERROR" else None
            out[tid] = state
    return out


def _trial(pair) -> tuple[str, dict] | None:
    """(trial id, its state) from one [TRIAL_JSON, RUN_METADATA_JSON] pair; None if malformed."""
    if not isinstance(pair, list) or len(pair) != 2:
        return None
    trial, meta = (_json_object(doc) for doc in pair)
    tid, status = trial.get("trial_id"), trial.get("status")
    if not isinstance(tid, str) or not _TRIAL_ID.fullmatch(tid) or status not in STATUSES:
        return None
    last = meta.get("last_result")
    last = last if isinstance(last, dict) else {}
    config = _plain(trial.get("config"))
    return tid, {"state": status, "time_s": _number(last.get("time_total_s")), "epoch": _number(last.get("epoch")),
                 "config": config if isinstance(config, dict) else {}}


def _json_object(doc) -> dict:
    try:
        value = json.loads(doc) if isinstance(doc, str) else None
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _plain(value):
    """The value with every pickled part left out (never decoded)."""
    if isinstance(value, dict):
        if value.get("_type") == _PICKLED:
            return None
        return {k: _plain(v) for k, v in value.items() if not (isinstance(v, dict) and v.get("_type") == _PICKLED)}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _number(value) -> float | int | None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    return value if ok else None


def _error_line(tune_dir: Path, trial_id: str) -> str | None:
    """The last line of the error Tune wrote next to the trial (error.txt: text, never error.pkl)."""
    found = sorted(tune_dir.glob(f"*{trial_id}*/error.txt"))
    if not found:
        return None
    try:
        lines = found[-1].read_text(errors="replace").strip().splitlines()
    except OSError:
        return None
    return lines[-1][:200] if lines else None

"""The leaderboard of an experiment, from its files (no running cluster). Only JSON and npy
(allow_pickle off) are read: `status` is safe on an experiment someone else wrote."""
from __future__ import annotations

from pathlib import Path

from ..layout.experiment_dir import ExperimentDir
from ._tune_state import run_states
from .pool import read_pool, skipped_note


def trial_states(exp_dir: Path) -> dict[str, dict]:
    """trial id -> {state, error, time_s, epoch, config} from every Tune run's saved experiment
    state, read as plain JSON: nothing in the experiment directory is unpickled (_tune_state)."""
    out = {}
    for tune_dir in ExperimentDir(exp_dir).tune_runs():
        out.update(run_states(tune_dir))
    return out


def tricks_on(config: dict) -> str:
    """The trial's enabled tricks, comma-separated ('-': none)."""
    on = sorted(k.split(".")[1] for k, v in config.items() if k.startswith("tricks.") and k.endswith(".enabled") and v)
    return ",".join(on) or "-"


def blend_weights_note(metrics: dict) -> str:
    """' gblend w: fused .31 text .52 ...' from a trial's latest metrics ('' when it has none)."""
    weights = {k[len("gblend_w_"):]: v for k, v in metrics.items() if k.startswith("gblend_w_")}
    return (" gblend w: " + " ".join(f"{k} {v:.2f}" for k, v in weights.items())) if weights else ""


def model_label(config: dict) -> str:
    """The fusion, and the modalities read when not all of them (e.g. 'lf_mlp[text]')."""
    modalities = config.get("model.modalities", "all")
    return config.get("model.fusion", "?") + ("" if modalities == "all" else f"[{modalities}]")


def leaderboard(exp_dir: Path, *, shown: str | None = None) -> str:
    """shown: the experiment's name in the header (its URI, when exp_dir is a mirror of it)."""
    states = trial_states(exp_dir)
    found = read_pool(exp_dir)
    pool = {e.trial_id: e for e in found.entries}
    metric = next(iter(pool.values())).metric if pool else None
    rows = []
    layout = ExperimentDir(exp_dir)
    for tid in sorted(set(states) | set(pool)):
        st, entry = states.get(tid, {}), pool.get(tid)
        failed = layout.trial_run(tid).failure()  # the trial's own record says more than "the actor died"
        tune_config = st.get("config") or {}
        config = entry.config if entry else tune_config.get("trial", tune_config)  # grid wraps it in "trial"
        state = st.get("state", "?")
        if state == "TERMINATED" and entry and not entry.finished:
            state = "STOPPED"  # ended by the scheduler (ASHA) before its last epoch
        score = entry.val_metric if entry else None
        rows.append((entry.val_score if entry else float("-inf"), tid, state, entry.epoch if entry else (st.get("epoch") or 0),
                     score, st.get("time_s"), model_label(config), tricks_on(config) + blend_weights_note(entry.last if entry else {}),
                     failed["cause"] if failed else st.get("error")))
    rows.sort(key=lambda r: (-r[0], r[1]))
    head = f"{'trial':<22} {'state':<11} {'epochs':>6} {'val ' + (metric or 'score'):>14} {'time_s':>8}  {'model':<7} tricks"
    lines = [f"experiment {shown or exp_dir}: {len(rows)} trials, {len(pool)} with predictions", head]
    for _, tid, state, epochs, score, time_s, fusion, tricks, error in rows:
        s = f"{score:.4f}" if score is not None else "-"
        t = f"{time_s:.0f}" if time_s is not None else "-"
        lines.append(f"{tid:<22} {state:<11} {epochs:>6} {s:>14} {t:>8}  {fusion:<7} {tricks}" + (f"\n{'':<22} error: {error}" if error else ""))
    if found.skipped:
        lines.append(f"note: {skipped_note(found.skipped)}")
    return "\n".join(lines)

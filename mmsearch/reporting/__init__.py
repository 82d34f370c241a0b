"""`mmsearch report`: which tricks helped on this table, in tables (Python) and one HTML page.

  collect       the experiment's files -> records of the experiment and its trials
  tables        summary, leaderboard, learning curves
  attribution   each trick's marginal effect with a bootstrap interval; Optuna PED-ANOVA importance
  members       the ensemble's members and each one's contribution
  modalities    single-modality vs fused trials; G-Blend weights
  plots         matplotlib figures as embedded PNG
  html          the self-contained page (no script, no CDN: it opens offline)

Reads only what mmsearch writes (JSON, JSONL, the prepared table, npy without pickles), so it runs
on a copied experiment, while its search is still going, with no cluster.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from ..layout.experiment_dir import ExperimentDir


@dataclass
class Report:
    """The report's tables; `experiment` is what they were read from."""
    summary: pd.DataFrame       # item, value
    leaderboard: pd.DataFrame   # one row per trial, best val first
    curves: pd.DataFrame        # one row per trial and epoch
    tricks: pd.DataFrame        # one row per trick: marginal effect and its 95 % interval, verdict
    importance: pd.DataFrame    # one row per searched dimension: PED-ANOVA importance (empty: too few trials)
    ensemble: pd.DataFrame      # one row per member: weight, tricks, the ensemble's val score without it
    modalities: pd.DataFrame    # one row per set of modalities read: trials, best and mean val
    gblend: pd.DataFrame        # one row per trial that used G-Blend: its weight per head
    experiment: object = field(repr=False, default=None)


def report(exp_dir: str | Path) -> Report:
    """The report of an experiment, as DataFrames."""
    from .attribution import importance, marginal_effects
    from .collect import read_experiment
    from .tables import curves_table, leaderboard_table, summary_table
    from .members import members_table
    from .modalities import gblend_table, modality_table

    exp = read_experiment(exp_dir)
    return Report(summary=summary_table(exp), leaderboard=leaderboard_table(exp), curves=curves_table(exp),
                  tricks=marginal_effects(exp), importance=importance(exp), ensemble=members_table(exp),
                  modalities=modality_table(exp), gblend=gblend_table(exp), experiment=exp)


def write_report(exp_dir: str | Path, out: str | Path | None = None) -> Path:
    """Write the HTML page (default: EXP/report.html); return its path."""
    from .._atomic import atomic_write_text
    from .html import render

    path = Path(out) if out else ExperimentDir(exp_dir).report_file
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, render(report(exp_dir)))
    return path

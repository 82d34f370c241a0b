"""Per modality: how the single-modality trials compare with the fused ones, and the G-Blend
weights trials learnt (which modality's head G-Blend trusted; trials report them as
`gblend_w_<head>` every epoch)."""
from __future__ import annotations

import pandas as pd

from .collect import Experiment

GBLEND_PREFIX = "gblend_w_"


def modality_table(exp: Experiment) -> pd.DataFrame:
    """One row per set of modalities read ('all' = fused): trials, best and mean val metric."""
    key = f"val_{exp.metric}"
    rows = [{"modalities": t.config.get("model.modalities", "all"), key: t.val} for t in exp.scored if t.config]
    if not rows:
        return pd.DataFrame([], columns=["modalities", "trials", f"best_{key}", f"mean_{key}"])
    best = "max" if exp.higher_is_better else "min"
    table = (pd.DataFrame(rows).groupby("modalities")[key].agg(["count", best, "mean"]).reset_index()
             .set_axis(["modalities", "trials", f"best_{key}", f"mean_{key}"], axis=1))
    return table.sort_values(f"best_{key}", ascending=not exp.higher_is_better, ignore_index=True)


def gblend_table(exp: Experiment) -> pd.DataFrame:
    """One row per trial that used G-Blend: its latest weight per head (columns w_<head>)."""
    rows = []
    for t in exp.trials:
        weights = {"w_" + k[len(GBLEND_PREFIX):]: v for k, v in t.last.items() if k.startswith(GBLEND_PREFIX)}
        if weights:
            rows.append({"trial": t.trial_id, f"val_{exp.metric}": t.val, **weights})
    return pd.DataFrame(rows)


def has_modality_contrast(table: pd.DataFrame) -> bool:
    """Something to compare: more than one set of modalities was tried."""
    return len(table) > 1

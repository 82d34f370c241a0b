"""The ensemble's members: weight, tricks, and what each one contributes.

A member's contribution is the ensemble's val score without it (the other weights renormalised to
sum 1), scored by the same blend and metric as `mmsearch ensemble`: if the ensemble is worse
without a member, that member earns its place. Val, because that is where the members were picked;
the holdout number stays the one honest score of the whole ensemble (the summary shows it).
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from .. import metrics
from ..ensemble.blending import blend
from ..errors import MMSearchError
from ..layout.checkpoint_dir import CheckpointDir
from ..search.status import model_label, tricks_on
from .collect import Experiment

PART = "val"


def members_table(exp: Experiment) -> pd.DataFrame:
    columns = ["trial", "weight", f"val_{exp.metric}", "model", "tricks", f"ensemble_val_without", "change_without"]
    if not exp.ensemble:
        return pd.DataFrame([], columns=columns)
    from ..ensemble.build import _truth  # the labels exactly as the ensemble was scored against

    members = exp.ensemble["members"]
    weights = np.array([m["weight"] for m in members], dtype=float)
    try:
        preds = [CheckpointDir(exp.path / m["checkpoint"]).predictions(PART) for m in members]
    except (OSError, ValueError) as e:
        raise MMSearchError(f"{exp.path}: an ensemble member's predictions are unreadable ({e}); "
                            f"run `mmsearch ensemble {exp.path}` again") from None
    truth = _truth(exp.data, PART)
    whole = metrics.score(exp.metric, truth, blend(weights / weights.sum(), preds))
    configs = {t.trial_id: t.params for t in exp.trials}
    rows = []
    for i, m in enumerate(members):
        rest = np.delete(np.arange(len(members)), i)
        without = (metrics.score(exp.metric, truth, blend(weights[rest] / weights[rest].sum(), [preds[j] for j in rest]))
                   if len(rest) and weights[rest].sum() > 0 else None)
        config = configs.get(m["trial_id"], {})
        rows.append({"trial": m["trial_id"], "weight": m["weight"], f"val_{exp.metric}": m.get(f"val_{exp.metric}"),
                     "model": model_label(config), "tricks": tricks_on(config).replace(",", ", "),
                     "ensemble_val_without": without, "change_without": None if without is None else without - whole})
    return pd.DataFrame(rows, columns=columns)

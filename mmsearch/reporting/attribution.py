"""Which tricks helped on this table: two estimates, side by side.

1. The marginal effect of each trick: mean val metric of the trials with it on minus those with it
   off, with a seeded percentile-bootstrap 95 % interval (each arm resampled on its own). Easy to
   read, but confounded when the search correlates a trick with other choices (TPE keeps sampling
   what worked; a trick may only ever be on with the better fusion).
2. Optuna's PED-ANOVA importance over all searched dimensions at once, the trials imported into an
   in-memory study with `create_trial`. It asks which dimensions separate the best trials from the
   rest, so it controls for the others, and it handles conditional parameters (a trick's own
   settings exist only in trials where it is on; a fusion's only where it is used).

Trials stopped early by ASHA count with the score of their last epoch: the scheduler stops trials
that rank low at a rung, so this is a fair if slightly harsh estimate of where they would end.
Fitted members (fusions fitted once: lightgbm, linear) take no trick, whatever their config sampled: they
are left out of the marginal effects and enter the importance with every trick off.

Too few trials (why these thresholds): an interval needs at least MIN_PER_ARM trials with the
trick on and as many with it off (a bootstrap of one or two values only repeats them); importance
needs MIN_TRIALS_IMPORTANCE scored trials. PED-ANOVA contrasts the best trials (a top quantile)
with all of them; the quantile holds at least MIN_TOP trials (Optuna's default 10 % once there are
10 x MIN_TOP): a top set of two or three makes any continuous dimension look important, as a few
points always look concentrated (on the tests' 19 trials the no-op learning rate came first at
16 % and last at 33 %). Below these thresholds the tables say "too few trials", not a number.
"""
from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pandas as pd

from .collect import Experiment, Trial
from .tables import searched_keys

MIN_PER_ARM = 3
MIN_TRIALS_IMPORTANCE = 8
MIN_TOP = 6
N_BOOTSTRAP = 2000
SEED = 0

TOO_FEW = "too few trials"


def trick_names(trials: list[Trial]) -> list[str]:
    """Every trick switched on in some trial (tricks never on have nothing to say)."""
    return sorted({k.split(".")[1] for t in trials for k, v in t.params.items()
                   if k.startswith("tricks.") and k.endswith(".enabled") and v})


def marginal_effects(exp: Experiment) -> pd.DataFrame:
    """One row per trick on in some trial: trials on / off, mean val metric of each, the effect
    (on - off) and its bootstrap 95 % interval, and a verdict in words. Fitted members are left out:
    the loop applies no trick to them (trees, the linear probe), so they would only dilute the 'off' arm."""
    trials, better = [t for t in exp.scored if t.tricks_apply], 1 if exp.higher_is_better else -1
    rows = []
    for name in trick_names(exp.trials):
        on = np.array([t.val for t in trials if t.params.get(f"tricks.{name}.enabled")], dtype=float)
        off = np.array([t.val for t in trials if not t.params.get(f"tricks.{name}.enabled")], dtype=float)
        row = {"trick": name, "on": len(on), "off": len(off), "mean_on": _mean(on), "mean_off": _mean(off),
               "effect": None, "ci_low": None, "ci_high": None}
        if min(len(on), len(off)) >= MIN_PER_ARM:
            row["effect"] = float(on.mean() - off.mean())
            row["ci_low"], row["ci_high"] = bootstrap_ci(on, off)
            row["verdict"] = _verdict(row["ci_low"] * better, row["ci_high"] * better)
        elif len(off) == 0 and len(on) >= 2 * MIN_PER_ARM:
            row["verdict"] = "on in every trial: nothing to compare it with"
        else:
            row["verdict"] = f"{TOO_FEW} ({len(on)} on, {len(off)} off; an interval needs {MIN_PER_ARM} of each)"
        rows.append(row)
    columns = ["trick", "on", "off", "mean_on", "mean_off", "effect", "ci_low", "ci_high", "verdict"]
    return pd.DataFrame(rows, columns=columns)


def bootstrap_ci(on: np.ndarray, off: np.ndarray, *, n: int = N_BOOTSTRAP, seed: int = SEED) -> tuple[float, float]:
    """Percentile 95 % interval of mean(on) - mean(off), each arm resampled with replacement."""
    rng = np.random.default_rng(seed)
    diffs = rng.choice(on, (n, len(on))).mean(axis=1) - rng.choice(off, (n, len(off))).mean(axis=1)
    low, high = np.percentile(diffs, [2.5, 97.5])
    return float(low), float(high)


def _verdict(low: float, high: float) -> str:
    """low, high: the interval signed so that positive is better."""
    lo, hi = sorted((low, high))
    if lo > 0:
        return "helped (the interval excludes zero)"
    if hi < 0:
        return "hurt (the interval excludes zero)"
    return "no clear effect (the interval includes zero)"


def _mean(values: np.ndarray) -> float | None:
    return float(values.mean()) if len(values) else None


# -- importance ---------------------------------------------------------------------------------
def importance(exp: Experiment) -> pd.DataFrame:
    """PED-ANOVA importance (normalised to sum 1) of every searched dimension; empty with fewer
    than MIN_TRIALS_IMPORTANCE scored trials."""
    columns = ["dimension", "trick", "importance"]
    trials = exp.scored
    switches = _switches(trials)
    configs = [{**dict.fromkeys(switches, False), **t.params} for t in trials]  # no key: the trick is off
    distributions = {k: d for k in searched_keys(trials) + switches
                     if (d := _distribution([c[k] for c in configs if k in c]))}
    if len(trials) < MIN_TRIALS_IMPORTANCE or not distributions:
        return pd.DataFrame([], columns=columns)
    found = _ped_anova([t.val for t in trials], configs, distributions, exp.higher_is_better)
    rows = [{"dimension": k, "trick": _trick_of(k), "importance": float(v)} for k, v in found.items()]
    return pd.DataFrame(rows, columns=columns).sort_values("importance", ascending=False, ignore_index=True)


def _ped_anova(values: list[float], configs: list[dict], distributions: dict, maximize: bool) -> dict[str, float]:
    """The trials in an in-memory study (a trial holds only the parameters its config has)."""
    import optuna

    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # not "a new study created" on every report
    try:
        study = optuna.create_study(direction="maximize" if maximize else "minimize",
                                    storage=optuna.storages.InMemoryStorage())
        study.add_trials([optuna.trial.create_trial(
            params={k: _value(c[k], d) for k, d in distributions.items() if k in c},
            distributions={k: d for k, d in distributions.items() if k in c}, value=v) for v, c in zip(values, configs)])
        quantile = min(0.5, max(0.1, MIN_TOP / len(values)))
        with warnings.catch_warnings():  # "experimental" and "importances will be equal": the page says it plainly
            warnings.simplefilter("ignore")
            return optuna.importance.get_param_importances(
                study, evaluator=optuna.importance.PedAnovaImportanceEvaluator(target_quantile=quantile))
    finally:
        optuna.logging.set_verbosity(verbosity)


def trick_importance(table: pd.DataFrame) -> dict[str, float]:
    """A trick's share of the importance: its switch and its own settings together."""
    return table.dropna(subset=["trick"]).groupby("trick")["importance"].sum().to_dict() if len(table) else {}


def _switches(trials: list[Trial]) -> list[str]:
    """The trick switches the search varied (a trial whose config lacks one has it off)."""
    keys = [f"tricks.{name}.enabled" for name in trick_names(trials)]
    return [k for k in keys if len({bool(t.params.get(k)) for t in trials}) > 1]


def _distribution(values: list):
    """The Optuna distribution that holds the values seen; None when they never vary."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution

    distinct = {json.dumps(v, sort_keys=True) for v in values}
    if len(distinct) < 2:
        return None
    numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values)
    if numeric and len(distinct) > 4:  # a range; few distinct numbers are choices
        lo, hi = float(min(values)), float(max(values))
        return FloatDistribution(lo, hi, log=lo > 0 and hi / lo >= 10)
    return CategoricalDistribution(sorted(distinct))


def _value(value, distribution):
    from optuna.distributions import CategoricalDistribution

    return json.dumps(value, sort_keys=True) if isinstance(distribution, CategoricalDistribution) else float(value)


def _trick_of(key: str) -> str | None:
    return key.split(".")[1] if key.startswith("tricks.") else None

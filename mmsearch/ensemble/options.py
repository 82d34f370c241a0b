"""How an experiment's ensemble picks its members: the options, their defaults and their checks.

One table (the fields of `Selection`) is read by `build_ensemble`, by the CLI (one flag per
field, help text from the field) and by the ensemble file (what was chosen, defaults resolved),
so an option is spelled once. Defaults come from benchmarks/bench_ensemble.py (val -> holdout on
small val sets, see benchmarks/README.md), not from taste:

* selection metric: log loss for classification, the task metric breaking ties. Log loss moves
  with every row's probability, where accuracy moves in steps of one row: selecting on the task
  metric overfitted ~90 val rows by 4-6 points, log loss by < 1, and scored as well or better on
  unseen rows. Regression selects on the task metric (r2 and rmse rank blends identically);
* DEFAULT_STEPS greedy steps: 10, 25 and 50 gave the same ensembles (the best prefix is kept);
* no sorted initialisation and no bagging: with log loss, gains within noise, and bagging spreads
  the weight over 2-3x as many members (each a full model at predict time).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np

from .. import metrics
from ..errors import MMSearchError
from .caruana import CaruanaEnsemble
from .learned import LearnedWeightsEnsemble

METHODS = ("caruana", "learned")
DEFAULT_STEPS = 25
# learned weights are all positive (softmax); a member under this share changes no prediction
# noticeably but would cost a whole model at predict time, so it is dropped (and the rest renormalised)
LEARNED_MIN_WEIGHT = 1e-3
CARUANA_ONLY = ("metric", "tie_metric", "sorted_init", "bagging", "bag_fraction", "seed")


def _opt(default, help: str, **cli):
    return field(default=default, metadata={"help": help, **cli})


@dataclass(frozen=True)
class Selection:
    """Ensemble selection options; None = the default for the experiment's problem type."""

    method: str = _opt("caruana", "caruana: forward selection with replacement; learned: softmax weights fitted on "
                       "val NLL (classification) or MSE (regression)", choices=METHODS)
    size: int | None = _opt(None, f"caruana: greedy steps after the sorted initialisation (default {DEFAULT_STEPS}); "
                            "learned: keep at most N members (default: every weight >= 0.001)", type=int)
    metric: str | None = _opt(None, "caruana: the metric the selection optimises on val (default: log_loss for "
                              "classification, the task metric for regression; one of " + ", ".join(metrics.METRICS)
                              + "); the score table keeps reporting the task metric")
    tie_metric: str | None = _opt(None, "caruana: breaks ties in the selection metric (default: the task metric, or "
                                  "log_loss / rmse when selecting on the task metric)")
    sorted_init: int | None = _opt(None, "caruana: start from the N best single trials (distinct), then go greedy "
                                   "(default 0)", type=int)
    bagging: int | None = _opt(None, "caruana: repeat the selection on N random subsets of the trials and average "
                               "the weights (default 0: no bagging)", type=int)
    bag_fraction: float | None = _opt(None, "caruana with --bagging: share of the trials in each subset (default 0.5)",
                                      type=float)
    seed: int | None = _opt(None, "caruana with --bagging: seeds the subsets (default 0)", type=int)

    def __post_init__(self):
        """The checks that need no experiment (so a typo is said before anything is read)."""
        if self.method not in METHODS:
            raise MMSearchError(f"--method {self.method!r}: use {' or '.join(METHODS)}")
        if self.size is not None and self.size < 1:
            raise MMSearchError(f"--size must be at least 1, got {self.size}")
        if self.method == "learned":
            given = [_flag(n) for n in CARUANA_ONLY if getattr(self, n) is not None]
            if given:
                raise MMSearchError(f"{', '.join(given)} only apply to --method caruana (learned weights always "
                                    "minimise val NLL or MSE); drop them or use --method caruana")
        for name in ("metric", "tie_metric"):
            value = getattr(self, name)
            if value is not None and value not in metrics.METRICS:
                raise MMSearchError(f"{_flag(name)} {value!r}: unknown metric; valid metrics: "
                                    f"{', '.join(sorted(metrics.METRICS))}")
        for name in ("sorted_init", "bagging", "seed"):
            if (value := getattr(self, name)) is not None and value < 0:
                raise MMSearchError(f"{_flag(name)} must be >= 0, got {value}")
        if self.bag_fraction is not None and not 0.0 < self.bag_fraction <= 1.0:
            raise MMSearchError(f"--bag-fraction must be in (0, 1], got {self.bag_fraction}")

    def resolve(self, problem_type: str) -> "Selection":
        """Every default filled in for this problem type; MMSearchError for a metric that does not fit it."""
        if self.method == "learned":
            return self
        kind, task = _kind(problem_type), metrics.default_metric(problem_type)
        for name in ("metric", "tie_metric"):
            value = getattr(self, name)
            if value is not None and metrics.metric_task(value) != kind:
                fits = sorted(metrics.REGRESSION_METRICS if kind == "regression" else metrics.CLASSIFICATION_METRICS)
                raise MMSearchError(f"{_flag(name)} {value}: a {metrics.metric_task(value)} metric, but this experiment "
                                    f"is {problem_type}; use one of {', '.join(fits)}")
        metric = self.metric or ("log_loss" if kind == "classification" else task)
        tie = self.tie_metric or (task if metric != task else metrics.secondary_metric(problem_type))
        return dataclasses.replace(
            self, size=self.size or DEFAULT_STEPS, metric=metric, tie_metric=tie, sorted_init=self.sorted_init or 0,
            bagging=self.bagging or 0, bag_fraction=0.5 if self.bag_fraction is None else self.bag_fraction,
            seed=self.seed or 0)

    def weights(self, val: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Member weights [M] (zeros for trials left out), fitted on val only (call on a resolved Selection)."""
        if self.method == "caruana":
            return CaruanaEnsemble(metric=self.metric, size=self.size, sorted_init=self.sorted_init,
                                   bagging=self.bagging, bag_fraction=self.bag_fraction, tie_metric=self.tie_metric,
                                   seed=self.seed).fit(val, y).weights_
        w = LearnedWeightsEnsemble(metric="log_loss" if val.ndim == 3 else "rmse").fit(val, y).weights_
        keep = w >= LEARNED_MIN_WEIGHT
        if self.size is not None:
            keep &= w >= np.sort(w)[::-1][min(self.size, len(w)) - 1]
        if not keep.any():
            keep[np.argmax(w)] = True
        w = np.where(keep, w, 0.0)
        return w / w.sum()

    def record(self) -> dict:
        """What the ensemble file says about the selection (the options that applied)."""
        names = ("method", "size") if self.method == "learned" else [f.name for f in dataclasses.fields(self)]
        return {n: getattr(self, n) for n in names}

    def describe(self) -> str:
        """One line for the score table: how the members were picked."""
        if self.method == "learned":
            return "learned weights on val" + (f", at most {self.size} members" if self.size else "")
        parts = [f"caruana on val {self.metric} (ties: {self.tie_metric})", f"{self.size} steps"]
        if self.sorted_init:
            parts.append(f"sorted init {self.sorted_init}")
        if self.bagging:
            parts.append(f"{self.bagging} bags of {self.bag_fraction:g} (seed {self.seed})")
        return ", ".join(parts)


def _kind(problem_type: str) -> str:
    return "regression" if problem_type == "regression" else "classification"


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")

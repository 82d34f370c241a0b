"""Searchers and schedulers by name, each name spelled once (Ray Tune's `SEARCH_ALG_IMPORT` /
`create_scheduler` habit): the CLI's choices, `Settings`' validation and `build_tuner`'s
construction all read these two tables. A factory imports optuna / ray only when called, so
listing the names (`mmsearch --help`) imports neither.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:
    from .experiment import Settings
    from .space import SearchSpace

METRIC, MODE, TIME_ATTR = "val_score", "max", "epoch"  # val_score: higher is better for every metric


@dataclass(frozen=True)
class Searcher:
    # (space, settings, warm_start) -> (Tune search algorithm or None, Tune param_space); warm_start:
    # a finished run's directory whose searcher state the new one continues from
    build: Callable[["SearchSpace", "Settings", Path | None], tuple[Any, dict]]
    # enumerates the space: checked before anything runs, and done once it has been enumerated
    # (`resume --more` has nothing new to add)
    finite: bool = False


def _optuna(sampler: str) -> Callable:
    def build(space: "SearchSpace", settings: "Settings", warm_start: Path | None) -> tuple[Any, dict]:
        import optuna
        from ray.tune.search import ConcurrencyLimiter
        from ray.tune.search.optuna import OptunaSearch

        # the space's `first` points go first (a resumed study already holds them: not twice)
        search = OptunaSearch(space=space.define_by_run, metric=METRIC, mode=MODE,
                              sampler=getattr(optuna.samplers, sampler)(seed=settings.seed),
                              points_to_evaluate=None if warm_start is not None else (space.first or None))
        limited = ConcurrencyLimiter(search, max_concurrent=settings.max_concurrent)
        if warm_start is not None:  # the study keeps every earlier trial: TPE goes on learning
            limited.restore_from_dir(str(warm_start.resolve()))
        return limited, {}
    return build


def _grid(space: "SearchSpace", settings: "Settings", warm_start: Path | None) -> tuple[Any, dict]:
    from ray import tune

    # no search algorithm: Tune's variant generator enumerates the grid (num_samples repeats it)
    return None, {"trial": tune.grid_search(space.grid())}


def _max_epochs(space: "SearchSpace") -> int:
    from ..config import TrainConfig

    for d in space.dims:
        if d.key == "train.epochs":
            return int(max(d.values()))
    return int(space.fixed.get("train.epochs", TrainConfig.epochs))


def _asha(space: "SearchSpace", settings: "Settings"):
    from ray.tune.schedulers import ASHAScheduler

    # the last epoch's report is the trial's final one (soup + final predictions): max_t = epochs
    return ASHAScheduler(time_attr=TIME_ATTR, max_t=_max_epochs(space), grace_period=1, reduction_factor=2)


def _fifo(space: "SearchSpace", settings: "Settings"):
    from ray.tune.schedulers import FIFOScheduler

    return FIFOScheduler()


SEARCHERS: dict[str, Searcher] = {
    "tpe": Searcher(_optuna("TPESampler")),
    "random": Searcher(_optuna("RandomSampler")),
    "grid": Searcher(_grid, finite=True),
}
SCHEDULERS: dict[str, Callable[["SearchSpace", "Settings"], Any]] = {"asha": _asha, "fifo": _fifo}

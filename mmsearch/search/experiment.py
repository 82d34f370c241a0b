"""An experiment: a prepared table + a search space + search settings, in one directory
(its layout: mmsearch.layout.experiment_dir). The table is prepared once and every trial reuses
it; each extension of the search is a new Tune run that warm-starts its searcher from the last.

Each Tune trial runs mmsearch.train.loop in one of two ways (Settings.runner):

* a trial with several workers (--workers-per-trial N > 1, DDP across GPUs and nodes), or any
  trial with --runner ray-train, drives one Ray Train TorchTrainer (Train V2's supported pattern);
  its workers' reports reach Tune through TuneReportCallback;
* a one-worker trial (the default, --runner auto) is its own worker: the Tune trial process
  trains with the worker's resources and reports straight to Tune. A Train run spawns a controller,
  a worker and five helper actors per trial, each a fresh Python process (~3 s of CPU apiece
  here); for one worker they add nothing but start-up time (benchmarks/bench_trial_overhead.py).

Both write their checkpoints in the trial's run directory, which is what the pool reads, and
both resume from the latest of them after a failure or `mmsearch resume`.
"""
from __future__ import annotations

import shutil
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..layout.experiment_dir import ExperimentDir
from .space import SearchSpace

METRIC, MODE, TIME_ATTR = "val_score", "max", "epoch"  # val_score: higher is better for every metric
TRIAL_RESOURCE = "trial_slot"  # trial drivers take one of these, never a CPU (no 2-core deadlock)


@dataclass
class Settings:
    searcher: str = "tpe"           # tpe | random | grid
    scheduler: str = "asha"         # asha | fifo
    num_samples: int = 8            # trials (grid: repeats of the whole grid)
    time_budget_s: float = 0.0      # 0: no budget
    max_concurrent: int = 1
    workers_per_trial: int = 1
    cpus_per_worker: float = 0.0     # 0: auto, the CPUs per node shared by the concurrent trials' workers
    gpus_per_worker: float = 0.0
    max_failures: int = 1           # restarts from the last checkpoint, per trial
    seed: int = 0
    runner: str = "auto"            # auto: one-worker trials train in the trial process | ray-train: always Ray Train

    def __post_init__(self):
        if self.searcher not in ("tpe", "random", "grid"):
            raise ConfigError(f"--searcher {self.searcher!r}: use tpe, random or grid")
        if self.scheduler not in ("asha", "fifo"):
            raise ConfigError(f"--scheduler {self.scheduler!r}: use asha or fifo")
        if self.num_samples < 1 or self.max_concurrent < 1 or self.workers_per_trial < 1:
            raise ConfigError("--num-samples, --max-concurrent and --workers-per-trial must be at least 1")
        if self.runner not in ("auto", "ray-train"):
            raise ConfigError(f"--runner {self.runner!r}: use auto or ray-train")

    @property
    def in_trial(self) -> bool:
        """Does the Tune trial process train itself (one worker), rather than drive a Ray Train run?"""
        return self.runner == "auto" and self.workers_per_trial == 1

    def worker_resources(self) -> dict:
        """What one training worker asks Ray for (cpus_per_worker 0: the auto share; Ray must be up)."""
        cpus = self.cpus_per_worker or auto_cpus_per_worker(self)
        return {"CPU": cpus, **({"GPU": self.gpus_per_worker} if self.gpus_per_worker else {})}

    def save(self, exp_dir: Path) -> None:
        ExperimentDir(exp_dir).write_settings(asdict(self))

    @classmethod
    def load(cls, exp_dir: Path) -> "Settings":
        layout = ExperimentDir(exp_dir)
        if (data := layout.read_settings()) is None:
            raise ConfigError(f"{exp_dir} is not an mmsearch experiment (no {layout.settings_file.name})")
        return cls(**{f.name: data[f.name] for f in fields(cls) if f.name in data})


def create(data, label: str, space_file: str | Path, exp_dir: str | Path, settings: Settings, **prepare_kw) -> Path:
    """Check the space, prepare the table, write the settings. Nothing is written if a check fails."""
    from ..data.prepare import prepare

    space = SearchSpace.load(space_file)
    if settings.searcher == "grid":
        space.grid()  # continuous dimensions cannot be grid-searched: say so now
    exp = Path(exp_dir)
    layout = ExperimentDir(exp)
    if layout.settings_file.exists():
        raise ConfigError(f"{exp} already holds an experiment: `mmsearch resume {exp}` continues it, or choose another --name")
    prepare(data, label, layout.data, **prepare_kw)
    shutil.copyfile(space_file, layout.space_file)
    settings.save(exp)
    return exp


def trial_driver(config: dict, *, exp_dir: str, settings: dict, resources: dict) -> None:
    """One Tune trial: train the trial's config, in this process or through a Ray Train run."""
    import ray.tune

    s = Settings(**settings)
    trial = config.get("trial", config)  # grid search wraps the whole config in "trial"
    trial_id = ray.tune.get_context().get_trial_id()
    if s.in_trial:
        from ..train.context import TuneContext
        from ..train.loop import train

        layout = ExperimentDir(exp_dir)
        train(trial, layout.data, TuneContext(layout.trial_run(trial_id).path))
    else:
        _drive_ray_train(trial, trial_id, exp_dir, s, resources)


def _drive_ray_train(trial: dict, trial_id: str, exp_dir: str, s: Settings, resources: dict) -> None:
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    from ..train.loop import ray_worker

    trainer = TorchTrainer(
        ray_worker,
        train_loop_config={"trial": trial, "data_dir": str(ExperimentDir(exp_dir).data)},
        scaling_config=ScalingConfig(num_workers=s.workers_per_trial, use_gpu=s.gpus_per_worker > 0, resources_per_worker=resources),
        run_config=RunConfig(
            name=trial_id,  # deterministic per trial: a restored trial resumes its own Train run
            storage_path=str(ExperimentDir(exp_dir).train),
            callbacks=[TuneReportCallback()],
            failure_config=FailureConfig(max_failures=s.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=2),
        ),
    )
    trainer.fit()


def auto_cpus_per_worker(s: Settings) -> float:
    """Share a node's CPUs among the workers of the trials that run at once, so a lone trial may
    use the whole node rather than 1 CPU."""
    import ray

    per_node = max((n["Resources"].get("CPU", 0) for n in ray.nodes() if n["Alive"]), default=1)
    share = per_node / max(1, s.max_concurrent * s.workers_per_trial)
    return float(max(1, int(share)))


def _max_epochs(space: SearchSpace) -> int:
    from ..config import TrainConfig

    for d in space.dims:
        if d.key == "train.epochs":
            return int(max(d.values()))
    return int(space.fixed.get("train.epochs", TrainConfig.epochs))


def tune_runs(exp_dir: Path) -> list[Path]:
    """The experiment's Tune runs in order: tune, tune_2, tune_3, ..."""
    return ExperimentDir(exp_dir).tune_runs()


def build_tuner(exp_dir: Path, *, restore: Path | None = None, name: str = "tune", num_samples: int | None = None,
                warm_start: Path | None = None):
    """A new Tune run `name` (num_samples trials; the searcher continues from the run in
    `warm_start` if given), or the interrupted run `restore` continued."""
    import optuna
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
    from ray.tune.search import ConcurrencyLimiter
    from ray.tune.search.optuna import OptunaSearch

    settings = Settings.load(exp_dir)
    space = SearchSpace.load(ExperimentDir(exp_dir).space_file)
    worker = settings.worker_resources()
    trainable = tune.with_parameters(trial_driver, exp_dir=str(exp_dir.resolve()), settings=asdict(settings), resources=worker)
    # a one-worker trial holds its worker's resources itself; a driver of Ray Train workers holds
    # only a trial slot (no CPU), so drivers can never starve their own workers
    trainable = tune.with_resources(trainable, worker if settings.in_trial else {"CPU": 0, TRIAL_RESOURCE: 1})
    if restore is not None:
        return tune.Tuner.restore(str(restore.resolve()), trainable=trainable, resume_unfinished=True, resume_errored=False)

    param_space: dict[str, Any] = {}
    if settings.searcher == "grid":
        search_alg, param_space = None, {"trial": tune.grid_search(space.grid())}
    else:
        sampler = (optuna.samplers.TPESampler(seed=settings.seed) if settings.searcher == "tpe"
                   else optuna.samplers.RandomSampler(seed=settings.seed))
        search_alg = ConcurrencyLimiter(OptunaSearch(space=space.define_by_run, metric=METRIC, mode=MODE, sampler=sampler),
                                        max_concurrent=settings.max_concurrent)
        if warm_start is not None:  # the study keeps every earlier trial: TPE goes on learning
            search_alg.restore_from_dir(str(warm_start.resolve()))
    # max_t one past the last epoch: at max_t ASHA ends a trial, and a trial that reached its last
    # epoch must still send its final report (soup + final predictions) after that epoch's report
    scheduler = (ASHAScheduler(time_attr=TIME_ATTR, max_t=_max_epochs(space) + 1, grace_period=1, reduction_factor=2)
                 if settings.scheduler == "asha" else FIFOScheduler())
    return tune.Tuner(
        trainable,
        param_space=param_space,
        tune_config=tune.TuneConfig(metric=METRIC, mode=MODE, search_alg=search_alg, scheduler=scheduler,
                                    num_samples=num_samples or settings.num_samples,
                                    # the searcher's ConcurrencyLimiter does it; grid has no searcher
                                    max_concurrent_trials=settings.max_concurrent if search_alg is None else None,
                                    time_budget_s=settings.time_budget_s or None,
                                    # one-worker trials: the next trial runs in the finished one's
                                    # process, its imports and kernels already warm
                                    reuse_actors=settings.in_trial,
                                    trial_dirname_creator=lambda trial: trial.trial_id),  # short, findable names
        run_config=tune.RunConfig(name=name, storage_path=str(exp_dir.resolve()), verbose=1,
                                  # a one-worker trial is its own worker: Tune restarts it (from its
                                  # last checkpoint); Ray Train restarts its own workers
                                  failure_config=tune.FailureConfig(max_failures=settings.max_failures if settings.in_trial else 0)),
    )


def init_ray(settings: Settings, address: str | None) -> None:
    """Local: a Ray instance sized to this machine with one trial slot per concurrent trial.
    Cluster: connect; the nodes that may host trial drivers advertise `trial_slot` (cluster.yaml)."""
    import os

    import ray

    if ray.is_initialized():
        return
    if address:
        ray.init(address=address)
        if TRIAL_RESOURCE not in ray.cluster_resources():
            raise ConfigError(f"the Ray cluster at {address} has no '{TRIAL_RESOURCE}' resource: give the head node "
                              f"resources: {{{TRIAL_RESOURCE}: N}} (see cluster.yaml), N = trials that may run at once")
        return
    # the dashboard stays on: without it the cleaner of stopped trials' placement groups cannot
    # work, and ASHA-stopped trials would keep their CPUs forever (environment.md)
    ray.init(num_cpus=os.cpu_count(), resources={TRIAL_RESOURCE: settings.max_concurrent})


def run(exp_dir: str | Path, *, address: str | None = None, restore: bool = False, more: int = 0) -> None:
    """Start the search; or (restore) continue the latest interrupted Tune run; then, with `more`,
    extend the experiment by that many new trials."""
    exp = Path(exp_dir)
    settings = Settings.load(exp)
    init_ray(settings, address)
    runs = tune_runs(exp)
    if not restore:
        build_tuner(exp).fit()
    elif runs:
        build_tuner(exp, restore=runs[-1]).fit()
    if more:
        runs = tune_runs(exp)
        build_tuner(exp, name=ExperimentDir(exp).next_tune_run(), num_samples=more, warm_start=runs[-1] if runs else None).fit()

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

The experiment may live on object storage (`--storage s3://...`): the driver and the trials then
work on mirrors of it and sync them (mmsearch.layout.location says who syncs what).
"""
from __future__ import annotations

import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Iterator

import yaml

from .._local_ray import DASHBOARD_HOST, local_ray_address
from ..data.view import TableView
from ..errors import ConfigError
from ..layout.experiment_dir import ExperimentDir
from ..layout.location import Location
from .algorithms import METRIC, MODE, SCHEDULERS, SEARCHERS
from .space import SearchSpace, with_overrides

RUNNERS = ("auto", "ray-train")  # auto: one-worker trials train in the trial process | ray-train: always Ray Train
TRIAL_RESOURCE = "trial_slot"  # trial drivers take one of these, never a CPU (no 2-core deadlock)


@dataclass
class Settings:
    searcher: str = "tpe"           # a name in algorithms.SEARCHERS
    scheduler: str = "asha"         # a name in algorithms.SCHEDULERS
    num_samples: int = 8            # trials (grid: repeats of the whole grid)
    time_budget_s: float = 0.0      # 0: no budget
    max_concurrent: int = 1
    workers_per_trial: int = 1
    cpus_per_worker: float = 0.0     # 0: auto, the CPUs per node shared by the concurrent trials' workers
    gpus_per_worker: float = 0.0
    max_failures: int = 1           # restarts from the last checkpoint, per trial
    trial_timeout_s: float = 0.0    # 0: none; a trial running longer is ended (search/trial_guard.py)
    seed: int = 0
    runner: str = "auto"            # a name in RUNNERS

    def __post_init__(self):
        for flag, value, valid in (("searcher", self.searcher, SEARCHERS), ("scheduler", self.scheduler, SCHEDULERS),
                                   ("runner", self.runner, RUNNERS)):
            if value not in valid:
                raise ConfigError(f"--{flag} {value!r}: use one of {', '.join(valid)}")
        for flag, value in (("num-samples", self.num_samples), ("max-concurrent", self.max_concurrent),
                            ("workers-per-trial", self.workers_per_trial)):
            if value < 1:
                raise ConfigError(f"--{flag} {value}: must be at least 1")
        for flag, value, meaning in (("time-budget-s", self.time_budget_s, "0: no budget"),
                                     ("cpus-per-worker", self.cpus_per_worker, "0: a share of the node's CPUs"),
                                     ("gpus-per-worker", self.gpus_per_worker, "0: CPU only"),
                                     ("trial-timeout-s", self.trial_timeout_s, "0: no limit")):
            if not value >= 0:  # also NaN
                raise ConfigError(f"--{flag} {value}: must be >= 0 ({meaning})")
        if self.max_failures < -1:
            raise ConfigError(f"--max-failures {self.max_failures}: restarts per trial, >= 0 (-1: no limit)")

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
    def load(cls, exp_dir: str | Path | Location) -> "Settings":
        """From the experiment's folder (pulled first when it is on object storage)."""
        loc = Location.of(exp_dir)
        layout = loc.layout()
        loc.pull_files(layout.settings_file.name, layout.space_file.name)
        if (data := layout.read_settings()) is None:
            raise ConfigError(f"{loc} is not an mmsearch experiment (no {layout.settings_file.name})")
        return cls(**{f.name: data[f.name] for f in fields(cls) if f.name in data})


def check_gpus(gpus: float, address: str | None, flag: str = "--gpus-per-worker") -> None:
    """GPUs asked for on this machine (no --address) when torch sees none: Ray would wait forever
    for a GPU that never comes, so say it now."""
    if gpus and not address:
        import torch

        if not torch.cuda.is_available():
            raise ConfigError(f"{flag} {gpus}: this machine has no GPU that torch can use (torch.cuda.is_available() is "
                              f"False); drop {flag}, or give --address of a Ray cluster with GPU nodes")


def _check_writable(folder: Path) -> None:
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"--storage {folder} is a file, not a folder; choose a folder for the experiments")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as e:
        raise ConfigError(f"cannot write experiments into {folder} ({e.strerror or e}); choose a writable --storage") from None


def create(data, label: str, space_file: str | Path, exp_dir: str | Path | Location, settings: Settings, *,
           overrides: dict | None = None, **prepare_kw) -> Path | str:
    """Check the space, prepare the table, write the settings. Nothing is written if a check fails.
    overrides: keys fixed on top of the space file (`--set`); the experiment keeps the space they
    make, so `resume` searches the same one. Returns the experiment's path, or its URI."""
    from ..data.prepare import embed_images, prepare

    space = SearchSpace.load(space_file)
    if overrides:
        effective = with_overrides(yaml.safe_load(Path(space_file).read_text()) or {}, overrides)
        space = SearchSpace.from_dict(effective, source=f"{space_file} with --set")
    if SEARCHERS[settings.searcher].finite:
        space.grid()  # continuous dimensions cannot be enumerated: say so now
    loc = Location.of(exp_dir, "--storage")
    exp = loc.local()
    layout = ExperimentDir(exp)
    if loc.exists(layout.settings_file.name):
        raise ConfigError(f"{loc} already holds an experiment: `mmsearch resume {loc}` continues it, or choose another --name")
    if loc.remote:
        loc.remote.check_writable("--storage")
        shutil.rmtree(exp, ignore_errors=True)  # a mirror of an experiment since removed from the storage
    else:
        _check_writable(exp.parent)
    prepared = prepare(data, label, layout.data, **prepare_kw)
    raw = effective if overrides else yaml.safe_load(Path(space_file).read_text()) or {}
    try:
        fitted, note = fit_modalities(raw, TableView.of(prepared).modalities)
    except ConfigError:
        shutil.rmtree(layout.data, ignore_errors=True)  # nothing written when a check fails
        raise
    header = []
    if overrides:
        header.append(f"# {space_file} " + " ".join(f"--set {k}={v}" for k, v in overrides.items()))
    if note:
        header.append(f"# {note}")
    if header:
        layout.space_file.write_text("\n".join(header) + "\n" + yaml.safe_dump(fitted, sort_keys=False))
    else:
        shutil.copyfile(space_file, layout.space_file)  # the user's file, comments and all
    settings.save(exp)
    if not loc.remote:
        return exp
    embed_images(layout.data)  # the nodes share no file system: the images travel with the table
    loc.push()
    return loc.ref


def fit_modalities(space: dict, present: frozenset[str]) -> tuple[dict, str | None]:
    """The space with its model.modalities choices cut to what the table has: a choice naming no
    modality of the table is dropped (every trial of it would fail), and choices that read the
    same modalities here (all and text+tabular on a table without images) are kept once. Returns
    (space, a note saying what changed, or None). A fixed value or a dimension left with no choice
    is a ConfigError."""
    from ..config import canonical_modalities

    def reads(value) -> frozenset[str]:
        name = canonical_modalities(value)
        return present if name == "all" else frozenset(name.split("+")) & present

    if "model.modalities" in (space.get("fixed") or {}):
        value = space["fixed"]["model.modalities"]
        if not reads(value):
            raise ConfigError(f"model.modalities={value!r} names none of this table's modalities ({', '.join(sorted(present))})")
        return space, None
    dim = (space.get("search") or {}).get("model.modalities")
    if not isinstance(dim, dict) or not ({"choice", "grid"} & set(dim)):
        return space, None
    kind = "choice" if "choice" in dim else "grid"
    kept, seen = [], set()
    for value in dim[kind]:
        r = reads(value)
        if r and r not in seen:
            kept.append(value)
            seen.add(r)
    if not kept:
        raise ConfigError(f"model.modalities: none of {dim[kind]} names a modality of this table ({', '.join(sorted(present))})")
    if kept == list(dim[kind]):
        return space, None
    dropped = [v for v in dim[kind] if v not in kept]
    fitted = {**space, "search": {**space["search"], "model.modalities": {**dim, kind: kept}}}
    if space.get("first"):  # a point takes the kept choice that reads the same inputs; one reading none goes
        same = {reads(v): v for v in kept}
        fitted["first"] = [{**p, "model.modalities": same[reads(p["model.modalities"])]} if "model.modalities" in p else p
                           for p in space["first"] if "model.modalities" not in p or reads(p["model.modalities"])]
    return fitted, (f"model.modalities: {', '.join(map(str, dropped))} left out: this table's modalities are "
                    f"{', '.join(sorted(present))} (no input, or the same inputs as a choice kept)")


def trial_driver(config: dict, *, exp_dir: str, settings: dict, resources: dict) -> None:
    """One Tune trial: train the trial's config, in this process or through a Ray Train run."""
    import ray.tune

    from .trial_guard import guarded

    s = Settings(**settings)
    trial = config.get("trial", config)  # grid search wraps the whole config in "trial"
    trial_id = ray.tune.get_context().get_trial_id()
    loc = Location.of(exp_dir)
    run, send = loc.trial_run(trial_id, owned=s.in_trial)
    with _node_copy_dropped_once_sent(loc, run.path):
        with guarded(run, s.trial_timeout_s, node_id=ray.get_runtime_context().get_node_id(), send=send):
            if s.in_trial:
                from ..train.context import TuneContext
                from ..train.loop import train

                train(trial, loc.trial_data(), TuneContext(run.path, send=send))
            else:
                _drive_ray_train(trial, trial_id, loc, s, resources)


@contextmanager
def _node_copy_dropped_once_sent(loc: Location, run_dir: Path) -> Iterator[None]:
    """On object storage, a trial that finished, or that Tune stopped (ASHA, the time budget: it
    ends the trial's thread with SystemExit, and every checkpoint went up before Tune heard of it),
    is all on the storage: this node keeps no copy of it. After an error the copy stays: it may
    hold what the storage did not take (a restart here or elsewhere pulls the storage's anyway)."""
    sent = False
    try:
        yield
        sent = True
    except SystemExit:
        sent = True
        raise
    finally:
        if sent and loc.remote:
            shutil.rmtree(run_dir, ignore_errors=True)


def _drive_ray_train(trial: dict, trial_id: str, loc: Location, s: Settings, resources: dict) -> None:
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    from ..train.loop import ray_worker

    trainer = TorchTrainer(
        ray_worker,
        train_loop_config={"trial": trial, "experiment": loc.ref},  # each worker finds the table on its node
        scaling_config=ScalingConfig(num_workers=s.workers_per_trial, use_gpu=s.gpus_per_worker > 0, resources_per_worker=resources),
        run_config=RunConfig(
            name=trial_id,  # deterministic per trial: a restored trial resumes its own Train run
            storage_path=loc.storage_path(ExperimentDir.TRAIN),
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


def tune_runs(exp_dir: str | Path | Location) -> list[str]:
    """The experiment's Tune runs in order (tune, tune_2, tune_3, ...): paths, or URIs."""
    return Location.of(exp_dir).tune_runs()


def build_tuner(exp_dir: str | Path | Location, settings: Settings, space: SearchSpace, *, restore: str | None = None,
                name: str | None = None, num_samples: int | None = None, warm_start: str | None = None):
    """A new Tune run `name` (default: the experiment's next one; num_samples trials; the searcher
    continues from the run in `warm_start` if given), or the interrupted run `restore` continued
    (runs as tune_runs gives them)."""
    from ray import tune

    loc = Location.of(exp_dir)
    worker = settings.worker_resources()
    trainable = tune.with_parameters(trial_driver, exp_dir=loc.ref, settings=asdict(settings), resources=worker)
    # a one-worker trial holds its worker's resources itself; a driver of Ray Train workers holds
    # only a trial slot (no CPU), so drivers can never starve their own workers
    trainable = tune.with_resources(trainable, worker if settings.in_trial else {"CPU": 0, TRIAL_RESOURCE: 1})
    if restore is not None:
        return tune.Tuner.restore(restore, trainable=trainable, resume_unfinished=True, resume_errored=False)

    if warm_start is not None:  # the searcher's saved state, read here
        previous = loc.name_of(warm_start)
        loc.pull(previous)
        warm_start = loc.local() / previous
    search_alg, param_space = SEARCHERS[settings.searcher].build(space, settings, warm_start)
    scheduler = SCHEDULERS[settings.scheduler](space, settings)
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
        run_config=tune.RunConfig(name=name or loc.next_tune_run(), storage_path=loc.storage_path(), verbose=1,
                                  # a one-worker trial is its own worker: Tune restarts it (from its
                                  # last checkpoint); Ray Train restarts its own workers
                                  failure_config=tune.FailureConfig(max_failures=settings.max_failures if settings.in_trial else 0)),
    )


def init_ray(settings: Settings, address: str | None) -> None:
    """Local: a Ray instance sized to this machine with one trial slot per concurrent trial.
    Cluster: connect; the nodes that may host trial drivers advertise `trial_slot` (cluster.yaml)."""
    import os

    import ray

    if ray.is_initialized():  # this process is connected already (the Python API, a notebook)
        connected = ray.get_runtime_context().gcs_address
        if address and address != "auto" and not address.startswith("ray://") and address != connected:
            raise ConfigError(f"--address {address}: this process is connected to the Ray cluster at {connected} already; "
                              f"call ray.shutdown() first, or leave the address out to search on that one")
        return
    if address:
        ray.init(address=address)
        if TRIAL_RESOURCE not in ray.cluster_resources():
            raise ConfigError(f"the Ray cluster at {address} has no '{TRIAL_RESOURCE}' resource: give the head node "
                              f"resources: {{{TRIAL_RESOURCE}: N}} (see cluster.yaml), N = trials that may run at once")
        return
    # the dashboard stays on: without it the cleaner of stopped trials' placement groups cannot
    # work, and ASHA-stopped trials would keep their CPUs forever (environment.md)
    # a Ray instance of our own, its dashboard on this machine only (mmsearch._local_ray)
    ray.init(address=local_ray_address(), num_cpus=os.cpu_count(), resources={TRIAL_RESOURCE: settings.max_concurrent},
             dashboard_host=DASHBOARD_HOST)


def run(exp_dir: str | Path | Location, *, address: str | None = None, restore: bool = False, more: int = 0) -> None:
    """Start the search; or (restore) continue the latest interrupted Tune run, or start the search
    if Tune never saved it; then, with `more`, extend the experiment by that many new trials."""
    exp = Location.of(exp_dir)
    settings = Settings.load(exp)
    space = SearchSpace.load(exp.layout().space_file)
    if more and SEARCHERS[settings.searcher].finite:
        open_ended = " or ".join(name for name, searcher in SEARCHERS.items() if not searcher.finite)
        raise ConfigError(f"--more: a {settings.searcher} search runs its {space.size()} points {settings.num_samples} "
                          f"time(s) each and has no new points to add (`mmsearch resume {exp}` finishes an interrupted one); to "
                          f"search further, start a new experiment with a larger grid, or with --searcher {open_ended}")
    check_gpus(settings.gpus_per_worker, address)
    init_ray(settings, address)
    runs = _saved_runs(exp, more) if restore else []
    if runs:
        build_tuner(exp, settings, space, restore=runs[-1]).fit()
    else:
        build_tuner(exp, settings, space).fit()
    if more:
        runs = tune_runs(exp)
        build_tuner(exp, settings, space, num_samples=more, warm_start=runs[-1]).fit()


def _saved_runs(exp: str | Path | Location, more: int) -> list[str]:
    """The experiment's Tune runs, less the last one if its driver died before the Tuner saved
    itself (no tuner.pkl): Tune cannot restore that one, so it is removed (the trials' own
    checkpoints under train/ stay) and started again: the search itself, or an extension by the
    next `--more`. A saved Tuner without experiment state Tune restarts itself."""
    from ray.tune import Tuner

    exp = Location.of(exp)
    runs = exp.tune_runs()
    while runs and not Tuner.can_restore(runs[-1]):
        unsaved = runs.pop()
        exp.remove(unsaved)
        again = ("starting the search" if not runs else "extending it" if more
                 else f"`mmsearch resume {exp} --more N` extends the search")
        print(f"[mmsearch] {unsaved} held no saved Tune state (its driver stopped before the first save): removed; {again}")
    return runs

"""Search on real Ray (2 CPUs, tiny synthetic data): ASHA, the trial pool, resume after SIGKILL."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from mmsearch.search import experiment
from mmsearch.search.pool import load_pool
from mmsearch.search.space import SearchSpace
from mmsearch.search.status import leaderboard

from conftest import TINY

pytestmark = pytest.mark.ray  # its searches start Ray

TINY_FIXED = {k: v for k, v in TINY.items() if k not in ("optim.lr", "train.epochs")}  # searched or set per test; otherwise the defaults


def _space(tmp_path, epochs=3, **sections):
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump({"fixed": {**TINY_FIXED, "train.epochs": epochs}, **sections}))
    return path


def _search(tmp_path, table, space, **settings):
    """Create the experiment and run its search on a local 2-CPU Ray; returns the experiment dir."""
    import ray

    exp = experiment.create(table, "label", space, tmp_path / "exp", experiment.Settings(**settings))
    try:
        experiment.run(exp)
    finally:
        ray.shutdown()
    return exp


def test_the_ray_tests_run_in_one_xdist_worker(request):
    """Under xdist's loadgroup the `ray` mark puts a test in the group "ray" (conftest): its node
    id carries the group. A pytest whose node ids ignore that (9.2, pytest-xdist#1386) would
    spread the Ray tests over both workers without a word."""
    if request.config.getoption("dist", "no") == "loadgroup" and os.environ.get("PYTEST_XDIST_WORKER"):
        assert request.node.nodeid.endswith("@ray"), request.node.nodeid


@pytest.fixture
def small_table(tmp_path):
    from mmsearch.data.synthetic import make_synthetic

    return make_synthetic(tmp_path / "table", n=96, seed=2)


def test_asha_stops_bad_trials_and_the_pool_is_complete(tmp_path, small_table):
    # grid order: the two good learning rates first, then two that learn nothing; ASHA (grace 1,
    # factor 2) compares the late ones with the rung results of the early ones and stops them
    space = _space(tmp_path, search={"optim.lr": {"grid": [3e-3, 2e-3, 1e-7, 2e-7]}})
    exp = _search(tmp_path, small_table, space, searcher="grid", scheduler="asha", num_samples=1, max_concurrent=2)
    pool = load_pool(exp)
    assert len(pool) == 4  # every trial, stopped early or not, has predictions
    assert any(not e.finished for e in pool) and any(e.finished for e in pool)
    assert all(e.finished for e in pool if e.epoch == 3)  # a trial that trained every epoch also got its soup
    n_val = len(json.loads((exp / "data" / "split.json").read_text())["val"])
    for e in pool:
        assert e.predictions("val").shape == (n_val, 3) and e.weights.is_file()
        assert e.config["optim.lr"] in (3e-3, 2e-3, 1e-7, 2e-7)
    board = leaderboard(exp)
    assert "STOPPED" in board and "TERMINATED" in board


def _cli(*args, **kw):
    return subprocess.run([sys.executable, "-m", "mmsearch.cli", *args], capture_output=True, text=True, timeout=900, **kw)


def test_space_typo_rejected_before_any_trial(tmp_path, small_table):
    space = tmp_path / "typo.yaml"
    space.write_text(yaml.safe_dump({"fixed": TINY_FIXED, "tricks": {"grad_clipp": "search"}}))
    r = _cli("search", "--data", str(small_table), "--label", "label", "--space", str(space), "--name", "x", "--storage", str(tmp_path / "runs"))
    assert r.returncode == 2 and "unknown trick 'grad_clipp' (did you mean 'grad_clip'?)" in r.stderr
    assert not (tmp_path / "runs").exists()


def test_resume_after_the_driver_is_killed(tmp_path, small_table):
    space = _space(tmp_path, epochs=2, search={"optim.lr": {"grid": [3e-3, 2e-3, 1e-3]}})
    storage = tmp_path / "runs"
    exp = storage / "resume"
    cmd = [sys.executable, "-m", "mmsearch.cli", "search", "--data", str(small_table), "--label", "label", "--space", str(space),
           "--name", "resume", "--storage", str(storage), "--searcher", "grid", "--scheduler", "fifo", "--num-samples", "1"]
    driver = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.time() + 600
        while time.time() < deadline and not any(e.finished for e in load_pool(exp)):
            time.sleep(1)
        finished = [e for e in load_pool(exp) if e.finished]
        assert finished, "no trial finished before the deadline"
        time.sleep(3)  # let Tune save its state past the finished trial
    finally:
        os.killpg(driver.pid, signal.SIGKILL)  # the driver and its local Ray cluster die mid-search
        driver.wait()
    done_before = {e.trial_id: (e.checkpoint, e.checkpoint.stat().st_mtime) for e in finished}

    r = _cli("resume", str(exp))
    assert r.returncode == 0, r.stderr[-3000:]
    pool = {e.trial_id: e for e in load_pool(exp)}
    assert len(pool) == 3 and all(e.finished for e in pool.values())
    for tid, (ckpt, mtime) in done_before.items():  # finished trials were not run again
        assert pool[tid].checkpoint == ckpt and ckpt.stat().st_mtime == mtime
    assert "TERMINATED" in r.stdout


def test_resume_starts_the_search_when_tune_never_saved_it(tmp_path, small_table):
    """The driver died before Tune's first save: before the Tuner existed (no tune/), or before it
    wrote its tuner.pkl (an empty tune/: Tune cannot restore it). `resume` starts the search."""
    import ray

    space = _space(tmp_path, epochs=1)
    settings = experiment.Settings(searcher="random", scheduler="fifo", num_samples=1)
    exps = {case: experiment.create(small_table, "label", space, tmp_path / case, settings) for case in ("no_tune_dir", "empty_tune_dir")}
    (exps["empty_tune_dir"] / "tune").mkdir()
    try:
        for exp in exps.values():
            experiment.run(exp, restore=True)
    finally:
        ray.shutdown()
    for case, exp in exps.items():
        (entry,) = load_pool(exp)
        assert entry.finished, case
        assert [Path(p).name for p in experiment.tune_runs(exp)] == ["tune"] and leaderboard(exp).count("TERMINATED") == 1, case


def test_an_extension_tune_never_saved_is_removed_and_the_saved_runs_kept(tmp_path, capsys):
    (tmp_path / "tune").mkdir()
    (tmp_path / "tune" / "tuner.pkl").write_bytes(b"")  # all Tune's can_restore looks for
    (tmp_path / "tune_2").mkdir()  # `resume --more N` died before its Tuner saved itself
    assert [Path(p).name for p in experiment._saved_runs(tmp_path, more=0)] == ["tune"]
    assert not (tmp_path / "tune_2").exists()
    assert f"`mmsearch resume {tmp_path} --more N` extends the search" in capsys.readouterr().out


def _pids_running(name):
    from pathlib import Path

    pids = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if name in cmdline.read_bytes().decode(errors="replace"):
                pids.append(int(cmdline.parent.name))
        except OSError:  # the process ended meanwhile
            pass
    return pids


def _reported_epochs(exp):
    rows = [json.loads(l) for p in (exp / "tune").glob("*/result.json") for l in p.read_text().splitlines() if l.strip()]
    return [(r["epoch"], r["final"]) for r in rows]


def _epoch(trainer_json) -> int:
    """The checkpoint's epoch; 0 while Ray Train is still copying the file (not written atomically)."""
    try:
        return json.loads(trainer_json.read_text())["epoch"]
    except (OSError, ValueError, KeyError):
        return 0


@pytest.mark.parametrize("runner, process", [("auto", "ImplicitFunc"), ("ray-train", "RayTrainWorker")])
def test_a_killed_worker_restarts_from_its_last_checkpoint(tmp_path, runner, process):
    """SIGKILL the process that trains (the one-worker trial itself; a Ray Train worker) after
    its epoch-1 checkpoint: it is restarted (max_failures=1) from that checkpoint, so no epoch is
    reported twice."""
    import threading

    from mmsearch.data.synthetic import make_synthetic

    table = make_synthetic(tmp_path / "table", n=480, seed=3)
    exp = tmp_path / "exp"
    killed = []

    def kill_worker_after_first_checkpoint():
        deadline = time.time() + 300
        while time.time() < deadline and not killed:
            if any(_epoch(p) >= 1 for p in (exp / "train").glob("*/**/trainer.json")):
                for pid in _pids_running(process):
                    os.kill(pid, signal.SIGKILL)
                    killed.append(pid)
                return
            time.sleep(0.1)

    killer = threading.Thread(target=kill_worker_after_first_checkpoint, daemon=True)
    killer.start()
    _search(tmp_path, table, _space(tmp_path, epochs=3), searcher="random", scheduler="fifo", num_samples=1, max_failures=1,
            runner=runner)
    killer.join()
    assert killed, "the worker was never killed"
    epochs = _reported_epochs(exp)
    assert epochs == [(1, False), (2, False), (3, True)]  # epoch 1 not retrained after the restart; one report per epoch
    (entry,) = load_pool(exp)
    assert entry.finished


def test_a_nan_trial_is_errored_with_its_cause_and_the_search_goes_on(tmp_path, small_table):
    space = _space(tmp_path, epochs=2, search={"optim.lr": {"grid": [3e-3, 1e12]}})
    exp = _search(tmp_path, small_table, space, searcher="grid", scheduler="fifo", num_samples=1, max_concurrent=2, max_failures=0)
    board = leaderboard(exp)
    assert "ERROR" in board and "loss became" in board and "TERMINATED" in board
    assert [e.config["optim.lr"] for e in load_pool(exp) if e.finished] == [3e-3]


def test_a_finished_search_is_extended_and_tpe_keeps_its_history(tmp_path, small_table):
    import pickle

    import ray

    # a `first` point is tried first, once: the extension's study already holds it
    space = _space(tmp_path, epochs=1, search={"optim.lr": {"loguniform": [1e-3, 1e-2]}}, first=[{"optim.lr": 0.005}])
    settings = experiment.Settings(searcher="tpe", scheduler="fifo", num_samples=2, max_concurrent=2)
    exp = experiment.create(small_table, "label", space, tmp_path / "exp", settings)
    try:
        experiment.run(exp)
        first = {e.trial_id for e in load_pool(exp)}
        experiment.run(exp, restore=True, more=2)
    finally:
        ray.shutdown()
    pool = {e.trial_id for e in load_pool(exp)}
    assert len(first) == 2 and first < pool and len(pool) == 4  # the first two kept, two new ones
    assert [Path(p).name for p in experiment.tune_runs(exp)] == ["tune", "tune_2"]
    (state,) = (exp / "tune_2").glob("searcher-state-*.pkl")
    study = pickle.loads(state.read_bytes())["_ot_study"]  # our own experiment's searcher state
    assert len(study.trials) == 4  # the new run's study continued from the first run's two trials
    assert leaderboard(exp).count("TERMINATED") == 4
    assert [e.config["optim.lr"] for e in load_pool(exp)].count(0.005) == 1
    assert any(e.config["optim.lr"] == 0.005 for e in load_pool(exp) if e.trial_id in first)


def test_more_on_a_grid_search_is_refused_before_anything_runs(tmp_path, small_table, capsys):
    from mmsearch import cli

    space = _space(tmp_path, epochs=1, search={"optim.lr": {"grid": [3e-3, 2e-3]}})
    exp = experiment.create(small_table, "label", space, tmp_path / "exp", experiment.Settings(searcher="grid", scheduler="fifo", num_samples=3))
    assert cli.main(["resume", str(exp), "--more", "2"]) == 2
    err = capsys.readouterr().err
    assert "a grid search runs its 2 points 3 time(s) each and has no new points to add" in err
    assert "--searcher tpe or random" in err
    assert experiment.tune_runs(exp) == []  # refused before Ray or Tune started


def test_overrides_are_kept_in_the_experiment_for_resume(tmp_path, small_table):
    from mmsearch.layout.experiment_dir import ExperimentDir

    space = _space(tmp_path, epochs=3, search={"optim.lr": {"loguniform": [1e-3, 1e-2]}})
    exp = experiment.create(small_table, "label", space, tmp_path / "exp", experiment.Settings(),
                            overrides={"train.epochs": 1, "optim.lr": 5e-3})
    kept = SearchSpace.load(ExperimentDir(exp).space_file)  # what `mmsearch resume` searches
    assert kept.fixed["train.epochs"] == 1 and kept.fixed["optim.lr"] == 5e-3 and not kept.dims
    assert "--set train.epochs=1" in ExperimentDir(exp).space_file.read_text()


@pytest.mark.slow
def test_the_bag_of_tricks_runs_with_every_trick_on(tmp_path, small_table):
    """The shipped bag space, CPU-sized with --set, every trick switched on at once: both trials
    train to the end (fusion and LF / LF-Aligned as the space samples them)."""
    import ray

    from mmsearch import cli
    from mmsearch.registry import TRICKS

    sets = {**TINY_FIXED, "train.epochs": 1, "train.max_steps_per_epoch": 2, "optim.batch_size": 16,
            **{f"tricks.{name}.enabled": True for name in TRICKS.names()}}
    args = ["search", "--data", str(small_table), "--label", "label", "--space", "search_spaces/bag_of_tricks.yaml",
            "--name", "bag", "--storage", str(tmp_path), "--num-samples", "2", "--searcher", "random", "--scheduler", "fifo"]
    try:
        assert cli.main(args + [a for k, v in sets.items() for a in ("--set", f"{k}={json.dumps(v)}")]) == 0
    finally:
        ray.shutdown()
    pool = load_pool(tmp_path / "bag")
    assert len(pool) == 2 and all(e.finished for e in pool)
    for e in pool:
        assert all(e.config[f"tricks.{name}.enabled"] for name in TRICKS.names())

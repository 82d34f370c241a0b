"""A search on a real multi-node Ray cluster on this machine (Ray's own `ray.cluster_utils.Cluster`:
one head and worker nodes, each its own raylet with its own resources), reached with `--address`
as on a cluster: trials are placed on both nodes, a 2-worker DDP trial spans two nodes, and a
node lost mid-search costs only the epochs since the lost trial's last checkpoint.

Which node ran a trial is read from its run directory (attempts.jsonl: each attempt's Ray node),
which Ray Train workers ran where from Ray's state API (the actors' node ids). The nodes share this
machine's file system, as the nodes of a cluster share the experiment's folder; the node-loss test
also runs with the experiment on (a local) S3 and a cache of its own for each node, as on a
cluster without a shared file system."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time

import pytest
import yaml

from conftest import TINY
from mmsearch.search import experiment
from mmsearch.search.pool import load_pool
from mmsearch.search.status import leaderboard

pytestmark = pytest.mark.slow
TINY_FIXED = {k: v for k, v in TINY.items() if k not in ("optim.lr", "train.epochs")}


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def cluster():
    import ray
    from ray.cluster_utils import Cluster

    # the head advertises the trial slots (as cluster.yaml's head does) and, here, no CPU: trials and
    # their workers go to the worker nodes
    # a Ray connection an earlier test left open would get this test's search instead of the cluster
    ray.shutdown()
    # (the dashboard serves the state API the tests read the placement from)
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "resources": {"trial_slot": 2}, "include_dashboard": True,
                                                      "dashboard_host": "127.0.0.1", "dashboard_port": _free_port()})
    yield c
    ray.shutdown()
    c.shutdown()


def _experiment(tmp_path, table, epochs: int, lrs: list[float], **settings):
    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump({"fixed": {**TINY_FIXED, "train.epochs": epochs}, "search": {"optim.lr": {"grid": lrs}}}))
    return experiment.create(table, "label", space, tmp_path / "exp",
                             experiment.Settings(searcher="grid", scheduler="fifo", num_samples=1, **settings))


def _actor_nodes(cluster, class_name: str, expected: int = 1) -> set[str]:
    """The nodes where actors of that class ran (dead ones included), once at least `expected`
    show: the state API may lag the actors' ends by a moment."""
    from ray.util.state import list_actors

    deadline = time.time() + 30
    while True:
        found = list_actors(address=cluster.address, limit=1000, raise_on_missing_output=False, detail=True)
        nodes = {a.node_id for a in found if a.class_name == class_name}
        if len(nodes) >= expected or time.time() > deadline:
            return nodes
        time.sleep(1)


def _epochs_per_trial(exp) -> dict[str, list[int]]:
    """trial id -> the epochs its run reported, in order (metrics.jsonl)."""
    out = {}
    for run in sorted((exp / "train").iterdir()):
        log = run / "metrics.jsonl"
        lines = log.read_text().splitlines() if log.is_file() else []
        out[run.name] = [json.loads(line)["epoch"] for line in lines if line.strip()]
    return out


def _runs(exp):
    from mmsearch.layout.experiment_dir import ExperimentDir

    return ExperimentDir(exp).trial_runs()


def _checkpointed(exp, trial_id: str) -> bool:
    from mmsearch.layout.checkpoint_dir import TrialRunDir

    return TrialRunDir(exp / "train" / trial_id).resume_point() is not None


def _uploaded(storage: str, runs: str, trial_id: str) -> bool:
    """On S3: the trial's epoch-1 checkpoint is complete on the storage (its trainer state, sent last)."""
    from mmsearch.layout.remote import RemoteDir

    return storage != "s3" or RemoteDir(f"{runs}/lost").exists(f"train/{trial_id}/checkpoints/epoch_001/trainer.json")


@pytest.fixture
def table(tmp_path):
    from mmsearch.data.synthetic import make_synthetic

    return make_synthetic(tmp_path / "table", n=96, seed=2)


def test_trials_are_placed_on_both_worker_nodes(cluster, tmp_path, table):
    nodes = {cluster.add_node(num_cpus=1).node_id for _ in range(2)}
    cluster.wait_for_nodes()
    exp = _experiment(tmp_path, table, epochs=1, lrs=[3e-3, 1e-3], max_concurrent=2, cpus_per_worker=1)
    experiment.run(exp, address=cluster.address)
    assert {a["node_id"] for run in _runs(exp) for a in run.attempts()} == nodes  # one trial per 1-CPU node, at once
    assert len([e for e in load_pool(exp) if e.finished]) == 2


def test_a_two_worker_ddp_trial_spans_two_nodes(cluster, tmp_path, table):
    nodes = {cluster.add_node(num_cpus=1).node_id for _ in range(2)}
    cluster.wait_for_nodes()
    exp = _experiment(tmp_path, table, epochs=1, lrs=[3e-3], workers_per_trial=2, cpus_per_worker=1)
    experiment.run(exp, address=cluster.address)
    assert _actor_nodes(cluster, "RayTrainWorker", expected=2) == nodes  # a 1-CPU worker on each node: DDP across them
    (entry,) = load_pool(exp)
    assert entry.finished and entry.last["world_size"] == 2


@pytest.mark.parametrize("storage", ["shared", "s3"])
def test_a_lost_node_costs_only_the_epochs_since_the_last_checkpoint(storage, request, tmp_path):
    """Two trials, one at a time, on a 1-CPU worker node, driven by `mmsearch search --address
    ... --max-failures 1` in its own process. Once the second trial has checkpointed epoch 1, a
    fresh node joins and the first one is removed (its raylet and processes die, as when a machine
    is lost). The search completes: the interrupted trial resumes on the new node from its epoch-1
    checkpoint (epochs 2 and 3 trained there, epoch 1 never again) and the finished trial is not
    rerun. shared: the experiment is a folder all nodes see; s3: it is on (a local) S3 and each
    node has a cache of its own, so the new node finds the checkpoint only on the storage."""
    from mmsearch.data.synthetic import make_synthetic
    from mmsearch.layout.location import Location

    env = {}
    if storage == "s3":
        request.getfixturevalue("s3_server")  # before the cluster: its raylets inherit the AWS_* variables
        env = {"MMSEARCH_CACHE": str(tmp_path / "driver")}
    cluster = request.getfixturevalue("cluster")
    node_env = lambda name: {"env_vars": {"MMSEARCH_CACHE": str(tmp_path / name)}} if storage == "s3" else {}  # noqa: E731
    table = make_synthetic(tmp_path / "table", n=480, seed=2)  # epochs of a few seconds: the node dies mid-trial
    doomed = cluster.add_node(num_cpus=1, **node_env("doomed"))
    cluster.wait_for_nodes()
    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump({"fixed": {**TINY_FIXED, "train.epochs": 3}, "search": {"optim.lr": {"grid": [3e-3, 1e-3]}}}))
    runs = str(tmp_path / "runs") if storage == "shared" else f"s3://runs/{tmp_path.name}"
    # where the trials write first: the experiment itself, or the doomed node's copy of it
    exp = tmp_path / "runs" / "lost" if storage == "shared" else tmp_path / "doomed" / "remote"
    driver = subprocess.Popen(
        [sys.executable, "-m", "mmsearch.cli", "search", "--data", str(table), "--label", "label", "--space", str(space),
         "--name", "lost", "--storage", runs, "--searcher", "grid", "--scheduler", "fifo",
         "--num-samples", "1", "--cpus-per-worker", "1", "--max-failures", "1", "--address", cluster.address],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env={**os.environ, **env})
    try:
        deadline, before = time.time() + 600, None
        while time.time() < deadline and driver.poll() is None:
            if storage == "s3" and exp.name == "remote" and exp.is_dir() and any(exp.iterdir()):
                exp = next(exp.iterdir()) / "node"  # the node's mirror, once the first trial made it
            epochs = _epochs_per_trial(exp) if (exp / "train").is_dir() else {}
            # the second trial's epoch 1 is reported (metrics.jsonl) and its checkpoint committed (on
            # S3 the node keeps no copy of a finished trial: only the running one is there) and, on
            # S3, uploaded (its metrics line may still be on the way: the restart restores it)
            if any(t.endswith("_00001") and e == [1] and _checkpointed(exp, t) and _uploaded(storage, runs, t)
                   for t, e in epochs.items()):
                before = epochs
                cluster.remove_node(doomed, allow_graceful=False)
                replacement = cluster.add_node(num_cpus=1, **node_env("replacement")).node_id
                break
            time.sleep(0.05)
        out, _ = driver.communicate(timeout=600)
    finally:
        driver.kill()
    assert before, "the node was never removed"
    assert driver.returncode == 0, out[-3000:]
    if storage == "s3":  # read the experiment from the storage alone
        loc = Location.of(f"{runs}/lost")
        shutil.rmtree(tmp_path / "doomed")
        loc.pull()
        exp = loc.local()
        assert (tmp_path / "replacement").is_dir()  # the restart pulled the checkpoint into its own cache
    interrupted = next(t for t, e in before.items() if e == [1])
    after = _epochs_per_trial(exp)
    finished_first = next(t for t in after if t != interrupted)
    if storage == "shared":  # (on S3 it ran only on the doomed node, below: it finished before the loss)
        assert before[finished_first] == [1, 2, 3]
    assert after[finished_first] == [1, 2, 3]  # not rerun
    assert after[interrupted] == [1, 2, 3]  # resumed after epoch 1: no epoch trained twice
    assert all(e.finished for e in load_pool(exp)) and len(load_pool(exp)) == 2
    where = {run.path.name: [a["node_id"] for a in run.attempts()] for run in _runs(exp)}
    assert where[interrupted] == [doomed.node_id, replacement]  # the restart ran on the new node
    assert where[finished_first] == [doomed.node_id]
    assert leaderboard(exp).count("TERMINATED") == 2


def test_a_process_connected_to_one_cluster_refuses_to_search_another(cluster):
    """The Python API in a process already connected to Ray: the same cluster is used, another
    address is an error (it used to search silently on the connected one)."""
    import ray

    from mmsearch.errors import ConfigError

    ray.init(address=cluster.address)
    experiment.init_ray(experiment.Settings(), cluster.address)  # the one it is connected to: fine
    with pytest.raises(ConfigError, match=r"--address 127.0.0.1:1: this process is connected to the Ray cluster at .* already"):
        experiment.init_ray(experiment.Settings(), "127.0.0.1:1")

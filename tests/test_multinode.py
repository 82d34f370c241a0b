"""A search on a real multi-node Ray cluster on this machine (Ray's own `ray.cluster_utils.Cluster`:
one head and worker nodes, each its own raylet with its own resources), reached with `--address`
as on a cluster: trials are placed on both nodes, a 2-worker DDP trial spans two nodes, and a
node lost mid-search costs only the epochs since the lost trial's last checkpoint.

Which node ran a trial is read from its run directory (attempts.jsonl: each attempt's Ray node),
which Ray Train workers ran where from Ray's state API (the actors' node ids). The placement test's
nodes share this machine's file system, as the nodes of a cluster share the experiment's folder;
the node-loss test has the experiment on (a local) S3 and a cache of its own for each node, as on a
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

pytestmark = [pytest.mark.slow, pytest.mark.ray]
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
    tmp_path.mkdir(parents=True, exist_ok=True)
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


def _reports_per_trial(exp) -> dict[str, list[dict]]:
    """trial id -> the reports its run logged, in order (metrics.jsonl)."""
    out = {}
    for run in sorted((exp / "train").iterdir()):
        log = run / "metrics.jsonl"
        lines = log.read_text().splitlines() if log.is_file() else []
        out[run.name] = [json.loads(line) for line in lines if line.strip()]
    return out


def _epochs(reports: list[dict]) -> list[int]:
    return [r["epoch"] for r in reports]


def _runs(exp):
    from mmsearch.layout.experiment_dir import ExperimentDir

    return ExperimentDir(exp).trial_runs()


def _checkpointed(exp, trial_id: str) -> bool:
    from mmsearch.layout.checkpoint_dir import TrialRunDir

    return TrialRunDir(exp / "train" / trial_id).resume_point() is not None


def _uploaded(runs: str, trial_id: str) -> bool:
    """The trial's epoch-1 checkpoint is complete on the storage (its trainer state, sent last)."""
    from mmsearch.layout.remote import RemoteDir

    return RemoteDir(f"{runs}/lost").exists(f"train/{trial_id}/checkpoints/epoch_001/trainer.json")


@pytest.fixture
def table(tmp_path):
    from mmsearch.data.synthetic import make_synthetic

    return make_synthetic(tmp_path / "table", n=96, seed=2)


def test_trials_and_a_ddp_trial_s_workers_are_spread_over_both_worker_nodes(cluster, tmp_path, table):
    """Two 1-CPU worker nodes, one cluster, two searches with --address: two one-worker trials at
    once (one per node), then a 2-worker DDP trial (a worker on each node). The process stays
    connected to that cluster: another address is refused (it used to search silently on the
    connected one)."""
    from mmsearch.errors import ConfigError

    nodes = {cluster.add_node(num_cpus=1).node_id for _ in range(2)}
    cluster.wait_for_nodes()
    spread = _experiment(tmp_path / "spread", table, epochs=1, lrs=[3e-3, 1e-3], max_concurrent=2, cpus_per_worker=1)
    experiment.run(spread, address=cluster.address)
    assert {a["node_id"] for run in _runs(spread) for a in run.attempts()} == nodes  # one trial per 1-CPU node, at once
    assert len([e for e in load_pool(spread) if e.finished]) == 2

    ddp = _experiment(tmp_path / "ddp", table, epochs=1, lrs=[3e-3], workers_per_trial=2, cpus_per_worker=1)
    experiment.run(ddp, address=cluster.address)
    assert _actor_nodes(cluster, "RayTrainWorker", expected=2) == nodes  # a 1-CPU worker on each node: DDP across them
    (entry,) = load_pool(ddp)
    assert entry.finished and entry.last["world_size"] == 2

    experiment.init_ray(experiment.Settings(), cluster.address)  # the one it is connected to: fine
    with pytest.raises(ConfigError, match=r"--address 127.0.0.1:1: this process is connected to the Ray cluster at .* already"):
        experiment.init_ray(experiment.Settings(), "127.0.0.1:1")


def test_a_lost_node_costs_only_the_epochs_since_the_last_checkpoint(s3_server, cluster, tmp_path):  # S3 first: the raylets inherit its AWS_* variables
    """Two trials, one at a time, on a 1-CPU worker node, driven by `mmsearch search --address
    ... --max-failures 1` in its own process, the experiment on (a local) S3 and each node with a
    cache of its own (a cluster without a shared file system: the new node finds the checkpoint
    only on the storage). Once the second trial's epoch-1 checkpoint is on the storage, a fresh node
    joins and the first one is removed (its raylet and processes die, as when a machine is lost).
    The search completes: the interrupted trial resumes on the new node from its epoch-1 checkpoint
    (epochs 2 and 3 trained there, epoch 1 never again) and the finished trial is not rerun. (The
    same restart on a shared folder is test_search's killed-worker test: the node's loss only
    decides where the restart runs.)"""
    from mmsearch.data.synthetic import make_synthetic
    from mmsearch.layout.location import Location

    node_env = lambda name: {"env_vars": {"MMSEARCH_CACHE": str(tmp_path / name)}}  # noqa: E731
    table = make_synthetic(tmp_path / "table", n=480, seed=2)  # epochs of a few seconds: the node dies mid-trial
    doomed = cluster.add_node(num_cpus=1, **node_env("doomed"))
    cluster.wait_for_nodes()
    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump({"fixed": {**TINY_FIXED, "train.epochs": 3}, "search": {"optim.lr": {"grid": [3e-3, 1e-3]}}}))
    runs = f"s3://runs/{tmp_path.name}"
    node_copy = tmp_path / "doomed" / "remote"  # where the trials write first: the doomed node's copy of the experiment
    driver = subprocess.Popen(
        [sys.executable, "-m", "mmsearch.cli", "search", "--data", str(table), "--label", "label", "--space", str(space),
         "--name", "lost", "--storage", runs, "--searcher", "grid", "--scheduler", "fifo",
         "--num-samples", "1", "--cpus-per-worker", "1", "--max-failures", "1", "--address", cluster.address],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env={**os.environ, "MMSEARCH_CACHE": str(tmp_path / "driver")})
    try:
        deadline, before = time.time() + 600, None
        while time.time() < deadline and driver.poll() is None:
            if node_copy.name == "remote" and node_copy.is_dir() and any(node_copy.iterdir()):
                node_copy = next(node_copy.iterdir()) / "node"  # the node's mirror, once the first trial made it
            reports = _reports_per_trial(node_copy) if (node_copy / "train").is_dir() else {}
            # the second trial's epoch 1 is reported (metrics.jsonl), its checkpoint committed (the
            # node keeps no copy of a finished trial: only the running one is there) and uploaded
            # (its metrics line may still be on the way: the restart restores it)
            if any(t.endswith("_00001") and _epochs(r) == [1] and _checkpointed(node_copy, t) and _uploaded(runs, t)
                   for t, r in reports.items()):
                before = reports
                cluster.remove_node(doomed, allow_graceful=False)
                replacement = cluster.add_node(num_cpus=1, **node_env("replacement")).node_id
                break
            time.sleep(0.05)
        out, _ = driver.communicate(timeout=600)
    finally:
        driver.kill()
    assert before, "the node was never removed"
    assert driver.returncode == 0, out[-3000:]
    loc = Location.of(f"{runs}/lost")  # read the experiment from the storage alone
    shutil.rmtree(tmp_path / "doomed")
    loc.pull()
    exp = loc.local()
    assert (tmp_path / "replacement").is_dir()  # the restart pulled the checkpoint into its own cache
    interrupted = next(t for t, r in before.items() if _epochs(r) == [1])
    after = _reports_per_trial(exp)
    finished_first = next(t for t in after if t != interrupted)
    assert _epochs(after[finished_first]) == [1, 2, 3]  # not rerun
    assert _epochs(after[interrupted]) == [1, 2, 3]
    assert after[interrupted][0] == before[interrupted][0]  # resumed after epoch 1: its report is the lost node's, not a new one
    assert all(e.finished for e in load_pool(exp)) and len(load_pool(exp)) == 2
    where = {run.path.name: [a["node_id"] for a in run.attempts()] for run in _runs(exp)}
    assert where[interrupted] == [doomed.node_id, replacement]  # the restart ran on the new node
    assert where[finished_first] == [doomed.node_id]
    assert leaderboard(exp).count("TERMINATED") == 2

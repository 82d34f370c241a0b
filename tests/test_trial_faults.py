"""A trial that raises, one that hangs past --trial-timeout-s: each is isolated (the search goes
on), its cause is recorded in its run directory and shown by `status`, and the pool leaves it out."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
import yaml

from conftest import TINY
from mmsearch.layout.checkpoint_dir import TrialRunDir
from mmsearch.search.pool import read_pool
from mmsearch.search.trial_guard import TIMED_OUT_EXIT_CODE, TrialTimedOut, guarded

TINY_FIXED = {k: v for k, v in TINY.items() if k not in ("optim.lr", "train.epochs")}


def test_an_error_is_recorded_and_a_retry_clears_it(tmp_path):
    run = TrialRunDir(tmp_path / "t1")
    with pytest.raises(RuntimeError), guarded(run, 0):
        raise RuntimeError("CUDA error: an illegal memory access")
    assert run.failure() == {"kind": "error", "cause": "RuntimeError: CUDA error: an illegal memory access"}
    with guarded(run, 0):  # a retry starts: it may yet succeed
        assert run.failure() is None


def test_a_stop_from_tune_is_not_a_failure(tmp_path):
    run = TrialRunDir(tmp_path / "t1")
    with pytest.raises(SystemExit), guarded(run, 0):
        sys.exit(0)  # how Tune ends a stopped trial's thread (ASHA, the time budget)
    assert run.failure() is None


def test_a_hang_ends_the_process_and_a_restart_fails_at_once(tmp_path):
    code = ("import time, sys\nfrom mmsearch.layout.checkpoint_dir import TrialRunDir\n"
            "from mmsearch.search.trial_guard import guarded\n"
            f"with guarded(TrialRunDir({str(tmp_path / 't1')!r}), 0.5):\n    time.sleep(60)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == TIMED_OUT_EXIT_CODE and "ran past --trial-timeout-s 0.5 s" in done.stderr
    run = TrialRunDir(tmp_path / "t1")
    assert run.failure()["kind"] == "timeout"
    with pytest.raises(TrialTimedOut, match="ran past --trial-timeout-s 0.5 s"), guarded(run, 0.5):
        pytest.fail("a timed-out trial must not train again")


def test_the_pool_leaves_out_a_failed_trial_with_checkpoints(small_prepared, tmp_path):
    from mmsearch.train.run import run_local

    for tid in ("ok", "bad"):
        run_local({**TINY, "train.epochs": 1}, small_prepared.dir, tmp_path / "train" / tid)
    TrialRunDir(tmp_path / "train" / "bad").record_failure("error", "ValueError: loss became nan")
    found = read_pool(tmp_path)
    assert [e.trial_id for e in found.entries] == ["ok"]
    assert found.skipped == {"bad": "failed: ValueError: loss became nan"}


@pytest.mark.slow
@pytest.mark.ray
def test_a_hanging_trial_is_timed_out_isolated_and_shown(tmp_path):
    """Two trials: tabular only (never opens an image) and image only, whose first training image
    became a FIFO after the table was prepared (an open() that never returns, as on a stalled
    network file system). --trial-timeout-s ends the hanging one; its restart (--max-failures 1)
    fails at once; the other finishes; status names the cause; the pool has only the finished one."""
    import ray

    from mmsearch.data.prepare import PreparedData
    from mmsearch.data.synthetic import make_synthetic
    from mmsearch.search import experiment
    from mmsearch.search.status import leaderboard

    table = make_synthetic(tmp_path / "table", n=96, seed=2)
    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump({"fixed": {**TINY_FIXED, "train.epochs": 1},
                                     "search": {"model.modalities": {"grid": ["tabular", "image"]}}}))
    settings = experiment.Settings(searcher="grid", scheduler="fifo", num_samples=1, max_failures=1, trial_timeout_s=20)
    exp = experiment.create(table, "label", space, tmp_path / "exp", settings)
    first_image = table.parent / PreparedData.load(exp / "data").rows("train")["image"].iloc[0]
    first_image.unlink()
    os.mkfifo(first_image)
    try:
        experiment.run(exp)
    finally:
        ray.shutdown()
    board = leaderboard(exp)
    assert "ran past --trial-timeout-s 20 s" in board and "ERROR" in board and "TERMINATED" in board
    assert [e.config["model.modalities"] for e in read_pool(exp).entries] == ["tabular"]

"""Experiments on object storage (--storage s3://...): the sync of mirrors (layout.remote), a
trial's run directory that survives the loss of its node's copy (layout.location), a prepared
table whose images travel with it, and a whole search -> resume -> status / ensemble / export /
report against a real S3 API (moto's server, started here) with nothing shared on disk."""
from __future__ import annotations

import shutil
import time
from contextlib import nullcontext as _nothing_raised
from pathlib import Path

import numpy as np
import pytest
import yaml

from conftest import TINY
from mmsearch.errors import ConfigError
from mmsearch.layout.location import Location
from mmsearch.layout.remote import RemoteDir, join


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    time.sleep(0.002)  # distinct modification times: the upload order follows them


def test_sync_sends_and_fetches_only_changes_and_mirrors_deletions(tmp_path):
    remote = RemoteDir((tmp_path / "bucket" / "exp").as_uri())  # a pyarrow filesystem with real times
    here, there = tmp_path / "here", tmp_path / "there"
    _write(here / "a" / "x.txt", "1")
    _write(here / "b.txt", "22")
    _write(here / "skipme.pt", "big")
    no_pt = lambda rel: rel.endswith(".pt")  # noqa: E731
    assert remote.push(here) == 3 and remote.push(here) == 0  # unchanged: nothing sent again
    assert remote.pull(there, skip=no_pt) == 2 and remote.pull(there, skip=no_pt) == 0
    assert _tree(there) == {"a/x.txt": b"1", "b.txt": b"22"}

    _write(here / "b.txt", "33")  # same size, a new time: still sent
    (here / "a" / "x.txt").unlink()
    assert remote.push(here) == 1
    assert remote.pull(there, skip=no_pt) == 1
    assert _tree(there) == {"b.txt": b"33"}  # the deletion reached the other copy; empty a/ went too
    _write(there / "mine.txt", "kept")
    remote.pull(there, skip=lambda rel: rel == "mine.txt")  # a skipped file is neither fetched nor deleted
    assert (there / "mine.txt").is_file()
    remote.push(here, delete=False)
    _write(here / "c.txt", "4")
    (here / "b.txt").unlink()
    remote.push(here, delete=False)
    assert remote.exists("b.txt") and remote.exists("c.txt")


def test_files_go_up_oldest_written_first(tmp_path):
    """A checkpoint's trainer.json (written last) and the metrics line after it reach the storage
    last: a reader never sees a checkpoint marked complete before its weights."""
    remote = RemoteDir((tmp_path / "bucket").as_uri())
    here = tmp_path / "run"
    written = ["final/model.safetensors", "final/preds_val.npy", "final/config.json", "final/trainer.json", "metrics.jsonl"]
    for name in written:  # as the loop writes them (not in the order of their names)
        _write(here / name, name)
    sent = []
    fs, path = remote.fs, remote.path

    class Recording:
        def __getattr__(self, name):
            return getattr(fs, name)

        def open_output_stream(self, p):
            sent.append(p[len(path) + 1:])
            return fs.open_output_stream(p)

    remote._resolved[0] = (Recording(), path)
    remote.push(here)
    assert sent == written


def test_an_fsspec_filesystem_serves_when_pyarrow_has_none(tmp_path):
    remote = RemoteDir("memory://mmsearch-test/exp")
    _write(tmp_path / "a" / "x.txt", "1")
    remote.push(tmp_path / "a")
    assert remote.exists("x.txt") and remote.pull(tmp_path / "b") == 1 and (tmp_path / "b" / "x.txt").read_text() == "1"
    assert RemoteDir("memory://mmsearch-test").list_dirs() == ["exp"]
    assert join("s3://b/runs?endpoint_override=h:9000&scheme=http", "x", "tune") == "s3://b/runs/x/tune?endpoint_override=h:9000&scheme=http"


def _checkpoint(run, epoch: int, keep: int = 1) -> None:
    """A complete epoch checkpoint (as the loop writes it), committed."""
    from mmsearch.layout.checkpoint_dir import CheckpointDir

    scratch = CheckpointDir(run.scratch())
    (scratch.path / "model.safetensors").write_bytes(b"w")
    scratch.write_config({"train.epochs": 3})
    scratch.write_predictions({"val": np.zeros(2), "holdout": np.zeros(2)})
    scratch.write_trainer({"epoch": epoch, "history": [{"val_score": 0.5, "metric": "accuracy"}]})
    run.commit(scratch.path, epoch=epoch, final=False, keep=keep)


def test_a_trial_continues_from_the_storage_on_a_node_that_never_saw_it(tmp_path, monkeypatch):
    """The run directory a trial sends after each checkpoint is what a restart on another node
    (an empty node mirror) starts from; epoch checkpoints rotated away are removed from storage."""
    monkeypatch.setenv("MMSEARCH_CACHE", str(tmp_path / "node1"))
    uri = (tmp_path / "bucket" / "exp").as_uri()
    loc = Location(uri, RemoteDir(uri))  # file:// through the object-storage path, as s3:// goes
    run, send = loc.trial_run("t1")
    assert run.path.is_relative_to(tmp_path / "node1")
    _checkpoint(run, 1)
    run.append_metrics({"epoch": 1})
    send()
    monkeypatch.setenv("MMSEARCH_CACHE", str(tmp_path / "node2"))  # the node is gone: another one restarts it
    run2, send2 = loc.trial_run("t1")
    assert run2.path != run.path and run2.resume_point().path.name == "epoch_001"
    _checkpoint(run2, 2)
    send2()
    assert not loc.remote.exists("train/t1/checkpoints/epoch_001") and loc.remote.exists("train/t1/checkpoints/epoch_002/trainer.json")
    loc.remote.child("train", "t1").pull(tmp_path / "check")
    assert {Path(p).parts[0] if "/" in p else p for p in _tree(tmp_path / "check")} == {"metrics.jsonl", "checkpoints"}
    assert {Path(p).parent.name for p in _tree(tmp_path / "check") if "/" in p} == {"epoch_002"}


def test_a_node_keeps_no_copy_of_a_trial_that_finished_or_was_stopped_but_keeps_a_failed_one(tmp_path, monkeypatch):
    """A finished or stopped (ASHA: SystemExit in the trial's thread) trial is all on the storage;
    a failed one's copy may hold what the storage did not take."""
    from mmsearch.search.experiment import _node_copy_dropped_once_sent

    monkeypatch.setenv("MMSEARCH_CACHE", str(tmp_path / "node"))
    uri = (tmp_path / "bucket" / "exp").as_uri()
    loc = Location(uri, RemoteDir(uri))
    outcomes = {"finished": None, "stopped": SystemExit(0), "failed": RuntimeError("storage unreachable")}
    for tid, raised in outcomes.items():
        run, _ = loc.trial_run(tid)
        with pytest.raises(type(raised)) if raised else _nothing_raised():
            with _node_copy_dropped_once_sent(loc, run.path):
                _checkpoint(run, 1)
                if raised:
                    raise raised
    assert sorted(p.name for p in (loc.local("node") / "train").iterdir()) == ["failed"]
    local = Location.of(tmp_path / "local_exp")  # a local experiment is the trials' only copy: never removed
    run, _ = local.trial_run("t1")
    with _node_copy_dropped_once_sent(local, run.path):
        _checkpoint(run, 1)
    assert run.resume_point() is not None


def test_children_share_the_parent_s_filesystem_object():
    remote = RemoteDir("s3://runs/exp?region=us-east-1&endpoint_override=localhost:1")
    kid = remote.child("train", "t1")
    assert kid.fs is remote.fs and kid.path == remote.path + "/train/t1"
    assert RemoteDir(remote.uri).fs is remote.fs  # the same URI again: the filesystem is opened once per process


def test_a_checkpoint_cut_short_on_the_storage_is_passed_over(tmp_path, monkeypatch):
    """A node that dies while it uploads leaves a checkpoint without its trainer.json (sent last):
    the restart continues from the complete one before it."""
    monkeypatch.setenv("MMSEARCH_CACHE", str(tmp_path / "node1"))
    uri = (tmp_path / "bucket" / "exp").as_uri()
    loc = Location(uri, RemoteDir(uri))
    run, send = loc.trial_run("t1")
    _checkpoint(run, 1, keep=2)
    _checkpoint(run, 2, keep=2)
    send()
    loc.remote.fs.delete_file(loc.remote.path + "/train/t1/checkpoints/epoch_002/trainer.json")
    monkeypatch.setenv("MMSEARCH_CACHE", str(tmp_path / "node2"))
    run2, _ = loc.trial_run("t1")
    assert run2.epoch(2).path.is_dir() and run2.resume_point() == run2.epoch(1)


def test_a_ray_train_runs_checkpoints_are_not_the_trials_to_sync(tmp_path, monkeypatch):
    """Several workers: Ray Train writes its checkpoints to the storage itself; the trial process
    syncs only its own records, and never deletes Ray's files."""
    monkeypatch.setenv("MMSEARCH_CACHE", str(tmp_path / "node"))
    uri = (tmp_path / "bucket" / "exp").as_uri()
    loc = Location(uri, RemoteDir(uri))
    _write(tmp_path / "bucket" / "exp" / "train" / "t1" / "checkpoint_000001" / "model.safetensors", "ray's")
    run, send = loc.trial_run("t1", owned=False)
    assert not (run.path / "checkpoint_000001").exists()  # not fetched
    run.record_attempt({"node_id": "n", "pid": 1})
    run.record_failure("error", "boom")
    send()
    assert loc.remote.exists("train/t1/checkpoint_000001/model.safetensors") and loc.remote.exists("train/t1/failed.json")
    run.clear_failure()
    send()
    assert not loc.remote.exists("train/t1/failed.json") and loc.remote.exists("train/t1/attempts.jsonl")


def test_embedded_images_travel_with_the_prepared_table(tmp_path):
    from mmsearch.data.prepare import PreparedData, embed_images, prepare
    from mmsearch.data.synthetic import make_synthetic

    table = make_synthetic(tmp_path / "table", n=48, seed=1)
    prepared = prepare(table, "label", tmp_path / "data")
    before = prepared.table["image"].map(lambda p: Path(p).read_bytes() if p else None)
    assert embed_images(tmp_path / "data") == prepared.table["image"].nunique()
    shutil.move(tmp_path / "data", tmp_path / "elsewhere")
    shutil.rmtree(tmp_path / "table")  # the originals are gone, as on a node that never had them
    moved = PreparedData.load(tmp_path / "elsewhere")
    assert all(p is None or p.startswith(str(tmp_path / "elsewhere" / "images")) for p in moved.table["image"])
    assert moved.table["image"].map(lambda p: Path(p).read_bytes() if p else None).equals(before)


# -- a real S3 API -----------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.ray
def test_a_search_on_s3_shares_nothing_on_disk(s3_server, tmp_path, monkeypatch, capsys):
    """search -> (this machine's copies removed) status, ensemble, export, report from the URI ->
    resume --more 1 -> the extended search, all through the S3 API."""
    import ray

    from mmsearch.bundle.predictor import Predictor
    from mmsearch.cli import main
    from mmsearch.data.synthetic import make_synthetic

    monkeypatch.setenv("MMSEARCH_CACHE", str(tmp_path / "cache"))
    table = make_synthetic(tmp_path / "table", n=96, seed=2)
    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump({"fixed": {**TINY, "train.epochs": 2},
                                     "search": {"model.fusion": {"choice": ["lf_mlp", "early"]}}}))
    uri = "s3://runs/team/x"
    try:
        assert main(["search", "--data", str(table), "--label", "label", "--space", str(space), "--storage", "s3://runs/team",
                     "--name", "x", "--num-samples", "2", "--scheduler", "fifo"]) == 0
        node = Location.of(uri).local("node")
        # the trials worked on this node's copy: the table pulled once, their run directories gone
        # once finished (they are on the storage)
        assert (node / "data" / ".pulled").is_file() and (node / "train").is_dir() and not any((node / "train").iterdir())
        shutil.rmtree(tmp_path / "cache")  # nothing of the search is left on this machine but the storage
        shutil.rmtree(tmp_path / "table")
        capsys.readouterr()
        assert main(["status", uri]) == 0
        out = capsys.readouterr().out
        assert f"experiment {uri}: 2 trials, 2 with predictions" in out and out.count("TERMINATED") == 2
        assert main(["ensemble", uri]) == 0 and f"written to {uri}/ensemble/ensemble.json" in capsys.readouterr().out
        assert main(["export", uri, "--out", str(tmp_path / "bundle")]) == 0
        assert main(["report", uri]) == 0
        remote = RemoteDir(uri)
        assert remote.exists("ensemble/ensemble.json") and remote.exists("report.html")
        assert not any(p.endswith("optimizer.pt") for p in _tree(Location.of(uri).local()))  # resume state stays there

        shutil.rmtree(tmp_path / "cache")
        assert main(["resume", uri, "--more", "1"]) == 0  # Tune restores from the URI, TPE warm-starts
        assert "3 trials, 3 with predictions" in capsys.readouterr().out
        assert remote.list_dirs()[-2:] == ["tune", "tune_2"]
    finally:
        ray.shutdown()
    data = Location.of(uri).local() / "data"
    predictor = Predictor.load(tmp_path / "bundle", device="cpu")
    from mmsearch.data.prepare import PreparedData

    rows = PreparedData.load(data).rows("holdout")
    assert np.isfinite(predictor.predict_proba(rows.drop(columns=["label"])).to_numpy()).all()


def test_bad_storage_and_missing_experiments_are_clear(s3_server, tmp_path, monkeypatch, capsys):
    from mmsearch.cli import main
    from mmsearch.data.synthetic import make_synthetic
    from mmsearch.search import experiment

    monkeypatch.setenv("MMSEARCH_CACHE", str(tmp_path / "cache"))
    with pytest.raises(ConfigError, match=r"--storage s3://no-such-bucket/x: cannot write there .*credentials"):
        experiment.create(make_synthetic(tmp_path / "t", n=48, seed=1), "label", _space(tmp_path), "s3://no-such-bucket/x",
                          experiment.Settings(num_samples=1))
    assert main(["status", "s3://runs/nothing-here"]) == 2
    assert "s3://runs/nothing-here is not an mmsearch experiment" in capsys.readouterr().err
    assert main(["export", "s3://runs/nothing-here", "--out", "s3://runs/bundle"]) == 2
    assert "a bundle is written to a local folder" in capsys.readouterr().err


def _space(tmp_path: Path) -> Path:
    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump({"fixed": TINY}))
    return space


def test_a_node_pulls_the_table_once_and_again_for_a_new_experiment_at_the_same_uri(tmp_path, monkeypatch):
    monkeypatch.setenv("MMSEARCH_CACHE", str(tmp_path / "node"))
    uri = (tmp_path / "bucket" / "exp").as_uri()
    loc = Location(uri, RemoteDir(uri))
    _write(tmp_path / "bucket" / "exp" / "data" / "table.parquet", "first")
    data = loc.trial_data()
    _write(data / "features" / "text-key" / "meta.json", "this node's encodings")
    calls = []
    monkeypatch.setattr(RemoteDir, "pull", lambda self, *a, **kw: calls.append(self.uri))
    assert loc.trial_data() == data and calls == []  # once per node
    monkeypatch.undo()
    monkeypatch.setenv("MMSEARCH_CACHE", str(tmp_path / "node"))
    shutil.rmtree(tmp_path / "bucket")  # the experiment is removed and created again
    _write(tmp_path / "bucket" / "exp" / "data" / "table.parquet", "second")
    assert (loc.trial_data() / "table.parquet").read_text() == "second"
    assert not (data / "features").exists()  # encodings of the old table are not reused

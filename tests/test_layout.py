"""The on-disk layouts have one owner each (mmsearch.layout), which knows what a complete
checkpoint is, which checkpoint of a trial to use and how Tune runs are named."""
import json
import re
from pathlib import Path

import numpy as np
import pytest

import mmsearch
from mmsearch.errors import MMSearchError
from mmsearch.layout import CheckpointDir, ExperimentDir, IncompleteCheckpoint, TrialRunDir
from conftest import run_importing_none_of

PACKAGE = Path(mmsearch.__file__).parent
LAYOUT = "layout/checkpoint_dir.py", "layout/experiment_dir.py"
BUNDLE = "bundle/export.py", "bundle/manifest.py"  # the bundle is a layout of its own
PREPARED = ("data/prepare.py",)                     # so is the prepared data directory
FEATURE_CACHE = ("data/feature_cache.py",)          # and the frozen towers' cache inside it (data/features/)
OWNERS = {
    "trainer.json": LAYOUT, "preds_{": LAYOUT, ".npy": LAYOUT + FEATURE_CACHE, "progress.json": FEATURE_CACHE, "optimizer.pt": LAYOUT, "tricks.pt": LAYOUT, "metrics.jsonl": LAYOUT,
    "epoch_{": LAYOUT, '"checkpoints"': LAYOUT, "experiment.json": LAYOUT, "space.yaml": LAYOUT,
    "ensemble.json": LAYOUT, "model.safetensors": LAYOUT + BUNDLE, "config.json": LAYOUT + BUNDLE,
    "manifest.json": BUNDLE, "schema.json": PREPARED, "preprocess.json": PREPARED, "split.json": PREPARED,
    "table.parquet": PREPARED,
}


def test_no_module_but_the_owner_spells_a_layout_file_name():
    spelled = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).as_posix()
        text = path.read_text()
        spelled += [f"{rel} spells {name!r}" for name, owners in OWNERS.items() if name in text and rel not in owners]
    assert not spelled, "ask mmsearch.layout (or the bundle / prepare module) for the path instead:\n" + "\n".join(spelled)


def test_the_layout_modules_import_neither_torch_nor_ray():
    run_importing_none_of("import mmsearch.layout, mmsearch.search.pool", ("torch", "ray"))


def _checkpoint(path: Path, *, epoch: int = 1, finished: bool = False) -> CheckpointDir:
    """A complete checkpoint written through the layout (weights: any bytes; no torch here)."""
    ckpt = CheckpointDir(path)
    ckpt.path.mkdir(parents=True)
    ckpt.weights.write_bytes(b"weights")
    ckpt.write_predictions({"val": np.zeros((4, 2), np.float32), "holdout": np.ones((3, 2), np.float32)})
    ckpt.write_config({"optim.lr": 0.1})
    report = {"epoch": epoch, "metric": "accuracy", "val_score": 0.5, "val_accuracy": 0.5}
    ckpt.write_trainer({"epoch": epoch, "step": 4 * epoch, "history": [report], "finished": finished,
                        **({"final_metrics": {**report, "final": True}} if finished else {})})
    return ckpt


def test_complete_means_every_file_and_a_readable_trainer_state(tmp_path):
    ckpt = _checkpoint(tmp_path / "c")
    assert ckpt.is_complete() and ckpt.problem() is None
    assert ckpt.predictions("holdout").shape == (3, 2) and ckpt.config() == {"optim.lr": 0.1}
    ckpt.preds_file("holdout").unlink()
    assert not ckpt.is_complete() and ckpt.problem().endswith("lacks preds_holdout.npy")

    ckpt = _checkpoint(tmp_path / "d")
    ckpt.trainer_file.write_text('{"epoch": 1, "hist')  # cut off mid-write
    assert "unreadable" in ckpt.problem()
    ckpt.trainer_file.write_text(json.dumps({"epoch": 1, "history": []}))
    with pytest.raises(IncompleteCheckpoint, match="no report"):
        ckpt.trainer()


def test_predictions_are_never_unpickled(tmp_path):
    ckpt = _checkpoint(tmp_path / "c")
    np.save(ckpt.preds_file("val"), np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match="allow_pickle"):
        ckpt.predictions("val")


def test_best_checkpoint_prefers_the_final_one_and_skips_damaged_and_scratch_dirs(tmp_path):
    run = TrialRunDir(tmp_path / "trial")
    _checkpoint(run.epoch(1).path, epoch=1)
    _checkpoint(run.epoch(2).path, epoch=2)
    assert run.best_checkpoint() == run.epoch(2) == run.resume_point()
    _checkpoint(run.path / ".ckpt-scratch", epoch=3, finished=True)  # being written: not yet a checkpoint
    assert run.best_checkpoint() == run.epoch(2)
    _checkpoint(run.final.path, epoch=2, finished=True)
    assert run.best_checkpoint() == run.final == run.resume_point()
    run.final.trainer_file.write_text("{")  # a damaged final checkpoint: the last epoch's is used
    assert run.best_checkpoint() == run.epoch(2)

    ray_run = TrialRunDir(tmp_path / "ray_trial")  # Ray Train's own checkpoint directory names
    _checkpoint(ray_run.path / "checkpoint_2026-01-01_00-00-01.000000", epoch=1)
    _checkpoint(ray_run.path / "checkpoint_2026-01-01_00-00-02.000000", epoch=2, finished=True)
    assert ray_run.best_checkpoint().trainer()["finished"] is True


def test_commit_moves_a_checkpoint_into_place_and_keeps_the_newest(tmp_path):
    run = TrialRunDir(tmp_path / "trial")
    for epoch in (1, 2, 3):
        scratch = run.scratch()
        _checkpoint(scratch / "c", epoch=epoch)
        assert run.commit(scratch / "c", epoch=epoch, final=False, keep=2) == run.epoch(epoch)
    assert run.epoch_checkpoints() == [run.epoch(2), run.epoch(3)]
    scratch = run.scratch()
    _checkpoint(scratch / "c", epoch=3, finished=True)
    run.commit(scratch / "c", epoch=3, final=True, keep=2)
    assert run.final.is_complete() and run.epoch_checkpoints() == []
    assert sorted(p.name for p in run.path.iterdir() if not p.name.startswith(".")) == ["final"]


def test_tune_runs_are_ordered_by_number(tmp_path):
    exp = ExperimentDir(tmp_path)
    assert exp.tune_runs() == [] and exp.next_tune_run() == "tune"
    for name in ("tune_10", "tune", "tune_2", "tuner", "tune_x"):
        (tmp_path / name).mkdir()
    assert [p.name for p in exp.tune_runs()] == ["tune", "tune_2", "tune_10"]
    assert exp.next_tune_run() == "tune_11"


def test_settings_and_ensemble_files_read_back_or_say_what_is_wrong(tmp_path):
    exp = ExperimentDir(tmp_path)
    assert exp.read_settings() is None and exp.read_ensemble() is None
    exp.write_ensemble({"members": []})
    exp.write_settings({"searcher": "tpe"})
    assert exp.read_ensemble() == {"members": []} and exp.read_settings() == {"searcher": "tpe"}
    assert [p.name for p in exp.ensemble_file.parent.iterdir()] == [exp.ensemble_file.name]  # no temporary left
    exp.ensemble_file.write_text('{"members": [')
    with pytest.raises(MMSearchError, match=re.escape(f"{exp.ensemble_file} is unreadable") + ".*mmsearch ensemble"):
        exp.read_ensemble()

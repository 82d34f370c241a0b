"""The pool leaves out trials it cannot trust and names them; `mmsearch ensemble` ends in a
one-line error (exit 2), never a traceback, on every damaged experiment a user can produce.

The experiments here are written by hand in the stable on-disk format (DESIGN.md), without
training: a prepared table and trials whose checkpoints hold chosen predictions."""
import json
import re
import shutil
import warnings

import numpy as np
import pandas as pd
import pytest

from mmsearch import metrics
from mmsearch.cli import main
from mmsearch.data.prepare import PreparedData, prepare
from mmsearch.search.pool import load_pool, pool_arrays

TRIALS = ("t_a", "t_b", "t_c")


def _experiment(root, *, metric="roc_auc", n=80):
    """A binary experiment with three finished trials of random (finite) predictions."""
    rng = np.random.default_rng(0)
    table = pd.DataFrame({"x": rng.normal(size=n), "label": np.where(np.arange(n) % 2, "yes", "no")})
    data = prepare(table, "label", root / "data")
    for seed, tid in enumerate(TRIALS):
        preds = {part: np.random.default_rng(seed).dirichlet((1, 1), size=len(data.split[part])).astype(np.float32)
                 for part in ("val", "holdout")}
        _write_trial(root, tid, preds, data, metric)
    return root


def _write_trial(exp, tid, preds, data, metric):
    ckpt = exp / "train" / tid / "final"
    ckpt.mkdir(parents=True)
    (ckpt / "model.safetensors").write_bytes(b"weights")
    (ckpt / "config.json").write_text(json.dumps({"optim.batch_size": 16}))
    for part, p in preds.items():
        np.save(ckpt / f"preds_{part}.npy", p)
    value = {part: metrics.score(metric, data.labels(part), p) for part, p in preds.items()}
    report = {"epoch": 1, "metric": metric, "val_score": value["val"], f"val_{metric}": value["val"],
              f"holdout_{metric}": value["holdout"]}
    (ckpt / "trainer.json").write_text(json.dumps(
        {"epoch": 1, "step": 4, "history": [report], "finished": True, "final_metrics": {**report, "final": True}}))


def _preds(exp, tid, part):
    return exp / "train" / tid / "final" / f"preds_{part}.npy"


def _spoil(exp, tid, part, value=np.nan):
    p = np.load(_preds(exp, tid, part))
    p[1, 0] = value
    np.save(_preds(exp, tid, part), p)


def _ensemble(exp, capsys, *more):
    rc = main(["ensemble", str(exp), *more])
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.fixture
def exp(tmp_path):
    return _experiment(tmp_path / "exp")


def test_a_trial_with_non_finite_predictions_is_left_out_and_named(exp, capsys):
    _spoil(exp, "t_b", "val")
    _spoil(exp, "t_c", "holdout", np.inf)
    with pytest.warns(UserWarning, match=r"2 trials left out of the pool: t_b \(its val predictions hold NaN or inf\); "
                                         r"t_c \(its holdout predictions hold NaN or inf\)"):
        assert [e.trial_id for e in load_pool(exp)] == ["t_a"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        stacked, entries = pool_arrays(exp, "val")
    assert stacked.shape[0] == 1 and np.isfinite(stacked).all()

    rc, out, err = _ensemble(exp, capsys)
    assert rc == 0, err
    assert "note: 2 trials left out of the pool: t_b (its val predictions hold NaN or inf)" in out
    result = json.loads((exp / "ensemble" / "ensemble.json").read_text())
    assert result["pool"] == 1 and {m["trial_id"] for m in result["members"]} == {"t_a"}
    assert set(result["skipped"]) == {"t_b", "t_c"}


def test_a_diverged_trial_of_a_real_search_is_left_out(trained_experiment, tmp_path, capsys):
    exp = tmp_path / "exp"
    shutil.copytree(trained_experiment[0], exp)
    val = exp / "train" / "t_b4" / "final" / "preds_val.npy"
    np.save(val, np.full_like(np.load(val), np.nan))
    rc, out, err = _ensemble(exp, capsys, "--size", "5")
    assert rc == 0, err
    assert "1 trial left out of the pool: t_b4 (its val predictions hold NaN or inf)" in out
    assert "uniform average (2 trials)" in out


@pytest.mark.parametrize("damage, message", [
    ("nan everywhere", r"no trial has usable predictions \(3 trials left out of the pool: t_a \(its val predictions hold NaN"),
    ("trainer cut off", r"no trial has usable predictions \(3 trials left out of the pool: t_a \(no complete checkpoint: "
                        r"\S+/t_a/final/trainer.json is unreadable"),
    ("extra rows", r"/t_(a|b|c)/final/preds_val.npy holds predictions of shape \(13, 2\), but the experiment's val rows "
                   r"need \(12, 2\): trial t_\1 was trained on other data; remove \S+/train/t_\1 and run"),
    ("one class in val", r"roc_auc cannot be computed on the val part of \S+/data \(its 12 rows hold 1 class\)"),
    ("data damaged", r"/data is unreadable \(.*\); the experiment's prepared data is damaged"),
])
def test_every_damage_is_one_line_with_exit_code_2(exp, capsys, damage, message):
    data = PreparedData.load(exp / "data")
    for tid in TRIALS:
        if damage == "nan everywhere":
            _spoil(exp, tid, "val")
        elif damage == "trainer cut off":
            trainer = exp / "train" / tid / "final" / "trainer.json"
            trainer.write_text(trainer.read_text()[:40])
        elif damage == "extra rows":
            p = np.load(_preds(exp, tid, "val"))
            np.save(_preds(exp, tid, "val"), np.concatenate([p, p[:1]]))
    if damage == "one class in val":
        table = data.table.copy()
        table.loc[table.index[data.split["val"]], "label"] = "yes"
        table.to_parquet(exp / "data" / "table.parquet", index=False)
    if damage == "data damaged":
        (exp / "data" / "split.json").write_text('{"train": [1, 2')

    rc, out, err = _ensemble(exp, capsys)
    assert rc == 2 and err.startswith("mmsearch: error: ") and err.count("\n") == 1, err
    assert re.search(message, err), err
    assert not (exp / "ensemble" / "ensemble.json").exists()


def test_unreadable_predictions_leave_that_trial_out(exp, capsys):
    _preds(exp, "t_a", "holdout").write_bytes(_preds(exp, "t_a", "holdout").read_bytes()[:90])  # cut off mid-write
    np.save(_preds(exp, "t_b", "val"), np.array([{"rows": 1}], dtype=object), allow_pickle=True)  # never unpickled
    rc, out, err = _ensemble(exp, capsys)
    assert rc == 0, err
    assert f"t_a ({_preds(exp, 't_a', 'holdout')} is unreadable" in out
    assert f"t_b ({_preds(exp, 't_b', 'val')} is unreadable" in out


def test_a_damaged_ensemble_file_stops_export_with_one_line(exp, capsys, tmp_path):
    assert _ensemble(exp, capsys)[0] == 0
    ensemble = exp / "ensemble" / "ensemble.json"
    ensemble.write_text(ensemble.read_text()[:50])
    rc = main(["export", str(exp), "--out", str(tmp_path / "bundle")])
    err = capsys.readouterr().err
    assert rc == 2 and f"{ensemble} is unreadable" in err and f"run `mmsearch ensemble {exp}` again" in err
    assert not (tmp_path / "bundle").exists()


def test_status_names_the_trials_left_out_and_a_damaged_settings_file(exp, capsys):
    from mmsearch.search.experiment import Settings

    Settings().save(exp)
    _spoil(exp, "t_b", "val")
    assert main(["status", str(exp)]) == 0
    assert "note: 1 trial left out of the pool: t_b (its val predictions hold NaN or inf)" in capsys.readouterr().out
    settings = exp / "experiment.json"
    settings.write_text(settings.read_text()[:30])
    assert main(["status", str(exp)]) == 2
    assert f"{settings} is unreadable" in capsys.readouterr().err

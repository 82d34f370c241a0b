"""`mmsearch report` on experiments written straight to disk (no Ray, no training): the files the
layouts describe, with tiny predictions. A trial family where one trick is built to help and
another does nothing; an experiment with one trial; one still running."""
from __future__ import annotations

import json
import shutil
import subprocess
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import mmsearch
from mmsearch.cli import main
from mmsearch.data.prepare import prepare
from mmsearch.ensemble.build import build_ensemble
from mmsearch.layout import ExperimentDir, TrialRunDir
from mmsearch.reporting import write_report
from mmsearch.reporting.html import SECTIONS

METRIC = "accuracy"
HELPS, NOOP = "grad_clip", "lr_warmup"  # trick A adds 0.1 to every trial's score; trick B adds nothing
NOISE = [0.0, 0.012, -0.008, 0.02]


def _experiment(root: Path) -> ExperimentDir:
    """An experiment with prepared data (3 classes, 90 rows) and no trial yet."""
    exp = ExperimentDir(root)
    rng = np.random.default_rng(0)
    table = pd.DataFrame({"x": rng.normal(size=90), "y": rng.normal(size=90), "label": np.repeat(["a", "b", "c"], 30)})
    prepare(table, "label", exp.data)
    exp.write_settings({"searcher": "tpe", "scheduler": "asha", "num_samples": 16})
    return exp


def _trial(exp: ExperimentDir, tid: str, config: dict, scores: list[float], *, finished: bool = True,
           epochs: int | None = None) -> None:
    """A trial that reported `scores` (val accuracy per epoch); its predictions get about that
    fraction of val rows right. finished=False: its last checkpoint is an epoch's (stopped or running)."""
    from mmsearch.data.prepare import PreparedData

    data = PreparedData.load(exp.data)
    run = TrialRunDir(exp.train / tid)
    rows = [{"epoch": e + 1, "metric": METRIC, "val_score": s, f"val_{METRIC}": s, f"holdout_{METRIC}": s - 0.02,
             "val_loss": 1 - s, "epoch_time_s": 1.5, "final": finished and e == len(scores) - 1}
            for e, s in enumerate(scores)]
    for row in rows:
        run.append_metrics(row)
    ckpt = run.final if finished else run.epoch(len(scores))
    rng = np.random.default_rng(zlib.crc32(tid.encode()))  # not hash(): salted per process
    preds = {}
    for part in ("val", "holdout"):
        y = data.labels(part)
        right = rng.random(len(y)) < scores[-1]
        p = np.full((len(y), 3), 0.1)
        p[np.arange(len(y)), np.where(right, y, (y + 1) % 3)] = 0.8
        preds[part] = p.astype(np.float32)
    ckpt.write_predictions(preds)
    ckpt.weights.write_bytes(b"")  # the report never reads weights; the pool wants the file there
    ckpt.write_config({"model.fusion": "lf_mlp", "model.modalities": "all", **config})
    ckpt.write_trainer({"epoch": len(scores), "step": 0, "history": rows, "finished": finished,
                        "final_metrics": rows[-1] if finished else None})


def _family(root: Path, *, ensemble: bool = True) -> ExperimentDir:
    """16 trials, every combination of the two tricks 4 times: HELPS on scores 0.1 higher, NOOP
    changes nothing (the same noise on and off). Learning rates vary (a dimension that does not
    matter); two trials stopped early; one reads text alone and one used G-Blend."""
    exp = _experiment(root)
    i = 0
    for a in (False, True):
        for b in (False, True):
            for k, noise in enumerate(NOISE):
                final = 0.6 + 0.1 * a + noise
                config = {f"tricks.{HELPS}.enabled": a, f"tricks.{NOOP}.enabled": b, "optim.lr": 10 ** -(2 + (i * 7 % 16) / 8)}
                if b:
                    config[f"tricks.{NOOP}.warmup_frac"] = 0.05 + 0.01 * k  # conditional: only when it is on
                _trial(exp, f"t{i:02d}", config, [final - 0.1, final - 0.03, final])
                i += 1
    _trial(exp, "stopped", {f"tricks.{HELPS}.enabled": False}, [0.4], finished=False)
    _trial(exp, "text_only", {"model.modalities": "text"}, [0.5, 0.55])
    _trial(exp, "gblend", {"tricks.gblend.enabled": True}, [0.6, 0.62])
    _trial(exp, "tree", {"model.fusion": "lightgbm", f"tricks.{HELPS}.enabled": True}, [0.3])  # sampled, never applied
    with open(TrialRunDir(exp.train / "gblend").metrics_log, "a") as f:  # its latest report carries the weights
        f.write(json.dumps({"epoch": 2, "metric": METRIC, f"val_{METRIC}": 0.62, "gblend_w_fused": 0.6, "gblend_w_text": 0.4}) + "\n")
    if ensemble:
        build_ensemble(exp.path, size=10)
        bundle = exp.path / "bundle"  # what `mmsearch export` writes there, as far as the report reads it
        bundle.mkdir()
        (bundle / "manifest.json").write_text(json.dumps({"format": "mmsearch-bundle", "members": [{}, {}],
                                                          "files": {"a": "", "b": ""}, "created": "today"}))
    return exp


@pytest.fixture(scope="module")
def family(tmp_path_factory) -> ExperimentDir:
    return _family(tmp_path_factory.mktemp("family") / "exp")


def test_a_trick_built_to_help_has_an_interval_above_zero_and_a_noop_one_around_zero(family):
    tricks = mmsearch.report(family.path).tricks.set_index("trick")
    helps, noop = tricks.loc[HELPS], tricks.loc[NOOP]
    assert helps["ci_low"] > 0 and helps["verdict"].startswith("helped")
    assert helps["effect"] == pytest.approx(0.1, abs=0.03)
    assert helps["on"] == 8  # the tree member's switch is not counted: the loop applies no trick to fitted members
    assert noop["ci_low"] < 0 < noop["ci_high"] and noop["verdict"].startswith("no clear effect")


def test_importance_ranks_the_helpful_trick_first(family):
    imp = mmsearch.report(family.path).importance.set_index("dimension")["importance"]
    assert imp.idxmax() == f"tricks.{HELPS}.enabled" and imp[f"tricks.{HELPS}.enabled"] > 0.5
    assert f"tricks.{NOOP}.warmup_frac" in imp.index  # a conditional parameter is assessed too
    assert imp.sum() == pytest.approx(1.0)


def test_the_python_api_returns_every_table(family):
    rep = mmsearch.report(family.path)
    for name in ("summary", "leaderboard", "curves", "tricks", "importance", "ensemble", "modalities", "gblend"):
        assert isinstance(getattr(rep, name), pd.DataFrame), name
    board = rep.leaderboard
    assert len(board) == 20 and board["trial"].iloc[0] in {f"t{i:02d}" for i in range(8, 16)}  # best val first
    assert board.set_index("trial").loc["stopped", "state"] == "INCOMPLETE"  # no Tune state: it cannot say more
    assert board.set_index("trial").loc["tree", "tricks"] == "n/a (fitted once)"
    assert {"optim.lr", f"tricks.{NOOP}.warmup_frac"} <= set(board.columns)
    assert len(rep.curves) == 16 * 3 + 1 + 2 + 2 + 1 and set(rep.curves.query("trial == 'stopped'")["epoch"]) == {1}
    assert set(rep.modalities["modalities"]) == {"all", "text"}
    assert rep.gblend.set_index("trial").loc["gblend", "w_text"] == 0.4
    summary = rep.summary.set_index("item")["value"]
    assert summary["bundle"].endswith("bundle: 2 members, 2 files, created today")
    assert summary["trials"] == "19 TERMINATED, 1 INCOMPLETE" and summary["best single trial"].startswith("t1")


def test_member_contributions_are_the_ensemble_without_each_member(family):
    from mmsearch.data.prepare import PreparedData
    from mmsearch.layout import CheckpointDir

    rep, ens = mmsearch.report(family.path), family.read_ensemble()
    members = rep.ensemble
    assert list(members["trial"]) == [m["trial_id"] for m in ens["members"]] and len(members) > 1
    y = PreparedData.load(family.data).labels("val")
    preds = {m["trial_id"]: CheckpointDir(family.path / m["checkpoint"]).predictions("val") for m in ens["members"]}
    weights = {m["trial_id"]: m["weight"] for m in ens["members"]}
    for row in members.itertuples():  # by hand: the blend of the others, the accuracy of its argmax
        blend = sum(weights[t] * preds[t] for t in preds if t != row.trial)
        assert row.ensemble_val_without == pytest.approx(np.mean(blend.argmax(axis=1) == y))
        assert row.change_without == pytest.approx(row.ensemble_val_without - ens["scores"]["ensemble"]["val"])


def test_the_cli_writes_one_page_with_every_section(family, tmp_path, capsys):
    out = tmp_path / "page.html"
    assert main(["report", str(family.path), "--out", str(out)]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    page = out.read_text()
    for key in SECTIONS:
        assert f"id='{key}'" in page, key
    assert "<script" not in page and "http://" not in page and "https://" not in page  # offline, no CDN
    assert page.count("data:image/png;base64,") >= 5  # curves, effects, importance, members, modalities, gblend
    assert HELPS in page and "helped" in page


def test_the_default_page_is_in_the_experiment(family):
    assert write_report(family.path) == family.path / "report.html" and (family.path / "report.html").is_file()


def test_one_finished_trial_is_too_little_data(tmp_path):
    exp = _experiment(tmp_path / "exp")
    _trial(exp, "only", {f"tricks.{HELPS}.enabled": True}, [0.5, 0.6])
    rep = mmsearch.report(exp.path)
    assert rep.tricks["effect"].isna().all() and rep.tricks["verdict"].str.startswith("too few trials").all()
    assert rep.importance.empty
    page = write_report(exp.path).read_text()
    assert "Too few trials for a conclusion" in page and "Too few trials for an importance estimate" in page
    assert "No ensemble yet" in page


def test_two_trials_on_and_two_off_give_no_interval_however_large_the_gap(tmp_path):
    exp = _experiment(tmp_path / "exp")
    for i, on in enumerate([True, True, False, False]):
        _trial(exp, f"t{i}", {f"tricks.{HELPS}.enabled": on}, [0.9 if on else 0.3])
    row = mmsearch.report(exp.path).tricks.set_index("trick").loc[HELPS]
    assert pd.isna(row["ci_low"]) and row["verdict"].startswith("too few trials (2 on, 2 off")


def test_a_running_experiment_reports_what_exists(tmp_path):
    exp = _family(tmp_path / "exp", ensemble=False)
    shutil.rmtree(exp.train / "t15" / "final")  # the best trial has not finished: no final checkpoint
    TrialRunDir(exp.train / "fresh").append_metrics({"epoch": 1, "metric": METRIC, f"val_{METRIC}": 0.3})  # no checkpoint yet
    rep = mmsearch.report(exp.path)
    board = rep.leaderboard.set_index("trial")
    assert board.loc["t15", "state"] == "INCOMPLETE" and board.loc["t15", "epochs"] == 3
    assert board.loc["fresh", f"val_{METRIC}"] == 0.3
    page = write_report(exp.path).read_text()
    assert "No ensemble yet" in page and all(f"id='{key}'" in page for key in SECTIONS)


def test_tune_states_name_stopped_running_and_failed_trials(tmp_path, monkeypatch):
    exp = _experiment(tmp_path / "exp")
    _trial(exp, "asha", {}, [0.5], finished=False)
    _trial(exp, "live", {}, [0.6], finished=False)
    _trial(exp, "done", {}, [0.4, 0.7])
    _trial(exp, "begun", {}, [0.3], finished=False)
    states = {"asha": {"state": "TERMINATED"}, "live": {"state": "RUNNING", "time_s": 12.0}, "begun": {"state": "PENDING"},
              "done": {"state": "PENDING"},  # Tune's saved state lags: the final checkpoint is newer news
              "crashed": {"state": "ERROR", "error": "ValueError: loss is NaN", "config": {"trial": {"optim.lr": 0.1}}}}
    monkeypatch.setattr("mmsearch.reporting.collect.trial_states", lambda exp_dir: states)
    board = mmsearch.report(exp.path).leaderboard.set_index("trial")
    assert board["state"].to_dict() == {"done": "TERMINATED", "live": "RUNNING", "asha": "STOPPED", "begun": "RUNNING",
                                        "crashed": "ERROR"}
    assert board.loc["crashed", "error"] == "ValueError: loss is NaN" and board.loc["live", "time_s"] == 12.0
    assert pd.isna(board.loc["crashed", f"val_{METRIC}"]) and list(board.index)[-1] == "crashed"  # no score: last


def test_not_an_experiment_is_a_clear_error(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    assert "not an mmsearch experiment" in capsys.readouterr().err


CHROMIUM = Path("/usr/bin/chromium")


@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium (apt-get install chromium)")
def test_the_page_renders_in_headless_chromium(family, tmp_path):
    page = write_report(family.path, tmp_path / "report.html")
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--enable-logging=stderr", "--v=0"]
    done = subprocess.run([str(CHROMIUM), *flags, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    dom = done.stdout
    for key in SECTIONS:
        assert f'id="{key}"' in dom, key
    assert "Uncaught" not in done.stderr and "CONSOLE" not in done.stderr  # no script errors

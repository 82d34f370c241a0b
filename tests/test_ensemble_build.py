"""`mmsearch ensemble`: members chosen on val only, an honest score table on holdout, no torch/Ray."""
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

from mmsearch import metrics
from mmsearch.data.prepare import PreparedData
from mmsearch.ensemble.build import build_ensemble
from mmsearch.layout.experiment_dir import ExperimentDir
from mmsearch.search.pool import load_pool
from conftest import run_importing_none_of


@pytest.fixture
def exp(trained_experiment, tmp_path):
    copy = tmp_path / "exp"
    shutil.copytree(trained_experiment[0], copy)
    return copy


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "mmsearch.cli", *args], capture_output=True, text=True, timeout=300)


def test_cli_writes_members_weights_and_the_score_table(exp):
    r = _cli("ensemble", str(exp), "--size", "10")
    assert r.returncode == 0, r.stderr
    for row in ("ensemble (", "best single trial (", "uniform average (3 trials)", "holdout accuracy"):
        assert row in r.stdout
    result = json.loads(ExperimentDir(exp).ensemble_file.read_text())
    assert result["method"] == "caruana" and result["size"] == 10 and result["selected_on"] == "val"
    weights = [m["weight"] for m in result["members"]]
    assert all(w > 0 for w in weights) and sum(weights) == pytest.approx(1.0)
    assert all((exp / m["checkpoint"] / "model.safetensors").is_file() for m in result["members"])

    pool = load_pool(exp)
    data = PreparedData.load(exp / "data")
    y = data.labels("holdout")
    scores = result["scores"]
    assert set(scores) == {"ensemble", "best_single", "uniform"}
    # best single = best by val; its holdout score is the one its own run reported
    assert scores["best_single"]["trial_id"] == pool[0].trial_id
    assert scores["best_single"]["holdout"] == pool[0].final_metrics["holdout_accuracy"]
    uniform = np.mean([e.predictions("holdout").astype(np.float64) for e in pool], axis=0)
    assert scores["uniform"]["holdout"] == pytest.approx(metrics.accuracy(y, uniform))
    by_id = {e.trial_id: e for e in pool}
    blended = sum(m["weight"] * by_id[m["trial_id"]].predictions("holdout").astype(np.float64) for m in result["members"])
    assert scores["ensemble"]["holdout"] == metrics.accuracy(y, blended)


def test_selection_uses_val_only(exp, tmp_path):
    """Shuffling the holdout labels changes no member and no weight (only the holdout scores)."""
    shuffled = tmp_path / "shuffled"
    shutil.copytree(exp, shuffled)
    data = PreparedData.load(shuffled / "data")
    table = data.table.copy()
    holdout = data.split["holdout"]
    labels = table["label"].to_numpy(copy=True)
    labels[holdout] = np.random.default_rng(0).permutation(labels[holdout])
    assert (labels[holdout] != data.table["label"].to_numpy()[holdout]).any()
    table["label"] = labels
    table.to_parquet(shuffled / "data" / "table.parquet", index=False)

    for method in ("caruana", "learned"):
        a, b = build_ensemble(exp, size=10, method=method), build_ensemble(shuffled, size=10, method=method)
        assert [(m["trial_id"], m["weight"]) for m in a["members"]] == [(m["trial_id"], m["weight"]) for m in b["members"]]
        assert a["scores"]["ensemble"]["val"] == b["scores"]["ensemble"]["val"]


def test_learned_weights_are_pruned_to_size(exp):
    result = build_ensemble(exp, method="learned", size=2)
    assert result["method"] == "learned" and 1 <= len(result["members"]) <= 2
    assert sum(m["weight"] for m in result["members"]) == pytest.approx(1.0)


def test_build_imports_neither_torch_nor_ray(exp):
    run_importing_none_of(f"from mmsearch.ensemble.build import build_ensemble\nbuild_ensemble({str(exp)!r}, size=5)",
                          ("torch", "ray"))


def test_clear_errors(tmp_path, exp):
    r = _cli("ensemble", str(tmp_path / "nowhere"))
    assert r.returncode == 2 and "is not an mmsearch experiment" in r.stderr and "Traceback" not in r.stderr
    shutil.rmtree(exp / "train")
    r = _cli("ensemble", str(exp))
    assert r.returncode == 2 and "no trial has produced predictions yet" in r.stderr


def test_every_option_reaches_the_selection_from_the_cli(exp, capsys, monkeypatch):
    """Each CLI flag lands in the ensemble file and in the CaruanaEnsemble that picks the members,
    whose weights are the file's."""
    from mmsearch.cli import main
    from mmsearch.ensemble import options as options_module

    fitted = []

    class Spy(options_module.CaruanaEnsemble):
        def fit(self, preds, y):
            fitted.append(self)
            return super().fit(preds, y)

    monkeypatch.setattr(options_module, "CaruanaEnsemble", Spy)
    assert main(["ensemble", str(exp), "--size", "7", "--metric", "log_loss", "--tie-metric", "roc_auc",
                 "--sorted-init", "2", "--bagging", "4", "--bag-fraction", "0.67", "--seed", "3"]) == 0
    out = capsys.readouterr().out
    assert "selection: caruana on val log_loss (ties: roc_auc), 7 steps, sorted init 2, 4 bags of 0.67 (seed 3)" in out
    assert "holdout accuracy" in out  # the table keeps the task metric
    options = {"size": 7, "metric": "log_loss", "tie_metric": "roc_auc", "sorted_init": 2, "bagging": 4,
               "bag_fraction": 0.67, "seed": 3}
    [ens] = fitted
    assert {k: getattr(ens, k) for k in options} == options
    result = json.loads(ExperimentDir(exp).ensemble_file.read_text())
    assert result["selection"] == {"method": "caruana", **options} and result["metric"] == "accuracy"
    got = {m["trial_id"]: m["weight"] for m in result["members"]}
    assert [got.get(e.trial_id, 0.0) for e in load_pool(exp)] == list(ens.weights_)


def test_defaults_select_on_log_loss_with_the_task_metric_breaking_ties(exp):
    result = build_ensemble(exp)
    assert result["selection"] == {"method": "caruana", "size": 25, "metric": "log_loss", "tie_metric": "accuracy",
                                   "sorted_init": 0, "bagging": 0, "bag_fraction": 0.5, "seed": 0}
    assert result["size"] == 25 and result["metric"] == "accuracy"
    # selecting on the task metric itself: log loss breaks its ties
    assert build_ensemble(exp, metric="accuracy")["selection"]["tie_metric"] == "log_loss"
    assert build_ensemble(exp, method="learned")["selection"] == {"method": "learned", "size": None}


@pytest.mark.parametrize("args, message", [
    (["--metric", "f1"], "--metric 'f1': unknown metric; valid metrics: accuracy, log_loss, mae, r2, rmse, roc_auc"),
    (["--tie-metric", "r2"], "--tie-metric r2: a regression metric, but this experiment is multiclass; use one of "
                             "accuracy, log_loss, roc_auc"),
    (["--method", "learned", "--bagging", "3", "--metric", "log_loss"], "--metric, --bagging only apply to --method caruana"),
    (["--bag-fraction", "1.5"], "--bag-fraction must be in (0, 1], got 1.5"),
    (["--sorted-init", "-1"], "--sorted-init must be >= 0, got -1"),
    (["--size", "0"], "--size must be at least 1, got 0"),
])
def test_bad_options_are_one_line_with_exit_code_2(exp, capsys, args, message):
    from mmsearch.cli import main

    assert main(["ensemble", str(exp), *args]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not ExperimentDir(exp).ensemble_file.exists()


def test_a_metric_must_fit_the_problem_type():
    from mmsearch.ensemble.options import Selection
    from mmsearch.errors import MMSearchError

    with pytest.raises(MMSearchError, match="--metric log_loss: a classification metric, but this experiment is "
                                            "regression; use one of mae, r2, rmse"):
        Selection(metric="log_loss").resolve("regression")
    assert Selection().resolve("regression").metric == "r2"  # r2 and rmse rank blends alike: no smoother one
    assert Selection().resolve("regression").tie_metric == "rmse"
    assert Selection(metric="mae").resolve("regression").tie_metric == "r2"
    with pytest.raises(MMSearchError, match="unknown ensemble option in \\['bags'\\]; valid: method, size"):
        build_ensemble("/nowhere", bags=3)


def test_score_table_of_a_file_from_before_the_options(exp):
    from mmsearch.ensemble.build import format_scores

    result = build_ensemble(exp)
    assert format_scores(result).splitlines()[-1].startswith("selection: caruana on val log_loss (ties: accuracy), 25 steps")
    del result["selection"]
    assert "selection" not in format_scores(result) and "holdout accuracy" in format_scores(result)

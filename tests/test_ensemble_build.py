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

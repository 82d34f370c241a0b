"""Tree members (fusion lightgbm): one fit on the frozen towers' cached encodings + the raw tabular
columns, early-stopped on val, reported and checkpointed like any trial; the booster travels as
LightGBM's text model inside the weights file and the bundle predicts with it without Ray."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from safetensors.torch import load_file

from conftest import TINY, rebuilt_holdout_predictions
from mmsearch.bundle.export import export_bundle
from mmsearch.bundle.predictor import Predictor
from mmsearch.data.prepare import prepare
from mmsearch.data.synthetic import make_synthetic
from mmsearch.train.run import run_local

TREES = {**TINY, "model.fusion": "lightgbm", "fusion.lightgbm.early_stopping_rounds": 10}


@pytest.fixture(scope="module")
def experiment(tmp_path_factory):
    root = tmp_path_factory.mktemp("trees")
    table = make_synthetic(root / "table", n=160, missing=0.1, seed=3)
    prepare(table, "label", root / "exp" / "data")
    return root / "exp", table


def _holdout(exp, table) -> pd.DataFrame:
    split = json.loads((exp / "data" / "split.json").read_text())
    return pd.read_csv(table).iloc[split["holdout"]]


def test_a_tree_trial_fits_once_on_cached_encodings(experiment):
    exp, _ = experiment
    out = exp / "train" / "t_trees"
    final = run_local(TREES, exp / "data", out)
    assert final["final"] and final["epoch"] == 1 and 0 < final["lightgbm_trees"] < 1000  # early-stopped
    weights = load_file(str(out / "final" / "model.safetensors"))
    assert not any(k.startswith("encoders.tabular.") for k in weights)  # the trees read the columns themselves
    text = bytes(weights["fusion.booster_text"].numpy()).decode()
    assert text.startswith("tree") and "Tree=0" in text  # LightGBM's own text model, no pickle
    assert list((exp / "data" / "features").glob("image-*/image.npy"))  # the towers' cached encodings
    # a tower wider than embed_dims (the image's 256) is reduced to 32 components; tiny_text's 32 stay whole
    assert weights["fusion.pca_components_image"].shape == (32, 256) and weights["fusion.pca_components_text"].numel() == 0
    assert final["lightgbm_features"] == 32 + 32 + 3  # + the columns size, weight, kind
    preds = np.load(out / "final" / "preds_holdout.npy")
    assert preds.shape[1] == 3 and np.allclose(preds.sum(1), 1.0, atol=1e-5)


def test_tree_members_round_trip_through_their_weights_file_and_the_bundle(experiment, tmp_path):
    """Rebuilt from its config (no pretrained weights read) and its safetensors file, as the bundle
    does: a tabular-only tree member predicts bit for bit. One that also reads the towers'
    encodings gets them live here while the trial read the cache, built in other batch sizes, so
    its features may differ in the last float bits (and a split on such a feature could flip)."""
    exp, table = experiment
    run_local({**TREES, "model.modalities": "tabular", "train.seed": 1}, exp / "data", exp / "train" / "t_tab")
    if not (exp / "train" / "t_trees").exists():
        run_local(TREES, exp / "data", exp / "train" / "t_trees")
    for member, exact in (("t_tab", True), ("t_trees", False)):
        preds, saved = rebuilt_holdout_predictions(exp, member)
        assert np.array_equal(preds, saved) if exact else np.allclose(preds, saved, atol=1e-5)

    predictor = Predictor.load(export_bundle(exp, tmp_path / "bundle", log=lambda *_: None), device="cpu")
    got = predictor.member_predictions(_holdout(exp, table), base_dir=table.parent)
    assert got  # the ensemble's members, trees among the pool, predict without Ray
    for member, preds in got.items():
        np.testing.assert_allclose(preds, np.load(exp / "train" / member / "final" / "preds_holdout.npy"), atol=1e-5)


def test_a_regression_tree_member(tmp_path):
    table = make_synthetic(tmp_path / "table", n=120, regression=True, seed=2)
    data = prepare(table, "label", tmp_path / "data")
    final = run_local({**TREES, "model.modalities": "tabular"}, data.dir, tmp_path / "run")
    assert np.isfinite(final["holdout_loss"]) and final["metric"] in ("r2", "rmse")

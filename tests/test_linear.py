"""Linear-probe members (fusion linear): logistic regression / ridge over the frozen towers' cached
encodings and the tabular columns, its L2 strength picked on val; fitted once like the trees,
checkpointed as float32 buffers, predicting with one matrix product in the trial and the bundle."""
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
from mmsearch.models.fusion.linear import LinearFusion
from mmsearch.train.run import run_local

PROBE = {**TINY, "model.fusion": "linear"}


@pytest.fixture(scope="module")
def experiment(tmp_path_factory):
    root = tmp_path_factory.mktemp("linear")
    table = make_synthetic(root / "table", n=160, missing=0.1, seed=3)
    prepare(table, "label", root / "exp" / "data")
    return root / "exp", table


def test_a_probe_trial_fits_once_on_cached_encodings(experiment):
    exp, _ = experiment
    out = exp / "train" / "t_probe"
    final = run_local(PROBE, exp / "data", out)
    assert final["final"] and final["epoch"] == 1 and final["linear_C"] in np.geomspace(1e-3, 10.0, 5)
    weights = load_file(str(out / "final" / "model.safetensors"))
    assert not any(k.startswith("encoders.tabular.") for k in weights)  # the probe reads the columns itself
    assert list((exp / "data" / "features").glob("image-*/image.npy"))  # the towers' cached encodings
    # image 256 + text 32 + 2 numbers and their missing indicators + one-hot of kind (ids 0..4: missing,
    # unknown, k0..k2)
    assert final["linear_features"] == 256 + 32 + 2 * 2 + 5
    assert weights["fusion.weight"].shape == (final["linear_features"], 3)
    preds = np.load(out / "final" / "preds_holdout.npy")
    assert preds.shape[1] == 3 and np.allclose(preds.sum(1), 1.0, atol=1e-5)
    assert final["val_accuracy"] > 0.6  # the synthetic label shows through every modality


def test_probe_members_round_trip_through_their_weights_file_and_the_bundle(experiment, tmp_path):
    """Rebuilt from config + safetensors as the bundle does: a tabular-only probe predicts bit for
    bit; one reading the towers gets their encodings live (the trial read the cache), equal to float
    rounding. The bundle's members predict what the trials predicted."""
    exp, table = experiment
    run_local({**PROBE, "model.modalities": "tabular"}, exp / "data", exp / "train" / "t_tab")
    if not (exp / "train" / "t_probe").exists():
        run_local(PROBE, exp / "data", exp / "train" / "t_probe")
    for member, exact in (("t_tab", True), ("t_probe", False)):
        preds, saved = rebuilt_holdout_predictions(exp, member)
        assert np.array_equal(preds, saved) if exact else np.allclose(preds, saved, atol=1e-5)

    predictor = Predictor.load(export_bundle(exp, tmp_path / "bundle", log=lambda *_: None), device="cpu")
    split = json.loads((exp / "data" / "split.json").read_text())
    got = predictor.member_predictions(pd.read_csv(table).iloc[split["holdout"]], base_dir=table.parent)
    assert got
    for member, preds in got.items():
        np.testing.assert_allclose(preds, np.load(exp / "train" / member / "final" / "preds_holdout.npy"), atol=1e-5)


def _fitted(x, y, x_val, y_val, problem="multiclass", n_out=3, **params):
    fusion = LinearFusion({}, n_out, **{**dict(c_min=1e-3, c_max=10.0, n_c=5, max_iter=300), **params})
    empty = np.zeros((len(x), 0))
    fusion.fit_inputs({}, empty, empty.astype(bool), np.zeros((len(x), 0), dtype=np.int64))
    info = fusion.fit(x, y, x_val, y_val, n_cat=0, problem_type=problem, seed=0, threads=1)
    return fusion, info


def test_the_probe_is_scikit_learns_logistic_regression_at_the_strength_val_picks():
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    centers = rng.normal(size=(3, 20)) * 0.6
    y, y_val = rng.integers(0, 3, 300), rng.integers(0, 3, 200)
    x, x_val = centers[y] + rng.normal(size=(300, 20)), centers[y_val] + rng.normal(size=(200, 20))
    fusion, info = _fitted(x, y, x_val, y_val)
    scaled = lambda a: (a - x.mean(0)) / x.std(0)  # noqa: E731
    reference = LogisticRegression(C=info["C"], max_iter=5000).fit(scaled(x), y)
    logits = fusion.predict_array(x_val)
    probs = np.exp(logits - logits.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    np.testing.assert_allclose(probs, reference.predict_proba(scaled(x_val)), atol=1e-2)  # L-BFGS tolerance
    # and C is the val loss's choice: every other strength of the path scores worse on val
    def val_loss(c):
        p = LogisticRegression(C=c, max_iter=5000).fit(scaled(x), y).predict_proba(scaled(x_val))
        return -np.log(p[np.arange(len(y_val)), y_val]).mean()
    others = [c for c in np.geomspace(1e-3, 10.0, 5) if not np.isclose(c, info["C"])]
    assert all(val_loss(c) > val_loss(info["C"]) for c in others)


def test_pure_noise_gets_the_strongest_penalty_and_a_clear_signal_a_weak_one():
    rng = np.random.default_rng(1)
    noise, noise_val = rng.normal(size=(60, 200)), rng.normal(size=(200, 200))
    _, info = _fitted(noise, rng.integers(0, 3, 60), noise_val, rng.integers(0, 3, 200))
    assert info["C"] == pytest.approx(1e-3)
    y, y_val = rng.integers(0, 3, 600), rng.integers(0, 3, 200)
    x, x_val = np.eye(3)[y] * 3 + rng.normal(size=(600, 3)) * 0.3, np.eye(3)[y_val] * 3 + rng.normal(size=(200, 3)) * 0.3
    _, info = _fitted(x, y, x_val, y_val)
    assert info["C"] >= 1.0


def test_a_binary_and_a_regression_probe():
    rng = np.random.default_rng(2)
    x, x_val = rng.normal(size=(200, 5)), rng.normal(size=(100, 5))
    fusion, _ = _fitted(x, (x[:, 0] > 0).astype(int), x_val, (x_val[:, 0] > 0).astype(int), problem="binary", n_out=2)
    logits = fusion.predict_array(x_val)
    assert logits.shape == (100, 2) and np.mean((logits[:, 1] > logits[:, 0]) == (x_val[:, 0] > 0)) > 0.9
    fusion, _ = _fitted(x, 2 * x[:, 1], x_val, 2 * x_val[:, 1], problem="regression", n_out=1)
    pred = fusion.predict_array(x_val)
    assert pred.shape == (100, 1) and np.corrcoef(pred[:, 0], x_val[:, 1])[0, 1] > 0.99


def test_a_regression_probe_trial(tmp_path):
    table = make_synthetic(tmp_path / "table", n=120, regression=True, seed=2)
    data = prepare(table, "label", tmp_path / "data")
    final = run_local({**PROBE, "model.modalities": "tabular"}, data.dir, tmp_path / "run")
    assert np.isfinite(final["holdout_loss"]) and final["val_r2"] > 0.2  # "size" carries the label

"""mmsearch.metrics against sklearn (sklearn is used in tests only)."""

import numpy as np
import pytest
from sklearn import metrics as skm

from mmsearch import metrics
from conftest import run_importing_none_of


def _proba(rng, n, c, ties=False):
    p = rng.dirichlet(np.ones(c), size=n)
    if ties:  # coarse values -> many exactly tied scores and argmax ties
        p = np.stack([rng.multinomial(8, row) for row in p]) / 8.0
    return p


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("c", [2, 3, 7])
@pytest.mark.parametrize("ties", [False, True])
def test_classification_matches_sklearn(seed, c, ties):
    rng = np.random.default_rng(seed)
    n = 200
    y = rng.integers(0, c, n)
    y[:c] = np.arange(c)  # every class present (sklearn's multiclass AUC needs it)
    p = _proba(rng, n, c, ties)

    assert metrics.accuracy(y, p) == pytest.approx(skm.accuracy_score(y, p.argmax(1)), abs=1e-12)
    if c == 2:
        ref_auc = skm.roc_auc_score(y, p[:, 1])
    else:
        ref_auc = skm.roc_auc_score(y, p, multi_class="ovr", average="macro")
    assert metrics.roc_auc(y, p) == pytest.approx(ref_auc, abs=1e-12)
    if not ties:  # sklearn clips at float eps, we at 1e-15: equal away from 0
        assert metrics.log_loss(y, p) == pytest.approx(skm.log_loss(y, p, labels=list(range(c))), abs=1e-12)


def test_log_loss_clips_and_renormalises():
    y = np.array([0, 1])
    p = np.array([[1.0, 0.0], [1.0, 0.0]])  # second row: true class has probability 0
    want = -(np.log(1.0 / (1.0 + 1e-15)) + np.log(1e-15 / (1.0 + 1e-15))) / 2
    assert metrics.log_loss(y, p) == pytest.approx(want, rel=1e-12)
    # unnormalised rows (entries in [0, 1]) are renormalised
    q = np.array([[0.2, 0.2], [0.1, 0.3]])
    assert metrics.log_loss(y, q) == pytest.approx(-(np.log(0.5) + np.log(0.75)) / 2)


def test_roc_auc_ties_count_half():
    y = np.array([0, 1, 0, 1])
    p1 = np.array([0.5, 0.5, 0.2, 0.9])
    # pairs (pos, neg): (0.5,0.5)->.5 (0.5,0.2)->1 (0.9,0.5)->1 (0.9,0.2)->1  => 3.5/4
    assert metrics.roc_auc(y, np.stack([1 - p1, p1], 1)) == pytest.approx(0.875)
    assert metrics.roc_auc(y, p1) == pytest.approx(0.875)  # 1-D = P(class 1)
    assert metrics.roc_auc(y, np.stack([1 - p1, p1], 1)) == pytest.approx(skm.roc_auc_score(y, p1))


def test_roc_auc_undefined_and_missing_classes():
    p = np.array([[0.3, 0.7], [0.6, 0.4]])
    assert np.isnan(metrics.roc_auc([1, 1], p))
    # multiclass: class 2 absent -> averaged over classes 0 and 1 only
    y = np.array([0, 1, 0, 1])
    p3 = np.array([[0.6, 0.3, 0.1], [0.2, 0.7, 0.1], [0.5, 0.4, 0.1], [0.3, 0.3, 0.4]])
    per = [skm.roc_auc_score(y == k, p3[:, k]) for k in (0, 1)]
    assert metrics.roc_auc(y, p3) == pytest.approx(np.mean(per))


def test_rank_auc_vectorised_matches_single():
    rng = np.random.default_rng(0)
    s = np.round(rng.random((5, 100)), 1)
    pos = rng.random(100) < 0.3
    got = metrics.rank_auc(s, pos)
    for i in range(5):
        assert got[i] == pytest.approx(skm.roc_auc_score(pos, s[i]))


@pytest.mark.parametrize("seed", range(3))
def test_regression_matches_sklearn(seed):
    rng = np.random.default_rng(seed)
    y = rng.normal(size=300) * 4
    p = y + rng.normal(size=300) * 2
    p[:20] = np.round(p[:20])
    assert metrics.r2(y, p) == pytest.approx(skm.r2_score(y, p), abs=1e-12)
    assert metrics.rmse(y, p) == pytest.approx(np.sqrt(skm.mean_squared_error(y, p)), abs=1e-12)
    assert metrics.mae(y, p) == pytest.approx(skm.mean_absolute_error(y, p), abs=1e-12)
    assert metrics.score("r2", y, p.reshape(-1, 1)) == pytest.approx(metrics.r2(y, p))  # [N, 1] heads


def test_r2_constant_target_follows_sklearn():
    y = np.ones(4)
    assert metrics.r2(y, y) == skm.r2_score(y, y) == 1.0
    assert metrics.r2(y, y + 1) == skm.r2_score(y, y + 1) == 0.0


def test_registry_and_helpers():
    assert set(metrics.METRICS) == {"accuracy", "roc_auc", "log_loss", "r2", "rmse", "mae"}
    assert [m for m in metrics.METRICS if metrics.higher_is_better(m)] == ["accuracy", "roc_auc", "r2"]
    assert metrics.default_metric("binary") == "roc_auc"
    assert metrics.default_metric("multiclass") == "accuracy"
    assert metrics.default_metric("regression") == "r2"
    assert metrics.secondary_metric("binary") == "log_loss"
    assert metrics.secondary_metric("multiclass") == "log_loss"
    assert metrics.secondary_metric("regression") == "rmse"
    y, p = np.array([0, 1]), np.array([[0.8, 0.2], [0.3, 0.7]])
    assert metrics.score("accuracy", y, p) == 1.0
    with pytest.raises(ValueError, match="accuracy.*log_loss.*roc_auc"):
        metrics.score("f1", y, p)
    with pytest.raises(ValueError):
        metrics.higher_is_better("nope")
    with pytest.raises(ValueError):
        metrics.default_metric("ranking")
    with pytest.raises(ValueError):
        metrics.accuracy([0, 2], p)  # class id out of range
    with pytest.raises(ValueError):
        metrics.accuracy([0.5, 1.0], p)  # not class indices


def test_metrics_module_imports_no_heavy_deps():
    run_importing_none_of("import mmsearch.metrics", ("torch", "ray", "sklearn", "pandas"))

"""CaruanaEnsemble: equality with a brute-force reference, hand-built tie cases, bagging."""

import numpy as np
import pytest

from mmsearch import metrics
from mmsearch.ensemble import CaruanaEnsemble
from conftest import run_importing_none_of

CLASS_METRICS = ["accuracy", "roc_auc", "log_loss"]
REG_METRICS = ["r2", "rmse", "mae"]


# --------------------------------------------------------------------------- reference
def reference_select(preds, y, metric, size, sorted_init=0, tie_metric=None, cols=None):
    """Deliberately straightforward Caruana: re-average and re-score every candidate."""
    regression = metric in metrics.REGRESSION_METRICS
    tie_metric = tie_metric or ("rmse" if regression else "log_loss")
    cols = list(range(len(preds))) if cols is None else list(cols)
    sign = 1 if metrics.higher_is_better(metric) else -1
    tsign = 1 if metrics.higher_is_better(tie_metric) else -1

    def ens_score(members, name):
        avg = np.mean([preds[i] for i in members], axis=0)
        return metrics.score(name, y, avg)

    picks, traj = [], []
    if sorted_init:
        keyed = []
        for m in cols:
            keyed.append((-round(sign * ens_score([m], metric), 12), -round(tsign * ens_score([m], tie_metric), 12), m))
        for _, _, m in sorted(keyed)[:sorted_init]:
            picks.append(m)
            traj.append(ens_score(picks, metric))
    for _ in range(size):
        best_key, best_m, best_s = None, None, None
        for m in cols:
            s = ens_score(picks + [m], metric)
            t = ens_score(picks + [m], tie_metric)
            key = (round(sign * s, 12), m in picks, round(tsign * t, 12), -m)
            if best_key is None or key > best_key:
                best_key, best_m, best_s = key, m, s
        picks.append(best_m)
        traj.append(best_s)
    lo = max(1, sorted_init)
    gains = [round(sign * t, 12) for t in traj[lo - 1 :]]
    best = lo + gains.index(max(gains))
    return picks, traj, best


def random_pool(rng, M, N, C, ties=False):
    """Correlated models of varying quality. ties=True: probabilities are multiples of
    1/16, so averages of a few models are exact in float64 and class/score ties are
    real ties (not float noise) that every implementation sees identically."""
    logits = rng.normal(size=(N, C)) * 1.5
    y = np.array([rng.choice(C, p=np.exp(r) / np.exp(r).sum()) for r in logits])
    preds = []
    for _ in range(M):
        z = logits * rng.uniform(0.2, 1.5) + rng.normal(size=(N, C)) * rng.uniform(0.5, 2.0)
        p = np.exp(z)
        p /= p.sum(axis=1, keepdims=True)
        if ties:
            p = np.stack([rng.multinomial(16, row) for row in p]) / 16.0
        preds.append(p)
    return np.stack(preds), y


def _assert_same_selection(ens, picks, traj, best):
    """The fast selection equals the reference: same picks, trajectory, best prefix; weights sum to 1."""
    assert ens.indices_.tolist() == picks
    np.testing.assert_allclose(ens.trajectory_, traj, rtol=1e-9, atol=1e-12)
    assert ens.best_size_ == best
    assert ens.weights_.sum() == pytest.approx(1.0)


# --------------------------------------------------------------------------- equality
@pytest.mark.parametrize("metric", CLASS_METRICS)
@pytest.mark.parametrize("C", [2, 4])
@pytest.mark.parametrize("sorted_init", [0, 3])
def test_matches_reference_classification(metric, C, sorted_init):
    rng = np.random.default_rng(C * 10 + sorted_init)
    preds, y = random_pool(rng, M=7, N=60, C=C)
    ens = CaruanaEnsemble(metric=metric, size=8, sorted_init=sorted_init).fit(preds, y)
    picks, traj, best = reference_select(preds, y, metric, 8, sorted_init)
    _assert_same_selection(ens, picks, traj, best)
    np.testing.assert_allclose(ens.weights_, np.bincount(picks[:best], minlength=7) / best)


@pytest.mark.parametrize("metric", ["accuracy", "roc_auc"])
def test_matches_reference_with_many_ties(metric):
    rng = np.random.default_rng(5)
    preds, y = random_pool(rng, M=8, N=40, C=3, ties=True)
    ens = CaruanaEnsemble(metric=metric, size=10, sorted_init=2).fit(preds, y)
    picks, traj, best = reference_select(preds, y, metric, 10, 2)
    assert ens.indices_.tolist() == picks
    assert ens.best_size_ == best


@pytest.mark.parametrize("metric", ["accuracy", "roc_auc", "log_loss"])
def test_matches_reference_large_tie_sets(metric):
    # 24 coarse binary models: many candidates tie, so tie-breaks score real subsets
    rng = np.random.default_rng(8)
    preds, y = random_pool(rng, M=24, N=30, C=2, ties=True)
    ens = CaruanaEnsemble(metric=metric, size=6).fit(preds, y)
    picks, _, best = reference_select(preds, y, metric, 6)
    assert ens.indices_.tolist() == picks
    assert ens.best_size_ == best


@pytest.mark.parametrize("metric", ["log_loss", "accuracy"])
def test_matches_reference_unnormalised_rows(metric):
    # rows summing to < 1: log_loss renormalises (also when it is the tie metric)
    rng = np.random.default_rng(9)
    preds, y = random_pool(rng, M=6, N=50, C=3, ties=metric == "accuracy")
    preds = preds * rng.uniform(0.5, 1.0, size=preds.shape[:2])[..., None]
    ens = CaruanaEnsemble(metric=metric, size=6, sorted_init=1).fit(preds, y)
    picks, traj, best = reference_select(preds, y, metric, 6, 1)
    assert ens.indices_.tolist() == picks
    np.testing.assert_allclose(ens.trajectory_, traj, rtol=1e-9)


def test_float16_pool_is_scored_in_float32():
    rng = np.random.default_rng(4)
    preds, y = random_pool(rng, M=10, N=200, C=4)
    p16 = preds.astype(np.float16)
    a = CaruanaEnsemble(metric="accuracy", size=8).fit(p16, y)
    b = CaruanaEnsemble(metric="accuracy", size=8).fit(p16.astype(np.float32), y)
    assert a.indices_.tolist() == b.indices_.tolist()


@pytest.mark.parametrize("metric", REG_METRICS)
@pytest.mark.parametrize("sorted_init", [0, 2])
def test_matches_reference_regression(metric, sorted_init):
    rng = np.random.default_rng(11 + sorted_init)
    y = rng.normal(size=50) * 3 + 1
    preds = np.stack([y + rng.normal(size=50) * rng.uniform(0.3, 3) + rng.normal() for _ in range(6)])
    ens = CaruanaEnsemble(metric=metric, size=7, sorted_init=sorted_init).fit(preds, y)
    picks, traj, best = reference_select(preds, y, metric, 7, sorted_init)
    _assert_same_selection(ens, picks, traj, best)
    np.testing.assert_allclose(ens.predict(preds), np.tensordot(ens.weights_, preds, 1))


def test_float32_pool_and_threads_agree():
    rng = np.random.default_rng(3)
    preds, y = random_pool(rng, M=30, N=500, C=5)
    a = CaruanaEnsemble(metric="accuracy", size=15, n_threads=1).fit(preds.astype(np.float32), y)
    b = CaruanaEnsemble(metric="accuracy", size=15, n_threads=2).fit(preds.astype(np.float32), y)
    assert a.indices_.tolist() == b.indices_.tolist()
    # float32 accuracies are exact fractions, so they must equal the float64 reference
    for k in range(1, 16):
        avg = np.mean(preds[a.indices_[:k]].astype(np.float32).astype(np.float64), axis=0)
        assert a.trajectory_[k - 1] == pytest.approx(metrics.accuracy(y, avg))


@pytest.mark.parametrize("metric", ["log_loss", "rmse", "mae"])
def test_float32_pool_matches_float64_reference(metric):
    rng = np.random.default_rng(6)
    if metric == "log_loss":
        preds, y = random_pool(rng, M=20, N=400, C=5)
    else:
        y = rng.normal(size=400)
        preds = np.stack([y + rng.normal(size=400) * rng.uniform(0.3, 2) for _ in range(20)])
    p32 = preds.astype(np.float32)
    ens = CaruanaEnsemble(metric=metric, size=10, sorted_init=2).fit(p32, y)
    picks, traj, _ = reference_select(p32.astype(np.float64), y, metric, 10, 2)
    assert ens.indices_.tolist() == picks
    np.testing.assert_allclose(ens.trajectory_, traj, rtol=2e-6)


# --------------------------------------------------------------------------- known answers
def test_hand_built_accuracy_ties_prefer_models_already_in():
    y = np.array([0, 1])
    good = [[0.75, 0.25], [0.25, 0.75]]
    preds = np.array(
        [
            good,  # 0: perfect
            good,  # 1: identical to 0
            [[0.75, 0.25], [0.5, 0.5]],  # 2: row 1 tie -> argmax 0 -> wrong
        ]
    )
    ens = CaruanaEnsemble(metric="accuracy", size=3).fit(preds, y)
    # step 1: 0 and 1 tie on accuracy and log_loss -> lowest index; then model 0 is
    # "already in" and beats its identical twin 1 at every later step.
    assert ens.indices_.tolist() == [0, 0, 0]
    assert ens.trajectory_.tolist() == [1.0, 1.0, 1.0]
    assert ens.best_size_ == 1
    assert ens.weights_.tolist() == [1.0, 0.0, 0.0]


def test_hand_built_tie_metric_breaks_accuracy_ties():
    y = np.array([0, 1])
    preds = np.array(
        [
            [[0.625, 0.375], [0.375, 0.625]],  # 0: right, less confident
            [[0.875, 0.125], [0.125, 0.875]],  # 1: right, more confident (lower log loss)
        ]
    )
    ens = CaruanaEnsemble(metric="accuracy", size=1).fit(preds, y)
    assert ens.indices_.tolist() == [1]
    # with a tie metric that can't separate them either, the lowest index wins
    ens = CaruanaEnsemble(metric="accuracy", size=1, tie_metric="accuracy").fit(preds, y)
    assert ens.indices_.tolist() == [0]


@pytest.mark.parametrize("y, want", [(1, 1.0), (2, 0.0)])
def test_argmax_class_tie_goes_to_lowest_class(y, want):
    # the two models average to [0, .5, .5]: argmax (first max) says class 1
    preds = np.array([[[0.0, 0.75, 0.25]], [[0.0, 0.25, 0.75]]])
    ens = CaruanaEnsemble(metric="accuracy", size=0, sorted_init=2).fit(preds, np.array([y]))
    assert sorted(ens.indices_.tolist()) == [0, 1]
    assert ens.trajectory_[1] == want == metrics.accuracy([y], preds.mean(axis=0))


def test_best_prefix_is_earliest_of_equal_scores():
    # model 0 alone is perfect; everything after keeps 1.0 -> best prefix is 1
    y = np.array([0, 1, 1])
    p0 = [[0.9, 0.1], [0.2, 0.8], [0.4, 0.6]]
    p1 = [[0.6, 0.4], [0.4, 0.6], [0.45, 0.55]]
    ens = CaruanaEnsemble(metric="accuracy", size=4).fit(np.array([p0, p1]), y)
    assert ens.trajectory_.tolist() == [1.0] * 4
    assert ens.best_size_ == 1
    assert ens.weights_.tolist() == [1.0, 0.0]


def test_equal_candidates_go_to_lowest_index():
    y = np.array([0.0, 0.0])
    preds = np.array([[1.0, -1.0], [1.0, 1.0], [-1.0, -1.0]])
    ens = CaruanaEnsemble(metric="rmse", size=3).fit(preds, y)
    # step 1: all rmse 1 (tie metric rmse too) -> 0; step 2: 1 and 2 both give
    # rmse sqrt(.5) and neither is in -> 1; step 3: adding 2 gives mean [1/3, -1/3].
    assert ens.indices_.tolist() == [0, 1, 2]
    np.testing.assert_allclose(ens.trajectory_, [1.0, np.sqrt(0.5), 1 / 3])
    assert ens.best_size_ == 3
    np.testing.assert_allclose(ens.weights_, [1 / 3, 1 / 3, 1 / 3])


def test_regression_known_average():
    y = np.zeros(4)
    preds = np.array([[1.0, 1.0, 1.0, 1.0], [-1.0, -1.0, -1.0, -1.0], [2.0, 2.0, 2.0, 2.0]])
    ens = CaruanaEnsemble(metric="rmse", size=4).fit(preds, y)
    assert ens.trajectory_[1] == 0.0  # 1 and -1 average to the target
    assert ens.best_size_ == 2
    np.testing.assert_allclose(ens.weights_, [0.5, 0.5, 0.0])
    np.testing.assert_allclose(ens.predict(preds), 0.0)


def test_r2_tie_broken_by_tie_metric_then_index():
    y = np.array([0.0, 0.0, 1.0, 1.0])
    a = y + np.array([1.0, 1.0, 1.0, 1.0])  # SSE 4, SAE 4
    b = y + np.array([2.0, 0.0, 0.0, 0.0])  # SSE 4, SAE 2
    preds = np.stack([a, b])
    # r2 ties, and so does the default tie metric rmse -> lowest index
    assert CaruanaEnsemble(metric="r2", size=1).fit(preds, y).indices_.tolist() == [0]
    # mae separates them
    assert CaruanaEnsemble(metric="r2", size=1, tie_metric="mae").fit(preds, y).indices_.tolist() == [1]


# --------------------------------------------------------------------------- bagging & api
def test_bagging_is_seeded_and_weights_sum_to_one():
    rng = np.random.default_rng(2)
    preds, y = random_pool(rng, M=12, N=80, C=3)
    kw = dict(metric="log_loss", size=6, bagging=4, bag_fraction=0.5)
    a = CaruanaEnsemble(seed=7, **kw).fit(preds, y)
    b = CaruanaEnsemble(seed=7, **kw).fit(preds, y)
    c = CaruanaEnsemble(seed=8, **kw).fit(preds, y)
    np.testing.assert_array_equal(a.weights_, b.weights_)
    np.testing.assert_array_equal(a.bag_models_, b.bag_models_)
    assert not np.array_equal(a.bag_models_, c.bag_models_)
    assert a.weights_.sum() == pytest.approx(1.0)
    assert a.indices_.shape == (4, 6) and a.bag_models_.shape == (4, 6)
    for bag, picks, best in zip(a.bag_models_, a.indices_, a.best_size_):
        assert set(picks.tolist()) <= set(bag.tolist())
        ref, _, ref_best = reference_select(preds, y, "log_loss", 6, cols=bag)
        assert picks.tolist() == ref and best == ref_best


def test_input_validation():
    preds = np.full((2, 3, 2), 0.5)
    y = np.array([0, 1, 0])
    with pytest.raises(ValueError, match="valid metrics"):
        CaruanaEnsemble(metric="f1").fit(preds, y)
    with pytest.raises(ValueError, match="shape"):
        CaruanaEnsemble(metric="accuracy").fit(preds[..., 0], y)
    with pytest.raises(ValueError, match="tie_metric"):
        CaruanaEnsemble(metric="accuracy", tie_metric="rmse").fit(preds, y)
    bad = preds.copy()
    bad[1, 2, 0] = np.nan
    for metric in CLASS_METRICS:
        with pytest.raises(ValueError, match="NaN"):
            CaruanaEnsemble(metric=metric).fit(bad, y)
    with pytest.raises(ValueError, match="NaN"):
        CaruanaEnsemble(metric="r2").fit(np.array([[0.0, np.inf, 1.0]]), [0.0, 1.0, 2.0])
    with pytest.raises(ValueError):
        CaruanaEnsemble(metric="accuracy", size=0).fit(preds, y)
    with pytest.raises(RuntimeError):
        CaruanaEnsemble(metric="accuracy").predict(preds)


def test_modules_import_without_torch_or_ray():
    run_importing_none_of("import mmsearch.metrics, mmsearch.ensemble, mmsearch.ensemble.caruana, mmsearch.ensemble.learned",
                          ("torch", "ray", "sklearn", "pandas"))

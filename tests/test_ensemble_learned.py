"""LearnedWeightsEnsemble: softmax weights fitted by gradient descent on validation loss."""

import numpy as np
import pytest

from mmsearch import metrics
from mmsearch.ensemble import LearnedWeightsEnsemble


def _nll(preds, y, w):
    return metrics.log_loss(y, np.tensordot(w, preds, 1))


def _noisy_pool(rng, N, C, M, max_signal):
    """M models, each the one-hot truth mixed with Dirichlet noise at its own signal level."""
    y = rng.integers(0, C, N)
    onehot = np.eye(C)[y]
    preds = np.stack([s * onehot + (1 - s) * rng.dirichlet(np.ones(C), N) for s in rng.uniform(0, max_signal, M)])
    return preds, y


def test_reduces_nll_vs_uniform_and_converges():
    rng = np.random.default_rng(0)
    N, C, M = 400, 4, 8
    preds, y = _noisy_pool(rng, N, C, M, 0.6)
    ens = LearnedWeightsEnsemble(metric="log_loss").fit(preds, y)
    uniform = _nll(preds, y, np.full(M, 1 / M))
    assert ens.loss_ < uniform - 0.01
    assert ens.loss_ == pytest.approx(_nll(preds, y, ens.weights_), rel=1e-9)
    assert ens.weights_.sum() == pytest.approx(1.0) and (ens.weights_ >= 0).all()
    assert ens.converged_ and ens.n_iter_ > 1  # ran to convergence, not one step
    assert np.all(np.diff(ens.loss_curve_) <= 1e-15)  # line search: monotone
    np.testing.assert_allclose(ens.predict(preds), np.tensordot(ens.weights_, preds, 1))
    assert ens.score_ == pytest.approx(metrics.log_loss(y, ens.predict(preds)))


def test_clearly_best_model_gets_nearly_all_weight():
    rng = np.random.default_rng(1)
    N, C = 500, 3
    y = rng.integers(0, C, N)
    best = 0.9 * np.eye(C)[y] + 0.1 / C
    preds = np.stack([rng.dirichlet(np.ones(C), N) for _ in range(3)] + [best] + [rng.dirichlet(np.ones(C), N)])
    ens = LearnedWeightsEnsemble(metric="accuracy").fit(preds, y)
    assert ens.weights_[3] > 0.99
    assert ens.score_ == 1.0  # metric only picks the task (NLL) and the reported score


def test_interior_optimum_matches_grid_search():
    # two complementary models: each is good on half of the rows -> optimum inside (0, 1)
    rng = np.random.default_rng(2)
    N, C = 600, 2
    y = rng.integers(0, C, N)
    onehot = np.eye(C)[y]
    half = (np.arange(N) < N // 2)[:, None]
    a = np.where(half, 0.9 * onehot + 0.05, 0.2 * onehot + 0.4)  # true class: .95 / .6
    b = np.where(half, 0.3 * onehot + 0.35, 0.96 * onehot + 0.02)  # true class: .65 / .98
    preds = np.stack([a, b])
    ens = LearnedWeightsEnsemble(metric="log_loss", tol=1e-12, max_iter=2000).fit(preds, y)
    grid = np.linspace(0, 1, 20001)
    t = preds[:, np.arange(N), y]
    nll = [-np.mean(np.log(g * t[0] + (1 - g) * t[1])) for g in grid]
    w_best = grid[int(np.argmin(nll))]
    assert 0.05 < w_best < 0.95
    assert ens.weights_[0] == pytest.approx(w_best, abs=2e-4)
    assert ens.loss_ <= min(nll) + 1e-9


def test_regression_matches_closed_form():
    rng = np.random.default_rng(3)
    y = rng.normal(size=400)
    preds = np.stack([y + rng.normal(size=400) * s for s in (1.5, 0.5, 1.0, 2.0)])
    ens = LearnedWeightsEnsemble(metric="rmse", tol=1e-14, max_iter=5000).fit(preds, y)
    # min ||R^T w||^2 s.t. sum(w) = 1 -> w ~ G^-1 1 (all positive here, so also the
    # optimum on the simplex)
    R = preds - y
    w = np.linalg.solve(R @ R.T, np.ones(4))
    w /= w.sum()
    assert (w > 0).all()
    mse_opt = np.mean((R.T @ w) ** 2)
    assert ens.loss_ == pytest.approx(mse_opt, rel=1e-6)
    np.testing.assert_allclose(ens.weights_, w, atol=5e-3)
    assert ens.weights_[1] == ens.weights_.max()
    assert ens.score_ == pytest.approx(metrics.rmse(y, ens.predict(preds)))


def test_tol_stops_early_and_max_iter_caps():
    rng = np.random.default_rng(4)
    y = rng.integers(0, 3, 200)
    preds = rng.dirichlet(np.ones(3), size=(6, 200))
    loose = LearnedWeightsEnsemble(metric="log_loss", tol=1e-3).fit(preds, y)
    tight = LearnedWeightsEnsemble(metric="log_loss", tol=1e-10).fit(preds, y)
    assert loose.n_iter_ < tight.n_iter_
    assert tight.loss_ <= loose.loss_
    capped = LearnedWeightsEnsemble(metric="log_loss", tol=0.0, max_iter=3).fit(preds, y)
    assert capped.n_iter_ == 3 and not capped.converged_


def test_validation():
    with pytest.raises(ValueError, match="valid metrics"):
        LearnedWeightsEnsemble(metric="f1").fit(np.ones((2, 3, 2)) / 2, [0, 1, 0])
    with pytest.raises(ValueError):
        LearnedWeightsEnsemble(metric="rmse").fit(np.ones((2, 3, 2)), [0.0, 1.0, 0.0])
    with pytest.raises(RuntimeError):
        LearnedWeightsEnsemble(metric="rmse").predict(np.ones((2, 3)))


def test_float32_pool_and_dense_predict():
    # 80 models -> dense weights take the BLAS mat-vec path in predict
    rng = np.random.default_rng(5)
    N, C, M = 300, 3, 80
    preds, y = _noisy_pool(rng, N, C, M, 0.5)
    e64 = LearnedWeightsEnsemble(metric="log_loss").fit(preds, y)
    e32 = LearnedWeightsEnsemble(metric="log_loss").fit(preds.astype(np.float32), y)
    assert e32.converged_
    assert e32.loss_ == pytest.approx(e64.loss_, rel=1e-4)
    assert np.count_nonzero(e64.weights_) > 64
    loop = sum(w * p for w, p in zip(e64.weights_, preds))
    np.testing.assert_allclose(e64.predict(preds), loop, rtol=1e-12)
    np.testing.assert_allclose(e32.predict(preds.astype(np.float32)), e32.predict(preds), rtol=1e-5)

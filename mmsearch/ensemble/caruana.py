"""Caruana et al. (2004) ensemble selection over every trial's validation predictions.

Forward stepwise selection with replacement: each step adds the model whose inclusion
makes the running average score best; after ``size`` steps the best prefix is kept and
weights = pick counts / picks.

This module is the selection logic only. Each step scores every candidate in one pass
over a metric-specific view of the pool (``_scorers``, ``_pool``: why and how), on a
small thread pool (``_threads``); prediction is the shared weighted ``blend``.
"""

from __future__ import annotations

import time

import numpy as np

from mmsearch import metrics as _metrics
from mmsearch.ensemble._pool import Pool
from mmsearch.ensemble._scorers import make_scorer
from mmsearch.ensemble._threads import Runner, default_threads
from mmsearch.ensemble.blending import blend

__all__ = ["CaruanaEnsemble"]

# Scores are compared after rounding to this many decimals, so float noise in the last
# bits can't break the deterministic tie rules.
_DECIMALS = 12


class CaruanaEnsemble:
    """Greedy forward selection with replacement (Caruana et al. 2004).

    Parameters
    ----------
    metric : name in ``mmsearch.metrics.METRICS`` to optimise on the given predictions.
    size : number of greedy steps (after the ``sorted_init`` initial models).
    sorted_init : start from this many best single models (distinct), then go greedy.
    bagging : if > 0, repeat the selection on that many random subsets of the model
        pool (``bag_fraction`` of the models each) and average the weights.
    tie_metric : breaks ties in the primary score (after "prefer models already in the
        ensemble"); default "log_loss" for classification metrics, "rmse" for regression.
    seed : seeds the bagging subsets.
    n_threads : worker threads for the scoring passes (default: available cores, <= 8).

    Fitted attributes
    -----------------
    weights_ : float [M], sums to 1 (counts / picks of the kept prefix).
    indices_ : int [sorted_init + size], model picked at each step (init models first).
    trajectory_ : float [sorted_init + size], ensemble score after each pick.
    best_size_ : number of picks kept (the best prefix; the earliest on equal scores,
        never shorter than the sorted initialisation).
    With bagging > 0, ``indices_``/``trajectory_``/``best_size_`` gain a leading bag
    axis and ``bag_models_`` [bagging, n_sub] holds each bag's model subset.
    """

    def __init__(
        self,
        *,
        metric: str,
        size: int = 50,
        sorted_init: int = 0,
        bagging: int = 0,
        bag_fraction: float = 0.5,
        tie_metric: str | None = None,
        seed: int = 0,
        n_threads: int | None = None,
    ):
        self.metric = metric
        self.size = size
        self.sorted_init = sorted_init
        self.bagging = bagging
        self.bag_fraction = bag_fraction
        self.tie_metric = tie_metric
        self.seed = seed
        self.n_threads = n_threads

    # ------------------------------------------------------------------ checks
    def _check(self, preds, y):
        task = _metrics.metric_task(self.metric)  # raises on unknown metric
        tie = self.tie_metric or ("rmse" if task == "regression" else "log_loss")
        if _metrics.metric_task(tie) != task:
            raise ValueError(f"tie_metric {tie!r} does not fit metric {self.metric!r}")
        if self.size < 0 or self.sorted_init < 0 or self.bagging < 0:
            raise ValueError("size, sorted_init and bagging must be >= 0")
        if self.size + self.sorted_init < 1:
            raise ValueError("need size + sorted_init >= 1")
        if not 0.0 < self.bag_fraction <= 1.0:
            raise ValueError("bag_fraction must be in (0, 1]")
        preds = np.asarray(preds)
        if preds.dtype.kind != "f":
            preds = preds.astype(np.float64)
        want = 3 if task == "classification" else 2
        if preds.ndim != want:
            raise ValueError(
                f"metric {self.metric!r} needs preds of shape "
                f"{'[M, N, C] probabilities' if want == 3 else '[M, N]'}, got {preds.shape}"
            )
        M, N = preds.shape[:2]
        if M < 1 or N < 1:
            raise ValueError(f"empty prediction pool {preds.shape}")
        if task == "classification":
            y = _metrics._labels(y)
            if y.size and (y.min() < 0 or y.max() >= preds.shape[2]):
                raise ValueError(f"y has class ids outside [0, {preds.shape[2]})")
        else:
            y = np.asarray(y, dtype=np.float64)
        if y.shape != (N,):
            raise ValueError(f"y must have shape ({N},), got {y.shape}")
        return preds, y, task, tie

    # ------------------------------------------------------------------ fit
    def fit(self, preds, y) -> "CaruanaEnsemble":
        preds, y, task, tie = self._check(preds, y)
        M = preds.shape[0]
        runner = Runner(self.n_threads or default_threads())
        t0 = time.perf_counter()
        try:
            pool = Pool(preds, y, task, runner)
            primary = make_scorer(self.metric, pool)
            tie_scorer = primary if tie == self.metric else make_scorer(tie, pool, primary=False)
            t1 = time.perf_counter()
            sign = 1.0 if _metrics.higher_is_better(self.metric) else -1.0
            tie_sign = 1.0 if _metrics.higher_is_better(tie) else -1.0
            select = lambda cols: self._select(pool, primary, tie_scorer, sign, tie_sign, cols)  # noqa: E731
            if self.bagging == 0:
                idx, traj, best = select(np.arange(M))
                self.indices_, self.trajectory_, self.best_size_ = idx, traj, best
                self.weights_ = np.bincount(idx[:best], minlength=M) / best
            else:
                rng = np.random.default_rng(self.seed)
                n_sub = max(1, int(round(self.bag_fraction * M)))
                bags, runs = [], []
                for _ in range(self.bagging):
                    cols = np.sort(rng.choice(M, size=n_sub, replace=False))
                    bags.append(cols)
                    runs.append(select(cols))
                self.bag_models_ = np.stack(bags)
                self.indices_ = np.stack([r[0] for r in runs])
                self.trajectory_ = np.stack([r[1] for r in runs])
                self.best_size_ = np.array([r[2] for r in runs])
                w = [np.bincount(i[:b], minlength=M) / b for i, _, b in runs]
                self.weights_ = np.mean(w, axis=0)
        finally:
            runner.close()
        # prepare = building the transposed views; select = the greedy steps
        self.timings_ = {"prepare_s": t1 - t0, "select_s": time.perf_counter() - t1}
        self.n_models_ = M
        return self

    def _select(self, pool, primary, tie_scorer, sign, tie_sign, cols):
        """One selection run over candidate models `cols` (sorted global indices)."""
        shape = (pool.N, pool.C) if pool.task == "classification" else (pool.N,)
        S = np.zeros(shape)
        counts = np.zeros(pool.M, dtype=np.int64)
        picks: list[int] = []
        traj: list[float] = []
        n_init = min(self.sorted_init, len(cols))

        def gain(x, s):
            g = s * np.asarray(x, dtype=np.float64)
            return np.round(np.where(np.isnan(g), -np.inf, g), _DECIMALS)

        def best_of(cand, k, prefer_in):
            """Primary score, then models already in, then tie metric, then lowest index."""
            sc = primary(S, k, cand)
            g = gain(sc, sign)
            keep = g == g.max()
            tied, tied_sc = cand[keep], sc[keep]
            if len(tied) > 1 and prefer_in:
                inside = counts[tied] > 0
                if inside.any():
                    tied, tied_sc = tied[inside], tied_sc[inside]
            if len(tied) > 1:
                tg = gain(tie_scorer(S, k, tied), tie_sign)
                keep = tg == tg.max()
                tied, tied_sc = tied[keep], tied_sc[keep]
            return int(tied[0]), float(tied_sc[0])  # cand is sorted: lowest index

        def add(m, s):
            nonlocal S
            S += pool.contribution(m)
            counts[m] += 1
            picks.append(m)
            traj.append(s)

        if n_init:
            # Sorted initialisation: rank single models with the same tie rules.
            g1 = gain(primary(S, 0, cols), sign)
            tg1 = gain(tie_scorer(S, 0, cols), tie_sign)
            order = np.lexsort((cols, -tg1, -g1))[:n_init]
            for i, m in enumerate(cols[order]):
                add(int(m), float(primary(S, i, np.array([m]))[0]))
        for _ in range(self.size):
            m, s = best_of(cols, len(picks), prefer_in=True)
            add(m, s)

        traj_arr = np.asarray(traj)
        lo = max(1, n_init)  # never drop below the sorted initialisation
        g = gain(traj_arr[lo - 1 :], sign)
        best = lo + int(np.argmax(g))  # argmax = earliest of equal (rounded) scores
        return np.asarray(picks, dtype=np.int64), traj_arr, best

    # ------------------------------------------------------------------ predict
    def predict(self, preds) -> np.ndarray:
        """Weighted average of the M models' predictions (same layout as in fit)."""
        if not hasattr(self, "weights_"):
            raise RuntimeError("CaruanaEnsemble is not fitted")
        return blend(self.weights_, preds)

"""Caruana et al. (2004) ensemble selection over every trial's validation predictions.

Forward stepwise selection with replacement: each step adds the model whose inclusion
makes the running average score best; after ``size`` steps the best prefix is kept and
weights = pick counts / picks.

Why this file is longer than the algorithm: the pool can be ~1000 models x 100k rows x
10 classes (4 GB float32), and a naive step re-averages and re-scores every candidate
from scratch. Here each step costs at most one pass over a metric-specific, pre-laid-out
view of the pool:

* the running *sum* ``S`` of picked predictions is kept, so a candidate's ensemble is
  (S + P_m) / (k + 1) and never needs re-averaging;
* the views are transposed to put the model axis last ([rows, ..., M]) so every
  candidate is scored at once by contiguous elementwise numpy ops, chunked over rows
  (bounded temporaries) and spread over a few threads (numpy releases the GIL);
* accuracy only needs, per row, the comparisons "true class vs class c". The pool is
  stored as D[r, c, m] = P_m[r, y_r] - P_m[r, c] with per-(row, class) min/max over all
  models. A (row, c) pair whose sign can't depend on the candidate (|S_y - S_c| beyond
  those bounds) is decided once for all candidates; only undecided pairs are gathered
  and compared. Early steps look at many pairs, later steps (confident running
  ensemble) very few. The pruning is exact, not a heuristic: the sign of a float sum
  is exact in IEEE arithmetic, so "decided" pairs are exactly the ones a dense
  evaluation would score the same for every candidate.
* log_loss only needs the true-class column ([N, M] instead of [N, C, M]);
* regression metrics only need residual sums of squares / absolute values;
* roc_auc has no such shortcut (a sort per candidate and step): it is the slow metric.

Memory: accuracy keeps one transposed copy of the pool (float32 for float32/float16
input, float64 only for float64 input); log_loss and regression keep [N, M].

Selection semantics match ``mmsearch.metrics`` applied to the averaged predictions
(the tests compare against a straightforward reference loop).
"""

from __future__ import annotations

import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from mmsearch import metrics as _metrics

__all__ = ["CaruanaEnsemble"]

# Elements per temporary array per thread (~4 MB in float32): big enough to amortise
# Python overhead, small enough to stay cache-friendly and memory-bounded.
_CHUNK_ELEMS = 1 << 20
# Scores are compared after rounding to this many decimals, so float noise in the last
# bits can't break the deterministic tie rules.
_DECIMALS = 12


def _default_threads() -> int:
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS / Windows
        n = os.cpu_count() or 1
    return max(1, min(n, 8))


class _Runner:
    """Run independent chunk jobs on a small thread pool (inline when single-threaded)."""

    def __init__(self, n_threads: int):
        self.n = n_threads
        self.pool = ThreadPoolExecutor(n_threads) if n_threads > 1 else None
        self._local = threading.local()

    def scratch(self, shape, dtype) -> np.ndarray:
        """Per-thread reusable buffer: avoids allocating (and page-faulting) a fresh
        multi-MB temporary in every chunk of every step."""
        n = int(np.prod(shape))
        buf = getattr(self._local, "buf", None)
        if buf is None or buf.dtype != dtype or buf.size < n:
            buf = self._local.buf = np.empty(n, dtype)
        return buf[:n].reshape(shape)

    def map(self, fn, items):
        items = list(items)
        if self.pool is None or len(items) < 2:
            return [fn(it) for it in items]
        return list(self.pool.map(fn, items))

    def close(self):
        if self.pool is not None:
            self.pool.shutdown()


def _blocks(n: int, size: int):
    size = max(1, int(size))
    return [(a, min(a + size, n)) for a in range(0, n, size)]


# =========================================================================== prepared pool
class _Pool:
    """The model pool plus lazily built, metric-specific transposed views.

    Classification: preds [M, N, C], y int [N]. Regression: preds [M, N], y float [N].
    Never holds a float64 copy of a float32/float16 pool.
    """

    def __init__(self, preds: np.ndarray, y: np.ndarray, task: str, runner: _Runner):
        self.preds = preds
        self.y = y
        self.task = task
        self.runner = runner
        self.work = np.float64 if preds.dtype == np.float64 else np.float32
        self.M, self.N = preds.shape[:2]
        self.C = preds.shape[2] if task == "classification" else 0
        self.dt = self.lo = self.hi = self.tt = self.res = None
        self._row_sums: np.ndarray | None | bool = False  # False = not computed yet
        self._finite_checked = False

    # ------------------------------------------------------------ classification views
    def build_dt(self) -> None:
        """dt [N, C, M] = P_y - P_c per model and lo/hi [N, C] = its min/max over models.

        The true-class slot dt[r, y_r, :] (identically 0) stores P_y itself instead, so
        log_loss tie-breaks need no extra [N, M] array. Built in row blocks: a 2-D
        transposed copy, then in-place ops while the block is still in cache.
        """
        if self.dt is not None:
            return
        M, N, C, w, y = self.M, self.N, self.C, self.work, self.y
        dt = np.empty((N, C, M), w)
        lo = np.empty((N, C), w)
        hi = np.empty((N, C), w)
        rows = max(1, _CHUNK_ELEMS // (M * C))

        classes = np.arange(C)

        def job(blk):
            r0, r1 = blk
            buf = dt[r0:r1]
            buf.reshape(-1, M)[...] = self.preds[:, r0:r1, :].reshape(M, -1).T
            ar, yb = np.arange(r1 - r0), y[r0:r1]
            t = buf[ar, yb]  # [R, M] true-class probabilities
            np.subtract(t[:, None, :], buf, out=buf)
            np.min(buf, axis=2, out=lo[r0:r1])
            np.max(buf, axis=2, out=hi[r0:r1])
            # While the block is in cache: each single model's accuracy (the first greedy
            # step), with np.argmax's first-max rule (a tie with an earlier class loses).
            bad = buf < 0
            np.less_equal(buf, 0, out=bad, where=(classes < yb[:, None])[..., None])
            right = (r1 - r0) - np.count_nonzero(bad.any(axis=1), axis=0)
            buf[ar, yb] = t
            # a NaN/inf anywhere in the row reaches D = P_y - P_c and so lo/hi
            finite = bool(np.isfinite(lo[r0:r1]).all() and np.isfinite(hi[r0:r1]).all())
            return finite, right

        out = self.runner.map(job, _blocks(N, rows))
        if not all(f for f, _ in out):
            raise ValueError("preds contain NaN or infinite values")
        self.single_right = sum(r for _, r in out)  # [M] rows each model gets right
        self.dt, self.lo, self.hi = dt, lo, hi
        self._finite_checked = True

    def true_probs(self, sub=None) -> np.ndarray:
        """[N, M] (or [N, len(sub)]) probability each model gives the true class."""
        N, y = self.N, self.y
        ar = np.arange(N)
        if sub is not None and self.tt is None:
            # a few models (tie-breaks): gather from their contiguous [N, C] slabs
            return np.stack([self.preds[m][ar, y] for m in sub], axis=1).astype(self.work, copy=False)
        if self.tt is None:
            if self.dt is not None:
                self.tt = self.dt[ar, y]
            else:
                tt = np.empty((N, self.M), self.work)
                rows = max(1, _CHUNK_ELEMS // self.M)

                def job(blk):
                    r0, r1 = blk
                    tt[r0:r1] = self.preds[:, r0:r1][:, np.arange(r1 - r0), y[r0:r1]].T

                self.runner.map(job, _blocks(N, rows))
                self.tt = tt
        return self.tt if sub is None else self.tt[:, sub]

    def row_sums(self, sub=None) -> np.ndarray | None:
        """Per-row probability sums [N, width], or None when every row sums to 1.

        metrics.log_loss renormalises rows; that is linear in the pool, so a candidate
        ensemble's row sum is (sum_S + sum_m) / (k + 1). Computed with BLAS mat-vecs
        (a small-axis numpy sum over C would be ~10x slower)."""
        if sub is None and self._row_sums is not False:
            return self._row_sums
        models = None if sub is None else np.asarray(sub)
        width = self.M if sub is None else len(models)
        ones = np.ones(self.C, self.work)
        per = max(1, _CHUNK_ELEMS // (self.N * self.C))

        def sums(blk):
            a, b = blk
            chunk = self.preds[a:b] if models is None else self.preds[models[a:b]]
            return (chunk.astype(self.work, copy=False).reshape(-1, self.C) @ ones).reshape(b - a, self.N)

        # First pass only measures the deviation from 1 (no [N, M] array kept): rows
        # summing to 1 up to rounding, the usual case, need no renormalisation.
        dev = float(np.max(self.runner.map(lambda b: np.max(np.abs(sums(b) - 1.0)), _blocks(width, per))))
        if not np.isfinite(dev):  # np.max keeps NaN
            raise ValueError("preds contain NaN or infinite values")
        res = None
        if dev > (1e-13 if self.work == np.float64 else 1e-6):
            res = np.empty((self.N, width), self.work)

            def store(blk):
                res[:, blk[0] : blk[1]] = sums(blk).T

            self.runner.map(store, _blocks(width, per))
        if sub is None:
            self._row_sums = res
            self._finite_checked = True
        return res

    def check_finite(self) -> None:
        if self._finite_checked:
            return
        per = max(1, _CHUNK_ELEMS // int(np.prod(self.preds.shape[1:])))
        ok = self.runner.map(lambda b: bool(np.isfinite(self.preds[b[0] : b[1]]).all()), _blocks(self.M, per))
        if not all(ok):
            raise ValueError("preds contain NaN or infinite values")
        self._finite_checked = True

    # ------------------------------------------------------------ regression view
    def build_regression(self) -> None:
        """res [N, M] = P_m - y: the candidate ensemble's residual is (sum_S + res_m)/(k+1)."""
        if self.res is not None:
            return
        M, N, w = self.M, self.N, self.work
        res = np.empty((N, M), w)
        yw = self.y.astype(w)
        rows = max(1, _CHUNK_ELEMS // M)

        def job(blk):
            r0, r1 = blk
            np.subtract(self.preds[:, r0:r1].T, yw[r0:r1, None], out=res[r0:r1], casting="same_kind")
            return bool(np.isfinite(res[r0:r1]).all())

        if not all(self.runner.map(job, _blocks(N, rows))):
            raise ValueError("preds contain NaN or infinite values")
        self.res = res

    # ------------------------------------------------------------ running-sum contribution
    def contribution(self, m: int) -> np.ndarray:
        """What adding model m adds to the running sum S (float64)."""
        p = self.preds[m].astype(np.float64)
        return p - self.y if self.task == "regression" else p


# =========================================================================== scorers
# Each scorer returns, for candidates `cols` (None = all models), the metric of the
# ensemble (S + P_m) / (k + 1) where S is the float64 running sum of k picked models.


class _AccuracyScorer:
    """Candidate m gets row r right iff for every class c != y (S: running sum):
    (S_y + P_my) - (S_c + P_mc) = sd[c, r] + D[r, c, m] is > 0 (c < y: np.argmax takes
    the first maximum, so an exact tie loses) or >= 0 (c > y).

    Per-row bookkeeping arrays are class-major [C, N] so reductions over classes are
    elementwise numpy ops instead of slow reductions over a short last axis.
    """

    def __init__(self, pool: _Pool):
        pool.build_dt()
        self.p = pool
        self.lo = np.ascontiguousarray(pool.lo.T)  # [C, N]
        self.hi = np.ascontiguousarray(pool.hi.T)
        N, C = pool.N, pool.C
        self.sd = np.empty((C, N), pool.work)
        self.x = np.empty((C, N), pool.work)
        self.n_pairs = 0

    def __call__(self, S: np.ndarray, k: int, cols=None) -> np.ndarray:
        p, sd, x = self.p, self.sd, self.x
        N, M, y = p.N, p.M, p.y
        if k == 0 and not S.any():  # empty ensemble: single-model accuracies (from build)
            out = p.single_right / N
            return out if cols is None else out[cols]
        ar = np.arange(N)
        np.subtract(S[ar, y], S.T, out=sd, casting="same_kind")  # sd[c, r] = S_y - S_c
        # The sign of a float sum is exact, so these bounds decide pairs exactly:
        win = np.greater(np.add(sd, self.lo, out=x), 0)  # every candidate: y beats c
        lose = np.less(np.add(sd, self.hi, out=x), 0)  # every candidate: c beats y
        win[y, ar] = True
        lose[y, ar] = False
        row_lost = lose.any(axis=0)
        undecided = ~(win | lose)
        undecided &= ~row_lost
        n_und = np.count_nonzero(undecided, axis=0)
        self.n_pairs = int(n_und.sum())  # work done this call (profiling)
        m_out = M if cols is None else len(cols)
        active = np.flatnonzero(n_und)
        n_right_fixed = N - int(row_lost.sum()) - len(active)
        if len(active) == 0:
            return np.full(m_out, n_right_fixed / N)
        sub = cols if cols is not None and 4 * len(cols) < M else None
        width = M if sub is None else len(sub)

        # Group active rows by their number L of undecided pairs: each group is a dense
        # [rows, L, M] block whose "any pair lost" is an elementwise OR over L
        # (far cheaper than a segmented reduction over ragged rows).
        active = active[np.argsort(n_und[active], kind="stable")]
        edges = np.flatnonzero(np.diff(n_und[active])) + 1
        jobs = []
        for rows in np.split(active, edges):
            L = int(n_und[rows[0]])
            cls = np.nonzero(undecided[:, rows].T)[1].reshape(len(rows), L)
            per = max(1, _CHUNK_ELEMS // (L * width))
            jobs += [(rows[a:b], cls[a:b]) for a, b in _blocks(len(rows), per)]

        def job(rc):
            r, c = rc
            if sub is None:
                g = p.dt[r[:, None], c]  # [R, L, M]: contiguous M-vectors, cheap gather
            else:
                g = p.dt[r[:, None, None], c[:, :, None], sub]
            g += sd[c, r[:, None]][..., None]
            bad = g < 0
            lt = c < y[r][:, None]
            if lt.any():
                np.less_equal(g, 0, out=bad, where=lt[..., None])
            return np.count_nonzero(bad.any(axis=1), axis=0)

        lost = sum(p.runner.map(job, jobs))
        out = (n_right_fixed + len(active) - lost) / N
        if cols is not None and sub is None:
            out = out[cols]
        return np.asarray(out, dtype=np.float64)


class _LogLossScorer:
    def __init__(self, pool: _Pool, primary: bool):
        self.p = pool
        if primary:  # scored on every model each step: build the [N, M] views now
            pool.row_sums()
            pool.true_probs()

    def __call__(self, S: np.ndarray, k: int, cols=None) -> np.ndarray:
        p = self.p
        N, y, w = p.N, p.y, p.work
        sub = cols if cols is not None and 4 * len(cols) < p.M else None
        tt = p.true_probs(sub)
        rt = p.row_sums(sub)
        st = S[np.arange(N), y].astype(w)
        sr = S.sum(axis=1).astype(w) if rt is not None else None
        # Work with the candidate's true-class *sum* x = S_y + P_y = (k + 1) * p:
        # clip(p, eps, 1) = clip(x, eps (k+1), k+1) / (k+1), and the 1 / (k+1) factor
        # cancels against the row sum or becomes a constant -log(k + 1): one pass fewer.
        lo_clip, hi_clip = w(_metrics.LOG_LOSS_EPS * (k + 1)), w(k + 1)
        rows = max(1, _CHUNK_ELEMS // tt.shape[1])

        def job(blk):
            r0, r1 = blk
            x = np.add(tt[r0:r1], st[r0:r1, None], out=p.runner.scratch((r1 - r0, tt.shape[1]), w))
            np.clip(x, lo_clip, hi_clip, out=x)
            if rt is not None:
                x /= rt[r0:r1] + sr[r0:r1, None]  # renormalise by the row sum
            np.log(x, out=x)
            return _column_sums(x)

        total = sum(p.runner.map(job, _blocks(N, rows)))
        out = -total / N + (0.0 if rt is not None else np.log(k + 1))
        if cols is not None and sub is None:
            out = out[cols]
        return out


class _RocAucScorer:
    """AUC needs a sort per candidate (O(M N log N) per step: the slow metric here).
    Each class column is pre-split into positive and negative rows ([M, P], [M, Q],
    contiguous) so a candidate costs two SIMD sorts and two binary searches."""

    def __init__(self, pool: _Pool):
        self.p = pool
        pool.check_finite()
        y = pool.y
        if pool.C == 2:
            classes = [1]
        else:  # macro one-vs-rest over classes that have positives and negatives
            classes = [c for c in range(pool.C) if 0 < np.sum(y == c) < pool.N]
        self.split = []
        for c in classes:
            pos = np.flatnonzero(y == c)
            neg = np.flatnonzero(y != c)
            self.split.append(
                (
                    c,
                    pos,
                    neg,
                    np.ascontiguousarray(pool.preds[:, pos, c], dtype=pool.work),
                    np.ascontiguousarray(pool.preds[:, neg, c], dtype=pool.work),
                )
            )

    def __call__(self, S: np.ndarray, k: int, cols=None) -> np.ndarray:
        p = self.p
        idx = np.arange(p.M) if cols is None else np.asarray(cols)
        if not self.split:
            return np.full(len(idx), np.nan)
        shifts = [(S[pos, c].astype(p.work), S[neg, c].astype(p.work)) for c, pos, neg, _, _ in self.split]
        per = max(1, min(64, len(idx) // (4 * p.runner.n) or 1))  # several jobs per thread

        def job(blk):
            a, b = blk
            total = np.zeros(b - a)
            for (c, pos, neg, xp, xn), (sp, sn) in zip(self.split, shifts):
                total += _metrics.auc_split(xp[idx[a:b]] + sp, xn[idx[a:b]] + sn)
            return total / len(self.split)

        return np.concatenate(p.runner.map(job, _blocks(len(idx), per)))


class _RegressionScorer:
    def __init__(self, pool: _Pool, metric: str):
        pool.build_regression()
        self.p = pool
        self.metric = metric
        self.sst = float(np.sum((pool.y - pool.y.mean()) ** 2))

    def __call__(self, S: np.ndarray, k: int, cols=None) -> np.ndarray:
        p = self.p
        N, w = p.N, p.work
        sub = cols if cols is not None and 4 * len(cols) < p.M else None
        res = p.res if sub is None else p.res[:, sub]
        s = S.astype(w)
        rows = max(1, _CHUNK_ELEMS // res.shape[1])
        absolute = self.metric == "mae"

        def job(blk):
            r0, r1 = blk
            # (k+1) * candidate residual
            x = np.add(res[r0:r1], s[r0:r1, None], out=p.runner.scratch((r1 - r0, res.shape[1]), w))
            if absolute:
                np.abs(x, out=x)
            else:
                np.square(x, out=x)
            return _column_sums(x)

        total = sum(p.runner.map(job, _blocks(N, rows))) / float(k + 1) ** (1 if absolute else 2)
        if self.metric == "mae":
            out = total / N
        elif self.metric == "rmse":
            out = np.sqrt(total / N)
        elif self.sst == 0.0:  # r2 with constant target: sklearn's force_finite rule
            out = np.where(total == 0.0, 1.0, 0.0)
        else:
            out = 1.0 - total / self.sst
        if cols is not None and sub is None:
            out = out[cols]
        return out


def _column_sums(x: np.ndarray) -> np.ndarray:
    """float64 column sums of a [R, W] block. float32 blocks are first summed in groups
    of 16 rows in float32 (3x cheaper than converting everything to float64; the
    16-term partial sums add error comparable to the float32 inputs' own)."""
    if x.dtype == np.float64 or x.shape[0] < 32:
        return x.sum(axis=0, dtype=np.float64)
    g = x.shape[0] // 16 * 16
    part = x[:g].reshape(-1, 16, x.shape[1]).sum(axis=1)
    return part.sum(axis=0, dtype=np.float64) + x[g:].sum(axis=0, dtype=np.float64)


def _make_scorer(metric: str, pool: _Pool, primary: bool = True):
    if metric == "accuracy":
        return _AccuracyScorer(pool)
    if metric == "log_loss":
        return _LogLossScorer(pool, primary)
    if metric == "roc_auc":
        return _RocAucScorer(pool)
    return _RegressionScorer(pool, metric)


# =========================================================================== estimator
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
        runner = _Runner(self.n_threads or _default_threads())
        t0 = time.perf_counter()
        try:
            pool = _Pool(preds, y, task, runner)
            primary = _make_scorer(self.metric, pool)
            tie_scorer = primary if tie == self.metric else _make_scorer(tie, pool, primary=False)
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
        return _weighted_average(self.weights_, preds)


def _weighted_average(weights: np.ndarray, preds) -> np.ndarray:
    """sum_m w_m P_m in float64, touching only models with non-zero weight."""
    preds = np.asarray(preds)
    if preds.shape[0] != len(weights):
        raise ValueError(f"expected predictions of {len(weights)} models, got {preds.shape[0]}")
    nz = np.flatnonzero(weights)
    if len(nz) > 64 and preds.dtype in (np.float32, np.float64):
        # dense weights (learned ensembles): one BLAS mat-vec in the pool's dtype
        # rather than M passes, and no float64 copy of a float32 pool
        flat = preds.reshape(preds.shape[0], -1)
        return (weights.astype(preds.dtype) @ flat).astype(np.float64).reshape(preds.shape[1:])
    out = np.zeros(preds.shape[1:])
    for m in nz:
        out += weights[m] * preds[m]
    return out

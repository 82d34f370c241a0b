"""Metric-specific fast scorers for Caruana selection: every candidate scored in one pass.

Why not the plain algorithm: the pool can be ~1000 models x 100k rows x
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

import numpy as np

from mmsearch import metrics as _metrics
from mmsearch.ensemble._pool import Pool
from mmsearch.ensemble._threads import CHUNK_ELEMS, blocks

# Each scorer returns, for candidates `cols` (None = all models), the metric of the
# ensemble (S + P_m) / (k + 1) where S is the float64 running sum of k picked models.


class AccuracyScorer:
    """Candidate m gets row r right iff for every class c != y (S: running sum):
    (S_y + P_my) - (S_c + P_mc) = sd[c, r] + D[r, c, m] is > 0 (c < y: np.argmax takes
    the first maximum, so an exact tie loses) or >= 0 (c > y).

    Per-row bookkeeping arrays are class-major [C, N] so reductions over classes are
    elementwise numpy ops instead of slow reductions over a short last axis.
    """

    def __init__(self, pool: Pool):
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
            per = max(1, CHUNK_ELEMS // (L * width))
            jobs += [(rows[a:b], cls[a:b]) for a, b in blocks(len(rows), per)]

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


class LogLossScorer:
    def __init__(self, pool: Pool, primary: bool):
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
        rows = max(1, CHUNK_ELEMS // tt.shape[1])

        def job(blk):
            r0, r1 = blk
            x = np.add(tt[r0:r1], st[r0:r1, None], out=p.runner.scratch((r1 - r0, tt.shape[1]), w))
            np.clip(x, lo_clip, hi_clip, out=x)
            if rt is not None:
                x /= rt[r0:r1] + sr[r0:r1, None]  # renormalise by the row sum
            np.log(x, out=x)
            return column_sums(x)

        total = sum(p.runner.map(job, blocks(N, rows)))
        out = -total / N + (0.0 if rt is not None else np.log(k + 1))
        if cols is not None and sub is None:
            out = out[cols]
        return out


class RocAucScorer:
    """AUC needs a sort per candidate (O(M N log N) per step: the slow metric here).
    Each class column is pre-split into positive and negative rows ([M, P], [M, Q],
    contiguous) so a candidate costs two SIMD sorts and two binary searches."""

    def __init__(self, pool: Pool):
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

        return np.concatenate(p.runner.map(job, blocks(len(idx), per)))


class RegressionScorer:
    def __init__(self, pool: Pool, metric: str):
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
        rows = max(1, CHUNK_ELEMS // res.shape[1])
        absolute = self.metric == "mae"

        def job(blk):
            r0, r1 = blk
            # (k+1) * candidate residual
            x = np.add(res[r0:r1], s[r0:r1, None], out=p.runner.scratch((r1 - r0, res.shape[1]), w))
            if absolute:
                np.abs(x, out=x)
            else:
                np.square(x, out=x)
            return column_sums(x)

        total = sum(p.runner.map(job, blocks(N, rows))) / float(k + 1) ** (1 if absolute else 2)
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


def column_sums(x: np.ndarray) -> np.ndarray:
    """float64 column sums of a [R, W] block. float32 blocks are first summed in groups
    of 16 rows in float32 (3x cheaper than converting everything to float64; the
    16-term partial sums add error comparable to the float32 inputs' own)."""
    if x.dtype == np.float64 or x.shape[0] < 32:
        return x.sum(axis=0, dtype=np.float64)
    g = x.shape[0] // 16 * 16
    part = x[:g].reshape(-1, 16, x.shape[1]).sum(axis=1)
    return part.sum(axis=0, dtype=np.float64) + x[g:].sum(axis=0, dtype=np.float64)


def make_scorer(metric: str, pool: Pool, primary: bool = True):
    if metric == "accuracy":
        return AccuracyScorer(pool)
    if metric == "log_loss":
        return LogLossScorer(pool, primary)
    if metric == "roc_auc":
        return RocAucScorer(pool)
    return RegressionScorer(pool, metric)

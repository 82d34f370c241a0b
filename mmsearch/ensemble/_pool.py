"""The Caruana model pool plus its lazily built, metric-specific transposed views.

Why views: see ``mmsearch.ensemble._scorers``, which scores candidates on them.
"""

from __future__ import annotations

import numpy as np

from mmsearch.ensemble._threads import CHUNK_ELEMS, Runner, blocks


class Pool:
    """The model pool plus lazily built, metric-specific transposed views.

    Classification: preds [M, N, C], y int [N]. Regression: preds [M, N], y float [N].
    Never holds a float64 copy of a float32/float16 pool.
    """

    def __init__(self, preds: np.ndarray, y: np.ndarray, task: str, runner: Runner):
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
        rows = max(1, CHUNK_ELEMS // (M * C))

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

        out = self.runner.map(job, blocks(N, rows))
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
                rows = max(1, CHUNK_ELEMS // self.M)

                def job(blk):
                    r0, r1 = blk
                    tt[r0:r1] = self.preds[:, r0:r1][:, np.arange(r1 - r0), y[r0:r1]].T

                self.runner.map(job, blocks(N, rows))
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
        per = max(1, CHUNK_ELEMS // (self.N * self.C))

        def sums(blk):
            a, b = blk
            chunk = self.preds[a:b] if models is None else self.preds[models[a:b]]
            return (chunk.astype(self.work, copy=False).reshape(-1, self.C) @ ones).reshape(b - a, self.N)

        # First pass only measures the deviation from 1 (no [N, M] array kept): rows
        # summing to 1 up to rounding, the usual case, need no renormalisation.
        dev = float(np.max(self.runner.map(lambda b: np.max(np.abs(sums(b) - 1.0)), blocks(width, per))))
        if not np.isfinite(dev):  # np.max keeps NaN
            raise ValueError("preds contain NaN or infinite values")
        res = None
        if dev > (1e-13 if self.work == np.float64 else 1e-6):
            res = np.empty((self.N, width), self.work)

            def store(blk):
                res[:, blk[0] : blk[1]] = sums(blk).T

            self.runner.map(store, blocks(width, per))
        if sub is None:
            self._row_sums = res
            self._finite_checked = True
        return res

    def check_finite(self) -> None:
        if self._finite_checked:
            return
        per = max(1, CHUNK_ELEMS // int(np.prod(self.preds.shape[1:])))
        ok = self.runner.map(lambda b: bool(np.isfinite(self.preds[b[0] : b[1]]).all()), blocks(self.M, per))
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
        rows = max(1, CHUNK_ELEMS // M)

        def job(blk):
            r0, r1 = blk
            np.subtract(self.preds[:, r0:r1].T, yw[r0:r1, None], out=res[r0:r1], casting="same_kind")
            return bool(np.isfinite(res[r0:r1]).all())

        if not all(self.runner.map(job, blocks(N, rows))):
            raise ValueError("preds contain NaN or infinite values")
        self.res = res

    # ------------------------------------------------------------ running-sum contribution
    def contribution(self, m: int) -> np.ndarray:
        """What adding model m adds to the running sum S (float64)."""
        p = self.preds[m].astype(np.float64)
        return p - self.y if self.task == "regression" else p

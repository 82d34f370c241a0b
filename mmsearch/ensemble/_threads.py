"""The small thread pool the Caruana scorers spread their row/model chunks over.

numpy releases the GIL in its elementwise kernels, so threads (not processes) are enough and
share the pool's arrays without copies.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np

# Elements per temporary array per thread (~4 MB in float32): big enough to amortise
# Python overhead, small enough to stay cache-friendly and memory-bounded.
CHUNK_ELEMS = 1 << 20


def default_threads() -> int:
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS / Windows
        n = os.cpu_count() or 1
    return max(1, min(n, 8))


class Runner:
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


def blocks(n: int, size: int):
    size = max(1, int(size))
    return [(a, min(a + size, n)) for a in range(0, n, size)]


"""The frozen towers' feature cache on the full cloth table (issue 15): how long the one build takes,
its peak memory (RSS), and that trials reading it neither rebuild it nor grow in memory.

Prepares cloth (23,486 rows, label `Recommended IND`), builds the MiniLM cache of every row once
(model.finetune: frozen), then trains --trials short frozen trials that read it, recording the
process's peak RSS after each step (the cache is memory-mapped: reading it must not copy it).

    .venv/bin/python benchmarks/bench_frozen_cache.py [--trials 3] [--threads 2]

Writes benchmarks/results/frozen_cache.json.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import tempfile
import time
from pathlib import Path

from _common import environment
from bench_tricks import BASELINE, RESULTS

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    import torch

    from mmsearch import datasets
    from mmsearch.config import TrialConfig
    from mmsearch.data import feature_cache
    from mmsearch.data.prepare import prepare
    from mmsearch.models.model import build_model
    from mmsearch.train.run import run_local

    torch.set_num_threads(args.threads)
    work = Path(tempfile.mkdtemp(prefix="bench-frozen-cache-"))
    out = {"benchmark": "frozen feature cache on the full cloth table", "threads": args.threads}
    try:
        table = datasets.load("cloth", label="Recommended IND")
        t0 = time.perf_counter()
        data = prepare(str(table.path), table.label, work / "data", problem_type=table.problem_type, seed=0)
        out["rows"], out["prepare_s"] = len(data.table), round(time.perf_counter() - t0, 1)
        trial = {**BASELINE, "model.finetune": "frozen", "model.max_text_len": 64, "optim.lr": 3e-3,
                 "train.epochs": 1, "train.max_steps_per_epoch": 20}
        model = build_model(TrialConfig.from_flat(trial), data)
        out["rss_before_build_mb"] = round(peak_rss_mb())
        t0 = time.perf_counter()
        arrays, _ = feature_cache.encodings(model, data, batch_size=128, device=torch.device("cpu"))
        out["build_s"] = round(time.perf_counter() - t0, 1)
        out["rss_after_build_mb"] = round(peak_rss_mb())
        out["cache_mb"] = round(sum(a.nbytes for a in arrays.values()) / 2**20, 1)
        del model
        out["trials"] = []
        for i in range(args.trials):
            t0 = time.perf_counter()
            final = run_local({**trial, "train.seed": i}, data.dir, work / f"t{i}")
            out["trials"].append({"wall_s": round(time.perf_counter() - t0, 1), "peak_rss_mb": round(peak_rss_mb()),
                                  "holdout_roc_auc": round(final["holdout_roc_auc"], 4)})
            print(out["trials"][-1], flush=True)
        out["cache_dirs"] = sorted(p.name for p in (data.dir / "features").iterdir() if p.is_dir())
    finally:
        shutil.rmtree(work, ignore_errors=True)
    out.update(environment())
    (RESULTS / "frozen_cache.json").write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps({k: v for k, v in out.items() if k not in ("machine", "versions")}, indent=1))


if __name__ == "__main__":
    main()

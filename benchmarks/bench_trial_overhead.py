"""Per-trial overhead of running under `mmsearch search` (Ray Tune, Ray Train) vs in-process.

The same trial config (tiny random backbones on a synthetic table, ~45 s on 2 cores) is trained
K times (--trials, default 3), side by side in one run:

1. in-process: K consecutive runs of the training loop in this process (torch and mmsearch
   imported; the first run imports the backbones' libraries, timm and transformers, inside);
2. under `mmsearch search` with the default runner: one search of K trials (grid of one point
   repeated, FIFO); one-worker trials train in their Tune trial process, and Tune reuses that
   process for the next trial;
3. under `mmsearch search --runner ray-train`: one trial through a Ray Train TorchTrainer (one
   worker), for comparison;
4. once in a fresh Python process, everything included, as `mmsearch train` runs it.

The search's wall time is Tuner.fit(): trial process start, imports, Tune's bookkeeping and
teardown included; ray.init, once per search, is reported separately. Ratio = search wall /
in-process wall for the same number of trials. Target (issue 3): <= 1.10.
Writes benchmarks/results/trial_overhead.json.

    .venv/bin/python benchmarks/bench_trial_overhead.py [--rows 4000] [--epochs 8] [--trials 3]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

TINY = {
    "model.image": "timm", "encoder.timm.model_name": "test_efficientnet", "encoder.timm.pretrained": False,
    "model.text": "tiny_text", "model.tabular": "ft_transformer", "encoder.ft_transformer.n_blocks": 1,
    "encoder.ft_transformer.d_block": 32, "encoder.ft_transformer.attention_n_heads": 4,
    "model.image_size": 32, "model.max_text_len": 16, "optim.batch_size": 32, "optim.lr": 3e-3,
}

FRESH = """
import json, sys, time
t0 = time.perf_counter()
from mmsearch.train.context import LocalContext
from mmsearch.train.loop import train
train(json.loads(sys.argv[1]), sys.argv[2], LocalContext(sys.argv[3]))
print(json.dumps({"python_s": time.perf_counter() - t0}))
"""


def search(work: Path, table: Path, trial: dict, runner: str, trials: int) -> dict:
    """One search of `trials` copies of this trial: its Tuner.fit wall, Tune's trial times, ray.init."""
    import ray

    from mmsearch.search import experiment

    work.mkdir(parents=True, exist_ok=True)
    space = work / "space.yaml"
    space.write_text(yaml.safe_dump({"fixed": trial}))
    settings = experiment.Settings(searcher="grid", scheduler="fifo", num_samples=trials, max_concurrent=1, runner=runner)
    exp = experiment.create(table, "label", space, work / "exp", settings)
    t0 = time.perf_counter()
    experiment.init_ray(settings, None)
    ray_init = time.perf_counter() - t0
    t1 = time.perf_counter()
    results = experiment.build_tuner(exp, settings, experiment.SearchSpace.load(space)).fit()
    wall = time.perf_counter() - t1
    ray.shutdown()
    print(f"search ({runner}, {trials} trials): Tuner.fit {wall:.1f} s, ray.init {ray_init:.1f} s", flush=True)
    return {"trials": trials, "tuner_fit_s": round(wall, 2), "ray_init_s": round(ray_init, 2),
            "tune_trial_times_s": [round(r.metrics["time_total_s"], 2) for r in results]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=4000)
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--trials", type=int, default=3, help="trials per search (and in-process runs)")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "trial_overhead.json"))
    args = ap.parse_args()

    import ray
    import torch

    import mmsearch
    from mmsearch.data.prepare import prepare
    from mmsearch.data.synthetic import make_synthetic
    from mmsearch.train.context import LocalContext
    from mmsearch.train.loop import train

    work = Path(tempfile.mkdtemp(prefix="mmsearch-bench-"))
    table = make_synthetic(work / "table", n=args.rows, seed=0)
    trial = {**TINY, "train.epochs": args.epochs}
    data = prepare(table, "label", work / "inproc_data")

    inproc = []
    for i in range(args.trials):
        t0 = time.perf_counter()
        train(trial, data.dir, LocalContext(work / f"inproc{i}"))
        inproc.append(time.perf_counter() - t0)
        print(f"in-process run {i + 1}: {inproc[-1]:.1f} s", flush=True)

    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", FRESH, json.dumps(trial), str(data.dir), str(work / "fresh")], check=True,
                   stdout=subprocess.DEVNULL)
    fresh = time.perf_counter() - t0
    print(f"in a fresh process: {fresh:.1f} s", flush=True)

    auto = search(work / "auto", table, trial, "auto", args.trials)
    train_run = search(work / "ray-train", table, trial, "ray-train", 1)

    out = {
        "benchmark": "per-trial overhead, mmsearch search vs in-process",
        "rows": args.rows, "epochs": args.epochs, "trials": args.trials,
        "inprocess_runs_s": [round(t, 2) for t in inproc],
        "fresh_process_s": round(fresh, 2),
        "search_auto": auto,
        "search_ray_train": train_run,
        "ratio": round(auto["tuner_fit_s"] / sum(inproc), 3),
        "ratio_single_trial_ray_train_vs_first_inprocess_run": round(train_run["tuner_fit_s"] / inproc[0], 3),
        "target_ratio": 1.10,
        "machine": {"cores": os.cpu_count(), "gpu": torch.cuda.is_available(), "platform": platform.platform()},
        "versions": {"python": sys.version.split()[0], "torch": torch.__version__, "ray": ray.__version__, "mmsearch": mmsearch.__version__},
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()

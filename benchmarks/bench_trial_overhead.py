"""Per-trial overhead of running under `mmsearch search` (Ray Tune + Ray Train) vs in-process.

The same trial config (tiny random backbones on a synthetic table, sized to ~60 s on 2 cores) is
trained, side by side in one run:

1. in this process, warm (imports done, the loop called directly): the strict baseline;
2. in a fresh Python process (imports included), as `mmsearch train` runs it;
3. as the only trial of a search (grid of one point, FIFO), with the default runner (a one-worker
   trial trains in its Tune trial process);
4. the same with --runner ray-train (a Ray Train TorchTrainer with one worker).

A search's trial time is Tune's time_total_s for the trial (its process start to its end);
ray.init and Tune's once-per-search setup are reported separately. Target (issue 3): trial /
in-process <= 1.10. Writes benchmarks/results/trial_overhead.json.

    .venv/bin/python benchmarks/bench_trial_overhead.py [--rows 4000] [--epochs 8]
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


def search_trial(work: Path, table: Path, trial: dict, runner: str) -> dict:
    """One search with this trial as its only trial; (search wall, Tune's trial time)."""
    import ray

    from mmsearch.search import experiment

    space = work / f"space-{runner}.yaml"
    space.write_text(yaml.safe_dump({"fixed": trial}))
    settings = experiment.Settings(searcher="grid", scheduler="fifo", num_samples=1, max_concurrent=1, runner=runner)
    exp = experiment.create(table, "label", space, work / f"exp-{runner}", settings)
    t0 = time.perf_counter()
    experiment.init_ray(settings, None)
    ray_init = time.perf_counter() - t0
    t1 = time.perf_counter()
    results = experiment.build_tuner(exp).fit()
    search = time.perf_counter() - t1
    trial_time = results[0].metrics["time_total_s"]
    ray.shutdown()
    print(f"search ({runner}): trial {trial_time:.1f} s, Tuner.fit {search:.1f} s, ray.init {ray_init:.1f} s", flush=True)
    return {"trial_s": round(trial_time, 2), "tuner_fit_s": round(search, 2), "ray_init_s": round(ray_init, 2)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=4000)
    ap.add_argument("--epochs", type=int, default=8)
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

    t0 = time.perf_counter()
    train(trial, data.dir, LocalContext(work / "inproc"))
    inproc = time.perf_counter() - t0
    print(f"in-process (warm): {inproc:.1f} s", flush=True)

    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", FRESH, json.dumps(trial), str(data.dir), str(work / "fresh")], check=True,
                   stdout=subprocess.DEVNULL)
    fresh = time.perf_counter() - t0
    print(f"in a fresh process: {fresh:.1f} s", flush=True)

    runs = {runner: search_trial(work, table, trial, runner) for runner in ("auto", "ray-train")}
    out = {
        "benchmark": "per-trial overhead, mmsearch search vs in-process",
        "rows": args.rows, "epochs": args.epochs,
        "inprocess_warm_s": round(inproc, 2),
        "fresh_process_s": round(fresh, 2),
        "search": runs,
        "ratio_vs_warm": {r: round(v["trial_s"] / inproc, 3) for r, v in runs.items()},
        "ratio_vs_fresh_process": {r: round(v["trial_s"] / fresh, 3) for r, v in runs.items()},
        "target_ratio": 1.10,
        "machine": {"cores": os.cpu_count(), "gpu": torch.cuda.is_available(), "platform": platform.platform()},
        "versions": {"python": sys.version.split()[0], "torch": torch.__version__, "ray": ray.__version__, "mmsearch": mmsearch.__version__},
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()

"""Wall time per epoch of one trial with 2 DDP workers vs 1 worker, packaged backbones.

The default model (lite0 image, minilm text, ft_transformer tabular, lf_mlp or early fusion) on
the synthetic table, trained through `run_ray` (a Ray Train TorchTrainer over gloo, 1 CPU per
worker) with the same effective batch: 1 worker steps with the whole batch, each of 2 workers
with half of it. Per epoch = the loop's `epoch_time_s` (training steps + the val / holdout
evaluation, which every rank runs in full), from the trial's history; the first epoch includes
warm-up and is reported apart. Before issue 9 the 2-worker runs crashed on their second step
(DDP: parameters that received no gradient). Writes benchmarks/results/ddp.json.

    .venv/bin/python benchmarks/bench_ddp.py [--rows 320] [--epochs 2] [--fusions lf_mlp early]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

TRIAL = {"model.image": "lite0", "model.text": "minilm", "model.tabular": "ft_transformer",
         "model.image_size": 64, "model.max_text_len": 32, "optim.batch_size": 32}


def one_run(trial: dict, data_dir: Path, out: Path, workers: int) -> dict:
    from mmsearch.layout import TrialRunDir
    from mmsearch.train.run import run_ray

    t0 = time.perf_counter()
    run_ray(trial, data_dir, out, workers=workers)
    wall = time.perf_counter() - t0
    epochs = [row["epoch_time_s"] for row in TrialRunDir(out).final.trainer()["history"]]
    return {"workers": workers, "wall_s": round(wall, 1), "epoch_time_s": [round(t, 2) for t in epochs],
            "epoch_time_after_first_s": round(sum(epochs[1:]) / max(1, len(epochs) - 1), 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=320)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--fusions", nargs="+", default=["lf_mlp", "early"])
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "ddp.json"))
    args = ap.parse_args()

    import ray
    import torch

    import mmsearch
    from mmsearch.data.prepare import prepare
    from mmsearch.data.synthetic import make_synthetic

    work = Path(tempfile.mkdtemp(prefix="bench-ddp-"))
    data = prepare(make_synthetic(work / "table", n=args.rows, missing=0.1, seed=0), "label", work / "data")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    runs = []
    try:
        for fusion in args.fusions:
            trial = {**TRIAL, "model.fusion": fusion, "train.epochs": args.epochs}
            for workers in (1, 2):
                runs.append({"fusion": fusion, **one_run(trial, data.dir, work / f"{fusion}-{workers}", workers)})
                print(json.dumps(runs[-1]), flush=True)
    finally:
        ray.shutdown()
    out = {
        "trial": TRIAL, "rows": args.rows, "train_rows": len(data.split["train"]), "epochs": args.epochs, "runs": runs,
        "machine": {"cores": os.cpu_count(), "gpu": torch.cuda.is_available(), "platform": platform.platform()},
        "versions": {"python": sys.version.split()[0], "torch": torch.__version__, "ray": ray.__version__, "mmsearch": mmsearch.__version__},
    }
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()

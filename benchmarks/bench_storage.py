"""What an experiment on object storage costs against one on a local folder (issue 14).

The same small search (a grid of N tiny trials on a synthetic table with images, one at a time,
`mmsearch search` in its own process) is run twice in one go, side by side: `--storage` a local
folder, then `--storage s3://...` on a local S3 server (moto's, started here: no network, so what
is measured is mmsearch's syncing and the S3 API's per-request cost, not a link's bandwidth).
Then, against each experiment: `status` on a machine that has no copy yet (cold: everything is
fetched) and again (warm: only changes), `ensemble`, and `export`.

    .venv/bin/python benchmarks/bench_storage.py [--trials 6] [--rows 480]

Writes benchmarks/results/storage.json (seconds, ratios s3 / local, files and bytes on the storage).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from _common import environment

ROOT = Path(__file__).resolve().parents[1]
TINY = {  # random tiny towers: what is measured is the storage, not training quality
    "model.image": "timm", "encoder.timm.model_name": "test_efficientnet", "encoder.timm.pretrained": False,
    "model.text": "tiny_text", "model.tabular": "ft_transformer", "encoder.ft_transformer.n_blocks": 1,
    "encoder.ft_transformer.d_block": 32, "encoder.ft_transformer.attention_n_heads": 4,
    "model.image_size": 32, "model.max_text_len": 16, "optim.batch_size": 16, "train.epochs": 3,
}


def _cli(*args: str, env: dict) -> float:
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "mmsearch.cli", *args], env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"mmsearch {' '.join(args)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return time.perf_counter() - start


def _run(storage: str, name: str, table: Path, space: Path, trials: int, work: Path, env: dict) -> dict:
    exp = f"{storage}/{name}"
    env = {**env, "MMSEARCH_CACHE": str(work / f"cache-{name}")}
    out = {"search_s": _cli("search", "--data", str(table), "--label", "label", "--space", str(space), "--name", name,
                            "--storage", storage, "--searcher", "grid", "--scheduler", "fifo", "--num-samples", "1", env=env)}
    shutil.rmtree(env["MMSEARCH_CACHE"], ignore_errors=True)  # another machine: no copy of the experiment yet
    out["status_cold_s"] = _cli("status", exp, env=env)
    out["status_warm_s"] = _cli("status", exp, env=env)
    out["ensemble_s"] = _cli("ensemble", exp, env=env)
    out["export_s"] = _cli("export", exp, "--out", str(work / f"bundle-{name}"), env=env)
    return out


def _stored(uri: str) -> dict:
    from mmsearch.layout.remote import RemoteDir

    files = RemoteDir(uri)._files()
    return {"files": len(files), "mb": round(sum(size for size, _ in files.values()) / 1e6, 1)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--trials", type=int, default=6)
    p.add_argument("--rows", type=int, default=480)
    args = p.parse_args()

    import boto3
    from moto.server import ThreadedMotoServer

    from mmsearch.data.synthetic import make_synthetic

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    aws = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench", "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_ENDPOINT_URL": f"http://{host}:{port}"}
    os.environ.update(aws)
    boto3.client("s3").create_bucket(Bucket="bench")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}

    work = Path(tempfile.mkdtemp(prefix="mmsearch-bench-storage-"))
    table = make_synthetic(work / "table", n=args.rows, seed=3)
    space = work / "space.yaml"
    lrs = [float(f"{3e-3 * 0.9**i:.3e}") for i in range(args.trials)]
    space.write_text(yaml.safe_dump({"fixed": TINY, "search": {"optim.lr": {"grid": lrs}}}))
    try:
        local = _run(str(work / "runs"), "local", table, space, args.trials, work, env)
        s3 = _run("s3://bench/runs", "s3", table, space, args.trials, work, env)
        result = {
            "trials": args.trials, "rows": args.rows, "epochs": TINY["train.epochs"],
            "local": local, "s3": s3,
            "ratio_s3_over_local": {k: round(s3[k] / local[k], 2) for k in local},
            "on_s3": _stored("s3://bench/runs/s3"),
        }
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)
    out = ROOT / "benchmarks" / "results" / "storage.json"
    out.write_text(json.dumps({**result, **environment()}, indent=1) + "\n")
    print(json.dumps(result, indent=1))
    print(f"written to {out}")


if __name__ == "__main__":
    main()

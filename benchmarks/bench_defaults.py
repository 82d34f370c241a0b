"""`mmsearch train` without --config, before and after the size-aware defaults (issue 15).

Per dataset, on one prepared split (split seed 0), in-process (run_local, as the CLI trains):
- before: the trial config's own defaults, which were the CLI's default trial (10 epochs, the
  backbone's 224 px, max_text_len 64, lr 1e-4 for every parameter, no tricks). Ten epochs of that
  on 2 cores take long, so only the first --before-epochs epochs are trained (the schedule still
  spans 10 epochs) and the wall time of 10 epochs is EXTRAPOLATED: the measured time + the
  remaining epochs at the mean time of the measured epochs after the first. Its holdout score is
  the one after those epochs, not after 10.
- after: mmsearch.defaults.for_table (what the CLI now chooses for the table), trained to the end
  (early stopping included): wall time, epochs trained, holdout score of the final weights.

    .venv/bin/python benchmarks/bench_defaults.py [--datasets emoji cloth] [--cloth-rows 1000] [--threads 1]

Each dataset's result goes into benchmarks/results/defaults.json as soon as it is done (another
process may run the other dataset at the same time: the file is updated under a lock), and the
table of all of them into benchmarks/results/defaults.md.
"""
from __future__ import annotations

import argparse
import fcntl
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

from _common import environment, sample_rows

os.environ.setdefault("HF_HUB_OFFLINE", "1")
RESULTS = Path(__file__).resolve().parent / "results"
SPLIT_SEED = 0
DATASETS = {"emoji": {}, "cloth": {"label": "Recommended IND"}}


class _Enough(Exception):
    """Raised by StopAfter once the measured epochs are done."""


def stop_after(epochs: int):
    from mmsearch.train.context import LocalContext

    class StopAfter(LocalContext):
        def report(self, metrics, checkpoint):
            super().report(metrics, checkpoint)
            if metrics["epoch"] >= epochs:
                raise _Enough

    return StopAfter


def prepare_split(dataset: str, rows: int | None, work: Path):
    from mmsearch import datasets
    from mmsearch.data.prepare import prepare

    table = datasets.load(dataset, **DATASETS[dataset])
    if rows:
        table = sample_rows(table, rows, work)
    return prepare(str(table.path), table.label, work / f"data-{dataset}", problem_type=table.problem_type, seed=SPLIT_SEED)


def _history(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def before(data, out: Path, measured: int) -> dict:
    from mmsearch.config import TrialConfig
    from mmsearch.train.loop import train

    cfg = TrialConfig.from_flat({})
    t0 = time.perf_counter()
    try:
        train(cfg.to_flat(relevant_only=False), data.dir, stop_after(measured)(out))
    except _Enough:
        pass
    wall = time.perf_counter() - t0
    rows = _history(out)
    metric = rows[-1]["metric"]
    times = [r["epoch_time_s"] for r in rows]
    steady = statistics.mean(times[1:] or times)
    return {"config": {k: v for k, v in cfg.to_flat().items() if k.split(".")[0] in ("model", "optim", "train")},
            "epochs_planned": cfg.train.epochs, "epochs_measured": len(rows),
            "wall_s_measured": round(wall, 1), "epoch_time_s": [round(t, 1) for t in times],
            "wall_s_extrapolated": round(wall + (cfg.train.epochs - len(rows)) * steady, 1),
            "metric": metric, "val": rows[-1][f"val_{metric}"], "holdout": rows[-1][f"holdout_{metric}"],
            "holdout_after": f"epoch {len(rows)} of {cfg.train.epochs}"}


def after(data, out: Path, explicit: dict) -> dict:
    from mmsearch import defaults
    from mmsearch.layout import TrialRunDir
    from mmsearch.train.run import run_local

    choices = defaults.for_table(data, explicit)
    t0 = time.perf_counter()
    final = run_local({**defaults.as_overrides(choices), **explicit}, data.dir, out)
    wall = time.perf_counter() - t0
    rows = TrialRunDir(out).final.trainer()["history"]  # each epoch's own weights (the last report: the soup's)
    metric = final["metric"]
    return {"chosen": {c.key: c.value for c in choices}, "set": explicit, "epochs_planned": final["epoch"] if "train.epochs" in explicit
            else defaults.as_overrides(choices)["train.epochs"],
            "epochs_trained": final["epoch"], "stopped_early": final["stopped_early"], "soup_epochs": final.get("soup_epochs"),
            "wall_s": round(wall, 1), "epoch_time_s": [round(r["epoch_time_s"], 1) for r in rows],
            "val_curve": [round(r["val_score"], 4) for r in rows],
            "metric": metric, "val": final[f"val_{metric}"], "holdout": final[f"holdout_{metric}"]}


def markdown(results: dict) -> str:
    lines = ["`mmsearch train` without --config: the default trial before (the config's own defaults: 10 epochs, "
             "224 px, lr 1e-4 for everything) and after (mmsearch.defaults.for_table). Before: only the first epochs "
             "are trained; its 10-epoch wall time is extrapolated and its holdout score is the one after those epochs.",
             "", "| dataset (rows train/val/holdout) | threads | before: holdout (after epoch k of 10) | before: wall, "
             "10 epochs (extrapolated from k) | after: holdout | after: wall (epochs trained / planned) | after: chosen |",
             "|---|---|---|---|---|---|---|"]
    for name, r in results.items():
        b, a = r["before"], r["after"]
        split = "/".join(str(r["split"][p]) for p in ("train", "val", "holdout"))
        chosen = ", ".join(f"`{k}={v}`" for k, v in a["chosen"].items() if not k.startswith("tricks."))
        lines.append(f"| {name} ({split}) | {r['threads']} | {b['metric']} {b['holdout']:.4f} (k={b['epochs_measured']}) | "
                     f"{b['wall_s_extrapolated'] / 60:.1f} min (measured {b['wall_s_measured']:.0f} s for {b['epochs_measured']}) | "
                     f"{a['metric']} {a['holdout']:.4f} | {a['wall_s'] / 60:.1f} min ({a['epochs_trained']} / {a['epochs_planned']}"
                     f"{', early stop' if a['stopped_early'] else ''}) | {chosen}, soup + warmup + clip |")
    return "\n".join(lines) + "\n"


def save(name: str, entry: dict, stem: str) -> None:
    """Merge one dataset's entry into STEM.json (under a lock: two processes may share it)."""
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{stem}.json"
    with open(Path(tempfile.gettempdir()) / f"mmsearch-bench-{stem}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        data = json.loads(path.read_text()) if path.exists() else {"benchmark": "defaults", "results": {}}
        data["results"][name] = entry
        data.update(environment())
        path.write_text(json.dumps(data, indent=1) + "\n")
        (RESULTS / f"{stem}.md").write_text(markdown(data["results"]))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--datasets", nargs="+", choices=list(DATASETS), default=list(DATASETS))
    p.add_argument("--cloth-rows", type=int, default=1000)
    p.add_argument("--before-epochs", type=int, default=2)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--work", help="working folder (default: a temporary one)")
    p.add_argument("--quick", action="store_true", help="smoke run: a 120-row sample of each table, 1 epoch before; "
                   "results to defaults_quick.* (never over the real figures)")
    args = p.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.work or tmp)
        for name in args.datasets:
            rows = 120 if args.quick else args.cloth_rows if name == "cloth" else None
            data = prepare_split(name, rows, work)
            entry = {"rows": len(data.table), "split": {part: len(rows) for part, rows in data.split.items()},
                     "threads": args.threads, "label": data.schema.label}
            entry["after"] = after(data, work / f"{name}-after", {"train.epochs": 2, "model.image_size": 32} if args.quick else {})
            print(json.dumps({name: entry["after"]}), flush=True)
            entry["before"] = before(data, work / f"{name}-before", 1 if args.quick else args.before_epochs)
            print(json.dumps({name: entry["before"]}), flush=True)
            save(name, entry, "defaults_quick" if args.quick else "defaults")


if __name__ == "__main__":
    main()
